//! What librdkafka's events say about reaching the brokers, kept by every
//! client's [`Context`](super::Context): which bootstrap brokers failed in a
//! way that waiting does not mend ([`Refusals`]), and how far behind each
//! partition a source reads ([`LagBoard`]).
//!
//! # Giving up at once
//! librdkafka retries a broker it cannot reach for ever; a set-up request
//! (metadata, say) only ends at its timeout. Some failures are definitive
//! for a process starting up, though: a refused connection (nothing listens
//! there), a host name that does not resolve, a TLS handshake or a SASL
//! authentication the broker rejects. [`Refusals::give_up`] says so once
//! *every* bootstrap broker has failed like that — for a refused
//! connection, on every address its host resolves to (`localhost` is
//! `::1` and `127.0.0.1`; a broker listening on one of them is still
//! reachable after the other refused). Only set-up requests ask: a running
//! job rides out a broker that went away (`--max-outage`).
//!
//! # Lag
//! A source consumer sends statistics every second (`statistics.interval.ms`);
//! a partition's lag is its end as the last fetch saw it (the last stable
//! offset, else the high watermark) minus the position the source read to.
//! Nothing is queried for it.

use std::collections::{HashMap, HashSet};
use std::net::ToSocketAddrs;
use std::sync::Mutex;

use rdkafka::statistics::Statistics;

/// How a broker failed, when waiting does not mend it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A connection to one of its addresses was refused.
    Refused,
    /// Its host name does not resolve.
    Resolve,
    /// The TLS handshake failed (a certificate, a protocol).
    Tls,
    /// SASL authentication was rejected.
    Auth,
}

/// One bootstrap broker's definitive failure.
#[derive(Debug)]
struct Failure {
    kind: Kind,
    /// librdkafka's words, without the broker's name and the timing.
    reason: String,
    /// The addresses that refused a connection (for [`Kind::Refused`]).
    refused: HashSet<String>,
    /// How many addresses the host resolves to (looked up once, when needed).
    addresses: Option<usize>,
}

/// The definitive failures of one client's bootstrap brokers.
#[derive(Debug)]
pub struct Refusals {
    /// The bootstrap brokers, as `host:port` (any `proto://` prefix dropped).
    bootstrap: Vec<String>,
    failures: Mutex<HashMap<String, Failure>>,
}

impl Refusals {
    /// For the bootstrap servers `brokers` (`--brokers`, comma separated).
    pub fn new(brokers: &str) -> Refusals {
        Refusals {
            bootstrap: brokers
                .split(',')
                .map(|b| strip_scheme(b.trim()).to_owned())
                .filter(|b| !b.is_empty())
                .collect(),
            failures: Mutex::default(),
        }
    }

    /// Reads a librdkafka error or `FAIL` log text (`BROKER/bootstrap:
    /// Connect to ipv4#ADDRESS failed: Connection refused (after 0ms in
    /// state CONNECT)`, say); remembers it if it is definitive.
    pub fn note(&self, text: &str) {
        let Some((broker, kind, reason, address)) = parse(text) else {
            return;
        };
        if !self.bootstrap.contains(&broker) {
            return;
        }
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let failure = failures.entry(broker).or_insert_with(|| Failure {
            kind,
            reason: reason.clone(),
            refused: HashSet::new(),
            addresses: None,
        });
        // A refusal does not hide a more telling failure seen before.
        if kind != Kind::Refused || failure.kind == Kind::Refused {
            failure.kind = kind;
            failure.reason = reason;
        }
        if let Some(address) = address {
            failure.refused.insert(address);
        }
    }

    /// `Some(why)` once every bootstrap broker has failed definitively
    /// (see the module docs): waiting longer would not help.
    pub fn give_up(&self) -> Option<String> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut why = Vec::new();
        for broker in &self.bootstrap {
            let failure = failures.get_mut(broker)?;
            if failure.kind == Kind::Refused {
                let addresses = *failure
                    .addresses
                    .get_or_insert_with(|| resolved_addresses(broker));
                if failure.refused.len() < addresses.max(1) {
                    return None;
                }
            }
            let text = describe(broker, failure);
            if !why.contains(&text) {
                why.push(text);
            }
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// How many addresses `broker` (`host:port`) resolves to; 1 if it does not
/// resolve here (librdkafka then says so itself).
fn resolved_addresses(broker: &str) -> usize {
    broker
        .to_socket_addrs()
        .map(|a| a.collect::<HashSet<_>>().len())
        .unwrap_or(1)
}

/// `host:port` without a `proto://` prefix.
fn strip_scheme(broker: &str) -> &str {
    broker.split_once("://").map_or(broker, |(_, rest)| rest)
}

/// A failure as the one line says it.
fn describe(broker: &str, failure: &Failure) -> String {
    match failure.kind {
        Kind::Refused => format!(
            "connection to {broker} refused (is the broker running there, and is --brokers right?)"
        ),
        Kind::Resolve => format!(
            "cannot resolve the host of {broker} ({}; check --brokers)",
            failure.reason
        ),
        // librdkafka's own words often say what to check already.
        Kind::Tls if failure.reason.contains("ssl.ca.location") => {
            format!("TLS with {broker} failed: {}", failure.reason)
        }
        Kind::Tls => format!(
            "TLS with {broker} failed: {} (check -X ssl.ca.location and the other ssl.* settings)",
            failure.reason
        ),
        Kind::Auth => format!(
            "{broker} refused the SASL authentication: {} (check -X sasl.*)",
            failure.reason
        ),
    }
}

/// (broker, kind, reason, refused address) of a definitive failure text.
fn parse(text: &str) -> Option<(String, Kind, String, Option<String>)> {
    // A `FAIL` log line starts with the thread: `[thrd:NAME]: `.
    let text = match text.strip_prefix("[thrd:") {
        Some(rest) => rest.split_once("]: ").map_or(text, |(_, t)| t),
        None => text,
    };
    let (name, rest) = text.split_once(": ")?;
    // `host:port/bootstrap` or `host:port/ID`, maybe `proto://` first.
    let broker = strip_scheme(name.rsplit_once('/').map_or(name, |(b, _)| b)).to_owned();
    let reason = rest
        .split_once(" (after ")
        .map_or(rest, |(r, _)| r)
        .trim()
        .to_owned();
    let lower = reason.to_ascii_lowercase();
    let kind = if lower.contains("connection refused") {
        Kind::Refused
    } else if lower.contains("failed to resolve") {
        Kind::Resolve
    } else if lower.contains("ssl handshake failed") || lower.contains("certificate verify failed")
    {
        Kind::Tls
    } else if lower.contains("sasl authentication error") || lower.contains("authentication failed")
    {
        Kind::Auth
    } else {
        return None;
    };
    let address = (kind == Kind::Refused)
        .then(|| {
            reason
                .split_once("Connect to ")
                .and_then(|(_, r)| r.split_once(" failed"))
                .map(|(a, _)| a.to_owned())
        })
        .flatten()
        .or_else(|| (kind == Kind::Refused).then(|| broker.clone()));
    Some((broker, kind, reason, address))
}

/// How far behind each partition's end the sources of a process read, from
/// their consumers' statistics.
#[derive(Debug, Default)]
pub struct LagBoard(Mutex<HashMap<(String, i32), u64>>);

impl LagBoard {
    /// Takes one consumer's statistics.
    pub fn record(&self, statistics: &Statistics) {
        let mut board = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, t) in &statistics.topics {
            for (&p, part) in &t.partitions {
                if p < 0 {
                    continue; // librdkafka's internal "unassigned" partition
                }
                let end = if part.ls_offset >= 0 {
                    part.ls_offset
                } else {
                    part.hi_offset
                };
                let position = if part.app_offset >= 0 {
                    part.app_offset
                } else {
                    part.committed_offset
                };
                if end >= 0 && position >= 0 {
                    let lag = (end - position).max(0) as u64;
                    if let Some(m) = crate::core::metrics::installed() {
                        m.set_consumer_lag(topic, p, lag);
                    }
                    board.insert((topic.clone(), p), lag);
                }
            }
        }
    }

    /// The lag summed over the partitions of `topic` a source reports on;
    /// `None` before any report.
    pub fn total(&self, topic: &str) -> Option<u64> {
        let board = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut known = board.iter().filter(|((t, _), _)| t == topic).peekable();
        known.peek()?;
        Some(known.map(|(_, lag)| lag).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSED: &str = "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: \
                           Connection refused (after 0ms in state CONNECT)";

    #[test]
    fn a_refused_connection_is_definitive_once_every_broker_refused() {
        let r = Refusals::new("127.0.0.1:9, 127.0.0.1:10");
        r.note(REFUSED);
        assert_eq!(r.give_up(), None, "the second broker may answer");
        r.note(
            "[thrd:127.0.0.1:10/bootstrap]: 127.0.0.1:10/bootstrap: Connect to ipv4#127.0.0.1:10 \
             failed: Connection refused (after 1ms in state CONNECT, 1 identical error(s) suppressed)",
        );
        let why = r.give_up().unwrap();
        assert!(why.contains("connection to 127.0.0.1:9 refused"), "{why}");
        assert!(why.contains("connection to 127.0.0.1:10 refused"), "{why}");
    }

    #[test]
    fn localhost_refused_on_one_address_may_answer_on_the_other() {
        let addresses = resolved_addresses("localhost:9");
        let r = Refusals::new("localhost:9");
        r.note("localhost:9/bootstrap: Connect to ipv6#[::1]:9 failed: Connection refused (after 0ms in state CONNECT)");
        assert_eq!(r.give_up().is_some(), addresses <= 1);
        r.note("localhost:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused (after 0ms in state CONNECT)");
        assert!(r.give_up().is_some());
    }

    #[test]
    fn unknown_hosts_and_tls_failures_are_definitive_timeouts_are_not() {
        let r = Refusals::new("nosuch.invalid:9092");
        r.note("nosuch.invalid:9092/bootstrap: Failed to resolve 'nosuch.invalid:9092': Name or service not known (after 2ms in state CONNECT)");
        let why = r.give_up().unwrap();
        assert!(
            why.contains("cannot resolve the host of nosuch.invalid:9092"),
            "{why}"
        );
        assert!(!why.contains("after 2ms"), "{why}");

        let r = Refusals::new("ssl://127.0.0.1:9093");
        r.note("ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified (after 5ms in state SSL_HANDSHAKE)");
        let why = r.give_up().unwrap();
        assert!(why.contains("certificate verify failed"), "{why}");

        let r = Refusals::new("127.0.0.1:9092");
        r.note("127.0.0.1:9092/bootstrap: Connection setup timed out in state CONNECT (after 30029ms in state CONNECT)");
        r.note("1/1 brokers are down");
        assert_eq!(r.give_up(), None);
    }
}
