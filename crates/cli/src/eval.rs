//! `meshmeter eval`: evaluate an attribute expression against a bag, once or as JSON Lines.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use meshmeter_attributes::json::{bag_from_json, value_from_json, value_to_json};
use meshmeter_attributes::{Bag, Manifest, ValueType};
use meshmeter_expr::{CompileError, Expression};
use serde_json::{json, Value as Json};

/// Evaluate an attribute expression against a bag of attributes.
///
/// One-off: prints `{"type":"STRING","value":"v1"}`. Batch (`--batch`): reads JSON Lines
/// `{"expr": "...", "bag": {...}, "manifest": {"name": "TYPE", ...}}` on stdin (`bag` and
/// `manifest` optional; `manifest` replaces the manifest for that line; bag attributes it does
/// not declare are ignored) and writes one line per
/// input, in order: `{"type": T, "value": v}` or `{"error": "...", "stage": S}` with S one of
/// `compile`, `eval` or `input` (a line that is not valid JSON or whose bag does not fit the
/// manifest).
///
/// Exit codes (one-off): 0 success, 1 evaluation error, 2 compile error or bad input.
/// Batch mode exits 0 unless stdin or stdout fails.
#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct Args {
    /// An attribute manifest YAML file (documents of `kind: attributemanifest`); repeatable.
    /// When given, these manifests replace the default Istio 1.1 vocabulary.
    #[arg(long = "manifest", value_name = "FILE")]
    manifests: Vec<PathBuf>,

    /// The bag: a JSON object of attribute names to values (default: empty).
    #[arg(long, value_name = "JSON", conflicts_with = "batch")]
    bag: Option<String>,

    /// Read JSON Lines cases from stdin and write one JSON result line per case.
    #[arg(long)]
    batch: bool,

    /// The expression, e.g. `source.labels["version"] | "unknown"`.
    #[arg(
        value_name = "EXPR",
        required_unless_present = "batch",
        conflicts_with = "batch"
    )]
    expr: Option<String>,
}

const AFTER_HELP: &str = "\
Output: one JSON object, {\"type\":\"STRING\",\"value\":\"v1\"}; values are encoded as in the
conformance data (TIMESTAMP as RFC 3339, DURATION as Go's text, BYTES as an array of 0-255,
STRING_MAP as an object).

Without --manifest the attributes are Istio 1.1's vocabulary; with it, only the given manifests'.

--batch reads JSON Lines on stdin, {\"expr\": \"...\", \"bag\": {...}, \"manifest\": {\"name\": \"TYPE\"}}
(bag and manifest optional; manifest replaces the manifest for that line) and writes one line
per input, in order: {\"type\": T, \"value\": v} or {\"error\": \"...\", \"stage\": S} with S one of
compile, eval, input.

Exit codes: 0 success, 1 evaluation error, 2 compile error or bad input (message on stderr).
--batch exits 0 unless reading stdin or writing stdout fails.";

pub(crate) fn run(args: Args) -> ExitCode {
    let manifest = match load_manifests(&args.manifests) {
        Ok(m) => m,
        Err(e) => {
            // Rendered diagnostics, each already saying `error[CODE]`.
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.batch {
        return match batch(&manifest) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        };
    }
    let src = args.expr.unwrap_or_default();
    let bag_json: Json = match serde_json::from_str(args.bag.as_deref().unwrap_or("{}")) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: --bag is not valid JSON: {e}");
            return ExitCode::from(2);
        }
    };
    let bag = match bag_from_json(&manifest, &bag_json) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: --bag: {e}");
            return ExitCode::from(2);
        }
    };
    let expr = match Expression::compile(&src, &manifest) {
        Ok(e) => e,
        Err(e) => {
            eprint!("{}", e.render(&src));
            return ExitCode::from(2);
        }
    };
    match expr.eval(&bag) {
        Ok(v) => {
            println!(
                "{}",
                json!({"type": expr.result_type().name(), "value": value_to_json(&v)})
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// The one-line form of a compile error used in batch output.
fn one_line(e: &CompileError) -> String {
    let span = e.span();
    let mut text = format!(
        "{}: {} (bytes {}..{})",
        e.code(),
        e.message(),
        span.start,
        span.end
    );
    if let Some(hint) = e.hint() {
        text.push_str("; ");
        text.push_str(&hint);
    }
    text
}

fn error_line(message: String, stage: &str) -> Json {
    json!({"error": message, "stage": stage})
}

/// Evaluates one batch line.
fn batch_line(default: &Manifest, line: &str) -> Json {
    let input: Json = match serde_json::from_str(line) {
        Ok(j) => j,
        Err(e) => return error_line(format!("not a JSON object: {e}"), "input"),
    };
    let Some(src) = input.get("expr").and_then(Json::as_str) else {
        return error_line("the line has no \"expr\" string".into(), "input");
    };
    let manifest = match input.get("manifest") {
        None | Some(Json::Null) => default.clone(),
        Some(m) => match manifest_from_json(m) {
            Ok(m) => m,
            Err(e) => return error_line(e, "input"),
        },
    };
    let bag = match batch_bag(&manifest, input.get("bag")) {
        Ok(b) => b,
        Err(e) => return error_line(e, "input"),
    };
    let expr = match Expression::compile(src, &manifest) {
        Ok(e) => e,
        Err(e) => return error_line(one_line(&e), "compile"),
    };
    match expr.eval(&bag) {
        Ok(v) => json!({"type": expr.result_type().name(), "value": value_to_json(&v)}),
        Err(e) => error_line(e.to_string(), "eval"),
    }
}

/// A batch line's bag. Attributes the manifest does not declare are skipped: no expression
/// that compiles can read them (Mixer ignored them too).
fn batch_bag(manifest: &Manifest, bag: Option<&Json>) -> Result<Bag<'static>, String> {
    let mut out = Bag::new(manifest);
    let obj = match bag {
        None | Some(Json::Null) => return Ok(out),
        Some(Json::Object(obj)) => obj,
        Some(_) => return Err("\"bag\" must be an object of attribute names to values".into()),
    };
    for (name, v) in obj {
        if let Some((id, t)) = manifest.lookup(name) {
            out.set(id, value_from_json(name, t, v).map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}

fn batch(manifest: &Manifest) -> std::io::Result<()> {
    let stdin = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    for line in stdin.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let result = batch_line(manifest, &line);
        writeln!(out, "{result}")?;
        // A caller may write a line and wait for its answer.
        out.flush()?;
    }
    Ok(())
}

/// A manifest from a batch line's `{"name": "TYPE"}` object.
fn manifest_from_json(j: &Json) -> Result<Manifest, String> {
    let obj = j
        .as_object()
        .ok_or("\"manifest\" must be an object of attribute names to type names")?;
    let mut m = Manifest::new();
    for (name, t) in obj {
        let t = t
            .as_str()
            .ok_or_else(|| format!("the type of '{name}' must be a string"))?;
        let t: ValueType = t.parse().map_err(|e| format!("attribute '{name}': {e}"))?;
        m.declare(name, t).map_err(|e| e.to_string())?;
    }
    Ok(m)
}

/// The given manifest files merged, or Istio's vocabulary when none is given.
fn load_manifests(paths: &[PathBuf]) -> Result<Manifest, String> {
    if paths.is_empty() {
        return Ok(Manifest::istio());
    }
    crate::shared::load_manifests(paths, Manifest::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_lines() {
        let m = Manifest::istio();
        let cases = [
            (
                r#"{"expr": "source.labels[\"version\"] | \"unknown\"", "bag": {"source.labels": {"version": "v1"}}}"#,
                r#"{"type":"STRING","value":"v1"}"#,
            ),
            (
                r#"{"expr": "a | 0", "manifest": {"a": "INT64"}}"#,
                r#"{"type":"INT64","value":0}"#,
            ),
            (
                r#"{"expr": "a", "manifest": {"a": "INT64"}}"#,
                r#"{"error":"attribute 'a' is absent","stage":"eval"}"#,
            ),
            (
                r#"{"expr": "conection.sent.bytes | 0"}"#,
                r#"{"error":"E101: unknown attribute 'conection.sent.bytes' (bytes 0..20); did you mean 'connection.sent.bytes'?","stage":"compile"}"#,
            ),
            (
                r#"{"expr": "a | 1", "manifest": {"a": "INT64"}, "bag": {"zz": "ignored"}}"#,
                r#"{"type":"INT64","value":1}"#,
            ),
            (
                r#"{"expr": "a", "manifest": {"a": "INT64"}, "bag": {"a": "x"}}"#,
                r#"{"error":"attribute 'a' is INT64, but \"x\" is not a INT64 value","stage":"input"}"#,
            ),
            (
                "nope",
                r#"{"error":"not a JSON object: expected ident at line 1 column 2","stage":"input"}"#,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(batch_line(&m, input).to_string(), want, "{input}");
        }
    }
}
