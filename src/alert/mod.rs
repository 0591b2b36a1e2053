//! The alert: the one record every stage after parsing uses, and its JSON form (`iem.alert/v1`).
//!
//! The JSON Schema lives in `schema/iem.alert.v1.json`; tests validate output against it.

use std::borrow::Cow;
use std::sync::Arc;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "iem.alert/v1";

mod encode;
pub use encode::encode;

/// A value shared between alerts together with its JSON, encoded once.
///
/// The host identity and each resolved device are the same for thousands of alerts; attaching
/// one is a reference-count bump, and `encode` copies the stored JSON instead of walking the
/// value again (it was a fifth of the encode cost, `cargo bench --bench enrich`). Other
/// serializers (serde_json in tests and tools) get the value itself.
#[derive(Debug, Clone)]
pub struct Encoded<T>(Arc<(T, Box<str>)>);

impl<T: Serialize> Encoded<T> {
    pub(crate) fn new(value: T) -> Self {
        // Plain data structs and JSON values cannot fail to serialize.
        let json = serde_json::to_string(&value).unwrap_or_else(|_| "null".into());
        Encoded(Arc::new((value, json.into_boxed_str())))
    }

    /// The JSON of the value.
    pub(crate) fn json(&self) -> &str {
        &self.0.1
    }
}

impl<T> std::ops::Deref for Encoded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0.0
    }
}

impl<T: PartialEq> PartialEq for Encoded<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.0 == other.0.0
    }
}

impl<T: Serialize> Serialize for Encoded<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de> + Serialize> Deserialize<'de> for Encoded<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Encoded::new)
    }
}

/// What kind of alert this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A well-formed IEM.
    Iem,
    /// An `IEC:` marker followed by something that is not a valid code.
    Malformed,
    /// A fault open past its catalog's `escalate_after` (`lifecycle` says which and how long).
    Escalation,
    /// The repeats of an open fault within one `coalesce` window, as one alert.
    Summary,
    /// A fault resolved within its `hold_down`: one alert instead of the fault and resolution.
    Flap,
}

impl Kind {
    /// The name in the JSON (`kind`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Iem => "iem",
            Kind::Malformed => "malformed",
            Kind::Escalation => "escalation",
            Kind::Summary => "summary",
            Kind::Flap => "flap",
        }
    }
}

/// The resource an alert is about, named by its event's `resource` rule (`catalog::Resource`):
/// the SSPL body's `resource_type` and `resource_id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceRef {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// What a lifecycle alert (escalation, summary, flap) is about: the open fault and its figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultInfo {
    /// The fault's alert id.
    pub(crate) fault_id: String,
    /// The fault's code family (`0080010001`).
    pub(crate) family: String,
    /// When the fault was raised (RFC 3339).
    pub(crate) opened: String,
    /// Escalation: times the fault was seen while open; summary: repeats in the window (with the
    /// producer's own counts); flap: flaps of this fault and resource so far.
    pub(crate) count: u64,
    /// Escalation: seconds the fault has been open; which escalation this is (1, 2, ...).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) age_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) escalation: Option<u64>,
    /// Summary: the first and last repeat of the window (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) first_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) last_seen: Option<String>,
    /// Flap: the resolution's alert id, and the fault's repeats while it was held down.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) resolution_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) repeats: Option<u64>,
}

/// `resolves`: absent on alerts that resolve nothing, `null` on a resolution with no open fault.
mod resolves {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        v: &Option<Option<String>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.as_ref().and_then(|v| v.as_deref()).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

/// A letter code with its name (`{"code": "E", "name": "error"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coded {
    pub code: Cow<'static, str>,
    pub name: Cow<'static, str>,
}

/// A numeric field of the code as its hex digits, with its catalog name when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    pub id: CompactString,
    /// Shared with the catalog (no copy per alert).
    pub name: Option<Arc<str>>,
}

/// Where the line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginKind {
    File,
    Journald,
    Stdin,
}

impl OriginKind {
    /// The name in an alert's `origin.kind` (as `Serialize` writes it; `encode` is pinned to it).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OriginKind::File => "file",
            OriginKind::Journald => "journald",
            OriginKind::Stdin => "stdin",
        }
    }
}

/// Where a line was read: enough to name its origin and to give it a stable id.
#[derive(Debug, Clone, Copy)]
pub struct LineSource<'a> {
    pub kind: OriginKind,
    /// The file path (files) or `-` (stdin).
    pub path: Option<&'a str>,
    /// Byte offset of the line in its file (files and stdin).
    pub offset: Option<u64>,
    /// The file's identity independent of its name (a hash of its first line), so that the same
    /// line keeps its id when the file is rotated; 0 when unknown.
    pub fingerprint: u64,
    /// True when the line was cut at the maximum line length.
    pub truncated: bool,
}

/// The position and producer of the line an alert was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub kind: OriginKind,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<CompactString>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cursor: Option<String>,
    /// Byte offset of the line in its file (files, stdin); absent for journald.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub offset: Option<u64>,
    pub program: Option<CompactString>,
    pub pid: Option<CompactString>,
    pub host: Option<CompactString>,
    pub priority: Option<u8>,
}

/// This machine's host name: the kernel's node name (`uname(2)`, the same as `gethostname(2)`),
/// empty when unset. The one lookup: enrich (`host.hostname`), the publisher (which broker is
/// local) and `iemctl emit` (syslog's short form) all take it from here.
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .trim()
        .to_string()
}

/// The node an alert was raised on (filled by `enrich`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Host {
    pub hostname: String,
    pub fqdn: String,
    pub machine_id: Option<String>,
    pub boot_id: Option<String>,
    pub site_id: Option<String>,
    pub rack_id: Option<String>,
    pub node_id: Option<String>,
    pub cluster_id: Option<String>,
}

/// A device reference found in an alert and what it resolved to (filled by `enrich`).
/// `found: false` means the reference did not resolve; it never fails the alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    /// The reference as found in the text (`sdc2`, `2:0:0:1`, `eth0`, ...).
    pub reference: String,
    /// What kind of reference it is (`block`, `by-id`, `by-path`, `wwn`, `hctl`, `nic`, ...).
    pub ref_kind: String,
    pub found: bool,
    /// The resolved device: disk or NIC fields, as produced by `enrich` (`schema/hardware.v1.json`).
    /// The whole entry is shared with the enrich cache (`Encoded<Hardware>`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device: Option<serde_json::Value>,
}

/// One normalized alert (`iem.alert/v1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub schema: Cow<'static, str>,
    /// Stable id: the same line at the same position gives the same id across runs and replays;
    /// with journald and files both read, the same IEM through either (`dedup`).
    pub id: String,
    pub kind: Kind,
    /// Canonical code (`ES0030010001`); for a malformed alert, absent.
    pub code: Option<CompactString>,
    pub severity: Option<Coded>,
    /// fault / fault_resolved / get.
    pub alert_type: Option<Cow<'static, str>>,
    pub source_type: Option<Coded>,
    pub component: Option<Named>,
    pub module: Option<Named>,
    pub event: Option<Named>,
    pub in_catalog: bool,
    /// The description text from the line.
    pub message: String,
    /// What the event means for the system, from the catalog.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub impact: Option<Arc<str>>,
    /// What the operator should do, from the catalog.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recommendation: Option<Arc<str>>,
    /// Motr's running count, when the line carried one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub count: Option<u64>,
    /// The trailing JSON object after the description, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub extra: Option<serde_json::Value>,
    /// Why a malformed alert is malformed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// Event time, RFC 3339.
    pub time: String,
    pub origin: Origin,
    /// The line as read (lossy UTF-8; truncated to the maximum line length).
    pub raw: String,
    /// True when the line was longer than the maximum line length and was cut.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub truncated: bool,
    /// Shared by every alert of this node (see `Encoded`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub host: Option<Encoded<Host>>,
    /// Shared with the enricher's cache (see `Encoded`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub hardware: Vec<Encoded<Hardware>>,
    /// The resource a lifecycle alert is about (faults and resolutions of tracked events,
    /// escalations, summaries, flaps).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resource: Option<ResourceRef>,
    /// On a resolution: the id of the fault's alert it resolves, or `null` when no fault of its
    /// resource was open. Absent on other alerts.
    #[serde(skip_serializing_if = "Option::is_none", default, with = "resolves")]
    pub resolves: Option<Option<String>>,
    /// On an escalation, summary or flap: the fault it is about.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fault: Option<FaultInfo>,
}

impl Alert {
    /// An alert with only where it came from: kind `malformed`, nothing decoded, no code, no
    /// enrichment. Decoding fills in the rest.
    pub(crate) fn bare(
        id: String,
        time: String,
        origin: Origin,
        raw: String,
        truncated: bool,
    ) -> Alert {
        Alert {
            schema: SCHEMA.into(),
            id,
            kind: Kind::Malformed,
            code: None,
            severity: None,
            alert_type: None,
            source_type: None,
            component: None,
            module: None,
            event: None,
            in_catalog: false,
            message: String::new(),
            impact: None,
            recommendation: None,
            count: None,
            extra: None,
            reason: None,
            time,
            origin,
            raw,
            truncated,
            host: None,
            hardware: Vec::new(),
            resource: None,
            resolves: None,
            fault: None,
        }
    }
}
