//! TLS end to end: Tansu's own TLS listener does not accept clients, so a
//! TLS terminator (socat, from Debian's packages) sits in front of the broker
//! and the broker advertises the terminator's port: every connection,
//! metadata included, goes through TLS.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{loanflow, stderr, Broker};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A self-signed certificate for 127.0.0.1: writes `NAME.pem` (certificate)
/// and `NAME-both.pem` (certificate + key).
fn certificate(dir: &Path, name: &str) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    let both = [std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap()].concat();
    std::fs::write(dir.join(format!("{name}-both.pem")), both).unwrap();
}

struct Terminator(Child);

impl Drop for Terminator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn terminator(tls_port: u16, broker: &str, both: &Path) -> Terminator {
    let child = Command::new("socat")
        .arg(format!(
            "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},verify=0",
            both.display()
        ))
        .arg(format!("TCP:{broker}"))
        .stderr(Stdio::null())
        .spawn()
        .expect("socat (Debian package `socat`; .ci/run installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(Instant::now() < deadline, "socat did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Terminator(child)
}

#[test]
fn a_run_over_tls_scores_everything_and_a_wrong_ca_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    certificate(dir.path(), "server");
    certificate(dir.path(), "stranger");
    let tls_port = free_port();
    let mut broker = Broker::start_with(&["--advertise", &format!("127.0.0.1:{tls_port}")]);
    let _tls = terminator(
        tls_port,
        &broker.address,
        &dir.path().join("server-both.pem"),
    );
    let tls_address = format!("127.0.0.1:{tls_port}");
    let ca = format!(
        "ssl.ca.location={}",
        dir.path().join("server.pem").display()
    );
    let secret = "sasl.password=do-not-print-me";

    let out = loanflow(&[
        "ingest",
        "--brokers",
        &tls_address,
        "--topic",
        "loans",
        "--partitions",
        "2",
        "-q",
        "-X",
        "security.protocol=SSL",
        "-X",
        &ca,
    ]);
    assert!(out.status.success(), "ingest over TLS: {}", stderr(&out));
    let out = loanflow(&[
        "run",
        "-w",
        "2",
        "--brokers",
        &tls_address,
        "--input-topic",
        "loans",
        "--output-topic",
        "scored",
        "--partitions",
        "2",
        "--until-caught-up",
        "-X",
        "security.protocol=SSL",
        "-X",
        &ca,
        "-X",
        secret,
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "run over TLS: {err}");
    assert!(err.contains("9857 records"), "{err}");
    assert!(
        !err.contains("do-not-print-me"),
        "a secret reached the logs: {err}"
    );
    // The test reads back through the terminator too: the broker advertises only it.
    broker.address = tls_address.clone();
    broker.client = vec![
        ("security.protocol".into(), "SSL".into()),
        (
            "ssl.ca.location".into(),
            dir.path().join("server.pem").display().to_string(),
        ),
    ];
    assert_eq!(broker.read_all("scored").len(), 9857);

    // A CA that did not sign the server's certificate: one clear line, non-zero exit.
    let wrong_ca = format!(
        "ssl.ca.location={}",
        dir.path().join("stranger.pem").display()
    );
    let started = Instant::now();
    let mut command = common::loanflow_command(&[
        "run",
        "--brokers",
        &tls_address,
        "--input-topic",
        "loans",
        "--output-topic",
        "scored2",
        "--connect-timeout",
        "3",
        "-X",
        "security.protocol=SSL",
        "-X",
        &wrong_ca,
        "-X",
        secret,
    ]);
    command.env("RUST_LOG", "debug");
    let out = command.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("loanflow: error: cannot reach Kafka"),
        "{err}"
    );
    assert!(
        last.to_lowercase().contains("certificate verify failed") || last.contains("SSL"),
        "{last}"
    );
    assert!(
        !err.contains("do-not-print-me"),
        "a secret reached the logs"
    );
}

/// A closed loopback port: librdkafka's connection is refused at once, so
/// loanflow says so at once — one line, no librdkafka log lines, no colour
/// codes (stderr is a pipe here) — instead of waiting out --connect-timeout.
#[test]
fn a_refused_connection_fails_at_once_in_one_plain_line() {
    let port = free_port(); // bound, then released: nothing listens there
    let brokers = format!("127.0.0.1:{port}");
    for args in [
        vec![
            "run",
            "--brokers",
            &brokers,
            "--input-topic",
            "loans",
            "--output-topic",
            "scored",
        ],
        vec!["ingest", "--brokers", &brokers, "--topic", "loans"],
    ] {
        let mut command = common::loanflow_command(&args);
        command.env_remove("RUST_LOG"); // as a user runs it
        let started = Instant::now();
        let out = command.output().unwrap();
        let took = started.elapsed();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        // The default --connect-timeout is 10 s: this is not a wait that
        // timed out (the bound: under a second; measured ~0.11 s).
        assert!(
            took < Duration::from_secs(1),
            "{args:?} took {took:?}: {err}"
        );
        eprintln!("{args:?}: failed after {took:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: exactly one line: {err}");
        assert!(
            !err.contains('\u{1b}'),
            "{args:?}: no ANSI escapes: {err:?}"
        );
        assert!(
            err.starts_with(&format!(
                "loanflow: error: cannot reach Kafka at {brokers}: connection to {brokers} refused"
            )),
            "{err}"
        );
    }
}

/// A host that does not resolve is as definitive as a refused connection.
#[test]
fn an_unknown_host_fails_at_once() {
    let mut command = common::loanflow_command(&[
        "ingest",
        "--brokers",
        "no-such-host.invalid:9092",
        "--topic",
        "loans",
    ]);
    command.env_remove("RUST_LOG");
    let started = Instant::now();
    let out = command.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot resolve the host of no-such-host.invalid:9092"),
        "{err}"
    );
}

/// A CA (or key, or certificate) file that does not exist is named, with
/// "not found", before anything connects — not librdkafka's `BIO lib`.
#[test]
fn a_missing_ca_or_key_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for property in [
        "ssl.ca.location",
        "ssl.key.location",
        "ssl.certificate.location",
    ] {
        let missing = dir.path().join(format!("{property}.pem"));
        let setting = format!("{property}={}", missing.display());
        let out = loanflow(&[
            "run",
            "--brokers",
            "127.0.0.1:9093",
            "--input-topic",
            "loans",
            "--output-topic",
            "scored",
            "-X",
            "security.protocol=SSL",
            "-X",
            &setting,
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!(
                "-X {property}: file {} not found",
                missing.display()
            )),
            "{err}"
        );
        assert!(!err.contains("BIO"), "{err}");
    }
}
