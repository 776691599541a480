//! The peers of benches/peers/ (Quix Streams and Bytewax running loanflow's
//! pipeline in Python) score the same applications exactly as loanflow does,
//! on a real broker: `benches/peers/compare.sh --check` on 500 generated
//! applications, then the three output topics read back here and compared
//! id by id, bit for bit (as the float32 they are).
//!
//! The peers' venv (`benches/peers/setup.sh`, ~0.5 GB in
//! ~/.cache/loanflow/peers-venv) is installed by this test the first time
//! (about 35 s with a fast link to PyPI), then reused. No skipping: without
//! Python 3.11 or PyPI the test fails and says why.

mod common;

use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::Instant;

use common::{root, Broker};

const ROWS: usize = 500;

fn text(out: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// id → (score as float32, flagged) of every output in `topic`; an id
/// written twice (at least once) must carry the same result.
fn scored(broker: &Broker, topic: &str) -> HashMap<String, (f32, bool)> {
    let mut out = HashMap::new();
    for record in broker.read_all(topic) {
        let v = record.json();
        let id = v["id"].as_str().unwrap_or_else(|| panic!("{topic}: {v}"));
        assert_eq!(record.key.as_deref(), Some(id), "{topic}: keyed by id");
        // loanflow writes the shortest text of the float32, the peers its
        // exact double: both read back as the same float32.
        let score: f32 = v["score"]
            .to_string()
            .parse()
            .unwrap_or_else(|e| panic!("{topic}: score of {id}: {e}"));
        let flagged = v["flagged"].as_bool().unwrap();
        if let Some(first) = out.insert(id.to_owned(), (score, flagged)) {
            assert_eq!(
                (first.0.to_bits(), first.1),
                (score.to_bits(), flagged),
                "{topic}: {id} scored twice, differently"
            );
        }
    }
    out
}

#[test]
fn quix_streams_and_bytewax_score_exactly_like_loanflow() {
    // The venv first, on its own, so that an install failure says so.
    let started = Instant::now();
    let setup = Command::new("bash")
        .arg(root().join("benches/peers/setup.sh"))
        .current_dir(root())
        .output()
        .expect("run bash benches/peers/setup.sh");
    assert!(
        setup.status.success(),
        "the peers' venv (Quix Streams, Bytewax, XGBoost; benches/peers/setup.sh) could not be \
         installed: this test needs Python 3.11 with venv and access to PyPI (~0.5 GB, once)\n{}",
        text(&setup)
    );
    eprintln!(
        "peers venv ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("test{}", std::process::id());
    let started = Instant::now();
    let check = Command::new("bash")
        .arg(root().join("benches/peers/compare.sh"))
        .args(["--check", "--brokers", &broker.address, &ROWS.to_string()])
        .env("LOANFLOW_BIN", env!("CARGO_BIN_EXE_loanflow"))
        .env("LOANFLOW_PEERS_OUT", dir.path())
        .env("LOANFLOW_PEERS_TAG", &tag)
        .env("RUST_LOG", "warn")
        .current_dir(root())
        .output()
        .expect("run bash benches/peers/compare.sh");
    let report = text(&check);
    assert!(
        check.status.success(),
        "compare.sh --check: the peers' outputs differ from loanflow's\n{report}"
    );
    eprintln!(
        "compare.sh --check {ROWS} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Its own verdict: every peer and the batch reference bit-identical.
    for name in [
        format!("out-quix-{tag}"),
        format!("out-bytewax-{tag}"),
        "spec.py + XGBoost batch predict on the CSV".to_owned(),
    ] {
        let line = report
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no verdict for {name}\n{report}"));
        assert!(
            line.contains(&format!("{ROWS} ids"))
                && line.contains(&format!("{ROWS}/{ROWS} bit-identical"))
                && line.ends_with("OK"),
            "{line}"
        );
    }

    // And checked here, from the topics themselves.
    let ids: Vec<String> = std::fs::read_to_string(dir.path().join(format!("stream-{ROWS}.csv")))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), ROWS);
    let ours = scored(&broker, &format!("out-loanflow-{tag}"));
    assert_eq!(ours.len(), ROWS, "loanflow scored every application once");
    for id in &ids {
        assert!(ours.contains_key(id), "loanflow did not score {id}");
    }
    for peer in ["quix", "bytewax"] {
        let theirs = scored(&broker, &format!("out-{peer}-{tag}"));
        assert_eq!(theirs.len(), ROWS, "{peer}: one score per application");
        for (id, (score, flagged)) in &ours {
            let (their_score, their_flag) = theirs
                .get(id)
                .unwrap_or_else(|| panic!("{peer} did not score {id}"));
            assert_eq!(
                their_score.to_bits(),
                score.to_bits(),
                "{peer}: {id} scored {their_score}, loanflow {score}"
            );
            assert_eq!(their_flag, flagged, "{peer}: flagged of {id}");
        }
    }
}
