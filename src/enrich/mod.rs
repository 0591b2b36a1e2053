//! Enrichment: who raised the alert (host identity) and which physical device it is about
//! (hardware context from sysfs).
//!
//! `Enricher::enrich(&self, &mut Alert)` fills `alert.host` (computed once at start) and
//! `alert.hardware`: every device reference found in the message, in the string values of the
//! trailing JSON (`alert.extra`) and in the program name, in order of appearance, de-duplicated,
//! at most `max_refs` of them. A reference that does not resolve gives `found: false`; nothing
//! here ever fails an alert. An H:C:T:L-shaped token that does not resolve is dropped instead,
//! since a time such as `12:30:45:1` has the same shape.
//!
//! The scan stops at `max_refs` distinct references (and as many H:C:T:L-shaped ones, see
//! [`scan::Found`]): a line with thousands of made-up device names costs one pass over its text
//! and at most `2 * max_refs` look-ups, and one alert can no longer fill the cache on its own.
//!
//! # Cache
//!
//! `&self` with an interior cache (a `Mutex`, held only for map look-ups, never across sysfs
//! reads), so one enricher can be shared between tasks. Keyed by the reference text as found:
//! - a resolved reference is kept `cache_ttl` seconds, then read again (a disk swapped under the
//!   same name shows its new serial after at most `cache_ttl`);
//! - a miss is kept `min(cache_ttl, 5 s)`, so a hot-plugged device resolves within seconds while a
//!   burst of alerts naming a missing device costs one sysfs look-up per 5 s;
//! - the list of interface names (to recognise NICs with non-standard names) is refreshed every
//!   `cache_ttl`.
//!
//! Directory mtimes are not used to detect changes: sysfs (kernfs) does not update a directory's
//! mtime when devices come and go. With a warm cache the hot path does no file system access.
//! The map holds at most `MAX_ENTRIES`; when full, expired entries are dropped, then all of them
//! (text with many distinct made-up device names cannot grow memory without bound).

pub(crate) mod host;
pub(crate) mod scan;
pub(crate) mod sysfs;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::alert::{Alert, Encoded, Hardware, Host};
use crate::config::enrich::EnrichConfig;
use crate::enrich::scan::{Found, Ref, RefKind};
use crate::enrich::sysfs::Sysfs;

/// How long a reference that did not resolve stays cached (at most `cache_ttl`).
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Longest interface name (IFNAMSIZ - 1).
const IFNAMSIZ: usize = 15;
/// Most cached references.
pub(crate) const MAX_ENTRIES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("enrich.sysfs_root {path:?} is not a readable directory: {source}")]
    SysfsRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot determine the hostname (set enrich.hostname)")]
    NoHostname,
}

/// A cached resolution. `hardware: None` means "do not report" (an unresolved H:C:T:L).
#[derive(Debug)]
struct Entry {
    hardware: Option<Encoded<Hardware>>,
    expires: Instant,
}

#[derive(Debug)]
struct Cache {
    entries: HashMap<Box<str>, Entry>,
    nic_names: Vec<Box<str>>,
    /// Bit `b` set: some interface name starts with ASCII byte `b` (most words of a message are
    /// rejected by this one test).
    nic_first_bytes: u128,
    nic_names_expire: Instant,
}

/// Fills `host` and `hardware` in alerts. Shareable (`&self`; see the module doc for the cache).
#[derive(Debug)]
pub struct Enricher {
    host: Encoded<Host>,
    sysfs: Option<Sysfs>,
    ttl: Duration,
    negative_ttl: Duration,
    max_refs: usize,
    cache: Mutex<Cache>,
}

impl Enricher {
    /// Reads the host identity and checks that the sysfs root can be read.
    pub fn new(cfg: &EnrichConfig) -> Result<Enricher, EnrichError> {
        let host = Encoded::new(host::identity(cfg)?);
        let sysfs = if cfg.hardware {
            std::fs::read_dir(&cfg.sysfs_root).map_err(|source| EnrichError::SysfsRoot {
                path: cfg.sysfs_root.clone(),
                source,
            })?;
            Some(Sysfs::new(&cfg.sysfs_root, &cfg.dev_root))
        } else {
            None
        };
        let ttl = Duration::from_secs(cfg.cache_ttl.max(1));
        let now = Instant::now();
        Ok(Enricher {
            host,
            sysfs,
            ttl,
            negative_ttl: ttl.min(NEGATIVE_TTL),
            max_refs: cfg.max_refs.max(1),
            cache: Mutex::new(Cache {
                entries: HashMap::new(),
                nic_names: Vec::new(),
                nic_first_bytes: 0,
                nic_names_expire: now,
            }),
        })
    }

    /// Fills `alert.host` and `alert.hardware` (replacing what was there).
    pub fn enrich(&self, alert: &mut Alert) {
        alert.host = Some(self.host.clone());
        let Some(sysfs) = &self.sysfs else {
            return;
        };
        let now = Instant::now();
        let mut found = Found::new(self.max_refs);
        // Cached answers in order; `None` = not cached (or expired), to be resolved.
        let mut slots: smallvec::SmallVec<[Option<Option<Encoded<Hardware>>>; 8]> =
            smallvec::SmallVec::new();
        {
            let mut cache = lock(&self.cache);
            if now >= cache.nic_names_expire {
                // Rare (once per TTL): a directory listing under the lock.
                cache.nic_names = sysfs.nic_names().into_iter().map(Into::into).collect();
                cache.nic_first_bytes = cache
                    .nic_names
                    .iter()
                    .filter_map(|n| n.bytes().next().filter(u8::is_ascii))
                    .fold(0, |bits, b| bits | 1u128 << b);
                cache.nic_names_expire = now + self.ttl;
            }
            let names = &cache.nic_names;
            let first_bytes = cache.nic_first_bytes;
            // Interfaces are few: comparing lengths first beats hashing every word of the text.
            let known = |name: &str| {
                name.len() <= IFNAMSIZ
                    && name
                        .bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii() && first_bytes & (1u128 << b) != 0)
                    && names.iter().any(|n| n.len() == name.len() && **n == *name)
            };
            scan::scan(&alert.message, &known, &mut found);
            if let Some(extra) = &alert.extra {
                scan_json(extra, &known, &mut found, 0);
            }
            if let Some(program) = &alert.origin.program {
                scan::scan(program, &known, &mut found);
            }
            if found.refs().is_empty() {
                alert.hardware = Vec::new();
                return;
            }
            for r in found.refs() {
                slots.push(match cache.entries.get(r.text) {
                    Some(e) if e.expires > now => Some(e.hardware.clone()),
                    _ => None,
                });
            }
        }
        if slots.iter().any(Option::is_none) {
            self.resolve_misses(sysfs, found.refs(), &mut slots, now);
        }
        alert.hardware = slots
            .into_iter()
            .flatten()
            .flatten()
            .take(self.max_refs)
            .collect();
    }

    /// Resolves the uncached references outside the lock, then caches the answers.
    fn resolve_misses(
        &self,
        sysfs: &Sysfs,
        refs: &[Ref<'_>],
        slots: &mut [Option<Option<Encoded<Hardware>>>],
        now: Instant,
    ) {
        let resolved: Vec<(usize, Option<Encoded<Hardware>>)> = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_none())
            .map(|(i, _)| (i, resolve(sysfs, refs[i])))
            .collect();
        let mut cache = lock(&self.cache);
        if cache.entries.len() + resolved.len() > MAX_ENTRIES {
            cache.entries.retain(|_, e| e.expires > now);
            if cache.entries.len() + resolved.len() > MAX_ENTRIES {
                cache.entries.clear();
            }
        }
        for (i, hardware) in resolved {
            let found = hardware.as_ref().is_some_and(|h| h.found);
            let ttl = if found { self.ttl } else { self.negative_ttl };
            cache.entries.insert(
                refs[i].text.into(),
                Entry {
                    hardware: hardware.clone(),
                    expires: now + ttl,
                },
            );
            slots[i] = Some(hardware);
        }
    }
}

fn lock(cache: &Mutex<Cache>) -> std::sync::MutexGuard<'_, Cache> {
    // A panic while holding the lock cannot leave the maps inconsistent (single inserts), so a
    // poisoned lock is still usable.
    cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Scans every string value (not keys) of a JSON value, to a bounded depth.
fn scan_json<'a>(
    value: &'a serde_json::Value,
    known: &dyn Fn(&str) -> bool,
    out: &mut Found<'a>,
    depth: u8,
) {
    if depth > 8 || out.is_full() {
        return;
    }
    match value {
        serde_json::Value::String(s) => scan::scan(s, known, out),
        serde_json::Value::Array(items) => {
            for v in items {
                scan_json(v, known, out, depth + 1);
            }
        }
        serde_json::Value::Object(map) => {
            for v in map.values() {
                scan_json(v, known, out, depth + 1);
            }
        }
        _ => {}
    }
}

/// Resolves one reference against sysfs; `None` means "do not report".
fn resolve(sysfs: &Sysfs, r: Ref<'_>) -> Option<Encoded<Hardware>> {
    let device = match r.kind {
        RefKind::Block => sysfs.block(r.text).and_then(to_json),
        RefKind::ById
        | RefKind::ByPath
        | RefKind::ByUuid
        | RefKind::ByLabel
        | RefKind::ByPartuuid
        | RefKind::ByPartlabel => sysfs
            .dev_link(r.text)
            .and_then(|name| sysfs.block(&name))
            .and_then(to_json),
        RefKind::Mapper => sysfs
            .dev_link(r.text)
            .or_else(|| sysfs.by_dm_name(r.text.strip_prefix("/dev/mapper/")?))
            .and_then(|name| sysfs.block(&name))
            .and_then(to_json),
        RefKind::Wwn | RefKind::Naa => {
            let hex = r
                .text
                .strip_prefix("wwn-0x")
                .or_else(|| r.text.strip_prefix("naa."))
                .unwrap_or(r.text);
            let name = match hex.split_once("-part") {
                // wwn-0x...-partN is a by-id link to the partition itself.
                Some(_) => sysfs.dev_link(&format!("/dev/disk/by-id/{}", r.text)),
                None => sysfs.by_wwn(hex),
            };
            name.and_then(|n| sysfs.block(&n)).and_then(to_json)
        }
        RefKind::Hctl => {
            let device = sysfs
                .by_hctl(r.text)
                .and_then(|name| sysfs.block(&name))
                .and_then(to_json);
            device.as_ref()?;
            device
        }
        RefKind::Nic => sysfs.nic(r.text).and_then(to_json),
    };
    Some(Encoded::new(Hardware {
        reference: r.text.to_string(),
        ref_kind: r.kind.as_str().to_string(),
        found: device.is_some(),
        device,
    }))
}

fn to_json<T: serde::Serialize>(device: T) -> Option<serde_json::Value> {
    // Serializing these plain structs cannot fail; if it ever did, the device is just absent.
    serde_json::to_value(device).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_scanned_but_keys_are_not() {
        let v: serde_json::Value =
            serde_json::json!({"sdq": 1, "dev": ["x", {"d": "on sdb and eth3"}], "n": 3});
        let mut out = Found::new(16);
        scan_json(&v, &|_| false, &mut out, 0);
        assert_eq!(
            out.refs().iter().map(|r| r.text).collect::<Vec<_>>(),
            ["sdb", "eth3"]
        );
    }
}
