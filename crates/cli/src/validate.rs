//! `meshmeter validate`: check telemetry and traffic configuration files without running
//! anything.

use std::path::PathBuf;
use std::process::ExitCode;

use meshmeter_config::{config_files, load_paths, Counts, Diagnostic, Diagnostics, LoadOptions};
use meshmeter_netconfig::NetworkConfig;

/// Check Istio telemetry configuration (files or directories of *.yaml/*.yml) and the traffic
/// objects in the same files (networking.istio.io DestinationRule and VirtualService,
/// authentication.istio.io MeshPolicy and Policy), and report every problem as
/// `file:line:column: error[CODE]: message` with the offending line and a caret.
///
/// The embedded Istio 1.1 default telemetry configuration is loaded first (objects in PATH with
/// the same kind, name and namespace replace it) unless --no-default-config is given.
///
/// Exit codes: 0 valid (prints a one-line summary on stdout), 2 invalid (diagnostics on
/// stderr) or bad usage.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Configuration files and directories (searched recursively for *.yaml and *.yml).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Namespace whose rules apply to every report (Mixer's --configDefaultNamespace).
    #[arg(long, value_name = "NS", default_value = "istio-system")]
    config_default_namespace: String,

    /// Do not load the embedded Istio default configuration first.
    #[arg(long)]
    no_default_config: bool,
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn counts(c: Counts) -> String {
    format!(
        "{}, {}, {}",
        plural(c.instances, "instance"),
        plural(c.handlers, "handler"),
        plural(c.rules, "rule")
    )
}

fn traffic_counts(c: &NetworkConfig) -> Option<String> {
    let (rules, services, policies) = (
        c.destination_rules.len(),
        c.virtual_services.len(),
        c.peer_policies.len(),
    );
    (rules + services + policies > 0).then(|| {
        format!(
            "{}, {}, {}",
            plural(rules, "destination rule"),
            plural(services, "virtual service"),
            plural(policies, "peer authentication policy").replace("policys", "policies")
        )
    })
}

/// Whether `d` is the telemetry loader's note that it skipped a traffic object: here the
/// traffic loader reads that object, and says what is wrong with it.
fn skipped_traffic_object(d: &Diagnostic) -> bool {
    d.code == "I0001"
        && d.message
            .ends_with(": traffic configuration, not telemetry")
}

pub(crate) fn run(args: Args) -> ExitCode {
    let options = LoadOptions {
        default_namespace: args.config_default_namespace,
        include_defaults: !args.no_default_config,
    };
    let telemetry = load_paths(&args.paths, &options);
    let (traffic, traffic_diagnostics) = meshmeter_netconfig::load_paths(&args.paths);
    let telemetry_diagnostics: Vec<Diagnostic> = match &telemetry {
        Ok(snapshot) => snapshot.diagnostics().iter().cloned().collect(),
        Err(diagnostics) => diagnostics.iter().cloned().collect(),
    };
    // Both loaders read every file: a YAML syntax error is reported by each.
    let mut all: Vec<Diagnostic> = Vec::new();
    for d in telemetry_diagnostics.into_iter().chain(traffic_diagnostics) {
        if !skipped_traffic_object(&d) && !all.contains(&d) {
            all.push(d);
        }
    }
    let files: Vec<String> = config_files(&args.paths)
        .unwrap_or_default()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    // Stable: the defaults (not a file) first, as the telemetry loader orders them.
    all.sort_by_key(|d| {
        let file = files
            .iter()
            .position(|f| **f == *d.file)
            .map_or(0, |i| i + 1);
        (file, d.line, d.column)
    });
    let all: Diagnostics = all.into_iter().collect();
    match telemetry {
        Ok(snapshot) if !all.has_errors() => {
            for d in &all {
                eprintln!("{d}");
            }
            let mut line = format!("ok: {}", counts(snapshot.user_counts()));
            if options.include_defaults {
                line.push_str(&format!(
                    " (plus Istio defaults: {})",
                    counts(snapshot.default_counts())
                ));
            }
            if let Some(traffic) = traffic_counts(&traffic) {
                line.push_str(&format!("; traffic: {traffic}"));
            }
            println!("{line}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{all}");
            ExitCode::from(2)
        }
    }
}
