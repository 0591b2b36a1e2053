//! The ledger of open faults: what is open now (`live`) and what is durable (`committed`).
//!
//! Every change is one entry's new value, numbered by a version that only grows. The stage
//! applies it to `live` at once, so that the next alert sees it, and keeps it in a journal until
//! the pipeline says the alerts (and lines) up to that version are durable in the spool; then it
//! is applied to `committed`, the state recorded with the checkpoints. So the recorded ledger and
//! the recorded positions always describe the same lines.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::alert::{Alert, ResourceRef};
use crate::catalog::Family;

/// The ledger's on-disk format version (`LedgerState::version`).
pub(crate) const VERSION: u32 = 1;

/// A fault is found by its code family and its resource.
pub(crate) type Key = (Family, ResourceRef);

/// The repeats of an open fault gathered for one summary (`coalesce`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Window {
    /// Wall-clock ms at the first repeat: the tick closes the window `coalesce` after it.
    pub(crate) start_ms: i64,
    /// Event time (ms) of the first repeat: a repeat whose event time is `coalesce` after it
    /// closes the window. Read again after a crash, the same lines make the same windows.
    #[serde(default)]
    pub(crate) start_event_ms: i64,
    /// Repeats in it (with a producer's own counts).
    pub(crate) count: u64,
    /// Event time of the first and last repeat (RFC 3339), and the last one's message.
    pub(crate) first_seen: String,
    pub(crate) last_seen: String,
    pub(crate) last_message: String,
}

/// One open fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub family: Family,
    pub resource: ResourceRef,
    /// The fault's alert as published (or, while held down, as it will be).
    pub alert: Alert,
    /// Wall-clock ms when it was raised.
    pub opened_ms: i64,
    /// Times seen while open, the fault itself included.
    pub count: u64,
    /// The producer's last running count (Motr's "Event count"), to count what it throttled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) producer_count: Option<u64>,
    /// Escalations published so far, and when the next one is due (wall-clock ms).
    #[serde(default)]
    pub escalations: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) next_escalation_ms: Option<i64>,
    /// Summaries published so far (numbers the next one), and the window being gathered.
    #[serde(default)]
    pub(crate) summaries: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) window: Option<Window>,
    /// Held down until this wall-clock ms: not published yet (`hold_down`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until_ms: Option<i64>,
}

/// The ledger as recorded with the checkpoints (stage `lifecycle`) and listed by `iemctl faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LedgerState {
    pub(crate) version: u32,
    pub faults: Vec<Fault>,
    /// Flaps so far per fault and resource (`hold_down`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) flaps: Vec<(Family, ResourceRef, u64)>,
}

/// Why a recorded ledger cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger version {0} is not one this iemd reads ({VERSION})")]
    Version(u32),
    #[error("ledger does not parse: {0}")]
    Parse(#[from] serde_json::Error),
}

/// One change: an entry's new value (`None`: closed). The fault is shared by `live`, the
/// journal and then `committed`: a change does not copy it (an open fault holds its whole
/// alert).
#[derive(Debug, Clone)]
enum Change {
    Fault(Key, Option<Arc<Fault>>),
    Flaps(Key, u64),
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Entries {
    faults: BTreeMap<Key, Arc<Fault>>,
    flaps: BTreeMap<Key, u64>,
}

impl Entries {
    fn apply(&mut self, change: Change) {
        match change {
            Change::Fault(key, Some(fault)) => {
                self.faults.insert(key, fault);
            }
            Change::Fault(key, None) => {
                self.faults.remove(&key);
            }
            Change::Flaps(key, n) => {
                self.flaps.insert(key, n);
            }
        }
    }

    fn state(&self) -> LedgerState {
        LedgerState {
            version: VERSION,
            faults: self.faults.values().map(|f| Fault::clone(f)).collect(),
            flaps: self
                .flaps
                .iter()
                .map(|((f, r), n)| (*f, r.clone(), *n))
                .collect(),
        }
    }
}

/// The open faults, live and committed.
#[derive(Debug, Default)]
pub struct Ledger {
    live: Entries,
    committed: Entries,
    /// Changes applied to `live` and not yet to `committed`, in version order.
    journal: VecDeque<(u64, Change)>,
    version: u64,
    /// The version of the last change committed.
    committed_version: u64,
}

impl Ledger {
    /// A ledger continuing from a recorded state (live and committed both equal to it).
    pub(crate) fn restore(state: LedgerState) -> Result<Ledger, LedgerError> {
        if state.version != VERSION {
            return Err(LedgerError::Version(state.version));
        }
        let mut entries = Entries::default();
        for fault in state.faults {
            entries
                .faults
                .insert((fault.family, fault.resource.clone()), Arc::new(fault));
        }
        for (f, r, n) in state.flaps {
            entries.flaps.insert((f, r), n);
        }
        Ok(Ledger {
            live: entries.clone(),
            committed: entries,
            journal: VecDeque::new(),
            version: 0,
            committed_version: 0,
        })
    }

    /// Reads a state recorded by [`Ledger::committed`].
    pub fn parse(value: serde_json::Value) -> Result<LedgerState, LedgerError> {
        let state: LedgerState = serde_json::from_value(value)?;
        if state.version != VERSION {
            return Err(LedgerError::Version(state.version));
        }
        Ok(state)
    }

    /// The version after the last change.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn get(&self, key: &Key) -> Option<&Fault> {
        self.live.faults.get(key).map(|f| &**f)
    }

    pub(crate) fn open(&self) -> impl Iterator<Item = &Fault> {
        self.live.faults.values().map(|f| &**f)
    }

    pub(crate) fn open_count(&self) -> usize {
        self.live.faults.len()
    }

    pub(crate) fn flaps(&self, key: &Key) -> u64 {
        self.live.flaps.get(key).copied().unwrap_or(0)
    }

    /// Sets (or, with `None`, closes) a fault.
    pub(crate) fn set(&mut self, key: Key, fault: Option<Fault>) {
        self.change(Change::Fault(key, fault.map(Arc::new)));
    }

    pub(crate) fn set_flaps(&mut self, key: Key, n: u64) {
        self.change(Change::Flaps(key, n));
    }

    fn change(&mut self, change: Change) {
        self.version += 1;
        self.live.apply(change.clone());
        self.journal.push_back((self.version, change));
    }

    /// The changes up to `version` are durable: they join the committed state.
    pub(crate) fn commit(&mut self, version: u64) {
        while let Some((v, _)) = self.journal.front()
            && *v <= version
        {
            if let Some((v, change)) = self.journal.pop_front() {
                self.committed.apply(change);
                self.committed_version = v;
            }
        }
    }

    /// The version of the last committed change (0: none since the start).
    pub(crate) fn committed_version(&self) -> u64 {
        self.committed_version
    }

    /// The committed state, to record with the checkpoints.
    pub(crate) fn committed(&self) -> LedgerState {
        self.committed.state()
    }

    /// The live state (tests, `/health`).
    pub(crate) fn live(&self) -> LedgerState {
        self.live.state()
    }
}
