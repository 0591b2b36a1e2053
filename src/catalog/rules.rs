//! An event's lifecycle rules: what it resolves, how its resource is named, and when its open
//! fault escalates, is held down or has its repeats coalesced (`iem-catalog/README.md`).
//!
//! Most events have none; an event takes part in the fault lifecycle (`lifecycle`) only when it
//! has a rule or another event resolves it.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use iem_parsers::iem::Field;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::parse_hex;

/// A code family: component, module and event, without severity and source (`0080010001`).
/// A fault and its resolution are matched by family, so `WS0080010001` and `IS0080010001` are
/// the same fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Family(pub u16, pub u16, pub u16);

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03x}{:03x}{:04x}", self.0, self.1, self.2)
    }
}

impl Family {
    /// Parses the 10 hex digits `CCCMMMEEEE`, each field in its range.
    pub(crate) fn parse(text: &str) -> Result<Family, String> {
        if text.len() != 10 || !text.is_ascii() {
            return Err(format!(
                "code family {text:?} must be 10 hex digits (component, module, event)"
            ));
        }
        Ok(Family(
            parse_hex(&text[..3], Field::Component, "component id")?,
            parse_hex(&text[3..6], Field::Module, "module id")?,
            parse_hex(&text[6..], Field::Event, "event id")?,
        ))
    }
}

impl Serialize for Family {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Family {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Family::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// How the resource an alert is about is named.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Resource {
    /// The node itself (its host name).
    #[default]
    Node,
    /// The first hardware reference's serial or WWN (else the reference as written).
    Device,
    /// The value of a `key=value` pair in the message.
    Field(String),
}

impl Resource {
    /// The SSPL `resource_type` of resources named this way.
    pub(crate) fn kind(&self) -> &str {
        match self {
            Resource::Node => "node",
            Resource::Device => "device",
            Resource::Field(key) => key,
        }
    }
}

/// An event's lifecycle rules, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    /// The faults this event resolves.
    pub resolves: Vec<Family>,
    /// As written; a resolution without one names its resource as the fault it resolves does,
    /// everything else defaults to the node.
    pub resource: Option<Resource>,
    /// An open fault older than this publishes an escalation.
    pub escalate_after: Option<Duration>,
    /// Escalations repeat at this interval while the fault stays open (default: `escalate_after`).
    pub escalate_every: Option<Duration>,
    /// A resolution within this of the fault makes one flap alert instead of both.
    pub hold_down: Option<Duration>,
    /// Repeats of the open fault within this window make one summary.
    pub coalesce: Option<Duration>,
}

impl Rules {
    /// True when the event has any rule of its own.
    pub(crate) fn any(&self) -> bool {
        *self != Rules::default()
    }
}

/// The rules as written in a catalog file, with their places for errors.
pub(super) struct RulesV1 {
    pub(crate) resolves: Vec<Spanned<String>>,
    pub(crate) resource: Option<Spanned<String>>,
    pub(crate) escalate_after: Option<Spanned<String>>,
    pub(crate) escalate_every: Option<Spanned<String>>,
    pub(crate) hold_down: Option<Spanned<String>>,
    pub(crate) coalesce: Option<Spanned<String>>,
}

/// Where a rule is wrong (a byte range of the file) and why.
type RuleError = (Option<Range<usize>>, String);

impl RulesV1 {
    /// Checks every rule of the event `own`.
    pub(crate) fn validate(self, own: Family) -> Result<Rules, RuleError> {
        let mut resolves = Vec::new();
        for r in &self.resolves {
            let family = Family::parse(r.get_ref()).map_err(|e| (Some(r.span()), e))?;
            if family == own {
                return Err((Some(r.span()), format!("event {own} cannot resolve itself")));
            }
            resolves.push(family);
        }
        let resource = match &self.resource {
            None => None,
            Some(r) => Some(match r.get_ref().as_str() {
                "node" => Resource::Node,
                "device" => Resource::Device,
                text => match text.strip_prefix("field:") {
                    Some(key) if is_key(key) => Resource::Field(key.to_string()),
                    _ => {
                        return Err((
                            Some(r.span()),
                            format!(
                                "resource {text:?} must be \"node\", \"device\" or \
                                 \"field:<key>\" (a key of letters, digits, '_', '-', '.')"
                            ),
                        ));
                    }
                },
            }),
        };
        let duration = |d: &Option<Spanned<String>>, key: &str| -> Result<_, RuleError> {
            d.as_ref()
                .map(|d| {
                    parse_duration(d.get_ref()).map_err(|e| (Some(d.span()), format!("{key}: {e}")))
                })
                .transpose()
        };
        let rules = Rules {
            resolves,
            resource,
            escalate_after: duration(&self.escalate_after, "escalate_after")?,
            escalate_every: duration(&self.escalate_every, "escalate_every")?,
            hold_down: duration(&self.hold_down, "hold_down")?,
            coalesce: duration(&self.coalesce, "coalesce")?,
        };
        if let (Some(every), None) = (&self.escalate_every, rules.escalate_after) {
            return Err((
                Some(every.span()),
                "escalate_every needs escalate_after".into(),
            ));
        }
        Ok(rules)
    }
}

fn is_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A duration written as a whole number and a unit: `500ms`, `30s`, `10m`, `2h`, `1d`; more
/// than zero, at most 365 days.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} must be a number and a unit (ms, s, m, h, d)"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(format!("{text:?} must end in a unit: ms, s, m, h or d")),
    };
    match ms {
        Some(0) => Err(format!("{text:?} must be more than zero")),
        Some(ms) if ms <= 365 * 86_400_000 => Ok(Duration::from_millis(ms)),
        _ => Err(format!("{text:?} is longer than 365 days")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "",
            "10",
            "s",
            "0s",
            "1.5s",
            "-1s",
            "10 s",
            "400d",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn families() {
        let f = Family::parse("0080010001").unwrap();
        assert_eq!(f, Family(8, 1, 1));
        assert_eq!(f.to_string(), "0080010001");
        assert_eq!(Family::parse("002002000a").unwrap(), Family(2, 2, 10));
        assert!(Family::parse("008001001").is_err());
        assert!(Family::parse("0000010001").is_err());
        assert!(Family::parse("ES00800100").is_err());
    }
}
