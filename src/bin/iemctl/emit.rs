//! `iemctl emit`: validate, format and write one IEM (or one per stdin line).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use iem_parsers::iem::{Code, Field};
use iemd::emit::{
    self, DEFAULT_MAX_LENGTH, EmitError, Emitter, Facility, Identity, Record, SyslogFormat,
    Transport,
};

const EXAMPLES: &str = "\
Examples:
  iemctl emit ES0030010001 'S3 server cannot connect to auth server'
  iemctl emit --severity error --source software --component 003 --module 001 --event 0001 \\
      'S3 server cannot connect to auth server'
  iemctl emit --to syslog --facility local3 --json-extra '{\"host\":\"ssc-vm-1\"}' \\
      WS0080010001 'The cluster has lost ssc-vm-1 server'
  tail -F app.log | grep FATAL | iemctl emit ES0030050001 -
  iemctl emit --to stdout ES0030010001 'auth down' | iemctl parse -

Written text: IEC:<code>:<message>[ {json}]. Control characters in the message are escaped
(\\n \\r \\t \\\\ \\xNN \\u{NNNN}) so one emit is always one log record.
Exit status: 0 written; 2 usage or validation error; 3 transport unavailable.";

/// Validate an IEM code and message and write them to journald, syslog or stdout.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    // Boxed: the options would make `iemctl`'s subcommand enum lopsided.
    #[command(flatten)]
    options: Box<Options>,
}

#[derive(clap::Args)]
struct Options {
    /// `CODE MESSAGE`, or just `MESSAGE` with --severity/--source/--component/--module/--event.
    /// MESSAGE `-` reads one message per line from stdin, each its own record (blank lines are
    /// skipped). Put `--` before a message that starts with `-`.
    #[arg(value_name = "CODE] [MESSAGE", num_args = 1..=2, required = true)]
    args: Vec<String>,
    /// Severity, letter or name (A alert, X critical, E error, W warning, N notice,
    /// C configuration, I informational, D detail, B debug).
    #[arg(long)]
    severity: Option<String>,
    /// Source, letter or name (H hardware, S software, F firmware, O os).
    #[arg(long)]
    source: Option<String>,
    /// Component number, hex, 001..100.
    #[arg(long)]
    component: Option<String>,
    /// Module number, hex, 001..100.
    #[arg(long)]
    module: Option<String>,
    /// Event number, hex, 0001..2710.
    #[arg(long)]
    event: Option<String>,
    /// Syslog tag / SYSLOG_IDENTIFIER [default: the parent process's name].
    #[arg(long)]
    tag: Option<String>,
    /// Pid written with the record [default: the parent process's pid].
    #[arg(long)]
    pid: Option<u32>,
    /// A JSON object appended (compacted to one line) after the message.
    #[arg(long, value_name = "JSON")]
    json_extra: Option<String>,
    /// Where to write: journald (native protocol), syslog (/dev/log), stdout (the line a syslog
    /// file would hold), or auto (journald when its socket exists, else syslog).
    #[arg(long, value_enum, default_value = "auto")]
    to: To,
    /// The socket to write to, instead of /run/systemd/journal/socket or /dev/log
    /// (with --to journald or --to syslog).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Syslog datagram format: rfc3164 is what syslog(3) sends to /dev/log (no host name), the
    /// only form journald and rsyslog's default /dev/log parser read; rfc5424 for readers set up
    /// for it.
    #[arg(long, value_enum, default_value = "rfc3164")]
    syslog_format: Format,
    /// Syslog facility name (kern, user, daemon, local0..local7, ...).
    #[arg(long, default_value = "user")]
    facility: String,
    /// Maximum message length in bytes, after escaping.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LENGTH)]
    max_length: usize,
    /// Refuse (exit 2) a code the catalog does not know, instead of warning.
    #[arg(long)]
    strict: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum To {
    Auto,
    Journald,
    Syslog,
    Stdout,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Rfc3164,
    Rfc5424,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match emit_all(args) {
        Ok(status) => Ok(ExitCode::from(status)),
        Err(err) => {
            eprintln!("iemctl emit: {err}");
            Ok(ExitCode::from(err.exit_code()))
        }
    }
}

/// The validated command line.
struct Plan {
    code: Code,
    message: String,
    extra: Option<String>,
    identity: Identity,
    transport: Transport,
    max_length: usize,
    strict: bool,
}

fn usage(field: &'static str, reason: &str) -> EmitError {
    EmitError::Field {
        field,
        value: String::new(),
        reason: reason.to_string(),
    }
}

fn plan(args: Options) -> Result<Plan, EmitError> {
    let parts = [
        &args.severity,
        &args.source,
        &args.component,
        &args.module,
        &args.event,
    ];
    let (code, message) = if parts.iter().any(|p| p.is_some()) {
        let (Some(severity), Some(source), Some(component), Some(module), Some(event), [message]) = (
            &args.severity,
            &args.source,
            &args.component,
            &args.module,
            &args.event,
            args.args.as_slice(),
        ) else {
            return Err(usage(
                "arguments",
                "with --severity/--source/--component/--module/--event, give all five and \
                 only MESSAGE (no CODE)",
            ));
        };
        let code = Code {
            severity: emit::parse_severity(severity)?,
            source: emit::parse_source(source)?,
            component: emit::parse_field(Field::Component, component)?,
            module: emit::parse_field(Field::Module, module)?,
            event: emit::parse_field(Field::Event, event)?,
        };
        (code, message.clone())
    } else {
        let [code, message] = args.args.as_slice() else {
            return Err(usage("arguments", "expected CODE MESSAGE"));
        };
        (emit::parse_code(code)?, message.clone())
    };

    let extra = args
        .json_extra
        .as_deref()
        .map(emit::compact_json_object)
        .transpose()?;
    let parent = Identity::parent();
    let identity = match (&args.tag, args.pid) {
        (None, None) => parent,
        (tag, pid) => Identity::new(
            tag.as_deref().unwrap_or(&parent.tag),
            pid.unwrap_or(parent.pid),
        )?,
    };
    let facility = Facility::from_name(&args.facility).ok_or_else(|| EmitError::Field {
        field: "facility",
        value: args.facility.clone(),
        reason: format!(
            "expected one of {}",
            Facility::names().collect::<Vec<_>>().join(", ")
        ),
    })?;
    let format = match args.syslog_format {
        Format::Rfc5424 => SyslogFormat::Rfc5424,
        Format::Rfc3164 => SyslogFormat::Rfc3164,
    };
    let transport = match (args.to, args.socket) {
        (To::Journald, socket) => Transport::Journald {
            socket: socket.unwrap_or_else(|| emit::JOURNAL_SOCKET.into()),
        },
        (To::Syslog, socket) => Transport::Syslog {
            socket: socket.unwrap_or_else(|| emit::SYSLOG_SOCKET.into()),
            format,
            facility,
        },
        (To::Stdout, None) => Transport::Stdout,
        (To::Auto, None) => Transport::auto(format, facility),
        (To::Stdout | To::Auto, Some(_)) => {
            return Err(usage(
                "socket",
                "--socket needs --to journald or --to syslog",
            ));
        }
    };
    if args.max_length == 0 {
        return Err(usage("max-length", "must be at least 1"));
    }
    Ok(Plan {
        code,
        message,
        extra,
        identity,
        transport,
        max_length: args.max_length,
        strict: args.strict,
    })
}

/// Emits every record; returns the exit status (2 when a stdin line was refused), or the
/// first error that stops everything (a bad argument, an unavailable transport).
fn emit_all(args: Args) -> Result<u8, EmitError> {
    let plan = plan(*args.options)?;
    if !emit::check_catalog(
        &plan.code,
        iemd::catalog::Catalog::builtin()
            .lookup(&plan.code)
            .event
            .is_some(),
        plan.strict,
    )? {
        eprintln!(
            "iemctl emit: warning: IEM code {} is not in the catalog (written anyway; --strict refuses it)",
            plan.code
        );
    }
    let mut emitter = Emitter::new(plan.transport.clone(), plan.identity.clone());
    if plan.message != "-" {
        let record = Record::new(plan.code, &plan.message, plan.extra, plan.max_length)?;
        emitter.emit(&record)?;
        return Ok(0);
    }
    let mut status = 0;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = input
            .read_until(b'\n', &mut buf)
            .map_err(|e| EmitError::Field {
                field: "stdin",
                value: String::new(),
                reason: e.to_string(),
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let line = String::from_utf8_lossy(&buf);
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        match Record::new(plan.code, line, plan.extra.clone(), plan.max_length) {
            Ok(record) => emitter.emit(&record)?,
            Err(err) => {
                eprintln!("iemctl emit: stdin line {line_no}: {err}");
                status = err.exit_code();
            }
        }
    }
    Ok(status)
}
