"""What the two peers (quix_pipeline.py, bytewax_pipeline.py) share: the
clean stage of a dataflow spec applied to ONE record (a dict decoded from the
JSON message `loanflow ingest` produces), and the XGBoost model.

The semantics are those of models/spec.py (imported from the repository, so
there is one reading of the TOML), only per record instead of per DataFrame:

- every declared column must be present; its value is missing when it is
  JSON null or one of the column's `missing` raw values;
- int columns take JSON integers (or a string matching spec.py's int regex),
  float columns JSON numbers (or a string matching its float regex); the
  number is a float64 (ints exactly) rounded once to float32 (numpy's cast);
- ordinal: `start + index` of `levels` and/or `map`; the feature's own
  `missing` values and missing column values give NaN; any other value not a
  level is an error;
- one_hot: 1.0 in the matching slot, zeros for a missing or unknown value
  (unknown = "error" raises).

A record that breaks a rule raises RecordError (loanflow would send it to its
dead-letter sink; these peers have no dead-letter path and stop).
"""
from __future__ import annotations

import os
import sys
import time
from datetime import datetime

import numpy as np
import xgboost as xgb

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "models"))
import spec as specmod  # noqa: E402  (models/spec.py)

DEFAULT_SPEC = os.path.join(ROOT, "dataflows", "lending_club.toml")


class RecordError(ValueError):
    """The record does not follow the spec."""


def _column_reader(name: str, typ: str, missing: frozenset):
    """record -> (value, is_missing); value is a float for int/float columns."""
    pattern = {"int": specmod._INT_RE, "float": specmod._FLOAT_RE,
               "timestamp": specmod._TS_RE}.get(typ)

    def read(record: dict):
        try:
            v = record[name]
        except KeyError:
            raise RecordError(f"column {name}: absent") from None
        if v is None:
            if missing:
                return None, True
            raise RecordError(f"column {name}: null (not declared missing)")
        if isinstance(v, str):
            if v in missing:
                return v, True
            if v == "":
                raise RecordError(f"column {name}: empty value (not declared missing)")
            if pattern is not None and not pattern.match(v):
                raise RecordError(f"column {name}: {v!r} is not a {typ}")
            if typ == "timestamp":
                try:
                    datetime.fromisoformat(v.replace("z", "Z"))
                except ValueError as e:
                    raise RecordError(f"column {name}: {v!r}: {e}") from None
            if typ in ("int", "float"):
                return specmod._number(typ, v), False
            return v, False
        if isinstance(v, bool):
            raise RecordError(f"column {name}: {v!r} is not a {typ}")
        if typ == "int" and isinstance(v, int):
            return float(v), False          # exact for |v| < 2**53, as spec.py
        if typ == "float" and isinstance(v, (int, float)):
            return float(v), False          # JSON text -> correctly rounded float64
        raise RecordError(f"column {name}: {v!r} is not a {typ}")

    return read


def make_cleaner(spec: dict):
    """record dict -> float32 array of shape (1, n_features)."""
    cols = specmod.columns(spec)
    readers = {c: _column_reader(c, t, m) for c, (t, m) in cols.items()}
    steps = []
    for f in spec["features"]:
        col, kind = f["column"], f["kind"]
        if kind == "numeric":
            steps.append(("numeric", col, None))
        elif kind == "ordinal":
            start = f.get("start", 0)
            table = {lvl: float(start + i) for i, lvl in enumerate(f.get("levels", []))}
            table.update({lvl: float(num) for lvl, num in f.get("map", {}).items()})
            steps.append(("ordinal", col, (table, frozenset(f.get("missing", [])))))
        else:
            index = {val: j for j, val in enumerate(f["values"])}
            strict = f.get("unknown", "zeros") == "error"
            steps.append(("one_hot", col, (index, len(f["values"]), strict)))
    nan = float("nan")

    def clean(record: dict) -> np.ndarray:
        values = {c: read(record) for c, read in readers.items()}
        row: list[float] = []
        for kind, col, arg in steps:
            v, m = values[col]
            if kind == "numeric":
                row.append(nan if m else v)
            elif kind == "ordinal":
                table, own_missing = arg
                if m or v in own_missing:
                    row.append(nan)
                elif v in table:
                    row.append(table[v])
                else:
                    raise RecordError(f"column {col}: unknown level {v!r}")
            else:
                index, width, strict = arg
                slots = [0.0] * width
                if not m and v in index:
                    slots[index[v]] = 1.0
                elif not m and strict:
                    raise RecordError(f"column {col}: unknown value {v!r}")
                row.extend(slots)
        # float64 values rounded once to float32, as spec.py (and loanflow) do
        return np.array(row, dtype=np.float32).reshape(1, -1)

    return clean


def load(spec_path: str = DEFAULT_SPEC):
    """(spec, clean, booster): the spec, its per-record cleaner and the model."""
    spec = specmod.load_spec(spec_path)
    booster = xgb.Booster(model_file=specmod.model_path(spec))
    booster.set_param({"nthread": 1})   # one record at a time, one thread (like loanflow -w 1)
    names = specmod.feature_names(spec)
    if booster.feature_names is not None and list(booster.feature_names) != names:
        raise SystemExit("model feature names differ from the spec's")
    return spec, make_cleaner(spec), booster


def make_scorer(spec_path: str = DEFAULT_SPEC):
    """record dict -> {"id", "score", "flagged"}: clean, then XGBoost on a 1-row array."""
    spec, clean, booster = load(spec_path)
    id_col, threshold = spec["id"], spec["threshold"]

    def score(record: dict) -> dict:
        x = clean(record)
        s = booster.inplace_predict(x)[0]          # float32, XGBoost's own probability
        return {"id": record[id_col], "score": float(s), "flagged": bool(s >= threshold)}

    return score


class Meter:
    """Wall time from the first record to the end, for `records/s`."""

    def __init__(self):
        self.first = None
        self.count = 0

    def tick(self):
        if self.first is None:
            self.first = time.perf_counter()
        self.count += 1

    def report(self, tool: str) -> str:
        end = time.perf_counter()
        secs = end - self.first if self.first is not None else 0.0
        rate = self.count / secs if secs > 0 else 0.0
        return f"{tool}: {self.count} records in {secs:.3f} s — {rate:.0f} records/s"
