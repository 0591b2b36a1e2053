//! One spooled record as one AMQP message: its routing key (`iem.<severity>.<component>`, or
//! `iem.malformed`), body (the spooled JSON as is, or the SSPL body), headers (`schema`) and
//! properties (persistent, JSON, timestamp, the alert id as the message id).
//!
//! Nothing in a record can make building its message fail: what cannot be read, or does not fit
//! AMQP's 255-byte short strings, goes out as `iem.malformed` (never dropped, where someone can
//! see it) or is cut to fit.

use std::borrow::Cow;

use amq_protocol::types::{MAX_SHORT_STRING_LENGTH, ShortString};
use serde::Deserialize;

use super::PublishError;
use super::wire::Properties;
use crate::alert::Alert;
use crate::config::broker::{BodyFormat, BrokerConfig};
use crate::spool::Record;

/// The fields of a spooled alert the publisher needs, borrowed from the payload.
#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    schema: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    severity: Option<NameRef<'a>>,
    #[serde(borrow, default)]
    component: Option<ComponentRef<'a>>,
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

/// Appends one word of a routing key: lower case, `[a-z0-9_-]`, anything else `_`.
fn push_key_word(key: &mut String, s: &str) {
    key.extend(s.chars().map(|c| match c.to_ascii_lowercase() {
        c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
        _ => '_',
    }));
}

/// `iem.<severity name>.<component name or id>`, or `iem.malformed`; cut to AMQP's 255 bytes
/// (the catalog refuses component names that long, but alerts spooled before may carry one).
fn routing_key(meta: &Meta<'_>) -> String {
    if meta.kind.as_deref() == Some("malformed") {
        return "iem.malformed".into();
    }
    let mut key = String::with_capacity(32);
    key.push_str("iem.");
    push_key_word(
        &mut key,
        meta.severity.as_ref().map_or("unknown", |s| &s.name),
    );
    key.push('.');
    push_key_word(
        &mut key,
        meta.component
            .as_ref()
            .map_or("unknown", |c| c.name.as_deref().unwrap_or(&c.id)),
    );
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
    pub(crate) message_id: Option<Cow<'r, str>>,
    pub(crate) schema: Cow<'r, str>,
    pub(crate) timestamp: u64,
    pub(crate) spool_seq: i64,
}

impl Outgoing<'_> {
    /// The message's properties for the wire: persistent JSON, its id, time and headers.
    pub(crate) fn properties(&self) -> Properties<'_> {
        Properties {
            timestamp: self.timestamp,
            message_id: self.message_id.as_deref(),
            schema: &self.schema,
            spool_seq: self.spool_seq,
        }
    }
}

/// Builds the message for one spooled record. Nothing in a record can make this fail: a payload
/// that cannot be read, or whose id does not fit a message id, goes out as `iem.malformed`.
pub(crate) fn message<'r>(config: &BrokerConfig, rec: &'r Record) -> Outgoing<'r> {
    let meta = serde_json::from_slice::<Meta<'r>>(&rec.payload)
        .ok()
        .filter(|m| m.id.len() <= MAX_SHORT_STRING_LENGTH);
    let (routing_key, body, schema, message_id) = match (config.format, meta) {
        (BodyFormat::V1, Some(m)) => (
            routing_key(&m),
            Cow::Borrowed(rec.payload.as_slice()),
            m.schema.unwrap_or(Cow::Borrowed(crate::alert::SCHEMA)),
            Some(m.id),
        ),
        (BodyFormat::Sspl, Some(m)) => {
            let body = serde_json::from_slice::<Alert>(&rec.payload)
                .ok()
                .and_then(|a| serde_json::to_vec(&crate::sspl::body(&a)).ok())
                .map_or(Cow::Borrowed(rec.payload.as_slice()), Cow::Owned);
            (
                "sensor-key".into(),
                body,
                Cow::Borrowed("sspl/1.0.0"),
                Some(m.id),
            )
        }
        // Never dropped: an unreadable payload still goes out, where someone can see it.
        (_, None) => (
            "iem.malformed".into(),
            Cow::Borrowed(rec.payload.as_slice()),
            Cow::Borrowed("unknown"),
            None,
        ),
    };
    Outgoing {
        routing_key,
        body,
        message_id,
        schema,
        timestamp: u64::try_from(rec.time_ms / 1000).unwrap_or(0),
        // The record's spool seq, unique over the spool's life: a consumer that gets an id
        // twice with the same seq got a publish repeated after a lost confirm; with two seqs,
        // the line was spooled twice (which the chaos test counts apart). It is also how a
        // return is matched to its message (`wire`).
        spool_seq: i64::try_from(rec.seq).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys() {
        let m: Meta<'_> = serde_json::from_str(
            r#"{"id":"a","kind":"iem","severity":{"code":"E","name":"error"},"component":{"id":"003","name":"s3"}}"#,
        )
        .unwrap();
        assert_eq!(routing_key(&m), "iem.error.s3");
        let m: Meta<'_> =
            serde_json::from_str(r#"{"id":"a","kind":"iem","component":{"id":"0F3","name":null}}"#)
                .unwrap();
        assert_eq!(routing_key(&m), "iem.unknown.0f3");
        let m: Meta<'_> = serde_json::from_str(r#"{"id":"a","kind":"malformed"}"#).unwrap();
        assert_eq!(routing_key(&m), "iem.malformed");
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
