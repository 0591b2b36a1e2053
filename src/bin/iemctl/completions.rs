//! `iemctl completions` and `iemctl man`: shell completions and man pages from the clap definition.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;

/// Print the completion script for SHELL (e.g. `iemctl completions bash > /etc/bash_completion.d/iemctl`).
#[derive(clap::Args)]
pub struct CompletionsArgs {
    shell: clap_complete::Shell,
}

/// Write man pages (iemctl.1 and iemctl-SUBCOMMAND.1) into DIR.
#[derive(clap::Args)]
pub struct ManArgs {
    dir: PathBuf,
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    iemd::manpages::write_completions(
        &mut crate::Cli::command(),
        args.shell,
        &mut std::io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    let files = iemd::manpages::write_man_pages(crate::Cli::command(), &args.dir)?;
    for f in files {
        println!("{}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}
