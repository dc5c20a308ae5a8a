//! The worker: one per worker lcore, a poll loop over its queues.
//!
//! Per iteration: adopt the newest snapshot (quiescent point), then for every port: receive a
//! burst, run it through the pipeline, and send each packet where its verdict says — out of the
//! port (encapsulated, or an ICMP reply), to the kernel's exception TAP, or nowhere (a counted
//! drop). Then move what the kernel sent on each TAP out of its port. Nothing in the loop
//! allocates, locks, makes a syscall, or panics on input.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::MAX_BURST;
use crate::dpdk::{clock, Batch, Mbuf, RxQueue, TxQueue};
use crate::packet::PacketBuf;
use crate::packet::BURST;
use crate::pipeline::{Pipeline, Verdict};
use crate::snapshot::Reader;
use crate::stats::{DropReason, HistogramExchange, WorkerStats};

/// The most packets one batch holds: the largest `[dataplane] burst` allowed.
const MAX: usize = MAX_BURST as usize;

/// A worker's batch: room for the largest burst, of which `Worker::burst` is used.
type WorkerBatch<'pool> = Batch<'pool, MAX>;

/// One port's queues as a worker owns them. They borrow their ports (`'port`), whose RX pool
/// the mbufs borrow (`'pool`).
pub struct WorkerPort<'port, 'pool> {
    pub rx: RxQueue<'port, 'pool>,
    pub tx: TxQueue<'port, 'pool>,
    /// The exception TAP's queues for this port, when the exception path is on.
    pub exception: Option<(RxQueue<'port, 'pool>, TxQueue<'port, 'pool>)>,
}

/// Everything a worker owns.
pub struct Worker<'port, 'pool> {
    pub ports: Vec<WorkerPort<'port, 'pool>>,
    /// Packets per RX burst (`[dataplane] burst`, 1 to `MAX_BURST`).
    pub burst: usize,
    pub pipeline: Pipeline,
    pub snapshot: Reader,
    pub stats: Arc<WorkerStats>,
    pub histogram: HistogramExchange,
    pub stop: Arc<AtomicBool>,
}

/// Counts a finished burst of `n` packets that started at TSC `start`.
#[inline]
fn count_burst(stats: &WorkerStats, histogram: &mut HistogramExchange, start: u64, n: usize) {
    let cycles = clock::tsc().wrapping_sub(start);
    stats.bursts.inc();
    stats.busy_cycles.add(cycles);
    stats.busy_packets.add(n as u64);
    histogram.record(cycles);
}

/// Where a batch leaves the worker.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Out of the port: counted in the port's tx counters.
    Port,
    /// Up the exception path: counted in `to_kernel` as each packet is queued.
    Kernel,
}

/// Sends a batch; whatever the ring refuses is dropped and counted.
#[inline]
fn flush<'pool>(
    tx: &mut TxQueue<'_, 'pool>,
    batch: &mut WorkerBatch<'pool>,
    stats: &WorkerStats,
    port: usize,
    via: Via,
) {
    if batch.is_empty() {
        return;
    }
    let counted = via == Via::Port;
    let bytes: usize = if counted {
        batch.as_slice().iter().map(|m| m.len()).sum()
    } else {
        0
    };
    let offered = batch.len();
    let sent = tx.tx_burst(batch);
    if counted {
        if let Some(c) = stats.tx.get(port) {
            // Bytes of refused packets are few and rare; count the offered bytes minus theirs.
            let refused: usize = batch.as_slice().iter().map(|m| m.len()).sum();
            c.packets.add(sent as u64);
            c.bytes.add((bytes - refused) as u64);
        }
    }
    if sent < offered {
        stats.drops[DropReason::TxFull as usize].add((offered - sent) as u64);
        batch.clear();
    }
}

/// Whether the worker can process and send `m`: one segment, and ours alone.
#[inline]
fn usable(m: &Mbuf<'_>) -> bool {
    m.is_contiguous() && m.is_exclusive()
}

/// Drops (counted as `buffer`) the mbufs of `batch` the worker cannot handle. Chains: the
/// pool's buffers hold a whole frame of the configured MTU, so a device only chains a frame
/// larger than the port can carry, and a chain sent to a port without multi-segment TX would
/// go out truncated and leak its other segments. Shared mbufs (a PMD's indirect or external
/// buffers): their bytes are read-only, and the pipeline rewrites packets in place.
#[inline]
fn drop_unusable(batch: &mut WorkerBatch<'_>, stats: &WorkerStats) {
    if batch.as_slice().iter().all(usable) {
        return;
    }
    drop_unusable_slow(batch, stats);
}

#[cold]
fn drop_unusable_slow(batch: &mut WorkerBatch<'_>, stats: &WorkerStats) {
    let mut whole: WorkerBatch<'_> = Batch::new();
    batch.drain_into(|m: Mbuf| {
        if usable(&m) {
            // whole has the room: it receives at most what batch held.
            let _ = whole.push(m);
        } else {
            stats.count_drop(DropReason::Buffer);
        }
    });
    std::mem::swap(batch, &mut whole);
}

impl<'pool> Worker<'_, 'pool> {
    /// Runs until `stop` is set. Returns 0 (the lcore's exit code).
    pub fn run(mut self) -> i32 {
        let burst = self.burst.clamp(1, MAX);
        let mut rx_batch: WorkerBatch<'pool> = Batch::new();
        let mut out: WorkerBatch<'pool> = Batch::new();
        let mut to_kernel: WorkerBatch<'pool> = Batch::new();
        let mut verdicts = [Verdict::Drop(DropReason::Parse); MAX];
        self.stats
            .snapshot_version
            .set(self.snapshot.snapshot().version);
        let mut iterations = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            if self.snapshot.refresh() {
                self.stats
                    .snapshot_version
                    .set(self.snapshot.snapshot().version);
            }
            self.histogram.trade();
            for (p, port) in self.ports.iter_mut().enumerate() {
                let received = port.rx.rx_burst_up_to(&mut rx_batch, burst);
                if received > 0 {
                    let start = clock::tsc();
                    if let Some(c) = self.stats.rx.get(p) {
                        let bytes: usize = rx_batch.as_slice().iter().map(|m| m.len()).sum();
                        c.packets.add(received as u64);
                        c.bytes.add(bytes as u64);
                    }
                    drop_unusable(&mut rx_batch, &self.stats);
                    let n = rx_batch.len();
                    // The pipeline takes up to BURST packets at a time (its per-packet
                    // state is sized by it); a larger configured burst goes through in
                    // pieces.
                    for (pkts, vs) in rx_batch
                        .as_mut_slice()
                        .chunks_mut(BURST)
                        .zip(verdicts[..n].chunks_mut(BURST))
                    {
                        self.pipeline
                            .process_burst(self.snapshot.snapshot(), p, pkts, vs, start);
                    }
                    let stats = &self.stats;
                    // The usual burst: everything leaves by the port. Send the rx batch as
                    // it is instead of moving each mbuf into another batch.
                    if verdicts[..n]
                        .iter()
                        .all(|v| matches!(v, Verdict::Forward | Verdict::Reply))
                    {
                        flush(&mut port.tx, &mut rx_batch, stats, p, Via::Port);
                    } else {
                        let mut i = 0;
                        rx_batch.drain_into(|m: Mbuf| {
                            let v = verdicts[i];
                            i += 1;
                            match v {
                                Verdict::Forward | Verdict::Reply => {
                                    // out has room: it is flushed whenever the rx batch is
                                    // done, and both have the same capacity.
                                    let _ = out.push(m);
                                }
                                Verdict::Exception => {
                                    if port.exception.is_some() {
                                        if let Some(c) = stats.to_kernel.get(p) {
                                            c.add(m.len());
                                        }
                                        let _ = to_kernel.push(m);
                                    } else {
                                        stats.count_drop(DropReason::NoVip);
                                    }
                                }
                                Verdict::Drop(_) => drop(m),
                            }
                        });
                        flush(&mut port.tx, &mut out, stats, p, Via::Port);
                        if let Some((_, exc_tx)) = port.exception.as_mut() {
                            flush(exc_tx, &mut to_kernel, stats, p, Via::Kernel);
                        }
                    }
                    count_burst(stats, &mut self.histogram, start, received);
                }
                if let Some((exc_rx, _)) = port.exception.as_mut() {
                    let k = exc_rx.rx_burst_up_to(&mut out, burst);
                    if k > 0 {
                        drop_unusable(&mut out, &self.stats);
                        if let Some(c) = self.stats.from_kernel.get(p) {
                            for m in out.as_slice() {
                                c.add(m.len());
                            }
                        }
                        flush(&mut port.tx, &mut out, &self.stats, p, Via::Port);
                    }
                }
            }
            // Sweep expired flows now and then, busy or idle: a worker that is never idle
            // must still free them (a few µs every 1024 polls).
            iterations = iterations.wrapping_add(1);
            if iterations.is_multiple_of(1024) {
                let now = clock::tsc();
                self.pipeline.housekeeping(now);
            }
        }
        0
    }
}
