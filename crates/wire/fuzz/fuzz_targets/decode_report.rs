//! Any bytes as a `ReportRequest`: the decoder must return (Ok or an error), never panic,
//! hang or allocate without bound. Every visited bag is walked so that lazily wrong values
//! would show.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshmeter_attributes::Manifest;
use meshmeter_wire::BagDecoder;

fn decoder() -> &'static BagDecoder {
    static D: OnceLock<BagDecoder> = OnceLock::new();
    D.get_or_init(|| BagDecoder::new(&Manifest::istio()))
}

fuzz_target!(|data: &[u8]| {
    let _ = decoder().decode_report(data, |_, bag| {
        for (_, v) in bag.iter() {
            let _ = v.to_string();
        }
    });
});
