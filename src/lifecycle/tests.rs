//! The lifecycle stage on its own: real lines through the real decoder, a clock in ms.

use std::path::Path;

use std::collections::HashSet;

use super::*;
use crate::alert::{LineSource, OriginKind};
use crate::catalog::decode::{Clock, Decoder};

/// Line `n` of a log: its offset makes its id.
fn decode(catalog: &Catalog, n: u64, line: &str) -> Alert {
    let source = LineSource {
        kind: OriginKind::File,
        path: Some("/var/log/messages"),
        offset: Some(n * 1000),
        fingerprint: 1,
        truncated: false,
    };
    Decoder::new(catalog)
        .decode(line.as_bytes(), &source, &Clock::now(chrono_tz::UTC))
        .unwrap()
}

fn ha_line(code: &str, host: &str) -> String {
    format!(
        "Nov 21 22:50:01 node1 cortx-ha[77]: IEC:{code}:The cluster has lost {host} server. Extra Info: host={host}; status=lost;\""
    )
}

/// The built-in catalog and a component `0aa` whose event 0001 is a fault with `rules` and 0002
/// resolves it.
fn catalog(rules: &str) -> Catalog {
    let mut catalog = Catalog::builtin();
    let text = format!(
        "id = \"0aa\"\nname = \"t\"\n[modules]\n\"001\" = \"M\"\n[[events]]\nmodule = \"001\"\nevent = \"0001\"\ndescription = \"fault\"\n{rules}\n[[events]]\nmodule = \"001\"\nevent = \"0002\"\ndescription = \"back\"\nresolves = [\"0aa0010001\"]\n"
    );
    catalog.add_file(Path::new("t.toml"), &text).unwrap();
    catalog
}

fn t_line(code: &str, text: &str) -> String {
    format!("Nov 21 22:50:01 node1 m0d[9]: IEC: {code}: {text}")
}

fn run(stage: &mut Lifecycle, alert: Alert, now: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    stage.observe(alert, now, &mut out);
    out
}

fn due(stage: &mut Lifecycle, now: i64) -> Vec<Alert> {
    let mut out = Vec::new();
    stage.due(now, &mut out);
    out
}

fn kinds(alerts: &[Alert]) -> Vec<Kind> {
    alerts.iter().map(|a| a.kind).collect()
}

/// Issue 17: `WS0080010001` (server lost) and `IS0080010002` (server back) pair by family and
/// the `host=` resource, whatever their severity letters.
#[test]
fn a_resolution_names_the_fault_it_resolves_and_its_resource() {
    let catalog = Catalog::builtin();
    let mut stage = Lifecycle::new(&catalog, None).unwrap();
    let lost = decode(&catalog, 1, &ha_line("WS0080010001", "ssc-vm-1"));
    let other = decode(&catalog, 2, &ha_line("WS0080010001", "ssc-vm-2"));
    let out = run(&mut stage, lost.clone(), 0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].alert_type.as_deref(), Some("fault"));
    let resource = ResourceRef {
        kind: "host".into(),
        id: "ssc-vm-1".into(),
    };
    assert_eq!(out[0].resource.as_ref(), Some(&resource));
    assert_eq!(out[0].resolves, None);
    run(&mut stage, other, 0);
    assert_eq!(stage.live().faults.len(), 2);

    let back = decode(&catalog, 3, &ha_line("IS0080010002", "ssc-vm-1"));
    let out = run(&mut stage, back.clone(), 10);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].alert_type.as_deref(), Some("fault_resolved"));
    assert_eq!(out[0].resolves, Some(Some(lost.id.clone())));
    assert_eq!(out[0].resource.as_ref(), Some(&resource));
    assert_eq!(stage.live().faults.len(), 1, "the other server stays lost");

    // Resolved once: the same resolution again finds nothing open.
    let again = decode(&catalog, 4, &ha_line("IS0080010002", "ssc-vm-1"));
    let out = run(&mut stage, again, 20);
    assert_eq!(out[0].resolves, Some(None));
    assert_eq!(out[0].resource.as_ref(), Some(&resource));

    // An alert of an untracked event passes through untouched.
    let s3 = decode(&catalog, 5, "Nov 21 22:50:01 n s3[1]: IEC:ES0030010001:x");
    assert_eq!(run(&mut stage, s3.clone(), 30), [s3]);
}

#[test]
fn the_committed_ledger_follows_the_versions_the_pipeline_commits() {
    let catalog = Catalog::builtin();
    let mut stage = Lifecycle::new(&catalog, None).unwrap();
    run(
        &mut stage,
        decode(&catalog, 1, &ha_line("WS0080010001", "a")),
        0,
    );
    let after_a = stage.version();
    run(
        &mut stage,
        decode(&catalog, 2, &ha_line("WS0080010001", "b")),
        0,
    );
    assert!(
        stage.committed().faults.is_empty(),
        "nothing is durable yet"
    );
    stage.commit(after_a);
    let committed = stage.committed();
    assert_eq!(committed.faults.len(), 1);
    assert_eq!(committed.faults[0].resource.id, "a");
    stage.commit(stage.version());
    assert_eq!(stage.committed(), stage.live());

    // Recorded as JSON with the checkpoints and restored at the next start.
    let json = serde_json::to_value(stage.committed()).unwrap();
    let restored = Ledger::parse(json).unwrap();
    let mut again = Lifecycle::new(&catalog, Some(restored)).unwrap();
    assert_eq!(again.live(), stage.live());
    let back = decode(&catalog, 3, &ha_line("IS0080010002", "b"));
    let out = run(&mut again, back, 5);
    assert_eq!(
        out[0].resolves.clone().flatten(),
        Some(stage.live().faults[1].alert.id.clone())
    );

    let mut wrong = serde_json::to_value(stage.committed()).unwrap();
    wrong["version"] = 9.into();
    assert!(matches!(Ledger::parse(wrong), Err(LedgerError::Version(9))));
}

#[test]
fn a_fault_open_past_escalate_after_escalates_once_then_every_repeat() {
    let catalog = catalog("escalate_after = \"1s\"\nescalate_every = \"5s\"");
    let mut stage = Lifecycle::new(&catalog, None).unwrap();
    let fault = decode(&catalog, 1, &t_line("ES0aa0010001", "broken"));
    run(&mut stage, fault.clone(), 0);
    assert!(due(&mut stage, 999).is_empty());
    let out = due(&mut stage, 1000);
    assert_eq!(kinds(&out), [Kind::Escalation]);
    let info = out[0].fault.as_ref().unwrap();
    assert_eq!(
        (
            info.fault_id.as_str(),
            info.age_secs,
            info.escalation,
            info.count
        ),
        (fault.id.as_str(), Some(1), Some(1), 1)
    );
    assert_eq!(out[0].code, fault.code);
    assert!(due(&mut stage, 5999).is_empty(), "once");
    let again = due(&mut stage, 6000);
    assert_eq!(again[0].fault.as_ref().unwrap().escalation, Some(2));
    assert_ne!(again[0].id, out[0].id);
    // Resolved: no more escalations.
    run(
        &mut stage,
        decode(&catalog, 2, &t_line("IS0aa0010002", "ok")),
        7000,
    );
    assert!(due(&mut stage, 60_000).is_empty());
}

/// Issue 17: 10,000 repeats within windows give one summary per window, whose counts add up
/// to every repeat exactly.
#[test]
fn repeats_are_coalesced_into_one_summary_per_window_counting_every_one() {
    let catalog = catalog("coalesce = \"1s\"");
    let mut stage = Lifecycle::new(&catalog, None).unwrap();
    let mut published = Vec::new();
    for i in 0..10_000u64 {
        let alert = decode(&catalog, i, &t_line("ES0aa0010001", &format!("n={i}")));
        // 2.5 s of repeats, 4 per ms: windows at 0 (the fault), ~1 s, ~2 s.
        let now = i as i64 / 4;
        published.extend(run(&mut stage, alert, now));
        published.extend(due(&mut stage, now));
    }
    published.extend(due(&mut stage, 10_000));
    assert_eq!(
        kinds(&published),
        [Kind::Iem, Kind::Summary, Kind::Summary, Kind::Summary]
    );
    let counts: Vec<u64> = published[1..]
        .iter()
        .map(|a| a.fault.as_ref().unwrap().count)
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 9_999, "{counts:?}");
    assert_eq!(published[3].message, "n=9999");
    assert_eq!(
        published
            .iter()
            .map(|a| &a.id)
            .collect::<HashSet<_>>()
            .len(),
        4
    );
}

/// A repeat closes its window by its event time, so the same lines read again make the same
/// windows whatever the wall clock says.
#[test]
fn a_repeat_closes_its_window_by_event_time() {
    let catalog = catalog("coalesce = \"1s\"");
    let at = |n: u64, time: &str| {
        let line = format!("{time} node1 m0d[9]: IEC: ES0aa0010001: n={n}");
        decode(&catalog, n, &line)
    };
    let mut stage = Lifecycle::new(&catalog, None).unwrap();
    let mut out = Vec::new();
    for (n, time) in [
        "2026-11-21T22:50:00.000+00:00",
        "2026-11-21T22:50:00.100+00:00",
        "2026-11-21T22:50:01.000+00:00",
        "2026-11-21T22:50:01.200+00:00",
    ]
    .into_iter()
    .enumerate()
    {
        // The wall clock stands still: only event times move.
        out.extend(run(&mut stage, at(n as u64, time), 0));
    }
    assert_eq!(kinds(&out), [Kind::Iem, Kind::Summary]);
    let info = out[1].fault.as_ref().unwrap();
    assert_eq!(info.count, 2, "n=1 and n=2 (1.1 s after n=1 comes n=3)");
    assert_eq!(out[1].message, "n=2");
}

/// A producer's running count (Motr's "Event count: %x") counts what it throttled.
#[test]
fn a_printed_running_count_adds_what_the_producer_did_not_print() {
    let catalog = catalog("coalesce = \"1m\"");
    let mut stage = Lifecycle::new(&catalog, None).unwrap();
    for (i, count) in [1u64, 2, 0x2a, 0x30].into_iter().enumerate() {
        let line = t_line("ES0aa0010001", &format!("Event count: {count:x}, broken"));
        let alert = decode(&catalog, i as u64, &line);
        assert_eq!(alert.count, Some(count));
        run(&mut stage, alert, 0);
    }
    let out = run(
        &mut stage,
        decode(&catalog, 9, &t_line("IS0aa0010002", "ok")),
        1,
    );
    assert_eq!(kinds(&out), [Kind::Summary, Kind::Iem]);
    // 2 - 1, 0x2a - 2, 0x30 - 0x2a.
    assert_eq!(out[0].fault.as_ref().unwrap().count, 0x30 - 1);
    assert!(stage.live().faults.is_empty());
}

#[test]
fn a_fault_resolved_within_its_hold_down_is_one_flap() {
    let catalog = catalog("hold_down = \"10s\"");
    let mut stage = Lifecycle::new(&catalog, None).unwrap();
    let fault = decode(&catalog, 1, &t_line("ES0aa0010001", "down"));
    assert!(run(&mut stage, fault.clone(), 0).is_empty(), "held");
    assert!(run(&mut stage, fault.clone(), 1).is_empty(), "a repeat too");
    let back = decode(&catalog, 2, &t_line("IS0aa0010002", "up"));
    let out = run(&mut stage, back.clone(), 5_000);
    assert_eq!(kinds(&out), [Kind::Flap]);
    let info = out[0].fault.as_ref().unwrap();
    assert_eq!(
        (
            info.fault_id.as_str(),
            info.resolution_id.as_deref(),
            info.count,
            info.repeats
        ),
        (fault.id.as_str(), Some(back.id.as_str()), 1, Some(1))
    );
    assert!(stage.live().faults.is_empty());
    assert!(due(&mut stage, 60_000).is_empty());

    // Held past the hold-down: the fault is published then, and its resolution pairs with it.
    let fault2 = decode(&catalog, 3, &t_line("ES0aa0010001", "down again"));
    assert!(run(&mut stage, fault2.clone(), 100_000).is_empty());
    let out = due(&mut stage, 110_000);
    assert_eq!(out, [fault2.clone().tap_resource()]);
    let back2 = decode(&catalog, 4, &t_line("IS0aa0010002", "up again"));
    let out = run(&mut stage, back2, 120_000);
    assert_eq!(out[0].resolves, Some(Some(fault2.id.clone())));

    // A second flap counts two.
    run(
        &mut stage,
        decode(&catalog, 5, &t_line("ES0aa0010001", "x")),
        200_000,
    );
    let out = run(
        &mut stage,
        decode(&catalog, 6, &t_line("IS0aa0010002", "y")),
        200_001,
    );
    assert_eq!(out[0].fault.as_ref().unwrap().count, 2);
}

trait TapResource {
    fn tap_resource(self) -> Alert;
}

impl TapResource for Alert {
    /// The alert as the stage publishes a fault: typed `fault`, with its node resource.
    fn tap_resource(mut self) -> Alert {
        self.alert_type = Some("fault".into());
        self.resource = Some(ResourceRef {
            kind: "node".into(),
            id: "node1".into(),
        });
        self
    }
}

#[test]
fn resources_are_named_by_the_rule() {
    let catalog = Catalog::builtin();
    let a = decode(
        &catalog,
        1,
        "Nov 21 22:50:01 node1 x[1]: IEC:ES0080010001:lost xhost=no host=h-1; other",
    );
    assert_eq!(
        resource_of(&Resource::Field("host".into()), &a),
        ResourceRef {
            kind: "host".into(),
            id: "h-1".into()
        }
    );
    // Missing key, or no device: the node.
    let node = ResourceRef {
        kind: "node".into(),
        id: "node1".into(),
    };
    assert_eq!(resource_of(&Resource::Field("rack".into()), &a), node);
    assert_eq!(resource_of(&Resource::Device, &a), node);
    assert_eq!(resource_of(&Resource::Node, &a), node);
    let mut d = a.clone();
    d.hardware
        .push(crate::alert::Encoded::new(crate::alert::Hardware {
            reference: "sdc".into(),
            ref_kind: "block".into(),
            found: true,
            device: Some(serde_json::json!({"serial": "Z1X2"})),
        }));
    assert_eq!(resource_of(&Resource::Device, &d).id, "Z1X2");
}
