//! One spooled record as one AMQP message: its routing key (`iem.<severity>.<component>`, or
//! `iem.malformed`), body (the spooled JSON as is, or the SSPL body) and properties (persistent,
//! JSON, the alert id as `message_id`, the spool seq as `correlation_id`; why no more:
//! `wire::Properties`).
//!
//! Nothing in a record can make building its message fail: what cannot be read, or does not fit
//! AMQP's 255-byte short strings, goes out as `iem.malformed` (never dropped, where someone can
//! see it) or is cut to fit.

use std::borrow::Cow;

use amq_protocol::types::{MAX_SHORT_STRING_LENGTH, ShortString};
use serde::Deserialize;
use sonic_rs::{JsonValueTrait, LazyValue};

use super::PublishError;
use super::wire::Properties;
use crate::alert::Alert;
use crate::config::broker::{BodyFormat, BrokerConfig};
use crate::spool::Record;

/// What the publisher takes from a spooled alert: its id and routing key.
struct Meta {
    id: String,
    routing_key: String,
}

#[derive(Deserialize)]
struct NameRef<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ComponentRef<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

/// A string field that may be absent or null; `None` for anything else.
fn string<'v>(value: Option<&'v LazyValue<'_>>) -> Option<Option<&'v str>> {
    match value {
        None => Some(None),
        Some(v) if v.is_null() => Some(None),
        Some(v) => v.as_str().map(Some),
    }
}

/// An object field that may be absent or null, read as `T`; `None` for anything else.
fn object<'v, T: Deserialize<'v>>(value: Option<&'v LazyValue<'_>>) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(v) if v.is_null() => Some(None),
        Some(v) => sonic_rs::from_str(v.as_raw_str()).ok().map(Some),
    }
}

impl Meta {
    /// Reads a spooled alert's `id`, `kind`, `severity` and `component`; `None` when the
    /// payload is not a JSON object with a string `id`, or one of the others is of the wrong
    /// type (null is allowed where the alert schema allows it). The alert's fields are walked
    /// lazily with sonic-rs, and the walk stops once all four are found (they come before the
    /// message and the raw line, `alert::encode`): a third of the instructions of the serde
    /// read it replaced (issue 20). The fields are read where they lie, and only the id and the
    /// routing key are copied out. What follows them is not checked; the body goes out as
    /// spooled either way, and a spooled payload passed its checksum.
    fn read(payload: &[u8]) -> Option<Self> {
        let [id, kind, severity, component] = walk(payload)?;
        let id = id.as_ref()?.as_str()?.to_owned();
        let kind = string(kind.as_ref())?;
        let severity = object::<NameRef<'_>>(severity.as_ref())?;
        let component = object::<ComponentRef<'_>>(component.as_ref())?;
        let routing_key = routing_key(
            kind,
            severity.as_ref().map(|s| &*s.name),
            component
                .as_ref()
                .map(|c| c.name.as_deref().unwrap_or(&c.id)),
        );
        Some(Meta { id, routing_key })
    }
}

/// The fields `id`, `kind`, `severity` and `component` of a JSON object, unread, in that order;
/// `None` if `payload` is not a JSON object (as far as the walk went).
fn walk(payload: &[u8]) -> Option<[Option<LazyValue<'_>>; 4]> {
    const NAMES: [&str; 4] = ["id", "kind", "severity", "component"];
    let mut fields = [None, None, None, None];
    let mut found = 0u8;
    for field in sonic_rs::to_object_iter(payload) {
        let (key, value) = field.ok()?;
        let Some(i) = NAMES.iter().position(|n| *n == key) else {
            continue;
        };
        fields[i] = Some(value);
        found |= 1 << i;
        if found == 0b1111 {
            break;
        }
    }
    Some(fields)
}

/// Appends one word of a routing key: lower case, `[a-z0-9_-]`, anything else `_`.
fn push_key_word(key: &mut String, s: &str) {
    key.extend(s.chars().map(|c| match c.to_ascii_lowercase() {
        c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
        _ => '_',
    }));
}

/// `iem.<severity name>.<component name or id>`, or `iem.malformed` for a malformed alert; cut
/// to AMQP's 255 bytes (the catalog refuses component names that long, but alerts spooled
/// before may carry one).
fn routing_key(kind: Option<&str>, severity: Option<&str>, component: Option<&str>) -> String {
    if kind == Some("malformed") {
        return "iem.malformed".into();
    }
    let mut key = String::with_capacity(32);
    key.push_str("iem.");
    push_key_word(&mut key, severity.unwrap_or("unknown"));
    key.push('.');
    push_key_word(&mut key, component.unwrap_or("unknown"));
    // ASCII only, so any cut is at a character boundary.
    key.truncate(MAX_SHORT_STRING_LENGTH);
    key
}

/// The exchange of `config` as an AMQP short string (the config check refuses longer names, so
/// this fails only for a config that skipped validation).
pub(crate) fn exchange(config: &BrokerConfig) -> Result<ShortString, PublishError> {
    let name = config.exchange_name();
    ShortString::try_new(name).map_err(|reason| PublishError::AmqpName {
        key: "broker.exchange",
        name: name.to_string(),
        reason,
    })
}

/// A message ready to publish; what it can borrow from the spooled record, it borrows.
pub(crate) struct Outgoing<'r> {
    /// At most 255 bytes.
    pub(crate) routing_key: String,
    pub(crate) body: Cow<'r, [u8]>,
    /// The alert id, when it could be read and fits a message id (255 bytes).
    pub(crate) message_id: Option<String>,
    pub(crate) spool_seq: u64,
}

impl Outgoing<'_> {
    /// The message's properties for the wire besides persistent JSON: its id and spool seq.
    pub(crate) fn properties(&self) -> Properties<'_> {
        Properties {
            message_id: self.message_id.as_deref(),
            spool_seq: self.spool_seq,
        }
    }
}

/// Builds the message for one spooled record. Nothing in a record can make this fail: a payload
/// that cannot be read, or whose id does not fit a message id, goes out as `iem.malformed`.
pub(crate) fn message<'r>(config: &BrokerConfig, rec: &'r Record) -> Outgoing<'r> {
    let meta = Meta::read(&rec.payload).filter(|m| m.id.len() <= MAX_SHORT_STRING_LENGTH);
    let (routing_key, body, message_id) = match (config.format, meta) {
        (BodyFormat::V1, Some(m)) => (
            m.routing_key,
            Cow::Borrowed(rec.payload.as_slice()),
            Some(m.id),
        ),
        (BodyFormat::Sspl, Some(m)) => {
            let body = serde_json::from_slice::<Alert>(&rec.payload)
                .ok()
                .and_then(|a| serde_json::to_vec(&crate::sspl::body(&a)).ok())
                .map_or(Cow::Borrowed(rec.payload.as_slice()), Cow::Owned);
            ("sensor-key".into(), body, Some(m.id))
        }
        // Never dropped: an unreadable payload still goes out, where someone can see it.
        (_, None) => (
            "iem.malformed".into(),
            Cow::Borrowed(rec.payload.as_slice()),
            None,
        ),
    };
    Outgoing {
        routing_key,
        body,
        message_id,
        // The record's spool seq, unique over the spool's life: a consumer that gets an id
        // twice with the same seq got a publish repeated after a lost confirm; with two seqs,
        // the line was spooled twice (which the chaos test counts apart). It is also how a
        // return is matched to its message (`wire`).
        spool_seq: rec.seq,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::alert::{Coded, Named};

    /// A whole alert as the pipeline spools it (`tests/publish.rs`'s realistic alert).
    fn alert() -> Alert {
        serde_json::from_value(serde_json::json!({
            "schema": "iem.alert/v1", "id": "id-1", "kind": "iem", "code": "ES0030010001",
            "severity": {"code": "E", "name": "error"}, "alert_type": "fault",
            "source_type": {"code": "S", "name": "software"},
            "component": {"id": "003", "name": "s3"}, "module": {"id": "001", "name": "Connection"},
            "event": {"id": "0001", "name": "Auth server connection failed"}, "in_catalog": true,
            "message": "S3 server cannot connect to auth server.",
            "time": "2026-11-21T22:50:01.123456+00:00",
            "origin": {"kind": "file", "path": "/var/log/messages", "offset": 160},
            "raw": "Nov 21 22:50:01 node1 s3server[1234]: IEC:ES0030010001:S3 server cannot connect"
        }))
        .unwrap()
    }

    proptest! {
        /// Whatever text an alert's fields hold, the lazy read gives back what was encoded.
        #[test]
        fn the_lazy_read_gives_back_what_the_encoder_wrote(
            id in any::<String>(),
            severity in proptest::option::of(any::<String>()),
            component in proptest::option::of((any::<String>(), proptest::option::of(any::<String>()))),
            message in any::<String>(),
        ) {
            let mut a = alert();
            a.id = id.clone();
            a.severity = severity.clone().map(|name| Coded { code: "E".into(), name: name.into() });
            a.component = component.clone().map(|(id, name)| Named { id: id.into(), name: name.map(Into::into) });
            a.message = message;
            let json = crate::alert::encode(&a).unwrap();
            let [id_v, kind_v, severity_v, component_v] = walk(&json).unwrap();
            prop_assert_eq!(id_v.as_ref().and_then(|v| v.as_str()), Some(id.as_str()));
            prop_assert_eq!(string(kind_v.as_ref()), Some(Some("iem")));
            let got_severity = object::<NameRef<'_>>(severity_v.as_ref()).unwrap();
            prop_assert_eq!(got_severity.map(|s| s.name.into_owned()), severity.clone());
            let got_component = object::<ComponentRef<'_>>(component_v.as_ref()).unwrap();
            prop_assert_eq!(
                got_component.map(|c| (c.id.into_owned(), c.name.map(Cow::into_owned))),
                component.clone()
            );
            let m = Meta::read(&json).unwrap();
            prop_assert_eq!(m.id, id);
            prop_assert_eq!(
                m.routing_key,
                routing_key(
                    Some("iem"),
                    severity.as_deref(),
                    component.as_ref().map(|(id, name)| name.as_deref().unwrap_or(id))
                )
            );
        }
    }

    #[test]
    fn routing_keys() {
        let key = |json: &str| Meta::read(json.as_bytes()).unwrap().routing_key;
        assert_eq!(
            key(
                r#"{"id":"a","kind":"iem","severity":{"code":"E","name":"error"},"component":{"id":"003","name":"s3"}}"#
            ),
            "iem.error.s3"
        );
        assert_eq!(
            key(r#"{"id":"a","kind":"iem","component":{"id":"0F3","name":null}}"#),
            "iem.unknown.0f3"
        );
        assert_eq!(
            key(r#"{"id":"a","kind":"iem","severity":null,"component":null}"#),
            "iem.unknown.unknown"
        );
        assert_eq!(key(r#"{"id":"a","kind":"malformed"}"#), "iem.malformed");
    }

    /// What the serde read accepted and refused, the lazy read accepts and refuses: strings
    /// unescaped, nulls where a field may be null, anything else not an alert.
    #[test]
    fn the_fields_are_read_as_json_strings_or_the_payload_is_not_an_alert() {
        let m = Meta::read(
            br#"{"raw":"x\"y","id":"a\"b\u00e9","schema":"iem.alert/v1","severity":{"name":"e\/r"},"component":{"name":"s 3","id":"003"},"kind":"iem"}"#,
        )
        .unwrap();
        assert_eq!(m.id, "a\"b\u{e9}");
        assert_eq!(m.routing_key, "iem.e_r.s_3");
        // A field given four times does not end the walk before the id.
        let m = Meta::read(br#"{"kind":"iem","kind":"iem","kind":"iem","kind":"iem","id":"a"}"#);
        assert_eq!(m.map(|m| m.id).as_deref(), Some("a"));
        for bad in [
            &br#"{"kind":"iem"}"#[..],
            br#"{"id":7}"#,
            br#"{"id":null}"#,
            br#"{"id":"a","kind":3}"#,
            br#"{"id":"a","severity":{"name":null}}"#,
            br#"{"id":"a","component":{"id":"003","name":5}}"#,
            br#"{"id":"a","component":{"name":"s3"}}"#,
            br#"{"id":"a","severity":{"code":"E"}}"#,
            br#"{"id":"a","severity":"error"}"#,
            br#"{"id":"a","#,
            br#"["id"]"#,
            b"",
            b"\xff\xfe",
        ] {
            assert!(
                Meta::read(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Issue 13: a 300-character component name panicked the publisher (`ShortString exceeds
    /// maximum length`); a record's fields can no longer make building a message fail.
    #[test]
    fn long_names_and_ids_cannot_panic_the_publisher() {
        let long = "n".repeat(300);
        let payload = format!(
            r#"{{"id":"a","kind":"iem","severity":{{"name":"informational"}},"component":{{"id":"0aa","name":"{long}"}}}}"#
        );
        let rec = Record {
            seq: 1,
            time_ms: 0,
            payload: payload.into_bytes(),
        };
        let out = message(&BrokerConfig::default(), &rec);
        assert_eq!(out.routing_key.len(), 255);
        assert!(out.routing_key.starts_with("iem.informational.nnn"));
        assert_eq!(out.properties().message_id, Some("a"));
        assert_eq!(out.properties().spool_seq, 1);
        // An id that does not fit a message id: sent as malformed, never dropped.
        let rec = Record {
            seq: 2,
            time_ms: 0,
            payload: format!(r#"{{"id":"{long}","kind":"iem"}}"#).into_bytes(),
        };
        let out = message(&BrokerConfig::default(), &rec);
        assert_eq!(out.routing_key, "iem.malformed");
        assert!(out.properties().message_id.is_none());
        let bad = BrokerConfig {
            exchange: Some(long),
            ..BrokerConfig::default()
        };
        assert!(matches!(
            exchange(&bad),
            Err(PublishError::AmqpName {
                key: "broker.exchange",
                ..
            })
        ));
    }
}
