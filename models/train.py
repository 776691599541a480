#!/usr/bin/env python3
"""Train the lending_club default-risk model from the dataflow spec.

    bash models/setup_venv.sh                      # once
    .venv-models/bin/python models/train.py

Reads data/lending_club.csv and dataflows/lending_club.toml, builds the
features with models/spec.py (the same clean stage the Rust server runs),
trains an XGBoost binary:logistic model on a seeded, stratified 80% split,
prints the held-out AUC and writes:

  models/lending_club.xgb.json      the booster, XGBoost JSON format
  models/lending_club.expected.csv  id,score: XGBoost's own probability for
                                    every row of the CSV (all 9,857), the
                                    reference the Rust scorer must reproduce
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
import xgboost as xgb
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import spec as S  # noqa: E402

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


def score_text(x) -> str:
    """Shortest decimal that reads back as the same float32."""
    return np.format_float_positional(np.float32(x), unique=True, trim="0")


def sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default=os.path.join(ROOT, "dataflows", "lending_club.toml"))
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "lending_club.csv"))
    ap.add_argument("--expected", default=os.path.join(HERE, "lending_club.expected.csv"))
    args = ap.parse_args()

    spec = S.load_spec(args.spec)
    df = S.read_raw(args.data)
    X, names = S.features(spec, df)
    y = S.label(spec, df)
    ids = S.ids(spec, df)
    print(f"xgboost {xgb.__version__}; {X.shape[0]} rows, {X.shape[1]} features, "
          f"{int(y.sum())} positive ({y.mean():.4f})")

    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.2, stratify=y, random_state=SEED)
    dtrain = xgb.DMatrix(X[tr], label=y[tr], feature_names=names, missing=np.nan, nthread=NTHREAD)
    dtest = xgb.DMatrix(X[te], label=y[te], feature_names=names, missing=np.nan, nthread=NTHREAD)
    booster = xgb.train(PARAMS, dtrain, num_boost_round=NUM_ROUNDS, verbose_eval=False)

    p_test = booster.predict(dtest)
    auc = roc_auc_score(y[te], p_test)
    print(f"held-out AUC ({len(te)} rows, {int(y[te].sum())} positive): {auc:.4f}")

    model_file = S.model_path(spec)
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

    with open(args.expected, "w", newline="") as fh:
        fh.write("id,score\n")
        for i, s in zip(ids, scores):
            fh.write(f"{i},{score_text(s)}\n")

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
    print(f"wrote {args.expected} sha256 {sha256(args.expected)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
