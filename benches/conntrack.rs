//! The per-packet costs of the flow hash and the connection table at the default 1 Mi-flow
//! capacity. The table is far larger than the caches, so lookups pay DRAM latency unless
//! prefetched; `lookup_hit_burst32` shows the pipeline a worker runs over an rx burst.
//!
//! `cargo bench --bench conntrack` (about 30 s).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use fulcrum::conntrack::{ConnTable, FlowValue, DEFAULT_CAPACITY};
use fulcrum::flow::FiveTuple;
use std::time::Duration;

const BURST: usize = 32;

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A random IPv4 TCP flow to one of 16 VIPs on port 443.
    fn flow(&mut self) -> (FiveTuple, u64) {
        let r = self.next();
        let client = std::net::Ipv4Addr::from(r as u32);
        let vip = std::net::Ipv4Addr::new(192, 0, 2, (r >> 32) as u8 & 15);
        let t = FiveTuple::from_v4(client, vip, (r >> 40) as u16, 443, 6);
        (t, t.flow_hash())
    }

    fn flows(&mut self, n: usize) -> Vec<(FiveTuple, u64)> {
        (0..n).map(|_| self.flow()).collect()
    }
}

/// A 1 Mi-flow table filled with 1 Mi random flows (86 % end up resident, the rest were
/// evicted by set overflow), and the resident ones in random order.
fn full_table(rng: &mut SplitMix) -> (ConnTable, Vec<(FiveTuple, u64)>) {
    let mut table = ConnTable::new(DEFAULT_CAPACITY, u64::MAX).expect("table");
    let flows = rng.flows(table.capacity());
    for (i, (key, hash)) in flows.iter().enumerate() {
        let value = FlowValue {
            backend: i as u32,
            flags: 0,
        };
        table.insert(key, *hash, 0, value);
    }
    let resident: Vec<_> = flows
        .into_iter()
        .filter(|(key, hash)| table.peek(key, *hash, 0).is_some())
        .collect();
    (table, resident)
}

fn benches(c: &mut Criterion) {
    let mut rng = SplitMix(42);
    let (mut table, resident) = full_table(&mut rng);
    let strangers = rng.flows(1 << 20);
    let mask = (1 << 20) - 1;

    let mut group = c.benchmark_group("conntrack");
    group.throughput(Throughput::Elements(1));

    group.bench_function("flow_hash", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(strangers[i & mask].0.flow_hash())
        })
    });

    group.bench_function("lookup_hit_1M", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            let (key, hash) = &resident[i % resident.len()];
            black_box(table.lookup(key, *hash, 1))
        })
    });

    group.bench_function("lookup_miss_1M", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            let (key, hash) = &strangers[i & mask];
            black_box(table.lookup(key, *hash, 1))
        })
    });

    group.throughput(Throughput::Elements(BURST as u64));
    group.bench_function("lookup_hit_burst32_prefetched_1M", |b| {
        let mut start = 0;
        b.iter(|| {
            start = (start + BURST) % (resident.len() - BURST);
            let burst = &resident[start..start + BURST];
            for (_, hash) in burst {
                table.prefetch(*hash);
            }
            for (_, hash) in burst {
                table.prefetch_entries(*hash);
            }
            for (key, hash) in burst {
                black_box(table.lookup(key, *hash, 1));
            }
        })
    });
    group.throughput(Throughput::Elements(1));

    // Inserting new flows into the full table: the steady state under churn, where almost
    // every insert evicts or reuses an expired way.
    let fresh = rng.flows(1 << 20);
    group.bench_function("insert_new_into_full_1M", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            let (key, hash) = &fresh[i & mask];
            let value = FlowValue {
                backend: i as u32,
                flags: 0,
            };
            black_box(table.insert(key, *hash, 2, value))
        })
    });
    group.finish();
}

criterion_group! {
    name = conntrack;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(conntrack);
