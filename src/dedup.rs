//! Cross-source matching: an IEM read both through journald and through a file that rsyslog fed
//! from the journal is one alert. Used only when both kinds of source are configured (the
//! default configuration reads one of them, see `config::sources`).
//!
//! # What is matched
//!
//! A *sighting* is an alert read on one *side*: journald, or the files. Two sightings from the two
//! sides are twins when they agree on what both carry: the host (short name, any case; the
//! node's own name when the line names none), the program, the pid, the decoded content (kind,
//! code, description, count, trailing JSON, reason) and the time to the second, within
//! [`TOLERANCE_SECS`] (the file's stamp and the journal's may fall on either side of a second).
//! Lines without a program or a time of their own (no syslog header) are never matched and keep
//! their position-based id.
//!
//! Sightings are a multiset: the k-th sighting of a (key, second) on one side is the twin of a
//! still unmatched one on the other side, so three identical lines in one second on both sides are
//! three alerts, not one and not six. The second sighting of a pair is dropped
//! (`iemd_cross_source_matches_total`).
//!
//! # Ids
//!
//! A sighting's id is `blake3(key, second, k)`, k its index among its side's sightings of that
//! (key, second), so both sightings of one IEM carry the same id whichever side delivers it first.
//! (A pair that straddles a second boundary is matched all the same, but its two sightings would
//! have different ids: only the first is published, unless a crash falls between them.)
//!
//! # Restarts
//!
//! The index k depends on the sightings before it in its second, and some of those may lie before
//! a source's checkpoint and are not read again. So the counts travel with the checkpoints: each
//! line's checkpoint entry carries [`Matcher::sightings`] as read after it, [`Matcher::commit`] is
//! called as the pipeline records that position, and [`Matcher::state`] (the counts of the
//! committed sightings) is written in the same checkpoint file, atomically with the positions.
//! After a crash, each side re-reads exactly the sightings after its checkpoint and gives them the
//! indices, hence the ids, they had before. The restored counts also hold which sightings were
//! unmatched, so a twin read after the restart is dropped; where it is not (its first sighting
//! lay after the checkpoint and is read again too), the alert repeats with the same id: a crash
//! between two sightings costs at most a duplicate with the same id.
//!
//! # Bounds
//!
//! A (key, second) is forgotten once both sides have read `window` seconds past it (a side
//! catching up on a backlog keeps the seconds it has yet to reach), but never kept more than
//! [`MAX_LAG_WINDOWS`] windows behind the side that is ahead (a side that stopped cannot make the
//! matcher grow without end). A twin that comes later is published again (with the same id when
//! its index is the same). A line stamped more than a window in the future is not matched. Only
//! the last [`ORDER_SLACK_SECS`] of each side's committed seconds are stored with the checkpoints:
//! a source resumes after its checkpoint, and its lines are in time order to within that slack.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, OriginKind};

/// Twins may be this many seconds apart.
pub(crate) const TOLERANCE_SECS: i64 = 1;
/// A side's lines are in time order to within this many seconds (what is kept across restarts).
pub(crate) const ORDER_SLACK_SECS: i64 = 10;
/// A second is forgotten at the latest this many windows behind the side that is ahead.
pub(crate) const MAX_LAG_WINDOWS: i64 = 10;
const STATE_VERSION: u32 = 1;

/// The two sides a sighting can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Journal = 0,
    Files = 1,
}

impl Side {
    /// The side of an alert's origin.
    pub(crate) fn of(kind: OriginKind) -> Side {
        match kind {
            OriginKind::Journald => Side::Journal,
            OriginKind::File | OriginKind::Stdin => Side::Files,
        }
    }

    fn other(self) -> usize {
        1 - self as usize
    }
}

/// What to do with a sighting's alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Spool it (its id is now the cross-source id, or unchanged when it cannot be matched).
    Alert,
    /// It is the twin of an alert already spooled: drop it.
    Twin,
}

/// Counts of one (key, second), per side.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Sightings read (the next one's index).
    seen: [u32; 2],
    /// Sightings not yet matched by one of the other side.
    unmatched: [u32; 2],
    /// Sightings whose lines' positions are recorded.
    committed: [u32; 2],
}

/// The matcher's counts of committed sightings, stored with the checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MatcherState {
    pub(crate) version: u32,
    /// `(second, key as 32 hex digits, journal count, files count)`.
    pub(crate) counts: Vec<(i64, String, u32, u32)>,
}

/// Why a stored matcher state cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    #[error("cross-source matcher state has version {0}, this iemd reads version {STATE_VERSION}")]
    Version(u32),
    #[error("cross-source matcher state has a bad key {0:?}")]
    Key(String),
}

/// Matches sightings across the two sides; see the module documentation.
#[derive(Debug)]
pub struct Matcher {
    window: i64,
    /// second -> key -> counts.
    counts: BTreeMap<i64, HashMap<u128, Counts>>,
    /// The newest second each side has sighted (`i64::MIN`: none yet).
    newest: [i64; 2],
    /// Sightings so far in this run (numbers them).
    sightings: u64,
    /// `(number, side, second, key)` of sightings not yet committed, in reading order.
    pending: VecDeque<(u64, Side, i64, u128)>,
    newest_committed: [i64; 2],
    /// Scratch buffer for the key's bytes.
    buf: Vec<u8>,
}

impl Matcher {
    /// A matcher that remembers `window_secs` seconds.
    pub fn new(window_secs: u64) -> Matcher {
        Matcher {
            window: i64::try_from(window_secs).unwrap_or(i64::MAX),
            counts: BTreeMap::new(),
            newest: [i64::MIN; 2],
            sightings: 0,
            pending: VecDeque::new(),
            newest_committed: [i64::MIN; 2],
            buf: Vec::with_capacity(256),
        }
    }

    /// Sightings numbered so far: a line's checkpoint entry keeps this value as read after it.
    pub fn sightings(&self) -> u64 {
        self.sightings
    }

    /// Takes one alert from `side`. `now` is the time the decoder gave lines without one (they
    /// are not matched). Sets the alert's id unless it cannot be matched.
    pub fn sight(&mut self, alert: &mut Alert, side: Side, now: DateTime<Utc>) -> Verdict {
        let Some((key, second)) = self.key(alert, now) else {
            return Verdict::Alert;
        };
        if second > now.timestamp().saturating_add(self.window) {
            return Verdict::Alert;
        }
        if second > self.newest[side as usize] {
            self.newest[side as usize] = second;
            self.evict();
        }
        self.pending.push_back((self.sightings, side, second, key));
        self.sightings += 1;
        let s = side as usize;
        let counts = self
            .counts
            .entry(second)
            .or_default()
            .entry(key)
            .or_default();
        let index = counts.seen[s];
        counts.seen[s] += 1;
        // The same second first, then its neighbours.
        for at in [second, second - TOLERANCE_SECS, second + TOLERANCE_SECS] {
            if let Some(c) = self.counts.get_mut(&at).and_then(|m| m.get_mut(&key))
                && c.unmatched[side.other()] > 0
            {
                c.unmatched[side.other()] -= 1;
                return Verdict::Twin;
            }
        }
        if let Some(c) = self.counts.get_mut(&second).and_then(|m| m.get_mut(&key)) {
            c.unmatched[s] += 1;
        }
        alert.id = id(key, second, index);
        Verdict::Alert
    }

    /// Marks the sightings numbered below `through` as committed (their lines' positions are
    /// being recorded).
    pub fn commit(&mut self, through: u64) {
        while let Some(&(n, side, second, key)) = self.pending.front() {
            if n >= through {
                break;
            }
            self.pending.pop_front();
            let s = side as usize;
            if let Some(c) = self.counts.get_mut(&second).and_then(|m| m.get_mut(&key)) {
                c.committed[s] += 1;
            }
            self.newest_committed[s] = self.newest_committed[s].max(second);
        }
    }

    /// The counts of the committed sightings of each side's last [`ORDER_SLACK_SECS`] seconds.
    pub(crate) fn state(&self) -> MatcherState {
        let oldest = *self.newest_committed.iter().min().unwrap_or(&i64::MIN);
        let from = oldest.saturating_sub(ORDER_SLACK_SECS);
        let mut counts = Vec::new();
        for (&second, keys) in self.counts.range(from..) {
            for (&key, c) in keys {
                let kept = |s: usize| {
                    c.committed[s] > 0
                        && second >= self.newest_committed[s].saturating_sub(ORDER_SLACK_SECS)
                };
                if kept(0) || kept(1) {
                    counts.push((
                        second,
                        format!("{key:032x}"),
                        c.committed[0],
                        c.committed[1],
                    ));
                }
            }
        }
        counts.sort_unstable();
        MatcherState {
            version: STATE_VERSION,
            counts,
        }
    }

    /// A matcher that continues from a stored state (taken at the checkpoints it was stored with).
    pub(crate) fn restore(window_secs: u64, state: &MatcherState) -> Result<Matcher, StateError> {
        if state.version != STATE_VERSION {
            return Err(StateError::Version(state.version));
        }
        let mut m = Matcher::new(window_secs);
        for (second, key, journal, files) in &state.counts {
            let key = u128::from_str_radix(key, 16).map_err(|_| StateError::Key(key.clone()))?;
            let committed = [*journal, *files];
            let paired = journal.min(files);
            let c = Counts {
                seen: committed,
                unmatched: [journal - paired, files - paired],
                committed,
            };
            m.counts.entry(*second).or_default().insert(key, c);
            for (s, n) in committed.iter().enumerate() {
                if *n > 0 {
                    m.newest_committed[s] = m.newest_committed[s].max(*second);
                    m.newest[s] = m.newest[s].max(*second);
                }
            }
        }
        Ok(m)
    }

    /// Forgets the seconds every side has left a window behind (or the leading side ten windows).
    fn evict(&mut self) {
        let started = self.newest.iter().filter(|n| **n > i64::MIN);
        let (Some(behind), Some(ahead)) = (started.clone().min(), started.max()) else {
            return;
        };
        let oldest = behind
            .saturating_sub(self.window)
            .max(ahead.saturating_sub(self.window.saturating_mul(MAX_LAG_WINDOWS)));
        while let Some(entry) = self.counts.first_entry() {
            if *entry.key() >= oldest {
                break;
            }
            entry.remove();
        }
    }

    /// The key of what both sides carry, and the second; `None` for an alert that has no program
    /// or no time of its own.
    fn key(&mut self, alert: &Alert, now: DateTime<Utc>) -> Option<(u128, i64)> {
        let o = &alert.origin;
        let program = o.program.as_deref()?;
        let time = DateTime::parse_from_rfc3339(&alert.time).ok()?;
        if time == now {
            return None;
        }
        let host = o
            .host
            .as_deref()
            .or(alert.host.as_ref().map(|h| h.hostname.as_str()))
            .unwrap_or("");
        let short = host.split('.').next().unwrap_or(host);
        let b = &mut self.buf;
        b.clear();
        b.extend(short.bytes().map(|c| c.to_ascii_lowercase()));
        for field in [program, o.pid.as_deref().unwrap_or("")] {
            b.push(0);
            b.extend_from_slice(field.as_bytes());
        }
        b.push(0);
        // The first letter of the kind: `i` (iem), `m` (malformed); lines make no other kinds.
        b.push(alert.kind.as_str().as_bytes()[0]);
        for field in [
            alert.code.as_deref().unwrap_or(""),
            &alert.message,
            alert.reason.as_deref().unwrap_or(""),
        ] {
            b.extend_from_slice(field.as_bytes());
            b.push(0);
        }
        b.extend_from_slice(&alert.count.unwrap_or(u64::MAX).to_le_bytes());
        if let Some(extra) = &alert.extra {
            // A JSON value always serializes into a Vec.
            let _ = serde_json::to_writer(&mut *b, extra);
        }
        let hash = blake3::hash(b);
        let mut key = [0u8; 16];
        key.copy_from_slice(&hash.as_bytes()[..16]);
        Some((u128::from_le_bytes(key), time.timestamp()))
    }
}

/// The id of the `index`-th sighting of `key` in `second`.
fn id(key: u128, second: i64, index: u32) -> String {
    let mut bytes = [0u8; 40];
    bytes[..12].copy_from_slice(b"iem-sighting");
    bytes[12..28].copy_from_slice(&key.to_le_bytes());
    bytes[28..36].copy_from_slice(&second.to_le_bytes());
    bytes[36..].copy_from_slice(&index.to_le_bytes());
    let hash = blake3::hash(&bytes);
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash.as_bytes()[..16]);
    format!("{:032x}", u128::from_be_bytes(first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Origin;

    fn alert(kind: OriginKind, time: &str, message: &str) -> Alert {
        let origin = Origin {
            kind,
            path: None,
            cursor: None,
            offset: None,
            program: Some("s3server".into()),
            pid: Some("42".into()),
            host: Some(match kind {
                OriginKind::Journald => "Node1.example.com".into(),
                _ => "node1".into(),
            }),
            priority: None,
        };
        let mut a = Alert::bare(
            format!("position-{kind:?}"),
            time.into(),
            origin,
            message.into(),
            false,
        );
        a.kind = crate::alert::Kind::Iem;
        a.code = Some("ES0030010001".into());
        a.message = message.into();
        a
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T12:00:00.123456789Z")
            .unwrap()
            .to_utc()
    }

    /// Sights `(side, time, message)` in order; the ids of the alerts kept (`None` for a twin).
    fn run(m: &mut Matcher, lines: &[(OriginKind, &str, &str)]) -> Vec<Option<String>> {
        lines
            .iter()
            .map(|(kind, time, msg)| {
                let mut a = alert(*kind, time, msg);
                match m.sight(&mut a, Side::of(*kind), now()) {
                    Verdict::Alert => Some(a.id),
                    Verdict::Twin => None,
                }
            })
            .collect()
    }

    const J: OriginKind = OriginKind::Journald;
    const F: OriginKind = OriginKind::File;
    const T: &str = "2026-11-30T11:59:58.250+00:00";

    #[test]
    fn three_identical_lines_on_both_sides_are_three_alerts_with_the_same_ids_either_way() {
        let journal_first = run(
            &mut Matcher::new(60),
            &[
                (J, T, "x"),
                (J, T, "x"),
                (J, T, "x"),
                (F, "2026-11-30T11:59:58+00:00", "x"),
                (F, T, "x"),
                (F, T, "x"),
            ],
        );
        let files_first = run(
            &mut Matcher::new(60),
            &[
                (F, T, "x"),
                (F, T, "x"),
                (J, T, "x"),
                (F, T, "x"),
                (J, T, "x"),
                (J, T, "x"),
            ],
        );
        let kept = |v: &[Option<String>]| v.iter().flatten().cloned().collect::<Vec<_>>();
        assert_eq!(kept(&journal_first).len(), 3);
        assert_eq!(kept(&journal_first), kept(&files_first));
        let distinct: std::collections::HashSet<_> = kept(&files_first).into_iter().collect();
        assert_eq!(distinct.len(), 3);
    }

    #[test]
    fn lines_on_one_side_only_are_alerts_and_other_content_is_not_a_twin() {
        let got = run(
            &mut Matcher::new(60),
            &[
                (F, T, "only in the file"),
                (J, T, "only in the journal"),
                (J, T, "x"),
                (F, "2026-11-30T11:59:59+00:00", "x"),
                (F, "2026-11-30T11:59:56+00:00", "x"),
            ],
        );
        assert!(got[0].is_some() && got[1].is_some() && got[2].is_some());
        // Within the tolerance: a twin. Two seconds off: another IEM.
        assert_eq!(got[3], None);
        assert!(got[4].is_some());
    }

    #[test]
    fn a_line_without_a_time_of_its_own_keeps_its_id_and_is_never_a_twin() {
        let mut m = Matcher::new(60);
        let at_now = now().to_rfc3339();
        let got = run(&mut m, &[(J, &at_now, "x"), (F, &at_now, "x")]);
        assert_eq!(
            got,
            vec![
                Some("position-Journald".into()),
                Some("position-File".into())
            ]
        );
        assert_eq!(m.sightings(), 0);
    }

    #[test]
    fn a_restart_from_the_committed_state_keeps_indices_and_drops_the_late_twin() {
        let mut m = Matcher::new(60);
        let before = run(&mut m, &[(J, T, "x"), (J, T, "x")]);
        // Only the first journal line's position was recorded before the crash.
        m.commit(1);
        let state = m.state();
        assert_eq!(state.counts.len(), 1);
        let json = serde_json::to_string(&state).unwrap();
        let restored: MatcherState = serde_json::from_str(&json).unwrap();
        let mut again = Matcher::restore(60, &restored).unwrap();
        // The journal re-reads its second line (same id); the file's two lines are twins.
        let after = run(&mut again, &[(J, T, "x"), (F, T, "x"), (F, T, "x")]);
        assert_eq!(after, vec![before[1].clone(), None, None]);
    }

    #[test]
    fn old_seconds_are_forgotten_and_only_recent_committed_counts_are_stored() {
        let mut m = Matcher::new(5);
        run(
            &mut m,
            &[
                (J, "2026-11-30T11:00:00Z", "x"),
                (J, "2026-11-30T11:00:30Z", "x"),
            ],
        );
        assert_eq!(m.counts.len(), 1);
        // The file's copy of the forgotten line comes too late: published again, same id.
        let mut fresh = Matcher::new(5);
        let first = run(&mut fresh, &[(J, "2026-11-30T11:00:00Z", "x")]);
        assert_eq!(run(&mut m, &[(F, "2026-11-30T11:00:00Z", "x")]), first);

        let mut m = Matcher::new(60);
        run(
            &mut m,
            &[
                (J, "2026-11-30T11:00:00Z", "x"),
                (J, "2026-11-30T11:00:20Z", "x"),
            ],
        );
        m.commit(m.sightings());
        let state = m.state();
        assert_eq!(state.counts.len(), 1, "{state:?}");
        assert_eq!(state.counts[0].2, 1);
    }

    #[test]
    fn a_side_catching_up_is_still_matched_and_a_stopped_side_does_not_pin_memory() {
        let mut m = Matcher::new(5);
        // The journal is live at 11:00:30; the file is 30 s behind and reaches the line later.
        let got = run(
            &mut m,
            &[
                (J, "2026-11-30T11:00:00Z", "x"),
                (F, "2026-11-30T10:59:59Z", "w"),
                (J, "2026-11-30T11:00:30Z", "y"),
                (F, "2026-11-30T11:00:00Z", "x"),
            ],
        );
        assert_eq!(got[3], None);
        // The file stops; the journal goes on: old seconds go at ten windows.
        run(&mut m, &[(J, "2026-11-30T11:01:30Z", "z")]);
        assert!(
            m.counts
                .keys()
                .all(|s| *s >= m.newest[0] - 5 * MAX_LAG_WINDOWS)
        );
        // A line from the far future is not matched (its id stays).
        let mut a = alert(J, "2099-01-01T00:00:00Z", "x");
        assert_eq!(m.sight(&mut a, Side::Journal, now()), Verdict::Alert);
        assert_eq!(a.id, "position-Journald");
    }

    #[test]
    fn a_state_of_another_version_is_refused() {
        let state = MatcherState {
            version: 9,
            counts: vec![],
        };
        assert!(matches!(
            Matcher::restore(60, &state),
            Err(StateError::Version(9))
        ));
    }
}
