#!/usr/bin/env python3
"""XGBoost's own scoring speed on the lending_club model: the number to beat.

    .venv-models/bin/python models/bench_xgboost.py [--rows 1000000] [--reps 5]

Features: the 9,857 real rows of data/lending_club.csv built by models/spec.py,
tiled to --rows rows. The booster runs with nthread=1.

  batch      Booster.inplace_predict on the whole tiled matrix; best of --reps.
  one-by-one Booster.inplace_predict on a [1, k] slice, one call per row, for
             --single rows; best of --reps. Mostly Python/ctypes overhead
             per call: what a naive per-event Python scorer pays.
  contribs   Booster.predict(DMatrix, pred_contribs=True) on the 9,857 real
             rows (TreeSHAP, exact in 3.2.0), DMatrix built once outside the
             timing; best of --reps. Compare with `cargo bench --bench scorer`
             (explain/contributions).
"""
import argparse
import os
import platform
import sys
import time

import numpy as np
import xgboost as xgb

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import spec as S  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default=os.path.join(ROOT, "dataflows", "lending_club.toml"))
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "lending_club.csv"))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--single", type=int, default=5_000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    spec = S.load_spec(args.spec)
    X, names = S.features(spec, S.read_raw(args.data))
    booster = xgb.Booster(model_file=S.model_path(spec))
    booster.set_param({"nthread": 1})

    reps = -(-args.rows // len(X))
    big = np.ascontiguousarray(np.tile(X, (reps, 1))[: args.rows])

    # Agreement check: inplace_predict vs predict(DMatrix) on the real rows.
    a = booster.inplace_predict(X, missing=np.nan)
    b = booster.predict(xgb.DMatrix(X, feature_names=names, missing=np.nan, nthread=1))
    diff = float(np.max(np.abs(a.astype(np.float64) - b)))

    booster.inplace_predict(big[:10000], missing=np.nan)   # warm up
    batch = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        booster.inplace_predict(big, missing=np.nan)
        batch.append(time.perf_counter() - t0)

    n1 = min(args.single, len(X))
    single = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        for i in range(n1):
            booster.inplace_predict(X[i:i + 1], missing=np.nan)
        single.append(time.perf_counter() - t0)

    dm = xgb.DMatrix(X, feature_names=names, missing=np.nan, nthread=1)
    booster.predict(dm, pred_contribs=True)   # warm up
    contribs = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        booster.predict(dm, pred_contribs=True)
        contribs.append(time.perf_counter() - t0)

    trees = booster.num_boosted_rounds()
    print(f"xgboost {xgb.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, nthread=1")
    print(f"model {os.path.relpath(S.model_path(spec), ROOT)}: {trees} trees, "
          f"{X.shape[1]} features")
    print(f"max |inplace_predict - predict(DMatrix)| on {len(X)} rows: {diff}")
    print()
    print(f"{'mode':<12} {'rows':>10} {'best s':>10} {'median s':>10} {'rows/s (best)':>15} {'us/row':>8}")
    for name, n, ts in [("batch", len(big), batch), ("one-by-one", n1, single),
                        ("contribs", len(X), contribs)]:
        best, med = min(ts), float(np.median(ts))
        print(f"{name:<12} {n:>10} {best:>10.4f} {med:>10.4f} {n / best:>15,.0f} {1e6 * best / n:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
