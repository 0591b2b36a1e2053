//! Tracing set-up.
//!
//! Under systemd (stderr is the stream named by `JOURNAL_STREAM`) each line starts with its
//! syslog priority in the sd-daemon form `<3>`..`<7>` and carries no timestamp: journald strips
//! the prefix, files the line at that priority (`journalctl -p warning -u iemd` works) and adds
//! its own timestamp. Elsewhere lines are the usual tracing-subscriber format on stderr.
//!
//! Why not `tracing-journald`: writing to the journal socket directly would keep fields as
//! journal fields, but it only works where the journal socket is reachable, needs a fallback
//! path anyway, and adds a dependency; the stderr stream gives the priority (what alerting on
//! the journal needs), keeps fields as `key=value` text, and behaves the same in a container
//! or a terminal.
//!
//! # No task, and no panic
//!
//! Logging runs no task of its own to supervise: each event is formatted and written on the
//! thread that logs it. What can go wrong there is the write: a journal stream closed under us
//! (journald restarted on a systemd that does not keep services' streams, as systemd 219 on
//! RHEL 7 does not) fails every write with EPIPE. tracing-subscriber reports a failed write with
//! `eprintln!`, which panics when stderr itself is what failed, in whichever task logged (the
//! publisher, a source, the pipeline). So the writer here never fails: a line it cannot write is
//! counted in `iemd_log_write_errors_total` and dropped, and the daemon goes on working.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::TelemetryError;

/// The filter when neither RUST_LOG nor the config names one: lapin logs every returned
/// (unroutable) message in full at warn level; the publisher reports those itself, briefly.
pub(crate) const DEFAULT_FILTER: &str = "info,lapin=warn,lapin::returned_messages=off";

/// Sets up tracing on stderr. The filter is `RUST_LOG` when set, else `level` (the config's
/// `telemetry.log_level`, e.g. `"info"` or `"iemd=debug,lapin=warn"`), else [`DEFAULT_FILTER`].
pub fn init_logging(level: Option<&str>) -> Result<(), TelemetryError> {
    let filter_text = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| level.map(str::to_string))
        .unwrap_or_else(|| DEFAULT_FILTER.to_string());
    let filter = EnvFilter::try_new(&filter_text).map_err(|e| TelemetryError::LogFilter {
        filter: filter_text.clone(),
        reason: e.to_string(),
    })?;
    super::registry().counter_fn(
        "iemd_log_write_errors_total",
        "Log lines that could not be written to stderr (the journal stream closed) and were dropped.",
        &[],
        Box::new(|| LOG_WRITE_ERRORS.load(Ordering::Relaxed) as f64),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| NeverFails {
            inner: io::stderr(),
            errors: &LOG_WRITE_ERRORS,
        })
        .log_internal_errors(false);
    let result = if stderr_is_journal_stream() {
        builder
            .event_format(SyslogPrefix(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false)
                    .with_level(false),
            ))
            .try_init()
    } else {
        // Colours only on a terminal: a log file or pipe gets plain text.
        use std::io::IsTerminal;
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    result.map_err(|_| TelemetryError::LoggingAlreadySet)
}

/// Log lines that could not be written.
static LOG_WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// A writer that counts the lines it cannot write in `errors` instead of failing (see the
/// module's comment for why it must not fail).
struct NeverFails<W> {
    inner: W,
    errors: &'static AtomicU64,
}

impl<W: io::Write> io::Write for NeverFails<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.inner.write_all(buf).is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// True when `JOURNAL_STREAM` (`device:inode`) names the file stderr is (systemd's rule: the
/// variable is inherited by children whose stderr may have been redirected elsewhere).
pub(crate) fn stderr_is_journal_stream() -> bool {
    std::env::var("JOURNAL_STREAM").is_ok_and(|v| fd_is_journal_stream(&v, std::io::stderr()))
}

/// True when `value` (`device:inode`, as in `JOURNAL_STREAM`) names the file open as `fd`.
fn fd_is_journal_stream(value: &str, fd: impl std::os::fd::AsFd) -> bool {
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(fd) else {
        return false;
    };
    st.st_dev == dev && st.st_ino == ino
}

/// The sd-daemon priority prefix for a tracing level (`<3>` err .. `<7>` debug).
pub(crate) fn syslog_prefix(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// Writes the syslog priority prefix, then the event as the inner format does.
pub(crate) struct SyslogPrefix<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for SyslogPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str(syslog_prefix(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn journal_lines_start_with_the_syslog_priority_and_have_no_timestamp() {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .with_writer(move || writer.clone())
            .event_format(SyslogPrefix(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false)
                    .with_level(false),
            ))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(source = "messages", "boom");
            tracing::warn!("careful");
            tracing::info!("hello");
            tracing::debug!("detail");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("<3>")
                && lines[0].contains("boom")
                && lines[0].contains("source=\"messages\""),
            "{text}"
        );
        assert!(lines[1].starts_with("<4>"), "{text}");
        assert!(lines[2].starts_with("<6>"), "{text}");
        assert!(lines[3].starts_with("<7>"), "{text}");
        // No year in the line: timestamps are journald's.
        assert!(!text.contains("20"), "{text}");
    }

    /// A closed journal stream (EPIPE on every write) made tracing-subscriber's error report,
    /// an `eprintln!`, panic the task that logged. Now each line is counted and dropped.
    #[test]
    fn a_failing_stderr_is_counted_not_a_panic() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        static ERRORS: AtomicU64 = AtomicU64::new(0);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| NeverFails {
                inner: Closed,
                errors: &ERRORS,
            })
            .log_internal_errors(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("lost");
            tracing::error!("lost too");
        });
        assert_eq!(ERRORS.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn journal_stream_must_name_the_open_file() {
        use std::os::unix::fs::MetadataExt;
        let file = tempfile::tempfile().unwrap();
        let meta = file.metadata().unwrap();
        let fd = &file;
        assert!(fd_is_journal_stream(
            &format!("{}:{}", meta.dev(), meta.ino()),
            fd
        ));
        assert!(!fd_is_journal_stream(
            &format!("{}:{}", meta.dev(), meta.ino() + 1),
            fd
        ));
        assert!(!fd_is_journal_stream("garbage", fd));
        assert!(!fd_is_journal_stream("1:", fd));
    }
}
