//! The seam where a destination plugs in: an [`Output`] takes the spool's records through the
//! [`Records`] contract (next, ack, rewind) and delivers them somewhere. The AMQP publisher
//! (`publish::Amqp`) is the one output today; a file or HTTP output is another `impl Output`, and
//! the pipeline starts it the same way.
//!
//! # The contract, and why it keeps nothing from being lost
//!
//! - [`Records::next`] hands out records in spool order, each once, starting after the acked
//!   position.
//! - [`Records::ack`] says the destination has durably taken every record handed out up to a
//!   seq. An output acks in order and never past a record it did not deliver, so the acked
//!   position is always a prefix of the log, and the spool frees only what is delivered.
//! - [`Records::rewind`] after a failure: the next `next` starts again at the first record not
//!   acked, so the output re-sends in order, the same records with the same ids (at-least-once;
//!   the alert id is the consumer's key for de-duplication).
//!
//! An output that cannot reach its destination retries (with backoff) rather than returning: it
//! returns an error only for what waiting cannot fix (a bad credential file, an unreadable
//! spool), and the supervisor restarts it with a fresh reader from the acked position.

use std::future::Future;

use futures_util::future::BoxFuture;

use crate::shutdown::Shutdown;
use crate::spool::{Record, SpoolError, SpoolReader};

/// Where an output takes its records from, in order: the spool reader for the daemon, a fixed
/// [`RecordList`] for `iemctl replay --publish`.
pub(crate) trait Records: Send {
    /// The next record after the last one handed out (after [`rewind`](Records::rewind), the
    /// first one not acked), waiting until there is one; `None` when there will be no more (a
    /// list's end; the spool never ends). Cancel-safe: nothing moves until a record is returned.
    fn next(&mut self) -> impl Future<Output = Result<Option<Record>, SpoolError>> + Send;

    /// Every record handed out up to `seq` is delivered: it is not handed out again, and the
    /// spool may free it. Called in order, never past a record that was not delivered.
    fn ack(&mut self, seq: u64);

    /// The next [`next`](Records::next) starts again at the first record not acked.
    #[allow(
        dead_code,
        reason = "part of the Records contract; the daemon's publisher calls SpoolReader::rewind directly"
    )]
    fn rewind(&mut self);
}

impl Records for SpoolReader {
    async fn next(&mut self) -> Result<Option<Record>, SpoolError> {
        SpoolReader::next(self).await.map(Some)
    }

    fn ack(&mut self, seq: u64) {
        SpoolReader::ack(self, seq);
    }

    fn rewind(&mut self) {
        SpoolReader::rewind(self);
    }
}

/// A fixed list of records in seq order (`iemctl replay --publish`, which never touches the
/// spool): handed out once each; `ack` only remembers how far the destination took them.
pub(crate) struct RecordList<'r> {
    records: &'r [Record],
    next: usize,
    acked: usize,
}

impl<'r> RecordList<'r> {
    pub(crate) fn new(records: &'r [Record]) -> Self {
        RecordList {
            records,
            next: 0,
            acked: 0,
        }
    }
}

impl Records for RecordList<'_> {
    async fn next(&mut self) -> Result<Option<Record>, SpoolError> {
        let rec = self.records.get(self.next).cloned();
        self.next += usize::from(rec.is_some());
        Ok(rec)
    }

    fn ack(&mut self, seq: u64) {
        let upto = self.records[..self.next].partition_point(|r| r.seq <= seq);
        self.acked = self.acked.max(upto);
    }

    fn rewind(&mut self) {
        self.next = self.acked;
    }
}

/// An output's own error (for AMQP, `publish::PublishError`), boxed so that every output fits
/// the one seam; downcast it to match on it.
pub(crate) type OutputError = Box<dyn std::error::Error + Send + Sync>;

/// A destination for spooled records.
pub(crate) trait Output: Send + Sync {
    /// Its name: the supervised stage in `/health` and `iemd_stage_up{stage}`, and in logs.
    fn name(&self) -> &'static str;

    /// Delivers records from `records` (see the module's contract) until `shutdown` is
    /// requested; then waits a bounded time for what is in flight, acks it, and returns
    /// `Ok(())`. A destination that is away is retried, not returned.
    fn run(
        &self,
        records: SpoolReader,
        shutdown: Shutdown,
    ) -> BoxFuture<'static, Result<(), OutputError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> Record {
        Record {
            seq,
            time_ms: 0,
            payload: vec![],
        }
    }

    async fn seqs(r: &mut RecordList<'_>, n: usize) -> Vec<Option<u64>> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(r.next().await.unwrap().map(|r| r.seq));
        }
        out
    }

    #[tokio::test]
    async fn a_record_list_rewinds_to_the_first_record_not_acked() {
        let recs = [rec(3), rec(4), rec(7), rec(9)];
        let mut list = RecordList::new(&recs);
        assert_eq!(seqs(&mut list, 3).await, [Some(3), Some(4), Some(7)]);
        list.ack(4);
        list.rewind();
        assert_eq!(seqs(&mut list, 3).await, [Some(7), Some(9), None]);
        // Acks never go back, nor past what was handed out.
        list.ack(3);
        list.rewind();
        assert_eq!(seqs(&mut list, 1).await, [Some(7)]);
        list.rewind();
        list.ack(100);
        assert_eq!(seqs(&mut list, 1).await, [Some(7)]);
        assert_eq!(seqs(&mut list, 2).await, [Some(9), None]);
        list.ack(100);
        list.rewind();
        assert_eq!(seqs(&mut list, 1).await, [None]);
    }
}
