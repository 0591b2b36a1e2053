//! iemd: the daemon. Parses flags, sets up logging, loads the configuration and runs the pipeline
//! until SIGTERM/SIGINT; SIGHUP reloads the configuration.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use iemd::config::{self, Config};
use iemd::shutdown::Shutdown;
use tokio::signal::unix::{SignalKind, signal};

/// Turn the Interesting Event Messages (IEMs) in syslog files and journald into durable,
/// enriched alerts on RabbitMQ.
///
/// With no --config and no /etc/iemd/iemd.toml, iemd tails /var/log/messages and /var/log/syslog
/// where they exist and journald where journalctl exists, keeps state under /var/lib/iemd (root)
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
    /// Validate the configuration, print it with secrets redacted, and exit (0 valid, 2 invalid).
    #[arg(long)]
    check_config: bool,
}

/// The configuration to use: the named file, else the package's file when present, else the
/// defaults for this machine.
fn load(path: Option<&Path>) -> Result<Config, config::ConfigError> {
    match path {
        Some(path) => Config::load(path),
        None if Path::new(config::DEFAULT_PATH).exists() => {
            Config::load(Path::new(config::DEFAULT_PATH))
        }
        None => Ok(Config::for_this_machine()),
    }
}

/// Logs to stderr; the level comes from RUST_LOG (default info).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    let config = match load(args.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("iemd: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        print!("{}", config.redacted_toml());
        return ExitCode::SUCCESS;
    }
    match run(config, args.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::from(1)
        }
    }
}

#[tokio::main]
async fn run(mut config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    loop {
        let shutdown = Shutdown::new();
        let mut pipeline = tokio::spawn(iemd::pipeline::run(config.clone(), shutdown.clone()));
        let reload = loop {
            tokio::select! {
                result = &mut pipeline => {
                    return result.context("pipeline task failed")?.context("pipeline stopped");
                }
                _ = term.recv() => break None,
                _ = int.recv() => break None,
                _ = hup.recv() => match load(path.as_deref()) {
                    Ok(new) => break Some(new),
                    Err(err) => tracing::error!(%err, "reload refused: keeping the running configuration"),
                },
            }
        };
        tracing::info!(reload = reload.is_some(), "stopping the pipeline");
        shutdown.token.cancel();
        pipeline
            .await
            .context("pipeline task failed")?
            .context("pipeline stopped with an error")?;
        match reload {
            Some(new) => {
                tracing::info!("configuration reloaded");
                config = new;
            }
            None => return Ok(()),
        }
    }
}
