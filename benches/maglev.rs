//! Maglev table build time for M in {65537, 655373} x N in {10, 100, 1000} backends, with
//! equal and mixed (1,2,3,4 cycled) weights, and the cost of a lookup.
//!
//! Run: `cargo bench --bench maglev` (about a minute). docs/maglev.md records the numbers and
//! the comparison with Katran's MaglevHashV2.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fulcrum::maglev::{MaglevBackend, MaglevTable, DEFAULT_TABLE_SIZE};

const MIXED_WEIGHTS: [u32; 4] = [1, 2, 3, 4];

fn backends(count: usize, weights: &[u32]) -> Vec<MaglevBackend> {
    (0..count)
        .map(|i| {
            let n = i + 1;
            let key = format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
            MaglevBackend::new(key, weights[i % weights.len()])
        })
        .collect()
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_build");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for size in [DEFAULT_TABLE_SIZE, 655_373] {
        for count in [10, 100, 1000] {
            for (weighting, weights) in [("equal", &[1u32][..]), ("mixed", &MIXED_WEIGHTS[..])] {
                let set = backends(count, weights);
                group.bench_with_input(
                    BenchmarkId::new(format!("M{size}/{weighting}"), count),
                    &set,
                    |b, set| b.iter(|| MaglevTable::build(black_box(set), size).unwrap()),
                );
            }
        }
    }
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let table = MaglevTable::build(&backends(1000, &[1]), DEFAULT_TABLE_SIZE).unwrap();
    // Flow hashes spread over the whole table, so the loads miss the way real traffic does.
    let hashes: Vec<u64> = (0..4096u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    let mut group = c.benchmark_group("maglev_lookup");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(hashes.len() as u64));
    group.bench_function("M65537/1000", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &hash in &hashes {
                sum += u64::from(table.lookup(black_box(hash)).unwrap_or(0));
            }
            sum
        })
    });
    group.finish();
}

criterion_group!(benches, build, lookup);
criterion_main!(benches);
