//! `iemctl parse` (not yet built).

use std::process::ExitCode;

/// Not yet built.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("iemctl parse is not built yet")
}
