//! Wires the stages together: sources -> decode -> enrich -> spool -> publish, and moves the
//! sources' checkpoints forward as the spool makes their alerts durable.
//!
//! # The at-least-once chain
//!
//! - Every line's position is queued with the spool sequence number it depends on: its own
//!   alert's seq for an IEM line, the last seq appended before it for any other line (moving a
//!   checkpoint past a line also moves it past every earlier line).
//! - A position is recorded in the checkpoint store only once the spool reports that seq durable,
//!   so a checkpoint never passes an IEM whose alert a crash could lose.
//! - The publisher takes only durable records and acks the spool only for confirmed ones; the
//!   spool deletes only acked segments. A crash therefore repeats at most the lines after the
//!   last persisted checkpoint, with the same alert ids.
//!
//! # Stopping
//!
//! Cancelling the shutdown token stops the sources; the lines already read are still spooled,
//! the spool is synced, the checkpoints persisted, and the publisher gets the broker's
//! `shutdown_timeout_ms` to finish what it has in flight before it is stopped too.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::alert::{Kind, OriginKind};
use crate::catalog::decode::{Clock, Decoder, LineSource};
use crate::catalog::{Catalog, CatalogError};
use crate::config::Config;
use crate::enrich::{EnrichError, Enricher};
use crate::publish::{self, PublishError, PublishStats};
use crate::shutdown::Shutdown;
use crate::source::checkpoint::{CheckpointError, CheckpointStore};
use crate::source::file::FileSource;
use crate::source::journald::JournaldSource;
use crate::source::{Position, SourceError, SourceLine, SourceMetrics};
use crate::spool::{self, SpoolError, SpoolWriter};
use crate::systemd::Notifier;
use crate::telemetry::{self, events, http};

/// Lines taken from the sources' channel at once: one spool append and one lock for all.
const BATCH: usize = 512;
/// How often recorded checkpoints are written to disk.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// Why the pipeline could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot encode an alert: {0}")]
    Encode(#[from] sonic_rs::Error),
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    #[error(transparent)]
    Enrich(#[from] EnrichError),
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), PipelineError> {
    let catalog = Catalog::load(&config.catalog_dirs)?;
    let enricher = Enricher::new(&config.enrich)?;
    let (writer, reader, recovery) = open_spool(&config.spool).await?;
    if !recovery.cuts.is_empty() {
        tracing::warn!(
            ?recovery,
            "spool recovered after a crash; torn records were cut"
        );
    }
    let checkpoints = Arc::new(CheckpointStore::open(&config.state_dir)?);

    // The publisher stops last, on its own token, so that what the sources read before the
    // shutdown still gets its chance to be published.
    let publisher_shutdown = Shutdown::new();
    let observe: publish::LatencyObserver = Arc::new(events::alert_published);
    let publish_stats = Arc::new(PublishStats::new(&config.broker, Some(observe)));
    let publisher = {
        let broker = config.broker.clone();
        let stop = publisher_shutdown.clone();
        let stats = publish_stats.clone();
        tokio::spawn(async move { publish::run(&broker, reader, stop, stats).await })
    };

    let source_token = shutdown.token.child_token();
    let (tx, mut rx) = mpsc::channel::<SourceLine>(BATCH * 8);
    let mut sources = JoinSet::new();
    let mut health_sources = Vec::new();
    let mut source_paths = Vec::new();
    if let Some(nothing) = crate::source::nothing_to_read(&config.sources) {
        tracing::error!("{nothing}");
    }
    for file in &config.sources.files {
        let source = FileSource::new(file, &checkpoints);
        export_source_metrics(&source.name(), &source.metrics());
        source_paths.push((source.name(), source.metrics()));
        let running = SourceRunning::new(source.name(), &mut health_sources);
        let (tx, token) = (tx.clone(), source_token.clone());
        sources.spawn(async move { running.track(source.run(tx, token).await) });
    }
    if config.sources.journald.enabled {
        let name = &config.sources.journald.name;
        let source = JournaldSource::new(&config.sources.journald, checkpoints.journal(name));
        export_source_metrics(&source.name(), &source.metrics());
        source_paths.push((source.name(), source.metrics()));
        let running = SourceRunning::new(source.name(), &mut health_sources);
        let (tx, token) = (tx.clone(), source_token.clone());
        sources.spawn(async move { running.track(source.run(tx, token).await) });
    }
    drop(tx);
    export_publish_metrics(&publish_stats);
    let spool_gauges = export_spool_metrics(&writer);
    let health: http::HealthFn = {
        let (stats, spool) = (publish_stats.clone(), spool_gauges.clone());
        let warning = config.telemetry.spool_warning_records;
        Arc::new(move || http::HealthInputs {
            sources: health_sources
                .iter()
                .map(|(name, up): &(Arc<str>, Arc<AtomicBool>)| {
                    (name.to_string(), up.load(Ordering::Relaxed))
                })
                .collect(),
            broker_connected: stats.connected().iter().any(|(_, up)| *up),
            spool_pending_records: spool.stats().map_or(0, |s| s.pending_records),
            spool_warning_records: warning,
            unreadable: source_paths
                .iter()
                .flat_map(|(name, m): &(Arc<str>, Arc<SourceMetrics>)| {
                    m.unreadable()
                        .into_iter()
                        .map(|d| (name.to_string(), d.path, d.reason))
                })
                .collect(),
        })
    };
    if let Some(addr) = config.telemetry.metrics_addr() {
        let listener = http::bind(addr).await?;
        tracing::info!(%addr, "serving /metrics and /health");
        shutdown.tracker.spawn(http::serve(
            listener,
            telemetry::registry(),
            health,
            shutdown.clone(),
        ));
    }
    let notifier = Notifier::from_env();
    notify(notifier.ready());
    tracing::info!(
        files = config.sources.files.len(),
        journald = config.sources.journald.enabled,
        spool = %config.spool.dir.display(),
        "iemd running"
    );

    let mut stage = Stage {
        decoder: Decoder::new(&catalog),
        enricher,
        tz: config.parse.tz(),
        writer,
        checkpoints: checkpoints.clone(),
        waiting: VecDeque::new(),
        last_seq: 0,
        recorded: false,
        persist_failing: false,
    };
    let mut durable = stage.writer.durable();
    let mut persist = tokio::time::interval(PERSIST_EVERY);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break; // every source has stopped
                }
                // A full spool makes this wait (backpressure); at shutdown the wait is abandoned:
                // those lines' checkpoints were not recorded, so they are read again next time.
                tokio::select! {
                    r = stage.process(&mut batch) => r?,
                    _ = shutdown.token.cancelled() => break,
                }
            }
            Ok(()) = durable.changed() => {
                let seq = *durable.borrow_and_update();
                stage.commit_ready(seq)?;
            }
            _ = persist.tick() => {
                // Lines without an IEM wait for no new seq: the current durable seq frees them.
                let seq = *durable.borrow();
                stage.commit_ready(seq)?;
                stage.persist()?;
                let pending = stage.writer.stats().pending_records;
                let broker = if publish_stats.connected().iter().any(|(_, up)| *up) { "connected" } else { "not connected" };
                notify(notifier.status(&format!("spool {pending} pending, broker {broker}")));
            }
        }
    }
    source_token.cancel();
    while let Some(joined) = sources.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(%err, "source failed"),
            Err(err) => tracing::error!(%err, "source task failed"),
        }
    }
    let seq = stage.writer.sync()?;
    stage.commit_ready(seq)?;
    stage.persist()?;
    tracing::info!(
        durable_seq = seq,
        "sources stopped, spool synced, checkpoints saved"
    );

    publisher_shutdown.token.cancel();
    // The publisher waits `shutdown_timeout_ms` for outstanding confirms; a second more for it
    // to wind down.
    let drain = Duration::from_millis(config.broker.shutdown_timeout_ms) + Duration::from_secs(1);
    let mut publisher = publisher;
    let published = match tokio::time::timeout(drain, &mut publisher).await {
        Ok(Ok(result)) => result,
        Ok(Err(err)) => {
            tracing::error!(%err, "publisher task failed");
            Ok(())
        }
        Err(_) => {
            // It must not outlive the run: it holds the spool (and its lock) open.
            publisher.abort();
            let _ = publisher.await;
            tracing::warn!("publisher did not stop in time; unconfirmed alerts stay spooled");
            Ok(())
        }
    };
    spool_gauges.release();
    published?;
    Ok(())
}

/// Opens the spool. After a reload the previous pipeline's spool may still be closing (its sync
/// thread lets go of the lock within one sync interval): a held lock is retried for a while.
async fn open_spool(
    config: &crate::config::spool::SpoolConfig,
) -> Result<(SpoolWriter, spool::SpoolReader, spool::RecoveryReport), SpoolError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match spool::open(config) {
            Err(SpoolError::Locked(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            result => return result,
        }
    }
}

/// A position waiting for the spool to make `needed` durable.
struct Waiting {
    needed: u64,
    source: Arc<str>,
    position: Position,
}

/// The decode -> enrich -> spool stage and its checkpoint bookkeeping.
struct Stage<'c> {
    decoder: Decoder<'c>,
    enricher: Enricher,
    tz: chrono_tz::Tz,
    writer: SpoolWriter,
    checkpoints: Arc<CheckpointStore>,
    /// Positions in the order their lines were read; `needed` never decreases along it.
    waiting: VecDeque<Waiting>,
    /// The seq of the last alert appended by this run (0: none yet).
    last_seq: u64,
    /// Positions were recorded since the last persist.
    recorded: bool,
    /// The last persist failed (logged once until it works again).
    persist_failing: bool,
}

impl Stage<'_> {
    /// Decodes a batch of lines, appends their alerts to the spool in one go, and queues the
    /// lines' positions behind the seqs they depend on.
    async fn process(&mut self, batch: &mut Vec<SourceLine>) -> Result<(), PipelineError> {
        let clock = Clock::now(self.tz);
        let mut payloads = Vec::new();
        let mut marks = Vec::with_capacity(batch.len());
        for line in batch.drain(..) {
            let source = match &line.position {
                Position::File(p) => LineSource {
                    kind: OriginKind::File,
                    path: p.path.to_str(),
                    offset: Some(p.offset_of_line),
                    fingerprint: p.fingerprint,
                    truncated: line.truncated,
                },
                Position::Journal(_) => LineSource {
                    kind: OriginKind::Journald,
                    path: None,
                    offset: None,
                    fingerprint: 0,
                    truncated: line.truncated,
                },
            };
            if let Some(mut alert) = self.decoder.decode(&line.bytes, &source, &clock) {
                self.enricher.enrich(&mut alert);
                match (alert.kind, &alert.code, &alert.reason) {
                    (Kind::Iem, Some(code), _) => events::iem(&line.source, code),
                    (_, _, reason) => {
                        events::malformed(&line.source, reason.as_deref().unwrap_or(""))
                    }
                }
                payloads.push(crate::alert::encode(&alert)?);
            }
            marks.push((line.source, line.position, payloads.len()));
        }
        let before = self.last_seq;
        if !payloads.is_empty() {
            self.last_seq = self.writer.append_batch(&payloads).await?;
            telemetry::metrics()
                .alerts_spooled
                .add(payloads.len() as u64);
        }
        let first = self.last_seq + 1 - payloads.len() as u64;
        for (source, position, alerts_so_far) in marks {
            let needed = match alerts_so_far {
                0 => before,
                k => first + k as u64 - 1,
            };
            self.wait_for(needed, source, position);
        }
        Ok(())
    }

    fn wait_for(&mut self, needed: u64, source: Arc<str>, position: Position) {
        if let Some(last) = self.waiting.back_mut()
            && last.needed == needed
            && last.source == source
        {
            last.position = position;
            return;
        }
        self.waiting.push_back(Waiting {
            needed,
            source,
            position,
        });
    }

    /// Records every queued position whose alerts are durable (persisted on the next tick).
    fn commit_ready(&mut self, durable: u64) -> Result<(), PipelineError> {
        while let Some(front) = self.waiting.front() {
            if front.needed > durable {
                break;
            }
            self.checkpoints.record(&front.source, &front.position)?;
            self.recorded = true;
            self.waiting.pop_front();
        }
        Ok(())
    }

    /// Writes the recorded checkpoints to disk, when there are new ones. A failed write (a full
    /// disk) is not fatal: the positions stay recorded and the next tick tries again; until then
    /// a crash would only re-read more lines (same ids), never lose one.
    fn persist(&mut self) -> Result<(), PipelineError> {
        if !self.recorded {
            return Ok(());
        }
        match self.checkpoints.persist() {
            Ok(()) => {
                self.recorded = false;
                if std::mem::take(&mut self.persist_failing) {
                    tracing::info!("checkpoints saved again");
                }
                telemetry::metrics().checkpoint_writes.inc();
            }
            Err(err) if !self.persist_failing => {
                self.persist_failing = true;
                tracing::warn!(%err, "cannot save checkpoints; retrying every second");
            }
            Err(_) => {}
        }
        Ok(())
    }
}

/// A source's "running" flag for `/health`: true until its task ends with an error.
struct SourceRunning(Arc<AtomicBool>);

impl SourceRunning {
    fn new(name: Arc<str>, all: &mut Vec<(Arc<str>, Arc<AtomicBool>)>) -> Self {
        let flag = Arc::new(AtomicBool::new(true));
        all.push((name, flag.clone()));
        SourceRunning(flag)
    }

    fn track(self, result: Result<(), SourceError>) -> Result<(), SourceError> {
        if result.is_err() {
            self.0.store(false, Ordering::Relaxed);
        }
        result
    }
}

/// A failed sd_notify is worth a log line, never a stop.
fn notify(result: std::io::Result<()>) {
    if let Err(err) = result {
        tracing::warn!(%err, "cannot notify systemd");
    }
}

/// The sources count their own lines; the registry reads those counters at scrape time.
fn export_source_metrics(name: &str, metrics: &Arc<SourceMetrics>) {
    let r = telemetry::registry();
    let labels = [("source", name)];
    let m = metrics.clone();
    r.counter_fn(
        "iemd_lines_read_total",
        "Lines read, per source.",
        &labels,
        Box::new(move || m.lines_read_total.load(Ordering::Relaxed) as f64),
    );
    let m = metrics.clone();
    r.counter_fn(
        "iemd_bytes_read_total",
        "Bytes read, per source.",
        &labels,
        Box::new(move || m.bytes_read_total.load(Ordering::Relaxed) as f64),
    );
    let m = metrics.clone();
    r.counter_fn(
        "iemd_lines_truncated_total",
        "Lines cut at max_line_bytes (journald: entries dropped as too long), per source.",
        &labels,
        Box::new(move || m.lines_truncated_total.load(Ordering::Relaxed) as f64),
    );
    let m = metrics.clone();
    r.counter_fn(
        "iemd_rotations_total",
        "File rotations (rename, copytruncate, found while stopped) followed, per source.",
        &labels,
        Box::new(move || m.rotations_total.load(Ordering::Relaxed) as f64),
    );
    let m = metrics.clone();
    r.counter_fn(
        "iemd_journalctl_restarts_total",
        "journalctl children started after the first, per source.",
        &labels,
        Box::new(move || m.journalctl_restarts_total.load(Ordering::Relaxed) as f64),
    );
}

/// One of the publisher's own counters.
type StatField = fn(&PublishStats) -> &std::sync::atomic::AtomicU64;

/// The publisher counts its own retries, nacks and returns, and its connections.
fn export_publish_metrics(stats: &Arc<PublishStats>) {
    let r = telemetry::registry();
    let series: [(&str, &str, StatField); 3] = [
        (
            "iemd_publish_retries_total",
            "Publish attempts retried after a failure.",
            |s| &s.retries_total,
        ),
        (
            "iemd_publish_nacks_total",
            "Alerts the broker nacked.",
            |s| &s.nacks_total,
        ),
        (
            "iemd_publish_returns_total",
            "Alerts the broker returned as unroutable.",
            |s| &s.returns_total,
        ),
    ];
    for (name, help, field) in series {
        let s = stats.clone();
        r.counter_fn(
            name,
            help,
            &[],
            Box::new(move || field(&s).load(Ordering::Relaxed) as f64),
        );
    }
    for (i, (url, _)) in stats.connected().into_iter().enumerate() {
        let s = stats.clone();
        r.gauge_fn(
            "iemd_broker_connected",
            "1 while the publisher is connected to this broker URL.",
            &[("url", &url)],
            Box::new(move || {
                s.connected()
                    .get(i)
                    .map_or(0.0, |(_, up)| f64::from(u8::from(*up)))
            }),
        );
    }
}

/// The spool the metrics read at scrape time. The registry outlives a pipeline run (a reload
/// starts a new one), so its callbacks must not keep the run's spool, and its lock, alive:
/// `release` lets go of it when the run ends.
#[derive(Clone, Default)]
struct SpoolGauges(Arc<std::sync::Mutex<Option<SpoolWriter>>>);

impl SpoolGauges {
    fn stats(&self) -> Option<spool::SpoolStats> {
        self.0.lock().ok()?.as_ref().map(SpoolWriter::stats)
    }

    fn release(&self) {
        if let Ok(mut slot) = self.0.lock() {
            slot.take();
        }
    }
}

/// One figure of the spool's stats.
type SpoolReading = fn(&spool::SpoolStats) -> f64;

/// Spool levels are read from the spool at scrape time.
fn export_spool_metrics(writer: &SpoolWriter) -> SpoolGauges {
    let gauges = SpoolGauges(Arc::new(std::sync::Mutex::new(Some(writer.clone()))));
    let r = telemetry::registry();
    let series: [(&str, &str, SpoolReading); 3] = [
        (
            "iemd_spool_pending_records",
            "Alerts in the spool not yet confirmed by the broker.",
            |s| s.pending_records as f64,
        ),
        (
            "iemd_spool_pending_bytes",
            "Bytes of spooled alerts not yet confirmed by the broker.",
            |s| s.pending_bytes as f64,
        ),
        (
            "iemd_spool_oldest_pending_age_seconds",
            "Age of the oldest alert not yet confirmed by the broker.",
            |s| {
                s.oldest_pending_ms.map_or(0.0, |t| {
                    (chrono::Utc::now().timestamp_millis() - t).max(0) as f64 / 1000.0
                })
            },
        ),
    ];
    for (name, help, read) in series {
        let g = gauges.clone();
        r.gauge_fn(
            name,
            help,
            &[],
            Box::new(move || g.stats().as_ref().map_or(0.0, read)),
        );
    }
    let g = gauges.clone();
    r.counter_fn(
        "iemd_spool_full_waits_total",
        "Appends that waited because the spool was full.",
        &[],
        Box::new(move || g.stats().map_or(0.0, |s| s.full_waits as f64)),
    );
    gauges
}
