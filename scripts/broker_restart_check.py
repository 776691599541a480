#!/usr/bin/env python3
"""Restart a Tansu broker with SQLite storage (scripts/broker start --sqlite) under real
librdkafka clients and print what survives and what the clients see.

Needs: pip install confluent-kafka==2.12.1 (librdkafka 2.12.1 = the project's rdkafka-sys),
       scripts/broker install-sqlite done.
Usage: python3 scripts/broker_restart_check.py [--dir D] [--db FILE] [--only a,b,...]
Sections (default: restart-term,restart-kill,midstream-kill,timeout); midstream-term (SIGTERM under
load) reproduces the wedged-broker panic described in BROKER_NOTES.md
Starts and stops its own broker (on a fresh FILE); every wait is bounded; loopback only.
"""
import argparse
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
    libversion,
)
from confluent_kafka.admin import AdminClient, NewTopic

HERE = os.path.dirname(os.path.abspath(__file__))
BROKER = os.path.join(HERE, "broker")
SUFFIX = uuid.uuid4().hex[:6]
NPART = 4


def log(*a):
    print(*a, flush=True)


class Broker:
    def __init__(self, d, db):
        self.dir, self.db, self.port = d, db, None

    def start(self):
        args = [BROKER, "start", "--dir", self.dir, "--sqlite", self.db]
        if self.port:
            args += ["--port", str(self.port)]
        t0 = time.time()
        out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout.strip()
        dt = time.time() - t0
        self.port = int(out.rsplit(":", 1)[1])
        return dt

    def stop(self, kill=False):
        t0 = time.time()
        subprocess.run([BROKER, "stop", "--dir", self.dir] + (["--kill"] if kill else ["--term"]),
                       check=True, capture_output=True, text=True, timeout=60)
        return time.time() - t0

    @property
    def bs(self):
        return f"127.0.0.1:{self.port}"


class Events:
    """Collects librdkafka error_cb events and log lines of one client."""

    def __init__(self, name):
        self.name = name
        self.errors = []
        self.logs = []
        self.logger = logging.getLogger(f"rk-{name}-{uuid.uuid4().hex[:4]}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        h = logging.Handler()
        h.emit = lambda rec: self.logs.append((time.time(), rec.getMessage()))
        self.logger.addHandler(h)

    def error_cb(self, err):
        self.errors.append((time.time(), err.code(), err.str()))

    def conf(self):
        return {"error_cb": self.error_cb, "logger": self.logger}

    def summary(self, since=0.0):
        errs = Counter(f"{KafkaError(c).name() if isinstance(c, int) else c}: {s}"
                       for t, c, s in self.errors if t >= since)
        logs = Counter(_shorten(m) for t, m in self.logs if t >= since)
        return errs, logs


def _shorten(m):
    # drop the client/broker name prefix and the varying "after Nms" part
    import re
    m = re.sub(r"^\S+#\S+ ", "", m)
    m = re.sub(r"\(after \d+ms in state (\w+)\)", r"(in state \1)", m)
    m = re.sub(r"\d+ request\(s\)", "N request(s)", m)
    m = re.sub(r"\d+ message\(s\)", "N message(s)", m)
    m = re.sub(r"after \d+ms", "after Nms", m)
    return m[:200]


def create_topic(bs, name, partitions=NPART):
    admin = AdminClient({"bootstrap.servers": bs})
    for f in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                                 request_timeout=15).values():
        f.result(timeout=15)


def read_all(bs, topic, nparts, isolation="read_uncommitted", timeout_s=30):
    """Everything in the topic from offset 0, up to partition EOF on every partition."""
    c = Consumer({"bootstrap.servers": bs, "group.id": f"reader-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": isolation})
    c.assign([TopicPartition(topic, p, 0) for p in range(nparts)])
    out, eof = [], set()
    deadline = time.time() + timeout_s
    while len(eof) < nparts and time.time() < deadline:
        for m in c.consume(num_messages=10000, timeout=0.5):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                raise KafkaException(m.error())
            out.append((m.partition(), m.offset(), m.value(), m.headers()))
    c.close()
    return out, eof


def watermarks(bs, topic, nparts):
    c = Consumer({"bootstrap.servers": bs, "group.id": "wm"})
    r = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False) for p in range(nparts)]
    c.close()
    return r


def committed(bs, group, topic, nparts):
    c = Consumer({"bootstrap.servers": bs, "group.id": group})
    r = c.committed([TopicPartition(topic, p) for p in range(nparts)], timeout=10)
    c.close()
    return [(tp.offset, tp.metadata) for tp in r]


# --- restart: everything acked/committed before a stop is there after the start ---------------

def section_restart(br, kill):
    mode = "kill" if kill else "term"
    tag = f"[restart-{mode}]"
    topic, out_topic, open_topic = f"r-{mode}-{SUFFIX}", f"r-out-{mode}-{SUFFIX}", f"r-open-{mode}-{SUFFIX}"
    create_topic(br.bs, topic)
    create_topic(br.bs, out_topic, 1)
    create_topic(br.bs, open_topic, 1)

    # 1. 5000 keyed records with headers, idempotent, acks=all; the producer stays open across the restart
    pev = Events("producer")
    p = Producer({"bootstrap.servers": br.bs, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                  **pev.conf()})
    acked, perr = [], []

    def cb(err, msg):
        if err:
            perr.append(err.str())
        else:
            acked.append((msg.partition(), msg.offset(), msg.value()))

    n = 5000
    for i in range(n):
        p.produce(topic, key=f"k{i % 97}".encode(), value=f"v{i}".encode(),
                  headers=[("loanflow.stage", f"s{i}".encode()), ("h2", b"x")], on_delivery=cb)
        p.poll(0)
    p.flush(30)
    log(f"{tag} produced {n}: acked {len(acked)}, errors {len(perr)}")

    # 2. plain group commit with metadata
    group = f"g-{mode}-{SUFFIX}"
    c = Consumer({"bootstrap.servers": br.bs, "group.id": group, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, pp, 0) for pp in range(NPART)])
    c.commit(offsets=[TopicPartition(topic, pp, 100 + pp, metadata=f"meta-{pp}") for pp in range(NPART)],
             asynchronous=False)
    c.close()

    # 3. transactions: one committed with send_offsets_to_transaction, one aborted, one left OPEN
    txn = {}
    try:
        eos_group = f"geos-{mode}-{SUFFIX}"
        tid = f"tx-{mode}-{SUFFIX}"
        tp = Producer({"bootstrap.servers": br.bs, "transactional.id": tid, "linger.ms": 5,
                       "transaction.timeout.ms": 60000})
        tp.init_transactions(15)
        gc = Consumer({"bootstrap.servers": br.bs, "group.id": eos_group, "enable.auto.commit": False})
        tp.begin_transaction()
        for i in range(6):
            tp.produce(out_topic, value=f"committed-{i}".encode())
        tp.send_offsets_to_transaction([TopicPartition(topic, pp, 200 + pp, metadata=f"txn-{pp}")
                                        for pp in range(NPART)], gc.consumer_group_metadata(), 15)
        tp.commit_transaction(15)
        tp.begin_transaction()
        for i in range(4):
            tp.produce(out_topic, value=f"aborted-{i}".encode())
        tp.flush(10)
        tp.abort_transaction(15)
        tid_open = f"txo-{mode}-{SUFFIX}"
        op = Producer({"bootstrap.servers": br.bs, "transactional.id": tid_open, "linger.ms": 5,
                       "transaction.timeout.ms": 60000})
        op.init_transactions(15)
        op.begin_transaction()
        for i in range(3):
            op.produce(open_topic, value=f"open-{i}".encode())
        op.flush(10)
        gc.close()
        txn = {"tp": tp, "op": op, "tid": tid, "tid_open": tid_open}
    except KafkaException as e:
        log(f"{tag} transactions FAILED before the restart: {e}")

    before = {
        "wm": watermarks(br.bs, topic, NPART),
        "wm_out": watermarks(br.bs, out_topic, 1),
        "wm_open": watermarks(br.bs, open_topic, 1),
        "committed": committed(br.bs, group, topic, NPART),
        "eos": committed(br.bs, eos_group, topic, NPART),
        "rc_out": [v for _, _, v, _ in read_all(br.bs, out_topic, 1, "read_committed")[0]],
        "rc_open": read_all(br.bs, open_topic, 1, "read_committed", timeout_s=5),
    }
    log(f"{tag} before stop: watermarks {before['wm']} out {before['wm_out']} open-txn topic {before['wm_open']}")
    log(f"{tag} before stop: committed {before['committed']} via-txn {before['eos']}")
    log(f"{tag} before stop: read_committed out-topic sees {len(before['rc_out'])}: {before['rc_out']}")
    log(f"{tag} before stop: read_committed on topic with an OPEN txn: {len(before['rc_open'][0])} msgs, "
        f"EOF={bool(before['rc_open'][1])}")

    # 4. stop + start on the same port and file
    t_stop = br.stop(kill=kill)
    t_start = br.start()
    t_back = time.time()
    log(f"{tag} stop ({'SIGKILL' if kill else 'SIGTERM'}) {t_stop:.2f}s, start on same port {br.port} {t_start:.2f}s")

    # 5. everything still there?
    got, eof = read_all(br.bs, topic, NPART)
    gotmap = {(pp, off): v for pp, off, v, _ in got}
    missing = [a for a in acked if gotmap.get((a[0], a[1])) != a[2]]
    hdr_ok = all(h is not None and h[0] == ("loanflow.stage", b"s" + v[1:]) and h[1] == ("h2", b"x")
                 for _, _, v, h in got)
    log(f"{tag} after restart: read {len(got)} (EOF on {len(eof)}/{NPART}); acked records missing or "
        f"at another offset: {len(missing)}; headers intact: {hdr_ok}")
    after_wm = watermarks(br.bs, topic, NPART)
    log(f"{tag} after restart: watermarks {after_wm} (before {before['wm']}) "
        f"-> {'same' if after_wm == before['wm'] else 'DIFFERENT'}")
    for name, g in (("committed", group), ("eos", eos_group)):
        now = committed(br.bs, g, topic, NPART)
        log(f"{tag} after restart: {name} offsets {now} -> {'same' if now == before[name] else 'DIFFERENT'}")
    rc_out = [v for _, _, v, _ in read_all(br.bs, out_topic, 1, "read_committed")[0]]
    log(f"{tag} after restart: read_committed out-topic sees {len(rc_out)} "
        f"({'same' if rc_out == before['rc_out'] else 'DIFFERENT'}); watermarks {watermarks(br.bs, out_topic, 1)}")
    rc_open = read_all(br.bs, open_topic, 1, "read_committed", timeout_s=5)
    log(f"{tag} after restart: read_committed on the open-txn topic: {len(rc_open[0])} msgs, EOF={bool(rc_open[1])}")

    # 6. the producer from before the restart keeps going (same PID/epoch/sequence)
    acked_before = len(acked)
    t0 = time.time()
    for i in range(n, n + 1000):
        p.produce(topic, key=f"k{i % 97}".encode(), value=f"v{i}".encode(),
                  headers=[("loanflow.stage", f"s{i}".encode()), ("h2", b"x")], on_delivery=cb)
        p.poll(0)
    p.flush(60)
    new = acked[acked_before:]
    ends = {pp: before["wm"][pp][1] for pp in range(NPART)}
    reused = [a for a in new if a[1] < ends[a[0]]]
    log(f"{tag} old idempotent producer after restart: 1000 more, acked {len(new)} in {time.time()-t0:.2f}s, "
        f"errors {perr[:3]} (total {len(perr)}), offsets below the old end (overwrites): {len(reused)}; "
        f"first new offsets {sorted({(a[0], min(x[1] for x in new if x[0] == a[0])) for a in new})}")
    errs, logs = pev.summary(since=t_back - 30)
    log(f"{tag} that producer's error_cb during stop/start: {dict(errs)}")

    if not txn:
        log(f"{tag} transaction steps skipped")
        return
    tp, op, tid, tid_open = txn["tp"], txn["op"], txn["tid"], txn["tid_open"]
    try:
        # 7. old transactional producer, then fencing by a new one with the same transactional.id
        try:
            tp.begin_transaction()
            tp.produce(out_topic, value=b"old-after-restart")
            tp.commit_transaction(20)
            log(f"{tag} old transactional producer: begin/produce/commit after restart OK")
        except KafkaException as e:
            log(f"{tag} old transactional producer after restart: {e}")
        tp2 = Producer({"bootstrap.servers": br.bs, "transactional.id": tid})
        t0 = time.time()
        tp2.init_transactions(20)
        log(f"{tag} new producer, same transactional.id: init_transactions OK in {time.time()-t0:.2f}s")
        try:
            tp.begin_transaction()
            tp.produce(out_topic, value=b"zombie")
            tp.commit_transaction(10)
            log(f"{tag} fencing: old producer could still commit -> NOT fenced")
        except KafkaException as e:
            log(f"{tag} fencing: old producer rejected: {e}")
        tp2.begin_transaction()
        tp2.produce(out_topic, value=b"new-after-restart")
        tp2.commit_transaction(20)
        log(f"{tag} new producer commit after restart OK")

        # 8. the open transaction: can its producer still finish it, and does a new
        #    init_transactions with its id abort it (and unblock read_committed)?
        try:
            op.commit_transaction(20)
            log(f"{tag} open txn: the original producer committed it after the restart")
        except KafkaException as e:
            log(f"{tag} open txn: the original producer could not commit after the restart: {e}")
        rc_open = read_all(br.bs, open_topic, 1, "read_committed", timeout_s=5)
        log(f"{tag} open-txn topic after that: read_committed {[v for _, _, v, _ in rc_open[0]]} EOF={bool(rc_open[1])}")
        op2 = Producer({"bootstrap.servers": br.bs, "transactional.id": tid_open})
        try:
            op2.init_transactions(20)
            op2.begin_transaction()
            op2.produce(open_topic, value=b"after")
            op2.commit_transaction(20)
            log(f"{tag} open txn: a new producer with its id ran init+commit OK")
        except KafkaException as e:
            log(f"{tag} open txn: new producer with its id: {e}")
        rc_open = read_all(br.bs, open_topic, 1, "read_committed", timeout_s=5)
        log(f"{tag} open-txn topic finally: read_committed {[v for _, _, v, _ in rc_open[0]]} EOF={bool(rc_open[1])}; "
            f"watermarks {watermarks(br.bs, open_topic, 1)}")
    except KafkaException as e:
        log(f"{tag} transaction steps after the restart FAILED: {e}")


# --- midstream: producer + consumer running while the broker goes away and comes back ----------

def section_midstream(br, kill, outage_s=4.0, run_s=3.0, rate=2000):
    mode = "kill" if kill else "term"
    tag = f"[midstream-{mode}]"
    topic = f"m-{mode}-{SUFFIX}"
    group = f"gm-{mode}-{SUFFIX}"
    create_topic(br.bs, topic)
    pev, cev = Events("producer"), Events("consumer")
    p = Producer({"bootstrap.servers": br.bs, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                  "message.timeout.ms": 60000, **pev.conf()})
    c = Consumer({"bootstrap.servers": br.bs, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", **cev.conf()})
    c.assign([TopicPartition(topic, pp, 0) for pp in range(NPART)])
    acked, perr, seen = {}, [], []
    commit_errs = []
    stop = threading.Event()
    ack_times = []

    def cb(err, msg):
        if err:
            perr.append((time.time(), err.str()))
        else:
            acked[msg.value()] = (msg.partition(), msg.offset())
            ack_times.append(time.time())

    def produce_loop():
        i = 0
        t0 = time.time()
        while not stop.is_set():
            due = int((time.time() - t0) * rate)
            while i < due:
                p.produce(topic, key=str(i).encode(), value=f"m{i}".encode(), on_delivery=cb)
                i += 1
            p.poll(0.01)
        p.flush(30)

    def consume_loop():
        last_commit = time.time()
        while not stop.is_set() or tprod.is_alive() or len(seen) < len(acked):
            for m in c.consume(num_messages=1000, timeout=0.2):
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        commit_errs.append(("consume", m.error().str()))
                    continue
                seen.append((m.value(), m.partition(), m.offset(), time.time()))
            if time.time() - last_commit > 0.5:
                last_commit = time.time()
                pos = [tp for tp in c.position([TopicPartition(topic, pp) for pp in range(NPART)]) if tp.offset >= 0]
                if pos:
                    try:
                        c.commit(offsets=pos, asynchronous=False)
                    except KafkaException as e:
                        commit_errs.append(("commit", e.args[0].str()))
            if stop.is_set() and time.time() > hard_deadline:
                break
        pos = [tp for tp in c.position([TopicPartition(topic, pp) for pp in range(NPART)]) if tp.offset >= 0]
        try:
            c.commit(offsets=pos, asynchronous=False)
        except KafkaException as e:
            commit_errs.append(("final commit", e.args[0].str()))

    hard_deadline = time.time() + run_s * 2 + outage_s + 40
    tprod, tcons = threading.Thread(target=produce_loop), threading.Thread(target=consume_loop)
    tprod.start()
    tcons.start()
    time.sleep(run_s)
    t_down = time.time()
    n_before = len(acked)
    br.stop(kill=kill)
    time.sleep(outage_s)
    t_up0 = time.time()
    br.start()
    t_up = time.time()
    time.sleep(run_s)
    stop.set()
    tprod.join(120)
    tcons.join(150)
    first_ack = min((t for t in ack_times if t > t_up0), default=None)
    seen_vals = Counter(v for v, _, _, _ in seen)
    lost = [v for v in acked if v not in seen_vals]
    dups = sum(1 for v, k in seen_vals.items() if k > 1)
    resume = [t for v, _, _, t in seen if t > t_up]
    final, _ = read_all(br.bs, topic, NPART)
    stored = Counter(v for _, _, v, _ in final)
    stored_dups = sum(1 for k in stored.values() if k > 1)
    lost_stored = [v for v in acked if v not in stored]
    log(f"{tag} rate {rate}/s, down {t_up0 - t_down:.1f}s (start took {t_up - t_up0:.2f}s): acked {len(acked)} "
        f"({n_before} before the stop), delivery errors {len(perr)} {Counter(e for _, e in perr).most_common(3)}; "
        f"first ack after the stop: {f'{first_ack - t_up:.2f}s after start returned' if first_ack else 'NONE'}")
    log(f"{tag} consumer saw {len(seen)} ({len(seen_vals)} distinct), acked-but-not-seen {len(lost)}, "
        f"seen twice {dups}; first record after restart {min(resume) - t_up:.2f}s after start returned"
        if resume else f"{tag} consumer saw {len(seen)}; NOTHING after restart")
    log(f"{tag} topic afterwards: {len(final)} stored, acked-but-not-stored {len(lost_stored)}, "
        f"stored twice {stored_dups}, unacked-but-stored {len(set(stored) - set(acked))}")
    log(f"{tag} consumer commit/consume errors: {Counter(commit_errs).most_common(5)}")
    cm = committed(br.bs, group, topic, NPART)
    log(f"{tag} committed after the run: {[o for o, _ in cm]} (final watermarks {watermarks(br.bs, topic, NPART)})")
    for name, ev in (("producer", pev), ("consumer", cev)):
        errs, logs = ev.summary(since=t_down - 0.5)
        log(f"{tag} {name} error_cb: {dict(errs)}")
        log(f"{tag} {name} log lines (distinct): {dict(logs.most_common(8))}")
    c.close()


# --- timeout: a producer with message.timeout.ms shorter than the outage -----------------------

def section_timeout(br, outage_s=6.0):
    tag = "[timeout]"
    topic = f"t-{SUFFIX}"
    create_topic(br.bs, topic, 1)
    p = Producer({"bootstrap.servers": br.bs, "acks": "all", "linger.ms": 5, "message.timeout.ms": 3000})
    res = []
    p.produce(topic, value=b"warm", on_delivery=lambda e, m: res.append(("warm", e)))
    p.flush(10)
    br.stop(kill=True)
    t0 = time.time()
    for i in range(10):
        p.produce(topic, value=f"x{i}".encode(), on_delivery=lambda e, m: res.append((time.time() - t0, e)))
    p.flush(outage_s)
    br.start()
    p.flush(10)
    log(f"{tag} message.timeout.ms=3000, broker down {outage_s}s: "
        f"{Counter((round(t) if isinstance(t, float) else t, e.str() if e else None) for t, e in res)}")
    c = Consumer({"bootstrap.servers": br.bs, "group.id": f"gt-{SUFFIX}"})
    t1 = time.time()
    try:
        c.committed([TopicPartition(topic, 0)], timeout=2)
        log(f"{tag} committed() right after restart: OK in {time.time()-t1:.2f}s")
    except KafkaException as e:
        log(f"{tag} committed() right after restart: {e}")
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=f"/tmp/loanflow-restart-{SUFFIX}")
    ap.add_argument("--db", default=None)
    ap.add_argument("--only", default="restart-term,restart-kill,midstream-kill,timeout")
    ap.add_argument("--rate", type=int, default=2000)
    a = ap.parse_args()
    db = a.db or os.path.join(a.dir, "tansu.db")
    for ext in ("", "-wal", "-shm"):
        if os.path.exists(db + ext):
            os.remove(db + ext)
    br = Broker(a.dir, db)
    log(f"librdkafka {libversion()[0]}, db {db}; first start (fresh file): {br.start():.2f}s on {br.bs}")
    try:
        for name in a.only.split(","):
            t0 = time.time()
            try:
                if name.startswith("restart-"):
                    section_restart(br, name.endswith("kill"))
                elif name.startswith("midstream-"):
                    section_midstream(br, name.endswith("kill"), rate=a.rate)
                elif name == "timeout":
                    section_timeout(br)
                else:
                    sys.exit(f"unknown section {name}")
            except Exception as e:  # noqa: BLE001
                log(f"[{name}] FAILED: {type(e).__name__}: {e}")
            log(f"[{name}] took {time.time()-t0:.1f}s")
    finally:
        br.stop(kill=True)
        log(f"db size {sum(os.path.getsize(db + e) for e in ('', '-wal', '-shm') if os.path.exists(db + e)):,} bytes")


if __name__ == "__main__":
    main()
