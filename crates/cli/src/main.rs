//! `meshmeter`: the one binary. It parses flags, installs logging and renders errors; the work
//! is done by the library crates. Each subcommand lives in its own module with an `Args`
//! struct and a `run(Args) -> ExitCode`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ca;
mod capture;
mod control;
mod demo;
mod eval;
mod inject;
mod injector;
mod install;
mod loadgen;
mod mixer;
mod proxy;
mod report;
mod shared;
mod signals;
mod supervise;
mod validate;

/// Service-mesh telemetry for TCP services: a sidecar proxy that measures every byte, and a
/// telemetry server that turns those measurements into Prometheus metrics with Istio's
/// configuration model (instances, handlers, rules, attribute expressions).
///
/// Exit codes: 0 success, 1 runtime failure, 2 bad input or usage.
#[derive(Parser, Debug)]
#[command(name = "meshmeter", version, about, long_about)]
struct Cli {
    /// Log filter, in `RUST_LOG` syntax (e.g. `info`, `meshmeter_proxy=debug`).
    #[arg(long, global = true, env = "MESHMETER_LOG", default_value = "info")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between subcommands' arguments costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the seed's scenario on this machine: telemetry server, MongoDB stand-in behind a
    /// sidecar, ratings client, and the metrics the seed shows (--transparent: pods as network
    /// namespaces, with capture and a transparent sidecar on both sides).
    Demo(demo::Args),
    /// Run the mesh's certificate authority: workload certificates for SPIFFE identities
    /// over a gRPC CSR API.
    Ca(ca::Args),
    /// Install (or --clean) the transparent sidecar's iptables capture in this network
    /// namespace.
    Capture(capture::Args),
    Control(control::Args),
    // One variant per subcommand module, e.g. `Eval(eval::Args)`.
    /// Run the sidecar TCP proxy (`--listen`/`--upstream`, or `--transparent` after capture):
    /// forward bytes exactly and report each connection's TCP attributes to a telemetry server.
    Proxy(proxy::Args),
    /// Add the transparent sidecar and its capture init container to Kubernetes manifests
    /// (as `istioctl kube-inject`).
    Inject(inject::Args),
    /// Run the sidecar-injecting mutating admission webhook (HTTPS, certificates generated and
    /// rotated, CA published into its MutatingWebhookConfiguration).
    Injector(injector::Args),
    /// Print the Kubernetes manifests of meshmeter's control plane for `kubectl apply -f -`.
    Install(install::Args),
    /// Evaluate an attribute expression against a bag (one-off, or JSON Lines with --batch).
    Eval(eval::Args),
    /// Send attribute bags to a telemetry server over the Mixer v1 `Report` protocol.
    Report(report::Args),
    /// Drive a telemetry server with Report requests; measure and verify it.
    Loadgen(loadgen::Args),
    /// Run the telemetry server: Mixer v1 report ingest, Istio configuration, Prometheus
    /// metrics.
    Mixer(mixer::Args),
    /// Check telemetry configuration files and report every problem with its location.
    Validate(validate::Args),
}

/// Installs the tracing subscriber: human-readable lines on stderr.
fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's display is its output: keep routine lifecycle lines out of it unless a
    // filter was asked for.
    let quiet_demo = matches!(cli.command, Command::Demo(_))
        && cli.log == "info"
        && std::env::var_os("MESHMETER_LOG").is_none();
    init_logging(if quiet_demo { "warn" } else { &cli.log });
    match cli.command {
        Command::Ca(args) => ca::run(args),
        Command::Capture(args) => capture::run(args),
        Command::Control(args) => control::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Inject(args) => inject::run(args),
        Command::Injector(args) => injector::run(args),
        Command::Install(args) => install::run(args),
        Command::Loadgen(args) => loadgen::run(args),
        Command::Mixer(args) => mixer::run(args),
        Command::Proxy(args) => proxy::run(args),
        Command::Report(args) => report::run(args),
        Command::Validate(args) => validate::run(args),
    }
}
