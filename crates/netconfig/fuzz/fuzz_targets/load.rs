//! Any bytes as a traffic configuration file (or a Kubernetes object's text): reading must
//! give objects and diagnostics, never panic, hang or overflow the stack; every diagnostic
//! must render and point into the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshmeter_netconfig::load_str;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (_, diagnostics) = load_str(&[("fuzz.yaml", text)]);
    for d in &diagnostics {
        assert_eq!(&*d.file, "fuzz.yaml");
        let _ = d.to_string();
    }
});
