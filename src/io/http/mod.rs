//! `--http ADDR`: the run's metrics and a live page, served from the
//! process itself.
//!
//! - `/metrics`: [`crate::core::metrics`] in the OpenMetrics text format
//!   to a scraper that asks for it (Prometheus does), else in Prometheus'
//!   0.0.4 text format (`curl`, `promtool check metrics`).
//! - `/healthz`: `200 ok` while any worker of this process runs, `503`
//!   before they start and after they end.
//! - `/`: the live page (`assets/live.html`), which polls `/api/live` every
//!   second: records/s and latency p50/p99 over time, the monitor's flag rate
//!   by group and PSI by column (when a monitor feeds them), and the newest
//!   flagged applications. Its script and style — uPlot, vendored from the
//!   npm registry by `scripts/vendor_uplot` — are compiled into the binary:
//!   nothing is fetched from elsewhere.
//!
//! # Invariants
//! 1. **One server per process**, bound by the first [`serve`] (before any
//!    worker starts: a bad or busy address is a set-up error); a run started
//!    again after a fault finds it serving and keeps it.
//! 2. **Off the hot path**: requests are answered on the server's own
//!    thread, and the throughput series is sampled once a second by another;
//!    neither touches a worker.
//! 3. The throughput series is **derived from the counters** (delivered
//!    outputs and the latency histogram's buckets, differenced per second),
//!    so the page and `/metrics` never disagree.

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::core::metrics::{self, quantile, Metrics, LATENCY_BUCKETS};

const PAGE: &str = include_str!("assets/live.html");
const UPLOT_JS: &str = include_str!("assets/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/uPlot.min.css");

/// How many one-second throughput points the page is given (10 minutes).
const POINTS: usize = 600;

/// Why `--http ADDR` cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Not a `host:port` that resolves.
    #[error(
        "--http {addr}: not an address to listen on (expected host:port, e.g. 127.0.0.1:9100)"
    )]
    BadAddress {
        /// The address as given.
        addr: String,
    },
    /// Binding failed (in use, not this machine's, no permission).
    #[error("--http {addr}: cannot listen there: {message}")]
    Bind {
        /// The address as given.
        addr: String,
        /// What the system said.
        message: String,
    },
    /// A run of this process serves on another address already.
    #[error("--http {addr}: this process serves on {serving} already")]
    Other {
        /// The address as given.
        addr: String,
        /// Where it serves.
        serving: SocketAddr,
    },
}

/// The process's server: where it listens.
#[derive(Debug)]
pub struct Served {
    /// The bound address (the real port if `:0` was asked for).
    pub addr: SocketAddr,
    asked: String,
}

static SERVED: OnceLock<Served> = OnceLock::new();
static BIND: Mutex<()> = Mutex::new(());

/// `addr` with `offset` added to its port (a cluster's process I serves on
/// ADDR's port + I).
pub fn with_port_offset(addr: &str, offset: u16) -> Result<String, HttpError> {
    let bad = || HttpError::BadAddress {
        addr: addr.to_owned(),
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || offset == 0 {
        return Ok(addr.to_owned());
    }
    let port = port.checked_add(offset).ok_or_else(bad)?;
    Ok(format!("{host}:{port}"))
}

/// Serves the metrics and the page on `addr` (invariant 1): binds now, or
/// returns the server this process already runs there.
pub fn serve(addr: &str) -> Result<&'static Served, HttpError> {
    let _one = BIND.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = SERVED.get() {
        return if s.asked == addr {
            Ok(s)
        } else {
            Err(HttpError::Other {
                addr: addr.to_owned(),
                serving: s.addr,
            })
        };
    }
    let bad = || HttpError::BadAddress {
        addr: addr.to_owned(),
    };
    let socket = addr
        .to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)?;
    let listener = std::net::TcpListener::bind(socket).map_err(|e| HttpError::Bind {
        addr: addr.to_owned(),
        message: e.to_string(),
    })?;
    let bound = listener.local_addr().map_err(|e| HttpError::Bind {
        addr: addr.to_owned(),
        message: e.to_string(),
    })?;
    let server = tiny_http::Server::from_listener(listener, None).map_err(|e| HttpError::Bind {
        addr: addr.to_owned(),
        message: e.to_string(),
    })?;
    let m = metrics::install();
    let live = &*Box::leak(Box::new(Live::default()));
    std::thread::Builder::new()
        .name("loanflow-http-sampler".into())
        .spawn(move || live.sample_forever(m))
        .map_err(|e| HttpError::Bind {
            addr: addr.to_owned(),
            message: e.to_string(),
        })?;
    std::thread::Builder::new()
        .name("loanflow-http".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                answer(request, m, live);
            }
        })
        .map_err(|e| HttpError::Bind {
            addr: addr.to_owned(),
            message: e.to_string(),
        })?;
    Ok(SERVED.get_or_init(|| Served {
        addr: bound,
        asked: addr.to_owned(),
    }))
}

/// Where this process serves, if it does.
pub fn served() -> Option<SocketAddr> {
    SERVED.get().map(|s| s.addr)
}

/// One point of the throughput series.
#[derive(Debug, Clone, Copy)]
struct Point {
    /// Wall clock, ms since the epoch.
    at_ms: i64,
    /// Outputs delivered per second over the last second.
    per_second: f64,
    /// Latency quantiles (ms) of what was written in the last second.
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

/// The throughput series (invariant 3).
#[derive(Debug, Default)]
struct Live {
    points: Mutex<VecDeque<Point>>,
}

impl Live {
    fn sample_forever(&self, m: &Metrics) -> ! {
        let delivered = |m: &Metrics| m.delivered_count("scored") + m.delivered_count("cleaned");
        let mut last = (Instant::now(), delivered(m), m.latency().snapshot().0);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = (Instant::now(), delivered(m), m.latency().snapshot().0);
            let secs = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
            let diff: [u64; LATENCY_BUCKETS.len() + 1] =
                std::array::from_fn(|i| now.2[i].saturating_sub(last.2[i]));
            let point = Point {
                at_ms: crate::core::record::now_ns() / 1_000_000,
                per_second: now.1.saturating_sub(last.1) as f64 / secs,
                p50_ms: quantile(&diff, 0.5).map(|s| s * 1e3),
                p99_ms: quantile(&diff, 0.99).map(|s| s * 1e3),
            };
            let mut points = self.points.lock().unwrap_or_else(|e| e.into_inner());
            if points.len() == POINTS {
                points.pop_front();
            }
            points.push_back(point);
            drop(points);
            last = now;
        }
    }

    fn json(&self, m: &Metrics) -> Value {
        let points = self
            .points
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let series = |map: std::collections::BTreeMap<String, metrics::Series>| -> Value {
            map.into_iter()
                .map(|(k, s)| (k, json!(s.into_iter().collect::<Vec<_>>())))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let (feed, pushed) = m.feed();
        json!({
            "throughput": {
                "at_ms": points.iter().map(|p| p.at_ms).collect::<Vec<_>>(),
                "per_second": points.iter().map(|p| p.per_second).collect::<Vec<_>>(),
                "p50_ms": points.iter().map(|p| p.p50_ms).collect::<Vec<_>>(),
                "p99_ms": points.iter().map(|p| p.p99_ms).collect::<Vec<_>>(),
            },
            "totals": {
                "scored": m.delivered_count("scored"),
                "flagged": m.delivered_count("flagged"),
                "dead_letters": m.delivered_count("dead_letter"),
                "workers_running": m.workers_running(),
            },
            "flag_rate": series(m.flag_series()),
            "psi": series(m.psi_series()),
            "feed": feed.iter().map(|f| json!({
                "id": f.id,
                "score": f.score,
                "event_time_ms": f.event_time.map(|t| t / 1_000_000),
                "written_ms": f.written_at / 1_000_000,
            })).collect::<Vec<_>>(),
            "feed_pushed": pushed,
        })
    }
}

fn answer(request: tiny_http::Request, m: &Metrics, live: &Live) {
    let path = request.url().split('?').next().unwrap_or("/").to_owned();
    let openmetrics = request.headers().iter().any(|h| {
        h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text")
    });
    let (status, content_type, body): (u16, &str, String) = match path.as_str() {
        "/metrics" if openmetrics => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            m.encode(),
        ),
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            m.encode_text(),
        ),
        "/healthz" if m.workers_running() > 0 => (200, "text/plain; charset=utf-8", "ok\n".into()),
        "/healthz" => (
            503,
            "text/plain; charset=utf-8",
            "no worker running\n".into(),
        ),
        "/" | "/index.html" => (200, "text/html; charset=utf-8", PAGE.into()),
        "/uPlot.iife.min.js" => (200, "text/javascript; charset=utf-8", UPLOT_JS.into()),
        "/uPlot.min.css" => (200, "text/css; charset=utf-8", UPLOT_CSS.into()),
        "/api/live" => (200, "application/json", live.json(m).to_string()),
        _ => (404, "text/plain; charset=utf-8", "not found\n".into()),
    };
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
        .expect("a valid header");
    let no_cache = tiny_http::Header::from_bytes(&b"Cache-Control"[..], &b"no-store"[..])
        .expect("a valid header");
    let response = tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(header)
        .with_header(no_cache);
    if let Err(e) = request.respond(response) {
        tracing::debug!("http: cannot answer {path}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_process_serves_on_the_port_plus_its_index() {
        assert_eq!(
            with_port_offset("127.0.0.1:9100", 2).unwrap(),
            "127.0.0.1:9102"
        );
        assert_eq!(with_port_offset("[::1]:9100", 1).unwrap(), "[::1]:9101");
        assert_eq!(with_port_offset("127.0.0.1:0", 3).unwrap(), "127.0.0.1:0");
        assert!(with_port_offset("localhost", 1).is_err());
        assert!(with_port_offset("h:65535", 1).is_err());
    }
}
