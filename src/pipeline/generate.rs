//! `loanflow generate`: a larger stream for benchmarks, made by resampling the
//! real applications — never invented values. Each output row is a real row
//! drawn with replacement (seeded ChaCha8, so a seed always gives the same
//! file), with a fresh id `g<seed>-<n>` and an arrival time continuing after
//! the source's last one, the gaps themselves resampled from the real
//! inter-arrival gaps (times `--gap-scale`, for denser streams). A stream
//! whose times would pass 2262, the last a nanosecond clock holds, is an
//! error before a row is written, never a clock that wraps around to 1677.
//! With `--shift-at T` the mix shifts at event time
//! `T`, synthetically, for trying the monitor: from then on each row is the
//! worse `sub_grade` of two draws, its `int_rate` 3 points higher (the only
//! values generate alters). The file is written as `PATH.partial` and renamed to
//! `PATH` once every row is written: one stopped by a signal (or failed)
//! never looks complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::progress::progress_bar;
use crate::cli::GenerateArgs;
use crate::core::record::{format_time, parse_time, write_record_json, Format, Origin, RawRecord};
use crate::dataflow::ingest::Parser;
use crate::io::file::format_of;
use crate::spec::Spec;

/// The format `generate` writes to `output`: JSON Lines where the extension
/// says so (as `run` would read it back: `.jsonl`, `.ndjson`, `.json`),
/// else CSV (`-`, stdout, is CSV).
pub fn output_format(output: &Path) -> Format {
    if output == Path::new("-") {
        return Format::Csv;
    }
    format_of(output).unwrap_or(Format::Csv)
}

/// The real applications to resample: the source's rows, where its id and
/// event time are, and the gaps between its arrival times.
struct Source {
    header: csv::ByteRecord,
    rows: Vec<csv::ByteRecord>,
    id_at: usize,
    time_at: Option<usize>,
    /// Gaps between consecutive arrival times (ns), to resample.
    gaps: Vec<i64>,
    /// The source's last arrival time (ns): the generated ones continue after it.
    last: i64,
    /// With `--shift-at`: from when, and where `sub_grade` and `int_rate` are.
    shift: Option<Shift>,
}

/// `--shift-at`'s synthetic drift: from `at` on, each row is the worse
/// `sub_grade` of two draws ("A1" < … < "G5" as text), its `int_rate` 3
/// points higher.
#[derive(Debug, Clone, Copy)]
struct Shift {
    at: i64,
    grade_at: usize,
    rate_at: usize,
}

impl Source {
    /// Reads `path`, a CSV of applications that `spec` describes.
    fn read(spec: &Spec, path: &Path, shift_at: Option<i64>, gap_scale: f64) -> Result<Source> {
        let mut reader = csv::ReaderBuilder::new().from_path(path).with_context(|| {
            format!(
                "cannot read {} (pass the real applications with --input)",
                path.display()
            )
        })?;
        let header = reader.byte_headers()?.clone();
        let position = |name: &str| header.iter().position(|h| h == name.as_bytes());
        let id_name = &spec.columns[spec.id].name;
        let id_at = position(id_name)
            .ok_or_else(|| anyhow!("{} has no id column `{id_name}`", path.display()))?;
        let time_at = spec.event_time.map(|i| &spec.columns[i].name).map(|name| {
            position(name)
                .ok_or_else(|| anyhow!("{} has no event-time column `{name}`", path.display()))
        });
        let time_at = time_at.transpose()?;
        let rows: Vec<csv::ByteRecord> = reader
            .byte_records()
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot parse {}", path.display()))?;
        if rows.is_empty() {
            bail!("{} has no rows to resample", path.display());
        }
        // Arrival times of the source, and the gaps between them.
        let times: Vec<i64> = match time_at {
            Some(at) => rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    std::str::from_utf8(&r[at])
                        .ok()
                        .and_then(parse_time)
                        .ok_or_else(|| {
                            anyhow!("{}: row {} has no valid time", path.display(), i + 2)
                        })
                })
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        let shift = match shift_at {
            None => None,
            Some(at) => {
                let column = |name: &str| {
                    position(name).ok_or_else(|| {
                        anyhow!(
                            "--shift-at needs a `{name}` column, which {} has not",
                            path.display()
                        )
                    })
                };
                if time_at.is_none() {
                    bail!("--shift-at needs the spec's event_time");
                }
                Some(Shift {
                    at,
                    grade_at: column("sub_grade")?,
                    rate_at: column("int_rate")?,
                })
            }
        };
        Ok(Source {
            shift,
            gaps: times
                .windows(2)
                .map(|w| (w[1] - w[0]).max(0))
                .map(|gap| match gap_scale {
                    1.0 => gap,
                    f => (gap as f64 * f).round() as i64,
                })
                .collect(),
            last: times.iter().copied().max().unwrap_or(0),
            header,
            rows,
            id_at,
            time_at,
        })
    }

    /// Row `n` of the stream: a real row drawn by `rng`, with a fresh id
    /// and the next arrival time.
    fn draw(
        &self,
        rng: &mut ChaCha8Rng,
        seed: u64,
        n: u64,
        clock: &mut i64,
    ) -> Result<csv::ByteRecord> {
        let mut source = &self.rows[rng.gen_range(0..self.rows.len())];
        if !self.gaps.is_empty() {
            let gap = self.gaps[rng.gen_range(0..self.gaps.len())];
            *clock = clock.checked_add(gap).ok_or_else(|| {
                anyhow!(
                    "row {} would be after 2262-04-11, the last time a nanosecond clock holds: ask for fewer --rows, or a smaller --gap-scale",
                    n + 1
                )
            })?;
        }
        let shifted = self.shift.filter(|s| *clock >= s.at);
        let mut rate = String::new();
        if let Some(s) = shifted {
            let other = &self.rows[rng.gen_range(0..self.rows.len())];
            if other[s.grade_at] > source[s.grade_at] {
                source = other;
            }
            rate = std::str::from_utf8(&source[s.rate_at])
                .ok()
                .and_then(|r| r.parse::<f64>().ok())
                .map_or_else(
                    || String::from_utf8_lossy(&source[s.rate_at]).into_owned(),
                    |r| format!("{:.2}", r + 3.0),
                );
        }
        let id = format!("g{seed}-{n:010}");
        let time = format_time(*clock);
        Ok(source
            .iter()
            .enumerate()
            .map(|(i, field)| {
                if i == self.id_at {
                    id.as_bytes()
                } else if Some(i) == self.time_at {
                    time.as_bytes()
                } else if shifted.is_some_and(|s| s.rate_at == i) {
                    rate.as_bytes()
                } else {
                    field
                }
            })
            .collect())
    }

    /// An error before anything is written if `rows` rows would, on
    /// average, carry the clock past the last time it holds.
    fn check_span(&self, rows: u64) -> Result<()> {
        if self.gaps.is_empty() {
            return Ok(());
        }
        let mean = self.gaps.iter().map(|g| *g as f64).sum::<f64>() / self.gaps.len() as f64;
        let needed = mean * rows as f64;
        let room = (i64::MAX - self.last) as f64;
        if needed > room {
            // Two significant digits, with room to spare.
            let scale = format!("{:.1e}", room / needed * 0.9);
            let scale = scale.parse::<f64>().map_or(scale, |f| f.to_string());
            bail!(
                "--rows {rows} at one application per {:.0} s on average would run past 2262-04-11, the last time a nanosecond clock holds (from {}): ask for fewer rows, or pack them closer with --gap-scale {scale}",
                mean / 1e9,
                format_time(self.last),
            );
        }
        Ok(())
    }
}

/// Where the generated rows go: CSV as they are, or JSON Lines typed by the
/// spec exactly as ingest will read them back.
enum Output {
    Csv(Box<csv::Writer<Box<dyn Write>>>),
    Json(Box<dyn Write>, Parser, Vec<u8>),
}

impl Output {
    /// The output `path` names (`-`: stdout), written at `partial` (a file
    /// output's `.partial`), its header written for CSV.
    fn create(
        spec: &Spec,
        path: &Path,
        partial: Option<&Path>,
        header: &csv::ByteRecord,
    ) -> Result<Output> {
        let out: Box<dyn Write> = match partial {
            None => Box::new(BufWriter::new(std::io::stdout().lock())),
            Some(partial) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
                Box::new(BufWriter::with_capacity(
                    1 << 20,
                    File::create(partial)
                        .with_context(|| format!("cannot write {}", partial.display()))?,
                ))
            }
        };
        if output_format(path) == Format::Csv {
            let mut csv_out = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(out);
            csv_out.write_byte_record(header)?;
            return Ok(Output::Csv(Box::new(csv_out)));
        }
        let header_line = csv_line(header)?;
        let parser = Parser::new(
            spec,
            Format::Csv,
            Some(header_line.trim_ascii_end()),
            "generate",
            usize::MAX,
        )?;
        Ok(Output::Json(out, parser, Vec::with_capacity(1024)))
    }

    /// Writes row `n` (its line number counts a header).
    fn write(&mut self, spec: &Spec, row: &csv::ByteRecord, n: u64) -> Result<()> {
        match self {
            Output::Csv(csv_out) => csv_out.write_byte_record(row)?,
            Output::Json(out, parser, json) => {
                let record = parser
                    .parse(RawRecord {
                        read_at: 0,
                        bytes: csv_line(row)?.trim_ascii_end().to_vec(),
                        origin: Origin::File {
                            path: "generate".into(),
                            line: n + 2,
                        },
                    })
                    .map_err(|d| anyhow!("a source row does not fit the spec: {}", d.reason))?;
                json.clear();
                write_record_json(&spec.columns, &record.values, json);
                json.push(b'\n');
                out.write_all(json)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Csv(w) => w.flush(),
            Output::Json(w, _, _) => w.flush(),
        }
    }
}

/// One CSV line (with its line end) holding `row`.
fn csv_line(row: &csv::ByteRecord) -> Result<Vec<u8>> {
    let mut line = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    line.write_byte_record(row)?;
    line.into_inner().map_err(|e| anyhow!("{e}"))
}

/// What `generate` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Rows written.
    pub rows: u64,
    /// Where: the output, or its `.partial` if `stop` cut the writing short.
    pub path: PathBuf,
    /// Stopped (a signal) before every row was written.
    pub interrupted: bool,
}

/// Writes `args.rows` resampled applications to `args.output` (through
/// `OUTPUT.partial`), or fewer if `stop` is set meanwhile (the file then
/// stays `.partial`).
pub fn generate(args: &GenerateArgs, stop: &AtomicBool) -> Result<Generated> {
    let spec = Spec::load(&args.pipeline.dataflow)?;
    let source = Source::read(&spec, &args.input, args.shift_at, args.gap_scale)?;
    source.check_span(args.rows)?;
    let partial = (args.output != Path::new("-")).then(|| {
        let mut p = args.output.as_os_str().to_owned();
        p.push(".partial");
        PathBuf::from(p)
    });
    let mut output = Output::create(&spec, &args.output, partial.as_deref(), &source.header)?;
    let progress = progress_bar(args.rows, args.quiet);
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut clock = source.last;
    let mut rows = 0;
    for n in 0..args.rows {
        if n % 4096 == 0 && stop.load(Ordering::Relaxed) {
            break;
        }
        rows += 1;
        let row = source.draw(&mut rng, args.seed, n, &mut clock)?;
        output.write(&spec, &row, n)?;
        if let Some(bar) = &progress {
            if n % 4096 == 0 {
                bar.set_position(n);
            }
        }
    }
    let written_to = partial.as_deref().unwrap_or(&args.output);
    output
        .flush()
        .with_context(|| format!("cannot write {}", written_to.display()))?;
    drop(output);
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let interrupted = rows < args.rows;
    let path = match &partial {
        Some(partial) if !interrupted => {
            std::fs::rename(partial, &args.output).with_context(|| {
                format!(
                    "cannot rename {} to {}",
                    partial.display(),
                    args.output.display()
                )
            })?;
            args.output.clone()
        }
        _ => written_to.to_owned(),
    };
    Ok(Generated {
        rows,
        path,
        interrupted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_run_reads_back_by_extension() {
        for (path, format) in [
            ("out/x.csv", Format::Csv),
            ("out/x.jsonl", Format::Jsonl),
            ("out/x.ndjson", Format::Jsonl),
            ("out/x.JSON", Format::Jsonl),
            ("-", Format::Csv),
            ("out/x", Format::Csv),
            ("out/x.txt", Format::Csv),
        ] {
            assert_eq!(output_format(Path::new(path)), format, "{path}");
            // Whatever `run` reads the file as, it is what was written.
            if let Some(read_as) = format_of(Path::new(path)) {
                assert_eq!(read_as, format, "{path}");
            }
        }
    }
}
