//! The broker quirks loanflow is designed around, measured on the test broker
//! (Tansu). Each test pins the quirk as observed, so the design notes in
//! src/io/kafka/ and README stay true; the tests of loanflow's own
//! behaviour under each quirk are in tests/kafka.rs.

mod common;

use std::time::Duration;

use common::Broker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn produce(broker: &Broker, topic: &str, batches: &[usize]) -> usize {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create()
        .unwrap();
    let mut n = 0;
    for &batch in batches {
        for _ in 0..batch {
            producer
                .send(
                    BaseRecord::<(), _>::to(topic)
                        .partition(0)
                        .payload("x")
                        .timestamp(1_000_000 + n as i64 * 1000),
                )
                .unwrap();
            n += 1;
        }
        // One flush per batch: each becomes its own record batch on the broker.
        producer.flush(Duration::from_secs(10)).unwrap();
    }
    n
}

fn topic(broker: &Broker, name: &str) {
    let out = common::loanflow(&[
        "ingest",
        "--brokers",
        &broker.address,
        "--topic",
        name,
        "--partitions",
        "1",
        "--input",
        "tests/fixtures/empty.jsonl",
        "-q",
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
}

/// ListOffsets(latest) answers the last batch's base offset (+1), not the
/// high watermark: "caught up" must come from fetch (partition EOF).
#[test]
fn latest_offset_query_is_not_the_high_watermark() {
    let broker = Broker::start();
    topic(&broker, "t");
    let n = produce(&broker, "t", &[10, 20, 30]) as i64;
    let consumer = broker.consumer(&[]);
    let (_, high) = consumer
        .fetch_watermarks("t", 0, Duration::from_secs(10))
        .unwrap();
    assert!(
        high < n,
        "ListOffsets(latest) = {high}; the partition holds {n}"
    );
    // Fetch knows better: reading to partition EOF finds all of them.
    assert_eq!(broker.read_all("t").len() as i64, n);
}

/// Offsets-for-times answers 0 whatever the time (the batch stored first,
/// quirk 4): `--from time:` starts there and skips older records by their
/// timestamp.
#[test]
fn offsets_for_times_answers_zero() {
    let broker = Broker::start();
    topic(&broker, "t");
    let n = produce(&broker, "t", &[50, 50]);
    let consumer = broker.consumer(&[]);
    let mut tpl = TopicPartitionList::new();
    let middle = 1_000_000 + (n as i64 / 2) * 1000;
    tpl.add_partition_offset("t", 0, Offset::Offset(middle))
        .unwrap();
    let answer = consumer
        .offsets_for_times(tpl, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        answer.find_partition("t", 0).unwrap().offset(),
        Offset::Offset(0)
    );
}

/// Records of an aborted transaction still reach read_committed readers.
#[test]
fn aborted_transactions_are_delivered_to_read_committed_readers() {
    let broker = Broker::start();
    topic(&broker, "t");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("transactional.id", "quirk")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(10)).unwrap();
    producer.begin_transaction().unwrap();
    for _ in 0..5 {
        producer
            .send(BaseRecord::<(), _>::to("t").partition(0).payload("aborted"))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    producer.abort_transaction(Duration::from_secs(10)).unwrap();

    let consumer: BaseConsumer = broker.consumer(&[("isolation.level", "read_committed")]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("t", 0, Offset::Offset(0)).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(std::time::Instant::now() < deadline);
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.payload() == Some(b"aborted".as_slice()) => seen += 1,
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            _ => {}
        }
    }
    assert_eq!(seen, 5, "aborted records delivered to read_committed");
}

/// ListOffsets(earliest) answers the batch the broker *stored* first by wall
/// clock, not offset 0: when producers write a partition at once, a later
/// batch can be stored first and `Offset::Beginning` then starts above the
/// batches below it (seen in about 3 % of rounds here; it lost 192 outputs of
/// a cluster run's read-back). So every loanflow reader starts at offset 0
/// (`loanflow::io::kafka::START`), and this checks that offset 0 reads every
/// acknowledged record in every round, including those where earliest was
/// not 0.
#[test]
fn earliest_offset_query_can_skip_batches_so_readers_start_at_offset_zero() {
    let broker = Broker::start();
    let (rounds, producers) = (25, 4);
    let mut skipped_rounds = 0;
    for round in 0..rounds {
        let name = format!("earliest-{round}");
        topic(&broker, &name);
        let acked: usize = std::thread::scope(|s| {
            let writers: Vec<_> = (0..producers)
                .map(|i| {
                    let (name, address) = (&name, &broker.address);
                    s.spawn(move || {
                        let producer: BaseProducer = ClientConfig::new()
                            .set("bootstrap.servers", address)
                            .set("linger.ms", "5")
                            .create()
                            .unwrap();
                        let value = format!("{i}{}", "x".repeat(500));
                        let n = 200 * (i + 1);
                        for _ in 0..n {
                            producer
                                .send(BaseRecord::<(), _>::to(name).partition(0).payload(&value))
                                .unwrap();
                            producer.poll(Duration::ZERO);
                        }
                        producer.flush(Duration::from_secs(10)).unwrap();
                        n
                    })
                })
                .collect();
            writers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        let consumer = broker.consumer(&[("auto.offset.reset", "earliest")]);
        let (earliest, _) = consumer
            .fetch_watermarks(&name, 0, Duration::from_secs(10))
            .unwrap();
        if earliest > 0 {
            skipped_rounds += 1;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&name, 0, Offset::Offset(0))
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut read = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            assert!(std::time::Instant::now() < deadline, "no end of {name}");
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(_)) => read += 1,
                // An end before every acknowledged record is only an end
                // for now: a produce raises the high watermark before its
                // batch is stored (quirk 11 (b)), so keep reading until
                // the deadline.
                Some(Err(KafkaError::PartitionEOF(_))) if read >= acked => break,
                _ => {}
            }
        }
        assert_eq!(
            read, acked,
            "offset 0 reads every acknowledged record (round {round}, earliest {earliest})"
        );
    }
    eprintln!("ListOffsets(earliest) > 0 in {skipped_rounds} of {rounds} rounds");
}

/// A consumer that resumes in the middle of a record batch reads the rest of
/// that batch, as Kafka serves it. crates.io tansu-storage 0.6.0 served the
/// batches based at or after the offset asked for, so a run resuming from a
/// committed offset inside a batch skipped the batch's remaining records
/// (seen as 5 "lost" inputs of the exactly-once crash test on the broker
/// built from crates.io); `scripts/tansu-0.6.0-storage.patch` fixes that in
/// the patched build, and the prebuilt broker never had it. Both are checked.
#[test]
fn a_fetch_from_the_middle_of_a_batch_returns_the_rest_of_it() {
    for (name, broker) in [
        ("prebuilt", Broker::start_prebuilt()),
        ("patched", Broker::start()),
    ] {
        topic(&broker, "t");
        // One batch of 10 (one flush), then a second batch of 5.
        assert_eq!(produce(&broker, "t", &[10, 5]), 15);
        for from in [0, 1, 5, 9, 10, 12] {
            let consumer: BaseConsumer = broker.consumer(&[]);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("t", 0, Offset::Offset(from))
                .unwrap();
            consumer.assign(&tpl).unwrap();
            let mut offsets = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                assert!(std::time::Instant::now() < deadline, "{name}: no EOF");
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => offsets.push(m.offset()),
                    Some(Err(KafkaError::PartitionEOF(_))) => break,
                    _ => {}
                }
            }
            assert_eq!(
                offsets,
                (from..15).collect::<Vec<i64>>(),
                "{name} broker, reading from offset {from}"
            );
        }
    }
}

/// Two producers write one partition in small batches while a reader
/// follows it. The prebuilt broker stalls that reader after a few thousand
/// records (in 4 of 4 tries with a Python client; it skipped records once),
/// though a fresh reader from offset 0 then gets everything: its fetch can
/// serve a later batch while an earlier one is still being stored (quirk
/// 12). The patched build must hand the follower every record, in order,
/// once. The prebuilt one's count is only reported.
#[test]
fn a_reader_following_two_writers_gets_every_record() {
    const EACH: usize = 20_000;
    for (name, broker) in [
        ("patched", Broker::start()),
        ("prebuilt", Broker::start_prebuilt()),
    ] {
        topic(&broker, "t");
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let address = broker.address.clone();
                std::thread::spawn(move || {
                    let producer: BaseProducer = ClientConfig::new()
                        .set("bootstrap.servers", &address)
                        .set("linger.ms", "0")
                        .set("batch.num.messages", "7")
                        .create()
                        .unwrap();
                    for i in 0..EACH {
                        loop {
                            match producer
                                .send(BaseRecord::<(), _>::to("t").partition(0).payload("x"))
                            {
                                Ok(()) => break,
                                Err((KafkaError::MessageProduction(_), _)) => {
                                    producer.poll(Duration::from_millis(10));
                                }
                                Err((e, _)) => panic!("{e}"),
                            }
                        }
                        if i % 50 == 0 {
                            producer.poll(Duration::ZERO);
                        }
                    }
                    producer.flush(Duration::from_secs(30)).unwrap();
                })
            })
            .collect();
        let consumer: BaseConsumer = broker.consumer(&[("fetch.wait.max.ms", "1")]);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Offset(0)).unwrap();
        consumer.assign(&tpl).unwrap();
        let mut offsets = Vec::new();
        let mut last_news = std::time::Instant::now();
        // Follow until everything arrived, or nothing new came for 10 s.
        while offsets.len() < 2 * EACH && last_news.elapsed() < Duration::from_secs(10) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                offsets.push(m.offset());
                last_news = std::time::Instant::now();
            }
        }
        for w in writers {
            w.join().unwrap();
        }
        eprintln!(
            "{name} broker: the follower read {} of {}",
            offsets.len(),
            2 * EACH
        );
        if name == "patched" {
            assert_eq!(offsets, (0..2 * EACH as i64).collect::<Vec<_>>());
        }
    }
}
