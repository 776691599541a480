#!/usr/bin/env python3
"""Constructed input rows and XGBoost's own scores for the tutorial's model.

    .venv-models/bin/python models/make_quix_fixture.py

The tutorial's data is not public, so the rows here are made up: plausible
Home Credit application values (ranges as in the Home Credit application
table), chosen to reach both sides of the model's split thresholds, plus edge
cases, and four random rows picked because the model scores them >= 0.5
(random rows rarely are). Nothing here is real data. Writes

  tests/fixtures/quix_rows.csv      header = every column of dataflows/quix_fraud.toml
  tests/fixtures/quix_expected.csv  id,score  (XGBoost's predicted probability)

Scores come from /work/shared/reference/quix_fraud_model.json loaded by
xgboost.Booster, on features built by models/spec.py (missing = NaN).
Deterministic: fixed seed, no clock.
"""
import argparse
import csv
import json
import os
import sys

import numpy as np
import pandas as pd
import xgboost as xgb

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import spec as S  # noqa: E402

SEED = 20230601

GENDER = ["F", "M", "XNA"]
CONTRACT = ["Cash loans", "Revolving loans"]
EDUCATION = ["Academic degree", "Higher education", "Incomplete higher", "Lower secondary",
             "Secondary / secondary special"]
FAMILY = ["Civil marriage", "Married", "Separated", "Single / not married", "Unknown", "Widow"]
INCOME = ["Businessman", "Commercial associate", "Maternity leave", "Pensioner",
          "State servant", "Student", "Unemployed", "Working"]


def f32_text(x: float) -> str:
    """Shortest decimal that reads back (via float64, then float32) as float32(x)."""
    return np.format_float_positional(np.float32(x), unique=True, trim="0")


def fmt(x, decimals):
    return f"{x:.{decimals}f}"


def random_row(rng, i):
    """One plausible application; categoricals cycle so each level is hit."""
    credit = float(rng.choice([45000, 90000, 135000, 180000, 254700, 312682.5, 450000,
                               513531, 675000, 808650, 1006920, 1293502.5, 1800000, 2695500]))
    goods = round(credit * rng.uniform(0.8, 1.0) / 4500) * 4500.0
    annuity = round(credit * rng.uniform(0.025, 0.07) * 2) / 2
    pensioner = INCOME[i % len(INCOME)] == "Pensioner"
    has_car = rng.random() < 0.4
    has_building = rng.random() < 0.55
    r = {
        "AMT_ANNUITY": fmt(annuity, 1),
        "AMT_CREDIT": fmt(credit, 1),
        "AMT_GOODS_PRICE": fmt(goods, 1) if rng.random() > 0.05 else "",
        "DAYS_BIRTH": str(int(rng.integers(-25200, -7490))),
        "DAYS_EMPLOYED": "365243" if pensioner else str(int(rng.integers(-15000, -30))),
        "DAYS_LAST_PHONE_CHANGE": fmt(float(rng.integers(-3900, 0)), 1),
        "FLAG_PHONE": str(int(rng.random() < 0.3)),
        "FLAG_WORK_PHONE": str(int(rng.random() < 0.2)),
        "OWN_CAR_AGE": fmt(float(rng.integers(0, 40)), 1) if has_car else "",
        "REGION_RATING_CLIENT": str(int(rng.choice([1, 2, 2, 2, 3]))),
        "REG_CITY_NOT_LIVE_CITY": str(int(rng.random() < 0.1)),
    }
    r["REGION_RATING_CLIENT_W_CITY"] = str(max(1, min(3, int(r["REGION_RATING_CLIENT"])
                                                      + int(rng.integers(-1, 2)))))
    for c in ["BASEMENTAREA_MEDI", "LANDAREA_MEDI", "LIVINGAPARTMENTS_MEDI", "LIVINGAREA_MEDI",
              "NONLIVINGAREA_MEDI"]:
        r[c] = fmt(rng.uniform(0.0, 0.35) if rng.random() < 0.85 else rng.uniform(0.35, 1.0), 4) \
            if has_building else ""
    r["YEARS_BUILD_MEDI"] = fmt(rng.uniform(0.1, 1.0), 4) if has_building else ""
    r["CODE_GENDER"] = GENDER[i % 2]                       # F / M alternate
    r["NAME_CONTRACT_TYPE"] = CONTRACT[int(i % 4 == 3)]     # every 4th revolving
    r["NAME_EDUCATION_TYPE"] = EDUCATION[i % len(EDUCATION)]
    r["NAME_FAMILY_STATUS"] = FAMILY[(i * 5) % len(FAMILY)]
    r["NAME_INCOME_TYPE"] = INCOME[i % len(INCOME)]
    return r


def thresholds(model_doc, feature):
    names = model_doc["learner"]["feature_names"]
    j = names.index(feature)
    out = set()
    for t in model_doc["learner"]["gradient_booster"]["model"]["trees"]:
        for left, f, c in zip(t["left_children"], t["split_indices"], t["split_conditions"]):
            if left != -1 and f == j:
                out.add(c)
    return sorted(out)


def build_rows(model_doc, score):
    rng = np.random.default_rng(SEED)
    rows = [random_row(rng, i) for i in range(28)]
    # Random rows rarely reach the 0.5 threshold (about 3% do): add the first
    # four candidates of a second seeded stream that XGBoost scores >= 0.5.
    rng_hi = np.random.default_rng(SEED + 1)
    risky = 0
    for k in range(5000):
        cand = random_row(rng_hi, k)
        if score(cand) >= 0.5:
            rows.append(cand)
            risky += 1
            if risky == 4:
                break
    # Edge cases vary one thing at a time from this base row, whose
    # categoricals all have a one-hot column (so zeroing them changes the score).
    base = dict(rows[1])
    base.update(CODE_GENDER="M", NAME_CONTRACT_TYPE="Revolving loans",
                NAME_EDUCATION_TYPE="Secondary / secondary special", NAME_FAMILY_STATUS="Married",
                NAME_INCOME_TYPE="State servant")
    rows.append(dict(base))

    def edge(**kv):
        r = dict(base)
        r.update(kv)
        rows.append(r)

    numeric = ["AMT_ANNUITY", "AMT_CREDIT", "AMT_GOODS_PRICE", "BASEMENTAREA_MEDI",
               "DAYS_BIRTH", "DAYS_EMPLOYED", "DAYS_LAST_PHONE_CHANGE", "FLAG_PHONE",
               "FLAG_WORK_PHONE", "LANDAREA_MEDI", "LIVINGAPARTMENTS_MEDI", "LIVINGAREA_MEDI",
               "NONLIVINGAREA_MEDI", "OWN_CAR_AGE", "REGION_RATING_CLIENT",
               "REGION_RATING_CLIENT_W_CITY", "REG_CITY_NOT_LIVE_CITY", "YEARS_BUILD_MEDI"]
    # Every numeric empty (missing → each split's default branch).
    edge(**{c: "" for c in numeric})
    # Missing spelled NaN / nan (declared missing in the spec).
    edge(AMT_GOODS_PRICE="NaN", OWN_CAR_AGE="nan", BASEMENTAREA_MEDI="NaN", DAYS_EMPLOYED="nan",
         FLAG_PHONE="NaN")
    # Unknown categories → zeros in their groups.
    edge(CODE_GENDER="Z", NAME_INCOME_TYPE="Astronaut", NAME_EDUCATION_TYPE="Doctorate",
         NAME_FAMILY_STATUS="Complicated", NAME_CONTRACT_TYPE="Consumer loans")
    # The tutorial's dropped first levels → zeros too.
    edge(CODE_GENDER="F", NAME_CONTRACT_TYPE="Cash loans", NAME_EDUCATION_TYPE="Academic degree",
         NAME_FAMILY_STATUS="Civil marriage", NAME_INCOME_TYPE="Businessman")
    # Every categorical empty.
    edge(CODE_GENDER="", NAME_CONTRACT_TYPE="", NAME_EDUCATION_TYPE="", NAME_FAMILY_STATUS="",
         NAME_INCOME_TYPE="")
    # Case matters: "m" is not "M"; XNA gender; Maternity leave (no split uses it).
    edge(CODE_GENDER="m", NAME_INCOME_TYPE="working")
    edge(CODE_GENDER="XNA", NAME_INCOME_TYPE="Maternity leave", NAME_FAMILY_STATUS="Widow",
         NAME_EDUCATION_TYPE="Lower secondary")
    edge(CODE_GENDER="XNA")
    # Values exactly on split thresholds (XGBoost goes left only if x < threshold).
    on = {c: f32_text(thresholds(model_doc, c)[k]) for c, k in [
        ("AMT_ANNUITY", 0), ("AMT_CREDIT", 3), ("AMT_GOODS_PRICE", 5), ("OWN_CAR_AGE", 12),
        ("YEARS_BUILD_MEDI", 0), ("LIVINGAPARTMENTS_MEDI", 4), ("DAYS_LAST_PHONE_CHANGE", 2)]}
    edge(**on)
    # ... and just either side of the same thresholds.
    edge(**{c: f32_text(np.nextafter(np.float32(v), np.float32(-np.inf))) for c, v in on.items()})
    edge(**{c: f32_text(np.nextafter(np.float32(v), np.float32(np.inf))) for c, v in on.items()})
    # Extremes: a young applicant with a huge loan; an old one with a tiny loan.
    edge(AMT_ANNUITY="258025.5", AMT_CREDIT="4050000.0", AMT_GOODS_PRICE="4050000.0",
         DAYS_BIRTH="-7489", DAYS_EMPLOYED="-17912", OWN_CAR_AGE="91.0",
         REGION_RATING_CLIENT="3", REGION_RATING_CLIENT_W_CITY="3", REG_CITY_NOT_LIVE_CITY="1")
    edge(AMT_ANNUITY="1615.5", AMT_CREDIT="45000.0", AMT_GOODS_PRICE="40500.0",
         DAYS_BIRTH="-25229", DAYS_EMPLOYED="365243", NAME_INCOME_TYPE="Pensioner",
         DAYS_LAST_PHONE_CHANGE="0.0", OWN_CAR_AGE="0.0", REGION_RATING_CLIENT="1",
         REGION_RATING_CLIENT_W_CITY="1")
    # Number spellings a float parser must take: integer text, exponent, leading dot, sign.
    edge(AMT_ANNUITY="24700", AMT_CREDIT="4.065975e5", DAYS_LAST_PHONE_CHANGE="-1134",
         BASEMENTAREA_MEDI=".0369", LANDAREA_MEDI="0.0", YEARS_BUILD_MEDI="+0.6243",
         DAYS_BIRTH="-9461", DAYS_EMPLOYED="-637")
    # Building areas all zero; region rating 2 / city 1; phones on.
    edge(BASEMENTAREA_MEDI="0.0", LANDAREA_MEDI="0.0", LIVINGAPARTMENTS_MEDI="0.0",
         LIVINGAREA_MEDI="0.0", NONLIVINGAREA_MEDI="0.0", YEARS_BUILD_MEDI="0.0",
         FLAG_PHONE="1", FLAG_WORK_PHONE="1", REGION_RATING_CLIENT="2",
         REGION_RATING_CLIENT_W_CITY="1")
    for i, r in enumerate(rows):
        r["SK_ID_CURR"] = f"q-{i + 1:04d}"
        r["TARGET"] = ""
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default=os.path.join(ROOT, "dataflows", "quix_fraud.toml"))
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "tests", "fixtures"))
    args = ap.parse_args()

    spec = S.load_spec(args.spec)
    model_file = S.model_path(spec)
    with open(model_file) as fh:
        model_doc = json.load(fh)
    booster = xgb.Booster(model_file=model_file)
    booster.set_param({"nthread": 1})
    cols = list(spec["columns"])

    def score(r):
        df1 = pd.DataFrame([{**{c: r.get(c, "") for c in cols}, spec["id"]: "candidate"}], dtype=str)
        X1, names1 = S.features(spec, df1)
        return float(booster.predict(xgb.DMatrix(X1, feature_names=names1, missing=np.nan))[0])

    rows = build_rows(model_doc, score)
    os.makedirs(args.out_dir, exist_ok=True)
    rows_file = os.path.join(args.out_dir, "quix_rows.csv")
    with open(rows_file, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([r[c] for c in cols])

    df = S.read_raw(rows_file)          # read back: scores are for exactly what was written
    X, names = S.features(spec, df)
    if list(booster.feature_names) != names:
        sys.exit(f"spec features {names} != model features {booster.feature_names}")
    scores = booster.predict(xgb.DMatrix(X, feature_names=names, missing=np.nan))
    inplace = booster.inplace_predict(X, missing=np.nan)
    print(f"max |predict(DMatrix) - inplace_predict|: "
          f"{float(np.max(np.abs(scores.astype(np.float64) - inplace)))}")

    expected_file = os.path.join(args.out_dir, "quix_expected.csv")
    with open(expected_file, "w", newline="") as fh:
        fh.write("id,score\n")
        for i, s in zip(df[spec["id"]], scores):
            fh.write(f"{i},{f32_text(s)}\n")
    print(f"wrote {rows_file} ({len(rows)} rows) and {expected_file}")
    print(f"scores: min {scores.min():.4g} max {scores.max():.4g}, "
          f">= {spec['threshold']}: {int((scores >= spec['threshold']).sum())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
