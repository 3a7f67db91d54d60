//! Any bytes as a configuration file: loading must return a snapshot or diagnostics, never
//! panic, hang or overflow the stack; every diagnostic must render.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshmeter_config::{load_str, LoadOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let options = LoadOptions {
        include_defaults: false,
        ..LoadOptions::default()
    };
    match load_str(&[("fuzz.yaml", text)], &options) {
        Ok(snapshot) => {
            for d in snapshot.diagnostics() {
                let _ = d.to_string();
            }
        }
        Err(diagnostics) => {
            assert!(diagnostics.has_errors());
            let _ = diagnostics.to_string();
        }
    }
});
