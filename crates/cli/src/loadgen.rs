//! `meshmeter loadgen`: drive a Mixer v1 telemetry server and verify what it counted.

use std::process::ExitCode;
use std::time::Duration;

use meshmeter_loadgen::{BagShape, LoadOptions};

/// Drive a telemetry server (meshmeter's or Istio's Mixer) with Report requests of realistic
/// TCP bags, and measure it.
///
/// Bags carry 8 attributes (what `mixc report` sends for the seed) or 28 (a sidecar's
/// connection report with identity), in 4 label combinations, encoded as Istio's proxies do
/// (global dictionary, delta encoding). The --concurrency senders each have a connection of their
/// own, unless --connections makes them share fewer, as streams of HTTP/2 connections (which is
/// how Istio's proxies send reports).
/// Prints bags/s, requests/s, Report latency p50/p99/max and errors; with --metrics it then
/// scrapes the server and checks that --verify-metric (the seed's istio_mongo_received_bytes
/// by default, so configure the server with examples/tcp-metrics.yaml) grew by exactly the
/// connection.received.bytes that were accepted.
///
/// Exit codes: 0 no errors (and verified, with --metrics), 1 errors or a verification
/// mismatch, 2 bad arguments or an unreachable target.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The server's gRPC address.
    #[arg(long, default_value = "127.0.0.1:9091", value_name = "ADDR")]
    target: String,

    /// The server's metrics endpoint (`host:port` or `http://host:port/metrics`); enables the
    /// verification.
    #[arg(long, value_name = "URL")]
    metrics: Option<String>,

    /// The counter the verification reads.
    #[arg(
        long,
        default_value = "istio_mongo_received_bytes",
        value_name = "NAME"
    )]
    verify_metric: String,

    /// Bags per Report request.
    #[arg(long, default_value_t = 100, value_name = "N")]
    batch: usize,

    /// Concurrent senders: requests in flight at any time.
    #[arg(long, default_value_t = 4, value_name = "C")]
    concurrency: usize,

    /// HTTP/2 connections the senders share (default: one per sender). With fewer
    /// connections than senders, requests are multiplexed as concurrent streams.
    #[arg(long, value_name = "N")]
    connections: Option<usize>,

    /// How long to send (Go duration). Default 10s unless --requests is given.
    #[arg(long, value_name = "DURATION", value_parser = crate::shared::parse_positive_duration)]
    duration: Option<Duration>,

    /// Stop after this many requests.
    #[arg(long, value_name = "N")]
    requests: Option<u64>,

    /// Attributes per bag: 8 or 28.
    #[arg(long, default_value = "8", value_name = "N")]
    attributes: BagShape,

    /// Send a fresh x-meshmeter-report-id (retry deduplication key) with every request, as
    /// meshmeter's proxy does.
    #[arg(long)]
    report_id: bool,

    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> ExitCode {
    let duration = match (args.duration, args.requests) {
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d,
    };
    let options = LoadOptions {
        target: args.target,
        metrics: args.metrics,
        verify_metric: args.verify_metric,
        batch: args.batch,
        concurrency: args.concurrency,
        connections: args.connections,
        duration,
        requests: args.requests,
        shape: args.attributes,
        report_id: args.report_id,
        ..LoadOptions::default()
    };
    let verify = options.metrics.is_some();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let summary = match runtime.block_on(meshmeter_loadgen::run(options)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!("{}", summary.to_json());
    } else {
        println!(
            "{} requests, {} bags in {:.2}s: {:.0} bags/s, {:.0} requests/s\n\
             latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; errors {}{}",
            summary.requests,
            summary.bags,
            summary.elapsed.as_secs_f64(),
            summary.bags_per_sec,
            summary.reports_per_sec,
            summary.p50_ms,
            summary.p99_ms,
            summary.max_ms,
            summary.errors,
            summary
                .first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
        );
        if verify {
            println!(
                "verification: expected +{} received bytes, observed {}: {}",
                summary.expected,
                summary.observed.map_or("-".into(), |o| format!("+{o}")),
                if summary.verified { "ok" } else { "MISMATCH" }
            );
        }
    }
    if summary.errors > 0 || (verify && !summary.verified) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
