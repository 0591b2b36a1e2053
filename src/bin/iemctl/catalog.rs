//! `iemctl catalog`: list the catalog in effect or explain one code.

use std::path::PathBuf;
use std::process::ExitCode;

use iem_parsers::iem::Code;
use iemd::catalog::{Catalog, Resource, Rules};

/// List the IEM catalog, or explain one code.
///
/// Examples:
///   iemctl catalog                       # every known event
///   iemctl catalog ES0030010001          # what this code means
///   iemctl catalog --catalog-dir /etc/iemd/catalog.d 0020020006
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// A code: 12 characters (`ES0030010001`), or the 10 hex digits without severity and source.
    code: Option<String>,
    /// Extra catalog directories, read after the built-in catalog (repeatable).
    #[arg(long = "catalog-dir")]
    catalog_dirs: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let catalog = Catalog::load(&args.catalog_dirs)?;
    let Some(code) = args.code else {
        println!(
            "{:<10}  {:<9}  {:<19}  description",
            "code", "component", "module"
        );
        for (c, m, e, component, event) in catalog.events() {
            let module = component.modules.get(&m).map_or("-", |m| &**m);
            println!(
                "{c:03x}{m:03x}{e:04x}  {:<9}  {module:<19}  {}",
                component.name, event.description
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    // A bare 10-digit code is looked up as an error from software, the most common shape.
    let text = if code.len() == 10 {
        format!("ES{code}")
    } else {
        code.clone()
    };
    let parsed = match Code::parse(&text) {
        Ok(parsed) => parsed,
        Err(reason) => {
            eprintln!("iemctl catalog: {code:?} is not a valid IEM code: {reason}");
            return Ok(ExitCode::from(2));
        }
    };
    let found = catalog.lookup(&parsed);
    if code.len() == 12 {
        println!("code:           {parsed}");
        println!(
            "severity:       {} ({})",
            parsed.severity.name(),
            parsed.severity.alert_type()
        );
        println!("source:         {}", parsed.source.name());
    }
    println!(
        "component:      {:03x} {}",
        parsed.component,
        found.component.map_or("(unknown)", |c| &**c)
    );
    println!(
        "module:         {:03x} {}",
        parsed.module,
        found.module.map_or("(unknown)", |m| &**m)
    );
    match found.event {
        Some(event) => {
            println!("event:          {:04x} {}", parsed.event, event.description);
            if let Some(impact) = &event.impact {
                println!("impact:         {impact}");
            }
            if let Some(rec) = &event.recommendation {
                println!("recommendation: {rec}");
            }
            print!("{}", lifecycle(&event.rules));
            Ok(ExitCode::SUCCESS)
        }
        None => {
            println!("event:          {:04x} (not in the catalog)", parsed.event);
            Ok(ExitCode::from(1))
        }
    }
}

/// The event's lifecycle rules, one line each (nothing when it has none).
fn lifecycle(rules: &Rules) -> String {
    let mut out = String::new();
    if !rules.resolves.is_empty() {
        let families: Vec<String> = rules.resolves.iter().map(ToString::to_string).collect();
        out.push_str(&format!("resolves:       {}\n", families.join(", ")));
    }
    if let Some(resource) = &rules.resource {
        let named = match resource {
            Resource::Node => "node".to_string(),
            Resource::Device => "device".to_string(),
            Resource::Field(key) => format!("field:{key}"),
        };
        out.push_str(&format!("resource:       {named}\n"));
    }
    for (key, value) in [
        ("escalate_after", rules.escalate_after),
        ("escalate_every", rules.escalate_every),
        ("hold_down", rules.hold_down),
        ("coalesce", rules.coalesce),
    ] {
        if let Some(d) = value {
            out.push_str(&format!("{:<16}{} s\n", format!("{key}:"), d.as_secs_f64()));
        }
    }
    out
}
