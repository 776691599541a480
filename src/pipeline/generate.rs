//! `loanflow generate`: a larger stream for benchmarks, made by resampling the
//! real applications — never invented values. Each output row is a real row
//! drawn with replacement (seeded ChaCha8, so a seed always gives the same
//! file), with a fresh id `g<seed>-<n>` and an arrival time continuing after
//! the source's last one, the gaps themselves resampled from the real
//! inter-arrival gaps.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

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

enum Output {
    Csv(Box<csv::Writer<Box<dyn Write>>>),
    Json(Box<dyn Write>, Parser),
}

/// Writes `args.rows` resampled applications to `args.output`; returns how many.
pub fn generate(args: &GenerateArgs) -> Result<u64> {
    let spec = Spec::load(&args.pipeline.dataflow)?;
    let mut reader = csv::ReaderBuilder::new()
        .from_path(&args.input)
        .with_context(|| {
            format!(
                "cannot read {} (pass the real applications with --input)",
                args.input.display()
            )
        })?;
    let header = reader.byte_headers()?.clone();
    let position = |name: &str| header.iter().position(|h| h == name.as_bytes());
    let id_name = &spec.columns[spec.id].name;
    let id_at = position(id_name)
        .ok_or_else(|| anyhow!("{} has no id column `{id_name}`", args.input.display()))?;
    let time_at = spec.event_time.map(|i| &spec.columns[i].name).map(|name| {
        position(name)
            .ok_or_else(|| anyhow!("{} has no event-time column `{name}`", args.input.display()))
    });
    let time_at = time_at.transpose()?;
    let rows: Vec<csv::ByteRecord> = reader
        .byte_records()
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot parse {}", args.input.display()))?;
    if rows.is_empty() {
        bail!("{} has no rows to resample", args.input.display());
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
                        anyhow!("{}: row {} has no valid time", args.input.display(), i + 2)
                    })
            })
            .collect::<Result<_>>()?,
        None => Vec::new(),
    };
    let gaps: Vec<i64> = times.windows(2).map(|w| (w[1] - w[0]).max(0)).collect();
    let mut clock = times.iter().copied().max().unwrap_or(0);

    let jsonl = output_format(&args.output) == Format::Jsonl;
    let out: Box<dyn Write> = if args.output == Path::new("-") {
        Box::new(BufWriter::new(std::io::stdout().lock()))
    } else {
        if let Some(parent) = args.output.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        Box::new(BufWriter::with_capacity(
            1 << 20,
            File::create(&args.output)
                .with_context(|| format!("cannot write {}", args.output.display()))?,
        ))
    };
    let mut header_line = csv::Writer::from_writer(Vec::new());
    header_line.write_byte_record(&header)?;
    let header_line = header_line.into_inner().map_err(|e| anyhow!("{e}"))?;
    // JSON Lines: type each row with the spec, exactly as ingest will read it back.
    let mut sink = if jsonl {
        let parser = Parser::new(
            &spec,
            Format::Csv,
            Some(header_line.trim_ascii_end()),
            "generate",
            usize::MAX,
        )?;
        Output::Json(out, parser)
    } else {
        let mut csv_out = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(out);
        csv_out.write_byte_record(&header)?;
        Output::Csv(Box::new(csv_out))
    };

    let progress = progress_bar(args.rows, args.quiet);
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut json = Vec::with_capacity(1024);
    for n in 0..args.rows {
        let source = &rows[rng.gen_range(0..rows.len())];
        if !gaps.is_empty() {
            clock += gaps[rng.gen_range(0..gaps.len())];
        }
        let id = format!("g{}-{n:010}", args.seed);
        let time = format_time(clock);
        let row: csv::ByteRecord = source
            .iter()
            .enumerate()
            .map(|(i, field)| {
                if i == id_at {
                    id.as_bytes()
                } else if Some(i) == time_at {
                    time.as_bytes()
                } else {
                    field
                }
            })
            .collect();
        match &mut sink {
            Output::Csv(csv_out) => csv_out.write_byte_record(&row)?,
            Output::Json(out, parser) => {
                let mut line = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(Vec::new());
                line.write_byte_record(&row)?;
                let bytes = line.into_inner().map_err(|e| anyhow!("{e}"))?;
                let record = parser
                    .parse(RawRecord {
                        read_at: 0,
                        bytes: bytes.trim_ascii_end().to_vec(),
                        origin: Origin::File {
                            path: "generate".into(),
                            line: n + 2,
                        },
                    })
                    .map_err(|d| anyhow!("a source row does not fit the spec: {}", d.reason))?;
                json.clear();
                write_record_json(&spec.columns, &record.values, &mut json);
                json.push(b'\n');
                out.write_all(&json)?;
            }
        }
        if let Some(bar) = &progress {
            if n % 4096 == 0 {
                bar.set_position(n);
            }
        }
    }
    match &mut sink {
        Output::Csv(w) => w.flush(),
        Output::Json(w, _) => w.flush(),
    }
    .with_context(|| format!("cannot write {}", args.output.display()))?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(args.rows)
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
