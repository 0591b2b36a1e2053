//! iemd: turns Interesting Event Messages (IEMs) from syslog and journald into durable,
//! enriched alerts on RabbitMQ.
//!
//! # Layout
//!
//! One data path, one direction:
//! `source -> parse (iem-parsers) -> decode (catalog) -> enrich -> spool -> publish -> ack spool -> checkpoints`.
//!
//! - `alert`: the alert record (`iem.alert/v1`) every stage after parsing uses.
//! - `catalog`: the IEM catalog (components, modules, events) and decoding a parsed line into an alert.
//! - `config`: the daemon's TOML configuration, validated completely up front.
//! - `dedup`: when journald and files are both read, one alert per IEM seen through both.
//! - `emit`: formats and writes one IEM to journald, syslog or stdout (used by `iemctl emit`).
//! - `enrich`: host identity and hardware context from sysfs.
//! - `lifecycle`: pairs faults with their resolutions, escalates, coalesces and holds down,
//!   with the ledger of open faults (a stage between enrich and the spool).
//! - `spool`: the durable, ordered, segmented on-disk queue between sources and the publisher.
//! - `output`: the seam a destination plugs into: `Output`, fed by the spool's records (next, ack, rewind).
//! - `publish`: RabbitMQ publishing with confirms, draining the spool (the AMQP `Output`).
//! - `source`: file tailing (rotation-safe) and journald, with checkpoints.
//! - `manpages`: man pages and shell completions from a clap command, for packaging.
//! - `pipeline`: wires the stages together; the only module that knows them all.
//! - `shutdown`: the cancellation token and task tracker passed into every long-running task.
//! - `supervise`: restarts the long-running tasks with backoff and reports them to `/health`.
//! - `systemd`: sd_notify for `Type=notify` (ready, status, stopping) and the watchdog task.
//! - `sspl`: the SSPL-compatible body made from an alert, for the old consumers.
//! - `statefile`: state directories and the files in them, opened without following planted links.
//! - `telemetry`: tracing set-up, the observable events (logs + counters), `/metrics` and `/health`.

#![forbid(unsafe_code)]

pub mod alert;
pub mod catalog;
pub mod config;
pub mod dedup;
pub mod emit;
pub mod enrich;
pub mod lifecycle;
pub mod manpages;
pub(crate) mod output;
pub mod pipeline;
pub mod publish;
pub mod shutdown;
pub mod source;
pub mod spool;
pub mod sspl;
pub(crate) mod statefile;
pub mod supervise;
pub mod systemd;
pub mod telemetry;
