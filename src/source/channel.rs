//! The channel from the sources to the pipeline's stage, bounded in bytes rather than in lines.
//!
//! Regression it pins: the channel held 4,096 lines of any size, so with the spool full and the
//! broker down, 64 KiB lines took the daemon to 285 MB (4 MiB journal entries would have allowed
//! 16 GiB). Now:
//!
//! - every line in flight holds permits of one byte budget (`sources.buffer_bytes`, 2 MiB by
//!   default) for its bytes and its position, from `send` until the stage calls
//!   [`LineReceiver::release`] after it has spooled the batch; a full budget makes `send` wait,
//!   which stops the reading (backpressure), as a full channel did;
//! - a line that cannot hold an IEM (no `IEC:` marker; for journald also no `IEM_CODE` field and
//!   no `MESSAGE` sent as a byte array) travels as its position only: its bytes are dropped at
//!   `send`, so thousands of ordinary lines cost a few hundred bytes each. The stage needs their
//!   positions, not their text, to move the checkpoints.
//!
//! A line larger than the whole budget takes the whole budget, so it still passes, alone.

use std::sync::Arc;

use memchr::memmem;
use tokio::sync::{Semaphore, mpsc};

use super::SourceLine;

/// Default of `sources.buffer_bytes`.
pub(crate) const DEFAULT_BUFFER_BYTES: usize = 2 << 20;

/// What a line costs beside its bytes: the struct, its source name and its position.
const LINE_OVERHEAD: usize = std::mem::size_of::<SourceLine>() + 64;

/// The receiving end is gone: the source should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline stopped taking lines")]
pub(crate) struct Closed;

/// Where a source sends its lines: the pipeline's byte-bounded channel, or a plain bounded
/// channel (tests, tools) that keeps every line whole.
#[derive(Clone)]
pub enum LineSender {
    Plain(mpsc::Sender<SourceLine>),
    Budget(BudgetSender),
}

/// The sending half of [`channel`].
#[derive(Clone)]
pub struct BudgetSender {
    tx: mpsc::UnboundedSender<SourceLine>,
    budget: Arc<Semaphore>,
    total: usize,
}

/// The receiving half of [`channel`]: the stage's end.
pub(crate) struct LineReceiver {
    rx: mpsc::UnboundedReceiver<SourceLine>,
    budget: Arc<Semaphore>,
    total: usize,
    /// Permits of the lines received and not released yet.
    held: usize,
}

/// A channel whose lines in flight hold at most `budget_bytes` (at least one line at a time).
pub(crate) fn channel(budget_bytes: usize) -> (LineSender, LineReceiver) {
    let total = budget_bytes.clamp(1, u32::MAX as usize);
    let budget = Arc::new(Semaphore::new(total));
    let (tx, rx) = mpsc::unbounded_channel();
    (
        LineSender::Budget(BudgetSender {
            tx,
            budget: budget.clone(),
            total,
        }),
        LineReceiver {
            rx,
            budget,
            total,
            held: 0,
        },
    )
}

impl From<mpsc::Sender<SourceLine>> for LineSender {
    fn from(tx: mpsc::Sender<SourceLine>) -> Self {
        LineSender::Plain(tx)
    }
}

impl LineSender {
    /// True when every line must be sent whole; false for the pipeline's channel, which keeps
    /// only the position of a line that cannot hold an IEM (so a source may send, for a run of
    /// such lines, the position after the last of them alone).
    pub(crate) fn keeps_every_line(&self) -> bool {
        matches!(self, LineSender::Plain(_))
    }

    /// Sends one line, waiting while the channel is full.
    pub(crate) async fn send(&self, mut line: SourceLine) -> Result<(), Closed> {
        match self {
            LineSender::Plain(tx) => tx.send(line).await.map_err(|_| Closed),
            LineSender::Budget(b) => {
                if !may_hold_iem(&line.bytes) {
                    line.bytes = Vec::new();
                }
                let cost = cost(&line, b.total);
                // `cost` is at most `total`, which fits a u32 (see `channel`).
                let permits = b
                    .budget
                    .acquire_many(u32::try_from(cost).unwrap_or(u32::MAX))
                    .await
                    .map_err(|_| Closed)?;
                permits.forget();
                b.tx.send(line).map_err(|_| Closed)
            }
        }
    }
}

impl LineReceiver {
    /// Receives up to `limit` lines into `buffer` (0: every sender is gone). Their budget stays
    /// held until [`release`](Self::release).
    pub(crate) async fn recv_many(&mut self, buffer: &mut Vec<SourceLine>, limit: usize) -> usize {
        let start = buffer.len();
        let n = self.rx.recv_many(buffer, limit).await;
        self.held += buffer[start..]
            .iter()
            .map(|l| cost(l, self.total))
            .sum::<usize>();
        n
    }

    /// Gives back the budget of every line received so far (call once they are spooled).
    pub(crate) fn release(&mut self) {
        self.budget.add_permits(std::mem::take(&mut self.held));
    }

    /// Bytes of the budget held by lines sent and not yet released.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.total - self.budget.available_permits()
    }
}

/// What a line holds of the budget: its bytes, its position, and the struct itself.
fn cost(line: &SourceLine, total: usize) -> usize {
    (line.bytes.capacity() + line.position.heap_bytes() + LINE_OVERHEAD).min(total)
}

/// False only for a line that cannot give an alert: no `IEC:` marker, and (journald) no
/// `IEM_CODE` field and no `MESSAGE` written as a byte array (whose marker would be numbers).
fn may_hold_iem(bytes: &[u8]) -> bool {
    memmem::find(bytes, b"IEC:").is_some()
        || (bytes.first() == Some(&b'{')
            && (memmem::find(bytes, b"\"IEM_CODE\"").is_some()
                || memmem::find(bytes, b"\"MESSAGE\":[").is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{CursorPosition, FilePosition, Position};

    fn line(text: &[u8]) -> SourceLine {
        SourceLine {
            source: Arc::from("t"),
            kind: crate::alert::OriginKind::File,
            bytes: text.to_vec(),
            truncated: false,
            position: Position::File(FilePosition {
                path: "/var/log/messages".into(),
                dev: 1,
                ino: 2,
                fingerprint: 3,
                offset_of_line: 0,
                next_offset: text.len() as u64 + 1,
            }),
        }
    }

    #[tokio::test]
    async fn lines_without_a_marker_travel_as_their_position_only() {
        let (tx, mut rx) = channel(1 << 20);
        for text in [
            &b"Nov 21 22:50:01 node1 sshd[1]: Accepted publickey"[..],
            b"Nov 21 22:50:01 node1 s3server[1]: IEC:ES0030010001:down",
            br#"{"MESSAGE":"cert expires","IEM_CODE":"WS0060010001","__CURSOR":"c"}"#,
            br#"{"MESSAGE":[73,69,67,58],"__CURSOR":"c"}"#,
            br#"{"MESSAGE":"plain","__CURSOR":"c"}"#,
        ] {
            let mut l = line(text);
            if text[0] == b'{' {
                l.position = Position::Cursor(CursorPosition { cursor: "c".into() });
            }
            tx.send(l).await.unwrap();
        }
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 10).await, 5);
        let kept: Vec<bool> = got.iter().map(|l| !l.bytes.is_empty()).collect();
        assert_eq!(kept, [false, true, true, true, false]);
        assert!(matches!(got[0].position, Position::File(_)));
    }

    /// The budget bounds the bytes in flight: a sender waits until the stage releases.
    #[tokio::test]
    async fn a_full_budget_makes_the_sender_wait_until_release() {
        let big = |i: u8| {
            let mut text = b"IEC:ES0030010001:".to_vec();
            text.resize(60 << 10, b'a' + i);
            line(&text)
        };
        let (tx, mut rx) = channel(200 << 10);
        for i in 0..3 {
            tx.send(big(i)).await.unwrap();
        }
        assert!(rx.in_flight() > 180 << 10);
        let blocked = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(big(3)).await }
        });
        tokio::task::yield_now().await;
        let mut got = Vec::new();
        rx.recv_many(&mut got, 10).await;
        assert_eq!(got.len(), 3);
        assert!(!blocked.is_finished(), "sent past the budget");
        got.clear();
        rx.release();
        blocked.await.unwrap().unwrap();
        assert_eq!(rx.recv_many(&mut got, 10).await, 1);
        // A line larger than the whole budget still passes, alone.
        let (tx, mut rx) = channel(1000);
        tx.send(big(0)).await.unwrap();
        assert_eq!(rx.in_flight(), 1000);
        assert_eq!(rx.recv_many(&mut got, 10).await, 1);
    }
}
