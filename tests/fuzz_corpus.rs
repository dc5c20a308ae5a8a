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
    use fulcrum::fuzzing::PIPELINE_VIPS;
    use std::sync::atomic::{AtomicU64, Ordering};
    let (first, second) = fulcrum::fuzzing::pipeline_snapshots();
    // What the corpus reached, summed over its inputs: a corpus (or a harness) that no
    // longer gets packets to every VIP, through fragments and to ICMP errors would replay
    // "fine" while testing little.
    let vips: [AtomicU64; PIPELINE_VIPS] = Default::default();
    let (fragments, icmp) = (AtomicU64::new(0), AtomicU64::new(0));
    replay("pipeline", |data| {
        let stats = fulcrum::fuzzing::pipeline_with(&first, &second, data);
        for (sum, vip) in vips.iter().zip(stats.vip.iter()) {
            sum.fetch_add(vip.packets.get(), Ordering::Relaxed);
        }
        fragments.fetch_add(stats.fragments.get(), Ordering::Relaxed);
        icmp.fetch_add(stats.icmp_errors_forwarded.get(), Ordering::Relaxed);
    });
    let vips: Vec<u64> = vips.iter().map(|v| v.load(Ordering::Relaxed)).collect();
    assert!(
        vips.iter().all(|&n| n > 0),
        "packets per VIP over the corpus: {vips:?}"
    );
    assert!(
        fragments.load(Ordering::Relaxed) > 0,
        "no fragment balanced"
    );
    assert!(icmp.load(Ordering::Relaxed) > 0, "no ICMP error forwarded");
}

#[test]
fn config_corpus() {
    replay("config", fulcrum::fuzzing::config);
}

#[test]
fn api_corpus() {
    replay("api", fulcrum::fuzzing::api);
}
