//! `iemctl parse`: the parsing pipeline offline, on a file or stdin.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono_tz::Tz;
use iemd::alert::{Alert, Kind, LineSource, OriginKind};
use iemd::catalog::Catalog;
use iemd::catalog::decode::Clock;
use iemd::config::enrich::EnrichConfig;
use iemd::enrich::Enricher;
use iemd::pipeline::DecodeStage;
use iemd::source::identity;
use iemd::source::lines::LineSplitter;
use iemd::source::lines::scan::Candidate;

/// Print the alerts found in syslog lines or `journalctl -o json` lines (detected per line).
///
/// One alert per IEM or malformed-IEM line; lines without an IEM are skipped. A summary (lines,
/// IEMs, malformed) goes to stderr. The exit status is 0 even when malformed lines exist.
///
/// Examples:
///   iemctl parse /var/log/messages
///   journalctl -o json -n 1000 | iemctl parse --format text
///   iemctl parse --year 2025 --tz Europe/Berlin old-messages.log
///   iemctl parse --enrich --format sspl /var/log/messages
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
    /// Add the host identity and the hardware (disks, enclosure slots, NICs) the alerts name.
    #[arg(long)]
    enrich: bool,
    /// With --enrich: read devices from this sysfs tree instead of /sys (e.g. a saved or fake one).
    #[arg(long, value_name = "DIR", requires = "enrich")]
    sysfs_root: Option<PathBuf>,
    /// With --enrich: resolve /dev/disk/by-* and /dev/mapper links under this directory instead of /dev.
    #[arg(long, value_name = "DIR", requires = "enrich")]
    dev_root: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Json,
    Text,
    Sspl,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // The daemon's own lower bound (`sources.files[].max_line_bytes`): below it half a cut line
    // cannot hold the marker, and an IEM past the cut could be missed.
    anyhow::ensure!(
        args.max_line_bytes >= 16,
        "--max-line-bytes must be at least 16 (got {}), as for the daemon's max_line_bytes",
        args.max_line_bytes
    );
    let catalog = Catalog::load(&args.catalog_dirs)?;
    let enricher = match args.enrich {
        false => None,
        true => {
            let mut config = EnrichConfig::default();
            if let Some(root) = args.sysfs_root {
                config.sysfs_root = root;
            }
            if let Some(root) = args.dev_root {
                config.dev_root = root;
            }
            Some(Enricher::new(&config)?)
        }
    };
    // The daemon's own decode -> enrich stage, after the same line splitter its file source uses.
    let stage = DecodeStage::new(&catalog, enricher);
    let (name, mut input): (String, Box<dyn Read>) = match &args.file {
        None => ("-".into(), Box::new(io::stdin().lock())),
        Some(p) if p.as_os_str() == "-" => ("-".into(), Box::new(io::stdin().lock())),
        Some(path) => {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            (path.display().to_string(), Box::new(file))
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

    // Only the lines that may hold an IEM are cut out; the others are counted (`lines::scan`).
    let mut splitter = LineSplitter::new(args.max_line_bytes, 0);
    let mut chunk = vec![0u8; 1 << 16];
    let mut candidates = Vec::new();
    let mut fingerprint = None;
    let (mut lines, mut iems, mut malformed) = (0u64, 0u64, 0u64);
    'read: loop {
        let n = match input.read(&mut chunk) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                let at = splitter.consumed();
                return Err(err).with_context(|| format!("error reading {name} at byte {at}"));
            }
        };
        // The same identity the agent gives a file (its first line), so ids match the agent's.
        let fingerprint = *fingerprint.get_or_insert_with(|| identity::fingerprint(&chunk[..n]).0);
        let read_before = lines;
        let completed = if n == 0 {
            let last = splitter.flush_partial();
            candidates.extend(last.map(|line| Candidate { before: 0, line }));
            candidates.len() as u64
        } else {
            splitter.push_candidates(&chunk[..n], &mut candidates)
        };
        for Candidate { before, line } in candidates.drain(..) {
            // Counted up to this line, as when every line went through here.
            lines = read_before + before + 1;
            let source = LineSource {
                kind,
                path: Some(&name),
                offset: Some(line.start),
                fingerprint,
                truncated: line.truncated,
            };
            let Some(alert) = stage.alert(&line.bytes, &source, &clock) else {
                continue;
            };
            match alert.kind {
                Kind::Malformed => malformed += 1,
                // Only the lifecycle stage makes the other kinds; parse does not run it.
                Kind::Iem | Kind::Escalation | Kind::Summary | Kind::Flap => iems += 1,
            }
            let written = match args.format {
                Format::Json => iemd::alert::encode(&alert)
                    .map_err(io::Error::other)
                    .and_then(|json| out.write_all(&json)),
                Format::Sspl => serde_json::to_writer(&mut out, &iemd::sspl::body(&alert))
                    .map_err(io::Error::from),
                Format::Text => write_text(&mut out, &alert),
            };
            match written.and_then(|()| out.write_all(b"\n")) {
                Ok(()) => {}
                // `iemctl parse big.log | head` is not an error.
                Err(err) if err.kind() == io::ErrorKind::BrokenPipe => break 'read,
                Err(err) => return Err(err).context("cannot write to stdout"),
            }
        }
        lines = read_before + completed;
        if progress && lines / 1_000_000 > read_before / 1_000_000 {
            eprint!("\r{lines} lines, {iems} IEMs, {malformed} malformed");
        }
        if n == 0 {
            break;
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

fn write_text(out: &mut impl Write, alert: &Alert) -> io::Result<()> {
    let name = |n: &Option<iemd::alert::Named>| {
        n.as_ref()
            .map(|n| n.name.as_deref().unwrap_or(&n.id).to_owned())
            .unwrap_or_default()
    };
    match alert.kind {
        Kind::Iem | Kind::Escalation | Kind::Summary | Kind::Flap => write!(
            out,
            "{} {} {:<13} {}/{}: {}",
            alert.time,
            alert.code.as_deref().unwrap_or("-"),
            alert.severity.as_ref().map_or("-", |s| &*s.name),
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
