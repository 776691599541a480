"""Read scored topics and check they agree with loanflow's, id by id.

    python benches/peers/compare_outputs.py --brokers 127.0.0.1:P --rows N \
        --csv out/peers/stream.csv out-loanflow out-quix out-bytewax

The first topic is the reference (loanflow). For each topic: every message's
value is JSON with "id", "score", "flagged"; duplicates (at-least-once) must
carry the same score. Checked against the reference: the same set of ids
(ROWS of them), |score - ours| <= 1e-6 for every id, the same `flagged`; also
reported, how many scores are bit-identical as float32 (with --exact, all must
be). With --csv, a fourth column: XGBoost's batch prediction on models/spec.py's
batch features of the input CSV (an independent check of the per-record cleaner
and of loanflow).
Topics are read with assign() to partition EOF (Tansu's watermarks are
unreliable, see scripts/BROKER_NOTES.md). Exit 1 on any mismatch.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from confluent_kafka import Consumer, KafkaError, TopicPartition

TOL = 1e-6


def read_topic(brokers: str, topic: str, timeout: float = 30.0) -> dict[str, tuple[float, bool]]:
    c = Consumer({"bootstrap.servers": brokers, "group.id": "loanflow-peers-compare",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    md = c.list_topics(topic, timeout=10).topics[topic]
    if md.error is not None:
        raise SystemExit(f"{topic}: {md.error}")
    parts = sorted(md.partitions)
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    pending = set(parts)
    out: dict[str, tuple[float, bool]] = {}
    dups = 0
    # consume() waits for a full batch or its timeout: short polls, and a
    # deadline for when nothing at all arrives.
    idle_since = time.monotonic()
    while pending:
        msgs = c.consume(10000, 0.2)
        if not msgs:
            if time.monotonic() - idle_since > timeout:
                raise SystemExit(f"{topic}: no message or EOF within {timeout} s")
            continue
        idle_since = time.monotonic()
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(m.partition())
                    continue
                raise SystemExit(f"{topic}: {err}")
            v = json.loads(m.value())
            key = (m.key() or b"").decode()
            if key != v["id"]:
                raise SystemExit(f"{topic}: message key {key!r} != id {v['id']!r}")
            rec = (float(v["score"]), bool(v["flagged"]))
            if v["id"] in out:
                dups += 1
                if out[v["id"]] != rec:
                    raise SystemExit(f"{topic}: id {v['id']} scored twice, differently")
            out[v["id"]] = rec
    c.close()
    if dups:
        print(f"  note: {topic}: {dups} duplicate messages (same score)", file=sys.stderr)
    return out


def reference_from_csv(path: str) -> dict[str, tuple[float, bool]]:
    import peer_common
    import xgboost as xgb
    spec, _, booster = peer_common.load()
    df = peer_common.specmod.read_raw(path)
    X, names = peer_common.specmod.features(spec, df)
    s = booster.predict(xgb.DMatrix(X, missing=np.nan, feature_names=names))
    ids = peer_common.specmod.ids(spec, df)
    return {i: (float(v), bool(v >= spec["threshold"])) for i, v in zip(ids, s)}


def compare(name: str, ours: dict, theirs: dict, rows: int | None, exact: bool = False) -> bool:
    ok = True
    problems = []
    if rows is not None and len(theirs) != rows:
        problems.append(f"{len(theirs)} ids, expected {rows}")
    missing = ours.keys() - theirs.keys()
    extra = theirs.keys() - ours.keys()
    if missing:
        problems.append(f"{len(missing)} of ours absent (e.g. {sorted(missing)[0]})")
    if extra:
        problems.append(f"{len(extra)} not in ours (e.g. {sorted(extra)[0]})")
    common = sorted(ours.keys() & theirs.keys())
    # scores are float32 (loanflow writes the shortest text that reads back as
    # the same float32; Python peers write the float32's exact double): compare those
    a = np.array([ours[i][0] for i in common], dtype=np.float32).astype(np.float64)
    b = np.array([theirs[i][0] for i in common], dtype=np.float32).astype(np.float64)
    diff = np.abs(a - b) if common else np.zeros(0)
    bad = [i for i, d in zip(common, diff) if not d <= TOL]
    if bad:
        problems.append(f"{len(bad)} scores differ by > {TOL} (e.g. {bad[0]}: "
                        f"{ours[bad[0]][0]} vs {theirs[bad[0]][0]})")
    flag = [i for i in common if ours[i][1] != theirs[i][1]]
    if flag:
        problems.append(f"{len(flag)} `flagged` differ (e.g. {flag[0]})")
    same = int(np.sum(a == b))
    if exact and same != len(common):
        problems.append(f"{len(common) - same} scores not bit-identical (float32)")
    maxd = float(diff.max()) if len(diff) else 0.0
    status = "OK" if not problems else "MISMATCH: " + "; ".join(problems)
    ok = not problems
    print(f"  {name}: {len(theirs)} ids, max |Δscore| {maxd:.3g}, "
          f"{same}/{len(common)} bit-identical (float32) — {status}", file=sys.stderr)
    return ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--rows", type=int, help="expected number of distinct ids")
    ap.add_argument("--exact", action="store_true",
                    help="every score must be bit-identical (float32) to the reference's")
    ap.add_argument("--csv", help="input CSV: also compare with spec.py + XGBoost batch scores")
    ap.add_argument("topics", nargs="+", help="reference topic first (loanflow), then peers")
    args = ap.parse_args()

    ours = read_topic(args.brokers, args.topics[0])
    ok = True
    if args.rows is not None and len(ours) != args.rows:
        print(f"  {args.topics[0]}: {len(ours)} ids, expected {args.rows} — MISMATCH",
              file=sys.stderr)
        ok = False
    for t in args.topics[1:]:
        ok &= compare(t, ours, read_topic(args.brokers, t), args.rows, args.exact)
    if args.csv:
        ok &= compare("spec.py + XGBoost batch predict on the CSV", ours,
                      reference_from_csv(args.csv), args.rows, args.exact)
    print("outputs agree" if ok else "outputs DIFFER", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
