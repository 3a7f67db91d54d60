//! Shared by the integration tests: the recordings and a renderer of bags in the format of
//! the recordings' `decoded.txt` (how Istio's Mixer printed the bags it reconstructed).

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

use meshmeter_attributes::{Bag, Manifest, Value};
use meshmeter_wire::proto::ReportRequest;
use prost::Message;

/// One recorded scenario: its requests (file name and bytes) and `decoded.txt`.
pub struct Recording {
    pub name: &'static str,
    pub requests: Vec<(String, Vec<u8>)>,
    pub decoded: String,
}

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

pub fn recordings() -> Vec<Recording> {
    ["seed-single", "seed-batch-nodict"]
        .into_iter()
        .map(|name| {
            let dir = data_dir().join(name);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|f| f.ends_with(".pb"))
                .collect();
            files.sort();
            let requests = files
                .into_iter()
                .map(|f| {
                    let bytes = std::fs::read(dir.join(&f)).unwrap();
                    (f, bytes)
                })
                .collect();
            let decoded = std::fs::read_to_string(dir.join("decoded.txt")).unwrap();
            Recording {
                name,
                requests,
                decoded,
            }
        })
        .collect()
}

/// Go's `%q` for the plain text the recordings hold.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One value as `decoded.txt` prints it.
pub fn render_value(v: &Value<'_>) -> String {
    match v {
        Value::String(s) | Value::EmailAddress(s) | Value::DnsName(s) | Value::Uri(s) => quote(s),
        Value::Int64(i) => format!("{i} (int64)"),
        Value::Double(d) => format!("{d} (float64)"),
        Value::Bool(b) => format!("{b} (bool)"),
        Value::StringMap(m) => {
            let entries: Vec<String> = m
                .sorted()
                .into_iter()
                .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
        other => other.to_string(),
    }
}

/// A bag's lines: `  name: value`, sorted by name.
pub fn render_bag(manifest: &Manifest, index: usize, bag: &Bag<'_>) -> String {
    let mut lines: Vec<String> = bag
        .iter()
        .map(|(id, v)| format!("  {}: {}", manifest.name(id), render_value(v)))
        .collect();
    lines.sort();
    let mut out = format!("--- bag {index}\n");
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// The `===` header line of a request, from its prost decoding.
pub fn render_header(file: &str, bytes: &[u8]) -> String {
    let req = ReportRequest::decode(bytes).unwrap();
    let semantics = if req.repeated_attributes_semantics == 1 {
        "INDEPENDENT_ENCODING"
    } else {
        "DELTA_ENCODING"
    };
    format!(
        "=== {file} bytes={} bags={} semantics={semantics} global_word_count={} default_words={}\n",
        bytes.len(),
        req.attributes.len(),
        req.global_word_count,
        req.default_words.len()
    )
}
