//! The JSON form of an alert, written field by field.
//!
//! Hand-written rather than `#[derive(Serialize)]` through a serializer: on the hot path the
//! serde machinery (a map state and an escaped key per field, ~30 per alert) cost as much as the
//! text itself (`cargo bench --bench enrich`). Strings are still escaped by sonic-rs's SIMD
//! formatter, and the trailing JSON (`extra`) still goes through sonic-rs.
//!
//! The output is exactly the JSON the derived `Serialize` describes: same fields, same order,
//! same omissions. The tests below compare the two for a full alert, an empty one and random
//! ones; a field added to `Alert` and not here makes them fail.

use sonic_rs::format::{CompactFormatter, Formatter};

use super::{Alert, Coded, Named};

/// The JSON of an alert, as spooled, published and printed (`iem.alert/v1`).
pub fn encode(alert: &Alert) -> Result<Vec<u8>, sonic_rs::Error> {
    let extra_len = alert.host.as_ref().map_or(0, |h| h.json().len())
        + alert
            .hardware
            .iter()
            .map(|h| h.json().len() + 1)
            .sum::<usize>();
    // Sized up front: growing by doubling from empty copies it several times.
    let mut w = Writer(Vec::with_capacity(
        768 + 2 * (alert.raw.len() + alert.message.len()) + extra_len,
    ));
    w.raw("{\"schema\":");
    w.str(&alert.schema);
    w.raw(",\"id\":");
    w.str(&alert.id);
    w.raw(",\"kind\":\"");
    w.raw(alert.kind.as_str());
    w.raw("\"");
    w.raw(",\"code\":");
    w.opt_str(alert.code.as_deref());
    w.raw(",\"severity\":");
    w.coded(alert.severity.as_ref());
    w.raw(",\"alert_type\":");
    w.opt_str(alert.alert_type.as_deref());
    w.raw(",\"source_type\":");
    w.coded(alert.source_type.as_ref());
    w.raw(",\"component\":");
    w.named(alert.component.as_ref());
    w.raw(",\"module\":");
    w.named(alert.module.as_ref());
    w.raw(",\"event\":");
    w.named(alert.event.as_ref());
    w.raw(if alert.in_catalog {
        ",\"in_catalog\":true"
    } else {
        ",\"in_catalog\":false"
    });
    w.raw(",\"message\":");
    w.str(&alert.message);
    w.str_if(",\"impact\":", alert.impact.as_deref());
    w.str_if(",\"recommendation\":", alert.recommendation.as_deref());
    w.int_if(",\"count\":", alert.count);
    if let Some(extra) = &alert.extra {
        w.raw(",\"extra\":");
        sonic_rs::to_writer(&mut w.0, extra)?;
    }
    w.str_if(",\"reason\":", alert.reason.as_deref());
    w.raw(",\"time\":");
    w.str(&alert.time);

    let o = &alert.origin;
    w.raw(",\"origin\":{\"kind\":\"");
    w.raw(o.kind.as_str());
    w.raw("\"");
    w.str_if(",\"path\":", o.path.as_deref());
    w.str_if(",\"cursor\":", o.cursor.as_deref());
    w.int_if(",\"offset\":", o.offset);
    w.raw(",\"program\":");
    w.opt_str(o.program.as_deref());
    w.raw(",\"pid\":");
    w.opt_str(o.pid.as_deref());
    w.raw(",\"host\":");
    w.opt_str(o.host.as_deref());
    w.raw(",\"priority\":");
    match o.priority {
        Some(p) => w.int(p.into()),
        None => w.raw("null"),
    }
    w.raw("},\"raw\":");
    w.str(&alert.raw);
    if alert.truncated {
        w.raw(",\"truncated\":true");
    }
    if let Some(host) = &alert.host {
        w.raw(",\"host\":");
        w.raw(host.json());
    }
    if !alert.hardware.is_empty() {
        w.raw(",\"hardware\":[");
        for (i, h) in alert.hardware.iter().enumerate() {
            if i > 0 {
                w.raw(",");
            }
            w.raw(h.json());
        }
        w.raw("]");
    }
    // The lifecycle's fields are on few alerts: the serializer is fast enough for them.
    if let Some(resource) = &alert.resource {
        w.raw(",\"resource\":");
        sonic_rs::to_writer(&mut w.0, resource)?;
    }
    if let Some(resolves) = &alert.resolves {
        w.raw(",\"resolves\":");
        w.opt_str(resolves.as_deref());
    }
    if let Some(fault) = &alert.fault {
        w.raw(",\"fault\":");
        sonic_rs::to_writer(&mut w.0, fault)?;
    }
    w.raw("}");
    Ok(w.0)
}

struct Writer(Vec<u8>);

impl Writer {
    /// Text that is already JSON (field names, literals, pre-encoded values).
    fn raw(&mut self, json: &str) {
        self.0.extend_from_slice(json.as_bytes());
    }

    /// A quoted, escaped JSON string.
    fn str(&mut self, s: &str) {
        // Writing into a Vec cannot fail.
        let _ = CompactFormatter.write_string_fast(&mut self.0, s, true);
    }

    /// `key` (`,"name":`) and the string, when there is one (a field skipped when absent).
    fn str_if(&mut self, key: &str, s: Option<&str>) {
        if let Some(s) = s {
            self.raw(key);
            self.str(s);
        }
    }

    /// `key` and the number, when there is one.
    fn int_if(&mut self, key: &str, n: Option<u64>) {
        if let Some(n) = n {
            self.raw(key);
            self.int(n);
        }
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.raw("null"),
        }
    }

    fn int(&mut self, n: u64) {
        self.raw(itoa::Buffer::new().format(n));
    }

    fn coded(&mut self, c: Option<&Coded>) {
        let Some(c) = c else {
            return self.raw("null");
        };
        self.raw("{\"code\":");
        self.str(&c.code);
        self.raw(",\"name\":");
        self.str(&c.name);
        self.raw("}");
    }

    fn named(&mut self, n: Option<&Named>) {
        let Some(n) = n else {
            return self.raw("null");
        };
        self.raw("{\"id\":");
        self.str(&n.id);
        self.raw(",\"name\":");
        self.opt_str(n.name.as_deref());
        self.raw("}");
    }
}

#[cfg(test)]
mod tests {

    use proptest::prelude::*;

    use super::super::{
        Encoded, FaultInfo, Hardware, Host, Kind, Origin, OriginKind, ResourceRef, SCHEMA,
    };
    use super::*;

    fn full() -> Alert {
        Alert {
            schema: SCHEMA.into(),
            id: "0123456789abcdef0123456789abcdef".into(),
            kind: Kind::Iem,
            code: Some("ES0030010001".into()),
            severity: Some(Coded {
                code: "E".into(),
                name: "error".into(),
            }),
            alert_type: Some("fault".into()),
            source_type: Some(Coded {
                code: "S".into(),
                name: "software".into(),
            }),
            component: Some(Named {
                id: "003".into(),
                name: Some("s3".into()),
            }),
            module: Some(Named {
                id: "001".into(),
                name: None,
            }),
            event: Some(Named {
                id: "0001".into(),
                name: Some("Auth \"server\" failed".into()),
            }),
            in_catalog: true,
            message: "tab\t nl\n nul\u{0} esc\u{1b} del\u{7f} é 漢 \u{2028} \\ / end".into(),
            impact: Some("x".into()),
            recommendation: Some("call \"support\"".into()),
            count: Some(42),
            extra: Some(serde_json::json!({"n": -1.5, "a": [1, null, true], "s": "\u{1}"})),
            reason: Some("why".into()),
            time: "2026-11-21T22:50:01+00:00".into(),
            origin: Origin {
                kind: OriginKind::File,
                path: Some("/var/log/messages".into()),
                cursor: Some("s=1;i=2".into()),
                offset: Some(u64::MAX),
                program: Some("s3server".into()),
                pid: Some("42".into()),
                host: Some("node1".into()),
                priority: Some(191),
            },
            raw: "raw \u{fffd}".into(),
            truncated: true,
            host: Some(Encoded::new(Host {
                hostname: "node1".into(),
                fqdn: "node1.example.com".into(),
                machine_id: None,
                boot_id: Some("b".into()),
                site_id: Some("site \"1\"".into()),
                ..Host::default()
            })),
            hardware: vec![
                Encoded::new(Hardware {
                    reference: "sdc".into(),
                    ref_kind: "block".into(),
                    found: true,
                    device: Some(serde_json::json!({"serial": "Z1"})),
                }),
                Encoded::new(Hardware {
                    reference: "eth9".into(),
                    ref_kind: "nic".into(),
                    found: false,
                    device: None,
                }),
            ],
            resource: Some(ResourceRef {
                kind: "host".into(),
                id: "ssc-vm-1".into(),
            }),
            resolves: Some(Some("f".repeat(32))),
            fault: Some(FaultInfo {
                fault_id: "f".repeat(32),
                family: "0080010001".into(),
                opened: "2026-11-21T22:50:01+00:00".into(),
                count: 3,
                age_secs: Some(900),
                escalation: Some(1),
                first_seen: None,
                last_seen: Some("2026-11-21T23:05:01+00:00".into()),
                resolution_id: None,
                repeats: Some(7),
            }),
        }
    }

    /// Every optional field absent, every flag off.
    fn empty() -> Alert {
        let origin = Origin {
            kind: OriginKind::Journald,
            path: None,
            cursor: None,
            offset: None,
            program: None,
            pid: None,
            host: None,
            priority: None,
        };
        Alert::bare(String::new(), String::new(), origin, String::new(), false)
    }

    /// The same JSON value as the derived `Serialize` (through serde_json), with the same key
    /// order, and it reads back into the same alert.
    fn check(alert: &Alert) {
        let ours = encode(alert).unwrap();
        let ours = std::str::from_utf8(&ours).unwrap();
        let theirs: serde_json::Value = serde_json::to_value(alert).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(ours).unwrap();
        assert_eq!(parsed, theirs, "{ours}");
        // Field order too (serde_json writes the derive's order).
        let keys = |s: &str| -> Vec<String> {
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(s).unwrap();
            v.keys().cloned().collect()
        };
        assert_eq!(keys(ours), keys(&serde_json::to_string(alert).unwrap()));
        assert_eq!(&serde_json::from_str::<Alert>(ours).unwrap(), alert);
    }

    #[test]
    fn a_full_alert_encodes_as_the_derived_serialize_says() {
        check(&full());
    }

    #[test]
    fn an_empty_alert_encodes_as_the_derived_serialize_says() {
        check(&empty());
    }

    /// A resolution with no open fault says `"resolves": null`; other alerts leave it out.
    #[test]
    fn resolves_is_null_on_an_unpaired_resolution_and_absent_elsewhere() {
        let mut a = empty();
        a.kind = Kind::Summary;
        a.resolves = Some(None);
        check(&a);
        let json: serde_json::Value = serde_json::from_slice(&encode(&a).unwrap()).unwrap();
        assert_eq!(json["resolves"], serde_json::Value::Null);
        assert_eq!(json["kind"], "summary");
        assert!(json.as_object().unwrap().contains_key("resolves"));
        let json: serde_json::Value = serde_json::from_slice(&encode(&empty()).unwrap()).unwrap();
        assert!(!json.as_object().unwrap().contains_key("resolves"));
    }

    proptest! {
        #[test]
        fn any_text_encodes_as_the_derived_serialize_says(
            message in any::<String>(),
            raw in any::<String>(),
            program in proptest::option::of(any::<String>()),
            offset in proptest::option::of(any::<u64>()),
            priority in proptest::option::of(any::<u8>()),
            truncated in any::<bool>(),
            kind in 0u8..3,
        ) {
            let mut a = if kind == 0 { empty() } else { full() };
            a.message = message;
            a.raw = raw;
            a.origin.program = program.map(Into::into);
            a.origin.offset = offset;
            a.origin.priority = priority;
            a.origin.kind = match kind { 0 => OriginKind::File, 1 => OriginKind::Journald, _ => OriginKind::Stdin };
            a.truncated = truncated;
            check(&a);
        }
    }
}
