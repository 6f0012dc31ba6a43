//! Inputs that once broke a fuzz target, replayed through the same checks
//! (`fuzz/src/checks/`), so `cargo test` guards them without cargo-fuzz.
//! Each file in `tests/fuzz-regressions/<target>/` is an input for that
//! target, kept as it was found; `fuzz/README.md` says how to add one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[path = "../fuzz/src/checks/mod.rs"]
mod checks;

use std::path::Path;

/// Each fuzz target's check, by the target's name.
const TARGETS: &[(&str, checks::Check)] = &[
    ("request_parser", checks::request_parser::check),
    ("reply_scanner", checks::reply_scanner::check),
    ("resp3", checks::resp3::check),
    ("differential", checks::differential::check),
];

#[test]
fn every_kept_input_passes_its_check_again() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut replayed = 0;
    let mut failed = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        let Some(&(_, check)) = TARGETS.iter().find(|(name, _)| *name == target) else {
            panic!("{}: no fuzz target of that name", dir.display());
        };
        for input in std::fs::read_dir(&dir).unwrap() {
            let input = input.unwrap().path();
            let data = std::fs::read(&input).unwrap();
            replayed += 1;
            // The check's own panic message says what failed.
            if std::panic::catch_unwind(|| check(&data, checks::unmetered)).is_err() {
                failed.push(input.display().to_string());
            }
        }
    }
    assert!(replayed > 0, "no inputs under {}", root.display());
    assert!(failed.is_empty(), "these inputs fail their checks again: {failed:#?}");
}
