//! The IEM catalog (components, modules, events) and decoding a line into an alert.
//!
//! The files under `iem-catalog/` are compiled in as the default; directories given at run time
//! override or extend it (see `iem-catalog/README.md` for the format). An unknown code is not an
//! error: its alert says `in_catalog: false`.

pub mod decode;
pub(crate) mod rules;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iem_parsers::iem::Field;
use serde::Deserialize;
use toml::Spanned;

pub(crate) use rules::Family;
pub use rules::{Resource, Rules};

/// The catalog files shipped with iemd, compiled in.
const BUILTIN: &[(&str, &str)] = &[
    ("hare.toml", include_str!("../../iem-catalog/hare.toml")),
    ("motr.toml", include_str!("../../iem-catalog/motr.toml")),
    ("s3.toml", include_str!("../../iem-catalog/s3.toml")),
    ("auth.toml", include_str!("../../iem-catalog/auth.toml")),
    ("sspl.toml", include_str!("../../iem-catalog/sspl.toml")),
    ("csm.toml", include_str!("../../iem-catalog/csm.toml")),
    ("nfs.toml", include_str!("../../iem-catalog/nfs.toml")),
    ("ha.toml", include_str!("../../iem-catalog/ha.toml")),
];

/// The longest component name, in characters. The name is a word of the alerts' routing key
/// (`iem.<severity>.<component>`, one byte per character), which AMQP limits to 255 bytes.
pub(crate) const MAX_COMPONENT_NAME: usize = 200;

/// A catalog file that could not be used: which file, which line, why.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// One event of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub description: Arc<str>,
    pub impact: Option<Arc<str>>,
    pub recommendation: Option<Arc<str>>,
    /// How its alerts take part in the fault lifecycle (`lifecycle`); empty for most events.
    pub rules: Rules,
}

/// One component: its name, its modules' names and its events by (module, event).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Component {
    pub name: Arc<str>,
    pub modules: BTreeMap<u16, Arc<str>>,
    pub(crate) events: BTreeMap<(u16, u16), Event>,
}

/// What the catalog knows about one code; any part may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup<'c> {
    pub component: Option<&'c Arc<str>>,
    pub module: Option<&'c Arc<str>>,
    pub event: Option<&'c Event>,
}

/// The catalog in effect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Catalog {
    pub(crate) components: BTreeMap<u16, Component>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    id: Spanned<String>,
    name: Option<String>,
    #[serde(default)]
    modules: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    events: Vec<EventV1>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventV1 {
    module: Spanned<String>,
    event: Spanned<String>,
    description: String,
    impact: Option<String>,
    recommendation: Option<String>,
    #[serde(default)]
    resolves: Vec<Spanned<String>>,
    resource: Option<Spanned<String>>,
    escalate_after: Option<Spanned<String>>,
    escalate_every: Option<Spanned<String>>,
    hold_down: Option<Spanned<String>>,
    coalesce: Option<Spanned<String>>,
}

impl Catalog {
    /// The catalog compiled into iemd.
    pub fn builtin() -> Catalog {
        let mut catalog = Catalog::default();
        for (name, text) in BUILTIN {
            // The shipped files are checked by the `builtin_catalog_loads` test.
            if let Err(err) = catalog.add_file(Path::new(name), text) {
                tracing::error!(%err, "built-in catalog file rejected");
            }
        }
        catalog
    }

    /// The built-in catalog extended by every `*.toml` file of each directory, in order
    /// (files sorted by name). A directory that does not exist is skipped.
    pub fn load(dirs: &[PathBuf]) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::builtin();
        for dir in dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(CatalogError::Read {
                        path: dir.clone(),
                        source,
                    });
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            files.sort();
            for path in files {
                let text = std::fs::read_to_string(&path).map_err(|source| CatalogError::Read {
                    path: path.clone(),
                    source,
                })?;
                catalog.add_file(&path, &text)?;
            }
        }
        Ok(catalog)
    }

    /// Adds one catalog file: a known component is extended, its name replaced when given.
    pub(crate) fn add_file(&mut self, path: &Path, text: &str) -> Result<(), CatalogError> {
        let invalid = |span: Option<Range<usize>>, reason: String| CatalogError::Invalid {
            path: path.to_path_buf(),
            line: span.map_or(1, |s| line_of(text, s.start)),
            reason,
        };
        let file: FileV1 =
            toml::from_str(text).map_err(|e| invalid(e.span(), e.message().to_string()))?;
        let id = parse_hex(file.id.get_ref(), Field::Component, "component id")
            .map_err(|r| invalid(Some(file.id.span()), r))?;
        let mut modules = BTreeMap::new();
        for (key, name) in &file.modules {
            let m = parse_hex(key, Field::Module, "module id")
                .map_err(|r| invalid(Some(name.span()), r))?;
            modules.insert(m, Arc::<str>::from(name.get_ref().as_str()));
        }
        let mut events = BTreeMap::new();
        for ev in file.events {
            let m = parse_hex(ev.module.get_ref(), Field::Module, "module id")
                .map_err(|r| invalid(Some(ev.module.span()), r))?;
            let e = parse_hex(ev.event.get_ref(), Field::Event, "event id")
                .map_err(|r| invalid(Some(ev.event.span()), r))?;
            if ev.description.trim().is_empty() {
                return Err(invalid(
                    Some(ev.event.span()),
                    "event has an empty description".into(),
                ));
            }
            let rules = rules::RulesV1 {
                resolves: ev.resolves,
                resource: ev.resource,
                escalate_after: ev.escalate_after,
                escalate_every: ev.escalate_every,
                hold_down: ev.hold_down,
                coalesce: ev.coalesce,
            }
            .validate(Family(id, m, e))
            .map_err(|(span, r)| invalid(span.or(Some(ev.event.span())), r))?;
            let event = Event {
                description: ev.description.into(),
                impact: ev.impact.map(Into::into),
                recommendation: ev.recommendation.map(Into::into),
                rules,
            };
            if events.insert((m, e), event).is_some() {
                return Err(invalid(
                    Some(ev.event.span()),
                    format!("event {m:03x}/{e:04x} is listed twice"),
                ));
            }
        }
        if let Some(name) = &file.name
            && name.chars().count() > MAX_COMPONENT_NAME
        {
            return Err(invalid(
                Some(file.id.span()),
                format!(
                    "component name is {} characters long; at most {MAX_COMPONENT_NAME} (it \
                     becomes part of the alerts' AMQP routing key, at most 255 bytes)",
                    name.chars().count()
                ),
            ));
        }
        let component = self.components.entry(id).or_default();
        match file.name {
            Some(name) => component.name = name.into(),
            None if component.name.is_empty() => {
                return Err(invalid(
                    Some(file.id.span()),
                    format!("new component {id:03x} needs a name"),
                ));
            }
            None => {}
        }
        component.modules.extend(modules);
        component.events.extend(events);
        Ok(())
    }

    /// What the catalog knows about a code.
    pub fn lookup(&self, code: &iem_parsers::iem::Code) -> Lookup<'_> {
        let component = self.components.get(&code.component);
        Lookup {
            component: component.map(|c| &c.name),
            module: component.and_then(|c| c.modules.get(&code.module)),
            event: component.and_then(|c| c.events.get(&(code.module, code.event))),
        }
    }

    /// The catalog's entry for a code family (component, module, event), if it has one.
    #[cfg(test)]
    pub(crate) fn event(&self, family: Family) -> Option<&Event> {
        self.components
            .get(&family.0)
            .and_then(|c| c.events.get(&(family.1, family.2)))
    }

    /// Every event, as (component id, module id, event id, component, event).
    pub fn events(&self) -> impl Iterator<Item = (u16, u16, u16, &Component, &Event)> {
        self.components.iter().flat_map(|(&c, comp)| {
            comp.events
                .iter()
                .map(move |(&(m, e), ev)| (c, m, e, comp, ev))
        })
    }
}

/// Parses exactly the field's width of hex digits, in the field's range.
pub(crate) fn parse_hex(text: &str, field: Field, what: &str) -> Result<u16, String> {
    let (width, range) = (field.width(), field.range());
    if text.len() != width || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{what} {text:?} must be {width} hex digits"));
    }
    let value = u16::from_str_radix(text, 16).map_err(|e| format!("{what} {text:?}: {e}"))?;
    if !range.contains(&value) {
        let (min, max) = range.into_inner();
        return Err(format!(
            "{what} {text:?} out of range {min:0width$x}..{max:0width$x}"
        ));
    }
    Ok(value)
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + memchr::memchr_iter(b'\n', &text.as_bytes()[..end]).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn text(name: Option<&Arc<str>>) -> Option<&str> {
        name.map(|n| &**n)
    }
    use iem_parsers::iem::{Code, Severity, Source};

    fn code(component: u16, module: u16, event: u16) -> Code {
        Code {
            severity: Severity::Error,
            source: Source::Software,
            component,
            module,
            event,
        }
    }

    #[test]
    fn builtin_catalog_loads() {
        let mut catalog = Catalog::default();
        for (name, text) in BUILTIN {
            catalog.add_file(Path::new(name), text).unwrap();
        }
        assert_eq!(catalog, Catalog::builtin());
        let names: Vec<&str> = catalog.components.values().map(|c| &*c.name).collect();
        assert_eq!(
            names,
            ["hare", "motr", "s3", "auth", "sspl", "csm", "nfs", "ha"]
        );
    }

    #[test]
    fn every_code_from_the_domain_notes_is_known() {
        let catalog = Catalog::builtin();
        let known = [
            (0x002, 0x001, 0x0001, "Motr test IEM"),
            (0x002, 0x002, 0x0002, "Motr IO error"),
            (0x002, 0x003, 0x0003, "Motr free space warning"),
            (0x003, 0x001, 0x0001, "Auth server connection failed"),
            (0x006, 0x001, 0x0001, "SSL certificate is expiring"),
            (
                0x008,
                0x001,
                0x0002,
                "Server has joined back the cluster. System is restored.",
            ),
        ];
        for (c, m, e, description) in known {
            let found = catalog.lookup(&code(c, m, e));
            assert_eq!(found.event.map(|e| &*e.description), Some(description));
        }
        for (c, m, e) in [
            (2, 2, 4),
            (2, 2, 5),
            (2, 2, 6),
            (3, 6, 5),
            (4, 6, 1),
            (5, 1, 8),
            (5, 2, 2),
            (8, 1, 1),
        ] {
            assert!(
                catalog.lookup(&code(c, m, e)).event.is_some(),
                "{c:03x}{m:03x}{e:04x}"
            );
        }
        let s3 = catalog.lookup(&code(3, 1, 1));
        assert_eq!(
            (text(s3.component), text(s3.module)),
            (Some("s3"), Some("Connection"))
        );
    }

    #[test]
    fn unknown_code_is_a_partial_lookup() {
        let catalog = Catalog::builtin();
        let found = catalog.lookup(&code(0x003, 0x0aa, 0x0001));
        assert_eq!(
            (text(found.component), text(found.module), found.event),
            (Some("s3"), None, None)
        );
        let found = catalog.lookup(&code(0x0fe, 1, 1));
        assert_eq!(
            found,
            Lookup {
                component: None,
                module: None,
                event: None
            }
        );
    }

    /// Regression (issue 21 item 11): component 100 and event 2710 were refused as out of range.
    #[test]
    fn both_range_ends_are_valid_ids() {
        let mut catalog = Catalog::builtin();
        let file = "id = \"100\"\nname = \"edge\"\n[modules]\n\"100\" = \"M\"\n\n[[events]]\nmodule = \"100\"\nevent = \"2710\"\ndescription = \"d\"\n";
        catalog.add_file(Path::new("edge.toml"), file).unwrap();
        let found = catalog.lookup(&code(0x100, 0x100, 0x2710));
        assert_eq!(
            (text(found.component), text(found.module)),
            (Some("edge"), Some("M"))
        );
        assert!(found.event.is_some());
    }

    #[test]
    fn bad_files_name_file_line_and_reason() {
        let mut catalog = Catalog::builtin();
        let text = "id = \"003\"\n[modules]\n\"001\" = \"X\"\n\n[[events]]\nmodule = \"001\"\nevent = \"27100\"\ndescription = \"d\"\n";
        let err = catalog
            .add_file(Path::new("site.toml"), text)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "site.toml:7: event id \"27100\" must be 4 hex digits");

        let text = "id = \"000\"\nname = \"zero\"\n";
        let err = catalog
            .add_file(Path::new("z.toml"), text)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "z.toml:1: component id \"000\" out of range 001..100");

        let text = "id = \"0aa\"\nname = \"x\"\ncolour = 1\n";
        let err = catalog
            .add_file(Path::new("u.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("u.toml:3: unknown field `colour`"), "{err}");

        // Issue 13: a 300-character name panicked in the publisher (routing key too long).
        let text = format!("id = \"0ac\"\nname = \"{}\"\n", "n".repeat(300));
        let err = catalog
            .add_file(Path::new("long.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("long.toml:1: component name is 300 characters long; at most 200"),
            "{err}"
        );

        let text = "id = \"0ab\"\n";
        let err = catalog
            .add_file(Path::new("n.toml"), text)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "n.toml:1: new component 0ab needs a name");
    }

    #[test]
    fn lifecycle_rules_load_and_bad_ones_name_file_and_line() {
        let catalog = Catalog::builtin();
        let back = catalog.event(Family(8, 1, 2)).unwrap();
        assert_eq!(back.rules.resolves, [Family(8, 1, 1)]);
        assert_eq!(back.rules.resource, Some(Resource::Field("host".into())));
        let lost = catalog.event(Family(8, 1, 1)).unwrap();
        assert_eq!(lost.rules.resource, Some(Resource::Field("host".into())));
        assert!(lost.rules.escalate_after.is_some());

        let head = "id = \"0aa\"\nname = \"x\"\n[[events]]\nmodule = \"001\"\nevent = \"0001\"\ndescription = \"d\"\n";
        for (rule, want) in [
            (
                "resolves = [\"0aa0010001\"]",
                "r.toml:7: event 0aa0010001 cannot resolve itself",
            ),
            (
                "resolves = [\"0aa001\"]",
                "r.toml:7: code family \"0aa001\" must be 10 hex digits (component, module, event)",
            ),
            (
                "resource = \"field:\"",
                "r.toml:7: resource \"field:\" must be \"node\", \"device\" or \"field:<key>\" (a key of letters, digits, '_', '-', '.')",
            ),
            (
                "escalate_after = \"10\"",
                "r.toml:7: escalate_after: \"10\" must end in a unit: ms, s, m, h or d",
            ),
            (
                "coalesce = \"0s\"",
                "r.toml:7: coalesce: \"0s\" must be more than zero",
            ),
            (
                "escalate_every = \"1m\"",
                "r.toml:7: escalate_every needs escalate_after",
            ),
        ] {
            let err = Catalog::builtin()
                .add_file(Path::new("r.toml"), &format!("{head}{rule}\n"))
                .unwrap_err()
                .to_string();
            assert_eq!(err, want);
        }
        let mut catalog = Catalog::builtin();
        let rules = "resolves = [\"0080010001\"]\nresource = \"device\"\nescalate_after = \"5m\"\nescalate_every = \"1h\"\nhold_down = \"10s\"\ncoalesce = \"1m\"\n";
        catalog
            .add_file(Path::new("r.toml"), &format!("{head}{rules}"))
            .unwrap();
        let got = &catalog.event(Family(0xaa, 1, 1)).unwrap().rules;
        assert_eq!(
            got,
            &Rules {
                resolves: vec![Family(8, 1, 1)],
                resource: Some(Resource::Device),
                escalate_after: Some(Duration::from_secs(300)),
                escalate_every: Some(Duration::from_secs(3600)),
                hold_down: Some(Duration::from_secs(10)),
                coalesce: Some(Duration::from_secs(60)),
            }
        );
    }

    #[test]
    fn a_directory_extends_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("10-s3.toml"),
            "id = \"003\"\n[modules]\n\"007\" = \"Replication\"\n[[events]]\nmodule = \"001\"\nevent = \"0001\"\ndescription = \"Site text\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("ignored.txt"), "not toml").unwrap();
        let catalog =
            Catalog::load(&[dir.path().to_path_buf(), dir.path().join("missing")]).unwrap();
        let found = catalog.lookup(&code(3, 1, 1));
        assert_eq!(&*found.event.unwrap().description, "Site text");
        assert_eq!(text(found.component), Some("s3"));
        assert_eq!(
            text(catalog.lookup(&code(3, 7, 1)).module),
            Some("Replication")
        );
        assert_eq!(
            text(catalog.lookup(&code(3, 2, 1)).module),
            Some("ChunkParsing")
        );
    }
}
