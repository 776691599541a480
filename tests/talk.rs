//! The command line as a person meets it: set-up errors that say their
//! cause once and what to do, signals that stop a job with a summary and
//! the conventional exit status (never a finished-looking file), and help
//! examples that paste as they are.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{loanflow, loanflow_command, root, stderr};

/// Sends `signal` (`-INT`, `-TERM`) to `child`.
fn signal(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits up to 60 s until `path` exists with some bytes in it.
fn wait_for_bytes(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited before writing {}",
            path.display()
        );
        assert!(Instant::now() < deadline, "{} never grew", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn partial(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

/// A file run stopped by SIGINT delivers what it read, prints its summary,
/// exits 130 and leaves its output as `.partial`: the final name never
/// appears for a run that did not read its input to the end.
#[test]
fn sigint_on_a_file_run_exits_130_and_leaves_only_a_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let stream = common::generate(1_000_000, 11, dir.path());
    let output = dir.path().join("scored.jsonl");
    let mut child = loanflow_command(&[
        "run",
        "--input",
        stream.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--batch",
        "512",
    ])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for_bytes(&partial(&output), &mut child);
    signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(!output.exists(), "no file under the final name: {err}");
    let written = common::lines(&partial(&output)).count();
    assert!(written > 0 && written < 1_000_000, "{written} lines");
    assert!(
        err.contains("(stopped by SIGINT before the end of the input"),
        "{err}"
    );
    // The summary counts what the .partial file holds: everything read was delivered.
    assert!(
        err.contains(&format!(
            "scored        {written:>10}  → {}",
            partial(&output).display()
        )),
        "{written} lines written: {err}"
    );
}

/// `generate` stopped by SIGTERM: 143, what it wrote stays `.partial`, and
/// it says how much of the asked-for stream that is.
#[test]
fn sigterm_on_generate_exits_143_and_leaves_a_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("big.csv");
    let mut child = loanflow_command(&[
        "generate",
        "--rows",
        "100000000",
        // packed close enough to stay before 2262, which generate checks
        "--gap-scale",
        "0.01",
        "--output",
        output.to_str().unwrap(),
    ])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for_bytes(&partial(&output), &mut child);
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(!output.exists(), "{err}");
    assert!(partial(&output).exists(), "{err}");
    assert!(err.contains("of 100000000 resampled applications"), "{err}");
    assert!(err.contains("stopped by SIGTERM"), "{err}");
}

/// Each set-up error says its cause once, and names what the command takes.
#[test]
fn set_up_errors_say_their_cause_once() {
    let out = loanflow(&["run", "--input", "no/such.csv"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the OS's reason once: {err}"
    );

    // replay takes its history as FILE, not --input.
    let out = loanflow(&["replay", "no/such.csv"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no/such.csv: not found"), "{err}");
    assert!(err.contains("loanflow replay FILE"), "{err}");
    assert!(!err.contains("--input"), "replay takes no --input: {err}");
}

/// Run from another folder, the default paths (relative to the repository
/// root) are not there: the one line says so, and how to fix it.
#[test]
fn default_paths_missing_elsewhere_say_to_run_from_the_repository_root() {
    let elsewhere = tempfile::tempdir().unwrap();
    let spec = root().join("dataflows/lending_club.toml");
    for (args, path, flag) in [
        (vec!["run"], "dataflows/lending_club.toml", "--dataflow"),
        (
            vec!["generate", "--rows", "5"],
            "dataflows/lending_club.toml",
            "--dataflow",
        ),
        (
            vec!["run", "--dataflow", spec.to_str().unwrap()],
            "data/lending_club.csv",
            "--input",
        ),
    ] {
        let out = loanflow_command(&args)
            .current_dir(elsewhere.path())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with(&format!("loanflow: error: {path} not found in ")),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("relative to the repository root, so run it from there")
                && err.contains(&format!("pass {flag} PATH")),
            "{args:?}: {err}"
        );
    }
}

/// Help examples paste as they are: every line of an `Examples:` block is a
/// comment (`  # …`), the start of a command (`  loanflow …`, `  RUST_LOG=…
/// loanflow …`) or the continuation of one (the line before ends in ` \`),
/// and none is wider than a terminal's 80 columns, so no terminal wraps a
/// command in the middle.
#[test]
fn help_examples_are_whole_commands_that_fit_a_terminal() {
    let commands = [
        "run",
        "cluster",
        "ingest",
        "tail",
        "replay",
        "passthrough",
        "generate",
        "bench",
        "verify",
    ];
    let mut blocks = 0;
    for command in [None].into_iter().chain(commands.map(Some)) {
        let args: Vec<&str> = command.into_iter().chain(["--help"]).collect();
        let out = loanflow(&args);
        assert!(out.status.success(), "{args:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        let block = help
            .split("Examples:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{args:?} has no examples"));
        blocks += 1;
        let mut continued = false;
        let mut examples = 0;
        for line in block.lines().take_while(|l| !l.is_empty()) {
            assert!(line.len() <= 80, "{args:?}: wider than 80 columns: {line}");
            let text = line.trim_start();
            if continued {
                assert!(line.starts_with("      "), "{args:?}: {line}");
            } else if !text.starts_with('#') {
                assert!(
                    line.starts_with("  loanflow ")
                        || (line.starts_with("  RUST_LOG=") && line.contains(" loanflow ")),
                    "{args:?}: not a comment, command or continuation: {line}"
                );
                examples += 1;
            }
            continued = line.ends_with(" \\");
        }
        assert!(
            !continued,
            "{args:?}: the last example ends in a continuation"
        );
        assert!(examples > 0, "{args:?}: no example commands");
    }
    assert_eq!(blocks, commands.len() + 1);
}

/// `run --help` says it scores a file or a topic; each command lists only
/// the flags it uses.
#[test]
fn each_command_lists_only_the_flags_it_uses() {
    let help = |command: &str| {
        let out = loanflow(&[command, "--help"]);
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let run = help("run");
    assert!(
        run.starts_with("Score applications from a file or a topic"),
        "{run}"
    );
    for (command, absent) in [
        (
            "tail",
            &["--partitions", "--max-outage", "--no-create-topics"][..],
        ),
        ("verify", &["--partitions", "--max-outage"][..]),
        (
            "replay",
            &[
                "--processes",
                "--process ",
                "--hostfile",
                "--cluster-timeout",
                "--input ",
                "--input-topic",
                "--until-caught-up",
            ][..],
        ),
        ("ingest", &["--model"][..]),
        ("generate", &["--model"][..]),
    ] {
        let text = help(command);
        for flag in absent {
            assert!(
                !text.contains(flag),
                "`{command} --help` lists {flag}:\n{text}"
            );
        }
    }
    for flag in [
        "--processes",
        "--hostfile",
        "--input-topic",
        "--until-caught-up",
        "--model",
    ] {
        assert!(run.contains(flag), "run lists {flag}");
    }
    let passthrough = help("passthrough");
    for flag in ["--input-topic <TOPIC>  ", "--output-topic <TOPIC>  "] {
        let described = passthrough
            .lines()
            .find(|l| l.contains(flag))
            .is_some_and(|l| l.split(flag).nth(1).is_some_and(|d| !d.trim().is_empty()));
        assert!(
            described,
            "passthrough's {flag} has a description:\n{passthrough}"
        );
    }
}
