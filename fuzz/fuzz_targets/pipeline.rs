//! See `fulcrum::fuzzing::pipeline`; the two snapshots are built once.
#![no_main]

use std::sync::OnceLock;

use fulcrum::snapshot::Snapshot;

static SNAPSHOTS: OnceLock<(Snapshot, Snapshot)> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (first, second) = SNAPSHOTS.get_or_init(fulcrum::fuzzing::pipeline_snapshots);
    fulcrum::fuzzing::pipeline_with(first, second, data);
});
