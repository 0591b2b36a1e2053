//! iemd: the daemon. Parses flags, sets up logging, loads the configuration and runs the pipeline
//! until SIGTERM/SIGINT; SIGHUP reloads the configuration.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use iemd::catalog::{Catalog, CatalogError};
use iemd::config::{self, Config, broker};
use iemd::shutdown::Shutdown;
use iemd::supervise::{Stages, supervise};
use iemd::systemd::{self, Notifier};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Turn the Interesting Event Messages (IEMs) in syslog files and journald into durable,
/// enriched alerts on RabbitMQ.
///
/// With no --config and no /etc/iemd/iemd.toml, iemd reads journald when the system journal is
/// readable, else tails /var/log/messages and /var/log/syslog where they exist (one of the two:
/// rsyslog copies the journal into those files), keeps state under /var/lib/iemd (root)
/// or $XDG_STATE_HOME/iemd or ./state, and publishes to amqp://localhost, spooling until the
/// broker is reachable.
///
/// Examples:
///   iemd                                   # defaults, or /etc/iemd/iemd.toml when present
///   iemd --config /etc/iemd/iemd.toml
///   iemd --check-config --config new.toml  # validate and print the effective configuration
#[derive(Parser)]
#[command(name = "iemd", version, verbatim_doc_comment)]
struct Args {
    /// The configuration file (TOML). Default: /etc/iemd/iemd.toml when it exists.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration, print which sources it reads (and why) and the configuration
    /// with secrets redacted, and exit (0 valid, 2 invalid).
    #[arg(long)]
    check_config: bool,
    /// Write iemd's man page into DIR and exit (used by packaging/build-rpm.sh).
    #[arg(long, value_name = "DIR", hide = true)]
    man_pages: Option<PathBuf>,
}

/// Why a configuration cannot be used: the file itself, or a catalog file it points at.
#[derive(Debug, thiserror::Error)]
enum Unusable {
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("invalid catalog (catalog_dirs): {0}")]
    Catalog(#[from] CatalogError),
}

/// The configuration to use: the named file, else the package's file when present, else the
/// defaults for this machine. The catalog it names is loaded too, so that a name the broker
/// could not take (a component name past AMQP's limits) is refused by `--check-config` and by a
/// reload, not found when the pipeline starts.
fn load(path: Option<&Path>) -> Result<Config, Unusable> {
    let config = match path {
        Some(path) => Config::load(path)?,
        None if Path::new(config::DEFAULT_PATH).exists() => {
            Config::load(Path::new(config::DEFAULT_PATH))?
        }
        None => Config::for_this_machine(),
    };
    Catalog::load(&config.catalog_dirs)?;
    Ok(config)
}

/// Two of glibc malloc's defaults made the daemon's peak RSS a matter of luck: each thread that
/// allocates gets an arena of its own (up to eight per core) that keeps the pages it grew to,
/// and the size from which a block is mmapped (and given back when freed) rises to the largest
/// block freed, so that the 1 MB spool chunks and 64 KB read buffers end up inside the heap
/// among small blocks. The e2e bench's peak RSS (`cargo bench --bench e2e`) landed anywhere from
/// 14.7 to 22.4 MB, past the 20 MB budget in two runs of five. One arena and a fixed 128 KiB
/// mmap threshold keep it at 12.2-18.5 MB at the same rate and CPU (docs/PERFORMANCE.md, "Peak
/// RSS"). The daemon's few threads rarely contend for the one arena: nearly all of the
/// allocating is the runtime worker's. `MALLOC_ARENA_MAX` or `MALLOC_MMAP_THRESHOLD_` in the
/// environment still win.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (env, param, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 1),
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 128 << 10),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mallopt sets one of malloc's tunables and takes no pointers; called while
            // the process has one thread.
            unsafe { libc::mallopt(param, value) };
        }
    }
}

fn main() -> ExitCode {
    // The broker password leaves the environment before anything else runs, so that no child
    // (journalctl) inherits it and a core dump's environment list does not hold it.
    if let Some(password) = std::env::var_os(broker::PASSWORD_ENV) {
        // SAFETY: `remove_var` is unsound only while another thread may read or write the
        // environment. This is the first thing `main` does and the process has one thread:
        // nothing before `main` starts one, and the tokio runtime is built later, in `run`.
        unsafe { std::env::remove_var(broker::PASSWORD_ENV) };
        broker::keep_env_password(password);
    }
    tune_malloc();
    let args = Args::parse();
    if let Some(dir) = &args.man_pages {
        return match iemd::manpages::write_man_pages(<Args as clap::CommandFactory>::command(), dir)
        {
            Ok(_) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("iemd: cannot write man pages to {}: {err}", dir.display());
                ExitCode::from(1)
            }
        };
    }
    let config = match load(args.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("iemd: {err}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        print!("{}", config.redacted_toml());
        return ExitCode::SUCCESS;
    }
    if let Err(err) = iemd::telemetry::init_logging(config.telemetry.log_level.as_deref()) {
        eprintln!("iemd: {err}");
        return ExitCode::from(2);
    }
    match run(config, args.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::from(1)
        }
    }
}

/// The daemon's runtime has one worker thread. Its work is one pipeline whose stages hand batches
/// to each other, about a tenth of a core at 10,000 alerts/s. The spool's fsyncs have a thread of
/// their own and name lookups tokio's blocking pool; the checkpoints' once a second run on this
/// worker (the e2e bench's latency p99 stayed 13-35 ms at 1,000 IEM/s). A worker per core
/// bought no throughput and cost memory: tasks moved between the workers, each worker's malloc
/// arena grew to the peak of both, and the source ran further ahead of the stage. Peak RSS of the
/// e2e bench's throughput run (`cargo bench --bench e2e`), two workers against one: 18.5-21.4
/// against 14.0-17.5 MB, at 0.82-0.86x the plain publisher and the same CPU seconds either way.
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn run(mut config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let notifier = systemd::notifier();
    let watchdog = Shutdown::new();
    if let Some(every) = systemd::watchdog_interval() {
        // Supervised like the pipeline's tasks (logged, counted, `iemd_stage_up`, restarted),
        // but outside any one pipeline run, so not in `/health`: it lives across reloads. Should
        // it stay down anyway, systemd's watchdog restarts iemd, which is the loud end we want.
        let stage = Stages::new().add("systemd watchdog");
        let stop = watchdog.clone();
        watchdog
            .tracker
            .spawn(supervise(stage, watchdog.token.clone(), move || {
                let (notifier, stop) = (notifier.clone(), stop.clone());
                async move {
                    systemd::run_watchdog(notifier, every, stop).await;
                    Ok::<(), std::convert::Infallible>(())
                }
            }));
    }
    let result = serve(&mut config, path, notifier, (&mut term, &mut int, &mut hup)).await;
    watchdog.stop_and_wait().await;
    result
}

/// Runs the pipeline, restarting it with the new configuration on SIGHUP, until SIGTERM/SIGINT.
async fn serve(
    config: &mut Config,
    path: Option<PathBuf>,
    notifier: &Notifier,
    (term, int, hup): (&mut Signal, &mut Signal, &mut Signal),
) -> anyhow::Result<()> {
    loop {
        let shutdown = Shutdown::new();
        let mut pipeline = tokio::spawn(iemd::pipeline::run(config.clone(), shutdown.clone()));
        // `pipeline::run` sends READY=1 once its sources and spool are up.
        let reload = loop {
            tokio::select! {
                result = &mut pipeline => {
                    return result.context("pipeline task failed")?.context("pipeline stopped");
                }
                _ = term.recv() => break None,
                _ = int.recv() => break None,
                _ = hup.recv() => match load(path.as_deref()) {
                    Ok(new) => {
                        systemd::notify(notifier.reloading());
                        break Some(new);
                    }
                    Err(err) => tracing::error!(%err, "reload refused: keeping the running configuration"),
                },
            }
        };
        tracing::info!(reload = reload.is_some(), "stopping the pipeline");
        if reload.is_none() {
            systemd::notify(notifier.stopping());
        }
        shutdown.token.cancel();
        let stopped = pipeline.await;
        // Its helpers (the metrics endpoint) must be gone before a new run binds their port.
        shutdown.stop_and_wait().await;
        stopped
            .context("pipeline task failed")?
            .context("pipeline stopped with an error")?;
        match reload {
            Some(new) => {
                tracing::info!("configuration reloaded");
                *config = new;
            }
            None => return Ok(()),
        }
    }
}
