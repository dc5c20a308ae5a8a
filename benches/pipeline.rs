//! The whole per-packet path without DPDK: `Pipeline::process_burst` over bursts of 32
//! `VecPacket`s, the same traffic `scripts/gen-traffic` writes (64-byte IPv4/TCP frames to
//! one VIP with three backends), per encapsulation mode: 4096 flows in the default 1 Mi-flow
//! conntrack table and in an 8 Ki-flow one (the difference is what a large table costs in
//! TLB and cache misses), and 1 Mi flows in a 2 Mi-flow table. And the snapshot hand-over:
//! how long from `Publisher::publish` until a reader spinning on another thread has adopted
//! the snapshot.
//!
//! `cargo bench --bench pipeline` (about 40 s). Every burst first reloads its 32 frames
//! (a 64-byte copy each, what a NIC or net_pcap does too); `reload_only` measures that
//! alone so it can be subtracted.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fulcrum::datapath::pipeline::{Pipeline, Verdict};
use fulcrum::datapath::stats::DropReason;
use fulcrum::packet::VecPacket;
use fulcrum::snapshot::{self, Publisher, Snapshot};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{frame, pipeline, port, reload, snapshot, vip, BURST, FRAME};

/// Runs `bursts` of the flow sequence through the pipeline, as the worker would.
struct Traffic {
    frames: Vec<[u8; FRAME]>,
    next: usize,
    pkts: Vec<VecPacket>,
    verdicts: [Verdict; BURST],
}

impl Traffic {
    fn new(flows: u32) -> Traffic {
        Traffic {
            frames: (0..flows).map(frame).collect(),
            next: 0,
            pkts: (0..BURST).map(|_| VecPacket::new(&[0; FRAME])).collect(),
            verdicts: [Verdict::Drop(DropReason::Parse); BURST],
        }
    }

    #[inline]
    fn reload(&mut self) {
        for p in &mut self.pkts {
            let f = &self.frames[self.next];
            self.next = if self.next + 1 == self.frames.len() {
                0
            } else {
                self.next + 1
            };
            reload(p, f);
        }
    }

    #[inline]
    fn burst(&mut self, pipeline: &mut Pipeline, snap: &Snapshot, now: u64) {
        self.reload();
        pipeline.process_burst(snap, 0, &mut self.pkts, &mut self.verdicts, now);
        black_box(&self.verdicts);
    }
}

fn bench_pipeline(c: &mut Criterion) {
    use fulcrum::datapath::encap::EncapMode;
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(15)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(BURST as u64));

    g.bench_function("reload_only", |b| {
        let mut t = Traffic::new(4096);
        b.iter(|| {
            t.reload();
            black_box(&t.pkts);
        })
    });

    for (flows, conntrack) in [
        (4096u32, 8192usize),
        (4096u32, 1usize << 20),
        (1 << 20, 1 << 21),
    ] {
        for mode in [EncapMode::Ipip, EncapMode::Gue, EncapMode::L2Dsr] {
            let snap = snapshot(mode);
            let mut p = pipeline(conntrack);
            let mut t = Traffic::new(flows);
            // One pass over every flow first, so the table is as warm as in a long run.
            let mut now = 0u64;
            for _ in 0..(flows as usize).div_ceil(BURST) {
                now += 1;
                t.burst(&mut p, &snap, now);
            }
            let first = t.verdicts[0];
            assert_eq!(
                first,
                Verdict::Forward,
                "{mode} at {flows} flows: {first:?}"
            );
            g.bench_with_input(
                BenchmarkId::new(mode.as_str(), format!("{flows}/ct{conntrack}")),
                &flows,
                |b, _| {
                    b.iter(|| {
                        now += 1;
                        t.burst(&mut p, &snap, now)
                    })
                },
            );
        }
    }
    g.finish();
}

/// Publish-to-adoption latency: a reader thread spins on `Reader::refresh` (a worker does
/// it once per burst, so this is the mechanism's share; add one burst, a few µs, for a
/// worker) and reports each version it adopts.
fn bench_snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let ports = [port()];
    let specs = [vip(fulcrum::datapath::encap::EncapMode::Ipip, 65_537)];
    let mut publisher = Publisher::new(snapshot::build(1, &specs, &ports, None).expect("first"));
    let adopted = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut reader = publisher.reader();
    let reader_thread = {
        let (adopted, stop) = (adopted.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if reader.refresh() {
                    adopted.store(reader.snapshot().version, Ordering::Release);
                }
                std::hint::spin_loop();
            }
        })
    };
    let mut version = 1u64;
    g.bench_function("publish_to_adoption", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                version += 1;
                // Built outside the timed part: only the hand-over is measured. The
                // unchanged VIP shares its Maglev table, as in a real configuration change.
                let current = publisher.current();
                let next =
                    snapshot::build(version, &specs, &ports, Some(&current)).expect("snapshot");
                drop(current);
                let start = Instant::now();
                publisher.publish(next);
                while adopted.load(Ordering::Acquire) != version {
                    std::hint::spin_loop();
                }
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    reader_thread.join().expect("reader thread");
}

criterion_group!(benches, bench_pipeline, bench_snapshot);
criterion_main!(benches);
