//! Per-worker counters.
//!
//! Every worker owns one [`WorkerStats`] and is its only writer: counters are bumped with a
//! relaxed load and store (no locked read-modify-write, no sharing of cache lines between
//! workers). The control thread reads them at any time and sums over workers; a reader may see
//! a value one packet old, never a torn one.
//!
//! The burst-latency histogram cannot be shared that way, so workers and the control thread
//! trade whole histograms through two channels: the control thread hands a worker an empty
//! histogram, the worker swaps it for its filled one at a burst boundary and sends the filled
//! one back. Nothing is allocated on the worker.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::channel::{Receiver, Sender};
use hdrhistogram::Histogram;

/// Most ports one fulcrum instance drives: as many as the DPDK it is built against can
/// (RTE_MAX_ETHPORTS, 32 in Debian's build), so no configuration that starts has a port
/// without counters. Four counter pairs per port cost 2 KiB per worker at 32.
pub const MAX_PORTS: usize = dpdk_sys::RTE_MAX_ETHPORTS as usize;
/// VIP ids are below this (assigned by the control plane, stable across snapshots).
pub const MAX_VIPS: usize = 4096;
/// Backend ids are below this (one id per VIP membership, stable across snapshots).
pub const MAX_BACKENDS: usize = 1 << 17;
/// Slots for parse-error kinds (`wire::ParseError` discriminants).
pub const MAX_PARSE_ERRORS: usize = 32;

/// Why a worker dropped a packet.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, strum::EnumCount, strum::IntoStaticStr, strum::VariantArray,
)]
#[repr(usize)]
pub enum DropReason {
    /// Malformed: see the per-kind parse counters.
    #[strum(serialize = "parse_error")]
    Parse,
    /// For the balancer but no VIP matches and the exception path is off.
    #[strum(serialize = "no_vip")]
    NoVip,
    /// The VIP has no backend with weight.
    #[strum(serialize = "no_backend")]
    NoBackend,
    /// The TX ring was full.
    #[strum(serialize = "tx_full")]
    TxFull,
    /// Too big for the port after encapsulation (and no ICMP error could be sent).
    #[strum(serialize = "mtu")]
    Mtu,
    /// TTL / hop limit exhausted.
    #[strum(serialize = "ttl")]
    Ttl,
    /// No next-hop MAC known yet for the backend.
    #[strum(serialize = "no_next_hop")]
    NoNextHop,
    /// Not enough headroom to encapsulate, or a multi-segment mbuf.
    #[strum(serialize = "buffer")]
    Buffer,
    /// A packet-too-big / frag-needed reply was suppressed by the rate limiter.
    #[strum(serialize = "icmp_rate_limited")]
    IcmpRateLimited,
    /// A later fragment for a port-specific VIP's address whose first fragment was not seen.
    #[strum(serialize = "fragment_no_first")]
    FragmentNoFirst,
    /// A TCP/UDP first fragment too short to hold its ports, for a port-specific VIP's address.
    #[strum(serialize = "fragment_too_short")]
    FragmentTooShort,
    /// A unicast frame to another station's MAC (the port is not promiscuous).
    #[strum(serialize = "not_our_mac")]
    NotOurMac,
}

impl DropReason {
    pub const COUNT: usize = <Self as strum::EnumCount>::COUNT;
    /// Every reason, in declaration order: `ALL[r as usize] == r`.
    pub const ALL: &'static [DropReason] = <Self as strum::VariantArray>::VARIANTS;

    /// The label used in metrics and `fulcrum stats`.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// A counter with a single writer.
#[derive(Default, Debug)]
#[repr(transparent)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this (single writer).
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    #[inline(always)]
    pub fn inc(&self) {
        self.add(1)
    }
    /// Sets the value (for gauges mirrored from worker-local state).
    #[inline(always)]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed)
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Packets and bytes.
#[derive(Default, Debug)]
pub struct PacketBytes {
    pub packets: Counter,
    pub bytes: Counter,
}

impl PacketBytes {
    #[inline(always)]
    pub fn add(&self, bytes: usize) {
        self.packets.inc();
        self.bytes.add(bytes as u64);
    }
}

/// Everything one worker counts. Allocated once, before the worker starts.
#[derive(Debug)]
pub struct WorkerStats {
    pub worker: usize,
    pub lcore: u32,
    /// The snapshot version the worker runs (it stores it when it adopts one).
    pub snapshot_version: Counter,
    pub rx: [PacketBytes; MAX_PORTS],
    pub tx: [PacketBytes; MAX_PORTS],
    /// Frames handed to the kernel's exception TAP, per port.
    pub to_kernel: [PacketBytes; MAX_PORTS],
    /// Frames the kernel sent out through the exception TAP, per port.
    pub from_kernel: [PacketBytes; MAX_PORTS],
    pub drops: [Counter; DropReason::COUNT],
    pub parse_errors: [Counter; MAX_PARSE_ERRORS],
    pub vip: Box<[PacketBytes]>,
    pub backend: Box<[PacketBytes]>,
    pub conntrack_hits: Counter,
    pub conntrack_misses: Counter,
    pub conntrack_inserts: Counter,
    pub conntrack_evictions: Counter,
    /// The part of `conntrack_evictions` that were confirmed (established) flows.
    pub conntrack_confirmed_evictions: Counter,
    pub conntrack_expiries: Counter,
    pub conntrack_flows: Counter,
    /// Tracked flows whose backend was gone or down and got a fresh pick.
    pub conntrack_repicks: Counter,
    pub fragments: Counter,
    pub icmp_errors_forwarded: Counter,
    pub icmp_too_big_sent: Counter,
    pub syns: Counter,
    pub bursts: Counter,
    /// TSC cycles spent on non-empty bursts, and the packets they carried.
    pub busy_cycles: Counter,
    pub busy_packets: Counter,
}

impl WorkerStats {
    pub fn new(worker: usize, lcore: u32) -> WorkerStats {
        WorkerStats {
            worker,
            lcore,
            snapshot_version: Counter::default(),
            rx: Default::default(),
            tx: Default::default(),
            to_kernel: Default::default(),
            from_kernel: Default::default(),
            drops: Default::default(),
            parse_errors: Default::default(),
            vip: (0..MAX_VIPS).map(|_| PacketBytes::default()).collect(),
            backend: (0..MAX_BACKENDS).map(|_| PacketBytes::default()).collect(),
            conntrack_hits: Counter::default(),
            conntrack_misses: Counter::default(),
            conntrack_inserts: Counter::default(),
            conntrack_evictions: Counter::default(),
            conntrack_confirmed_evictions: Counter::default(),
            conntrack_expiries: Counter::default(),
            conntrack_flows: Counter::default(),
            conntrack_repicks: Counter::default(),
            fragments: Counter::default(),
            icmp_errors_forwarded: Counter::default(),
            icmp_too_big_sent: Counter::default(),
            syns: Counter::default(),
            bursts: Counter::default(),
            busy_cycles: Counter::default(),
            busy_packets: Counter::default(),
        }
    }

    #[inline(always)]
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason as usize].inc();
    }

    /// Counts a parse drop of kind `kind` (a small discriminant).
    #[inline(always)]
    pub fn parse_drop(&self, kind: usize) {
        self.count_drop(DropReason::Parse);
        if let Some(c) = self.parse_errors.get(kind) {
            c.inc();
        }
    }

    #[inline(always)]
    pub fn vip_packet(&self, vip_id: u32, bytes: usize) {
        if let Some(c) = self.vip.get(vip_id as usize) {
            c.add(bytes);
        }
    }

    #[inline(always)]
    pub fn backend_packet(&self, backend_id: u32, bytes: usize) {
        if let Some(c) = self.backend.get(backend_id as usize) {
            c.add(bytes);
        }
    }

    /// Total drops over all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }

    pub fn total_rx_packets(&self) -> u64 {
        self.rx.iter().map(|c| c.packets.get()).sum()
    }

    pub fn total_tx_packets(&self) -> u64 {
        self.tx.iter().map(|c| c.packets.get()).sum()
    }
}

/// Burst latency in TSC cycles, up to 10^9 cycles, 3 significant digits.
pub fn new_burst_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1_000_000_000, 3).expect("static histogram bounds are valid")
}

/// The worker's side of the histogram exchange.
pub struct HistogramExchange {
    pub current: Histogram<u64>,
    fresh: Receiver<Histogram<u64>>,
    filled: Sender<Histogram<u64>>,
}

/// The control thread's side.
pub struct HistogramCollector {
    fresh: Sender<Histogram<u64>>,
    filled: Receiver<Histogram<u64>>,
    /// Everything collected so far.
    pub total: Histogram<u64>,
}

/// A connected pair for one worker.
pub fn histogram_exchange() -> (HistogramExchange, HistogramCollector) {
    let (fresh_tx, fresh_rx) = crossbeam::channel::bounded(1);
    let (filled_tx, filled_rx) = crossbeam::channel::bounded(1);
    (
        HistogramExchange {
            current: new_burst_histogram(),
            fresh: fresh_rx,
            filled: filled_tx,
        },
        HistogramCollector {
            fresh: fresh_tx,
            filled: filled_rx,
            total: new_burst_histogram(),
        },
    )
}

impl HistogramExchange {
    /// Records one burst's cycles (saturating at the histogram's bound; never allocates).
    #[inline]
    pub fn record(&mut self, cycles: u64) {
        let _ = self.current.record(cycles.clamp(1, 1_000_000_000));
    }

    /// At a burst boundary: if the control thread offered an empty histogram, trade the
    /// filled one for it. Non-blocking and allocation-free (bounded channels of capacity 1).
    #[inline]
    pub fn trade(&mut self) {
        if let Ok(mut fresh) = self.fresh.try_recv() {
            std::mem::swap(&mut fresh, &mut self.current);
            // The collector drains `filled` before offering another, so this cannot be full;
            // if it were, dropping the histogram here would only lose samples.
            let _ = self.filled.try_send(fresh);
        }
    }
}

impl HistogramCollector {
    /// Collects what the worker sent back, and offers it a new empty histogram.
    pub fn collect(&mut self) {
        let mut got = false;
        while let Ok(mut h) = self.filled.try_recv() {
            let _ = self.total.add(&h);
            h.reset();
            let _ = self.fresh.try_send(h);
            got = true;
        }
        if !got && self.fresh.is_empty() {
            let _ = self.fresh.try_send(new_burst_histogram());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels are the metrics' and `fulcrum stats`' vocabulary, in this order.
    #[test]
    fn drop_reasons_keep_their_names_and_order() {
        let names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(
            names,
            [
                "parse_error",
                "no_vip",
                "no_backend",
                "tx_full",
                "mtu",
                "ttl",
                "no_next_hop",
                "buffer",
                "icmp_rate_limited",
                "fragment_no_first",
                "fragment_too_short",
                "not_our_mac",
            ]
        );
        assert_eq!(DropReason::COUNT, names.len());
    }

    #[test]
    fn counters_add_up() {
        let s = WorkerStats::new(0, 1);
        s.count_drop(DropReason::TxFull);
        s.count_drop(DropReason::TxFull);
        s.parse_drop(3);
        s.parse_drop(999);
        s.vip_packet(7, 100);
        s.vip_packet(u32::MAX, 100);
        s.backend_packet(5, 60);
        assert_eq!(s.drops[DropReason::TxFull as usize].get(), 2);
        assert_eq!(s.drops[DropReason::Parse as usize].get(), 2);
        assert_eq!(s.parse_errors[3].get(), 1);
        assert_eq!(s.total_drops(), 4);
        assert_eq!(s.vip[7].bytes.get(), 100);
        assert_eq!(s.backend[5].packets.get(), 1);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    /// Every port a configuration can bring up is counted: DPDK drives at most
    /// RTE_MAX_ETHPORTS ports per process (a port's exception TAP takes one too). The
    /// counters used to stop at port 8.
    #[test]
    fn every_port_dpdk_can_drive_is_counted() {
        let ports = dpdk_sys::RTE_MAX_ETHPORTS as usize;
        let s = std::sync::Arc::new(WorkerStats::new(0, 1));
        for p in 0..ports {
            s.rx.get(p).expect("an rx counter for every port").add(100);
            s.tx.get(p).expect("a tx counter for every port").add(60);
            s.to_kernel.get(p).expect("a to-kernel counter").add(1);
            s.from_kernel.get(p).expect("a from-kernel counter").add(1);
        }
        let t = Totals::of(&[s]);
        assert_eq!(
            (t.rx_packets, t.rx_bytes),
            (ports as u64, 100 * ports as u64)
        );
        assert_eq!(
            (t.tx_packets, t.tx_bytes),
            (ports as u64, 60 * ports as u64)
        );
        assert_eq!(t.to_kernel_packets, ports as u64);
        assert_eq!(t.from_kernel_packets, ports as u64);
    }

    #[test]
    fn histograms_travel_between_worker_and_collector() {
        let (mut w, mut c) = histogram_exchange();
        w.record(100);
        w.trade(); // nothing offered yet: keeps recording into the same one
        c.collect(); // offers an empty histogram
        w.record(200);
        w.trade(); // swaps: sends {100, 200} back
        w.record(300);
        c.collect();
        assert_eq!(c.total.len(), 2);
        assert_eq!(w.current.len(), 1);
        w.trade();
        c.collect();
        assert_eq!(c.total.len(), 3);
        assert!(c.total.max() >= 300);
    }
}

/// Counters summed over workers, as the API, `fulcrum stats` and the daemon's exit summary
/// show them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub to_kernel_packets: u64,
    pub from_kernel_packets: u64,
    /// Drop reason name -> count (only reasons that occurred).
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Parse error name -> count (only kinds that occurred).
    pub parse_errors: std::collections::BTreeMap<String, u64>,
    pub conntrack_hits: u64,
    pub conntrack_misses: u64,
    pub conntrack_inserts: u64,
    pub conntrack_evictions: u64,
    pub conntrack_confirmed_evictions: u64,
    pub conntrack_expiries: u64,
    pub conntrack_flows: u64,
    pub conntrack_repicks: u64,
    pub fragments: u64,
    pub icmp_errors_forwarded: u64,
    pub icmp_too_big_sent: u64,
    pub syns: u64,
    pub busy_cycles: u64,
    pub busy_packets: u64,
    pub bursts: u64,
}

impl Totals {
    /// Sums `workers`' counters.
    pub fn of(workers: &[std::sync::Arc<WorkerStats>]) -> Totals {
        let mut t = Totals::default();
        for w in workers {
            for p in 0..MAX_PORTS {
                t.rx_packets += w.rx[p].packets.get();
                t.rx_bytes += w.rx[p].bytes.get();
                t.tx_packets += w.tx[p].packets.get();
                t.tx_bytes += w.tx[p].bytes.get();
                t.to_kernel_packets += w.to_kernel[p].packets.get();
                t.from_kernel_packets += w.from_kernel[p].packets.get();
            }
            for &r in DropReason::ALL {
                let n = w.drops[r as usize].get();
                if n > 0 {
                    *t.drops.entry(r.name().to_owned()).or_default() += n;
                }
            }
            for &e in crate::wire::ParseError::ALL {
                let n = w.parse_errors.get(e as usize).map_or(0, Counter::get);
                if n > 0 {
                    *t.parse_errors.entry(e.name().to_owned()).or_default() += n;
                }
            }
            t.conntrack_hits += w.conntrack_hits.get();
            t.conntrack_misses += w.conntrack_misses.get();
            t.conntrack_inserts += w.conntrack_inserts.get();
            t.conntrack_evictions += w.conntrack_evictions.get();
            t.conntrack_confirmed_evictions += w.conntrack_confirmed_evictions.get();
            t.conntrack_expiries += w.conntrack_expiries.get();
            t.conntrack_flows += w.conntrack_flows.get();
            t.conntrack_repicks += w.conntrack_repicks.get();
            t.fragments += w.fragments.get();
            t.icmp_errors_forwarded += w.icmp_errors_forwarded.get();
            t.icmp_too_big_sent += w.icmp_too_big_sent.get();
            t.syns += w.syns.get();
            t.busy_cycles += w.busy_cycles.get();
            t.busy_packets += w.busy_packets.get();
            t.bursts += w.bursts.get();
        }
        t
    }

    /// All drops over all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }
}
