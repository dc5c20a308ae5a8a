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

use crate::classify::{FirstFragmentClass, FragmentClass, VipIndex};
use crate::conntrack::{ConnTable, ConnTableError, ConnTableStats, FlowValue};
use crate::encap::{self, EncapMode, EncapParams};
use crate::flow::FiveTuple;
use crate::frag::{DatagramKey, FirstFragment, FragmentTable};
use crate::icmp_reply::{self, IcmpRateLimiter};
use crate::packet::PacketBuf;
use crate::packet::BURST;
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

/// Entries of a worker's fragment table (see `frag.rs`): about 80 bytes each.
pub const FRAGMENT_TABLE_ENTRIES: usize = 4096;

/// How long a worker remembers a datagram's first fragment, in seconds.
pub const FRAGMENT_TIMEOUT_SECS: u64 = 2;

/// What a fragment's route has to do with the fragment table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FragStep {
    /// Not a fragment, or one balanced statelessly (all-ports VIP).
    None,
    /// A first fragment for an exact VIP: record its backend for the later fragments.
    Record,
    /// A later fragment: go where its first fragment went; if that was not seen, to the
    /// all-ports VIP if the address has one, else nowhere.
    Follow(Option<VipIndex>),
}

/// Per-packet state carried from pass to pass; meaningful while the verdict is `Forward`.
#[derive(Clone, Copy)]
struct Pending {
    meta: IpMeta,
    hash: u64,
    /// The VIP's position in the snapshot's `vips` (`vip_id` is its stable id).
    vip_index: u16,
    /// Whether the flow goes through conntrack (not later fragments, not ICMP errors).
    track: bool,
    frag: FragStep,
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
        vip_index: 0,
        track: false,
        frag: FragStep::None,
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
struct Router {
    conntrack: ConnTable,
    fragments: FragmentTable,
    limiter: IcmpRateLimiter,
}

/// One worker's pipeline: its conntrack table and rate limiter, and its counters.
pub struct Pipeline {
    router: Router,
    stats: Arc<WorkerStats>,
    pending: [Pending; BURST],
    last_ct: ConnTableStats,
}

/// How many packets ahead pass 1 prefetches packet data.
const PREFETCH_AHEAD: usize = 4;

impl Pipeline {
    pub fn new(cfg: &PipelineConfig, stats: Arc<WorkerStats>) -> Result<Pipeline, ConnTableError> {
        Ok(Pipeline {
            router: Router {
                conntrack: ConnTable::new(cfg.conntrack_flows, cfg.idle_timeout)?,
                fragments: FragmentTable::new(
                    FRAGMENT_TABLE_ENTRIES,
                    cfg.ticks_per_second.saturating_mul(FRAGMENT_TIMEOUT_SECS),
                ),
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
        // The destination MAC frames must carry; none when the port takes every frame.
        let our_mac = snap
            .ports
            .get(port)
            .filter(|p| !p.promiscuous)
            .map(|p| p.mac);
        // Pass 1: parse into the packet's slot. Pass 1b reads the slots back only once these
        // stores have long reached the cache: reading a just-written header summary straight
        // away stalls on store-to-load forwarding (docs/benchmarks.md, step 3).
        for i in 0..n {
            if let Some(ahead) = pkts.get(i + PREFETCH_AHEAD) {
                ahead.prefetch();
            }
            let (Some(pkt), Some(v)) = (pkts.get(i), verdicts.get_mut(i)) else {
                continue;
            };
            // A chained mbuf's first segment is only part of the frame: never parse it.
            *v = match self.pending.get_mut(i) {
                Some(slot) if pkt.is_contiguous() => parse_into(stats, pkt.data(), our_mac, slot),
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
                self.router.conntrack.prefetch(p.hash);
            }
        }
        // Pass 1d: the VIP, while those lines are on their way (a packet for no VIP had its
        // line prefetched for nothing, which is cheaper than a second pass before pass 1c).
        for (slot, v) in self.pending.iter_mut().zip(verdicts.iter_mut()).take(n) {
            if *v == Verdict::Forward {
                *v = classify(snap, stats, &mut self.router.fragments, slot, now);
                if let Verdict::Drop(reason) = *v {
                    stats.count_drop(reason);
                }
            }
        }
        // Pass 2: the entry lines, now that the metadata lines are (mostly) in.
        for (p, v) in self.pending.iter_mut().zip(verdicts.iter()).take(n) {
            if *v == Verdict::Forward && p.track {
                p.ways = self.router.conntrack.prefetch_entries(p.hash);
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
            *v = self.router.route(snap, stats, port, pkt, p, now);
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
                snap.vips.get(p.vip_index as usize),
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
        self.router.conntrack.expire_some(now, 256);
        self.mirror_conntrack_stats();
    }

    fn mirror_conntrack_stats(&mut self) {
        let conntrack = &self.router.conntrack;
        let s = conntrack.stats();
        if s == self.last_ct {
            return;
        }
        self.last_ct = s;
        self.stats.conntrack_hits.set(s.hits);
        self.stats.conntrack_misses.set(s.misses);
        self.stats.conntrack_inserts.set(s.inserts);
        self.stats.conntrack_evictions.set(s.evictions);
        self.stats
            .conntrack_confirmed_evictions
            .set(s.confirmed_evictions);
        self.stats.conntrack_expiries.set(s.expiries);
        self.stats.conntrack_flows.set(conntrack.len() as u64);
    }
}

/// Pass 1 for one frame: `Forward` (so far) with its header summary in `slot`, or where
/// else it goes. The summary is written straight into the slot, not copied there.
#[inline(always)]
fn parse_into(
    stats: &WorkerStats,
    frame: &[u8],
    our_mac: Option<[u8; 6]>,
    slot: &mut Pending,
) -> Verdict {
    // The destination MAC first: the NIC may deliver frames for other stations (a
    // promiscuous device, a flooded segment), which another balancer on the segment may be
    // balancing too. Broadcast and multicast (ARP, IPv6 neighbour discovery) are the
    // kernel's. Shorter frames are left to the parser's length check.
    if let (Some(mac), Some(dst)) = (our_mac, frame.first_chunk::<6>()) {
        if *dst != mac {
            if dst[0] & 1 != 0 {
                return Verdict::Exception;
            }
            stats.count_drop(DropReason::NotOurMac);
            return Verdict::Drop(DropReason::NotOurMac);
        }
    }
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
/// tracks it (not ICMP errors, not fragments without ports). A first fragment is hashed and
/// tracked like the unfragmented packets of its flow; classify undoes that for one that an
/// all-ports VIP takes statelessly.
#[inline(always)]
fn hash_flow(slot: &mut Pending) {
    let meta = &slot.meta;
    let (hash, track) = match &meta.icmp_error {
        Some(err) => (err.flow.flow_hash(), false),
        None => match meta.fragment {
            Fragment::None | Fragment::First => (meta.tuple.flow_hash(), true),
            Fragment::TinyFirst | Fragment::NonFirst => (meta.tuple.fragment_hash(), false),
        },
    };
    slot.hash = hash;
    slot.track = track;
    slot.frag = FragStep::None;
}

/// The identity of the datagram a fragment belongs to.
#[inline(always)]
fn datagram(meta: &IpMeta) -> DatagramKey {
    DatagramKey {
        src: meta.tuple.src,
        dst: meta.tuple.dst,
        id: meta.frag_id,
        proto: meta.tuple.proto,
    }
}

/// Pass 1d for one parsed packet: its VIP, or `Exception` when it is for none, or a drop
/// (not counted yet) for a fragment no rule may balance.
///
/// Fragments (see `classify.rs` and `frag.rs`): a first fragment is classified by its
/// ports; one for an exact VIP is balanced like its flow and recorded so that the later
/// fragments follow it, one for another port of a VIP address is the kernel's (and so are
/// its later fragments). Later fragments are resolved in pass 3, after the first fragments
/// of the same burst have been recorded.
#[inline(always)]
fn classify(
    snap: &Snapshot,
    stats: &WorkerStats,
    fragments: &mut FragmentTable,
    slot: &mut Pending,
    now: u64,
) -> Verdict {
    let meta = &slot.meta;
    let (key, fragment) = match &meta.icmp_error {
        Some(err) => (&err.flow, Fragment::None),
        None => (&meta.tuple, meta.fragment),
    };
    let classifier = &snap.classifier;
    let vip = match fragment {
        Fragment::None => match classifier.lookup(&key.dst, key.dst_port, key.proto) {
            Some(vip) => vip,
            None => return Verdict::Exception,
        },
        Fragment::First => {
            match classifier.lookup_first_fragment(&key.dst, key.dst_port, key.proto) {
                FirstFragmentClass::NoVip => return Verdict::Exception,
                FirstFragmentClass::Exact(vip) => {
                    slot.frag = FragStep::Record;
                    vip
                }
                FirstFragmentClass::AllPorts(vip) => {
                    stateless(slot);
                    vip
                }
                FirstFragmentClass::OtherPort => {
                    fragments.insert(datagram(meta), FirstFragment::Kernel, now);
                    return Verdict::Exception;
                }
            }
        }
        Fragment::TinyFirst => match classifier.fragment_class(&key.dst, key.proto) {
            FragmentClass::NoVip => return Verdict::Exception,
            FragmentClass::AllPorts(vip) => {
                stateless(slot);
                vip
            }
            FragmentClass::PortsOnly => {
                stats.fragments.inc();
                return Verdict::Drop(DropReason::FragmentTooShort);
            }
        },
        Fragment::NonFirst => match classifier.fragment_class(&key.dst, key.proto) {
            FragmentClass::NoVip => return Verdict::Exception,
            FragmentClass::AllPorts(vip) => {
                slot.frag = FragStep::Follow(Some(vip));
                vip
            }
            FragmentClass::PortsOnly => {
                slot.frag = FragStep::Follow(None);
                0
            }
        },
    };
    if fragment != Fragment::None {
        stats.fragments.inc();
    }
    slot.vip_index = vip;
    Verdict::Forward
}

/// An all-ports VIP's fragment: hashed on (source, destination, protocol), not tracked, so
/// every fragment of the datagram reaches the same backend in any order.
#[inline(always)]
fn stateless(slot: &mut Pending) {
    slot.hash = slot.meta.tuple.fragment_hash();
    slot.track = false;
}

impl Router {
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
        let vip = snap.vips.get(p.vip_index as usize)?;
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
        let mut followed = None;
        if let FragStep::Follow(all_ports) = p.frag {
            match self.follow_first(snap, p, all_ports, now) {
                Ok(backend) => followed = backend,
                Err(verdict) => return verdict,
            }
        }
        let Some(vip) = snap.vips.get(p.vip_index as usize) else {
            return Verdict::Drop(DropReason::NoVip);
        };
        let vip_id = vip.id;
        let encap_mode = vip.encap;
        let backend_id = match followed {
            Some(backend) => backend,
            None => match self.backend_for(snap, stats, p, vip_id, now) {
                Some(backend) => backend,
                None => return Verdict::Drop(DropReason::NoBackend),
            },
        };
        if p.frag == FragStep::Record {
            let first = FirstFragment::Backend {
                vip_index: p.vip_index,
                vip_id,
                backend: backend_id,
                hash: p.hash,
            };
            self.fragments.insert(datagram(&p.meta), first, now);
        }
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

    /// A later fragment: the backend its first fragment got (`Ok(Some)`, with the VIP and
    /// hash in `p`), the all-ports VIP's stateless pick when the first was not seen
    /// (`Ok(None)`, `p.vip_index` is already that VIP), or where else it goes.
    #[cold]
    fn follow_first(
        &mut self,
        snap: &Snapshot,
        p: &mut Pending,
        all_ports: Option<VipIndex>,
        now: u64,
    ) -> Result<Option<u32>, Verdict> {
        match self.fragments.lookup(&datagram(&p.meta), now) {
            Some(FirstFragment::Kernel) => Err(Verdict::Exception),
            Some(FirstFragment::Backend {
                vip_index,
                vip_id,
                backend,
                hash,
            }) => {
                // The snapshot may have changed since the first fragment: the VIP must still
                // be the same one, and the backend still take its flows.
                let same_vip = snap
                    .vips
                    .get(usize::from(vip_index))
                    .is_some_and(|v| v.id == vip_id);
                let keeps = snap
                    .backend(backend)
                    .is_some_and(|b| b.vip_id == vip_id && b.keeps_flows());
                if !(same_vip && keeps) {
                    return Err(Verdict::Drop(DropReason::NoBackend));
                }
                p.vip_index = vip_index;
                p.hash = hash;
                Ok(Some(backend))
            }
            None if all_ports.is_some() => Ok(None),
            None => Err(Verdict::Drop(DropReason::FragmentNoFirst)),
        }
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
        snapshot_of(&["192.0.2.10:80/tcp"], false)
    }

    /// VIP i of `keys` has id 7 + i and backends 198.51.100.{3i+1..3i+3} (ids 3i+1..3i+3).
    fn snapshot_of(keys: &[&str], promiscuous: bool) -> Snapshot {
        let vips: Vec<VipSpec> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| vip_spec(7 + i as u32, key, 3 * i as u32))
            .collect();
        let port = PortInfo {
            mac: PORT_MAC,
            mtu: 1500,
            src_v4: Some(Ipv4Addr::new(203, 0, 113, 2)),
            src_v6: Some("2001:db8:1::2".parse().unwrap()),
            gateway_mac: Some([2, 0, 0, 0, 0, 1]),
            promiscuous,
        };
        snapshot::build(1, &vips, &[port], None).unwrap()
    }

    fn vip_spec(id: u32, key: &str, first_backend: u32) -> VipSpec {
        VipSpec {
            id,
            key: key.parse().unwrap(),
            encap: EncapMode::Ipip,
            gue_port: 6080,
            table_size: 251,
            backends: (first_backend + 1..=first_backend + 3)
                .map(|b| BackendSpec {
                    id: b,
                    addr: format!("198.51.100.{b}").parse().unwrap(),
                    weight: 1,
                    state: BackendState::Active,
                    mac: None,
                })
                .collect(),
        }
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

    /// Client `i`'s fragment of datagram `id` to `dst` over `proto`: the first (offset 0)
    /// carries a TCP header to `dst_port` when `proto` is TCP (16 bytes of data follow), a
    /// later one 24 bytes at offset 5 (40 bytes).
    fn fragment4(i: u8, id: u16, proto: u8, dst_port: u16, first: bool) -> VecPacket {
        let v4 = V4 {
            more_fragments: first,
            frag_offset: if first { 0 } else { 5 },
            ident: id,
            ..V4::default()
        };
        let payload = if first {
            let mut h = vec![0u8; 20];
            h[0..2].copy_from_slice(&(40000 + u16::from(i)).to_be_bytes());
            h[2..4].copy_from_slice(&dst_port.to_be_bytes());
            h[12] = 5 << 4;
            h[13] = wire::tcp::flags::SYN;
            h.extend_from_slice(&[0xab; 16]);
            if proto == crate::flow::proto::UDP {
                h.truncate(24);
            }
            h
        } else {
            vec![0xcd; 24]
        };
        let ip = ipv4([198, 51, 100, i], VIP4, 64, &v4);
        VecPacket::new(&frame(None, ip, L4::Raw(proto), &payload))
    }

    /// The outer (backend) address of an IPIP-encapsulated frame.
    fn backend_of(pkt: &VecPacket) -> [u8; 4] {
        pkt.data()[30..34].try_into().unwrap()
    }

    fn run(p: &mut Pipeline, snap: &Snapshot, pkts: &mut [VecPacket], now: u64) -> Vec<Verdict> {
        let mut verdicts = vec![Verdict::Exception; pkts.len()];
        p.process_burst(snap, 0, pkts, &mut verdicts, now);
        verdicts
    }

    #[test]
    fn a_fragmented_datagram_to_the_vip_port_follows_its_flow_to_one_backend() {
        let snap = snapshot();
        let mut p = pipeline();
        for i in 1..=30u8 {
            // The flow's unfragmented SYN, then a fragmented segment of the same flow: first
            // and later fragment in one burst, and a later fragment in a burst of its own.
            let mut whole = [packet(i, 80, true)];
            assert_eq!(run(&mut p, &snap, &mut whole, 10), [Verdict::Forward]);
            let mut frags = [
                fragment4(i, u16::from(i), 6, 80, true),
                fragment4(i, u16::from(i), 6, 80, false),
            ];
            assert_eq!(run(&mut p, &snap, &mut frags, 11), [Verdict::Forward; 2]);
            let mut late = [fragment4(i, u16::from(i), 6, 80, false)];
            assert_eq!(run(&mut p, &snap, &mut late, 12), [Verdict::Forward]);
            let b = backend_of(&whole[0]);
            assert_eq!(
                backend_of(&frags[0]),
                b,
                "first fragment: the flow's backend"
            );
            assert_eq!(
                backend_of(&frags[1]),
                b,
                "later fragment: its first's backend"
            );
            assert_eq!(backend_of(&late[0]), b);
        }
        let s = p.stats();
        assert_eq!(s.fragments.get(), 90);
        assert_eq!(
            s.conntrack_hits.get(),
            30,
            "first fragments found their flows"
        );
        assert_eq!(s.conntrack_inserts.get(), 30);
        let used: Vec<u64> = (1..=3).map(|b| s.backend[b].packets.get()).collect();
        assert!(used.iter().all(|&n| n > 0), "{used:?}");
    }

    #[test]
    fn a_fragmented_datagram_to_another_port_of_the_vip_address_goes_to_the_kernel_whole() {
        let snap = snapshot();
        let mut p = pipeline();
        // A SYN to port 22 of the :80 VIP's address, in two fragments, in either burst layout.
        let mut both = [fragment4(1, 9, 6, 22, true), fragment4(1, 9, 6, 22, false)];
        assert_eq!(run(&mut p, &snap, &mut both, 1), [Verdict::Exception; 2]);
        let mut first = [fragment4(2, 9, 6, 22, true)];
        assert_eq!(run(&mut p, &snap, &mut first, 2), [Verdict::Exception]);
        let mut later = [fragment4(2, 9, 6, 22, false)];
        assert_eq!(run(&mut p, &snap, &mut later, 3), [Verdict::Exception]);
        let s = p.stats();
        assert_eq!(s.vip[7].packets.get(), 0, "nothing reached a backend");
        assert_eq!(s.conntrack_inserts.get(), 0);
    }

    #[test]
    fn later_fragments_without_their_first_and_tiny_first_fragments_are_dropped() {
        let snap = snapshot();
        let mut p = pipeline();
        // A later fragment never preceded by its first (nor preceded in its burst).
        let mut orphans = [fragment4(1, 5, 6, 80, false), fragment4(1, 5, 6, 80, true)];
        assert_eq!(
            run(&mut p, &snap, &mut orphans, 1),
            [Verdict::Drop(DropReason::FragmentNoFirst), Verdict::Forward]
        );
        // Expired: the first fragment was seen more than the timeout ago.
        let timeout = 1000 * FRAGMENT_TIMEOUT_SECS;
        let mut stale = [fragment4(1, 5, 6, 80, false)];
        assert_eq!(
            run(&mut p, &snap, &mut stale, 1 + timeout),
            [Verdict::Drop(DropReason::FragmentNoFirst)]
        );
        // 8 bytes of TCP: ports, no flags; the rule on ports cannot be trusted with it.
        let v4 = V4 {
            more_fragments: true,
            ident: 6,
            ..V4::default()
        };
        let tiny = frame(
            None,
            ipv4(CLIENT4, VIP4, 64, &v4),
            L4::Raw(6),
            &[0, 1, 0, 80, 0, 0, 0, 0],
        );
        let mut tiny = [VecPacket::new(&tiny)];
        assert_eq!(
            run(&mut p, &snap, &mut tiny, 2),
            [Verdict::Drop(DropReason::FragmentTooShort)]
        );
        let s = p.stats();
        assert_eq!(s.drops[DropReason::FragmentNoFirst as usize].get(), 2);
        assert_eq!(s.drops[DropReason::FragmentTooShort as usize].get(), 1);
        assert_eq!(s.vip[7].packets.get(), 1);
    }

    #[test]
    fn an_all_ports_vip_takes_fragments_in_any_order() {
        let snap = snapshot_of(&["192.0.2.10:0/udp", "192.0.2.10:80/tcp"], false);
        let mut p = pipeline();
        for i in 1..=20u8 {
            // Later fragment first: no first fragment seen, the all-ports VIP takes it.
            let mut frags = [
                fragment4(i, 100, 17, 53, false),
                fragment4(i, 100, 17, 53, true),
            ];
            assert_eq!(run(&mut p, &snap, &mut frags, 1), [Verdict::Forward; 2]);
            assert_eq!(backend_of(&frags[0]), backend_of(&frags[1]));
        }
        assert_eq!(p.stats().vip[7].packets.get(), 40);
        assert_eq!(p.stats().conntrack_inserts.get(), 0, "stateless");
        // The :80/tcp VIP of the same address keeps the port rule for TCP.
        let mut ssh = [fragment4(1, 7, 6, 22, true), fragment4(1, 7, 6, 22, false)];
        assert_eq!(run(&mut p, &snap, &mut ssh, 2), [Verdict::Exception; 2]);
    }

    #[test]
    fn frames_to_other_macs_are_not_balanced_unless_the_port_is_promiscuous() {
        let snap = snapshot();
        let mut p = pipeline();
        let to = |mac: [u8; 6]| {
            let mut pkt = packet(1, 80, true);
            pkt.data_mut()[0..6].copy_from_slice(&mac);
            pkt
        };
        let other = [0x02, 0x99, 0, 0, 0, 1];
        let mut pkts = [
            to(PORT_MAC),
            to(other),
            to([0xff; 6]),
            to([0x33, 0x33, 0, 0, 0, 1]),
        ];
        assert_eq!(
            run(&mut p, &snap, &mut pkts, 1),
            [
                Verdict::Forward,
                Verdict::Drop(DropReason::NotOurMac),
                Verdict::Exception,
                Verdict::Exception
            ]
        );
        assert_eq!(p.stats().drops[DropReason::NotOurMac as usize].get(), 1);
        assert_eq!(p.stats().vip[7].packets.get(), 1);
        let promiscuous = snapshot_of(&["192.0.2.10:80/tcp"], true);
        let mut pkts = [to(other)];
        assert_eq!(run(&mut p, &promiscuous, &mut pkts, 2), [Verdict::Forward]);
    }
}
