#!/usr/bin/env python3
"""Probe a Kafka-API broker (Tansu, started by scripts/broker) with a real
librdkafka client and print what it really does.

Needs: pip install confluent-kafka==2.16.1   (bundles librdkafka 2.16.0; confluent-kafka==2.12.1
       bundles librdkafka 2.12.1 = the project's rdkafka-sys 4.10.0+2.12.1, also tested)
Usage: python3 scripts/broker_check.py 127.0.0.1:PORT [--only a,b,...] [--perf-n N]

Sections (default: all): meta, produce, watermarks, times, commit, txn, subscribe, perf
Every wait is bounded; topic and group names get a unique suffix so the
script can be re-run against the same broker. Loopback only.
"""
import argparse
import sys
import time
import uuid

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    OFFSET_BEGINNING,
    Producer,
    TopicPartition,
    libversion,
    version,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

SUFFIX = uuid.uuid4().hex[:8]
NPART = 4
BASE_TS = 1_700_000_000_000  # explicit CreateTime of message 0 (ms); message i gets BASE_TS + i*1000


def log(*a):
    print(*a, flush=True)


def create_topic(admin, name, partitions=NPART):
    futs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                               request_timeout=15)
    for t, f in futs.items():
        f.result(timeout=15)


def drain(consumer, want, timeout_s, eof_parts=None):
    """Poll until `want` messages (not counting EOF events) or timeout. Returns list of msgs."""
    out = []
    deadline = time.time() + timeout_s
    while len(out) < want and time.time() < deadline:
        msgs = consumer.consume(num_messages=10000, timeout=0.5)
        for m in msgs:
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    if eof_parts is not None:
                        eof_parts.append((m.partition(), m.offset(), round(time.time(), 3)))
                    continue
                raise KafkaException(m.error())
            out.append(m)
    return out


def section_meta(bs, st):
    admin = AdminClient({"bootstrap.servers": bs})
    topic = f"check-{SUFFIX}"
    t0 = time.time()
    create_topic(admin, topic)
    log(f"[meta] create_topics({topic}, 4 partitions): ok in {time.time()-t0:.3f}s")
    md = admin.list_topics(timeout=10)
    log(f"[meta] cluster_id={md.cluster_id} controller_id={md.controller_id} "
        f"brokers={[(b.id, b.host, b.port) for b in md.brokers.values()]}")
    tm = md.topics[topic]
    log(f"[meta] topic {topic}: error={tm.error} partitions="
        f"{sorted((p.id, p.leader, list(p.replicas), list(p.isrs)) for p in tm.partitions.values())}")
    # duplicate create -> expected TOPIC_ALREADY_EXISTS
    try:
        create_topic(admin, topic)
        log("[meta] duplicate create_topics: NO error (unexpected)")
    except Exception as e:  # noqa: BLE001
        log(f"[meta] duplicate create_topics -> {e}")
    # auto-create on metadata request for an unknown topic?
    unknown = f"unknown-{SUFFIX}"
    md2 = admin.list_topics(topic=unknown, timeout=10)
    log(f"[meta] metadata for never-created topic {unknown}: error={md2.topics[unknown].error} "
        f"partitions={len(md2.topics[unknown].partitions)}")
    st["topic"] = topic


def section_produce(bs, st, n=1000):
    topic = st["topic"]
    p = Producer({"bootstrap.servers": bs, "linger.ms": 5, "acks": "all"})
    delivered = []
    errors = []

    def cb(err, msg):
        if err:
            errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset(), msg.key()))

    t0 = time.time()
    for i in range(n):
        p.produce(topic, key=f"k{i % 97}".encode(), value=f"v{i}".encode(),
                  timestamp=BASE_TS + i * 1000, on_delivery=cb)
        p.poll(0)
    left = p.flush(30)
    log(f"[produce] {n} keyed msgs, explicit timestamps: delivered={len(delivered)} "
        f"errors={len(errors)} unflushed={left} in {time.time()-t0:.3f}s")
    counts = {pp: 0 for pp in range(NPART)}
    offs = {pp: [] for pp in range(NPART)}
    for pp, off, _ in delivered:
        counts[pp] += 1
        offs[pp].append(off)
    for pp in range(NPART):
        o = sorted(offs[pp])
        contiguous = o == list(range(len(o)))
        log(f"[produce] partition {pp}: {counts[pp]} msgs, delivery offsets "
            f"{o[:1]}..{o[-1:]} contiguous-from-0={contiguous}")
    st["counts"] = counts

    # consume back with assign() from offset 0 with partition EOF enabled
    c = Consumer({"bootstrap.servers": bs, "group.id": f"g-assign-{SUFFIX}",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, pp, 0) for pp in range(NPART)])
    eofs = []
    t0 = time.time()
    msgs = drain(c, n, 30, eofs)
    t_all = time.time() - t0
    # keep polling a little for EOF events
    deadline = time.time() + 5
    while len({e[0] for e in eofs}) < NPART and time.time() < deadline:
        for m in c.consume(num_messages=100, timeout=0.5):
            if m.error() and m.error().code() == KafkaError._PARTITION_EOF:
                eofs.append((m.partition(), m.offset(), round(time.time(), 3)))
            elif not m.error():
                msgs.append(m)
    got = {pp: 0 for pp in range(NPART)}
    ts_ok = True
    key_ok = True
    for m in msgs:
        got[m.partition()] += 1
        i = int(m.value()[1:])
        tstype, ts = m.timestamp()
        if ts != BASE_TS + i * 1000:
            ts_ok = False
        if m.key() != f"k{i % 97}".encode():
            key_ok = False
    log(f"[consume] assign() from offset 0: got {len(msgs)}/{n} in {t_all:.3f}s; per partition {got}; "
        f"timestamps preserved={ts_ok} (type {msgs[0].timestamp()[0] if msgs else None}, 1=CreateTime); "
        f"keys preserved={key_ok}")
    offsets_seen = {pp: sorted(m.offset() for m in msgs if m.partition() == pp) for pp in range(NPART)}
    for pp in range(NPART):
        o = offsets_seen[pp]
        log(f"[consume] partition {pp}: offsets {o[:1]}..{o[-1:]} dup={len(o) - len(set(o))}")
    log(f"[consume] partition EOF events (partition, offset): {[(e[0], e[1]) for e in eofs]} "
        f"-> EOF fired for {len({e[0] for e in eofs})}/{NPART} partitions")
    pos = c.position([TopicPartition(topic, pp) for pp in range(NPART)])
    log(f"[consume] position() after drain: {[(tp.partition, tp.offset) for tp in pos]}")
    c.close()


def section_watermarks(bs, st):
    topic, counts = st["topic"], st["counts"]
    c = Consumer({"bootstrap.servers": bs, "group.id": f"g-wm-{SUFFIX}"})
    for pp in range(NPART):
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, pp), timeout=10, cached=False)
        log(f"[watermarks] partition {pp}: get_watermark_offsets low={lo} high={hi}; "
            f"real message count={counts[pp]} (correct high = {counts[pp]}) -> "
            f"{'OK' if hi == counts[pp] else 'WRONG'}")
    c.close()
    admin = AdminClient({"bootstrap.servers": bs})
    for name, spec in (("earliest", OffsetSpec.earliest()), ("latest", OffsetSpec.latest()),
                       ("max_timestamp", OffsetSpec.max_timestamp())):
        try:
            req = {TopicPartition(topic, pp): spec for pp in range(NPART)}
            res = admin.list_offsets(req, request_timeout=10)
            out = []
            for tp, f in sorted(res.items(), key=lambda kv: kv[0].partition):
                r = f.result(timeout=10)
                out.append((tp.partition, r.offset, r.timestamp))
            log(f"[watermarks] admin.list_offsets {name}: (partition, offset, timestamp) {out}")
        except Exception as e:  # noqa: BLE001
            log(f"[watermarks] admin.list_offsets {name}: ERROR {e}")


def section_times(bs, st):
    topic = st["topic"]
    c = Consumer({"bootstrap.servers": bs, "group.id": f"g-times-{SUFFIX}"})
    n = sum(st["counts"].values())
    for label, ts in (("before first", BASE_TS - 5000), ("first", BASE_TS),
                      ("middle", BASE_TS + (n // 2) * 1000), ("last", BASE_TS + (n - 1) * 1000),
                      ("after last", BASE_TS + n * 1000 + 5000)):
        try:
            res = c.offsets_for_times([TopicPartition(topic, pp, ts) for pp in range(NPART)], timeout=10)
            log(f"[times] offsets_for_times({label}, ts={ts}): "
                f"{[(tp.partition, tp.offset, str(tp.error) if tp.error else None) for tp in res]}")
        except Exception as e:  # noqa: BLE001
            log(f"[times] offsets_for_times({label}): ERROR {e}")
    log("[times] correct answer for 'middle' is roughly the per-partition count/2; "
        "for 'after last' it is -1 (OFFSET_END)")
    c.close()


def section_commit(bs, st):
    topic = st["topic"]
    group = f"g-commit-{SUFFIX}"
    conf = {"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False}
    c = Consumer(conf)
    c.assign([TopicPartition(topic, pp, 0) for pp in range(NPART)])
    want = [TopicPartition(topic, pp, 10 + pp) for pp in range(NPART)]
    t0 = time.time()
    res = c.commit(offsets=want, asynchronous=False)
    log(f"[commit] commit(offsets={[(tp.partition, tp.offset) for tp in want]}, asynchronous=False) "
        f"in {time.time()-t0:.3f}s -> {[(tp.partition, tp.offset, tp.error) for tp in res]}")
    got = c.committed([TopicPartition(topic, pp) for pp in range(NPART)], timeout=10)
    log(f"[commit] committed() same consumer: {[(tp.partition, tp.offset) for tp in got]}")
    c.close()
    c2 = Consumer(conf)
    got = c2.committed([TopicPartition(topic, pp) for pp in range(NPART)], timeout=10)
    log(f"[commit] committed() fresh consumer, same group: {[(tp.partition, tp.offset) for tp in got]} "
        f"-> {'OK' if [tp.offset for tp in got] == [10 + pp for pp in range(NPART)] else 'WRONG'}")
    # does a fresh assign() without explicit offset resume from the committed offset?
    c2.assign([TopicPartition(topic, pp) for pp in range(NPART)])
    first = {}
    deadline = time.time() + 10
    while len(first) < NPART and time.time() < deadline:
        for m in c2.consume(num_messages=1000, timeout=0.5):
            if not m.error() and m.partition() not in first:
                first[m.partition()] = m.offset()
    log(f"[commit] assign() without offset resumes at (partition: first offset): {dict(sorted(first.items()))}")
    c2.close()
    c3 = Consumer({"bootstrap.servers": bs, "group.id": f"g-none-{SUFFIX}"})
    got = c3.committed([TopicPartition(topic, pp) for pp in range(NPART)], timeout=10)
    log(f"[commit] committed() for a group that never committed: {[(tp.partition, tp.offset) for tp in got]}")
    c3.close()


def read_all(bs, topic, isolation, timeout_s=8):
    c = Consumer({"bootstrap.servers": bs, "group.id": f"g-read-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "isolation.level": isolation,
                  "enable.partition.eof": True})
    c.assign([TopicPartition(topic, 0, 0)])
    vals = []
    deadline = time.time() + timeout_s
    eof = False
    while time.time() < deadline and not eof:
        for m in c.consume(num_messages=1000, timeout=0.5):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof = True
                    continue
                raise KafkaException(m.error())
            vals.append(m.value().decode())
    c.close()
    return vals, eof


def section_txn(bs, st):
    admin = AdminClient({"bootstrap.servers": bs})
    topic = f"txn-{SUFFIX}"
    create_topic(admin, topic, 1)
    p = Producer({"bootstrap.servers": bs, "transactional.id": f"tx-{SUFFIX}", "linger.ms": 5})
    t0 = time.time()
    p.init_transactions(15)
    log(f"[txn] init_transactions: ok in {time.time()-t0:.3f}s")
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=b"a", value=f"aborted-{i}".encode())
    p.flush(10)
    t0 = time.time()
    p.abort_transaction(15)
    log(f"[txn] begin + 5 msgs + abort_transaction: ok ({time.time()-t0:.3f}s)")
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, key=b"c", value=f"committed-{i}".encode())
    t0 = time.time()
    p.commit_transaction(15)
    log(f"[txn] begin + 3 msgs + commit_transaction: ok ({time.time()-t0:.3f}s)")
    for iso in ("read_committed", "read_uncommitted"):
        vals, eof = read_all(bs, topic, iso)
        log(f"[txn] {iso} consumer from offset 0 sees {len(vals)} msgs: {vals} (EOF fired={eof})")
    c = Consumer({"bootstrap.servers": bs, "group.id": "g-wmtxn"})
    log(f"[txn] watermarks of txn topic: {c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)}"
        " (5 aborted + 3 committed data records + 2 control markers = offsets 0..9)")
    c.close()

    # consume-transform-produce with send_offsets_to_transaction
    src = f"txn-src-{SUFFIX}"
    dst = f"txn-dst-{SUFFIX}"
    create_topic(admin, src, 1)
    create_topic(admin, dst, 1)
    plain = Producer({"bootstrap.servers": bs})
    for i in range(10):
        plain.produce(src, value=f"in-{i}".encode())
    plain.flush(10)
    group = f"g-eos-{SUFFIX}"
    cons = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False,
                     "isolation.level": "read_committed"})
    cons.assign([TopicPartition(src, 0, 0)])
    got = drain(cons, 10, 10)
    log(f"[txn] eos: read {len(got)} input msgs with assign()")
    # commit path: first 6 inputs
    p.begin_transaction()
    for m in got[:6]:
        p.produce(dst, value=b"out-" + m.value())
    t0 = time.time()
    try:
        p.send_offsets_to_transaction([TopicPartition(src, 0, 6)], cons.consumer_group_metadata(), 15)
        p.commit_transaction(15)
        log(f"[txn] eos: send_offsets_to_transaction(offset 6) + commit_transaction: ok ({time.time()-t0:.3f}s)")
    except Exception as e:  # noqa: BLE001
        log(f"[txn] eos: send_offsets_to_transaction/commit: ERROR {e}")
    cm = cons.committed([TopicPartition(src, 0)], timeout=10)
    log(f"[txn] eos: committed() for group after commit: {cm[0].offset} (want 6)")
    # abort path: remaining inputs, offsets 10 -> must NOT be committed
    p.begin_transaction()
    for m in got[6:]:
        p.produce(dst, value=b"out-" + m.value())
    p.flush(10)  # make sure the records reach the broker before the abort
    try:
        p.send_offsets_to_transaction([TopicPartition(src, 0, 10)], cons.consumer_group_metadata(), 15)
        p.abort_transaction(15)
        log("[txn] eos: send_offsets_to_transaction(offset 10) + abort_transaction: ok")
    except Exception as e:  # noqa: BLE001
        log(f"[txn] eos: send_offsets_to_transaction/abort: ERROR {e}")
    cm = cons.committed([TopicPartition(src, 0)], timeout=10)
    log(f"[txn] eos: committed() for group after abort: {cm[0].offset} (want 6 = unchanged)")
    cons.close()
    vals, _ = read_all(bs, dst, "read_committed")
    log(f"[txn] eos: read_committed on output sees {len(vals)}: {vals} (want 6 out-in-0..5; "
        "out-in-6..9 were flushed then aborted)")

    # a second producer with the same transactional.id fences the first?
    p2 = Producer({"bootstrap.servers": bs, "transactional.id": f"tx-{SUFFIX}"})
    p2.init_transactions(15)
    try:
        p.begin_transaction()
        p.produce(topic, value=b"zombie")
        p.commit_transaction(10)
        log("[txn] fencing: old producer could still commit after a new one with the same "
            "transactional.id ran init_transactions -> NOT fenced")
    except Exception as e:  # noqa: BLE001
        log(f"[txn] fencing: old producer rejected: {e}")

    # idempotent producer (non-transactional)
    ip = Producer({"bootstrap.servers": bs, "enable.idempotence": True})
    errs = []
    for i in range(100):
        ip.produce(topic, value=b"idem", on_delivery=lambda e, m: e and errs.append(e))
    ip.flush(10)
    log(f"[txn] enable.idempotence=true producer: 100 msgs, errors={len(errs)}")


def section_subscribe(bs, st):
    topic = st["topic"]
    for run in range(2):
        group = f"g-sub-{SUFFIX}-{run}"
        assigned = []
        t0 = time.time()
        c = Consumer({"bootstrap.servers": bs, "group.id": group, "auto.offset.reset": "earliest",
                      "enable.auto.commit": False, "session.timeout.ms": 10000,
                      "heartbeat.interval.ms": 1000})
        c.subscribe([topic], on_assign=lambda cons, parts: assigned.append((time.time(), len(parts))))
        first_msg = None
        deadline = time.time() + 60
        while time.time() < deadline and first_msg is None:
            for m in c.consume(num_messages=100, timeout=0.2):
                if not m.error():
                    first_msg = time.time()
                    break
        log(f"[subscribe] group {run}: on_assign after "
            f"{(assigned[0][0]-t0) if assigned else float('nan'):.2f}s ({assigned[0][1] if assigned else 0} partitions), "
            f"first message after {(first_msg - t0) if first_msg else float('nan'):.2f}s")
        if run == 1:
            # second member joins the same group: time for the rebalance
            assigned2 = []
            t1 = time.time()
            c2 = Consumer({"bootstrap.servers": bs, "group.id": group, "auto.offset.reset": "earliest",
                           "enable.auto.commit": False, "session.timeout.ms": 10000,
                           "heartbeat.interval.ms": 1000})
            c2.subscribe([topic], on_assign=lambda cons, parts: assigned2.append((time.time(), len(parts))))
            deadline = time.time() + 60
            while time.time() < deadline and not assigned2:
                c.poll(0.1)
                c2.poll(0.1)
            log(f"[subscribe] second member joined: its on_assign after "
                f"{(assigned2[0][0]-t1) if assigned2 else float('nan'):.2f}s "
                f"({assigned2[0][1] if assigned2 else 0} partitions)")
            t2 = time.time()
            c2.close()
            log(f"[subscribe] close() of second member: {time.time()-t2:.2f}s")
        t2 = time.time()
        c.close()
        log(f"[subscribe] close(): {time.time()-t2:.2f}s")


def section_perf(bs, st, n):
    admin = AdminClient({"bootstrap.servers": bs})
    topic = f"perf-{SUFFIX}"
    create_topic(admin, topic)
    value = b"x" * 300
    p = Producer({"bootstrap.servers": bs, "linger.ms": 5, "batch.num.messages": 100000,
                  "batch.size": 1000000, "compression.type": "none", "acks": "all",
                  "queue.buffering.max.messages": 1000000, "queue.buffering.max.kbytes": 1048576})
    errs = [0]

    def cb(err, msg):
        if err:
            errs[0] += 1

    t0 = time.time()
    for i in range(n):
        while True:
            try:
                p.produce(topic, key=str(i).encode(), value=value, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    left = p.flush(120)
    dt = time.time() - t0
    mb = n * (300 + len(str(n))) / 1e6
    log(f"[perf] produce {n} x 300B (linger.ms=5, batch.num.messages=100000, batch.size=1000000, "
        f"compression none, acks=all): {dt:.2f}s = {n/dt:,.0f} msg/s, {mb/dt:.1f} MB/s; "
        f"errors={errs[0]} unflushed={left}")
    c = Consumer({"bootstrap.servers": bs, "group.id": f"g-perf-{SUFFIX}", "enable.auto.commit": False,
                  "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 10485760})
    c.assign([TopicPartition(topic, pp, OFFSET_BEGINNING) for pp in range(NPART)])
    t0 = time.time()
    got = 0
    deadline = time.time() + 120
    while got < n and time.time() < deadline:
        for m in c.consume(num_messages=10000, timeout=0.5):
            if not m.error():
                got += 1
    dt = time.time() - t0
    log(f"[perf] consume (assign from beginning): {got}/{n} in {dt:.2f}s = {got/dt:,.0f} msg/s, "
        f"{got * 306 / 1e6 / dt:.1f} MB/s")
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("broker", help="host:port, e.g. 127.0.0.1:19092")
    ap.add_argument("--only", default="meta,produce,watermarks,times,commit,txn,subscribe,perf")
    ap.add_argument("--perf-n", type=int, default=200_000)
    a = ap.parse_args()
    host = a.broker.split(":")[0]
    if not (host.startswith("127.") or host in ("localhost", "[::1]")):
        sys.exit("loopback brokers only")
    log(f"confluent-kafka {version() if isinstance(version(), str) else version()[0]}, librdkafka {libversion()[0]}, broker {a.broker}, suffix {SUFFIX}")
    st = {}
    only = a.only.split(",")
    need_data = any(s in only for s in ("produce", "watermarks", "times", "commit", "subscribe"))
    if "meta" in only or need_data:
        section_meta(a.broker, st)
    if "produce" in only or any(s in only for s in ("watermarks", "times", "commit", "subscribe")):
        section_produce(a.broker, st)
    for name, fn in (("watermarks", section_watermarks), ("times", section_times),
                     ("commit", section_commit), ("txn", section_txn), ("subscribe", section_subscribe)):
        if name in only:
            try:
                fn(a.broker, st)
            except Exception as e:  # noqa: BLE001
                log(f"[{name}] FAILED: {type(e).__name__}: {e}")
    if "perf" in only:
        section_perf(a.broker, st, a.perf_n)


if __name__ == "__main__":
    main()
