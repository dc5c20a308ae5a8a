//! What happens to one packet: parse -> classify -> conntrack -> select -> encap.
//!
//! Pure logic over [`PacketBuf`], so it is tested with `VecPacket` and no EAL; the worker
//! (`worker.rs`) feeds it mbufs. A burst goes through the stages one pass each, every
//! packet of the burst through one stage before any goes on to the next:
//!
//! 1. parse, straight into the packet's slot ([`IpMeta::parse_into`]);
//!    1b. classify (VIP) and hash;
//!    1c. prefetch the conntrack set's metadata line;
//! 2. prefetch the entry lines whose signatures match (almost always one per tracked flow);
//! 3. look flows up and pick backends;
//! 4. encapsulate.
//!
//! Two reasons. With a table far larger than the caches, a lookup is two dependent DRAM
//! accesses; one packet at a time they would queue up, a pass at a time they overlap. And a
//! value written in small pieces and read back wider straight away (a header summary, the
//! encapsulation parameters) cannot be served by store-to-load forwarding: the load waits
//! until the stores reach the cache. A pass later they have. docs/benchmarks.md has the
//! numbers for each step.
//!
//! Per-packet counters are summed in locals and written to the worker's [`WorkerStats`]
//! once per burst; consecutive packets to the same VIP or backend share one update.

use std::sync::Arc;

use crate::conntrack::{ConnTable, ConnTableError, ConnTableStats, FlowValue};
use crate::dpdk::BURST;
use crate::encap::{self, EncapMode, EncapParams};
use crate::flow::FiveTuple;
use crate::icmp_reply::{self, IcmpRateLimiter};
use crate::packet::PacketBuf;
use crate::snapshot::Snapshot;
use crate::stats::{DropReason, PacketBytes, WorkerStats};
use crate::wire::{self, Family, Fragment, IpMeta};

/// Where a packet goes after the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Out of the port it came in on, rewritten for its backend.
    Forward,
    /// Out of the port it came in on, rewritten into an ICMP error for the client.
    Reply,
    /// To the kernel, unchanged (not for a VIP).
    Exception,
    /// Nowhere; already counted under the reason.
    Drop(DropReason),
}

/// How a worker's pipeline is set up.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub conntrack_flows: usize,
    /// Idle timeout of tracked flows, in the unit of `now` (TSC ticks in the worker).
    pub idle_timeout: u64,
    /// Ticks per second of `now`, for the ICMP rate limiter.
    pub ticks_per_second: u64,
    /// ICMP too-big replies per second per worker.
    pub icmp_rate: u32,
}

/// Per-packet state carried from pass to pass; meaningful while the verdict is `Forward`.
#[derive(Clone, Copy)]
struct Pending {
    meta: IpMeta,
    hash: u64,
    vip: u16,
    /// Whether the flow goes through conntrack (not fragments, not ICMP errors).
    track: bool,
    /// From pass 2: the conntrack ways whose signature matched, a hint for the lookup.
    ways: u8,
    /// From pass 3: the chosen backend, its VIP's id, and the next hop's MAC.
    backend: u32,
    vip_id: u32,
    next_hop: [u8; 6],
}

impl Pending {
    /// The flow the packet belongs to: for an ICMP error, the flow it quotes.
    #[inline(always)]
    fn key(&self) -> &FiveTuple {
        match &self.meta.icmp_error {
            Some(err) => &err.flow,
            None => &self.meta.tuple,
        }
    }

    /// A slot's content before its first packet; never read as a packet's state.
    const UNUSED: Pending = Pending {
        meta: IpMeta::UNSPECIFIED,
        hash: 0,
        vip: 0,
        track: false,
        ways: 0,
        backend: 0,
        vip_id: 0,
        next_hop: [0; 6],
    };
}

/// Packets and bytes of consecutive packets to one VIP or backend, written to the shared
/// counter when the id changes or the burst ends: one counter update per run, not per packet.
struct Run {
    id: u32,
    packets: u64,
    bytes: u64,
}

impl Run {
    const NONE: u32 = u32::MAX;

    fn new() -> Run {
        Run {
            id: Self::NONE,
            packets: 0,
            bytes: 0,
        }
    }

    #[inline(always)]
    fn add(&mut self, counters: &[PacketBytes], id: u32, bytes: usize) {
        if id != self.id {
            self.flush(counters);
            self.id = id;
        }
        self.packets += 1;
        self.bytes += bytes as u64;
    }

    #[inline]
    fn flush(&mut self, counters: &[PacketBytes]) {
        if self.packets > 0 {
            if let Some(c) = counters.get(self.id as usize) {
                c.packets.add(self.packets);
                c.bytes.add(self.bytes);
            }
        }
        self.packets = 0;
        self.bytes = 0;
    }
}

/// One burst's forwarded-packet counters, kept in registers until the burst ends.
struct Tally {
    vip: Run,
    backend: Run,
    syns: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            vip: Run::new(),
            backend: Run::new(),
            syns: 0,
        }
    }

    fn flush(&mut self, stats: &WorkerStats) {
        self.vip.flush(&stats.vip);
        self.backend.flush(&stats.backend);
        if self.syns > 0 {
            stats.syns.add(self.syns);
        }
    }
}

/// What routing a packet changes besides the packet: the flows and the ICMP budget.
struct Flows {
    conntrack: ConnTable,
    limiter: IcmpRateLimiter,
}

/// One worker's pipeline: its conntrack table and rate limiter, and its counters.
pub struct Pipeline {
    flows: Flows,
    stats: Arc<WorkerStats>,
    pending: [Pending; BURST],
    last_ct: ConnTableStats,
}

/// How many packets ahead pass 1 prefetches packet data.
const PREFETCH_AHEAD: usize = 4;

impl Pipeline {
    pub fn new(cfg: &PipelineConfig, stats: Arc<WorkerStats>) -> Result<Pipeline, ConnTableError> {
        Ok(Pipeline {
            flows: Flows {
                conntrack: ConnTable::new(cfg.conntrack_flows, cfg.idle_timeout)?,
                limiter: IcmpRateLimiter::new(
                    cfg.icmp_rate,
                    cfg.icmp_rate.max(1),
                    cfg.ticks_per_second,
                ),
            },
            stats,
            pending: [Pending::UNUSED; BURST],
            last_ct: Default::default(),
        })
    }

    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Processes a burst of packets that arrived on `port`, rewriting them in place; writes one
    /// verdict per packet. `pkts.len()` must not exceed the burst size (extra packets are
    /// dropped as buffer errors rather than panicking).
    pub fn process_burst<P: PacketBuf>(
        &mut self,
        snap: &Snapshot,
        port: usize,
        pkts: &mut [P],
        verdicts: &mut [Verdict],
        now: u64,
    ) {
        let n = pkts.len().min(verdicts.len());
        let stats = &*self.stats;
        // Pass 1: parse into the packet's slot. Pass 1b reads the slots back only once these
        // stores have long reached the cache: reading a just-written header summary straight
        // away stalls on store-to-load forwarding (measured: ~30 cycles per packet).
        for i in 0..n {
            if let Some(ahead) = pkts.get(i + PREFETCH_AHEAD) {
                ahead.prefetch();
            }
            let (Some(pkt), Some(v)) = (pkts.get(i), verdicts.get_mut(i)) else {
                continue;
            };
            // A chained mbuf's first segment is only part of the frame: never parse it.
            *v = match self.pending.get_mut(i) {
                Some(slot) if pkt.is_contiguous() => parse_into(stats, pkt.data(), slot),
                _ => {
                    stats.count_drop(DropReason::Buffer);
                    Verdict::Drop(DropReason::Buffer)
                }
            };
        }
        // Pass 1b: the flow hash, which is all the conntrack prefetch needs.
        for (slot, v) in self.pending.iter_mut().zip(verdicts.iter()).take(n) {
            if *v == Verdict::Forward {
                hash_flow(slot);
            }
        }
        // Pass 1c: prefetch the conntrack metadata lines, in a loop of its own. A prefetch
        // that misses the TLB holds up retirement until the page walk is done; in a short
        // loop the out-of-order window covers all of the burst's walks at once, where
        // behind a hash computation it covered two or three.
        for (p, v) in self.pending.iter().zip(verdicts.iter()).take(n) {
            if *v == Verdict::Forward && p.track {
                self.flows.conntrack.prefetch(p.hash);
            }
        }
        // Pass 1d: the VIP, while those lines are on their way (a packet for no VIP had its
        // line prefetched for nothing, which is cheaper than a second pass before pass 1c).
        for (slot, v) in self.pending.iter_mut().zip(verdicts.iter_mut()).take(n) {
            if *v == Verdict::Forward {
                *v = classify(snap, stats, slot);
            }
        }
        // Pass 2: the entry lines, now that the metadata lines are (mostly) in.
        for (p, v) in self.pending.iter_mut().zip(verdicts.iter()).take(n) {
            if *v == Verdict::Forward && p.track {
                p.ways = self.flows.conntrack.prefetch_entries(p.hash);
            }
        }
        // Pass 3: conntrack and select; what to write goes into the slot.
        for ((pkt, v), p) in pkts
            .iter_mut()
            .zip(verdicts.iter_mut())
            .zip(&mut self.pending)
        {
            if *v != Verdict::Forward {
                continue;
            }
            *v = self.flows.route(snap, stats, port, pkt, p, now);
            if let Verdict::Drop(reason) = *v {
                stats.count_drop(reason);
            }
        }
        // Pass 4: encapsulate, with parameters gathered from the snapshot here rather than
        // stored by pass 3: copied into the slot and read back, they cost ~25 instructions a
        // packet and a wide read of narrow stores.
        let mut tally = Tally::new();
        let port_info = snap.ports.get(port);
        for ((pkt, v), p) in pkts.iter_mut().zip(verdicts.iter_mut()).zip(&self.pending) {
            if *v != Verdict::Forward {
                continue;
            }
            // Pass 3 forwarded only packets whose VIP, backend and port it found.
            let (Some(vip), Some(backend), Some(port_info)) = (
                snap.vips.get(p.vip as usize),
                snap.backend(p.backend),
                port_info,
            ) else {
                *v = Verdict::Drop(DropReason::NoBackend);
                stats.count_drop(DropReason::NoBackend);
                continue;
            };
            let params = EncapParams {
                mode: vip.encap,
                port_mac: port_info.mac,
                next_hop_mac: p.next_hop,
                src_v4: port_info.src_v4,
                src_v6: port_info.src_v6,
                backend: backend.addr,
                gue_port: vip.gue_port,
                flow_hash: p.hash,
            };
            let len = pkt.len();
            if encap::encap(pkt, &p.meta, &params).is_err() {
                *v = Verdict::Drop(DropReason::Buffer);
                stats.count_drop(DropReason::Buffer);
                continue;
            }
            if p.meta.icmp_error.is_some() {
                stats.icmp_errors_forwarded.inc();
            }
            if p.meta.tcp_flags & wire::tcp::flags::SYN != 0 {
                tally.syns += 1;
            }
            tally.vip.add(&stats.vip, p.vip_id, len);
            tally.backend.add(&stats.backend, p.backend, len);
        }
        tally.flush(stats);
        self.mirror_conntrack_stats();
    }

    /// Idle-time work: sweep expired flows.
    pub fn housekeeping(&mut self, now: u64) {
        self.flows.conntrack.expire_some(now, 256);
        self.mirror_conntrack_stats();
    }

    fn mirror_conntrack_stats(&mut self) {
        let conntrack = &self.flows.conntrack;
        let s = conntrack.stats();
        if s == self.last_ct {
            return;
        }
        self.last_ct = s;
        self.stats.conntrack_hits.set(s.hits);
        self.stats.conntrack_misses.set(s.misses);
        self.stats.conntrack_inserts.set(s.inserts);
        self.stats.conntrack_evictions.set(s.evictions);
        self.stats.conntrack_expiries.set(s.expiries);
        self.stats.conntrack_flows.set(conntrack.len() as u64);
    }
}

/// Pass 1 for one frame: `Forward` (so far) with its header summary in `slot`, or where
/// else it goes. The summary is written straight into the slot, not copied there.
#[inline(always)]
fn parse_into(stats: &WorkerStats, frame: &[u8], slot: &mut Pending) -> Verdict {
    match slot.meta.parse_into(frame) {
        Ok(true) => Verdict::Forward,
        Ok(false) => Verdict::Exception,
        Err(e) => {
            stats.parse_drop(e as usize);
            Verdict::Drop(DropReason::Parse)
        }
    }
}

/// Pass 1b for one parsed packet: the hash of the flow it belongs to, and whether conntrack
/// tracks it (not fragments, not ICMP errors).
#[inline(always)]
fn hash_flow(slot: &mut Pending) {
    let meta = &slot.meta;
    let (hash, track) = match &meta.icmp_error {
        Some(err) => (err.flow.flow_hash(), false),
        None if meta.fragment == Fragment::None => (meta.tuple.flow_hash(), true),
        None => (meta.tuple.fragment_hash(), false),
    };
    slot.hash = hash;
    slot.track = track;
}

/// Pass 1d for one parsed packet: its VIP, or `Exception` when it is for none.
#[inline(always)]
fn classify(snap: &Snapshot, stats: &WorkerStats, slot: &mut Pending) -> Verdict {
    let meta = &slot.meta;
    let (key, fragment) = match &meta.icmp_error {
        Some(err) => (&err.flow, Fragment::None),
        None => (&meta.tuple, meta.fragment),
    };
    let vip = if fragment == Fragment::None {
        snap.classifier.lookup(&key.dst, key.dst_port, key.proto)
    } else {
        snap.classifier.lookup_fragment(&key.dst, key.proto)
    };
    let Some(vip) = vip else {
        return Verdict::Exception;
    };
    if fragment != Fragment::None {
        stats.fragments.inc();
    }
    slot.vip = vip;
    Verdict::Forward
}

impl Flows {
    /// The backend id for a flow: its tracked backend if that still keeps flows, else a fresh
    /// Maglev pick (recorded in conntrack).
    #[inline(always)]
    fn backend_for(
        &mut self,
        snap: &Snapshot,
        stats: &WorkerStats,
        p: &Pending,
        vip_id: u32,
        now: u64,
    ) -> Option<u32> {
        let vip = snap.vips.get(p.vip as usize)?;
        let keeps = |backend: u32| {
            snap.backend(backend)
                .is_some_and(|b| b.vip_id == vip_id && b.keeps_flows())
        };
        if !p.track {
            // Fragments and ICMP errors: follow a tracked flow if there is one, never create one.
            if p.meta.icmp_error.is_some() {
                if let Some(v) = self.conntrack.peek(p.key(), p.hash, now) {
                    if keeps(v.backend) {
                        return Some(v.backend);
                    }
                }
            }
            return vip.pick(p.hash);
        }
        if let Some(v) = self.conntrack.lookup_hinted(p.key(), p.hash, p.ways, now) {
            if keeps(v.backend) {
                return Some(v.backend);
            }
            stats.conntrack_repicks.inc();
        }
        let picked = vip.pick(p.hash)?;
        let value = FlowValue {
            backend: picked,
            vip: vip_id as u16,
            flags: 0,
        };
        // An eviction, if any, is counted by the table itself.
        self.conntrack.insert(p.key(), p.hash, now, value);
        Some(picked)
    }

    /// Pass 3 for one packet: `Forward` with the backend and encapsulation parameters filled
    /// in, or what happens instead (a drop, or an ICMP too-big reply written into `pkt`).
    #[inline(always)]
    fn route<P: PacketBuf>(
        &mut self,
        snap: &Snapshot,
        stats: &WorkerStats,
        port: usize,
        pkt: &mut P,
        p: &mut Pending,
        now: u64,
    ) -> Verdict {
        let Some(vip) = snap.vips.get(p.vip as usize) else {
            return Verdict::Drop(DropReason::NoVip);
        };
        let vip_id = vip.id;
        let encap_mode = vip.encap;
        let Some(backend_id) = self.backend_for(snap, stats, p, vip_id, now) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let Some(backend) = snap.backend(backend_id) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let Some(port_info) = snap.ports.get(port) else {
            return Verdict::Drop(DropReason::NoNextHop);
        };
        if p.meta.icmp_error.is_none() && encap::ttl_exhausted(&p.meta) {
            return Verdict::Drop(DropReason::Ttl);
        }
        let outer = Family::of(&backend.addr);
        let overhead = encap::overhead(encap_mode, outer);
        let ip_len = p.meta.ip_len as usize;
        if ip_len + overhead > port_info.mtu as usize {
            return self.too_big(snap, stats, port, pkt, p, overhead, now);
        }
        let next_hop = match encap_mode {
            EncapMode::L2Dsr => backend.mac,
            _ => port_info.gateway_mac.or(backend.mac),
        };
        let Some(next_hop) = next_hop else {
            return Verdict::Drop(DropReason::NoNextHop);
        };
        p.backend = backend_id;
        p.vip_id = vip_id;
        p.next_hop = next_hop;
        Verdict::Forward
    }

    /// The packet would not fit the port once encapsulated.
    #[allow(clippy::too_many_arguments)]
    #[cold]
    fn too_big<P: PacketBuf>(
        &mut self,
        snap: &Snapshot,
        stats: &WorkerStats,
        port: usize,
        pkt: &mut P,
        p: &Pending,
        overhead: usize,
        now: u64,
    ) -> Verdict {
        // Never answer an ICMP error with one; IPv4 without DF cannot be told to shrink.
        if p.meta.icmp_error.is_some() || !p.meta.dont_fragment {
            return Verdict::Drop(DropReason::Mtu);
        }
        let Some(port_info) = snap.ports.get(port) else {
            return Verdict::Drop(DropReason::Mtu);
        };
        // Packets that may get no ICMP error (non-first fragments, non-unicast sources) must
        // not spend the rate limiter's tokens.
        if !icmp_reply::may_reply(pkt.data(), &p.meta) {
            return Verdict::Drop(DropReason::Mtu);
        }
        if !self.limiter.allow(now) {
            return Verdict::Drop(DropReason::IcmpRateLimited);
        }
        let mtu = (port_info.mtu as usize).saturating_sub(overhead) as u32;
        if icmp_reply::too_big_reply(pkt, &p.meta, mtu).is_err() {
            return Verdict::Drop(DropReason::Mtu);
        }
        stats.icmp_too_big_sent.inc();
        Verdict::Reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::VecPacket;
    use crate::snapshot::{self, BackendSpec, BackendState, PortInfo, VipSpec};
    use crate::wire::testutil::*;
    use std::net::Ipv4Addr;

    fn snapshot() -> Snapshot {
        let vip = VipSpec {
            id: 7,
            key: "192.0.2.10:80/tcp".parse().unwrap(),
            encap: EncapMode::Ipip,
            gue_port: 6080,
            table_size: 251,
            backends: (1..=3u32)
                .map(|b| BackendSpec {
                    id: b,
                    addr: format!("198.51.100.{b}").parse().unwrap(),
                    weight: 1,
                    state: BackendState::Active,
                    mac: None,
                })
                .collect(),
        };
        let port = PortInfo {
            mac: PORT_MAC,
            mtu: 1500,
            src_v4: Some(Ipv4Addr::new(203, 0, 113, 2)),
            src_v6: None,
            gateway_mac: Some([2, 0, 0, 0, 0, 1]),
        };
        snapshot::build(1, &[vip], &[port], None).unwrap()
    }

    fn pipeline() -> Pipeline {
        let cfg = PipelineConfig {
            conntrack_flows: 1024,
            idle_timeout: 1_000_000,
            ticks_per_second: 1000,
            icmp_rate: 10,
        };
        Pipeline::new(&cfg, Arc::new(WorkerStats::new(0, 1))).unwrap()
    }

    /// Client `i`'s TCP packet to the VIP (`dst_port` 80) or to another port.
    fn packet(i: u8, dst_port: u16, syn: bool) -> VecPacket {
        let ip = ipv4([198, 51, 100, i], VIP4, 64, &V4::default());
        VecPacket::new(&frame(
            None,
            ip,
            tcp(40000 + u16::from(i), dst_port, syn),
            b"hello",
        ))
    }

    #[test]
    fn a_mixed_burst_gets_one_verdict_each_and_counters_add_up() {
        let snap = snapshot();
        let mut p = pipeline();
        // Forwarded (two of them SYNs), one not for a VIP, one malformed (cut short).
        let mut pkts: Vec<VecPacket> = (1..=20).map(|i| packet(i, 80, i % 10 == 0)).collect();
        pkts.push(packet(21, 443, false));
        let whole = packet(22, 80, false);
        pkts.push(VecPacket::new(&whole.data()[..30]));
        let lens: Vec<usize> = pkts.iter().map(|p| p.len()).collect();
        let mut verdicts = vec![Verdict::Exception; pkts.len()];
        p.process_burst(&snap, 0, &mut pkts, &mut verdicts, 5);

        assert!(verdicts[..20].iter().all(|v| *v == Verdict::Forward));
        assert_eq!(verdicts[20], Verdict::Exception);
        assert_eq!(verdicts[21], Verdict::Drop(DropReason::Parse));
        let s = p.stats();
        let forwarded: u64 = lens[..20].iter().map(|&l| l as u64).sum();
        assert_eq!(s.vip[7].packets.get(), 20);
        assert_eq!(s.vip[7].bytes.get(), forwarded);
        let per_backend: Vec<u64> = (1..=3).map(|b| s.backend[b].packets.get()).collect();
        assert_eq!(per_backend.iter().sum::<u64>(), 20, "{per_backend:?}");
        assert!(per_backend.iter().all(|&n| n > 0), "{per_backend:?}");
        let backend_bytes: u64 = (1..=3).map(|b| s.backend[b].bytes.get()).sum();
        assert_eq!(backend_bytes, forwarded);
        assert_eq!(s.syns.get(), 2);
        assert_eq!(s.drops[DropReason::Parse as usize].get(), 1);
        assert_eq!(s.conntrack_inserts.get(), 20);
        assert_eq!(s.conntrack_flows.get(), 20);
        // Every forwarded packet grew by an outer IPv4 header.
        for (pkt, len) in pkts.iter().zip(&lens).take(20) {
            assert_eq!(pkt.len(), len + 20);
        }

        // The same flows again: conntrack hits, counters keep adding.
        let mut again: Vec<VecPacket> = (1..=20).map(|i| packet(i, 80, false)).collect();
        let mut verdicts = vec![Verdict::Exception; again.len()];
        p.process_burst(&snap, 0, &mut again, &mut verdicts, 6);
        assert!(verdicts.iter().all(|v| *v == Verdict::Forward));
        assert_eq!(p.stats().vip[7].packets.get(), 40);
        assert_eq!(p.stats().conntrack_hits.get(), 20);
        assert_eq!(p.stats().syns.get(), 2);
    }

    #[test]
    fn packets_beyond_the_burst_size_are_buffer_drops() {
        let snap = snapshot();
        let mut p = pipeline();
        let mut pkts: Vec<VecPacket> = (0..BURST as u8 + 3).map(|i| packet(i, 80, false)).collect();
        let mut verdicts = vec![Verdict::Exception; pkts.len()];
        p.process_burst(&snap, 0, &mut pkts, &mut verdicts, 1);
        assert!(verdicts[..BURST].iter().all(|v| *v == Verdict::Forward));
        assert!(verdicts[BURST..]
            .iter()
            .all(|v| *v == Verdict::Drop(DropReason::Buffer)));
        assert_eq!(p.stats().drops[DropReason::Buffer as usize].get(), 3);
        assert_eq!(p.stats().vip[7].packets.get(), BURST as u64);
    }
}
