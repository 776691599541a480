"""loanflow's pipeline written as a Bytewax dataflow (Python on timely), the way
its users write it: the Kafka input operator, `op.map` to clean and score ONE
record at a time (XGBoost `inplace_predict` on a 1-row array), the Kafka output
operator.

    cd benches/peers && python -m bytewax.run \
        "bytewax_pipeline:get_flow('127.0.0.1:P', 'peers-in', 'out-bytewax', 20000)"

(1 worker: bytewax.run's default.) Input: the applications topic `loanflow
ingest` produces (one JSON object per message, keyed by id). Output:
{"id", "score", "flagged"} as JSON, keyed by id. The source is bounded
(`tail=False`: each partition stops at its end), so the run ends when the
topic is exhausted; the expected count is checked. At exit it prints
`bytewax: N records in T s — R records/s`, T from the first record consumed to
the end of the run (the sink flushed: every output acknowledged).
"""
from __future__ import annotations

import atexit
import json
import sys

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow
from confluent_kafka.admin import AdminClient, NewTopic

import peer_common


def _ensure_topic(brokers: str, topic: str, partitions: int) -> None:
    """Create the output topic (as its users would, beforehand) if it is missing."""
    admin = AdminClient({"bootstrap.servers": brokers})
    if topic in admin.list_topics(timeout=10).topics:
        return
    fut = admin.create_topics([NewTopic(topic, partitions, 1)])[topic]
    try:
        fut.result(10)
    except Exception as e:  # noqa: BLE001  (already exists: fine)
        if "TOPIC_ALREADY_EXISTS" not in str(e):
            raise


def get_flow(brokers: str, input_topic: str, output_topic: str, count: int = 0,
             spec: str = peer_common.DEFAULT_SPEC, partitions: int = 4) -> Dataflow:
    score = peer_common.make_scorer(spec)
    meter = peer_common.Meter()
    _ensure_topic(brokers, output_topic, partitions)

    def clean_and_score(msg):
        meter.tick()
        result = score(json.loads(msg.value))
        return KafkaSinkMessage(key=msg.key, value=json.dumps(result).encode())

    def report():
        print(meter.report("bytewax"), flush=True)
        if count and meter.count != count:
            print(f"bytewax: expected {count} records, saw {meter.count}", file=sys.stderr,
                  flush=True)

    atexit.register(report)   # after bytewax.run returns: the sink is closed (flushed)

    flow = Dataflow("loanflow_peer_bytewax")
    applications = kop.input("applications", flow, brokers=[brokers], topics=[input_topic],
                             tail=False)
    scored = op.map("clean_and_score", applications.oks, clean_and_score)
    kop.output("scored", scored, brokers=[brokers], topic=output_topic)
    return flow
