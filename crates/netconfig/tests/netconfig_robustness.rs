//! Kubernetes objects and files are untrusted input: whatever the bytes, reading them never
//! panics, and every error is located in the input it came from.

use meshmeter_config::Input;
use meshmeter_netconfig::Loader;
use proptest::prelude::*;

const SEEDS: [&str; 3] = [
    include_str!("data/broken.yaml"),
    include_str!("data/destination-rule-all-mtls.yaml"),
    include_str!("data/virtual-service-ratings-db.yaml"),
];

fn check(text: String) {
    let loaded = Loader::new().load(vec![Input::File {
        path: "in.yaml".into(),
        text,
    }]);
    for d in loaded.diagnostics.iter() {
        assert_eq!(&*d.file, "in.yaml");
        let _ = d.to_string();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A seed file with one span of bytes replaced by printable junk.
    #[test]
    fn mangled_seed_files_never_panic(
        seed in 0..SEEDS.len(),
        at in any::<prop::sample::Index>(),
        len in 0usize..40,
        junk in "[ -~\n\t]{0,40}",
    ) {
        let text = SEEDS[seed];
        let mut start = at.index(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + len).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        check(format!("{}{junk}{}", &text[..start], &text[end..]));
    }

    /// Arbitrary values in every field of a rule.
    #[test]
    fn any_field_values_never_panic(values in prop::collection::vec("[ -~]{0,24}", 8)) {
        let v = |i: usize| format!("{:?}", values[i]);
        check(format!(
            "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: {}}}\nspec:\n  hosts: [{}]\n  tcp:\n  - match:\n    - port: {}\n      destinationSubnets: [{}]\n      sourceLabels: {{app: {}}}\n    route:\n    - destination: {{host: {}, subset: {}}}\n      weight: {}\n",
            v(0), v(1), v(2), v(3), v(4), v(5), v(6), v(7)
        ));
    }
}
