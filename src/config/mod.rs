//! The daemon's configuration: TOML, every key documented in `packaging/iemd.toml`, validated
//! completely up front so that errors name the file, the key and the reason.
//!
//! Each stage's section lives in its own submodule; this module composes them and loads the file.

pub mod broker;
pub mod enrich;
pub mod sources;
pub mod spool;
pub mod telemetry;

use serde::Deserialize;

/// One thing wrong with a configuration: the dotted key (`broker.urls[1]`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub spool: spool::SpoolConfig,
    pub broker: broker::BrokerConfig,
    pub sources: sources::SourcesConfig,
    pub enrich: enrich::EnrichConfig,
}
