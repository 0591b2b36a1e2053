//! `iemctl parse`: the parsing pipeline offline, on a file or stdin.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono_tz::Tz;
use iemd::alert::{Alert, Kind, OriginKind};
use iemd::catalog::Catalog;
use iemd::catalog::decode::{Clock, Decoder, LineSource};

/// Print the alerts found in syslog lines or `journalctl -o json` lines (detected per line).
///
/// One alert per IEM or malformed-IEM line; lines without an IEM are skipped. A summary (lines,
/// IEMs, malformed) goes to stderr. The exit status is 0 even when malformed lines exist.
///
/// Examples:
///   iemctl parse /var/log/messages
///   journalctl -o json -n 1000 | iemctl parse --format text
///   iemctl parse --year 2025 --tz Europe/Berlin old-messages.log
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The file to read; `-` or nothing reads stdin.
    file: Option<PathBuf>,
    /// Output: one JSON alert per line (`json`), one readable line per alert (`text`), or the
    /// SSPL sensor-response body of the old platform (`sspl`).
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// The year of RFC 3164 stamps (which carry none). Default: the current year, or the previous
    /// one for a stamp more than a day in the future.
    #[arg(long)]
    year: Option<i32>,
    /// The time zone of RFC 3164 stamps, an IANA name such as `UTC` or `Europe/Berlin`.
    #[arg(long, default_value = "UTC")]
    tz: Tz,
    /// Lines longer than this many bytes are cut; their alert says `truncated: true`.
    #[arg(long, default_value_t = 64 * 1024, value_parser = clap::value_parser!(usize))]
    max_line_bytes: usize,
    /// Extra catalog directories, read after the built-in catalog (repeatable).
    #[arg(long = "catalog-dir")]
    catalog_dirs: Vec<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Json,
    Text,
    Sspl,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.max_line_bytes > 0,
        "--max-line-bytes must be at least 1"
    );
    let catalog = Catalog::load(&args.catalog_dirs)?;
    let decoder = Decoder::new(&catalog);
    let (name, mut input): (String, Box<dyn BufRead>) = match &args.file {
        None => (
            "-".into(),
            Box::new(BufReader::with_capacity(1 << 16, io::stdin().lock())),
        ),
        Some(p) if p.as_os_str() == "-" => (
            "-".into(),
            Box::new(BufReader::with_capacity(1 << 16, io::stdin().lock())),
        ),
        Some(path) => {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            (
                path.display().to_string(),
                Box::new(BufReader::with_capacity(1 << 16, file)),
            )
        }
    };
    let kind = if name == "-" {
        OriginKind::Stdin
    } else {
        OriginKind::File
    };
    let mut clock = Clock::now(args.tz);
    clock.year = args.year;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let progress = io::stderr().is_terminal();

    let mut line = Vec::with_capacity(256);
    let mut offset = 0u64;
    let mut fingerprint = None;
    let (mut lines, mut iems, mut malformed) = (0u64, 0u64, 0u64);
    loop {
        let (consumed, truncated) = read_line_capped(&mut input, &mut line, args.max_line_bytes)
            .with_context(|| format!("error reading {name} at byte {offset}"))?;
        if consumed == 0 {
            break;
        }
        lines += 1;
        let fingerprint = *fingerprint.get_or_insert_with(|| first_line_fingerprint(&line));
        let source = LineSource {
            kind,
            path: Some(&name),
            offset: Some(offset),
            fingerprint,
            truncated,
        };
        offset += consumed as u64;
        let Some(alert) = decoder.decode(&line, &source, &clock) else {
            continue;
        };
        match alert.kind {
            Kind::Iem => iems += 1,
            Kind::Malformed => malformed += 1,
        }
        let written = match args.format {
            Format::Json => serde_json::to_writer(&mut out, &alert).map_err(io::Error::from),
            Format::Sspl => {
                serde_json::to_writer(&mut out, &iemd::sspl::body(&alert)).map_err(io::Error::from)
            }
            Format::Text => write_text(&mut out, &alert),
        };
        match written.and_then(|()| out.write_all(b"\n")) {
            Ok(()) => {}
            // `iemctl parse big.log | head` is not an error.
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => break,
            Err(err) => return Err(err).context("cannot write to stdout"),
        }
        if progress && lines % 1_000_000 == 0 {
            eprint!("\r{lines} lines, {iems} IEMs, {malformed} malformed");
        }
    }
    match out.flush() {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => {
            return Err(err).context("cannot write to stdout");
        }
        _ => {}
    }
    if progress {
        eprint!("\r");
    }
    eprintln!("{name}: {lines} lines, {iems} IEMs, {malformed} malformed");
    Ok(ExitCode::SUCCESS)
}

/// Reads one line into `line` (without its `\n`), keeping at most `max` bytes; the rest of an
/// over-long line is consumed and dropped. Returns the bytes consumed (0 at the end of input) and
/// whether the line was cut. Memory stays bounded by `max` whatever the input.
fn read_line_capped(
    input: &mut dyn BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<(usize, bool)> {
    line.clear();
    let (mut consumed, mut truncated) = (0, false);
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if buf.is_empty() {
            return Ok((consumed, truncated));
        }
        let (chunk, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        let room = max.saturating_sub(line.len());
        truncated |= chunk > room;
        line.extend_from_slice(&buf[..chunk.min(room)]);
        let used = chunk + usize::from(done);
        input.consume(used);
        consumed += used;
        if done {
            return Ok((consumed, truncated));
        }
    }
}

/// The identity of a file independent of its name: a hash of its first line (at most 1 KiB).
fn first_line_fingerprint(first_line: &[u8]) -> u64 {
    let hash = blake3::hash(&first_line[..first_line.len().min(1024)]);
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(bytes)
}

fn write_text(out: &mut impl Write, alert: &Alert) -> io::Result<()> {
    let name = |n: &Option<iemd::alert::Named>| {
        n.as_ref()
            .map(|n| n.name.clone().unwrap_or_else(|| n.id.clone()))
            .unwrap_or_default()
    };
    match alert.kind {
        Kind::Iem => write!(
            out,
            "{} {} {:<13} {}/{}: {}",
            alert.time,
            alert.code.as_deref().unwrap_or("-"),
            alert.severity.as_ref().map_or("-", |s| s.name.as_str()),
            name(&alert.component),
            name(&alert.module),
            alert.message.escape_debug()
        ),
        Kind::Malformed => write!(
            out,
            "{} MALFORMED    ({}) {}",
            alert.time,
            alert.reason.as_deref().unwrap_or("-"),
            alert.raw.escape_debug()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<(Vec<u8>, usize, bool)> {
        let mut reader = BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        let mut line = Vec::new();
        loop {
            let (n, cut) = read_line_capped(&mut reader, &mut line, max).unwrap();
            if n == 0 {
                return out;
            }
            out.push((line.clone(), n, cut));
        }
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_skipped() {
        let got = lines(b"short\nabcdefghijkl\nend", 5);
        assert_eq!(
            got,
            vec![
                (b"short".to_vec(), 6, false),
                (b"abcde".to_vec(), 13, true),
                (b"end".to_vec(), 3, false)
            ]
        );
    }
}
