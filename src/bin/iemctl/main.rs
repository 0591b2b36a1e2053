//! iemctl: the operator and developer CLI. Each subcommand lives in its own file and calls
//! library code.

mod catalog;
mod check_config;
mod completions;
mod emit;
mod faults;
mod parse;
mod replay;
mod stats;
mod tail;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "iemctl",
    version,
    about = "Inspect, produce and replay Interesting Event Messages (IEMs)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Parse(parse::Args),
    Catalog(catalog::Args),
    Replay(replay::Args),
    Emit(emit::Args),
    Tail(tail::Args),
    Stats(stats::Args),
    Faults(faults::Args),
    CheckConfig(check_config::Args),
    Completions(completions::CompletionsArgs),
    Man(completions::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Parse(args) => parse::run(args),
        Command::Catalog(args) => catalog::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Emit(args) => emit::run(args),
        Command::Tail(args) => tail::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Faults(args) => faults::run(args),
        Command::CheckConfig(args) => check_config::run(args),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("iemctl: {err:#}");
            ExitCode::from(1)
        }
    }
}
