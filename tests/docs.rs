//! Every command the README and the `--help` texts show, run as written
//! against a fresh broker, on both broker builds `scripts/broker` offers:
//! the documentation cannot drift from the product.
//!
//! **What is extracted** (new examples are picked up without touching this
//! file):
//! - README.md: every line of a ```` ```sh ```` (bash, shell, console) block
//!   — `#` lines are comments, a line ending in `\` continues on the next;
//!   in a block with prompts (`$ `, `host-a$ `) only prompt lines are
//!   commands and the lines after one are its output (a `$ cat FILE` with
//!   output is the file's content: the test writes the file). Consecutive
//!   `host-X$ ` commands are processes of one cluster and run together.
//!   Inline code that is a whole command (`RUST_LOG=info loanflow run`),
//!   and lines indented 4 or more starting with `loanflow `. Inline
//!   `loanflow SUB` alone is a command's name, and inline code with a
//!   placeholder (`T`, `N`, `FILE`, `…`) a synopsis: neither is run. An
//!   untagged block may list the subcommands (`loanflow SUB   what it
//!   does`): that list must be exactly `loanflow help`'s; any other command
//!   in an untagged block is an error (tag it `sh`).
//! - `loanflow help` and `loanflow SUB --help` for every subcommand, as an
//!   80-column terminal shows them: in the
//!   `Examples:` block, `  loanflow …` (or `  VAR=value loanflow …`) lines
//!   are commands, continued by lines after a ` \` ending; `  #` lines are
//!   comments. Any other line — a description after a command, a command
//!   wrapped without ` \` — fails the test.
//!
//! **How it runs**: each README code block (and inline command) is a
//! session run in document order, in a private copy of the repository's
//! data, specs, models and scripts (outputs like `out/…` land there) with
//! `loanflow` on `PATH` and its own `TMPDIR` (so `scripts/broker`'s default
//! directory is private too), through `bash -c`. A block that uses a broker
//! it does not start (`$addr`, a placeholder address) continues the Kafka
//! walkthrough: it gets a fresh broker with the walkthrough's `loanflow
//! ingest` done and `addr` set. The `--help` examples run in one session
//! (files one makes are read by the next), grouped by subcommand in the
//! order [`HELP_ORDER`], each group in the order shown, on a fresh broker
//! holding what its examples assume ([`HELP_SETUP`]: the walkthrough's
//! commands up to them; a `--help` shows examples, not a sequence, so the
//! topics one group writes would otherwise confuse the next — `verify
//! --exactly-once` rightly fails on an output topic two runs wrote).
//! Every command must exit 0. A command that runs until stopped (a Kafka
//! `run`/`cluster` without `--until…`, a `tail` without `-n`) runs in its own
//! process group in the background until it has settled — a run says it has
//! caught up, a tail's output stops growing — then gets SIGINT (a terminal's
//! Ctrl-C) and must exit 0. A README `tail --from-beginning` must print
//! every one of the 9,857 applications once, with XGBoost's score.
//!
//! **Substitutions** (the only ones; each printed with the command it
//! changed): [`DOC_BROKERS`] → the fresh broker; `scripts/broker start` →
//! `start --prebuilt` / `start --patched` (the build under test); the
//! hostfile's hosts → free loopback ports; [`DOC_HTTP`] → a free loopback
//! port; [`SCALE_DOWN`]. An example of
//! one cluster process (`--processes N --process I`) whose peers are on
//! "other machines" runs with them: the same command with `--process J`.
//!
//! **Not run**: [`NOT_RUN`], each with why (asserted to match a shown
//! command, so the list cannot go stale).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    expected_scores, free_loopback_port, in_ci, patched_broker_built, root, Broker, BrokerBuild,
};

/// Addresses the documentation uses for "your broker": replaced by the
/// fresh broker's address.
const DOC_BROKERS: &[&str] = &["127.0.0.1:9092", "kafka:9092"];

/// The address the documentation serves `--http` on: replaced by a free
/// loopback port per command.
const DOC_HTTP: &str = "--http 127.0.0.1:9100";

/// The scale-downs for 2 CI cores, applied wherever they match.
const SCALE_DOWN: &[(&str, &str)] = &[
    // 1,000,000 (or 200,000) generated rows take minutes per bench run.
    ("--rows 1000000", "--rows 20000"),
    ("--rows 200000", "--rows 20000"),
    // A day (a week) of event time per second replays the 90 days of
    // data/lending_club.csv in 90 s (13 s); a month per second in 3 s.
    ("--speed 86400", "--speed 2592000"),
    ("--speed 604800", "--speed 2592000"),
];

/// `loanflow bench` generates 1,000,000 rows by default: a bench example
/// without `--rows`/`--input` gets this many.
const BENCH_ROWS: &str = "--rows 20000";

/// Shown commands that are not run, each with why: a command (its trailing
/// comment and extra spaces aside) that is exactly one of these.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "cargo run --release -- run",
        "set-up: builds the binary under test; its job (`loanflow run`) is run from the --help examples",
    ),
    (
        "scripts/test",
        "set-up: the test command, which runs this test",
    ),
];

/// The order of the --help examples by subcommand: `generate` first (the
/// others read the files it makes); a subcommand not listed runs last.
const HELP_ORDER: &[&str] = &[
    "generate",
    "ingest",
    "run",
    "monitor",
    "cluster",
    "passthrough",
    "tail",
    "verify",
    "replay",
    "bench",
];

/// The walkthrough's ingest: the 9,857 applications into `loans`.
const INGEST: &str = "loanflow ingest --brokers $addr --topic loans --partitions 4 -q";
/// The walkthrough's run, ending once caught up.
const RUN: &str = "loanflow run --brokers $addr --input-topic loans --output-topic loans.scored \
                   --until-caught-up -q";
/// The walkthrough's run with the monitor's topic (`monitor --help`).
const RUN_MONITOR: &str =
    "loanflow run --brokers $addr --input-topic loans --output-topic loans.scored \
                           --monitor-topic loans.monitor --until-caught-up -q";
/// The exactly-once section's run, ending once caught up.
const RUN_EXACTLY_ONCE: &str = "loanflow run --brokers $addr --input-topic loans \
                                --output-topic loans.scored --exactly-once --until-caught-up -q";

/// What each subcommand's --help examples assume on "your broker" (the
/// walkthrough up to them), made on a fresh broker before them; a
/// subcommand not listed gets [`INGEST`]. A README block that uses a broker
/// it does not start gets [`INGEST`] too.
const HELP_SETUP: &[(&str, &[&str])] = &[
    ("generate", &[]),
    ("ingest", &[]),
    ("bench", &[]),
    ("run", &[INGEST]),
    ("cluster", &[INGEST]),
    ("passthrough", &[INGEST]),
    ("replay", &[INGEST]),
    ("tail", &[INGEST, RUN]),
    ("monitor", &[INGEST, RUN_MONITOR]),
    ("verify", &[INGEST, RUN_EXACTLY_ONCE]),
];

/// What the repository copy of a session holds (what the examples read).
const REPO_PARTS: &[&str] = &["data", "dataflows", "models", "scripts", "tests/fixtures"];

/// The applications in data/lending_club.csv.
const APPLICATIONS: usize = 9857;

/// A bounded command that takes longer than this has hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(240);
/// A command that runs until stopped must settle within this.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A stopped command must exit within this.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- extraction

/// One command as the documentation shows it.
#[derive(Debug, Clone)]
struct Shown {
    /// Where: `README.md:97`, `loanflow run --help`.
    origin: String,
    /// Exactly as shown (continuation lines joined by `\` and a newline).
    text: String,
    /// The prompt's host (`host-a$ `): consecutive ones run together.
    host: Option<String>,
    /// Lines shown after a `$ ` command: its output.
    output: Vec<String>,
}

impl Shown {
    fn new(origin: String, text: String) -> Shown {
        Shown {
            origin,
            text,
            host: None,
            output: Vec::new(),
        }
    }

    /// On one line, without the trailing comment.
    fn one_line(&self) -> String {
        one_line(&self.text)
    }
}

/// `text` on one line: continuations joined, a trailing `# comment` and
/// extra spaces removed.
fn one_line(text: &str) -> String {
    let joined = text.replace("\\\n", " ");
    let without_comment = match joined.find(" #") {
        Some(i) => &joined[..i],
        None => &joined,
    };
    without_comment
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Commands run in order in one session: a README code block, an inline
/// README command, or all the --help examples.
#[derive(Debug)]
struct Unit {
    origin: String,
    commands: Vec<Shown>,
}

/// What README.md shows.
#[derive(Debug, Default)]
struct Readme {
    units: Vec<Unit>,
    /// Subcommands of an untagged `loanflow SUB   what it does` list.
    listed: Vec<String>,
    /// Inline code not run: (origin, code, why).
    not_commands: Vec<(String, String, &'static str)>,
    errors: Vec<String>,
}

const SHELL_LANGS: &[&str] = &["sh", "bash", "shell", "console"];

fn is_env_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && name.starts_with(|c: char| c.is_ascii_uppercase())
        }
        None => false,
    }
}

/// Whether `text` (trimmed) starts a loanflow command: `loanflow …` or
/// `VAR=value … loanflow …`.
fn starts_loanflow(text: &str) -> bool {
    let mut words = text.split_whitespace();
    for word in words.by_ref() {
        if !is_env_assignment(word) {
            return word == "loanflow";
        }
    }
    false
}

/// A placeholder a reader fills in: `N`, `FILE`, `…`, `[SECONDS]`, `<X>`.
fn is_placeholder(word: &str) -> bool {
    word.contains('…')
        || word.starts_with('[')
        || word.starts_with('<')
        || (word.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            && word.starts_with(|c: char| c.is_ascii_uppercase()))
}

/// A prompt line: `$ cmd` or `host-a$ cmd` → (host, cmd).
fn prompt(line: &str) -> Option<(Option<String>, String)> {
    let t = line.trim_start();
    let at = t.find("$ ")?;
    let host = &t[..at];
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return None;
    }
    let host = (!host.is_empty()).then(|| host.to_owned());
    Some((host, t[at + 2..].to_owned()))
}

/// The subcommand of a loanflow command line (`loanflow -q run …` → run).
fn subcommand(text: &str) -> Option<String> {
    let mut words = text.split_whitespace().skip_while(|w| *w != "loanflow");
    words.next()?;
    words.find(|w| !w.starts_with('-')).map(str::to_owned)
}

fn parse_readme(text: &str) -> Readme {
    let mut readme = Readme::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            let lang = lang.trim();
            let mut end = i + 1;
            while end < lines.len() && !lines[end].trim_start().starts_with("```") {
                end += 1;
            }
            let body = &lines[i + 1..end];
            if SHELL_LANGS.contains(&lang) {
                shell_block(&mut readme, body, i + 2);
            } else if lang.is_empty() || lang == "text" {
                plain_block(&mut readme, body, i + 2);
            }
            i = end + 1;
            continue;
        }
        let origin = format!("README.md:{}", i + 1);
        let indent = line.len() - line.trim_start().len();
        if indent >= 4 && line.trim_start().starts_with("loanflow ") {
            readme.units.push(Unit {
                origin: origin.clone(),
                commands: vec![Shown::new(origin, line.trim().to_owned())],
            });
        } else {
            inline_commands(&mut readme, line, &origin);
        }
        i += 1;
    }
    readme
}

/// A ```sh block: its commands, one unit.
fn shell_block(readme: &mut Readme, body: &[&str], first: usize) {
    let prompted = body.iter().any(|l| prompt(l).is_some());
    let mut commands: Vec<Shown> = Vec::new();
    let mut k = 0;
    while k < body.len() {
        let origin = format!("README.md:{}", first + k);
        let line = body[k];
        let start = if prompted {
            prompt(line)
        } else if line.trim().is_empty() || line.trim_start().starts_with('#') {
            k += 1;
            continue;
        } else {
            Some((None, line.trim().to_owned()))
        };
        match start {
            Some((host, mut text)) => {
                while text.trim_end().ends_with('\\') && k + 1 < body.len() {
                    k += 1;
                    text.push('\n');
                    text.push_str(body[k]);
                }
                let mut shown = Shown::new(origin, text);
                shown.host = host;
                commands.push(shown);
            }
            None if line.trim().is_empty() => {}
            None => match commands.last_mut() {
                Some(c) => c.output.push(line.to_owned()),
                None => readme.errors.push(format!(
                    "{origin}: a line before the block's first `$ ` prompt: {line:?}"
                )),
            },
        }
        k += 1;
    }
    if !commands.is_empty() {
        readme.units.push(Unit {
            origin: format!("README.md:{}", first - 1),
            commands,
        });
    }
}

/// An untagged block: a subcommand list is checked, a command is an error.
fn plain_block(readme: &mut Readme, body: &[&str], first: usize) {
    for (k, line) in body.iter().enumerate() {
        let t = line.trim_start();
        let origin = format!("README.md:{}", first + k);
        if let Some(rest) = t.strip_prefix("loanflow ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            let after = &rest[name.len()..];
            if after.starts_with("  ") && !after.trim().is_empty() && !name.starts_with('-') {
                readme.listed.push(name.to_owned());
                continue;
            }
        }
        if starts_loanflow(t) || prompt(line).is_some() {
            readme.errors.push(format!(
                "{origin}: a command in an untagged code block (tag it ```sh so it is tested): {t:?}"
            ));
        }
    }
}

/// Inline code on one line that is a whole command.
fn inline_commands(readme: &mut Readme, line: &str, origin: &str) {
    let spans: Vec<&str> = line.split('`').collect();
    // Odd segments are code; an unclosed last one continues on the next line.
    let closed = if spans.len() % 2 == 0 {
        spans.len() - 1
    } else {
        spans.len()
    };
    for span in spans[..closed].iter().skip(1).step_by(2) {
        let code = span.trim();
        let words: Vec<&str> = code.split_whitespace().collect();
        let env = words.iter().take_while(|w| is_env_assignment(w)).count();
        let broker_script =
            code.starts_with("addr=$(scripts/broker start") || code == "scripts/broker stop";
        if words.get(env) != Some(&"loanflow") && !broker_script {
            continue;
        }
        let args = &words[(env + 1).min(words.len())..];
        if !broker_script && env == 0 && args.len() <= 1 {
            readme
                .not_commands
                .push((origin.to_owned(), code.to_owned(), "a command's name"));
        } else if args.iter().any(|w| is_placeholder(w)) {
            readme.not_commands.push((
                origin.to_owned(),
                code.to_owned(),
                "a synopsis (placeholders)",
            ));
        } else {
            readme.units.push(Unit {
                origin: origin.to_owned(),
                commands: vec![Shown::new(origin.to_owned(), code.to_owned())],
            });
        }
    }
}

/// The examples of one help text: (commands, errors).
fn help_examples(help: &str, origin: &str) -> (Vec<Shown>, Vec<String>) {
    let mut commands = Vec::new();
    let mut errors = Vec::new();
    let lines: Vec<&str> = help.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim() == "Examples:") else {
        return (commands, vec![format!("{origin}: no `Examples:` block")]);
    };
    let description = |line: &str| -> Option<String> {
        let t = line.trim();
        let t = t.strip_suffix(" \\").unwrap_or(t);
        t.contains("  ").then(|| {
            format!(
                "{origin}: a description after an example command (put it on a `  # …` line above): {:?}",
                line.trim()
            )
        })
    };
    // The last line of the last command.
    let mut last_end: Option<usize> = None;
    let mut k = start + 1;
    while k < lines.len() {
        let line = lines[k];
        if line.trim().is_empty() {
            // After a blank line, an unindented one is the prose after the block.
            match lines[k + 1..].iter().find(|l| !l.trim().is_empty()) {
                Some(next) if next.starts_with(' ') => {}
                _ => break,
            }
            k += 1;
            continue;
        }
        let t = line.trim_start();
        if t.starts_with('#') {
            k += 1;
            continue;
        }
        if !starts_loanflow(t) && last_end == Some(k - 1) {
            let wrapped = commands.pop().map(|c: Shown| c.text).unwrap_or_default();
            errors.push(format!(
                "{origin}: an example wrapped in the middle of a command (pasting it breaks; \
                 continue it after ` \\` instead): {wrapped:?} then {line:?}"
            ));
            k += 1;
            continue;
        }
        if !starts_loanflow(t) {
            errors.push(format!(
                "{origin}: cannot classify example line {line:?} (a command starts with `loanflow ` \
                 and continues after ` \\`, a comment starts with `#`)"
            ));
            k += 1;
            continue;
        }
        errors.extend(description(line));
        let mut text = t.to_owned();
        let indent = line.len() - t.len();
        while text.ends_with(" \\") {
            let Some(next) = lines.get(k + 1) else {
                errors.push(format!(
                    "{origin}: {t:?} continues after the end of the help"
                ));
                break;
            };
            let next_indent = next.len() - next.trim_start().len();
            if next.trim().is_empty() || next_indent <= indent {
                errors.push(format!(
                    "{origin}: {t:?} ends in ` \\` but the next line is not an indented continuation: {next:?}"
                ));
                break;
            }
            errors.extend(description(next));
            k += 1;
            text.push('\n');
            text.push_str(next);
        }
        if text.ends_with('\\') && !text.ends_with(" \\") {
            errors.push(format!(
                "{origin}: {t:?}: a continuation needs a space before `\\`"
            ));
        }
        commands.push(Shown::new(origin.to_owned(), text));
        last_end = Some(k);
        k += 1;
    }
    if commands.is_empty() {
        errors.push(format!("{origin}: the `Examples:` block shows no command"));
    }
    (commands, errors)
}

/// Runs the built binary's help, `loanflow ARGS`, as an 80-column terminal
/// shows it (clap wraps to the width): an example wider than that wraps
/// mid-command there, and fails the test here.
fn help_text(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_loanflow"))
        .args(args)
        .current_dir(root())
        .env("COLUMNS", "80")
        .output()
        .expect("run loanflow");
    assert!(
        out.status.success(),
        "loanflow {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands `loanflow help` lists (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A wrapped description is indented further than the names.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every --help example, deduplicated, in [`HELP_ORDER`]: (commands, errors).
fn all_help_examples() -> (Vec<Shown>, Vec<String>) {
    let top = help_text(&["help"]);
    let (mut shown, mut errors) = help_examples(&top, "loanflow help");
    for sub in subcommands(&top) {
        let (commands, errs) = help_examples(
            &help_text(&[&sub, "--help"]),
            &format!("loanflow {sub} --help"),
        );
        shown.extend(commands);
        errors.extend(errs);
    }
    let mut unique: Vec<Shown> = Vec::new();
    for s in shown {
        match unique.iter_mut().find(|u| u.one_line() == s.one_line()) {
            Some(u) => u.origin = format!("{}, {}", u.origin, s.origin),
            None => unique.push(s),
        }
    }
    let rank = |s: &Shown| {
        let sub = subcommand(&s.text).unwrap_or_default();
        HELP_ORDER
            .iter()
            .position(|o| *o == sub)
            .unwrap_or(HELP_ORDER.len())
    };
    unique.sort_by_key(rank); // stable: the order shown within a subcommand
    (unique, errors)
}

/// Which [`NOT_RUN`] entry `shown` matches, if any.
fn not_run(shown: &Shown) -> Option<usize> {
    let line = shown.one_line();
    NOT_RUN.iter().position(|(c, _)| line == *c)
}

// ------------------------------------------------------------------- running

/// How a command ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Live {
    /// By itself.
    Bounded,
    /// A Kafka run until stopped: settled once it says it has caught up.
    Run,
    /// A tail until stopped: settled once its output stops growing.
    Tail,
}

fn live(text: &str) -> Live {
    let line = one_line(text);
    let words: Vec<&str> = line.split_whitespace().collect();
    let has = |flag: &str| {
        words
            .iter()
            .any(|w| *w == flag || w.starts_with(&format!("{flag}=")))
    };
    match subcommand(&line).as_deref() {
        Some("run") | Some("cluster")
            if has("--input-topic") && !has("--until-caught-up") && !has("--until") =>
        {
            Live::Run
        }
        Some("tail") if !has("-n") && !has("--count") => Live::Tail,
        _ => Live::Bounded,
    }
}

/// A shell variable a command assigns (`addr=$(scripts/broker start)`).
fn assignment(text: &str) -> Option<String> {
    let line = one_line(text);
    let (name, value) = line.split_once('=')?;
    let simple = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.is_empty();
    let whole = (value.starts_with("$(") && value.ends_with(')')) || !value.contains(' ');
    (simple && whole).then(|| name.to_owned())
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Output of a child, read as it comes.
type Sink = Arc<Mutex<Vec<u8>>>;

fn drain(mut from: impl Read + Send + 'static) -> (Sink, JoinHandle<()>) {
    let sink: Sink = Arc::default();
    let to = Arc::clone(&sink);
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            to.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (sink, handle)
}

fn text_of(sink: &Sink) -> String {
    String::from_utf8_lossy(&sink.lock().unwrap()).into_owned()
}

/// One command running.
struct Running {
    shown: Shown,
    ran: String,
    live: Live,
    child: Child,
    stdout: Sink,
    stderr: Sink,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    /// The variable it assigns and the file its value is written to.
    assigns: Option<(String, PathBuf)>,
    /// Lines a tail must print before it has settled (unless silent long).
    expect_lines: Option<usize>,
}

impl Running {
    fn signal(&self, signal: &str) {
        // Its own process group, as a terminal's foreground job: the signal
        // reaches bash and loanflow alike.
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    /// Waits for the exit; SIGKILL after `limit`. `None`: killed.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return Some(status.code().or(status.signal().map(|s| 128 + s)).unwrap());
            }
            if Instant::now() > deadline {
                self.signal("-KILL");
                let _ = self.child.wait();
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a command that runs until stopped has settled.
    fn settle(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut last = (0, 0);
        let mut quiet_since = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!(
                    "exited ({status}) although it should run until stopped"
                ));
            }
            let (out, err) = (
                self.stdout.lock().unwrap().len(),
                self.stderr.lock().unwrap().len(),
            );
            if (out, err) != last {
                last = (out, err);
                quiet_since = Instant::now();
            }
            let quiet = quiet_since.elapsed();
            let settled = match self.live {
                Live::Run => {
                    text_of(&self.stderr).to_lowercase().contains("caught up")
                        && quiet >= Duration::from_secs(1)
                }
                Live::Tail => {
                    let enough = match self.expect_lines {
                        Some(n) => text_of(&self.stdout).lines().count() >= n,
                        None => out > 0,
                    };
                    (enough && quiet >= Duration::from_secs(3))
                        || (out > 0 && quiet >= Duration::from_secs(15))
                }
                Live::Bounded => true,
            };
            if settled {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(match self.live {
                    Live::Run => format!(
                        "never said it had caught up within {} s",
                        SETTLE_TIMEOUT.as_secs()
                    ),
                    _ => format!("printed nothing within {} s", SETTLE_TIMEOUT.as_secs()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The outcome of one command.
struct Ran {
    shown: Shown,
    ran: String,
    code: Option<i32>,
    seconds: f64,
    stdout: String,
    stderr: String,
    /// Why it failed although it exited as expected (settling, output).
    problem: Option<String>,
}

/// One session: a private copy of the repository, its own TMPDIR, its
/// shell variables, and (if it uses one it does not start) a broker.
struct Session {
    label: String,
    build: BrokerBuild,
    /// The loanflow binary under test.
    bin: PathBuf,
    _work: tempfile::TempDir,
    repo: PathBuf,
    tmp: PathBuf,
    state: PathBuf,
    vars: BTreeMap<String, String>,
    broker: Option<Broker>,
    /// Commands that failed: a line each.
    failures: Vec<String>,
    /// Whether this session's `tail --from-beginning` must print every application.
    check_tails: bool,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

impl Session {
    fn new(label: String, build: BrokerBuild, bin: &Path) -> Session {
        let work = tempfile::tempdir().unwrap();
        let repo = work.path().join("repo");
        for part in REPO_PARTS {
            copy_dir(&root().join(part), &repo.join(part));
        }
        // dataflows/quix_fraud.toml's model is beside the repository.
        if let Some(shared) = root().parent().map(|p| p.join("shared")) {
            if shared.is_dir() {
                std::os::unix::fs::symlink(&shared, work.path().join("shared")).unwrap();
            }
        }
        let (tmp, state) = (work.path().join("tmp"), work.path().join("state"));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        Session {
            label,
            build,
            bin: bin.to_owned(),
            _work: work,
            repo,
            tmp,
            state,
            vars: BTreeMap::new(),
            broker: None,
            failures: Vec::new(),
            check_tails: false,
        }
    }

    /// A fresh broker as `addr` and the documentation's broker addresses,
    /// with `setup` (the walkthrough's commands) run on it.
    fn fresh_broker(&mut self, setup: &[&str]) {
        let broker = Broker::start_build(self.build);
        self.vars.insert("addr".into(), broker.address.clone());
        self.broker = Some(broker);
        let mut done = Vec::new();
        for command in setup {
            let mut script = String::new();
            for (k, v) in &self.vars {
                script.push_str(&format!("{k}={}\n", sh_quote(v)));
            }
            script.push_str(command);
            let out = Command::new("bash")
                .arg("-c")
                .arg(&script)
                .current_dir(&self.repo)
                .env("PATH", self.path())
                .env_remove("RUST_LOG")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} set-up `{command}`: {}",
                self.label,
                String::from_utf8_lossy(&out.stderr)
            );
            done.push(format!("`{command}`"));
        }
        let address = self.vars["addr"].clone();
        if done.is_empty() {
            println!("{}  (set-up: a fresh broker {address})", self.label);
        } else {
            println!(
                "{}  (set-up: a fresh broker {address}, then {})",
                self.label,
                done.join(", ")
            );
        }
    }

    /// `PATH` with the binary under test first.
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.bin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The broker the documentation's addresses stand for.
    fn broker_address(&self) -> Option<String> {
        self.broker
            .as_ref()
            .map(|b| b.address.clone())
            .or_else(|| self.vars.get("addr").cloned())
    }

    /// The command as it is run: the substitutions of the module doc.
    fn substitute(&self, text: &str) -> String {
        let mut ran = text.to_owned();
        if let Some(address) = self.broker_address() {
            for doc in DOC_BROKERS {
                ran = ran.replace(doc, &address);
            }
        }
        let start = "scripts/broker start";
        let mut from = 0;
        while let Some(at) = ran[from..].find(start).map(|i| i + from) {
            let end = at + start.len();
            let rest = &ran[end..];
            if !(rest.starts_with(" --prebuilt") || rest.starts_with(" --patched")) {
                ran.insert_str(end, &format!(" {}", self.build.flag()));
            }
            from = end;
        }
        for (shown, scaled) in SCALE_DOWN {
            ran = replace_word(&ran, shown, scaled);
        }
        // Sessions run side by side: each `--http` gets a port of its own.
        while ran.contains(DOC_HTTP) {
            ran = ran.replacen(
                DOC_HTTP,
                &format!("--http 127.0.0.1:{}", free_loopback_port()),
                1,
            );
        }
        let line = one_line(&ran);
        if subcommand(&line).as_deref() == Some("bench")
            && !line.contains("--rows")
            && !line.contains("--input")
        {
            ran = format!("{} {BENCH_ROWS}", ran.trim_end());
        }
        ran
    }

    fn spawn(&self, shown: &Shown, ran: &str) -> Running {
        let mut script = String::new();
        for (k, v) in &self.vars {
            script.push_str(&format!("{k}={}\n", sh_quote(v)));
        }
        script.push_str(ran);
        script.push('\n');
        let assigns = assignment(ran).map(|name| {
            let file = self.state.join(&name);
            script.push_str(&format!(
                "__rc=$?\nprintf '%s' \"${{{name}}}\" > {}\nexit $__rc\n",
                sh_quote(file.to_str().unwrap())
            ));
            (name, file)
        });
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(&self.repo)
            .env("PATH", self.path())
            .env("TMPDIR", &self.tmp)
            .env_remove("RUST_LOG")
            .env_remove("LOANFLOW_BROKERS")
            .env_remove("LOANFLOW_FAILPOINTS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("bash");
        let (stdout, r1) = drain(child.stdout.take().unwrap());
        let (stderr, r2) = drain(child.stderr.take().unwrap());
        Running {
            shown: shown.clone(),
            ran: ran.to_owned(),
            live: live(ran),
            child,
            stdout,
            stderr,
            readers: vec![r1, r2],
            started: Instant::now(),
            assigns,
            expect_lines: None,
        }
    }

    /// Runs commands together (one, or the processes of a cluster); each
    /// must exit 0.
    fn step(&mut self, shown: &[Shown]) {
        let mut running: Vec<Running> = shown
            .iter()
            .map(|s| {
                let ran = self.substitute(&s.text);
                let mut running = self.spawn(s, &ran);
                if self.must_print_every_application(&s.text) {
                    running.expect_lines = Some(APPLICATIONS);
                }
                running
            })
            .collect();
        let mut problems: Vec<Option<String>> = vec![None; running.len()];
        // Those that run until stopped: settled, then Ctrl-C.
        for (r, problem) in running.iter_mut().zip(problems.iter_mut()) {
            if r.live != Live::Bounded {
                if let Err(e) = r.settle() {
                    *problem = Some(e);
                }
            }
        }
        for r in running.iter().filter(|r| r.live != Live::Bounded) {
            r.signal("-INT");
        }
        let mut results = Vec::new();
        for (mut r, problem) in running.into_iter().zip(problems) {
            let limit = if r.live == Live::Bounded {
                COMMAND_TIMEOUT
            } else {
                STOP_TIMEOUT
            };
            let code = r.wait(limit);
            let seconds = r.started.elapsed().as_secs_f64();
            if let Some((name, file)) = &r.assigns {
                if let Ok(value) = std::fs::read_to_string(file) {
                    self.vars.insert(name.clone(), value);
                }
            }
            let problem = problem.or_else(|| match code {
                None if r.live == Live::Bounded => Some(format!(
                    "did not finish within {} s (killed)",
                    COMMAND_TIMEOUT.as_secs()
                )),
                None => Some(format!(
                    "did not stop within {} s of SIGINT (killed)",
                    STOP_TIMEOUT.as_secs()
                )),
                _ => None,
            });
            results.push(Ran {
                shown: r.shown,
                ran: r.ran,
                code,
                seconds,
                stdout: text_of(&r.stdout),
                stderr: text_of(&r.stderr),
                problem,
            });
        }
        for mut ran in results {
            if ran.problem.is_none() && ran.code == Some(0) {
                ran.problem = self.check_output(&ran);
            }
            self.report(&ran);
        }
    }

    /// What a command's output must show.
    fn check_output(&self, ran: &Ran) -> Option<String> {
        let line = one_line(&ran.shown.text);
        if let Some(file) = line.strip_prefix("cat ") {
            if !ran.shown.output.is_empty() {
                let expected = std::fs::read_to_string(self.repo.join(file.trim())).ok()?;
                return (ran.stdout != expected)
                    .then(|| format!("printed {:?}, not {expected:?}", ran.stdout));
            }
        }
        if self.must_print_every_application(&line) {
            return every_application_once(&ran.stdout).err();
        }
        None
    }

    /// A README `tail --from-beginning`: it prints every application.
    fn must_print_every_application(&self, text: &str) -> bool {
        let line = one_line(text);
        self.check_tails
            && subcommand(&line).as_deref() == Some("tail")
            && line.split_whitespace().any(|w| w == "--from-beginning")
    }

    fn report(&mut self, ran: &Ran) {
        let code = match ran.code {
            Some(c) => format!("exit {c:<3}"),
            None => "killed  ".to_owned(),
        };
        let mut line = format!(
            "{}  {code} {:>6.1} s  {}  {}",
            self.label,
            ran.seconds,
            ran.shown.origin,
            ran.shown.one_line()
        );
        if one_line(&ran.ran) != ran.shown.one_line() {
            line.push_str(&format!("   [ran as: {}]", one_line(&ran.ran)));
        }
        println!("{line}");
        if ran.code != Some(0) || ran.problem.is_some() {
            let why = ran
                .problem
                .clone()
                .unwrap_or_else(|| "a non-zero exit".into());
            let tail: Vec<&str> = ran
                .stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect();
            let tail = tail[tail.len().saturating_sub(3)..].join("\n      ");
            let failure = format!(
                "{} {}: {}\n    {code} {why}\n    stderr: {tail}",
                self.label,
                ran.shown.origin,
                ran.shown.one_line()
            );
            println!("    FAILED: {why}\n    stderr: {tail}");
            self.failures.push(failure);
        }
    }

    /// Runs a unit's commands in order: consecutive host prompts together,
    /// a cluster process with the peers it names.
    fn run_unit(&mut self, commands: &[Shown]) {
        let mut k = 0;
        while k < commands.len() {
            let shown = &commands[k];
            if let Some(i) = not_run(shown) {
                println!(
                    "{}  not run  {}  {}  ({})",
                    self.label,
                    shown.origin,
                    shown.one_line(),
                    NOT_RUN[i].1
                );
                k += 1;
                continue;
            }
            if shown.host.is_some() {
                let mut group = vec![shown.clone()];
                while k + 1 < commands.len() && commands[k + 1].host.is_some() {
                    k += 1;
                    group.push(commands[k].clone());
                }
                self.step(&group);
            } else if let Some(file) = one_line(&shown.text).strip_prefix("cat ") {
                if !shown.output.is_empty() {
                    self.write_hostfile(file.trim(), &shown.output);
                }
                self.step(std::slice::from_ref(shown));
            } else {
                let peers = peers(shown);
                self.step(&peers);
            }
            k += 1;
        }
    }

    /// A file whose content the README shows (`$ cat FILE`): written with
    /// each `host:port` on a free loopback port.
    fn write_hostfile(&self, file: &str, content: &[String]) {
        let mut ports = HashMap::new();
        let text: String = content
            .iter()
            .map(|l| {
                let l = l.trim();
                let port = *ports.entry(l.to_owned()).or_insert_with(free_loopback_port);
                format!("127.0.0.1:{port}\n")
            })
            .collect();
        println!(
            "{}  (set-up: {file} written as shown, hosts on loopback: {})",
            self.label,
            text.trim().replace('\n', ", ")
        );
        std::fs::write(self.repo.join(file), text).unwrap();
    }

    /// The hostfile a --help example names (`--hostfile F --processes N`):
    /// N free loopback addresses.
    fn help_fixtures(&self, examples: &[Shown]) {
        // A hostfile: one free loopback port per process.
        for e in examples {
            let line = e.one_line();
            let words: Vec<&str> = line.split_whitespace().collect();
            let value = |flag: &str| {
                words
                    .iter()
                    .position(|w| *w == flag)
                    .and_then(|i| words.get(i + 1))
                    .copied()
            };
            if let (Some(file), Some(n)) = (value("--hostfile"), value("--processes")) {
                let n: usize = n.parse().unwrap();
                let text: String = (0..n)
                    .map(|_| format!("127.0.0.1:{}\n", free_loopback_port()))
                    .collect();
                std::fs::write(self.repo.join(file), &text).unwrap();
                println!(
                    "{}  (set-up: {file} = {n} loopback addresses: {})",
                    self.label,
                    text.trim().replace('\n', ", ")
                );
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A broker the session's own `scripts/broker start` left running.
        let _ = Command::new(self.repo.join("scripts/broker"))
            .arg("stop")
            .env("TMPDIR", &self.tmp)
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status();
    }
}

/// Replaces `from` where it is whole words (not `--rows 10000000`).
fn replace_word(text: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(from) {
        let end = at + from.len();
        let boundary = rest[end..].chars().next().is_none_or(|c| c.is_whitespace());
        out.push_str(&rest[..at]);
        out.push_str(if boundary { to } else { from });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A cluster process (`--processes N --process I`) with the peers the
/// example leaves to other machines (`--process J`, same command), to run
/// together; any other command alone.
fn peers(shown: &Shown) -> Vec<Shown> {
    let line = shown.one_line();
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let (Some(n), Some(me)) = (value("--processes"), value("--process")) else {
        return vec![shown.clone()];
    };
    (0..n)
        .map(|j| {
            let mut peer = shown.clone();
            if j != me {
                peer.text = replace_word(
                    &shown.text,
                    &format!("--process {me}"),
                    &format!("--process {j}"),
                );
                peer.origin = format!("{} (its peer process {j})", shown.origin);
            }
            peer
        })
        .collect()
}

/// `tail`'s lines (`ID  score S  ok|FLAGGED`, or JSON): every application
/// exactly once, with XGBoost's score.
fn every_application_once(stdout: &str) -> Result<(), String> {
    let expected = expected_scores();
    let mut seen = BTreeSet::new();
    for line in stdout.lines() {
        let (id, score) = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => (
                v["id"].as_str().unwrap_or_default().to_owned(),
                v["score"].as_f64(),
            ),
            Err(_) => {
                let words: Vec<&str> = line.split_whitespace().collect();
                let score = words
                    .iter()
                    .position(|w| *w == "score")
                    .and_then(|i| words.get(i + 1))
                    .and_then(|s| s.parse().ok());
                (words.first().copied().unwrap_or_default().to_owned(), score)
            }
        };
        let Some(want) = expected.get(&id) else {
            return Err(format!("printed {line:?}: not an application"));
        };
        match score {
            Some(s) if (s - want).abs() <= 1e-6 => {}
            _ => return Err(format!("{line:?}: XGBoost's score is {want}")),
        }
        if !seen.insert(id) {
            return Err(format!("printed {line:?} twice"));
        }
    }
    (seen.len() == APPLICATIONS)
        .then_some(())
        .ok_or_else(|| format!("printed {} of the {APPLICATIONS} applications", seen.len()))
}

/// Whether a unit uses a broker it does not start.
fn needs_broker(unit: &Unit) -> bool {
    let starts = unit
        .commands
        .iter()
        .any(|c| c.text.contains("scripts/broker start"));
    let uses = unit.commands.iter().any(|c| {
        c.text.contains("$addr")
            || c.text.contains("${addr}")
            || DOC_BROKERS.iter().any(|b| c.text.contains(b))
    });
    uses && !starts
}

fn readme() -> Readme {
    parse_readme(&std::fs::read_to_string(root().join("README.md")).unwrap())
}

/// Runs every README command and every --help example on `build`.
fn run_everything_on(build: BrokerBuild) {
    let started = Instant::now();
    let readme = readme();
    let (help, help_errors) = all_help_examples();
    let mut failures: Vec<String> = readme.errors.clone();
    failures.extend(help_errors);
    let label = format!("[{}]", build.name());
    let mut count = 0;
    // A copy: the commands all run one binary even if cargo replaces it.
    let bin_dir = tempfile::tempdir().unwrap();
    let bin = bin_dir.path().join("loanflow");
    std::fs::copy(env!("CARGO_BIN_EXE_loanflow"), &bin).unwrap();

    for unit in &readme.units {
        if unit.commands.iter().all(|c| not_run(c).is_some()) {
            continue;
        }
        println!("{label}  ── {}", unit.origin);
        let mut session = Session::new(label.clone(), build, &bin);
        session.check_tails = true;
        if needs_broker(unit) {
            session.fresh_broker(&[INGEST]);
        }
        session.run_unit(&unit.commands);
        count += unit.commands.len();
        failures.append(&mut session.failures);
    }

    // The --help examples: one repository copy (files made by one are read
    // by the next), a fresh broker per subcommand with what its examples
    // assume on "your broker".
    let mut session = Session::new(label.clone(), build, &bin);
    session.help_fixtures(&help);
    let mut rest: &[Shown] = &help;
    while let Some(first) = rest.first() {
        let sub = subcommand(&first.text).unwrap_or_default();
        let n = rest
            .iter()
            .take_while(|c| subcommand(&c.text).unwrap_or_default() == sub)
            .count();
        println!("{label}  ── the --help examples of `loanflow {sub}`");
        let setup = HELP_SETUP
            .iter()
            .find(|(s, _)| *s == sub)
            .map_or(&[INGEST][..], |(_, setup)| setup);
        session.fresh_broker(setup);
        session.run_unit(&rest[..n]);
        rest = &rest[n..];
    }
    count += help.len();
    failures.append(&mut session.failures);
    drop(session);

    println!(
        "{label}  {count} documented commands in {:.0} s, {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} documented command(s) failed on the {} broker:\n{}",
        failures.len(),
        build.name(),
        failures.join("\n")
    );
}

// --------------------------------------------------------------------- tests

#[test]
fn every_documented_command_is_found_and_classified() {
    let readme = readme();
    let (help, help_errors) = all_help_examples();
    for unit in &readme.units {
        for c in &unit.commands {
            let how = match not_run(c) {
                Some(i) => format!("not run: {}", NOT_RUN[i].1),
                None => format!("{:?}", live(&c.text)),
            };
            println!("{}  {}  ({how})", c.origin, c.one_line());
        }
    }
    for (origin, code, why) in &readme.not_commands {
        println!("{origin}  `{code}`  (not a command: {why})");
    }
    for c in &help {
        println!("{}  {}  ({:?})", c.origin, c.one_line(), live(&c.text));
    }
    let mut errors = readme.errors.clone();
    errors.extend(help_errors);
    assert!(errors.is_empty(), "{}", errors.join("\n"));

    // The walkthrough is there, as a sequence.
    let walkthrough = readme
        .units
        .iter()
        .find(|u| {
            u.commands
                .iter()
                .any(|c| c.text.contains("scripts/broker start"))
        })
        .expect("the README's Kafka walkthrough (a block starting a broker)");
    let subs: Vec<String> = walkthrough
        .commands
        .iter()
        .map(|c| subcommand(&c.text).unwrap_or_else(|| c.one_line()))
        .collect();
    for needed in ["ingest", "run", "tail"] {
        assert!(
            subs.iter().any(|s| s == needed),
            "the walkthrough has no `loanflow {needed}`: {subs:?}"
        );
    }
    assert!(
        walkthrough
            .commands
            .iter()
            .any(|c| live(&c.text) == Live::Tail && c.text.contains("--from-beginning")),
        "the walkthrough's tail reads --from-beginning"
    );

    // The README's list of commands is the binary's.
    let listed: BTreeSet<String> = readme.listed.iter().cloned().collect();
    let actual: BTreeSet<String> = subcommands(&help_text(&["help"])).into_iter().collect();
    assert_eq!(listed, actual, "README's command list vs `loanflow help`");

    // Every subcommand shows examples.
    for sub in &actual {
        assert!(
            help.iter()
                .any(|c| subcommand(&c.text).as_deref() == Some(sub.as_str())),
            "no example of `loanflow {sub}` in any --help"
        );
    }

    // The not-run list is tiny and none of it stale.
    let everything: Vec<&Shown> = readme
        .units
        .iter()
        .flat_map(|u| &u.commands)
        .chain(&help)
        .collect();
    for (i, (_, why)) in NOT_RUN.iter().enumerate() {
        assert!(
            everything.iter().any(|c| not_run(c) == Some(i)),
            "NOT_RUN entry {i} ({why}) matches no shown command: remove it"
        );
    }
}

#[test]
fn every_documented_command_runs_on_the_prebuilt_broker() {
    run_everything_on(BrokerBuild::Prebuilt);
}

#[test]
fn every_documented_command_runs_on_the_patched_broker() {
    if !patched_broker_built() {
        assert!(
            !in_ci(),
            "CI must test the patched broker: run `scripts/broker install-patched` first"
        );
        println!(
            "[patched]  skipped: the patched broker is not built (`scripts/broker install-patched`)"
        );
        return;
    }
    run_everything_on(BrokerBuild::Patched);
}

#[test]
fn the_tail_check_needs_every_application_once_with_its_score() {
    let expected = expected_scores();
    let mut lines: Vec<String> = expected
        .iter()
        .map(|(id, s)| format!("{id:<16} score {s:<12} ok"))
        .collect();
    lines.sort();
    assert_eq!(every_application_once(&lines.join("\n")), Ok(()));
    let json: Vec<String> = expected
        .iter()
        .map(|(id, s)| format!(r#"{{"id":"{id}","score":{s}}}"#))
        .collect();
    assert_eq!(every_application_once(&json.join("\n")), Ok(()));

    let one_short = lines[1..].join("\n");
    assert!(every_application_once(&one_short).is_err());
    let doubled = format!("{}\n{}", lines.join("\n"), lines[0]);
    assert!(every_application_once(&doubled).is_err());
    let (id, score) = expected.iter().next().unwrap();
    let wrong = lines
        .iter()
        .map(|l| {
            if l.starts_with(&format!("{id} ")) {
                format!("{id} score {} ok", score + 0.01)
            } else {
                l.clone()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(every_application_once(&wrong).is_err());
}
