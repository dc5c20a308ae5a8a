//! Replays every committed fuzz corpus input (`fuzz/corpus/TARGET/`) through the code the
//! cargo-fuzz targets run (`fulcrum::fuzzing`), on stable, as part of the suite: an input
//! that once crashed a target, or that the fuzzer found to reach new code, keeps being
//! checked. Fails, naming the file, if any input panics. `scripts/fuzz.sh` grows the corpus.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no corpus inputs", dir.display());
    files
}

/// Runs `body` over each input of `target`; panics listing every input that panicked.
fn replay(target: &str, body: impl Fn(&[u8])) {
    let mut failed = Vec::new();
    let files = inputs(target);
    for path in &files {
        let data = std::fs::read(path).expect("read corpus input");
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {target} corpus inputs panicked:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn parser_corpus() {
    replay("parser", fulcrum::fuzzing::parser);
}

#[test]
fn pipeline_corpus() {
    let (first, second) = fulcrum::fuzzing::pipeline_snapshots();
    replay("pipeline", |data| {
        fulcrum::fuzzing::pipeline_with(&first, &second, data)
    });
}

#[test]
fn config_corpus() {
    replay("config", fulcrum::fuzzing::config);
}

#[test]
fn api_corpus() {
    replay("api", fulcrum::fuzzing::api);
}
