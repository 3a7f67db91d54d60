//! The whole output of `meshmeter install` with pinned options, as a golden file
//! (`UPDATE_GOLDEN=1` rewrites it); reviewers read the diff of this file.

use std::path::PathBuf;

use meshmeter_install::{render, InstallOptions};

#[test]
fn install_output_matches_the_golden_file() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/install.yaml");
    let got = render(&InstallOptions {
        image: "meshmeter/meshmeter:test".to_string(),
        ..InstallOptions::default()
    })
    .unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        got, want,
        "differs from {path:?} (UPDATE_GOLDEN=1 to accept)"
    );
}
