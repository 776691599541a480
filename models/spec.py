"""The clean stage of a loanflow dataflow spec (dataflows/*.toml), in Python.

Used only to train models and to build test fixtures; the Rust side
(src/) implements the same semantics for serving. Keep the two in step.

Semantics
---------
Raw input values are strings (read the CSV with ``dtype=str,
keep_default_na=False``; see ``read_raw``).

``[columns]``: ``name = "type"`` or ``name = { type = "...", missing = [...] }``
with type one of string, int, float, timestamp. ``missing`` lists the raw
values that mean "no value"; by default there are none, so an empty field is
an error. Every declared column must be present and every value must parse
as its type (or be one of its missing values):

- int:       optional sign and decimal digits (``^[+-]?[0-9]+$``).
- float:     optional sign, decimal digits with an optional fraction, an
             optional exponent (``1``, ``-2.5``, ``.5``, ``5.``, ``1e-3``).
             NaN / inf spellings are not numbers here: list them in
             ``missing`` if the input may hold them.
- timestamp: RFC 3339 (e.g. ``2016-01-01T00:11:02Z``).
- string:    anything.

``[[features]]``, in order, each one of:

- ``numeric``: the column's value as a number, float32. It is parsed as a
  float64 (ints: exactly) and then rounded once to float32, as numpy does.
  A missing value gives NaN.
- ``ordinal``: ``levels = [...]`` with ``start`` (default 0) gives
  ``start + index``; and/or ``map = { level = number }``. A raw value in the
  feature's own ``missing`` list, or a missing value of the column, gives
  NaN; any other value not a level is an error.
- ``one_hot``: one feature per entry of ``values``, named
  ``COLUMN__Value`` (or ``prefix`` + value): 1.0 where the raw value equals
  it, else 0.0. A missing value gives zeros in the whole group; so does an
  unknown value, unless ``unknown = "error"``.

Feature names: numeric and ordinal → ``name``, default the column name;
one-hot → ``COLUMN__Value``.

The spec's ``model`` path is relative to the TOML file (``model_path``).
"""
from __future__ import annotations

import os
import re
import tomllib
from datetime import datetime

import numpy as np
import pandas as pd

TYPES = ("string", "int", "float", "timestamp")
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_FLOAT_RE = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_TS_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class SpecError(ValueError):
    """The spec or the data does not follow the rules above."""


def load_spec(path: str) -> dict:
    """Read a dataflow TOML; remembers its own path under ``"_path"``."""
    with open(path, "rb") as fh:
        spec = tomllib.load(fh)
    spec["_path"] = os.path.abspath(path)
    _check_spec(spec)
    return spec


def model_path(spec: dict) -> str:
    """The spec's model file, resolved relative to the TOML file."""
    return os.path.normpath(os.path.join(os.path.dirname(spec["_path"]), spec["model"]))


def read_raw(path: str) -> pd.DataFrame:
    """A CSV with every value as its raw string (no NA guessing)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def columns(spec: dict) -> dict:
    """{name: (type, frozenset(missing))} for every declared column."""
    out = {}
    for name, decl in spec["columns"].items():
        if isinstance(decl, str):
            out[name] = (decl, frozenset())
        else:
            out[name] = (decl["type"], frozenset(decl.get("missing", [])))
    return out


def feature_names(spec: dict) -> list[str]:
    names = []
    for f in spec["features"]:
        if f["kind"] == "one_hot":
            prefix = f.get("prefix", f"{f['column']}__")
            names.extend(f"{prefix}{v}" for v in f["values"])
        else:
            names.append(f.get("name", f["column"]))
    return names


def _check_spec(spec: dict) -> None:
    cols = columns(spec)
    for name, (typ, _) in cols.items():
        if typ not in TYPES:
            raise SpecError(f"column {name}: unknown type {typ!r}")
    for f in spec.get("features", []):
        kind, col = f.get("kind"), f.get("column")
        if col not in cols:
            raise SpecError(f"feature on undeclared column {col!r}")
        if kind == "numeric":
            if cols[col][0] not in ("int", "float"):
                raise SpecError(f"numeric feature on {col}, a {cols[col][0]} column")
        elif kind == "ordinal":
            if not f.get("levels") and not f.get("map"):
                raise SpecError(f"ordinal feature {col}: neither levels nor map")
        elif kind == "one_hot":
            if not f.get("values"):
                raise SpecError(f"one_hot feature {col}: no values")
        else:
            raise SpecError(f"feature on {col}: unknown kind {kind!r}")
    names = feature_names(spec)
    if len(set(names)) != len(names):
        raise SpecError("duplicate feature names")


def _validate_column(name: str, typ: str, missing: frozenset, raw: np.ndarray) -> np.ndarray:
    """Checks every raw value; returns a bool mask of missing values."""
    is_missing = np.fromiter((v in missing for v in raw), dtype=bool, count=len(raw))
    pattern = {"int": _INT_RE, "float": _FLOAT_RE, "timestamp": _TS_RE}.get(typ)
    for i, v in enumerate(raw):
        if is_missing[i]:
            continue
        if v == "":
            raise SpecError(f"row {i}: column {name}: empty value (not declared missing)")
        if pattern is not None and not pattern.match(v):
            raise SpecError(f"row {i}: column {name}: {v!r} is not a {typ}")
        if typ == "timestamp":
            datetime.fromisoformat(v.replace("z", "Z"))   # range check (month 13 etc.)
    return is_missing


def _number(typ: str, v: str) -> float:
    # int: exact in float64 for |v| < 2**53; float: Python's correctly rounded parse.
    return float(int(v)) if typ == "int" else float(v)


def features(spec: dict, df: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The feature matrix (float32, [rows, features]) and the feature names."""
    cols = columns(spec)
    absent = [c for c in cols if c not in df.columns]
    if absent:
        raise SpecError(f"input lacks columns {absent}")
    n = len(df)
    raw = {c: df[c].to_numpy(dtype=object) for c in cols}
    miss = {c: _validate_column(c, t, m, raw[c]) for c, (t, m) in cols.items()}

    blocks = []
    for f in spec["features"]:
        col, kind = f["column"], f["kind"]
        typ = cols[col][0]
        values, is_missing = raw[col], miss[col]
        if kind == "numeric":
            x = np.array([np.nan if m else _number(typ, v) for v, m in zip(values, is_missing)],
                         dtype=np.float64)
            blocks.append(x.astype(np.float32)[:, None])
        elif kind == "ordinal":
            start = f.get("start", 0)
            table = {lvl: float(start + i) for i, lvl in enumerate(f.get("levels", []))}
            table.update({lvl: float(num) for lvl, num in f.get("map", {}).items()})
            own_missing = frozenset(f.get("missing", []))
            x = np.empty(n, dtype=np.float64)
            for i, (v, m) in enumerate(zip(values, is_missing)):
                if m or v in own_missing:
                    x[i] = np.nan
                elif v in table:
                    x[i] = table[v]
                else:
                    raise SpecError(f"row {i}: column {col}: unknown level {v!r}")
            blocks.append(x.astype(np.float32)[:, None])
        else:  # one_hot
            x = np.zeros((n, len(f["values"])), dtype=np.float32)
            index = {val: j for j, val in enumerate(f["values"])}
            strict = f.get("unknown", "zeros") == "error"
            for i, (v, m) in enumerate(zip(values, is_missing)):
                if not m and v in index:
                    x[i, index[v]] = 1.0
                elif not m and strict:
                    raise SpecError(f"row {i}: column {col}: unknown value {v!r}")
            blocks.append(x)
    X = np.hstack(blocks) if blocks else np.zeros((n, 0), dtype=np.float32)
    return np.ascontiguousarray(X, dtype=np.float32), feature_names(spec)


def label(spec: dict, df: pd.DataFrame) -> np.ndarray:
    """1 where the label column equals ``positive``, else 0 (int32)."""
    col, positive = spec["label"]["column"], spec["label"]["positive"]
    _, missing = columns(spec)[col]
    values = df[col].to_numpy(dtype=object)
    bad = [i for i, v in enumerate(values) if v in missing]
    if bad:
        raise SpecError(f"label column {col} is missing in {len(bad)} rows (first: row {bad[0]})")
    return (values == positive).astype(np.int32)


def ids(spec: dict, df: pd.DataFrame) -> list[str]:
    return df[spec["id"]].tolist()
