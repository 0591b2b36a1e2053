//! The fault lifecycle: pairs each fault with its resolution, escalates what stays open,
//! coalesces storms of repeats and holds down flaps, after the catalog's rules
//! (`catalog::Rules`, `iem-catalog/README.md`).
//!
//! A stage between enrich and the spool: an alert goes in, zero or more alerts come out
//! ([`Lifecycle::observe`]); as time passes, [`Lifecycle::due`] gives the escalations, window
//! summaries and held faults that fell due. Pure: no I/O, no clock (the caller passes wall-clock
//! ms), so it is tested on its own below.
//!
//! # Which alerts take part
//!
//! An IEM whose event `resolves` others is a resolution. An IEM of a family that has a rule of
//! its own or that some event resolves is a fault, whatever its severity letter (cortx-ha logs
//! "server lost" as `W`). Every other alert passes through untouched.
//!
//! # The ledger and durability
//!
//! Open faults are kept in a [`ledger::Ledger`], keyed by family and resource. Every change
//! gets a version; the pipeline carries the version after each line beside the line's position
//! and calls [`Lifecycle::commit`] when the spool has made that line's alerts durable, then
//! records [`Lifecycle::committed`] with the checkpoints (stage `lifecycle`, in the same file and
//! hot copy). So an alert is durable in the spool before the ledger change it causes, and the
//! recorded ledger always describes exactly the lines the recorded positions are past: after a
//! crash the lines after the checkpoint are read again against the ledger as it was, and every
//! coalesced repeat is counted once.
//!
//! # Invariants
//!
//! - A resolution closes at most one open fault, so no fault is resolved twice.
//! - A repeat folded into a window is counted in exactly one published summary: the window is
//!   published when it closes, when its fault is resolved, or (for a held fault) in its flap.
//! - Alerts this stage makes have ids derived from the fault's id and their place (the n-th
//!   escalation, the n-th summary, the flap), so one made again after a crash has the same id
//!   (and the pipeline does not spool it twice).
//! - A repeat closes its window by its event time, the tick by the wall clock at the window's
//!   first repeat (kept in the ledger): read again after a crash, the same lines close the same
//!   windows with the same counts.

pub(crate) mod ledger;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::alert::{Alert, FaultInfo, Kind, ResourceRef};
use crate::catalog::{Catalog, Family, Resource, Rules};
use crate::telemetry::events::{self, Lifecycle as Event};

pub(crate) use ledger::Window;
pub use ledger::{Fault, Ledger, LedgerError, LedgerState};

/// Where the ledger is recorded in the checkpoint store.
pub const STAGE: &str = "lifecycle";

/// The lifecycle stage: the catalog's rules and the ledger of open faults.
#[derive(Debug)]
pub struct Lifecycle {
    rules: HashMap<Family, Rules>,
    /// Families whose IEMs are faults (see the module doc).
    tracked: HashSet<Family>,
    ledger: Ledger,
}

impl Lifecycle {
    /// The stage for `catalog`, continuing from a recorded ledger.
    pub fn new(catalog: &Catalog, restored: Option<LedgerState>) -> Result<Lifecycle, LedgerError> {
        let mut rules = HashMap::new();
        let mut tracked = HashSet::new();
        for (c, m, e, _, event) in catalog.events() {
            if event.rules.any() {
                let family = Family(c, m, e);
                tracked.extend(event.rules.resolves.iter().copied());
                if event.rules.resolves.is_empty() {
                    tracked.insert(family);
                }
                rules.insert(family, event.rules.clone());
            }
        }
        let ledger = match restored {
            Some(state) => Ledger::restore(state)?,
            None => Ledger::default(),
        };
        events::lifecycle(Event::Restored, ledger.open_count());
        Ok(Lifecycle {
            rules,
            tracked,
            ledger,
        })
    }

    /// Takes one alert; pushes what to spool in its place onto `out` (nothing for a coalesced
    /// repeat or a held fault, two for a resolution that closes a window).
    pub fn observe(&mut self, mut alert: Alert, now_ms: i64, out: &mut Vec<Alert>) {
        let Some(family) = family_of(&alert) else {
            out.push(alert);
            return;
        };
        match self.rules.get(&family) {
            Some(rules) if !rules.resolves.is_empty() => {
                let rules = rules.clone();
                self.resolve(alert, &rules, now_ms, out);
            }
            _ if self.tracked.contains(&family) => {
                let rules = self.rules.get(&family).cloned().unwrap_or_default();
                alert.alert_type = Some("fault".into());
                self.fault(alert, family, &rules, now_ms, out);
            }
            _ => out.push(alert),
        }
    }

    fn resolve(&mut self, mut alert: Alert, rules: &Rules, now_ms: i64, out: &mut Vec<Alert>) {
        alert.alert_type = Some("fault_resolved".into());
        // Without a rule of its own, the resource is named as each resolved fault names it.
        let rule_for = |f: &Family| {
            rules
                .resource
                .clone()
                .or_else(|| self.rules.get(f).and_then(|r| r.resource.clone()))
                .unwrap_or_default()
        };
        let open = rules.resolves.iter().find_map(|f| {
            let key = (*f, resource_of(&rule_for(f), &alert));
            self.ledger.get(&key).cloned().map(|fault| (key, fault))
        });
        let Some((key, mut fault)) = open else {
            let first = rules.resolves.first().map(rule_for).unwrap_or_default();
            alert.resolves = Some(None);
            alert.resource = Some(resource_of(&first, &alert));
            out.push(alert);
            return;
        };
        self.ledger.set(key.clone(), None);
        let family = fault.family.to_string();
        if let Some(until) = fault.held_until_ms {
            if now_ms < until {
                let flaps = self.ledger.flaps(&key) + 1;
                self.ledger.set_flaps(key, flaps);
                out.push(flap(&fault, &alert, flaps));
                events::lifecycle(
                    Event::Flapped {
                        family: &family,
                        resource: &fault.resource.id,
                    },
                    self.ledger.open_count(),
                );
                return;
            }
            // Due, and not released yet: the fault goes first.
            out.push(fault.alert.clone());
        }
        if let Some(window) = fault.window.take() {
            out.push(summary(&mut fault, window));
        }
        alert.resolves = Some(Some(fault.alert.id.clone()));
        alert.resource = Some(fault.resource.clone());
        out.push(alert);
        events::lifecycle(
            Event::Resolved {
                family: &family,
                resource: &fault.resource.id,
            },
            self.ledger.open_count(),
        );
    }

    fn fault(
        &mut self,
        mut alert: Alert,
        family: Family,
        rules: &Rules,
        now_ms: i64,
        out: &mut Vec<Alert>,
    ) {
        let resource = resource_of(&rules.resource.clone().unwrap_or_default(), &alert);
        alert.resource = Some(resource.clone());
        let key = (family, resource);
        let Some(mut fault) = self.ledger.get(&key).cloned() else {
            let held_until_ms = rules.hold_down.map(|d| now_ms + ms(d));
            let fault = Fault {
                family,
                resource: key.1.clone(),
                alert: alert.clone(),
                opened_ms: now_ms,
                count: 1,
                producer_count: alert.count,
                escalations: 0,
                next_escalation_ms: rules.escalate_after.map(|d| now_ms + ms(d)),
                summaries: 0,
                window: None,
                held_until_ms,
            };
            self.ledger.set(key.clone(), Some(fault));
            if held_until_ms.is_none() {
                out.push(alert);
            }
            events::lifecycle(
                Event::Opened {
                    family: &family.to_string(),
                    resource: &key.1.id,
                },
                self.ledger.open_count(),
            );
            return;
        };
        let n = repeats(&mut fault, alert.count);
        fault.count += n;
        let Some(len) = window_len(rules).filter(|_| {
            rules.coalesce.is_some() || fault.held_until_ms.is_some_and(|t| now_ms < t)
        }) else {
            self.ledger.set(key, Some(fault));
            out.push(alert);
            return;
        };
        let event_ms = chrono::DateTime::parse_from_rfc3339(&alert.time)
            .map_or(now_ms, |t| t.timestamp_millis());
        if fault.held_until_ms.is_none()
            && let Some(w) = &fault.window
            && event_ms >= w.start_event_ms + ms(len)
            && let Some(w) = fault.window.take()
        {
            out.push(summary(&mut fault, w));
        }
        let w = fault.window.get_or_insert_with(|| Window {
            start_ms: now_ms,
            start_event_ms: event_ms,
            count: 0,
            first_seen: alert.time.clone(),
            last_seen: String::new(),
            last_message: String::new(),
        });
        w.count += n;
        w.last_seen = alert.time;
        w.last_message = alert.message;
        self.ledger.set(key, Some(fault));
        events::lifecycle(Event::Coalesced, self.ledger.open_count());
    }

    /// Pushes onto `out` what fell due by `now_ms`: held faults whose hold-down passed, closed
    /// windows' summaries, escalations.
    pub(crate) fn due(&mut self, now_ms: i64, out: &mut Vec<Alert>) {
        let due: Vec<ledger::Key> = self
            .ledger
            .open()
            .filter(|f| {
                let len = self.rules.get(&f.family).and_then(window_len);
                f.held_until_ms.is_some_and(|t| now_ms >= t)
                    || f.next_escalation_ms.is_some_and(|t| now_ms >= t)
                    || f.window
                        .as_ref()
                        .zip(len)
                        .is_some_and(|(w, len)| now_ms >= w.start_ms + ms(len))
            })
            .map(|f| (f.family, f.resource.clone()))
            .collect();
        for key in due {
            let Some(mut fault) = self.ledger.get(&key).cloned() else {
                continue;
            };
            let rules = self.rules.get(&fault.family).cloned().unwrap_or_default();
            if let Some(until) = fault.held_until_ms {
                if now_ms < until {
                    continue;
                }
                fault.held_until_ms = None;
                out.push(fault.alert.clone());
            }
            if let Some(len) = window_len(&rules)
                && fault
                    .window
                    .as_ref()
                    .is_some_and(|w| now_ms >= w.start_ms + ms(len))
                && let Some(w) = fault.window.take()
            {
                out.push(summary(&mut fault, w));
            }
            if fault.next_escalation_ms.is_some_and(|t| now_ms >= t) {
                fault.escalations += 1;
                let every = rules.escalate_every.or(rules.escalate_after);
                fault.next_escalation_ms = every.map(|d| now_ms + ms(d));
                let age_secs = u64::try_from(now_ms - fault.opened_ms).unwrap_or(0) / 1000;
                out.push(escalation(&fault, now_ms, age_secs));
                events::lifecycle(
                    Event::Escalated {
                        family: &fault.family.to_string(),
                        resource: &fault.resource.id,
                        age_secs,
                    },
                    self.ledger.open_count(),
                );
            }
            self.ledger.set(key, Some(fault));
        }
    }

    /// The version after the last ledger change (carried beside each line's position).
    pub(crate) fn version(&self) -> u64 {
        self.ledger.version()
    }

    /// The alerts up to `version` are durable: their ledger changes may be recorded.
    pub(crate) fn commit(&mut self, version: u64) {
        self.ledger.commit(version);
    }

    /// The version of the last committed change: the committed ledger changed when it moves.
    pub(crate) fn committed_version(&self) -> u64 {
        self.ledger.committed_version()
    }

    /// The committed ledger, to record with the checkpoints.
    pub(crate) fn committed(&self) -> LedgerState {
        self.ledger.committed()
    }

    /// The live ledger (what is open now).
    pub fn live(&self) -> LedgerState {
        self.ledger.live()
    }
}

/// The family of a well-formed IEM's code (`ES0080010001` -> `0080010001`).
fn family_of(alert: &Alert) -> Option<Family> {
    if alert.kind != Kind::Iem {
        return None;
    }
    let code = alert.code.as_deref()?;
    Family::parse(code.get(2..)?).ok()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// How long a window gathers repeats: the `coalesce` window, else (while held down) `hold_down`.
fn window_len(rules: &Rules) -> Option<Duration> {
    rules.coalesce.or(rules.hold_down)
}

/// How many events a repeat stands for: one, or, when the producer prints a running count
/// (Motr's "Event count: %x"), how far that count moved since its last line (the events it
/// throttled and did not print). A count that went back (the producer restarted) counts one.
fn repeats(fault: &mut Fault, printed: Option<u64>) -> u64 {
    let n = match (fault.producer_count, printed) {
        (Some(last), Some(now)) if now > last => now - last,
        _ => 1,
    };
    if printed.is_some() {
        fault.producer_count = printed;
    }
    n
}

/// The resource an alert is about, by its event's rule; the node when the rule's resource is
/// not in the alert (no device reference, no such key).
pub(crate) fn resource_of(rule: &Resource, alert: &Alert) -> ResourceRef {
    let found = match rule {
        Resource::Node => None,
        Resource::Device => alert.hardware.first().map(|h| {
            let device = h.device.as_ref();
            ["serial", "wwn"]
                .iter()
                .find_map(|k| device?.get(*k)?.as_str().filter(|s| !s.is_empty()))
                .unwrap_or(&h.reference)
                .to_string()
        }),
        Resource::Field(key) => field_value(&alert.message, key),
    };
    match found {
        Some(id) => ResourceRef {
            kind: rule.kind().to_string(),
            id,
        },
        None => ResourceRef {
            kind: "node".into(),
            id: node_name(alert),
        },
    }
}

fn node_name(alert: &Alert) -> String {
    alert
        .host
        .as_ref()
        .map(|h| h.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| alert.origin.host.as_deref().map(str::to_owned))
        .unwrap_or_else(|| "localhost".into())
}

/// The value of `key=value` in `text`: the key at the start or after a character that cannot
/// be part of a key, the value up to whitespace, `;`, `,` or a quote.
fn field_value(text: &str, key: &str) -> Option<String> {
    let pattern = format!("{key}=");
    let mut from = 0;
    while let Some(at) = text[from..].find(&pattern) {
        let start = from + at;
        let boundary = text[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')));
        let rest = &text[start + pattern.len()..];
        if boundary {
            let end = rest
                .find(|c: char| c.is_whitespace() || matches!(c, ';' | ',' | '"' | '\''))
                .unwrap_or(rest.len());
            if end > 0 {
                return Some(rest[..end].to_string());
            }
        }
        from = start + pattern.len();
    }
    None
}

/// A stable id for an alert this stage makes about `fault_id`.
fn derived_id(fault_id: &str, what: &str) -> String {
    let hash = blake3::hash(format!("{fault_id}/{what}").as_bytes());
    hash.as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An alert about `fault`: its code, names, origin and resource, with a new kind and id.
fn about(fault: &Fault, kind: Kind, what: &str, info: FaultInfo) -> Alert {
    let mut a = fault.alert.clone();
    a.kind = kind;
    a.id = derived_id(&fault.alert.id, what);
    a.resource = Some(fault.resource.clone());
    a.resolves = None;
    a.count = None;
    a.fault = Some(info);
    a
}

fn info(fault: &Fault, count: u64) -> FaultInfo {
    FaultInfo {
        fault_id: fault.alert.id.clone(),
        family: fault.family.to_string(),
        opened: fault.alert.time.clone(),
        count,
        age_secs: None,
        escalation: None,
        first_seen: None,
        last_seen: None,
        resolution_id: None,
        repeats: None,
    }
}

fn escalation(fault: &Fault, now_ms: i64, age_secs: u64) -> Alert {
    let n = fault.escalations;
    let mut a = about(
        fault,
        Kind::Escalation,
        &format!("escalation/{n}"),
        FaultInfo {
            age_secs: Some(age_secs),
            escalation: Some(n),
            ..info(fault, fault.count)
        },
    );
    a.time = rfc3339(now_ms);
    a.message = format!(
        "Still open after {age_secs} s (seen {} times): {}",
        fault.count, fault.alert.message
    );
    a
}

/// The summary of a closed window (numbers it: the fault's summaries go up by one).
fn summary(fault: &mut Fault, window: Window) -> Alert {
    fault.summaries += 1;
    let mut a = about(
        fault,
        Kind::Summary,
        &format!("summary/{}", fault.summaries),
        FaultInfo {
            first_seen: Some(window.first_seen),
            last_seen: Some(window.last_seen.clone()),
            ..info(fault, window.count)
        },
    );
    a.time = window.last_seen;
    a.message = window.last_message;
    a
}

fn flap(fault: &Fault, resolution: &Alert, flaps: u64) -> Alert {
    let mut a = about(
        fault,
        Kind::Flap,
        "flap",
        FaultInfo {
            resolution_id: Some(resolution.id.clone()),
            // The repeats gathered while it was held are counted here.
            repeats: Some(fault.count - 1),
            last_seen: fault.window.as_ref().map(|w| w.last_seen.clone()),
            ..info(fault, flaps)
        },
    );
    a.alert_type = Some("get".into());
    a.time = resolution.time.clone();
    a.message = format!(
        "Resolved within its hold-down (flap {flaps}, seen {} times): {} / {}",
        fault.count, fault.alert.message, resolution.message
    );
    a
}

#[cfg(test)]
mod tests;
