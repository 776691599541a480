#!/usr/bin/env python3
r"""Train a dataflow's XGBoost model from loanflow's own feature backfill.

    cargo build --release                          # the loanflow binary
    bash models/setup_venv.sh                      # once
    .venv-models/bin/python models/train.py        # lending_club
    .venv-models/bin/python models/train.py --spec dataflows/lending_club_velocity.toml
    .venv-models/bin/python models/train.py --spec dataflows/lending_club_velocity.toml \
        --without-windows

The features are not computed here: train.py runs

    loanflow features --dataflow SPEC --input DATA --output TMP.csv

(or reads a backfill given with --features) and trains on that CSV, so
training and serving share one implementation of every feature, stateless
and window alike. The backfill (contract: dataflows/README.md) has the header
``id,<event time>,<label>,<every model feature in model order>``, one row per
application that was not a dead letter, sorted by (event time, id); a
feature is the float32 in its shortest round-trip decimal text, empty when
missing (NaN); the label is 1, 0, or empty when unknown.

Rows are used in the backfill's order. Training uses the labelled rows: an
XGBoost binary:logistic model on a seeded, stratified 80% split; train.py
prints the held-out AUC and writes, NAME being the spec's ``name``:

  the spec's ``model``      (models/NAME.xgb.json) the booster, XGBoost JSON
  models/NAME.expected.csv  id,score: XGBoost's own probability for every
                            row of the backfill (labelled or not), the
                            reference the Rust scorer must reproduce
  models/NAME.reference.json  the training rows' histograms of the score and
                            of every feature (edges at the deciles, the
                            share per bin and missing): what drift
                            monitoring (PSI) compares a stream with

--without-windows trains on the same rows and split with the spec's window
features dropped and only prints the held-out AUC (it writes nothing): what
the window features add.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from fractions import Fraction

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SEED = 42
NTHREAD = 2
NUM_ROUNDS = 100
PARAMS = {
    "objective": "binary:logistic",
    "eval_metric": "auc",
    "tree_method": "hist",
    "max_depth": 6,
    "learning_rate": 0.1,
    "seed": SEED,
    "nthread": NTHREAD,
}


class TrainError(Exception):
    """A set-up or input problem, said in one line."""


def score_text(x) -> str:
    """Shortest decimal that reads back as the same float32."""
    return np.format_float_positional(np.float32(x), unique=True, trim="0")


def sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


# ---------------------------------------------------------------- the spec

def load_spec(path: str) -> dict:
    """The dataflow TOML, with its own absolute path under ``"_path"``."""
    try:
        with open(path, "rb") as fh:
            spec = tomllib.load(fh)
    except FileNotFoundError:
        raise TrainError(f"{path}: no such dataflow spec (pass --spec PATH)") from None
    except tomllib.TOMLDecodeError as e:
        raise TrainError(f"{path}: not valid TOML: {e}") from None
    for key in ("name", "model", "features"):
        if key not in spec:
            raise TrainError(f"{path}: no `{key}` (see dataflows/README.md)")
    spec["_path"] = os.path.abspath(path)
    return spec


def model_path(spec: dict) -> str:
    """The spec's model file, resolved relative to the TOML file."""
    return os.path.normpath(os.path.join(os.path.dirname(spec["_path"]), spec["model"]))


def feature_names(spec: dict) -> list[tuple[str, bool]]:
    """(name, is a window feature) for every model feature, in model order."""
    out = []
    for f in spec["features"]:
        if f.get("kind") == "one_hot":
            prefix = f.get("prefix", f"{f['column']}__")
            out.extend((f"{prefix}{v}", False) for v in f["values"])
        elif f.get("kind") == "window":
            out.append((f["name"], True))
        else:
            out.append((f.get("name", f["column"]), False))
    return out


# ------------------------------------------------------------ the backfill

def default_loanflow() -> str:
    """$CARGO_TARGET_DIR/release/loanflow if it exists, else target/release/loanflow."""
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        candidate = os.path.join(target, "release", "loanflow")
        if os.path.isfile(candidate):
            return candidate
    return os.path.join(ROOT, "target", "release", "loanflow")


def run_backfill(loanflow: str, spec_path: str, data: str, out_csv: str) -> None:
    """Runs ``loanflow features``; reports records it dead-lettered."""
    if not (os.path.isfile(loanflow) and os.access(loanflow, os.X_OK)):
        raise TrainError(f"no loanflow binary at {loanflow}: run `cargo build --release` "
                         "first (or pass --loanflow PATH, or --features CSV)")
    dead = os.path.splitext(out_csv)[0] + ".dead_letters.jsonl"
    cmd = [loanflow, "features", "--dataflow", os.path.abspath(spec_path),
           "--input", os.path.abspath(data), "--output", out_csv, "--dead-letters", dead]
    print("$ " + " ".join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=ROOT)
    if done.returncode != 0:
        raise TrainError(f"`loanflow features` failed (exit {done.returncode}); "
                         "its message is above")
    if os.path.isfile(dead) and os.path.getsize(dead) > 0:
        with open(dead, encoding="utf-8") as fh:
            letters = [json.loads(line) for line in fh if line.strip()]
        if letters:
            first = letters[0]
            n = len(letters)
            what = f"{n} records were dead letters" if n != 1 else "1 record was a dead letter"
            verb = "are" if n != 1 else "is"
            print(f"note: {what} and {verb} not in the backfill (first, at stage "
                  f"{first.get('stage')}: {first.get('reason')})")


def parse_f32(text: str) -> np.float32:
    """A decimal rounded once, correctly (ties to even), to float32; "" → NaN.

    Parsing to float64 first and then rounding to float32 could round twice;
    instead the float32 neighbours of that first guess are compared with the
    exact decimal value.
    """
    if text == "":
        return np.float32(np.nan)
    try:
        exact = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{text!r} is not a number") from None
    guess = np.float32(float(text))
    if not np.isfinite(guess):
        raise ValueError(f"{text!r} is out of float32's range")
    best = None
    for cand in (np.nextafter(guess, np.float32(-np.inf)), guess,
                 np.nextafter(guess, np.float32(np.inf))):
        if not np.isfinite(cand):
            continue
        key = (abs(Fraction(float(cand)) - exact), int(cand.view(np.uint32)) & 1)
        if best is None or key < best[0]:
            best = (key, cand)
    return best[1]


class Backfill:
    """A ``loanflow features`` CSV, read and checked against the spec."""

    def __init__(self, path: str, spec: dict):
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except FileNotFoundError:
            raise TrainError(f"{path}: no such backfill (make one with `loanflow features`)") \
                from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise TrainError(f"{path}: not a feature CSV: {e}") from None
        named = feature_names(spec)
        lead = [spec.get("id", "id")]
        if "event_time" in spec:
            lead.append(spec["event_time"])
        label = spec.get("label", {}).get("column")
        if label is not None:
            lead.append(label)
        header = list(df.columns)
        want = lead + [n for n, _ in named]
        if header[:1] == ["id"]:
            want[0] = "id"
        if header != want:
            diff = next((i for i, (a, b) in enumerate(zip(header, want)) if a != b),
                        min(len(header), len(want)))
            got = repr(header[diff]) if diff < len(header) else "absent"
            expected = repr(want[diff]) if diff < len(want) else "none"
            raise TrainError(
                f"{path}: its columns are not those of {spec['_path']}: column {diff + 1} is "
                f"{got}, the spec's is {expected} — was it made from another spec?")
        self.ids = df.iloc[:, 0].tolist()
        self.names = [n for n, _ in named]
        self.is_window = np.array([w for _, w in named], dtype=bool)
        if label is None:
            self.y = None
        else:
            raw = df[label].to_numpy(dtype=object)
            bad = [i for i, v in enumerate(raw) if v not in ("0", "1", "")]
            if bad:
                raise TrainError(f"{path}: line {bad[0] + 2}: label {raw[bad[0]]!r} is not 1, 0 "
                                 "or empty")
            self.y = np.array([np.nan if v == "" else float(v) for v in raw])
        X = np.empty((len(df), len(self.names)), dtype=np.float32)
        for j, name in enumerate(self.names):
            uniques, inverse = np.unique(df[name].to_numpy(dtype=str), return_inverse=True)
            values = np.empty(len(uniques), dtype=np.float32)
            for k, text in enumerate(uniques.tolist()):
                try:
                    values[k] = parse_f32(text)
                except ValueError as e:
                    row = int(np.flatnonzero(inverse == k)[0]) + 2
                    raise TrainError(f"{path}: line {row}: feature {name}: {e}") from None
            X[:, j] = values[inverse]
        self.X = np.ascontiguousarray(X)


# ---------------------------------------------------------------- training

def histogram(values: np.ndarray) -> dict:
    """A reference histogram of float32 `values` (NaN = missing): bin edges
    at the deciles of the present values (float32, distinct, ascending) and
    the share of all values in each bin, where bin i holds the values with
    exactly i edges at or below them (bin 0: below the first edge; the last:
    at or above the last edge), and the share missing."""
    values = values.astype(np.float32)
    present = values[~np.isnan(values)]
    if len(present):
        q = np.quantile(present.astype(np.float64), np.linspace(0.1, 0.9, 9), method="lower")
        edges = np.unique(q.astype(np.float32))
    else:
        edges = np.array([], dtype=np.float32)
    bins = np.searchsorted(edges, present, side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    n = len(values)
    return {
        "edges": [float(e) for e in edges],
        "proportions": [c / n for c in counts.tolist()],
        "missing": (n - len(present)) / n,
    }


def write_reference(path: str, model_file: str, names: list, X: np.ndarray,
                    booster, nthread: int) -> None:
    """models/NAME.reference.json: what monitoring compares a stream with
    (population stability index): the histogram of the score and of every
    model feature over the training rows."""
    d = xgb.DMatrix(X, feature_names=names, missing=np.nan, nthread=nthread)
    scores = booster.predict(d)
    doc = {
        "model": os.path.basename(model_file),
        "model_sha256": sha256(model_file),
        "rows": int(X.shape[0]),
        "bins": "edges at the training deciles; bin i holds values with i edges <= value",
        "score": histogram(scores),
        "features": [dict(name=n, **histogram(X[:, j])) for j, n in enumerate(names)],
    }
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)} ({len(names)} features + the score)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default=os.path.join(ROOT, "dataflows", "lending_club.toml"),
                    help="the dataflow spec (default: dataflows/lending_club.toml)")
    ap.add_argument("--data", metavar="FILE",
                    default=os.path.join(ROOT, "data", "lending_club.csv"),
                    help="the applications, for `loanflow features` (default: "
                         "data/lending_club.csv)")
    ap.add_argument("--loanflow", metavar="PATH", default=None,
                    help="the loanflow binary (default: $CARGO_TARGET_DIR/release/loanflow "
                         "if that exists, else target/release/loanflow)")
    ap.add_argument("--features", metavar="CSV", default=None,
                    help="train on this backfill (written by `loanflow features` with the same "
                         "spec) instead of running loanflow")
    ap.add_argument("--expected", metavar="FILE", default=None,
                    help="where the expected scores go (default: models/NAME.expected.csv)")
    ap.add_argument("--without-windows", action="store_true",
                    help="drop the spec's window features, train on the same rows and split, "
                         "print the held-out AUC and write nothing")
    args = ap.parse_args()

    try:
        spec = load_spec(args.spec)
        name = spec["name"]
        if "label" not in spec:
            raise TrainError(f"{args.spec}: no `label`: nothing to train on")
        if args.features is not None:
            backfill = Backfill(args.features, spec)
        else:
            loanflow = args.loanflow or default_loanflow()
            with tempfile.TemporaryDirectory(prefix="loanflow-train-") as tmp:
                out = os.path.join(tmp, f"{name}.features.csv")
                run_backfill(loanflow, args.spec, args.data, out)
                backfill = Backfill(out, spec)
        if args.without_windows and not backfill.is_window.any():
            raise TrainError(f"--without-windows: {args.spec} has no window features")
    except TrainError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 1

    X, names = backfill.X, backfill.names
    if args.without_windows:
        keep = ~backfill.is_window
        X = np.ascontiguousarray(X[:, keep])
        names = [n for n, k in zip(names, keep) if k]
    labelled = np.flatnonzero(~np.isnan(backfill.y))
    y = backfill.y[labelled].astype(np.int32)
    n_windows = int(backfill.is_window.sum())
    print(f"xgboost {xgb.__version__}; {name}: {X.shape[0]} rows, {X.shape[1]} features"
          + (f" ({n_windows} window features dropped)" if args.without_windows
             else f" ({n_windows} window)" if n_windows else "")
          + f", {int(y.sum())} positive ({y.mean():.4f})")
    if len(labelled) < X.shape[0]:
        n = X.shape[0] - len(labelled)
        print(f"note: {n} row{'s have' if n != 1 else ' has'} no label: scored, not trained on")
    if len(np.unique(y)) < 2:
        print("train.py: error: the labels are all the same: nothing to learn", file=sys.stderr)
        return 1

    XL = X[labelled]
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.2, stratify=y, random_state=SEED)
    dtrain = xgb.DMatrix(XL[tr], label=y[tr], feature_names=names, missing=np.nan,
                         nthread=NTHREAD)
    dtest = xgb.DMatrix(XL[te], label=y[te], feature_names=names, missing=np.nan,
                        nthread=NTHREAD)
    booster = xgb.train(PARAMS, dtrain, num_boost_round=NUM_ROUNDS, verbose_eval=False)

    p_test = booster.predict(dtest)
    auc = roc_auc_score(y[te], p_test)
    what = " without window features" if args.without_windows else ""
    print(f"held-out AUC{what} ({len(te)} rows, {int(y[te].sum())} positive): {auc:.4f}")
    if args.without_windows:
        print("(--without-windows: nothing written)")
        return 0

    model_file = model_path(spec)
    expected = args.expected or os.path.join(HERE, f"{name}.expected.csv")
    booster.save_model(model_file)

    # XGBoost's own scores for every row, from the saved file.
    saved = xgb.Booster(model_file=model_file)
    saved.set_param({"nthread": NTHREAD})
    dall = xgb.DMatrix(X, feature_names=names, missing=np.nan, nthread=NTHREAD)
    scores = saved.predict(dall)
    inplace = saved.inplace_predict(X, missing=np.nan)
    diff = float(np.max(np.abs(scores.astype(np.float64) - inplace.astype(np.float64))))
    print(f"max |predict(DMatrix) - inplace_predict| over all rows: {diff}")
    if not np.array_equal(scores, booster.predict(dall)):
        print("WARNING: the reloaded model scores differently from the trained one")

    with open(expected, "w", newline="") as fh:
        fh.write("id,score\n")
        for i, s in zip(backfill.ids, scores):
            fh.write(f"{i},{score_text(s)}\n")

    reference = os.path.join(HERE, f"{name}.reference.json")
    write_reference(reference, model_file, names, XL[tr], saved, NTHREAD)

    with open(model_file) as fh:
        doc = json.load(fh)
    trees = doc["learner"]["gradient_booster"]["model"]["trees"]
    depth = 0
    for t in trees:
        left, right = t["left_children"], t["right_children"]
        d = [0] * len(left)
        for n in range(len(left)):
            if left[n] != -1:
                d[left[n]] = d[n] + 1
                d[right[n]] = d[n] + 1
        depth = max(depth, max(d))
    nodes = sum(len(t["left_children"]) for t in trees)
    print(f"model: {len(trees)} trees, max depth {depth}, {nodes} nodes, base_score "
          f"{doc['learner']['learner_model_param']['base_score']!r}")
    print(f"wrote {model_file} sha256 {sha256(model_file)}")
    print(f"wrote {expected} sha256 {sha256(expected)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("train.py: interrupted", file=sys.stderr)
        sys.exit(130)
