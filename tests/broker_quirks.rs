//! The broker quirks loanflow is designed around, measured on the test broker
//! (Tansu). Each test pins the quirk as observed, so the design notes in
//! src/io/kafka.rs and README stay true; the tests of loanflow's own
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

/// Offsets-for-times answers 0 whatever the time: only a hint, never trusted.
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
    tpl.add_partition_offset("t", 0, Offset::Beginning).unwrap();
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
