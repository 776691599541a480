//! `--http ADDR`: the metrics as a real Prometheus scrapes them (Debian's
//! `prometheus`, read back through its own query API, and `promtool check
//! metrics`), the live page in a real browser (Debian's `chromium`,
//! headless), `/healthz`, and the set-up errors of a bad address.
//!
//! `scripts/test` installs both tools. Elsewhere a test without them says
//! so and passes; in CI (`CI` set) a missing tool fails it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    free_loopback_port, in_ci, ingest, kafka_run_args, loanflow, loanflow_command, root, verify,
};

/// Whether `tool` is on the PATH; without it, a test is skipped — except
/// in CI, where it must be there.
fn have(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !in_ci(),
            "{tool} is missing: scripts/test installs Debian's `{package}` package"
        );
        eprintln!("skipped: {tool} is not installed (Debian package `{package}`)");
    }
    found
}

/// A plain HTTP/1.0 GET: the status and the body.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Polls `check` every 200 ms until it returns `Some`, for up to `secs`.
fn wait_for<T>(what: &str, secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child process killed when dropped (a failed assertion leaves nothing running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the one sample a PromQL `query` returns, if it has one.
fn prometheus_value(prometheus: &str, query: &str) -> Option<f64> {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = get(prometheus, &format!("/api/v1/query?query={encoded}"))?;
    if status != 200 {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = json["data"]["result"].as_array()?;
    let [sample] = result.as_slice() else {
        return None;
    };
    sample["value"][1].as_str()?.parse().ok()
}

/// The number after `label` on the summary's line that starts with it.
fn summary_count(summary: &str, label: &str) -> u64 {
    summary
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` line in the summary:\n{summary}"))
}

/// A live Kafka run with `--http`, scraped every second by a real
/// Prometheus: what Prometheus stored equals what the run's summary says
/// it scored, the consumer's lag and the committed offsets are there per
/// partition, and `promtool` accepts the exposition.
#[test]
fn prometheus_scrapes_the_run_and_its_count_equals_the_summary() {
    if !have("prometheus", "prometheus") || !have("promtool", "prometheus") {
        return;
    }
    let broker = common::Broker::start();
    ingest(&broker, "loans", "data/lending_club.csv", "4");
    let http = format!("127.0.0.1:{}", free_loopback_port());
    let mut args = kafka_run_args(&broker, &["--http", &http]);
    args.retain(|a| *a != "-q");
    args.push("-q");
    let mut run = Running(
        loanflow_command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: loanflow\n    static_configs:\n      - targets: ['{http}']\n"
        ),
    )
    .unwrap();
    let prometheus = format!("127.0.0.1:{}", free_loopback_port());
    let _prometheus = Running(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prometheus}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus"),
    );

    // The run has read and committed every record…
    wait_for("loanflow to score all 9857 applications", 120, || {
        let (_, text) = get(&http, "/metrics")?;
        text.contains("loanflow_outputs_total{kind=\"scored\"} 9857")
            .then_some(())
    });
    assert_eq!(get(&http, "/healthz").map(|(s, _)| s), Some(200));
    // …and Prometheus has scraped it so.
    let stored = wait_for("Prometheus to store the final count", 120, || {
        let v = prometheus_value(&prometheus, "loanflow_outputs_total{kind=\"scored\"}")?;
        (v == 9857.0).then_some(v)
    });
    let committed = wait_for("Prometheus to see every offset committed", 60, || {
        let v = prometheus_value(
            &prometheus,
            "sum(loanflow_committed_offset{topic=\"loans\"})",
        )?;
        (v == 9857.0).then_some(v)
    });
    assert_eq!(committed, 9857.0);
    let partitions = wait_for("the lag of the 4 partitions", 60, || {
        let v = prometheus_value(&prometheus, "count(loanflow_consumer_lag{topic=\"loans\"})")?;
        (v == 4.0).then_some(v)
    });
    assert_eq!(partitions, 4.0);
    let sink_out = prometheus_value(&prometheus, "loanflow_records_out_total{stage=\"sink\"}");
    assert_eq!(sink_out, Some(stored));

    // promtool accepts the exposition, as a scraper without OpenMetrics gets it.
    let (status, text) = get(&http, "/metrics").unwrap();
    assert_eq!(status, 200);
    let exposition = dir.path().join("metrics.txt");
    std::fs::write(&exposition, &text).unwrap();
    let check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&exposition).unwrap())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // Stopped, the run's summary says what Prometheus stored.
    let (ok, summary) = stop(&mut run);
    assert!(ok, "{summary}");
    assert_eq!(
        summary_count(&summary, "scored") as f64,
        stored,
        "{summary}"
    );
    assert!(summary.contains(&format!("http://{http}/")), "{summary}");
}

/// `--no-monitor` leaves the spec's `[monitor]` off under `--http`: once a
/// paced replay is well past several of its weekly windows (which, with the
/// monitor on, show as gauges as they close), no monitor gauge has a sample.
#[test]
fn no_monitor_keeps_the_monitor_off_under_http() {
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_loopback_port());
    let output = dir.path().join("out.jsonl");
    let _replay = Running(
        loanflow_command(&[
            "replay",
            "data/lending_club.csv",
            "--rate",
            "2000",
            "--http",
            &http,
            "--no-monitor",
            "-o",
            output.to_str().unwrap(),
            "-q",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    // 6,000 of the 9,857 applications: about eight weeks of event time.
    let text = wait_for("6,000 applications scored", 60, || {
        let (_, text) = get(&http, "/metrics")?;
        let scored: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("loanflow_outputs_total{kind=\"scored\"} "))?
            .parse()
            .ok()?;
        (scored >= 6000.0).then_some(text)
    });
    assert!(
        !text.contains("loanflow_monitor_flag_rate{") && !text.contains("loanflow_monitor_psi{"),
        "{text}"
    );
    let (_, live) = get(&http, "/api/live").unwrap();
    let live: serde_json::Value = serde_json::from_str(&live).unwrap();
    assert!(live["flag_rate"].as_object().unwrap().is_empty(), "{live}");
}

/// The start tag of the element with `id` in `dom`.
fn tag<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

/// The number in attribute `attr` of the element with `id`.
fn attr(dom: &str, id: &str, attr: &str) -> u64 {
    let tag = tag(dom, id);
    let at = tag
        .find(&format!("{attr}=\""))
        .unwrap_or_else(|| panic!("no {attr} on #{id}: {tag}"));
    let rest = &tag[at + attr.len() + 2..];
    rest[..rest.find('"').unwrap()].parse().unwrap()
}

/// Headless Chromium on `url` (the machine may be offline: nothing of
/// Google's is contacted), with `extra` (`--dump-dom`, `--screenshot=…`).
fn chromium(url: &str, profile: &Path, extra: &[&str]) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium")
}

/// The live page in headless Chromium during a paced replay: the
/// throughput and latency charts have points, the monitor charts have
/// points or say there is no monitor, and the feed lists flagged
/// applications — each one flagged in the run's output. With
/// `LOANFLOW_SCREENSHOT=1` it also rewrites `benches/live_page.png`.
#[test]
fn the_live_page_draws_charts_and_the_flagged_feed_in_chromium() {
    if !have("chromium", "chromium") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    let http = format!("127.0.0.1:{}", free_loopback_port());
    let mut replay = Running(
        loanflow_command(&[
            "replay",
            "data/lending_club.csv",
            // Two workers, each reading half the file (it is smaller than two
            // stripes): the second half's windows open long before they
            // close, and must not hold back the first half's reports.
            "-w",
            "2",
            "--rate",
            "400",
            "--http",
            &http,
            "-o",
            output.to_str().unwrap(),
            "-q",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    // A few seconds of points, flagged applications in the feed, and the
    // spec's [monitor] windows closing as the replay goes (the default
    // dataflow has one: the page shows it without --monitor; a replay paced
    // by rate closes epochs of at most 5 ms, so windows are not held to its
    // end).
    wait_for("the page's data", 60, || {
        let (status, body) = get(&http, "/api/live")?;
        let live: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200
            && live["throughput"]["at_ms"].as_array()?.len() >= 3
            && !live["feed"].as_array()?.is_empty()
            && !live["flag_rate"].as_object()?.is_empty()
            && !live["psi"].as_object()?.is_empty())
        .then_some(())
    });
    assert_eq!(get(&http, "/healthz").map(|(s, _)| s), Some(200));

    let url = format!("http://{http}/");
    let out = chromium(&url, &dir.path().join("profile"), &["--dump-dom"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8(out.stdout).unwrap();
    assert!(attr(&dom, "throughput", "data-points") >= 2, "{dom}");
    assert!(attr(&dom, "latency", "data-points") >= 2, "{dom}");
    for chart in ["flagrate", "psi"] {
        let points = attr(&dom, chart, "data-points");
        let card = &dom[dom.find(&format!("id=\"{chart}\"")).unwrap()..];
        let card = &card[..card.find("</div></div>").unwrap_or(card.len())];
        assert!(
            points > 0 && !card.contains("no monitor"),
            "#{chart}: {card}"
        );
    }
    let items = attr(&dom, "feed", "data-items");
    assert!(items >= 1, "{dom}");
    let feed = &dom[dom.find("id=\"feed\"").unwrap()..];
    let feed = &feed[..feed.find("</tbody>").unwrap()];
    let ids: Vec<&str> = feed
        .split("<tr class=\"flagged\"><td>")
        .skip(1)
        .map(|row| &row[..row.find('<').unwrap()])
        .collect();
    assert_eq!(ids.len() as u64, items, "{feed}");

    let shot = dir.path().join("live_page.png");
    let out = chromium(
        &url,
        &dir.path().join("profile"),
        &[
            "--window-size=1280,900",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    if std::env::var_os("LOANFLOW_SCREENSHOT").is_some() {
        std::fs::write(root().join("benches/live_page.png"), &png).unwrap();
    }

    // The run ends by itself; every application the feed showed was flagged.
    let status = replay.0.wait().unwrap();
    let mut summary = String::new();
    replay
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut summary)
        .unwrap();
    assert!(status.success(), "{summary}");
    let flagged: std::collections::HashSet<String> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["flagged"] == true)
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    for id in ids {
        assert!(flagged.contains(id), "{id} is in the feed but not flagged");
    }
}

/// `/healthz` is 200 while the workers run; `/metrics` counts the run's
/// dead letters by stage and reason; an unknown path is 404; the page and
/// its script are served from the binary.
#[test]
fn healthz_answers_while_the_workers_run() {
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_loopback_port());
    let output = dir.path().join("out.jsonl");
    // Three applications of an unknown sub_grade (the file has no quoted field).
    let text = std::fs::read_to_string(root().join("data/lending_club.csv")).unwrap();
    let column = text
        .lines()
        .next()
        .unwrap()
        .split(',')
        .position(|c| c == "sub_grade")
        .unwrap();
    let input = dir.path().join("in.csv");
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if !(1..=3).contains(&i) {
                return line.to_owned();
            }
            let mut fields: Vec<&str> = line.split(',').collect();
            fields[column] = "Z9";
            fields.join(",")
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let mut replay = Running(
        loanflow_command(&[
            "replay",
            input.to_str().unwrap(),
            "--rate",
            "2000",
            "--http",
            &http,
            "-o",
            output.to_str().unwrap(),
            "-q",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    wait_for("/healthz", 60, || {
        get(&http, "/healthz").filter(|(s, _)| *s == 200)
    });
    let (status, text) = get(&http, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("loanflow_workers_running 1"), "{text}");
    wait_for("the dead letters by stage and reason", 30, || {
        let (_, text) = get(&http, "/metrics")?;
        text.contains(
            "loanflow_dead_letters_total{stage=\"clean\",reason=\"column sub_grade: unknown level …\"} 3",
        )
        .then_some(())
    });
    assert_eq!(get(&http, "/nothing").map(|(s, _)| s), Some(404));
    let (status, page) = get(&http, "/").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("/uPlot.iife.min.js") && !page.contains("https://"));
    assert_eq!(get(&http, "/uPlot.iife.min.js").map(|(s, _)| s), Some(200));
    let status = replay.0.wait().unwrap();
    let mut summary = String::new();
    replay
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut summary)
        .unwrap();
    assert!(status.success(), "{summary}");
    assert!(summary.contains(&format!("http://{http}/")), "{summary}");
}

/// A bad or busy address is one line and a non-zero exit, before any
/// worker starts (no output file).
#[test]
fn a_bad_or_busy_http_address_is_one_line_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    for (addr, says) in [
        ("nowhere", "not an address to listen on"),
        ("127.0.0.1:99999", "not an address to listen on"),
        (busy.as_str(), "cannot listen there"),
    ] {
        let out = loanflow(&["run", "--http", addr, "-o", output.to_str().unwrap(), "-q"]);
        let stderr = common::stderr(&out);
        assert!(!out.status.success(), "{addr}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{addr}: {stderr}");
        assert!(
            stderr.starts_with(&format!("loanflow: error: --http {addr}: {says}")),
            "{addr}: {stderr}"
        );
        assert!(!output.exists() && !dir.path().join("out.jsonl.partial").exists());
    }
    // A replay into a topic runs no pipeline: nothing to serve.
    let out = loanflow(&[
        "replay",
        "data/lending_club.csv",
        "--brokers",
        "127.0.0.1:9",
        "--topic",
        "loans",
        "--http",
        "127.0.0.1:0",
    ]);
    let stderr = common::stderr(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.starts_with("loanflow: error: --http serves a run of the pipeline")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
}

/// A port P with P and P + 1 free on loopback a moment ago, below the
/// ephemeral range (so no port-0 bind of this or another test, nor the
/// launcher's hostfile ports, takes P + 1 meanwhile).
fn free_port_pair() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    (0..1000u64)
        .map(|i| 20_000 + ((seed.wrapping_mul(2_654_435_761) + i * 7_919) % 12_000) as u16)
        .find(|&p| {
            let a = std::net::TcpListener::bind(("127.0.0.1", p));
            let b = std::net::TcpListener::bind(("127.0.0.1", p + 1));
            a.is_ok() && b.is_ok()
        })
        .expect("two free consecutive ports below 32000")
}

/// In a cluster each process serves on ADDR's port + its index: each says
/// so once bound (the launcher passes the line on) and its summary names
/// its own.
#[test]
fn a_cluster_serves_one_port_per_process() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    let port = free_port_pair();
    let http = format!("127.0.0.1:{port}");
    let out = loanflow(&[
        "cluster",
        "--processes",
        "2",
        "--http",
        &http,
        "-o",
        output.to_str().unwrap(),
        "-q",
    ]);
    let stderr = common::stderr(&out);
    assert!(out.status.success(), "{stderr}");
    for i in 0..2 {
        let at = format!("http://127.0.0.1:{}/", port + i);
        assert!(
            stderr.contains(&format!("[p{i}] loanflow: process {i} serves {at}")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains(&format!("served http://127.0.0.1:{}/", port + 1)),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("http          http://{http}/")),
        "{stderr}"
    );
}

/// The value of the sample `name` (with its labels, as exposed) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The sum of the samples whose name and labels start with `prefix`, and
/// how many there are.
fn sum_of(text: &str, prefix: &str) -> (f64, usize) {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| rest.rsplit_once(' ')?.1.parse::<f64>().ok())
        .fold((0.0, 0), |(sum, n), v| (sum + v, n + 1))
}

/// `/metrics` of the process serving on `addr`, if it answers 200.
fn scrape(addr: &str) -> Option<String> {
    get(addr, "/metrics")
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body)
}

/// `args` started with stdout dropped and stderr piped.
fn spawn(args: &[&str]) -> Running {
    Running(
        loanflow_command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Stops `run` with SIGTERM: whether it exited 0, and its stderr.
fn stop(run: &mut Running) -> (bool, String) {
    let kill = Command::new("kill")
        .args(["-TERM", &run.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut stderr = String::new();
    run.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (run.0.wait().unwrap().success(), stderr)
}

/// Waits until `/metrics` on `http` shows all 9857 applications of
/// `data/lending_club.csv` delivered (with exactly once: committed) and
/// their offsets committed; returns that scrape.
fn scrape_when_all_committed(http: &str) -> String {
    wait_for("every application delivered and committed", 120, || {
        let text = scrape(http)?;
        (sample(&text, "loanflow_outputs_total{kind=\"scored\"}") == Some(9857.0)
            && sum_of(&text, "loanflow_committed_offset{topic=\"loans\",") == (9857.0, 4))
            .then_some(text)
    })
}

const COMMITTED: &str = "loanflow_transactions_total{outcome=\"committed\"}";
const ABORTED: &str = "loanflow_transactions_total{outcome=\"aborted\"}";

/// A clean `--exactly-once` run on the patched broker: `/metrics` counts
/// as many committed transactions as the run committed — each writer
/// (incarnation, worker) numbers its transactions 0, 1, … and writes a
/// progress record in each, so its last one tells how many it committed —
/// and shows 0 aborted.
#[test]
fn exactly_once_transactions_are_counted_as_committed() {
    let broker = common::Broker::start();
    ingest(&broker, "loans", "data/lending_club.csv", "4");
    let http = format!("127.0.0.1:{}", free_loopback_port());
    let mut run = spawn(&kafka_run_args(
        &broker,
        &["--exactly-once", "--http", &http],
    ));
    let text = scrape_when_all_committed(&http);
    let committed = sample(&text, COMMITTED).expect("a committed count");
    assert_eq!(sample(&text, ABORTED), Some(0.0), "{text}");

    let progress = broker.read_all("scored.progress");
    let header = |r: &common::Record, key: &str| -> String {
        r.headers
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key} header: {:?}", r.headers))
            .1
            .clone()
    };
    let mut last: std::collections::HashMap<(String, String), u64> = Default::default();
    for r in &progress {
        let writer = (
            header(r, "loanflow.incarnation"),
            header(r, "loanflow.worker"),
        );
        let epoch: u64 = header(r, "loanflow.epoch").parse().unwrap();
        let at = last.entry(writer).or_default();
        *at = (*at).max(epoch + 1);
    }
    assert_eq!(last.len(), 2, "one incarnation, two workers: {last:?}");
    let by_progress: u64 = last.values().sum();
    assert_eq!(committed, by_progress as f64, "{text}");
    eprintln!("{committed} transactions committed, by /metrics and by the progress records");
    assert_eq!(
        progress.len() as u64,
        by_progress,
        "one progress record each"
    );
    // Idle, nothing more is committed.
    let again = scrape(&http).unwrap();
    assert_eq!(sample(&again, COMMITTED), Some(committed));

    let (ok, stderr) = stop(&mut run);
    assert!(ok, "{stderr}");
    let report = verify(&broker, &["--exactly-once"]);
    assert!(report.contains("; 0 aborted records discarded"), "{report}");
}

/// A transaction that fails (the `txn-add-offsets` failpoint, as in
/// tests/outage.rs) restarts the run in process: `/metrics` counts one
/// restart, outage seconds (at least the second it waits before starting
/// again), the aborted transaction, and — counters spanning the restart —
/// every application committed exactly once.
#[cfg(feature = "failpoints")] // arms LOANFLOW_FAILPOINTS (scripts/test builds with it)
#[test]
fn a_restart_is_counted_with_its_outage_and_aborted_transaction() {
    let broker = common::Broker::start();
    ingest(&broker, "loans", "data/lending_club.csv", "4");
    let http = format!("127.0.0.1:{}", free_loopback_port());
    let mut run = Running(
        loanflow_command(&kafka_run_args(
            &broker,
            &["--exactly-once", "--http", &http],
        ))
        .env(
            "LOANFLOW_FAILPOINTS",
            "txn-add-offsets=3*off->1*return->off",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let text = scrape_when_all_committed(&http);
    assert_eq!(
        sample(&text, "loanflow_restarts_total"),
        Some(1.0),
        "{text}"
    );
    let outage = sample(&text, "loanflow_outage_seconds_total").unwrap();
    assert!(outage >= 1.0, "{text}");
    assert!(sample(&text, ABORTED).unwrap() >= 1.0, "{text}");
    assert!(sample(&text, COMMITTED).unwrap() >= 1.0, "{text}");
    eprintln!(
        "restarted once: {outage} s of outage, {:?} committed, {:?} aborted",
        sample(&text, COMMITTED),
        sample(&text, ABORTED)
    );
    let (ok, stderr) = stop(&mut run);
    assert!(ok, "{stderr}");
    let restarts = stderr
        .lines()
        .filter(|l| l.contains("starting again from the last committed transaction"))
        .count();
    assert_eq!(restarts, 1, "{stderr}");
    let report = verify(&broker, &["--exactly-once"]);
    assert!(report.contains("lost:                 0\n"), "{report}");
    assert!(report.contains("duplicated:           0 "), "{report}");
}

/// Seconds since the epoch of an RFC 3339 time.
fn epoch_seconds(rfc3339: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .timestamp() as f64
}

/// The velocity dataflow, paced on two workers: the watermark gauge is the
/// global watermark — within the data's event times, never going back, and
/// at or past the event time of every flagged application the live feed
/// shows written (an application is answered only once the global
/// watermark reached it) —
/// and the lag is the newest event time read minus it: at least 0, and
/// the two add up to no more than the data's newest event time.
#[test]
fn the_watermark_gauges_follow_the_global_watermark_of_a_window_run() {
    let text = std::fs::read_to_string(root().join("data/lending_club.csv")).unwrap();
    let column = text
        .lines()
        .next()
        .unwrap()
        .split(',')
        .position(|c| c == "applied_at")
        .unwrap();
    let times: Vec<f64> = text
        .lines()
        .skip(1)
        .map(|l| epoch_seconds(l.split(',').nth(column).unwrap()))
        .collect();
    let first = times.iter().copied().fold(f64::INFINITY, f64::min);
    let newest = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);

    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    let http = format!("127.0.0.1:{}", free_loopback_port());
    let mut replay = spawn(&[
        "replay",
        "data/lending_club.csv",
        "--dataflow",
        "dataflows/lending_club_velocity.toml",
        "-w",
        "2",
        "--rate",
        "600",
        "--batch",
        "50",
        "--http",
        &http,
        "-o",
        output.to_str().unwrap(),
        "-q",
    ]);
    wait_for("the server", 30, || scrape(&http));
    let mut seen: Vec<(f64, f64)> = Vec::new();
    let mut checked_outputs = 0;
    while replay.0.try_wait().unwrap().is_none() && seen.len() < 40 {
        // The flagged applications the sink wrote (the live feed), then the
        // gauges: each one's event time is at or below the watermark.
        let Some((_, live)) = get(&http, "/api/live") else {
            break;
        };
        let live: serde_json::Value = serde_json::from_str(&live).unwrap();
        let written: Vec<f64> = live["feed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["event_time_ms"].as_i64().unwrap() as f64 / 1e3)
            .collect();
        let Some(text) = scrape(&http) else { break };
        if let (Some(wm), Some(lag)) = (
            sample(&text, "loanflow_watermark_seconds"),
            sample(&text, "loanflow_watermark_lag_seconds"),
        ) {
            assert!(wm >= first && wm <= newest, "watermark {wm}: {text}");
            assert!(lag >= 0.0 && wm + lag <= newest + 1e-3, "lag {lag}: {text}");
            if let Some(&(before, _)) = seen.last() {
                assert!(wm >= before, "the watermark went back: {before} → {wm}");
            }
            for t in &written {
                assert!(*t <= wm + 1e-3, "written at {t}, watermark {wm}");
            }
            checked_outputs = checked_outputs.max(written.len());
            seen.push((wm, lag));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "{} scrapes, {checked_outputs} outputs checked; (watermark, lag): first {:?}, last {:?}",
        seen.len(),
        seen.first(),
        seen.last()
    );
    assert!(
        seen.len() >= 5,
        "too few scrapes with a watermark: {seen:?}"
    );
    assert!(
        checked_outputs > 0,
        "no output checked against the watermark"
    );
    assert!(
        seen.last().unwrap().0 > seen[0].0,
        "the watermark never moved: {seen:?}"
    );
    drop(replay);
}

/// A cluster with `--http 127.0.0.1:0`: each process serves on a port the
/// system gave it and says so; the launcher passes the lines on, and each
/// listed address answers with that process's own counts (which add up to
/// the input) — the port is the real one.
#[test]
fn a_cluster_on_port_0_lists_the_bound_ports() {
    let broker = common::Broker::start();
    ingest(&broker, "loans", "data/lending_club.csv", "4");
    let mut launcher = Running(
        loanflow_command(&[
            "cluster",
            "--processes",
            "2",
            "-w",
            "1",
            "--brokers",
            &broker.address,
            "--input-topic",
            "loans",
            "--output-topic",
            "scored",
            "--partitions",
            "4",
            "--http",
            "127.0.0.1:0",
            "-q",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    // The launcher's lines as they come.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = launcher.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line.clone()).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut addrs: [Option<String>; 2] = [None, None];
    let deadline = Instant::now() + Duration::from_secs(60);
    while addrs.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no address for each process: {lines:#?}"));
        for (i, addr) in addrs.iter_mut().enumerate() {
            let said = format!("[p{i}] loanflow: process {i} serves http://");
            if let Some(rest) = line.strip_prefix(&said) {
                let at = rest.split('/').next().unwrap().to_owned();
                assert!(addr.replace(at).is_none(), "said twice: {lines:#?}");
            }
        }
        lines.push(line);
    }
    let addrs: Vec<String> = addrs.into_iter().map(Option::unwrap).collect();
    for addr in &addrs {
        assert!(
            addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
            "{addrs:?}"
        );
    }
    assert_ne!(addrs[0], addrs[1]);
    // Each serves its own share; together, every application.
    let shares = wait_for("both processes to score their shares", 120, || {
        let shares: Vec<f64> = addrs
            .iter()
            .map(|a| sample(&scrape(a)?, "loanflow_outputs_total{kind=\"scored\"}"))
            .collect::<Option<_>>()?;
        (shares.iter().sum::<f64>() == 9857.0).then_some(shares)
    });
    assert!(shares.iter().all(|s| *s > 0.0), "{shares:?}");

    let (ok, _) = {
        let kill = Command::new("kill")
            .args(["-TERM", &launcher.0.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        (launcher.0.wait().unwrap().success(), ())
    };
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let stderr = lines.join("\n");
    assert!(ok, "{stderr}");
    // The summaries name the same addresses.
    assert!(
        stderr.contains(&format!("http          http://{}/", addrs[0])),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("served http://{}/", addrs[1])),
        "{stderr}"
    );
}
