"""loanflow's pipeline written as a Quix Streams app, the way its users write it:
an Application, a JSON input topic, a StreamingDataFrame, `.apply()` to clean
and score ONE record at a time (XGBoost `inplace_predict` on a 1-row array),
`.to_topic()` for the result.

    python benches/peers/quix_pipeline.py --brokers 127.0.0.1:P \
        --input-topic peers-in --output-topic out-quix --count 20000

Input: the applications topic `loanflow ingest` produces (one JSON object per
message, keyed by id). Output: {"id", "score", "flagged"} as JSON, keyed by id.
Stops after --count records (Application.run(count=N)) and prints
`quix: N records in T s — R records/s`, T from the first record consumed to
the return of app.run() (the last output flushed and acknowledged, offsets
committed).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import tempfile

from quixstreams import Application
from quixstreams.models.topics import TopicConfig

import peer_common


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--input-topic", default="peers-in")
    ap.add_argument("--output-topic", default="out-quix")
    ap.add_argument("--count", type=int, required=True, help="stop after N records")
    ap.add_argument("--group", default="loanflow-peer-quix")
    ap.add_argument("--spec", default=peer_common.DEFAULT_SPEC)
    ap.add_argument("--partitions", type=int, default=4, help="for the output topic if created")
    args = ap.parse_args()

    score = peer_common.make_scorer(args.spec)
    meter = peer_common.Meter()

    state_dir = tempfile.mkdtemp(prefix="quix-state-")   # unused (no stateful steps)
    app = Application(
        broker_address=args.brokers,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
        # Tansu (the dev broker) joins a group only after ~session.timeout.ms / 2:
        # keep the (untimed) start-up short. Nothing else is tuned.
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
    )
    input_topic = app.topic(args.input_topic, value_deserializer="json")
    output_topic = app.topic(
        args.output_topic,
        value_serializer="json",
        config=TopicConfig(num_partitions=args.partitions, replication_factor=1),
    )

    def clean_and_score(application: dict) -> dict:
        meter.tick()
        return score(application)

    sdf = app.dataframe(input_topic)
    sdf = sdf.apply(clean_and_score)
    sdf.to_topic(output_topic)          # key = the input message's key (the id)

    app.run(count=args.count, collect=False)
    print(meter.report("quix"), flush=True)
    shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    main()
