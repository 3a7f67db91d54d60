//! The deepest inputs the parser accepts (and far deeper ones it rejects) parse, print,
//! re-parse, check and evaluate within a 2 MiB thread stack (the size of Rust's spawned and
//! Tokio's worker threads), even in an unoptimised build.

use meshmeter_attributes::{Bag, Manifest};
use meshmeter_expr::{parse, Expression, MAX_DEPTH};

fn cases() -> Vec<(String, bool)> {
    let d = MAX_DEPTH;
    vec![
        (
            format!("{}true{}", "(".repeat(2 * d), ")".repeat(2 * d)),
            true,
        ),
        (
            format!("{}true{}", "(".repeat(100_000), ")".repeat(100_000)),
            false,
        ),
        (
            format!("{}true{}", "true && (".repeat(d - 1), ")".repeat(d - 1)),
            true,
        ),
        (
            format!("{}true{}", "true && (".repeat(d), ")".repeat(d)),
            false,
        ),
        (vec!["1"; 100_000].join(" + "), false),
        (format!("{}true", "!".repeat(d - 1)), true),
        (format!("{}true", "!".repeat(100_000)), false),
        (
            format!(
                "{}true{}",
                "conditional(true, true, ".repeat(d - 1),
                ")".repeat(d - 1)
            ),
            true,
        ),
        (
            format!(
                "{}\"k\"{}",
                "source.labels[".repeat(d - 1),
                "]".repeat(d - 1)
            ),
            true,
        ),
        (
            format!(
                "{}\"k\"{}",
                "\"x\".startsWith(".repeat(d - 1),
                ")".repeat(d - 1)
            ),
            false,
        ),
        (
            format!("{}\"k\"{}", "toLower(".repeat(d - 1), ")".repeat(d - 1)),
            true,
        ),
    ]
}

#[test]
fn deepest_inputs_fit_in_a_small_stack() {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let m = Manifest::istio();
            let bag = Bag::new(&m);
            for (src, compiles) in cases() {
                let head = &src[..src.len().min(30)];
                if let Ok(tree) = parse(&src) {
                    let printed = tree.to_string();
                    let again = parse(&printed).map(|t| t.to_string());
                    assert_eq!(again.as_deref(), Ok(printed.as_str()), "{head}");
                }
                match Expression::compile(&src, &m) {
                    Ok(e) => {
                        assert!(compiles, "{head} should not compile");
                        let _ = e.eval(&bag);
                    }
                    Err(e) => assert!(!compiles, "{head}: {}", e.message()),
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
