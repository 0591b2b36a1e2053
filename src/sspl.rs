//! The SSPL-compatible body (../shared/iem-domain.md §4), produced from an alert, so that the
//! consumers of the old sensor keep working. JSON Schema: `schema/sspl-sensor-response.json`.
//!
//! Field by field:
//! - `time`, `info.event_time`: `alert.time` as epoch seconds, in a string as SSPL sent them;
//! - `alert_id`: `<epoch secs><32 hex>`, the hex being the first 16 bytes of BLAKE3(`alert.id`),
//!   so a replayed alert (same id) gets the same `alert_id`;
//! - `host_id`: `alert.host.fqdn`, else the origin host, else `""`;
//! - `alert_type`: `alert.alert_type`, else derived from the severity letter (A X E -> fault,
//!   I -> fault_resolved, others -> get);
//! - `severity`: the severity name (`error`, `warning`, ...);
//! - `info.site_id` .. `cluster_id`: from `alert.host` (`""` when not configured, as SSPL did);
//! - `info.resource_type`, `info.resource_id`: `iem:<type>` and the id of `alert.resource` (a
//!   tracked fault, its resolution and the lifecycle's alerts: a consumer keyed on the resource
//!   pairs a fault with its resolution), else `iem` and `iem` as SSPL sent them;
//! - `info.description`: `alert.message`, else the event name; `impact`, `recommendation` from
//!   the catalog, else `""`;
//! - `specific_info`: `source` (`Hardware`, `Software`, `Firmware`, `OS`), `component`, `module`,
//!   `event` (catalog names, else the hex ids), `IEC` (the 12-character code).
//!
//! A malformed alert (no valid code) still gets a body, so the old consumers see it: `alert_type`
//! `get`, `severity` `warning`, `source` `Software`, empty `component`/`module`/`event`/`IEC`,
//! and the description says why it is malformed. An unparsable `alert.time` gives epoch 0.

use serde_json::{Value, json};

use crate::alert::{Alert, Kind, Named};

/// The SSPL sensor-response JSON for one alert.
pub fn body(alert: &Alert) -> Value {
    let epoch = chrono::DateTime::parse_from_rfc3339(&alert.time)
        .map(|t| t.timestamp())
        .unwrap_or(0)
        .max(0);
    let hash = blake3::hash(alert.id.as_bytes());
    let hex: String = hash.as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let host = alert.host.as_ref();
    let host_id = host
        .map(|h| h.fqdn.clone())
        .or_else(|| alert.origin.host.as_deref().map(str::to_owned))
        .unwrap_or_default();
    let host_field = |f: fn(&crate::alert::Host) -> &Option<String>| -> String {
        host.and_then(|h| f(h).clone()).unwrap_or_default()
    };
    let malformed = alert.kind == Kind::Malformed || alert.code.is_none();
    let severity_code = alert.severity.as_ref().map(|s| &*s.code);
    let alert_type = alert
        .alert_type
        .clone()
        .filter(|_| !malformed)
        .unwrap_or_else(|| {
            if malformed {
                "get"
            } else {
                match severity_code {
                    Some("A" | "X" | "E") => "fault",
                    Some("I") => "fault_resolved",
                    _ => "get",
                }
            }
            .into()
        });
    let severity = match &alert.severity {
        Some(s) if !malformed => s.name.clone(),
        _ => "warning".into(),
    };
    let name_of = |n: &Option<Named>| -> String {
        n.as_ref()
            .map(|n| n.name.as_deref().unwrap_or(&n.id).to_owned())
            .unwrap_or_default()
    };
    let description = if malformed {
        match &alert.reason {
            Some(reason) => format!("Malformed IEM ({reason}): {}", alert.message),
            None => format!("Malformed IEM: {}", alert.message),
        }
    } else if !alert.message.trim().is_empty() {
        alert.message.clone()
    } else {
        name_of(&alert.event)
    };
    let source = if malformed {
        "Software"
    } else {
        match alert.source_type.as_ref().map(|s| &*s.code) {
            Some("H") => "Hardware",
            Some("F") => "Firmware",
            Some("O") => "OS",
            _ => "Software",
        }
    };
    let (component, module, event, iec) = if malformed {
        Default::default()
    } else {
        (
            name_of(&alert.component),
            name_of(&alert.module),
            name_of(&alert.event),
            alert.code.clone().unwrap_or_default(),
        )
    };
    let (resource_type, resource_id) = match &alert.resource {
        Some(r) => (format!("iem:{}", r.kind), r.id.clone()),
        None => ("iem".to_owned(), "iem".to_owned()),
    };
    json!({
        "username": "sspl-ll",
        "description": "Seagate Storage Platform Library - Sensor Response",
        "title": "SSPL Sensor Response",
        "expires": 3600,
        "signature": "None",
        "time": epoch.to_string(),
        "message": {
            "sspl_ll_msg_header": {
                "schema_version": "1.0.0",
                "sspl_version": "2.0.0",
                "msg_version": "1.0.0"
            },
            "sensor_response_type": {
                "alert_type": alert_type,
                "severity": severity,
                "alert_id": format!("{epoch}{hex}"),
                "host_id": host_id,
                "info": {
                    "event_time": epoch.to_string(),
                    "resource_id": resource_id,
                    "resource_type": resource_type,
                    "site_id": host_field(|h| &h.site_id),
                    "rack_id": host_field(|h| &h.rack_id),
                    "node_id": host_field(|h| &h.node_id),
                    "cluster_id": host_field(|h| &h.cluster_id),
                    "description": description,
                    "impact": alert.impact.clone().unwrap_or_default(),
                    "recommendation": alert.recommendation.clone().unwrap_or_default()
                },
                "specific_info": {
                    "source": source,
                    "component": component,
                    "module": module,
                    "event": event,
                    "IEC": iec
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Coded, Host, Origin, OriginKind};

    fn alert() -> Alert {
        Alert {
            schema: crate::alert::SCHEMA.into(),
            id: "node1:/var/log/messages:1234".into(),
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
                name: Some("Connection".into()),
            }),
            event: Some(Named {
                id: "0001".into(),
                name: Some("Auth server connection failed".into()),
            }),
            in_catalog: true,
            message: "S3 server cannot connect to auth server.".into(),
            impact: Some("S3 requests fail".into()),
            recommendation: None,
            count: None,
            extra: None,
            reason: None,
            time: "2026-11-21T22:50:01.123456+00:00".into(),
            origin: Origin {
                kind: OriginKind::File,
                path: Some("/var/log/messages".into()),
                cursor: None,
                offset: Some(1234),
                program: Some("s3server".into()),
                pid: Some("1234".into()),
                host: Some("node1".into()),
                priority: Some(3),
            },
            raw: "raw".into(),
            truncated: false,
            host: Some(crate::alert::Encoded::new(Host {
                hostname: "node1".into(),
                fqdn: "node1.lab".into(),
                site_id: Some("s1".into()),
                node_id: Some("n1".into()),
                ..Host::default()
            })),
            hardware: Vec::new(),
            resource: None,
            resolves: None,
            fault: None,
        }
    }

    #[test]
    fn maps_every_field() {
        let b = body(&alert());
        let epoch = 1_795_301_401i64; // 2026-11-21T22:50:01Z
        assert_eq!(b["time"], epoch.to_string());
        let s = &b["message"]["sensor_response_type"];
        assert_eq!(s["alert_type"], "fault");
        assert_eq!(s["severity"], "error");
        assert_eq!(s["host_id"], "node1.lab");
        let id = s["alert_id"].as_str().unwrap();
        assert_eq!(id.len(), epoch.to_string().len() + 32);
        assert!(id.starts_with(&epoch.to_string()));
        assert!(id[10..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(s["info"]["event_time"], epoch.to_string());
        assert_eq!(s["info"]["site_id"], "s1");
        assert_eq!(s["info"]["rack_id"], "");
        assert_eq!(s["info"]["node_id"], "n1");
        assert_eq!(s["info"]["impact"], "S3 requests fail");
        assert_eq!(s["info"]["recommendation"], "");
        assert_eq!(
            s["info"]["description"],
            "S3 server cannot connect to auth server."
        );
        assert_eq!(
            s["specific_info"],
            json!({"source": "Software", "component": "s3", "module": "Connection",
                   "event": "Auth server connection failed", "IEC": "ES0030010001"})
        );
    }

    #[test]
    fn alert_id_depends_only_on_id_and_time() {
        let a = alert();
        let mut replay = alert();
        replay.message = "different text".into();
        let id = |a: &Alert| body(a)["message"]["sensor_response_type"]["alert_id"].clone();
        assert_eq!(id(&a), id(&replay));
        replay.id.push('x');
        assert_ne!(id(&a), id(&replay));
    }

    #[test]
    fn malformed_and_fallbacks() {
        let mut a = alert();
        a.kind = Kind::Malformed;
        a.code = None;
        a.reason = Some("legacy 9-digit code".into());
        a.message = "Drive removed".into();
        a.time = "garbage".into();
        a.host = None;
        let b = body(&a);
        let s = &b["message"]["sensor_response_type"];
        assert_eq!(b["time"], "0");
        assert_eq!(s["alert_type"], "get");
        assert_eq!(s["severity"], "warning");
        assert_eq!(s["host_id"], "node1");
        assert_eq!(
            s["info"]["description"],
            "Malformed IEM (legacy 9-digit code): Drive removed"
        );
        assert_eq!(s["specific_info"]["IEC"], "");

        let mut a = alert();
        a.message = "  ".into();
        a.alert_type = None;
        a.severity = Some(Coded {
            code: "I".into(),
            name: "informational".into(),
        });
        a.source_type = Some(Coded {
            code: "H".into(),
            name: "hardware".into(),
        });
        a.module = Some(Named {
            id: "00a".into(),
            name: None,
        });
        let b = body(&a);
        let s = &b["message"]["sensor_response_type"];
        assert_eq!(s["alert_type"], "fault_resolved");
        assert_eq!(s["info"]["description"], "Auth server connection failed");
        assert_eq!(s["specific_info"]["source"], "Hardware");
        assert_eq!(s["specific_info"]["module"], "00a");
    }

    /// Issue 17: a tracked fault and its resolution carry their resource, so a consumer keyed on
    /// the resource pairs them; other alerts keep SSPL's `iem`.
    #[test]
    fn the_resource_goes_to_resource_type_and_id() {
        let mut a = alert();
        let info = |a: &Alert| body(a)["message"]["sensor_response_type"]["info"].clone();
        assert_eq!(
            (
                info(&a)["resource_type"].clone(),
                info(&a)["resource_id"].clone()
            ),
            (json!("iem"), json!("iem"))
        );
        a.resource = Some(crate::alert::ResourceRef {
            kind: "host".into(),
            id: "ssc-vm-1".into(),
        });
        assert_eq!(
            (
                info(&a)["resource_type"].clone(),
                info(&a)["resource_id"].clone()
            ),
            (json!("iem:host"), json!("ssc-vm-1"))
        );
    }
}
