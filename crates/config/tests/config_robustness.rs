//! No input makes loading panic, and every diagnostic points at a real line of its file.

use meshmeter_config::{load_str, LoadOptions};
use proptest::prelude::*;

const SEED: &str = include_str!("data/tcp-metrics.yaml");

fn check(text: &str) {
    let options = LoadOptions {
        include_defaults: false,
        ..LoadOptions::default()
    };
    let lines: Vec<&str> = text.lines().collect();
    let diagnostics = match load_str(&[("f.yaml", text)], &options) {
        Ok(s) => s.diagnostics().clone(),
        Err(d) => {
            assert!(d.has_errors());
            d
        }
    };
    for d in &diagnostics {
        assert!(d.line >= 1, "{d}");
        let line = lines.get(d.line as usize - 1).copied().unwrap_or("");
        assert_eq!(d.source_line, line.trim_end_matches('\r'), "{d}");
        // Rendering must not panic either.
        let _ = d.to_string();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_seed(pos in 0usize..SEED.len(), cut in 0usize..40, insert in "[ :\\-\\[\\]{}|>\"'#&*!%@`\n\ta-z0-9.]{0,12}") {
        let start = (0..=pos).rev().find(|&i| SEED.is_char_boundary(i)).unwrap_or(0);
        let end = (start + cut).min(SEED.len());
        let end = (end..=SEED.len()).find(|&i| SEED.is_char_boundary(i)).unwrap_or(SEED.len());
        let text = format!("{}{}{}", &SEED[..start], insert, &SEED[end..]);
        check(&text);
    }

    #[test]
    fn arbitrary_text(text in "\\PC{0,200}") {
        check(&text);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    check(&text);
    let text = format!("kind: rule\nspec: {}", "- ".repeat(5_000));
    check(&text);
}

#[test]
fn aliases_are_refused() {
    let text = "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata:\n  name: &n r\n  namespace: *n\n";
    let options = LoadOptions {
        include_defaults: false,
        ..LoadOptions::default()
    };
    let err = load_str(&[("a.yaml", text)], &options).unwrap_err();
    let codes: Vec<_> = err.iter().map(|d| (d.code, d.line, d.column)).collect();
    assert_eq!(codes, [("C0003", 5, 14)]);
}
