//! Any bytes: the parser, the checker and evaluation against an empty bag must return, never
//! panic or overflow the stack.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshmeter_attributes::{Bag, Manifest};
use meshmeter_expr::{parse, Expression};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ast) = parse(src) {
        // Printing must give text that parses back to the same tree.
        let printed = ast.to_string();
        let again = parse(&printed).expect("printed expressions parse");
        assert_eq!(again.to_string(), printed);
    }
    let manifest = Manifest::istio();
    if let Ok(expr) = Expression::compile(src, &manifest) {
        let _ = expr.eval(&Bag::new(&manifest));
    }
});
