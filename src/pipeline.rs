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
//! - Positions are persisted once a second, but each time they move after a spool sync they
//!   are also written to the checkpoints' hot copy (no fsync, see `source::checkpoint`): after
//!   a SIGKILL the sources resume after the last line whose alert was durable; a consumer still
//!   sees twice the publishes whose confirm the kill cut off.
//! - The lines read again after a SIGKILL are those whose alerts were appended but not yet
//!   reported durable (an fsync under heavy I/O can take a second). Their records are in the
//!   spool all the same (recovery syncs them), so the seq up to which positions are recorded is
//!   kept with them ([`SPOOLED_STATE`]); at start the ids of the records after it are collected,
//!   and a line read again whose alert has one of those ids is not spooled again.
//!
//! - The lifecycle stage (`lifecycle`) sits between enrich and the spool. Each line's position
//!   carries the ledger's version after it; the ledger is committed up to that version, and
//!   recorded beside the positions, only when the position is: an alert is durable in the
//!   spool before the ledger change it causes. Escalations, window summaries and held faults
//!   made on the tick wait for their own seq the same way.
//!
//! # Stopping
//!
//! Cancelling the shutdown token stops the sources; the lines already read are still spooled,
//! the spool is synced, the checkpoints persisted, and the publisher gets the broker's
//! `shutdown_timeout_ms` to finish what it has in flight before it is stopped too.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

use crate::alert::{Alert, Kind, LineSource};
use crate::catalog::decode::{Clock, Decoder};
use crate::catalog::{Catalog, CatalogError};
use crate::config::Config;
use crate::dedup::{Matcher, MatcherState, Side, Verdict};
use crate::enrich::{EnrichError, Enricher};
use crate::lifecycle::{self, Ledger, Lifecycle};
use crate::output::Output;
use crate::publish::{self, PublishError, PublishStats};
use crate::shutdown::{CancellationToken, Shutdown};
use crate::source::channel::{self, LineReceiver};
use crate::source::checkpoint::{CheckpointError, CheckpointStore};
use crate::source::{Position, SourceError, SourceLine, SourceMetrics};
use crate::spool::{self, SpoolError, SpoolWriter};
use crate::supervise::{Stage as SupervisedStage, Stages, supervise};
use crate::systemd;
use crate::telemetry::{self, events, http};

/// Lines taken from the sources' channel at once: one spool append and one lock for all.
const BATCH: usize = 512;
/// Alerts decoded from one batch are appended once they reach this many bytes of JSON.
const APPEND_CHUNK: usize = 1 << 20;
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
    #[error("an alert of {0} bytes could not be cut to fit a spool record")]
    AlertTooLarge(usize),
    #[error("{file}: the lifecycle ledger: {source}")]
    Ledger {
        file: std::path::PathBuf,
        source: lifecycle::LedgerError,
    },
}

/// Runs the agent until `shutdown` is cancelled, in these steps:
///
/// 1. The catalog, then [`open_state`]: the enricher, the spool (recovered after a crash) and
///    the checkpoints; any failure here ends the run before anything was read.
/// 2. [`Publisher::start`]: drains the spool to the broker, on a scope of its own (see
///    [`Publisher::stop`]).
/// 3. [`Sources::start`]: one supervised task per configured source, sending into a channel
///    bounded in bytes.
/// 4. [`serve_telemetry`]: the counters and gauges, and `/metrics` and `/health`.
/// 5. Tell systemd we are ready, then [`Stage::run`]: decode, enrich and spool what the sources
///    send, and move the checkpoints as the spool makes it durable, until every source has
///    stopped or `shutdown` is cancelled.
/// 6. [`Sources::stop`], [`Stage::finish`] (sync the spool, save the checkpoints), then
///    [`Publisher::stop`], which gives the broker `shutdown_timeout_ms` for what is in flight.
///
/// Three scopes stop things in order: `shutdown` (the metrics server, and the stage loop), the
/// sources' child of it, and the publisher's own, cancelled last.
///
/// The publisher, each source and the metrics server run under `supervise` (restarted with
/// backoff, shown in `/health`); an error of the stage itself (spool append, checkpoints) ends
/// the run with that error, and `iemd` exits non-zero for systemd to restart it (see
/// `supervise` for why).
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), PipelineError> {
    let catalog = Catalog::load(&config.catalog_dirs)?;
    let State {
        enricher,
        writer,
        reader,
        checkpoints,
        resume,
    } = open_state(&config).await?;
    let lifecycle = open_lifecycle(&catalog, &checkpoints)?;
    let stages = Stages::new();
    let publisher = Publisher::start(&config, reader, &writer, &stages, &shutdown);
    let (sources, mut rx) = Sources::start(&config, &checkpoints, &stages, &shutdown);
    let telemetry =
        serve_telemetry(&config, &stages, &publisher, &sources, &writer, &shutdown).await?;
    let notifier = systemd::notifier();
    systemd::notify(notifier.ready());
    tracing::info!(
        spool = %config.spool.dir.display(),
        sources = %config.sources.summary().trim_end(),
        "iemd running"
    );

    let mut stage = Stage::new(
        &config,
        &catalog,
        enricher,
        lifecycle,
        writer,
        checkpoints,
        resume,
    );
    stage
        .run(&mut rx, &shutdown.token, |spooled| {
            refresh_sync_stage(&telemetry.sync_stage, spooled);
            let broker = match publisher.connected() {
                true => "connected",
                false => "not connected",
            };
            let status = format!("spool {} pending, broker {broker}", spooled.pending_records);
            systemd::notify(notifier.status(&status));
        })
        .await?;
    sources.stop().await;
    stage.finish()?;
    publisher
        .stop(Duration::from_millis(config.broker.shutdown_timeout_ms))
        .await;
    telemetry.spool.release();
    Ok(())
}

/// What the run reads and writes on disk, opened before anything runs.
struct State {
    enricher: Enricher,
    writer: SpoolWriter,
    reader: spool::SpoolReader,
    checkpoints: Arc<CheckpointStore>,
    resume: Resume,
}

/// Where the previous run left the spool and the positions.
#[derive(Default)]
struct Resume {
    /// Every alert up to this seq had its line's position recorded ([`SPOOLED_STATE`]).
    covered: u64,
    /// The ids of the alerts spooled after `covered` (see [`spooled_after`]): their lines are
    /// read again, and must not be spooled twice.
    in_spool: HashSet<String>,
}

/// Step 1: the enricher, the spool (recovered after a crash), the checkpoints, and the alerts
/// spooled after the last recorded position.
async fn open_state(config: &Config) -> Result<State, PipelineError> {
    let enricher = Enricher::new(&config.enrich)?;
    let (writer, reader, recovery) = open_spool(&config.spool).await?;
    if !recovery.cuts.is_empty() {
        tracing::warn!(
            ?recovery,
            "spool recovered after a crash; torn records were cut"
        );
    }
    let checkpoints = Arc::new(CheckpointStore::open(&config.state_dir)?);
    let covered = checkpoints
        .stage(SPOOLED_STATE)
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    let in_spool = spooled_after(&config.spool.dir, covered);
    if !in_spool.is_empty() {
        tracing::info!(
            alerts = in_spool.len(),
            "alerts spooled before the last stop, whose lines were not yet checkpointed: those \
             lines are read again but not spooled twice"
        );
    }
    Ok(State {
        enricher,
        writer,
        reader,
        checkpoints,
        resume: Resume { covered, in_spool },
    })
}

/// The supervised publisher and what the rest of the run reads of it.
struct Publisher {
    stage: SupervisedStage,
    stats: Arc<PublishStats>,
    /// When the last confirm arrived (ms since the epoch; the start until the first one).
    last_confirm_ms: Arc<AtomicI64>,
    /// Its own scope, not a child of the run's: it is cancelled only after the sources have
    /// stopped and their lines are spooled, so that what they read still gets its chance to
    /// be published.
    stop: Shutdown,
    task: AbortOnDropHandle<()>,
}

impl Publisher {
    /// Step 2: starts publishing from `reader`; a restarted publisher gets a new reader from the
    /// acked position (the old one went with the task that failed).
    fn start(
        config: &Config,
        reader: spool::SpoolReader,
        spool: &SpoolWriter,
        stages: &Stages,
        shutdown: &Shutdown,
    ) -> Publisher {
        let stop = Shutdown::new();
        let last_confirm_ms = Arc::new(AtomicI64::new(chrono::Utc::now().timestamp_millis()));
        let observe: publish::LatencyObserver = {
            let last = last_confirm_ms.clone();
            Arc::new(move |since_spooled| {
                events::alert_published(since_spooled);
                last.store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
            })
        };
        let stats = Arc::new(PublishStats::new(&config.broker, Some(observe)));
        let output: Arc<dyn Output> =
            Arc::new(publish::Amqp::new(config.broker.clone(), stats.clone()));
        let stage = stages.add(output.name());
        let (publisher_stop, mut first, spool) = (stop.clone(), Some(reader), spool.clone());
        let supervised = supervise(stage.clone(), stop.token.clone(), move || {
            let reader = first.take().unwrap_or_else(|| spool.reader());
            output.run(reader, publisher_stop.clone())
        });
        // Tracked with the run's other tasks, so that a caller waiting on the tracker also waits
        // for it; aborted if the run ends on an error.
        let task = AbortOnDropHandle::new(shutdown.tracker.spawn(supervised));
        Publisher {
            stage,
            stats,
            last_confirm_ms,
            stop,
            task,
        }
    }

    /// Running, and connected to one of the broker URLs.
    fn connected(&self) -> bool {
        self.stage.is_running() && self.stats.connected().iter().any(|(_, up)| *up)
    }

    /// Step 6: asks the publisher to stop and waits `drain` (the publisher's own wait for
    /// outstanding confirms) and a second more; then aborts it, since it must not outlive the
    /// run: it holds the spool (and its lock) open.
    async fn stop(self, drain: Duration) {
        self.stop.token.cancel();
        let mut task = self.task;
        match tokio::time::timeout(drain + Duration::from_secs(1), &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(%err, "publisher supervisor failed"),
            Err(_) => {
                // Aborting the supervisor aborts the publisher task it awaits.
                task.abort();
                let _ = task.await;
                tracing::warn!("publisher did not stop in time; unconfirmed alerts stay spooled");
            }
        }
    }
}

/// The supervised sources.
struct Sources {
    /// A child of the run's token: cancelled with it, or by [`Sources::stop`] when the stage
    /// ends first.
    token: CancellationToken,
    tasks: JoinSet<()>,
    /// Each source's current counters and path states (a restarted source has new ones).
    metrics: SourceMetricsSlots,
}

impl Sources {
    /// Step 3: one supervised task per configured source, whatever its kind; the receiver is the
    /// stage's end of their channel, bounded in bytes (`sources.buffer_bytes`, see
    /// `source::channel`).
    fn start(
        config: &Config,
        checkpoints: &Arc<CheckpointStore>,
        stages: &Stages,
        shutdown: &Shutdown,
    ) -> (Sources, LineReceiver) {
        let token = shutdown.token.child_token();
        let (tx, rx) = channel::channel(config.sources.buffer_bytes);
        let mut tasks = JoinSet::new();
        let metrics: SourceMetricsSlots = Arc::default();
        if let Some(nothing) = crate::source::nothing_to_read(&config.sources) {
            tracing::error!("{nothing}");
        }
        for (_, source) in config.sources.enabled() {
            let stage = stages.add(format!("source {}", source.name()));
            let (tx, token, checkpoints, slots) = (
                tx.clone(),
                token.clone(),
                checkpoints.clone(),
                metrics.clone(),
            );
            tasks.spawn(supervise(stage, token.clone(), move || {
                // A restarted source is built again, so it resumes from the positions recorded
                // so far.
                let built = source.build(&checkpoints);
                let (tx, token, slots) = (tx.clone(), token.clone(), slots.clone());
                async move {
                    let source = built?;
                    track_source_metrics(&slots, source.name(), source.metrics());
                    source.run(tx, token).await
                }
            }));
        }
        let sources = Sources {
            token,
            tasks,
            metrics,
        };
        (sources, rx)
    }

    /// Step 6: stops every source and waits for them.
    async fn stop(mut self) {
        self.token.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(err) = joined {
                tracing::error!(%err, "source supervisor failed");
            }
        }
    }
}

/// What the run keeps of its telemetry.
struct Telemetry {
    /// The spool as the gauges see it, let go of when the run ends.
    spool: SpoolGauges,
    /// The spool's sync thread, as `/health` shows it.
    sync_stage: SupervisedStage,
}

/// Step 4: exports the publisher's and the spool's metrics (the sources export theirs as they
/// start), and serves `/metrics` and `/health` unless the config turns them off.
async fn serve_telemetry(
    config: &Config,
    stages: &Stages,
    publisher: &Publisher,
    sources: &Sources,
    writer: &SpoolWriter,
    shutdown: &Shutdown,
) -> Result<Telemetry, PipelineError> {
    export_publish_metrics(&publisher.stats, publisher.stage.running_flag());
    let spool_gauges = export_spool_metrics(writer);
    let sync_stage = stages.add("spool sync");
    let health: http::HealthFn = {
        let (stats, spool, stages) = (
            publisher.stats.clone(),
            spool_gauges.clone(),
            stages.clone(),
        );
        let (publisher_stage, sync_stage) = (publisher.stage.clone(), sync_stage.clone());
        let (warning, stall) = (
            config.telemetry.spool_warning_records,
            config.broker.stall_timeout_ms,
        );
        let (last_confirm_ms, source_metrics) =
            (publisher.last_confirm_ms.clone(), sources.metrics.clone());
        Arc::new(move || {
            let spooled = spool.stats().unwrap_or_default();
            refresh_sync_stage(&sync_stage, &spooled);
            let returning = stats.returning();
            http::HealthInputs {
                stages: stages.health(),
                broker_connected: publisher_stage.is_running()
                    && stats.connected().iter().any(|(_, up)| *up),
                spool_pending_records: spooled.pending_records,
                spool_warning_records: warning,
                spool_full: spooled.full,
                unconfirmed_for_ms: unconfirmed_for_ms(
                    &spooled,
                    last_confirm_ms.load(Ordering::Relaxed),
                ),
                stall_timeout_ms: stall,
                unreadable: unreadable_paths(&source_metrics),
                broker_refusing_ms: stats.refusing().map(|d| d.as_millis() as u64),
                broker_returning_ms: returning.as_ref().map(|(d, _)| d.as_millis() as u64),
                broker_return_reason: returning.map(|(_, why)| why),
            }
        })
    };
    if let Some(addr) = config.telemetry.metrics_addr() {
        let listener = http::bind(addr).await?;
        // The address actually bound (port 0 picks one): a restart binds it again.
        let addr = listener.local_addr().unwrap_or(addr);
        tracing::info!(%addr, "serving /metrics and /health");
        let stage = stages.add("metrics server");
        let mut first = Some(listener);
        let server = shutdown.clone();
        shutdown
            .tracker
            .spawn(supervise(stage, shutdown.token.clone(), move || {
                let (listener, health, server) = (first.take(), health.clone(), server.clone());
                async move {
                    let listener = match listener {
                        Some(l) => l,
                        None => http::bind(addr).await?,
                    };
                    http::serve(listener, telemetry::registry(), health, server).await;
                    Ok::<(), telemetry::TelemetryError>(())
                }
            }));
    }
    Ok(Telemetry {
        spool: spool_gauges,
        sync_stage,
    })
}

/// How long alerts have been pending without a confirm: since the later of the last confirm
/// (or the start) and the oldest pending alert's spooling. `None` when nothing is pending.
fn unconfirmed_for_ms(spooled: &spool::SpoolStats, last_confirm_ms: i64) -> Option<u64> {
    if spooled.pending_records == 0 {
        return None;
    }
    let since = last_confirm_ms.max(spooled.oldest_pending_ms.unwrap_or(last_confirm_ms));
    let now = chrono::Utc::now().timestamp_millis();
    Some(u64::try_from(now - since).unwrap_or(0))
}

/// The spool's sync thread supervises itself; its stage shows whether its syncs succeed.
fn refresh_sync_stage(stage: &SupervisedStage, spooled: &spool::SpoolStats) {
    match &spooled.sync_failure {
        Some(why) => stage.stopped(format!("{why}; retrying")),
        None => stage.running(),
    }
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

/// The lifecycle stage, continuing from the ledger recorded with the checkpoints. A ledger that
/// cannot be read stops the start (naming the file): starting without it would resolve nothing
/// that was open and open again what was.
fn open_lifecycle(
    catalog: &Catalog,
    checkpoints: &CheckpointStore,
) -> Result<Lifecycle, PipelineError> {
    let error = |source| PipelineError::Ledger {
        file: checkpoints.path().to_path_buf(),
        source,
    };
    let restored = checkpoints
        .stage(lifecycle::STAGE)
        .map(Ledger::parse)
        .transpose()
        .map_err(error)?;
    Lifecycle::new(catalog, restored).map_err(error)
}

/// Alerts decoded and not appended yet, and the lines they came from.
#[derive(Default)]
struct Appending {
    payloads: Vec<Vec<u8>>,
    bytes: usize,
    /// Each line's source and position, how many of `payloads` came from it and before it, and
    /// the cross-source matcher's sightings and the lifecycle ledger's version after it.
    marks: Vec<(Arc<str>, Position, usize, u64, u64)>,
}

/// A position waiting for the spool to make `needed` durable.
struct Waiting {
    needed: u64,
    source: Arc<str>,
    position: Position,
    /// The cross-source matcher's sightings as read after this line (`Matcher::commit`).
    sightings: u64,
    /// The lifecycle ledger's version after this line (`Lifecycle::commit`).
    ledger: u64,
}

/// Where the matcher's counts are kept in the checkpoint store.
const MATCHER_STATE: &str = "cross_source";

/// Where the checkpoint store keeps the seq up to which every spooled alert has its line's
/// position recorded.
const SPOOLED_STATE: &str = "spooled_seq";

/// The ids of the alerts in the spool at `dir` after seq `covered`. Reading the spool fails only
/// in ways `open` already reported; then nothing is collected, which costs duplicates, not
/// alerts.
fn spooled_after(dir: &std::path::Path, covered: u64) -> HashSet<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    let mut ids = HashSet::new();
    if covered == 0 {
        return ids;
    }
    let records = match spool::inspect::inspect_after(dir, covered) {
        Ok(records) => records,
        Err(err) => {
            tracing::warn!(%err, "cannot read the spool's last records; lines read again after \
                the crash may be spooled twice (never lost)");
            return ids;
        }
    };
    for entry in records {
        if let Ok(spool::inspect::Entry::Record { seq, payload, .. }) = entry
            && seq > covered
            && let Ok(record) = serde_json::from_slice::<Id>(&payload)
        {
            ids.insert(record.id);
        }
    }
    ids
}

/// The cross-source matcher when both journald and files are read, continuing from the counts
/// stored with the checkpoints.
fn cross_source_matcher(config: &Config, checkpoints: &CheckpointStore) -> Option<Matcher> {
    if !config.sources.matches_across() {
        return None;
    }
    let window = config.sources.cross_source_window_secs;
    let Some(stored) = checkpoints.stage(MATCHER_STATE) else {
        return Some(Matcher::new(window));
    };
    let restored = serde_json::from_value::<MatcherState>(stored)
        .map_err(|e| e.to_string())
        .and_then(|state| Matcher::restore(window, &state).map_err(|e| e.to_string()));
    match restored {
        Ok(matcher) => Some(matcher),
        Err(reason) => {
            tracing::warn!(
                %reason,
                file = %checkpoints.path().display(),
                "cannot read the cross-source matcher's counts; starting without them (a line \
                 repeated within one second across this restart may get a new id)"
            );
            Some(Matcher::new(window))
        }
    }
}

/// Lines to alerts: decode against the catalog, then enrich. The daemon's stage and
/// `iemctl parse` both run this, after the same `source::lines::LineSplitter`, so that what
/// the tool shows cannot drift from what the daemon spools.
pub struct DecodeStage<'c> {
    decoder: Decoder<'c>,
    /// `None`: alerts are not enriched (`iemctl parse` without `--enrich`).
    enricher: Option<Enricher>,
}

impl<'c> DecodeStage<'c> {
    pub fn new(catalog: &'c Catalog, enricher: Option<Enricher>) -> Self {
        DecodeStage {
            decoder: Decoder::new(catalog),
            enricher,
        }
    }

    /// The alert of one line read at `source`, enriched; `None` when the line holds no IEM.
    pub fn alert(&self, line: &[u8], source: &LineSource<'_>, clock: &Clock) -> Option<Alert> {
        let mut alert = self.decoder.decode(line, source, clock)?;
        if let Some(enricher) = &self.enricher {
            enricher.enrich(&mut alert);
        }
        Some(alert)
    }
}

/// The decode -> enrich -> spool stage and its checkpoint bookkeeping.
struct Stage<'c> {
    decode: DecodeStage<'c>,
    tz: chrono_tz::Tz,
    writer: SpoolWriter,
    /// Present when both journald and files are read.
    matcher: Option<Matcher>,
    /// Pairs faults and resolutions, escalates, coalesces (between enrich and the spool).
    lifecycle: Lifecycle,
    /// The lifecycle's output for one alert (reused).
    made: Vec<Alert>,
    /// Ledger versions of the alerts the lifecycle made on its own (escalations, summaries,
    /// held faults), waiting for their seq like the lines' positions: `(needed, version)`.
    made_waiting: VecDeque<(u64, u64)>,
    /// The committed ledger version last recorded in the checkpoints.
    ledger_recorded: u64,
    checkpoints: Arc<CheckpointStore>,
    /// Positions in the order their lines were read; `needed` never decreases along it.
    waiting: VecDeque<Waiting>,
    /// The seq of the last alert appended by this run (0: none yet).
    last_seq: u64,
    /// Every alert up to this seq has its line's position recorded ([`SPOOLED_STATE`]).
    covered: u64,
    /// Ids of the alerts in the spool after the `covered` seq stored by the previous run: their
    /// lines are read again, and must not be spooled twice.
    in_spool: HashSet<String>,
    /// Positions were recorded since the last persist.
    recorded: bool,
    /// The last persist failed (logged once until it works again).
    persist_failing: bool,
    /// The last write of the checkpoints' hot copy failed (logged once until it works again).
    hot_failing: bool,
}

impl<'c> Stage<'c> {
    fn new(
        config: &Config,
        catalog: &'c Catalog,
        enricher: Enricher,
        lifecycle: Lifecycle,
        writer: SpoolWriter,
        checkpoints: Arc<CheckpointStore>,
        resume: Resume,
    ) -> Self {
        Stage {
            decode: DecodeStage::new(catalog, Some(enricher)),
            tz: config.parse.tz(),
            writer,
            matcher: cross_source_matcher(config, &checkpoints),
            lifecycle,
            made: Vec::new(),
            made_waiting: VecDeque::new(),
            ledger_recorded: 0,
            checkpoints,
            waiting: VecDeque::new(),
            last_seq: 0,
            covered: resume.covered,
            in_spool: resume.in_spool,
            recorded: false,
            persist_failing: false,
            hot_failing: false,
        }
    }

    /// Step 5: spools what the sources send until they have all stopped or `stop` is
    /// cancelled; commits positions as the spool makes their alerts durable, and once a second
    /// persists them and calls `tick` with the spool's figures.
    async fn run(
        &mut self,
        rx: &mut LineReceiver,
        stop: &CancellationToken,
        mut tick: impl FnMut(&spool::SpoolStats),
    ) -> Result<(), PipelineError> {
        let mut durable = self.writer.durable();
        let mut persist = tokio::time::interval(PERSIST_EVERY);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return Ok(()); // every source has stopped
                    }
                    // A full spool makes this wait (backpressure); at shutdown the wait is
                    // abandoned: those lines' checkpoints were not recorded, so they are read
                    // again next time.
                    tokio::select! {
                        r = self.process(&mut batch) => r?,
                        _ = stop.cancelled() => return Ok(()),
                    }
                    rx.release();
                }
                Ok(()) = durable.changed() => {
                    let seq = *durable.borrow_and_update();
                    self.commit_ready(seq)?;
                }
                _ = persist.tick() => {
                    // Lines without an IEM wait for no new seq: the current durable seq frees
                    // them. Like a batch, a full spool makes this wait, and a shutdown abandons
                    // the wait: what it made is made again at the next start (its ledger change
                    // was not recorded).
                    tokio::select! {
                        r = self.lifecycle_due() => r?,
                        _ = stop.cancelled() => return Ok(()),
                    }
                    let seq = *durable.borrow();
                    self.commit_ready(seq)?;
                    self.persist().await?;
                    tick(&self.writer.stats());
                }
            }
        }
    }

    /// Step 6, once the sources have stopped: syncs the spool, commits every position whose
    /// alerts are now durable and saves the checkpoints.
    fn finish(&mut self) -> Result<(), PipelineError> {
        let seq = self.writer.sync()?;
        self.commit_ready(seq)?;
        self.persist_now();
        tracing::info!(
            durable_seq = seq,
            "sources stopped, spool synced, checkpoints saved"
        );
        Ok(())
    }

    /// Decodes a batch of lines, appends their alerts to the spool in one go, and queues the
    /// lines' positions behind the seqs they depend on.
    async fn process(&mut self, batch: &mut Vec<SourceLine>) -> Result<(), PipelineError> {
        let clock = Clock::now(self.tz);
        let mut pending = Appending::default();
        for line in batch.drain(..) {
            let source = line.line_source();
            if let Some(mut alert) = self.decode.alert(&line.bytes, &source, &clock) {
                match (alert.kind, &alert.code, &alert.reason) {
                    (Kind::Iem, Some(code), _) => events::iem(&line.source, code),
                    (_, _, reason) => {
                        events::malformed(&line.source, reason.as_deref().unwrap_or(""))
                    }
                }
                let side = Side::of(alert.origin.kind);
                let verdict = self
                    .matcher
                    .as_mut()
                    .map_or(Verdict::Alert, |m| m.sight(&mut alert, side, clock.now));
                match verdict {
                    // Its position waits for the seqs before it, its first sighting's among them.
                    Verdict::Twin => events::cross_source_match(&line.source),
                    Verdict::Alert => {
                        // The lifecycle sees every alert, even one already spooled: the ledger
                        // recorded with the positions does not know it yet.
                        let now_ms = clock.now.timestamp_millis();
                        self.lifecycle.observe(alert, now_ms, &mut self.made);
                        for mut alert in self.made.drain(..) {
                            // Spooled before a crash, after the last recorded position: its
                            // position waits for the seqs before it, like a twin's.
                            if self.in_spool.remove(&alert.id) {
                                tracing::debug!(id = %alert.id, "alert already in the spool");
                                continue;
                            }
                            let payload = encode_fitting(&mut alert, &line.source)?;
                            pending.bytes += payload.len();
                            pending.payloads.push(payload);
                        }
                    }
                }
            }
            let sightings = self.matcher.as_ref().map_or(0, Matcher::sightings);
            pending.marks.push((
                line.source,
                line.position,
                pending.payloads.len(),
                sightings,
                self.lifecycle.version(),
            ));
            // Large alerts are appended as they come, so that a batch of them never holds
            // more than `APPEND_CHUNK` bytes of JSON (see `sources.buffer_bytes`).
            if pending.bytes >= APPEND_CHUNK {
                self.append(&mut pending).await?;
            }
        }
        self.append(&mut pending).await
    }

    /// Appends the alerts of `pending` in one go and queues its lines' positions behind the
    /// seqs they depend on.
    async fn append(&mut self, pending: &mut Appending) -> Result<(), PipelineError> {
        let payloads = &pending.payloads;
        let before = self.last_seq;
        if !payloads.is_empty() {
            // A full spool makes the append wait, for as long as the broker is away. Meanwhile
            // the alerts appended before become durable, and their lines' positions are
            // recorded as they do: else a SIGKILL during the wait would make those lines be
            // spooled again (seen in the chaos test).
            let writer = self.writer.clone();
            let mut durable = writer.durable();
            let append = writer.append_batch(payloads);
            tokio::pin!(append);
            self.last_seq = loop {
                tokio::select! {
                    appended = &mut append => break appended?,
                    Ok(()) = durable.changed() => {
                        let seq = *durable.borrow_and_update();
                        self.commit_ready(seq)?;
                    }
                }
            };
            events::alerts_spooled(payloads.len());
        }
        let first = self.last_seq + 1 - payloads.len() as u64;
        for (source, position, alerts_so_far, sightings, ledger) in
            std::mem::take(&mut pending.marks)
        {
            let needed = match alerts_so_far {
                0 => before,
                k => first + k as u64 - 1,
            };
            self.wait_for(Waiting {
                needed,
                source,
                position,
                sightings,
                ledger,
            });
        }
        pending.payloads.clear();
        pending.bytes = 0;
        Ok(())
    }

    fn wait_for(&mut self, next: Waiting) {
        // Merged only within one file (or journal): the matcher's committed counts must never
        // run ahead of a file whose position was replaced by another's.
        if let Some(last) = self.waiting.back_mut()
            && last.needed == next.needed
            && last.source == next.source
            && last.position.same_stream(&next.position)
        {
            last.position = next.position;
            last.sightings = next.sightings;
            last.ledger = next.ledger;
            return;
        }
        self.waiting.push_back(next);
    }

    /// Spools what the lifecycle made due (escalations, window summaries, held faults); their
    /// ledger changes wait for their seq like a line's position.
    async fn lifecycle_due(&mut self) -> Result<(), PipelineError> {
        self.lifecycle
            .due(chrono::Utc::now().timestamp_millis(), &mut self.made);
        if self.made.is_empty() {
            return Ok(());
        }
        let mut payloads = Vec::with_capacity(self.made.len());
        for mut alert in std::mem::take(&mut self.made) {
            // Made and spooled before a crash that came before its ledger change was recorded.
            if !self.in_spool.remove(&alert.id) {
                payloads.push(encode_fitting(&mut alert, "lifecycle")?);
            }
        }
        if payloads.is_empty() {
            self.made_waiting
                .push_back((self.last_seq, self.lifecycle.version()));
            return Ok(());
        }
        self.last_seq = self.writer.append_batch(&payloads).await?;
        events::alerts_spooled(payloads.len());
        self.made_waiting
            .push_back((self.last_seq, self.lifecycle.version()));
        Ok(())
    }

    /// Records every queued position whose alerts are durable (persisted on the next tick), and
    /// writes them at once to the checkpoints' hot copy, which a SIGKILL does not lose.
    fn commit_ready(&mut self, durable: u64) -> Result<(), PipelineError> {
        let mut moved = false;
        // The lifecycle's own alerts: their ledger changes come before those of any line read
        // after them, whose seqs are no lower.
        while let Some(&(needed, version)) = self.made_waiting.front()
            && needed <= durable
        {
            self.lifecycle.commit(version);
            self.made_waiting.pop_front();
            self.recorded = true;
            moved = true;
        }
        while let Some(front) = self.waiting.front() {
            if front.needed > durable {
                break;
            }
            if let Some(m) = &mut self.matcher {
                m.commit(front.sightings);
            }
            self.lifecycle.commit(front.ledger);
            self.checkpoints.record(&front.source, &front.position)?;
            self.covered = self.covered.max(front.needed);
            self.recorded = true;
            moved = true;
            self.waiting.pop_front();
        }
        if moved {
            // The matcher's counts, the covered seq and the ledger go with the positions, in the
            // hot copy as in the file.
            self.record_matcher();
            self.checkpoints
                .record_stage(SPOOLED_STATE, serde_json::Value::from(self.covered));
            self.record_ledger();
            match self.checkpoints.write_hot() {
                Ok(()) if std::mem::take(&mut self.hot_failing) => {
                    tracing::info!("hot copy of the checkpoints written again");
                }
                Ok(()) => {}
                Err(err) if !self.hot_failing => {
                    self.hot_failing = true;
                    tracing::warn!(%err, "cannot write the hot copy of the checkpoints; after a \
                        crash up to a second of lines may be spooled twice (never lost); check \
                        the state directory");
                }
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Records the cross-source matcher's counts beside the positions.
    fn record_matcher(&self) {
        if let Some(m) = &self.matcher {
            match serde_json::to_value(m.state()) {
                Ok(state) => self.checkpoints.record_stage(MATCHER_STATE, state),
                // Plain numbers and strings: cannot fail; the last stored counts stay.
                Err(err) => tracing::warn!(%err, "cannot encode the cross-source matcher's counts"),
            }
        }
    }

    /// Records the committed lifecycle ledger beside the positions, when it changed.
    fn record_ledger(&mut self) {
        let version = self.lifecycle.committed_version();
        if version == std::mem::replace(&mut self.ledger_recorded, version) {
            return;
        }
        match serde_json::to_value(self.lifecycle.committed()) {
            Ok(state) => self.checkpoints.record_stage(lifecycle::STAGE, state),
            // Plain data: cannot fail; the last recorded ledger stays.
            Err(err) => tracing::warn!(%err, "cannot encode the lifecycle ledger"),
        }
    }

    /// Writes the recorded checkpoints to disk, when there are new ones, on the blocking pool:
    /// their tmp file, fsync, rename and directory fsync must not hold the runtime's worker
    /// thread (the daemon runs one; the sources and the publisher share it), which a slow disk
    /// would stall for the length of the fsyncs. The stage itself waits, as it did. A failed write
    /// (a full disk) is not fatal: the positions stay recorded and the next tick tries again;
    /// until then a crash would only re-read more lines (same ids), never lose one.
    async fn persist(&mut self) -> Result<(), PipelineError> {
        if !self.recorded {
            return Ok(());
        }
        self.record_matcher();
        let store = self.checkpoints.clone();
        match tokio::task::spawn_blocking(move || store.persist()).await {
            Ok(saved) => self.saved(saved),
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            // The runtime is shutting down: the positions stay recorded, `finish` saves them.
            Err(_) => {}
        }
        Ok(())
    }

    /// [`Self::persist`] on the calling thread, for the end of the run.
    fn persist_now(&mut self) {
        if !self.recorded {
            return;
        }
        self.record_matcher();
        let saved = self.checkpoints.persist();
        self.saved(saved);
    }

    /// Accounts for a checkpoint write: logs a failure once, and the recovery once.
    fn saved(&mut self, saved: Result<(), CheckpointError>) {
        match saved {
            Ok(()) => {
                self.recorded = false;
                if std::mem::take(&mut self.persist_failing) {
                    tracing::info!("checkpoints saved again");
                }
                events::checkpoints_saved();
            }
            Err(err) if !self.persist_failing => {
                self.persist_failing = true;
                tracing::warn!(%err, "cannot save checkpoints; retrying every second");
            }
            Err(_) => {}
        }
    }
}

/// The alert's JSON, at most `spool::MAX_RECORD_LEN` bytes: an alert that would not fit a spool
/// record (the spool refuses it, and nothing may be lost between here and the broker) has its
/// message and raw line cut, and is marked `truncated`.
fn encode_fitting(alert: &mut Alert, source: &str) -> Result<Vec<u8>, PipelineError> {
    let limit = spool::MAX_RECORD_LEN as usize;
    let mut payload = crate::alert::encode(alert)?;
    let from = payload.len();
    // Escaping makes a byte of text 1 to 6 bytes of JSON: cut in proportion, and again until
    // it fits (each round keeps at most 7/8 of the share that fits).
    for _ in 0..64 {
        if payload.len() <= limit {
            break;
        }
        if alert.raw.is_empty() && alert.message.is_empty() {
            // What is left is the trailing JSON object and enrichment: drop them too.
            alert.extra = None;
            alert.hardware.clear();
            alert.impact = None;
            alert.recommendation = None;
        }
        let keep = |len: usize| len / 8 * 7 * limit / payload.len();
        let (raw, message) = (keep(alert.raw.len()), keep(alert.message.len()));
        cut_at_char(&mut alert.raw, raw);
        cut_at_char(&mut alert.message, message);
        alert.truncated = true;
        payload = crate::alert::encode(alert)?;
    }
    if payload.len() > limit {
        return Err(PipelineError::AlertTooLarge(payload.len()));
    }
    if payload.len() < from {
        events::alert_cut(source, from, payload.len());
    }
    Ok(payload)
}

/// Shortens `s` to at most `max` bytes, at a character boundary.
fn cut_at_char(s: &mut String, max: usize) {
    let mut at = max.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
}

/// Each source's current counters, by source name.
type SourceMetricsSlots = Arc<std::sync::Mutex<BTreeMap<Arc<str>, Arc<SourceMetrics>>>>;

/// Exports a (re)started source's counters and keeps them for `/health`.
fn track_source_metrics(slots: &SourceMetricsSlots, name: Arc<str>, metrics: Arc<SourceMetrics>) {
    export_source_metrics(&name, &metrics);
    if let Ok(mut slots) = slots.lock() {
        slots.insert(name, metrics);
    }
}

/// The source paths that exist but cannot be read now: `(source, path, reason)`.
fn unreadable_paths(slots: &SourceMetricsSlots) -> Vec<(String, String, String)> {
    let Ok(slots) = slots.lock() else {
        return Vec::new();
    };
    slots
        .iter()
        .flat_map(|(name, m)| {
            m.unreadable()
                .into_iter()
                .map(|d| (name.to_string(), d.path, d.reason))
        })
        .collect()
}

/// The sources count their own lines; the registry reads those counters at scrape time.
fn export_source_metrics(name: &str, metrics: &Arc<SourceMetrics>) {
    let r = telemetry::registry();
    for (counter, help, field) in SourceMetrics::COUNTERS {
        let m = metrics.clone();
        r.counter_fn(
            counter,
            help,
            &[("source", name)],
            Box::new(move || field(&m).load(Ordering::Relaxed) as f64),
        );
    }
}

/// One of the publisher's own counters.
type StatField = fn(&PublishStats) -> &std::sync::atomic::AtomicU64;

/// The publisher counts its own retries, nacks and returns, and its connections; a stopped
/// publisher shows no connection.
fn export_publish_metrics(stats: &Arc<PublishStats>, running: Arc<AtomicBool>) {
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
    for (reason, read) in [
        (
            "nack",
            PublishStats::refusing as fn(&PublishStats) -> Option<Duration>,
        ),
        ("return", |s| s.returning().map(|(d, _)| d)),
    ] {
        let s = stats.clone();
        r.gauge_fn(
            "iemd_publish_refused_seconds",
            "Seconds the broker has been refusing (nack) or returning alerts; 0 when it takes them.",
            &[("reason", reason)],
            Box::new(move || read(&s).map_or(0.0, |d| d.as_secs_f64())),
        );
    }
    for (i, (url, _)) in stats.connected().into_iter().enumerate() {
        let (s, running) = (stats.clone(), running.clone());
        r.gauge_fn(
            "iemd_broker_connected",
            "1 while the publisher is connected to this broker URL.",
            &[("url", &url)],
            Box::new(move || {
                let up = running.load(Ordering::Relaxed)
                    && s.connected().get(i).is_some_and(|(_, up)| *up);
                f64::from(u8::from(up))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Origin, OriginKind};
    use crate::source::{CursorPosition, FilePosition};

    /// A stage on a spool and checkpoints in a temporary directory, reading no source.
    fn stage<'c>(catalog: &'c Catalog, dir: &std::path::Path) -> Stage<'c> {
        let mut config = Config::default();
        config.sources = crate::config::sources::SourcesConfig::default();
        config.spool.dir = dir.join("spool");
        let (writer, _reader, _) = spool::open(&config.spool).unwrap();
        let checkpoints = Arc::new(CheckpointStore::open(&dir.join("state")).unwrap());
        let enricher = Enricher::new(&config.enrich).unwrap();
        let lifecycle = Lifecycle::new(catalog, None).unwrap();
        Stage::new(
            &config,
            catalog,
            enricher,
            lifecycle,
            writer,
            checkpoints,
            Resume::default(),
        )
    }

    fn file(ino: u64, next_offset: u64) -> Position {
        Position::File(FilePosition {
            path: "/var/log/messages".into(),
            dev: 1,
            ino,
            fingerprint: ino * 7,
            offset_of_line: next_offset - 1,
            next_offset,
        })
    }

    fn waiting(needed: u64, source: &str, position: Position) -> Waiting {
        Waiting {
            needed,
            source: source.into(),
            position,
            sightings: 0,
            ledger: 0,
        }
    }

    /// `(needed, source, inode or 0 for the journal, next offset or 0)` of each waiting position.
    fn queued(stage: &Stage<'_>) -> Vec<(u64, String, u64, u64)> {
        let place = |p: &Position| match p {
            Position::File(f) => (f.ino, f.next_offset),
            Position::Cursor(_) => (0, 0),
        };
        stage
            .waiting
            .iter()
            .map(|w| {
                let (ino, next) = place(&w.position);
                (w.needed, w.source.to_string(), ino, next)
            })
            .collect()
    }

    #[test]
    fn wait_for_merges_only_positions_of_one_stream_waiting_for_the_same_seq() {
        let (catalog, dir) = (Catalog::builtin(), tempfile::tempdir().unwrap());
        let mut stage = stage(&catalog, dir.path());
        let journal = || {
            Position::Cursor(CursorPosition {
                cursor: "s=1".into(),
            })
        };
        stage.wait_for(waiting(0, "syslog", file(1, 10)));
        stage.wait_for(waiting(0, "syslog", file(1, 20))); // replaces the one before
        stage.wait_for(waiting(0, "syslog", file(2, 5))); // the path's next file: apart
        stage.wait_for(waiting(0, "journald", journal())); // another source: apart
        stage.wait_for(waiting(0, "journald", journal())); // replaces the one before
        stage.wait_for(waiting(1, "journald", journal())); // a later seq: apart
        stage.wait_for(waiting(1, "syslog", file(2, 9)));
        let s = |n: &str| n.to_string();
        assert_eq!(
            queued(&stage),
            vec![
                (0, s("syslog"), 1, 20),
                (0, s("syslog"), 2, 5),
                (0, s("journald"), 0, 0),
                (1, s("journald"), 0, 0),
                (1, s("syslog"), 2, 9),
            ]
        );
    }

    #[test]
    fn commit_ready_records_in_order_the_positions_whose_seq_is_durable() {
        let (catalog, dir) = (Catalog::builtin(), tempfile::tempdir().unwrap());
        let mut stage = stage(&catalog, dir.path());
        let path = std::path::Path::new("/var/log/messages");
        let hot = || CheckpointStore::open(&dir.path().join("state")).unwrap();
        stage.wait_for(waiting(0, "syslog", file(1, 10)));
        stage.wait_for(waiting(2, "syslog", file(1, 20)));
        stage.wait_for(waiting(3, "syslog", file(1, 30)));

        // Nothing appended yet: the line that waits for no alert is free at once, alone.
        stage.commit_ready(0).unwrap();
        assert_eq!(queued(&stage).len(), 2);
        assert!(stage.recorded);
        assert_eq!(stage.checkpoints.file(path).unwrap().next_offset, 10);
        // Not persisted, but in the hot copy a crash does not lose.
        assert_eq!(hot().file(path).unwrap().next_offset, 10);

        // Seq 1 durable: the position waiting for seq 2 stays, and so does every one after it.
        stage.commit_ready(1).unwrap();
        assert_eq!(queued(&stage).len(), 2);
        assert_eq!(stage.checkpoints.file(path).unwrap().next_offset, 10);

        stage.commit_ready(3).unwrap();
        assert_eq!(queued(&stage), vec![]);
        assert_eq!(stage.checkpoints.file(path).unwrap().next_offset, 30);
        assert_eq!(hot().file(path).unwrap().next_offset, 30);

        // Persisted once, then nothing to write until a position moves again.
        stage.persist_now();
        assert!(!stage.recorded);
        let text = std::fs::read_to_string(stage.checkpoints.path()).unwrap();
        assert!(text.contains("\"next_offset\":30"), "{text}");
        stage.commit_ready(3).unwrap();
        assert!(!stage.recorded);
    }

    /// Regression: a 9 MiB IEM line made an 18.9 MB record, which the spool could not read
    /// back. Now an alert over the record limit is cut to fit and marked truncated.
    #[test]
    fn an_alert_too_large_for_a_record_is_cut_to_fit() {
        let origin = Origin {
            kind: OriginKind::File,
            path: Some("/var/log/messages".into()),
            cursor: None,
            offset: Some(0),
            program: None,
            pid: None,
            host: None,
            priority: None,
        };
        // Control bytes escape to six bytes each: 3 MiB of them is 18 MiB of JSON per field.
        let text = format!("IEC:ES0030010001:{}é", "\u{1}".repeat(3 << 20));
        let mut alert = Alert::bare("id".into(), "t".into(), origin, text.clone(), false);
        alert.message = text;
        let payload = encode_fitting(&mut alert, "unit-test").unwrap();
        assert!(payload.len() <= spool::MAX_RECORD_LEN as usize);
        assert!(
            payload.len() > spool::MAX_RECORD_LEN as usize / 2,
            "cut too much"
        );
        let back: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(back["truncated"], true);
        assert!(
            back["raw"]
                .as_str()
                .unwrap()
                .starts_with("IEC:ES0030010001:\u{1}")
        );

        // A record that fits is left alone.
        let mut small = alert.clone();
        small.raw = "IEC:ES0030010001:x".into();
        small.message = "x".into();
        small.truncated = false;
        let payload = encode_fitting(&mut small, "unit-test").unwrap();
        assert_eq!(payload, crate::alert::encode(&small).unwrap());
        assert!(!small.truncated);
    }

    /// `--check-config` refuses a `max_line_bytes` whose worst-case alert cannot fit a record:
    /// the longest line it accepts, every byte a control character, still fits uncut.
    #[test]
    fn the_longest_line_the_config_accepts_fits_a_record() {
        use crate::config::sources::{MAX_LINE_BYTES_CEILING, SPOOL_RECORD_LIMIT};
        assert_eq!(SPOOL_RECORD_LIMIT, spool::MAX_RECORD_LEN as usize);
        let catalog = Catalog::builtin();
        let decoder = Decoder::new(&catalog);
        let head = "Nov 21 22:50:01 node1 s3server[1234]: IEC:ES0030010001:";
        let mut line = head.as_bytes().to_vec();
        line.resize(MAX_LINE_BYTES_CEILING, 1);
        let source = LineSource {
            kind: OriginKind::File,
            path: Some("/var/log/a-rather-long-path/to/the/messages"),
            offset: Some(u64::MAX),
            fingerprint: 1,
            truncated: true,
        };
        let mut alert = decoder
            .decode(&line, &source, &Clock::now(chrono_tz::UTC))
            .unwrap();
        let plain = crate::alert::encode(&alert).unwrap();
        assert!(plain.len() > 11 * MAX_LINE_BYTES_CEILING, "{}", plain.len());
        assert!(plain.len() <= spool::MAX_RECORD_LEN as usize);
        assert_eq!(encode_fitting(&mut alert, "unit-test").unwrap(), plain);
    }
}
