//! `loanflow bench` as a user runs it: a small stream, two worker counts,
//! one run each. No timing assertions: only that it measures, and says so
//! in a well-formed table and JSON.

mod common;

use common::loanflow;
use serde_json::Value;

fn positive(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x.is_finite() && x > 0.0, "{what} = {x}");
    x
}

#[test]
fn bench_measures_every_configuration_and_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = loanflow(&[
        "bench",
        "--rows",
        "2000",
        "--workers",
        "1,2",
        "--repeat",
        "1",
        "--dir",
        dir.path().to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // A progress line per run on stderr.
    assert!(stderr.contains("file → file, -w 2, run 1/1"), "{stderr}");

    // The table: header, separator, 2 configurations, copy + 2 scorer limits.
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2 + 2 + 3, "{stdout}");
    assert!(
        lines[0].starts_with("| configuration | records/s"),
        "{stdout}"
    );
    let columns = lines[0].matches('|').count();
    assert!(lines[1].starts_with("|---|"), "{stdout}");
    for line in &lines[1..] {
        assert_eq!(line.matches('|').count(), columns, "{line}");
    }
    assert!(lines[2].starts_with("| file → file, -w 1 |"), "{stdout}");
    assert!(lines[3].starts_with("| file → file, -w 2 |"), "{stdout}");
    assert!(lines[4].starts_with("| limit: file copy"), "{stdout}");
    assert!(
        lines[5].starts_with("| limit: scorer alone, 1 thread |"),
        "{stdout}"
    );
    assert!(
        lines[6].starts_with("| limit: scorer alone, 2 threads |"),
        "{stdout}"
    );
    assert!(lines[2].contains("% of file copy"), "{stdout}");

    // The JSON: one object per configuration, with the limits.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["rows"], 2000);
    let configurations = report["configurations"].as_array().unwrap();
    assert_eq!(configurations.len(), 2);
    for (c, workers) in configurations.iter().zip([1, 2]) {
        assert_eq!(c["workers"], workers, "{c}");
        assert_eq!(c["repeats"], 1, "{c}");
        assert!(c["name"].as_str().unwrap().contains("file → file"), "{c}");
        for k in ["median", "min", "max"] {
            positive(&c["records_per_s"][k], k);
        }
        positive(&c["mb_per_s"], "mb_per_s");
        let cpu = c["cpu_us_per_record"].as_f64().expect("cpu_us_per_record");
        assert!(cpu >= 0.0, "{c}");
        let p50 = positive(&c["latency_ms"]["p50"], "p50");
        let p99 = positive(&c["latency_ms"]["p99"], "p99");
        let max = positive(&c["latency_ms"]["max"], "max");
        assert!(p50 <= p99 && p99 <= max, "{c}");
        assert_eq!(c["latency_ms"]["samples"], 2000, "{c}");
        positive(&c["percent_of"]["file copy"], "percent of copy");
    }
    let limits = report["limits"].as_array().unwrap();
    let kinds: Vec<&str> = limits.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["file_copy", "scorer", "scorer"]);
    for l in limits {
        positive(&l["records_per_s"]["median"], "limit records/s");
    }
}

#[test]
fn bench_refuses_a_bad_worker_list_in_one_line() {
    let out = loanflow(&["bench", "--workers", "0,x"]);
    assert!(!out.status.success());
    assert!(matches!(out.status.code(), Some(1 | 2)), "{:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error:") && first.contains("--workers"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bench_help_has_examples() {
    let out = loanflow(&["bench", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("Examples:") && help.contains("loanflow bench --rows"),
        "{help}"
    );
}

#[test]
fn bench_measures_latency_under_each_offered_load() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    // Percentages of the max measured in the same invocation, and an
    // absolute rate (the single `--rate N` of before), in one list.
    let out = loanflow(&[
        "bench",
        "--rows",
        "2000",
        "--workers",
        "1",
        "--repeat",
        "1",
        "--rate",
        "50%,20000",
        "--p99-target-ms",
        "25",
        "--dir",
        dir.path().to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The unpaced run comes first: the percentages are of its records/s.
    let unpaced = stderr.find("file → file, -w 1, run 1/1").expect(&stderr);
    let paced = stderr.find("(50 % of max), run 1/1").expect(&stderr);
    assert!(unpaced < paced, "{stderr}");

    // The first table as without --rate (one configuration, three limits),
    // then a caption, the latency-under-load table and the p99 verdict.
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5 + 1 + 1 + 1 + 4 + 1 + 1, "{stdout}");
    assert_eq!(lines[5], "", "{stdout}");
    assert!(lines[2].starts_with("| file → file, -w 1 |"), "{stdout}");
    assert!(lines[12].is_empty(), "{stdout}");
    assert!(lines[6].starts_with("Latency under load"), "{stdout}");
    let header = lines[8];
    assert!(
        header.starts_with(
            "| configuration | offered | offered records/s | % of max | achieved records/s"
        ),
        "{stdout}"
    );
    assert!(lines[9].starts_with("|---|"), "{stdout}");
    for line in &lines[9..12] {
        assert_eq!(
            line.matches('|').count(),
            header.matches('|').count(),
            "{line}"
        );
    }
    assert!(
        lines[10].starts_with("| file → file, -w 1 | 50% | "),
        "{stdout}"
    );
    assert!(
        lines[11].starts_with("| file → file, -w 1 | 20000 | 20,000 | "),
        "{stdout}"
    );
    assert!(
        lines[13].starts_with("- p99 at 50 % load, -w 1 (")
            && (lines[13].contains(" ≤ 25 ms target")
                || lines[13].ends_with("> 25 ms target: missed")),
        "{stdout}"
    );

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let max = positive(
        &report["configurations"][0]["records_per_s"]["median"],
        "unpaced records/s",
    );
    let load = report["load"].as_array().unwrap();
    assert_eq!(load.len(), 2, "{load:?}");
    let half = &load[0];
    assert_eq!(half["rate"], "50%");
    assert_eq!(half["workers"], 1);
    assert_eq!(half["kind"], "file_paced");
    assert_eq!(half["max_records_per_s"].as_f64(), Some(max));
    let offered = positive(&half["offered_records_per_s"], "offered");
    assert!((offered - max / 2.0).abs() < 1e-6 * max, "{half}");
    assert!((half["offered_percent_of_max"].as_f64().unwrap() - 50.0).abs() < 1e-9);
    let absolute = &load[1];
    assert_eq!(absolute["rate"], "20000");
    assert_eq!(absolute["offered_records_per_s"].as_f64(), Some(20000.0));
    for point in load {
        positive(&point["records_per_s"]["median"], "achieved records/s");
        positive(&point["achieved_percent_of_offered"], "achieved %");
        let p50 = positive(&point["latency_ms"]["p50"], "p50");
        let p99 = positive(&point["latency_ms"]["p99"], "p99");
        assert!(p50 <= p99, "{point}");
        assert_eq!(point["latency_ms"]["samples"], 2000, "{point}");
    }
    let target = &report["p99_target"];
    assert_eq!(target["target_ms"], 25.0);
    assert_eq!(target["load_percent_of_max"], 50.0);
    let results = target["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{target}");
    let p99 = half["latency_ms"]["p99"].as_f64().unwrap();
    assert_eq!(results[0]["p99_ms"].as_f64(), Some(p99));
    assert_eq!(results[0]["met"], p99 <= 25.0);
}

#[test]
fn bench_refuses_a_bad_rate_in_one_line() {
    for rate in ["0", "0%", "50%,x", "-5%", "fast", "inf"] {
        let out = loanflow(&["bench", &format!("--rate={rate}")]);
        assert!(!out.status.success(), "--rate {rate}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error:") && first.contains("--rate"),
            "--rate {rate}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

/// Runs `loanflow bench` with the velocity dataflow `--against` the
/// stateless one, 2,000 rows, 2 repeats, and `extra`; checks that it
/// succeeded and that on `path` at -w 1 the runs came run for run:
/// measured, against, measured, against. Gives the JSON report and stdout.
fn bench_against(extra: &[&str], path: &str) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let mut args = vec![
        "bench",
        "--dataflow",
        "dataflows/lending_club_velocity.toml",
        "--against",
        "dataflows/lending_club.toml",
        "--rows",
        "2000",
        "--repeat",
        "2",
        "--dir",
        dir.path().to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = loanflow(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let runs: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&format!("bench: {path}, -w 1")))
        .collect();
    let order = [
        "run 1/2:",
        "lending_club (--against), run 1/2:",
        "run 2/2:",
        "lending_club (--against), run 2/2:",
    ];
    assert_eq!(runs.len(), order.len(), "{stderr}");
    for (run, tail) in runs.iter().zip(order) {
        let prefix = format!("bench: {path}, -w 1, {tail}");
        assert!(run.starts_with(&prefix), "{prefix}\n{stderr}");
    }
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (report, String::from_utf8(out.stdout).unwrap())
}

/// `--against`: the second dataflow runs right after each run of the
/// measured one, and the share is computed from the medians the report
/// itself shows.
#[test]
fn bench_against_interleaves_the_runs_and_gives_the_share_of_each_worker_count() {
    let (report, stdout) =
        bench_against(&["--share-target", "60", "--workers", "1,2"], "file → file");
    let configurations = report["configurations"].as_array().unwrap();
    let kinds: Vec<(&str, u64)> = configurations
        .iter()
        .map(|c| (c["kind"].as_str().unwrap(), c["workers"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("file", 1),
            ("file_against", 1),
            ("file", 2),
            ("file_against", 2)
        ]
    );
    let share = &report["share_target"];
    assert_eq!(share["against"], "lending_club");
    assert_eq!(share["target_percent"], 60.0);
    let results = share["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{share}");
    for (result, pair) in results.iter().zip(configurations.chunks(2)) {
        let measured = positive(&pair[0]["records_per_s"]["median"], "median");
        let against = positive(&pair[1]["records_per_s"]["median"], "against median");
        assert_eq!(result["records_per_s"].as_f64(), Some(measured));
        assert_eq!(result["against_records_per_s"].as_f64(), Some(against));
        let percent = positive(&result["percent"], "percent");
        assert!(
            (percent - 100.0 * measured / against).abs() < 1e-9,
            "{result}"
        );
        assert_eq!(result["met"], percent >= 60.0, "{result}");
        assert_eq!(
            pair[0]["percent_of"]["lending_club"].as_f64(),
            Some(percent),
            "{}",
            pair[0]
        );
        // The verdict line under the table.
        let line = format!(
            "- file → file, -w {}: {percent:.1} % of lending_club's records/s",
            result["workers"]
        );
        assert!(stdout.contains(&line), "{line}\n{stdout}");
    }
}

/// `--against` on Kafka → Kafka: the second dataflow's Kafka runs come
/// right after the measured one's too, on a real broker, and the Kafka
/// share is computed like the file one.
#[test]
fn bench_against_interleaves_the_kafka_runs_too() {
    let broker = common::Broker::start();
    let (report, stdout) = bench_against(
        &[
            "--workers",
            "1",
            "--brokers",
            &broker.address,
            "--partitions",
            "2",
        ],
        "Kafka → Kafka",
    );
    let configurations = report["configurations"].as_array().unwrap();
    let of_kind = |kind: &str| {
        configurations
            .iter()
            .find(|c| c["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} configuration in {report}"))
    };
    let measured = positive(&of_kind("kafka")["records_per_s"]["median"], "Kafka median");
    let against = positive(
        &of_kind("kafka_against")["records_per_s"]["median"],
        "Kafka --against median",
    );
    // Every run scored the whole stream: each dataflow's outputs of both
    // runs were read back from its own topics (a latency per record).
    for kind in ["kafka", "kafka_against"] {
        let latency = &of_kind(kind)["latency_ms"];
        assert_eq!(latency["samples"], 2 * 2000, "{kind}: {latency}");
    }
    let results = report["share_target"]["results"].as_array().unwrap();
    let kafka = results
        .iter()
        .find(|r| r["path"] == "Kafka → Kafka")
        .unwrap_or_else(|| panic!("no Kafka share in {}", report["share_target"]));
    let percent = positive(&kafka["percent"], "Kafka percent");
    assert!(
        (percent - 100.0 * measured / against).abs() < 1e-9,
        "{kafka}"
    );
    let line = format!("- Kafka → Kafka, -w 1: {percent:.1} % of lending_club's records/s");
    assert!(stdout.contains(&line), "{line}\n{stdout}");
}

#[test]
fn bench_refuses_a_missing_against_dataflow_before_generating_anything() {
    let dir = tempfile::tempdir().unwrap();
    let out = loanflow(&[
        "bench",
        "--against",
        "dataflows/no_such.toml",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--against dataflows/no_such.toml: no such dataflow spec"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing generated"
    );
}
