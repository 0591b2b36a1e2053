//! `iemctl check-config`: the same check as `iemd --check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use iemd::catalog::Catalog;
use iemd::config::Config;

/// Validate an iemd configuration file and print the effective configuration (secrets redacted).
///
/// The catalog files it points at (catalog_dirs) are checked too.
///
/// Exit status: 0 valid, 2 invalid (each problem names the file, the key or line, and why).
///
/// Example:
///   iemctl check-config /etc/iemd/iemd.toml
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The configuration file.
    file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.file) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("iemctl check-config: invalid configuration: {err}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Err(err) = Catalog::load(&config.catalog_dirs) {
        eprintln!("iemctl check-config: invalid catalog (catalog_dirs): {err}");
        return Ok(ExitCode::from(2));
    }
    print!("{}", config.redacted_toml());
    Ok(ExitCode::SUCCESS)
}
