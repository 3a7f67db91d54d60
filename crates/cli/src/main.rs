//! `meshmeter`: the one binary. Parses flags, installs logging and renders errors; the work is
//! done by the library crates.

use clap::{Parser, Subcommand};

/// Service-mesh telemetry for TCP services: a sidecar proxy that measures every byte, and a
/// telemetry server that turns those measurements into Prometheus metrics with Istio's
/// configuration model.
///
/// Exit codes: 0 success, 1 runtime failure, 2 bad input or usage.
#[derive(Parser, Debug)]
#[command(name = "meshmeter", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {}

fn main() {
    let cli = Cli::parse();
    match cli.command {}
}
