//! Every request recorded from Istio's own clients decodes to exactly the bags Istio's Mixer
//! reconstructed (`decoded.txt`), and re-encoding those bags decodes to the same bags.

mod common;

use meshmeter_attributes::{Bag, Manifest};
use meshmeter_wire::{BagDecoder, Encoding, ReportEncoder};

#[test]
fn recordings_decode_as_mixer_decoded_them() {
    let manifest = Manifest::istio();
    let decoder = BagDecoder::new(&manifest);
    for rec in common::recordings() {
        let mut text = String::new();
        for (file, bytes) in &rec.requests {
            text.push_str(&common::render_header(file, bytes));
            let summary = decoder
                .decode_report(bytes, |i, bag| {
                    text.push_str(&common::render_bag(&manifest, i, bag));
                })
                .unwrap();
            assert_eq!(summary.skipped, 0, "{}/{file}", rec.name);
            assert!(summary.delta);
        }
        assert_eq!(text, rec.decoded, "{}", rec.name);
    }
}

#[test]
fn recorded_bags_survive_our_encoder() {
    let manifest = Manifest::istio();
    let decoder = BagDecoder::new(&manifest);
    for rec in common::recordings() {
        for (file, bytes) in &rec.requests {
            let mut bags: Vec<Bag<'static>> = Vec::new();
            decoder
                .decode_report(bytes, |_, bag| bags.push(bag.clone().into_owned()))
                .unwrap();
            for encoding in [Encoding::Delta, Encoding::Independent] {
                for (globals, defaults) in [(true, false), (false, true), (true, true)] {
                    let ours = ReportEncoder::new(&manifest, encoding)
                        .with_global_dictionary(globals)
                        .with_default_words(defaults)
                        .encode_to_vec(&bags);
                    let mut again = Vec::new();
                    decoder
                        .decode_report(&ours, |i, bag| {
                            again.push(common::render_bag(&manifest, i, bag))
                        })
                        .unwrap();
                    let want: Vec<String> = bags
                        .iter()
                        .enumerate()
                        .map(|(i, b)| common::render_bag(&manifest, i, b))
                        .collect();
                    assert_eq!(
                        again, want,
                        "{}/{file} {encoding:?} {globals} {defaults}",
                        rec.name
                    );
                    if globals && encoding == Encoding::Delta && !defaults && bags.len() > 1 {
                        // Global words and deltas make the request much smaller.
                        assert!(
                            ours.len() * 3 < bytes.len(),
                            "{} vs {}",
                            ours.len(),
                            bytes.len()
                        );
                    }
                }
            }
        }
    }
}
