//! File edges: a CSV or JSON Lines source split across workers, and JSON
//! Lines sinks for scored applications and dead letters.
//!
//! Splitting: the input is memory-mapped once per process and cut into
//! stripes of about [`STRIPE`] bytes, their count a multiple of the worker
//! count `W`; worker `w` (global index, so this holds across a cluster too)
//! owns the lines that *start* in stripes `w`, `w + W`, `w + 2W`, … of the
//! data after the header, and reads them in file order. A line crossing a
//! stripe's end is read whole by the worker where it starts, so every line
//! is read by exactly one worker, none twice, none missed. Records are one
//! per line (CSV fields must not contain newlines). Stripes rather than one
//! range per worker keep the workers at about the same place in the file,
//! so on a file in event-time order every worker's watermark moves on
//! together (a window dataflow answers an application only once every
//! worker passed its time: with halves, the second half would wait whole
//! for the first). A file smaller than `W` stripes is cut in `W` ranges.
//!
//! Memory: the mapped pages a process's workers have all read past are
//! given back to the kernel ([`FileInput::passed`]), a few MiB at a time,
//! so the process's resident set stays flat however long the file is
//! (otherwise every page read stays counted in it until the run ends). A
//! line is copied out of the mapping when it is read (`RawRecord::bytes`),
//! and nothing reads a page again once every local worker's cursor passed
//! it; were one read again all the same, the kernel would fault it back in
//! from the file, unchanged: the mapping is shared and read-only.
//!
//! Sinks: every worker of a process appends large chunks of whole lines to
//! one shared file, written as `PATH.partial` and renamed to `PATH` only when
//! the run succeeds, so a failed run never leaves a file that looks complete;
//! nor does a file run stopped by a signal ([`FileOutput::keep_partial`]):
//! the final name appears only when a run read its input to the end.
//!
//! In a cluster of N > 1 processes each process writes its own files, named
//! by [`part_path`]: `--output out/p.jsonl` becomes `out/p.jsonl.d/part-00000.jsonl`,
//! `out/p.jsonl.d/part-00001.jsonl`, … (dead letters alike), which sort in
//! process order; their union is what one process would have written.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use indicatif::ProgressBar;
use memmap2::{Mmap, UncheckedAdvice};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Scope;

use crate::core::fault::Fault;
use crate::core::metrics::Tap;
use crate::core::record::{now_ns, DeadLetter, Format, Origin, RawRecord, Record};
use crate::core::scored::{OutputFormat, Tally};
use crate::core::Epoch;
use crate::dataflow::ingest::{HeaderError, Parser};
use crate::dataflow::Batches;
use crate::io::{Deads, Feed, Outputs, Progress, Sink, Source, Stats, Written};
use crate::spec::Spec;

/// Why a file edge could not read its input or write an output.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The input could not be opened, sized or memory-mapped.
    #[error(
        "cannot read input {path}: {source} (pass an existing CSV or JSON Lines file with --input)"
    )]
    Open {
        /// The input file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// No format was given and the extension names none (see [`format_of`]).
    #[error("cannot tell the format of {path} from its extension (use .csv, .jsonl, or pass --format csv|jsonl)")]
    UnknownFormat {
        /// The file whose format is unknown.
        path: PathBuf,
    },
    /// A CSV input has no bytes at all, so no header line.
    #[error("input {path} is empty: a CSV input needs at least its header line")]
    NoHeader {
        /// The empty input.
        path: PathBuf,
    },
    /// An output (or its folder) could not be created, or a file an earlier
    /// run left there could not be removed.
    #[error("cannot write {path}: {source} (check the folder exists and is writable, or pick another path)")]
    Create {
        /// The file or folder concerned.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Writing, flushing or syncing an output's `.partial` file failed.
    #[error("cannot {what} {path}: {source}")]
    Write {
        /// The step that failed: `write` or `sync`.
        what: &'static str,
        /// The `.partial` file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The CSV header is not valid or lacks a column the spec reads.
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("cannot rename {from} to {to}: {source}")]
    /// A finished `.partial` file could not be published under its final name.
    Rename {
        /// The `.partial` file.
        from: PathBuf,
        /// Its final name.
        to: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The format `path`'s extension names, if it names one: `.csv`, or
/// `.jsonl`, `.ndjson`, `.json` for JSON Lines (any case). The one rule for
/// every file loanflow reads or writes.
pub fn format_of(path: &Path) -> Option<Format> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => Some(Format::Csv),
        Some("jsonl" | "ndjson" | "json") => Some(Format::Jsonl),
        _ => None,
    }
}

/// The format of `path`: the explicit one if given, else from the extension.
pub fn detect_format(path: &Path, explicit: Option<Format>) -> Result<Format, FileError> {
    explicit
        .or_else(|| format_of(path))
        .ok_or_else(|| FileError::UnknownFormat {
            path: path.to_owned(),
        })
}

enum Data {
    Mapped(Mmap),
    Empty,
}

impl std::ops::Deref for Data {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Data::Mapped(m) => m,
            Data::Empty => &[],
        }
    }
}

/// An input file, mapped once and shared by the workers of a process.
pub struct FileInput {
    /// The file, as given.
    pub path: PathBuf,
    /// How its lines are parsed: CSV (with a header) or JSON Lines.
    pub format: Format,
    data: Data,
    /// The header line of a CSV (without its line end).
    header: Option<Range<usize>>,
    /// Where the records start: after the header for CSV, 0 for JSON Lines.
    data_start: usize,
    /// What the workers reading the mapping have passed, and what of it
    /// was given back ([`FileInput::passed`]).
    released: Mutex<Released>,
}

/// Mapped bytes given back to the kernel in steps of this many (a multiple
/// of every page size): one `madvise` per step, not one per stripe.
pub const RELEASE_STEP: usize = 4 << 20;

/// The reading workers' positions, and how much of the mapping is given back.
#[derive(Debug, Default)]
struct Released {
    /// (worker, position): the worker read every byte it will ever read
    /// before its position.
    at: Vec<(usize, usize)>,
    /// The bytes before this are given back (a multiple of [`RELEASE_STEP`]).
    to: usize,
}

impl FileInput {
    /// Maps `path` read-only and, for CSV, finds its header line; an empty
    /// CSV is [`FileError::NoHeader`].
    pub fn open(path: &Path, format: Format) -> Result<FileInput, FileError> {
        let open_err = |source| FileError::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        let data = if len == 0 {
            Data::Empty
        } else {
            // SAFETY: the map is read-only; loanflow never writes its inputs.
            // Truncating the file while a run reads it is outside the contract
            // (as for any reader of a file being rewritten).
            Data::Mapped(unsafe { Mmap::map(&file) }.map_err(open_err)?)
        };
        let (header, data_start) = match format {
            Format::Jsonl => (None, 0),
            Format::Csv => {
                if data.is_empty() {
                    return Err(FileError::NoHeader {
                        path: path.to_owned(),
                    });
                }
                let end = memchr::memchr(b'\n', &data).unwrap_or(data.len());
                // A UTF-8 byte-order mark is not part of the first column's name.
                let start = if data.starts_with(b"\xEF\xBB\xBF") {
                    3
                } else {
                    0
                };
                (
                    Some(start..trim_cr(&data, start, end)),
                    (end + 1).min(data.len()),
                )
            }
        };
        Ok(FileInput {
            path: path.to_owned(),
            format,
            data,
            header,
            data_start,
            released: Mutex::default(),
        })
    }

    /// Worker `worker`, one of the process's `readers`, will read nothing
    /// before byte `position` any more (its cursor's
    /// [`StripedCursor::position`], or the end of the data once it has read
    /// its share). Once every reader has said so of a step's worth of bytes,
    /// those pages of the mapping are given back to the kernel (module doc,
    /// "Memory"): the resident set no longer grows with the file.
    pub fn passed(&self, worker: usize, readers: usize, position: usize) {
        let Data::Mapped(map) = &self.data else {
            return;
        };
        let mut released = self.released.lock().unwrap_or_else(|e| e.into_inner());
        match released.at.iter_mut().find(|(w, _)| *w == worker) {
            Some(at) => at.1 = at.1.max(position),
            None => released.at.push((worker, position)),
        }
        if released.at.len() < readers {
            return; // a reader that has not said where it is may be anywhere
        }
        let passed = released.at.iter().map(|(_, at)| *at).min().unwrap_or(0);
        let to = passed.min(map.len()) / RELEASE_STEP * RELEASE_STEP;
        if to <= released.to {
            return;
        }
        // SAFETY: the mapping is shared and read-only (`FileInput::open`):
        // MADV_DONTNEED drops these pages from the process, and a later read
        // of them faults them back in from the file, unchanged — no
        // reference into the mapping ever sees other bytes. The range is
        // inside the mapping, its start and end multiples of the page size.
        if let Err(e) = unsafe {
            map.unchecked_advise_range(UncheckedAdvice::DontNeed, released.to, to - released.to)
        } {
            // Only memory is at stake: say so and keep the pages.
            tracing::debug!(path = %self.path.display(), error = %e, "could not give back read pages");
        }
        released.to = to;
    }

    /// The CSV header line (no line end, no UTF-8 byte-order mark); `None`
    /// for JSON Lines.
    pub fn header(&self) -> Option<&[u8]> {
        self.header.clone().map(|r| &self.data[r])
    }

    /// Bytes of records (for progress).
    pub fn data_len(&self) -> u64 {
        (self.data.len() - self.data_start) as u64
    }

    /// The byte ranges (stripes, in file order) whose line starts worker
    /// `index` of `peers` owns.
    fn share(&self, index: usize, peers: usize) -> Vec<Range<usize>> {
        let span = self.data.len() - self.data_start;
        let stripes = span.div_ceil(STRIPE).div_ceil(peers).max(1) * peers;
        let at = |k: usize| self.data_start + (span as u128 * k as u128 / stripes as u128) as usize;
        (index..stripes)
            .step_by(peers)
            .map(|k| at(k)..at(k + 1))
            .collect()
    }

    /// A cursor over the lines that start in `stripes` (disjoint, in file
    /// order).
    pub fn striped_cursor(&self, stripes: Vec<Range<usize>>) -> StripedCursor {
        let mut stripes = stripes.into_iter();
        let cursor = self.cursor(stripes.next().unwrap_or(self.data.len()..self.data.len()));
        StripedCursor {
            cursor,
            stripes,
            read: 0,
        }
    }

    /// The byte range of the records (after a CSV header).
    pub fn records(&self) -> Range<usize> {
        self.data_start..self.data.len()
    }

    /// A cursor over the lines that start in `range`.
    pub fn cursor(&self, range: Range<usize>) -> LineCursor {
        let (pos, line) = self.first_line_from(range.start);
        LineCursor {
            pos,
            end: range.end,
            line,
        }
    }

    /// The lines that start in `range`, with their 1-based line numbers.
    pub fn lines(&self, range: Range<usize>) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let mut cursor = self.cursor(range);
        std::iter::from_fn(move || {
            cursor
                .next_line(&self.data)
                .map(|(n, r)| (n, &self.data[r]))
        })
    }

    /// The first line start at or after `pos`, and its 1-based line number.
    fn first_line_from(&self, pos: usize) -> (usize, u64) {
        let start = if pos <= self.data_start {
            self.data_start
        } else {
            // A line starts at `pos` only if the byte before it ends a line.
            match memchr::memchr(b'\n', &self.data[pos - 1..]) {
                Some(i) => pos + i,
                None => self.data.len(),
            }
        };
        let line = 1 + memchr::memchr_iter(b'\n', &self.data[..start]).count() as u64;
        (start, line)
    }
}

/// A file read line by line outside the dataflow, each line parsed as the
/// pipeline's ingest would parse it: what `ingest` and `replay --topic`
/// send, where a replay's history starts, the benchmark's scorer sample.
pub struct ParsedFile {
    input: FileInput,
    parser: Parser,
    name: Arc<str>,
}

/// One line of a [`ParsedFile`].
pub struct ParsedLine<'a> {
    /// 1-based, counting a CSV header.
    pub line: u64,
    /// The line as it is in the file (no line end).
    pub bytes: &'a [u8],
    /// The record, or why ingest would dead-letter it.
    pub parsed: Result<Record, DeadLetter>,
}

impl ParsedFile {
    /// Opens `path` (its format given, or from its extension) and checks its
    /// header against `spec`; records longer than `max_record_bytes` are
    /// refused as the pipeline refuses them.
    pub fn open(
        spec: &Spec,
        path: &Path,
        format: Option<Format>,
        max_record_bytes: usize,
    ) -> Result<ParsedFile, FileError> {
        let format = detect_format(path, format)?;
        let input = FileInput::open(path, format)?;
        let name = path.display().to_string();
        let parser = Parser::new(spec, format, input.header(), &name, max_record_bytes)?;
        Ok(ParsedFile {
            input,
            parser,
            name: Arc::from(name),
        })
    }

    /// The path as the records' origins name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes of records (for progress).
    pub fn data_len(&self) -> u64 {
        self.input.data_len()
    }

    /// Every line after a CSV header, parsed, in file order. The mapping is
    /// given back behind the reader as it goes ([`FileInput::passed`]), so
    /// reading a long file keeps the resident set flat.
    pub fn lines(&mut self) -> impl Iterator<Item = ParsedLine<'_>> + '_ {
        let ParsedFile {
            input,
            parser,
            name,
        } = self;
        let input = &*input;
        let name = &*name;
        let mut cursor = input.cursor(input.records());
        let mut release_at = RELEASE_STEP;
        std::iter::from_fn(move || {
            let (line, range) = cursor.next_line(&input.data)?;
            if range.start >= release_at {
                // The one reader: nothing before this line is read again.
                input.passed(0, 1, range.start);
                release_at = range.start + RELEASE_STEP;
            }
            let bytes = &input.data[range];
            Some(ParsedLine {
                line,
                bytes,
                parsed: parser.parse(RawRecord {
                    read_at: 0,
                    bytes: bytes.to_vec(),
                    origin: Origin::File {
                        path: Arc::clone(name),
                        line,
                    },
                }),
            })
        })
    }
}

/// Walks lines by start position: yields each line (without its line end)
/// whose first byte lies before `end`.
#[derive(Debug, Clone)]
pub struct LineCursor {
    pos: usize,
    end: usize,
    line: u64,
}

impl LineCursor {
    /// The next line of `data` (the file the cursor was made for): its
    /// 1-based number and byte range without `\n` or `\r\n`; `None` once
    /// the next line starts at or after the end of the range.
    pub fn next_line(&mut self, data: &[u8]) -> Option<(u64, Range<usize>)> {
        if self.pos >= self.end || self.pos >= data.len() {
            return None;
        }
        let start = self.pos;
        let line_end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
        self.pos = line_end + 1;
        self.line += 1;
        Some((self.line - 1, start..trim_cr(data, start, line_end)))
    }

    /// Byte position of the next line.
    pub fn position(&self) -> usize {
        self.pos
    }
}

/// A worker's [`LineCursor`] over its stripes ([`FileInput::share`]).
pub struct StripedCursor {
    cursor: LineCursor,
    stripes: std::vec::IntoIter<Range<usize>>,
    read: usize,
}

impl StripedCursor {
    /// The next line, as [`LineCursor::next_line`], moving on to the next
    /// stripe at the end of one; line numbers count the lines skipped.
    pub fn next_line(&mut self, data: &[u8]) -> Option<(u64, Range<usize>)> {
        loop {
            let from = self.cursor.pos;
            if let Some(line) = self.cursor.next_line(data) {
                self.read += self.cursor.pos.min(data.len()) - from;
                return Some(line);
            }
            let next = self.stripes.next()?;
            // The first line starting at or after the stripe's start.
            let start = if next.start == 0 || data.get(next.start - 1) == Some(&b'\n') {
                next.start
            } else {
                memchr::memchr(b'\n', &data[next.start..])
                    .map_or(data.len(), |i| next.start + i + 1)
            };
            let at = self.cursor.pos.min(start);
            let skipped = memchr::memchr_iter(b'\n', &data[at..start.min(data.len())]).count();
            self.cursor = LineCursor {
                pos: start,
                end: next.end,
                line: self.cursor.line + skipped as u64,
            };
        }
    }

    /// Bytes of the lines read so far (line ends included).
    pub fn read(&self) -> usize {
        self.read
    }

    /// Where the next line starts: every byte before it that the cursor
    /// will ever read was read.
    pub fn position(&self) -> usize {
        self.cursor.pos
    }
}

/// Bytes per stripe of a file input, about ([`FileInput::share`]): about
/// one window run's default epoch of records (`pipeline::run`), so that
/// workers stay about that close in the file (and, on a file in event-time
/// order, in event time). A window run answers an application once every
/// worker passed its time, so a worker's rows wait for the workers reading
/// the stripes before theirs: the smaller the stripe, the fewer rows wait,
/// and the more of them are still in cache when answered. (With 4 MiB, two
/// workers read months apart in the generated stream; 64 KiB against
/// 256 KiB is measured in benches/README.md, "Window features".)
pub const STRIPE: usize = 64 << 10;

fn trim_cr(data: &[u8], start: usize, end: usize) -> usize {
    if end > start && data[end - 1] == b'\r' {
        end - 1
    } else {
        end
    }
}

/// Reads a worker's share of a [`FileInput`], `batch` lines per epoch.
pub struct FileSource {
    /// The input, shared by every worker of the process.
    pub input: Arc<FileInput>,
    /// Advanced by the bytes this worker reads, if shown.
    pub progress: Option<ProgressBar>,
    /// Lines per epoch, counters, the stop flag.
    pub feed: Feed,
    /// How many workers of this process read the input (each a
    /// `FileSource`): the mapping's pages are given back once all of them
    /// passed ([`FileInput::passed`]).
    pub readers: usize,
}

impl Source for FileSource {
    fn build<'s>(
        self: Box<Self>,
        scope: Scope<'s, Epoch>,
        progress: Progress,
    ) -> Batches<'s, RawRecord> {
        let (done, reach) = (progress.read, progress.reach);
        let FileSource {
            input,
            progress,
            feed,
            readers,
        } = *self;
        let worker = scope.index();
        let (batch, stats) = (feed.batch, Arc::clone(&feed.stats));
        let mut cursor = input.striped_cursor(input.share(scope.index(), scope.peers()));
        // One Arc per worker: workers never contend on its reference count.
        let path: Arc<str> = Arc::from(input.path.display().to_string());
        source(scope, "FileSource", move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut capability = Some(capability);
            let mut epoch: Epoch = 0;
            move |output| {
                let Some(cap) = capability.as_mut() else {
                    return;
                };
                if done.less_than(&epoch.saturating_sub(reach.epochs)) {
                    // Backpressure: what reading is paced by is behind;
                    // look again shortly.
                    activator.activate_after(reach.recheck);
                    return;
                }
                let from = cursor.read();
                let read_at = now_ns();
                let mut count = 0;
                let mut session = output.session(&cap);
                while count < batch {
                    let Some((line, range)) = cursor.next_line(&input.data) else {
                        break;
                    };
                    session.give(RawRecord {
                        read_at,
                        bytes: input.data[range].to_vec(),
                        origin: Origin::File {
                            path: Arc::clone(&path),
                            line,
                        },
                    });
                    count += 1;
                }
                drop(session);
                let read = (cursor.read() - from) as u64;
                stats.read(count, read);
                if let Some(bar) = &progress {
                    bar.inc(read);
                }
                let finished = count < batch;
                input.passed(
                    worker,
                    readers,
                    if finished {
                        usize::MAX
                    } else {
                        cursor.position()
                    },
                );
                if finished || feed.stopping() {
                    capability = None;
                } else {
                    epoch += 1;
                    cap.downgrade(&epoch);
                    activator.activate();
                }
            }
        })
    }
}

/// A JSON Lines output file shared by the workers of a process.
pub struct FileOutput {
    path: PathBuf,
    partial: PathBuf,
    writer: Mutex<Option<BufWriter<File>>>,
}

impl FileOutput {
    /// Prepares `path`. With `lazy`, the file is created at the first write
    /// (dead letters: no file when there are none); any file already at
    /// `path` from an earlier run is removed now, so what is there after the
    /// run is this run's.
    pub fn create(path: &Path, lazy: bool) -> Result<FileOutput, FileError> {
        create_parent(path)?;
        let output = FileOutput::new(path);
        output.prepare(lazy)?;
        Ok(output)
    }

    /// An output at `path` that touches nothing yet; call
    /// [`FileOutput::prepare`] before the first write. A cluster does this
    /// after its start-up checks, so a cluster that refuses to start leaves
    /// earlier outputs as they were.
    pub fn new(path: &Path) -> FileOutput {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        FileOutput {
            path: path.to_owned(),
            partial: PathBuf::from(partial),
            writer: Mutex::new(None),
        }
    }

    /// Removes a file left at the path by an earlier run and, unless `lazy`,
    /// opens the output now.
    pub fn prepare(&self, lazy: bool) -> Result<(), FileError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(FileError::Create {
                    path: self.path.clone(),
                    source: e,
                })
            }
            _ => {}
        }
        if !lazy {
            self.open()?;
        }
        Ok(())
    }

    fn open(&self) -> Result<(), FileError> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if writer.is_none() {
            create_parent(&self.path)?;
            let file = File::create(&self.partial).map_err(|source| FileError::Create {
                path: self.partial.clone(),
                source,
            })?;
            *writer = Some(BufWriter::with_capacity(1 << 20, file));
        }
        Ok(())
    }

    fn failed(&self, what: &'static str) -> impl FnOnce(std::io::Error) -> FileError + '_ {
        move |source| FileError::Write {
            what,
            path: self.partial.clone(),
            source,
        }
    }

    /// Appends whole lines.
    pub fn write(&self, lines: &[u8]) -> Result<(), FileError> {
        self.open()?;
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        writer
            .as_mut()
            .expect("opened above")
            .write_all(lines)
            .map_err(self.failed("write"))
    }

    /// Flushes and publishes the file under its final name. Returns whether a
    /// file was written.
    pub fn finish(&self) -> Result<bool, FileError> {
        if !self.flush()? {
            return Ok(false);
        }
        std::fs::rename(&self.partial, &self.path).map_err(|source| FileError::Rename {
            from: self.partial.clone(),
            to: self.path.clone(),
            source,
        })?;
        Ok(true)
    }

    /// Flushes what was written and leaves it as `PATH.partial`, never
    /// under the final name: the run did not reach the end of its input (a
    /// signal stopped it). Returns the `.partial` file, if one was written.
    pub fn keep_partial(&self) -> Result<Option<&Path>, FileError> {
        Ok(self.flush()?.then_some(self.partial.as_path()))
    }

    /// Writes out and syncs the `.partial` file, closing it; whether there
    /// was one.
    fn flush(&self) -> Result<bool, FileError> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = writer.take() else {
            return Ok(false);
        };
        let file = w
            .into_inner()
            .map_err(|e| self.failed("write")(e.into_error()))?;
        file.sync_data().map_err(self.failed("sync"))?;
        Ok(true)
    }

    /// Where the file is published when the run succeeds.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates the folder `path` is in, if it has one and it is missing.
pub fn create_parent(path: &Path) -> Result<(), FileError> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => std::fs::create_dir_all(parent).map_err(|source| FileError::Create {
            path: path.to_owned(),
            source,
        }),
        None => Ok(()),
    }
}

/// The file process `process` of a cluster writes in place of `path`:
/// `PATH.d/part-PPPPP.jsonl`, the process index zero-padded so parts sort.
pub fn part_path(path: &Path, process: usize) -> PathBuf {
    part_dir(path).join(format!("part-{process:05}.jsonl"))
}

/// The folder of [`part_path`]'s parts: `PATH.d`.
pub fn part_dir(path: &Path) -> PathBuf {
    let mut dir = path.as_os_str().to_owned();
    dir.push(".d");
    PathBuf::from(dir)
}

/// Removes parts (and unfinished `.partial` parts) numbered `processes` or
/// more from `path`'s part folder: left by an earlier run of a larger
/// cluster, they would otherwise read as this run's. No process of this run
/// writes them, so every process may do this at once.
pub fn remove_stale_parts(path: &Path, processes: usize) -> Result<(), FileError> {
    let dir = part_dir(path);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(FileError::Create { path: dir, source }),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(index) = name
            .to_str()
            .and_then(|n| n.strip_prefix("part-"))
            .and_then(|n| n.strip_suffix(".partial").or(Some(n)))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if index >= processes {
            match std::fs::remove_file(entry.path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(FileError::Create {
                        path: entry.path(),
                        source: e,
                    })
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Chunk size at which a worker hands its lines to the shared file.
const CHUNK: usize = 1 << 20;

/// Writes outputs (scored applications, or a clean stage's feature rows) and
/// dead letters as JSON Lines.
pub struct FileSink {
    /// Where outputs go (shared by the process's workers).
    pub scored: Arc<FileOutput>,
    /// Where dead letters go (shared by the process's workers).
    pub dead: Arc<FileOutput>,
    /// How a scored application is written.
    pub format: OutputFormat,
    /// The run's counters and first fault.
    pub stats: Arc<Stats>,
}

impl Sink for FileSink {
    fn build<'s>(self: Box<Self>, scored: Outputs<'s>, dead: Deads<'s>) -> Written<'s> {
        let FileSink {
            scored: scored_out,
            dead: dead_out,
            format,
            stats,
        } = *self;
        scored.binary_frontier::<_, CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
            dead,
            Pipeline,
            Pipeline,
            "FileSink",
            move |_, _| {
                let mut lines = Vec::with_capacity(CHUNK + 4096);
                let mut dead_lines = Vec::new();
                let mut tap = Tap::new();
                let write = |out: &FileOutput, buf: &mut Vec<u8>, force: bool, stats: &Stats| {
                    if !buf.is_empty() && (force || buf.len() >= CHUNK) {
                        if let Err(e) = out.write(buf) {
                            stats.fail(Fault::fatal(e.to_string()));
                        }
                        buf.clear();
                    }
                };
                // What the inputs' frontiers were at the last write.
                let mut written_through: Vec<Epoch> = Vec::new();
                move |(scored, scored_frontier), (dead, dead_frontier), _output| {
                    let mut tally = Tally::default();
                    let now = now_ns();
                    scored.for_each(|_, batch| {
                        for s in batch.drain(..) {
                            format.write(&s, now, &mut lines);
                            lines.push(b'\n');
                            tally.count(&s);
                            tap.see(&s, now);
                        }
                    });
                    dead.for_each(|_, batch| {
                        for d in batch.drain(..) {
                            dead_lines.extend_from_slice(&d.to_json());
                            dead_lines.push(b'\n');
                            tally.dead_letters += 1;
                        }
                    });
                    stats.outputs(tally);
                    tap.flush();
                    // Written out (to the shared file's buffer, flushed
                    // when the run publishes) whenever an epoch completes:
                    // what the `done` probe calls delivered is then never
                    // only in this operator, even if the dataflow is
                    // dropped (a stopped window run).
                    let frontier: Vec<Epoch> = scored_frontier
                        .frontier()
                        .iter()
                        .chain(dead_frontier.frontier().iter())
                        .copied()
                        .collect();
                    let moved = frontier != written_through;
                    if moved {
                        written_through = frontier;
                    }
                    write(&scored_out, &mut lines, moved, &stats);
                    write(&dead_out, &mut dead_lines, moved, &stats);
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CSV with a CRLF header, an empty line, a CRLF line and no final
    /// line end: every shape of line end a split can fall next to.
    const TEXT: &str = "id,x\r\na,1\nbb,22\r\n\nccc,333\nd,4";

    fn input() -> (tempfile::TempDir, FileInput) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, TEXT).unwrap();
        let input = FileInput::open(&path, Format::Csv).unwrap();
        (dir, input)
    }

    fn read(input: &FileInput, range: Range<usize>) -> Vec<(u64, String)> {
        input
            .lines(range)
            .map(|(n, b)| (n, String::from_utf8(b.to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn the_records_are_every_line_after_the_header_without_line_ends() {
        let (_dir, input) = input();
        assert_eq!(input.header(), Some(b"id,x".as_slice()));
        let expected: Vec<(u64, String)> = [
            (2, "a,1"),
            (3, "bb,22"),
            (4, ""),
            (5, "ccc,333"),
            (6, "d,4"),
        ]
        .into_iter()
        .map(|(n, l)| (n, l.to_owned()))
        .collect();
        assert_eq!(read(&input, input.records()), expected);
    }

    /// Cut the records at any two byte positions (at, before and after
    /// every line end): the three ranges read every line exactly once, in
    /// order, with its line number.
    #[test]
    fn any_split_reads_every_line_once() {
        let (_dir, input) = input();
        let all = read(&input, input.records());
        let (start, end) = (input.records().start, input.records().end);
        for a in start..=end {
            for b in a..=end {
                let mut got = read(&input, start..a);
                got.extend(read(&input, a..b));
                got.extend(read(&input, b..end));
                assert_eq!(got, all, "split at {a} and {b}");
            }
        }
    }

    /// The shares workers take ([`FileInput::share`]) cover the file for
    /// any worker count, more workers than lines included.
    #[test]
    fn the_workers_shares_read_every_line_once() {
        let (_dir, input) = input();
        let all = read(&input, input.records());
        for peers in 1..=12 {
            let mut got: Vec<(u64, String)> = (0..peers)
                .flat_map(|w| read_striped(&input, input.share(w, peers)))
                .collect();
            got.sort();
            assert_eq!(got, all, "{peers} workers");
        }
    }

    fn read_striped(input: &FileInput, stripes: Vec<Range<usize>>) -> Vec<(u64, String)> {
        let mut cursor = input.striped_cursor(stripes);
        let mut lines = Vec::new();
        while let Some((line, range)) = cursor.next_line(&input.data) {
            lines.push((line, String::from_utf8(input.data[range].to_vec()).unwrap()));
        }
        lines
    }

    /// A CSV of at least `bytes` bytes whose lines vary in length (up to
    /// `widest` bytes of padding), opened; and its count of records.
    fn long_csv(bytes: usize, widest: usize) -> (tempfile::TempDir, FileInput, usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.csv");
        let mut text = String::from("id,x\n");
        let mut n = 0;
        while text.len() < bytes {
            text.push_str(&format!("r{n},{}\n", "y".repeat(n % widest)));
            n += 1;
        }
        std::fs::write(&path, &text).unwrap();
        let input = FileInput::open(&path, Format::Csv).unwrap();
        (dir, input, n)
    }

    /// Workers reading their stripes side by side give the mapping back
    /// behind them only once every reader passed it, and what was given
    /// back reads the same again (module doc, "Memory").
    #[test]
    fn pages_every_reader_passed_are_given_back_and_read_the_same_again() {
        let (_dir, input, _) = long_csv(3 * RELEASE_STEP + 12_345, 61);
        let all = read(&input, input.records());
        let released = |input: &FileInput| input.released.lock().unwrap().to;
        let peers = 2;
        let mut cursors: Vec<StripedCursor> = (0..peers)
            .map(|w| input.striped_cursor(input.share(w, peers)))
            .collect();
        let mut got = Vec::new();
        let mut done = [false; 2];
        // Worker 0 alone says where it is: nothing is given back.
        input.passed(0, peers, 2 * RELEASE_STEP);
        assert_eq!(released(&input), 0, "worker 1 has not said where it is");
        input.released.lock().unwrap().at.clear();
        while !done.iter().all(|d| *d) {
            for (w, cursor) in cursors.iter_mut().enumerate() {
                for _ in 0..500 {
                    match cursor.next_line(&input.data) {
                        Some((line, range)) => {
                            got.push((line, String::from_utf8(input.data[range].to_vec()).unwrap()))
                        }
                        None => {
                            done[w] = true;
                            break;
                        }
                    }
                }
                let at = if done[w] {
                    usize::MAX
                } else {
                    cursor.position()
                };
                input.passed(w, peers, at);
                assert!(
                    released(&input) <= least_passed(&input),
                    "nothing is given back that a reader has not passed"
                );
            }
        }
        got.sort();
        assert_eq!(got, all);
        assert_eq!(
            released(&input),
            input.data.len() / RELEASE_STEP * RELEASE_STEP,
            "every whole step given back at the end"
        );
        assert!(released(&input) >= 3 * RELEASE_STEP);
        // Given back, and read again: the same lines.
        assert_eq!(read(&input, input.records()), all);
    }

    /// The least position the readers have said.
    fn least_passed(input: &FileInput) -> usize {
        let released = input.released.lock().unwrap();
        released.at.iter().map(|(_, at)| *at).min().unwrap_or(0)
    }

    /// A worker reads its stripes in file order, numbering lines as the
    /// file does, and counts the bytes of the lines it read.
    #[test]
    fn stripes_are_read_in_order_with_the_files_line_numbers() {
        let (_dir, input, n) = long_csv(3 * STRIPE + 100, 97);
        let all = read(&input, input.records());
        assert_eq!(all.len(), n);
        for peers in [1, 2, 3] {
            let mut union = Vec::new();
            let mut bytes = 0;
            for w in 0..peers {
                let stripes = input.share(w, peers);
                assert!(stripes.len() > 1, "{peers} workers: several stripes each");
                let mut cursor = input.striped_cursor(stripes);
                let mut mine = Vec::new();
                while let Some((line, range)) = cursor.next_line(&input.data) {
                    mine.push((line, String::from_utf8(input.data[range].to_vec()).unwrap()));
                }
                assert!(mine.windows(2).all(|p| p[0].0 < p[1].0), "in file order");
                bytes += cursor.read();
                union.extend(mine);
            }
            union.sort();
            assert_eq!(union, all, "{peers} workers");
            assert_eq!(
                bytes as u64,
                input.data_len(),
                "{peers} workers: bytes read"
            );
        }
    }

    #[test]
    fn formats_follow_the_extension_and_an_explicit_one_wins() {
        assert_eq!(format_of(Path::new("a.CSV")), Some(Format::Csv));
        assert_eq!(format_of(Path::new("a.ndjson")), Some(Format::Jsonl));
        assert_eq!(format_of(Path::new("a.txt")), None);
        assert_eq!(
            detect_format(Path::new("a.txt"), Some(Format::Jsonl)).unwrap(),
            Format::Jsonl
        );
        assert!(detect_format(Path::new("a"), None)
            .unwrap_err()
            .to_string()
            .contains("--format csv|jsonl"));
    }

    /// A file source opens epoch `e` only once what it is paced by passed
    /// `e - reach.epochs` ([`Progress::reach`]): held at epoch 0 it reads
    /// epochs `0 ..= reach.epochs` and waits; moved on, it reads that far
    /// past it; let go, it reads every record once.
    #[test]
    fn a_file_source_reads_no_further_than_its_reach_past_what_paces_it() {
        use std::cell::RefCell;
        use std::rc::Rc;
        use std::sync::atomic::AtomicBool;
        use std::time::{Duration, Instant};

        use timely::dataflow::operators::{Input, Inspect, Probe};
        use timely::dataflow::ProbeHandle;

        use crate::io::Reach;

        for reach in [Reach::WINDOW_INTAKE, Reach::SINKS] {
            let (_dir, input, n) = long_csv(4096, 8);
            let input = Arc::new(input);
            timely::execute_directly(move |worker| {
                let paced_by = ProbeHandle::<Epoch>::new();
                let seen = Rc::new(RefCell::new((0usize, None::<Epoch>)));
                let source = Box::new(FileSource {
                    input: Arc::clone(&input),
                    progress: None,
                    feed: Feed {
                        batch: 1,
                        stats: Arc::new(Stats::default()),
                        stop: Arc::new(AtomicBool::new(false)),
                    },
                    readers: 1,
                });
                let seen_by = Rc::clone(&seen);
                let mut gate = worker.dataflow::<Epoch, _, _>(|scope| {
                    let (gate, held) = scope.new_input::<Vec<()>>();
                    held.probe_with(&paced_by);
                    let progress = Progress {
                        delivered: paced_by.clone(),
                        read: paced_by.clone(),
                        reach,
                    };
                    source.build(scope, progress).inspect_core(move |event| {
                        if let Ok((stamp, records)) = event {
                            let mut seen = seen_by.borrow_mut();
                            seen.0 += records.len();
                            seen.1 = seen.1.max(stamp.least().copied());
                        }
                    });
                    gate
                });
                // Steps for a while (the source looks again after `recheck`).
                let settle = |worker: &mut timely::worker::Worker| {
                    let until = Instant::now() + Duration::from_millis(50);
                    while Instant::now() < until {
                        worker.step_or_park(Some(Duration::from_millis(1)));
                    }
                };
                settle(worker);
                assert_eq!(seen.borrow().1, Some(reach.epochs), "{reach:?}, held at 0");
                gate.advance_to(3);
                settle(worker);
                assert_eq!(
                    seen.borrow().1,
                    Some(3 + reach.epochs),
                    "{reach:?}, held at 3"
                );
                drop(gate);
                while worker.step_or_park(Some(Duration::from_millis(1))) {}
                assert_eq!(seen.borrow().0, n, "{reach:?}: every record, once");
            });
        }
    }
}
