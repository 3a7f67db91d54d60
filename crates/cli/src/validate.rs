//! `meshmeter validate`: check telemetry configuration files without running anything.

use std::path::PathBuf;
use std::process::ExitCode;

use meshmeter_config::{load_paths, Counts, LoadOptions};

/// Check Istio telemetry configuration (files or directories of *.yaml/*.yml) and report every
/// problem as `file:line:column: error[CODE]: message` with the offending line and a caret.
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

pub(crate) fn run(args: Args) -> ExitCode {
    let options = LoadOptions {
        default_namespace: args.config_default_namespace,
        include_defaults: !args.no_default_config,
    };
    match load_paths(&args.paths, &options) {
        Ok(snapshot) => {
            for d in snapshot.diagnostics() {
                eprintln!("{d}");
            }
            let mut line = format!("ok: {}", counts(snapshot.user_counts()));
            if options.include_defaults {
                line.push_str(&format!(
                    " (plus Istio defaults: {})",
                    counts(snapshot.default_counts())
                ));
            }
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            ExitCode::from(2)
        }
    }
}
