#!/usr/bin/env python3
"""XGBoost's own TreeSHAP contributions (`pred_contribs=True`): the reference
the native explainer (src/model/shap.rs) must reproduce.

    .venv-models/bin/python models/contribs.py lending_club      # XGBoost 3.2.0
    /tmp/venv142/bin/python models/contribs.py quix               # XGBoost 1.4.2

Two references, each from the XGBoost version that pins it:

  lending_club  XGBoost 3.2.0 (3.3.0 replaced exact TreeSHAP by a quadrature
                approximation, so the oracle is pinned to 3.2.0). Every row of
                data/lending_club.csv, features built by models/spec.py, model
                models/lending_club.xgb.json. Writes
                models/lending_club.contribs.f32: little-endian float32,
                row-major, one row per CSV row in file order, num_feature + 1
                values per row (the bias last), no header.
  quix          XGBoost 1.4.2, the version that saved the tutorial's model
                (../shared/reference/quix_fraud_model.json). The constructed
                rows of tests/fixtures/quix_rows.csv (unknown categories,
                missing values; made by models/make_quix_fixture.py). Writes
                tests/fixtures/quix_contribs.csv: header id,<feature names>,bias;
                each value the float32 in its shortest round-trip text.

A 1.4.2 venv (Python 3.11 installs it):
    python3 -m venv /tmp/venv142 && /tmp/venv142/bin/pip install xgboost==1.4.2 'numpy<2' pandas

Each run checks that every row's contributions sum to XGBoost's own margin
(output_margin=True) and prints the largest difference. Deterministic
(nthread=1).
"""
import argparse
import hashlib
import os
import sys

import numpy as np
import xgboost as xgb

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import spec as S  # noqa: E402

TARGETS = {
    "lending_club": dict(version="3.2.0", spec="dataflows/lending_club.toml",
                         data="data/lending_club.csv", out="models/lending_club.contribs.f32"),
    "quix": dict(version="1.4.2", spec="dataflows/quix_fraud.toml",
                 data="tests/fixtures/quix_rows.csv", out="tests/fixtures/quix_contribs.csv"),
}


def f32_text(x) -> str:
    """Shortest decimal that reads back as the same float32."""
    return np.format_float_positional(np.float32(x), unique=True, trim="0")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("target", choices=sorted(TARGETS))
    ap.add_argument("--model", help="the model file (default: the spec's)")
    args = ap.parse_args()
    t = TARGETS[args.target]
    if xgb.__version__ != t["version"]:
        sys.exit(f"{args.target} contributions come from XGBoost {t['version']}, "
                 f"this Python has {xgb.__version__} (see this script's docstring)")

    spec = S.load_spec(os.path.join(ROOT, t["spec"]))
    df = S.read_raw(os.path.join(ROOT, t["data"]))
    X, names = S.features(spec, df)
    model_file = args.model or S.model_path(spec)
    booster = xgb.Booster(model_file=model_file)
    booster.set_param({"nthread": 1})
    if list(booster.feature_names) != names:
        sys.exit(f"spec features {names} != model features {booster.feature_names}")
    dm = xgb.DMatrix(X, feature_names=names, missing=np.nan, nthread=1)
    contribs = np.asarray(booster.predict(dm, pred_contribs=True), dtype=np.float32)
    margin = booster.predict(dm, output_margin=True)
    assert contribs.shape == (len(X), len(names) + 1), contribs.shape
    sums = contribs.astype(np.float64).sum(axis=1)
    print(f"xgboost {xgb.__version__}: {contribs.shape[0]} rows x {contribs.shape[1]} "
          f"(bias last = {float(contribs[0, -1])!r}); "
          f"max |row sum - margin| {float(np.max(np.abs(sums - margin))):.3g}")

    out = os.path.join(ROOT, t["out"])
    if out.endswith(".f32"):
        contribs.astype("<f4").tofile(out)
    else:
        with open(out, "w", newline="") as fh:
            fh.write(",".join([spec["id"], *names, "bias"]) + "\n")
            for i, row in zip(S.ids(spec, df), contribs):
                fh.write(",".join([i, *(f32_text(v) for v in row)]) + "\n")
    with open(out, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    print(f"wrote {os.path.relpath(out, ROOT)} sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
