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
//! the spool is synced, the checkpoints persisted, and the publisher gets `drain_timeout` to
//! finish what it has in flight before it is stopped too.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::alert::OriginKind;
use crate::catalog::decode::{Clock, Decoder, LineSource};
use crate::catalog::{Catalog, CatalogError};
use crate::config::Config;
use crate::publish::{self, PublishError, PublishStats};
use crate::shutdown::Shutdown;
use crate::source::checkpoint::{CheckpointError, CheckpointStore};
use crate::source::file::FileSource;
use crate::source::journald::JournaldSource;
use crate::source::{Position, SourceError, SourceLine};
use crate::spool::{self, SpoolError, SpoolWriter};

/// Lines taken from the sources' channel at once: one spool append and one lock for all.
const BATCH: usize = 512;
/// How often recorded checkpoints are written to disk.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// How long the publisher may take to finish in-flight confirms at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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
    Encode(#[from] serde_json::Error),
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), PipelineError> {
    let catalog = Catalog::load(&config.catalog_dirs)?;
    let (writer, reader, recovery) = spool::open(&config.spool)?;
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
    let publish_stats = Arc::new(PublishStats::new(&config.broker, None));
    let publisher = {
        let broker = config.broker.clone();
        let stop = publisher_shutdown.clone();
        let stats = publish_stats.clone();
        tokio::spawn(async move { publish::run(&broker, reader, stop, stats).await })
    };

    let source_token = shutdown.token.child_token();
    let (tx, mut rx) = mpsc::channel::<SourceLine>(BATCH * 8);
    let mut sources = JoinSet::new();
    for file in &config.sources.files {
        let source = FileSource::new(file, checkpoints.files());
        sources.spawn(source.run(tx.clone(), source_token.clone()));
    }
    if config.sources.journald.enabled {
        let name = &config.sources.journald.name;
        let source = JournaldSource::new(&config.sources.journald, checkpoints.journal(name));
        sources.spawn(source.run(tx.clone(), source_token.clone()));
    }
    drop(tx);
    tracing::info!(
        files = config.sources.files.len(),
        journald = config.sources.journald.enabled,
        spool = %config.spool.dir.display(),
        "iemd running"
    );

    let mut stage = Stage {
        decoder: Decoder::new(&catalog),
        tz: config.parse.tz(),
        writer,
        checkpoints: checkpoints.clone(),
        waiting: VecDeque::new(),
        last_seq: 0,
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
                checkpoints.persist()?;
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
    checkpoints.persist()?;
    tracing::info!(
        durable_seq = seq,
        "sources stopped, spool synced, checkpoints saved"
    );

    publisher_shutdown.token.cancel();
    match tokio::time::timeout(DRAIN_TIMEOUT, publisher).await {
        Ok(Ok(result)) => result?,
        Ok(Err(err)) => tracing::error!(%err, "publisher task failed"),
        Err(_) => tracing::warn!("publisher did not stop in time; unconfirmed alerts stay spooled"),
    }
    Ok(())
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
    tz: chrono_tz::Tz,
    writer: SpoolWriter,
    checkpoints: Arc<CheckpointStore>,
    /// Positions in the order their lines were read; `needed` never decreases along it.
    waiting: VecDeque<Waiting>,
    /// The seq of the last alert appended by this run (0: none yet).
    last_seq: u64,
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
            if let Some(alert) = self.decoder.decode(&line.bytes, &source, &clock) {
                payloads.push(serde_json::to_vec(&alert)?);
            }
            marks.push((line.source, line.position, payloads.len()));
        }
        let before = self.last_seq;
        if !payloads.is_empty() {
            self.last_seq = self.writer.append_batch(&payloads).await?;
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
            self.waiting.pop_front();
        }
        Ok(())
    }
}
