//! What happens to one packet: parse -> classify -> conntrack -> select -> encap.
//!
//! Pure logic over [`PacketBuf`], so it is tested with `VecPacket` and no EAL; the worker
//! (`worker.rs`) feeds it mbufs. A burst is processed in two passes: the first parses,
//! classifies and hashes every packet and prefetches its conntrack bucket; the second, by the
//! time those cache lines have arrived, looks flows up, picks backends and rewrites packets.

use std::sync::Arc;

use crate::conntrack::{ConnTable, ConnTableError, FlowValue, InsertResult};
use crate::encap::{self, EncapMode, EncapParams};
use crate::flow::FiveTuple;
use crate::icmp_reply::{self, IcmpRateLimiter};
use crate::packet::PacketBuf;
use crate::snapshot::Snapshot;
use crate::stats::{DropReason, WorkerStats};
use crate::wire::{self, Family, Fragment, IpMeta, Parsed};

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

/// Per-packet state carried from the first pass to the second.
#[derive(Clone, Copy)]
struct Pending {
    meta: IpMeta,
    /// The flow the packet belongs to (for an ICMP error: the flow it quotes).
    key: FiveTuple,
    hash: u64,
    vip: u16,
    /// Whether the flow goes through conntrack (not fragments, not ICMP errors).
    track: bool,
}

/// One worker's pipeline: its conntrack table and rate limiter, and its counters.
pub struct Pipeline {
    conntrack: ConnTable,
    limiter: IcmpRateLimiter,
    stats: Arc<WorkerStats>,
    pending: [Option<Pending>; crate::dpdk::BURST],
    last_ct: crate::conntrack::ConnTableStats,
}

impl Pipeline {
    pub fn new(cfg: &PipelineConfig, stats: Arc<WorkerStats>) -> Result<Pipeline, ConnTableError> {
        Ok(Pipeline {
            conntrack: ConnTable::new(cfg.conntrack_flows, cfg.idle_timeout)?,
            limiter: IcmpRateLimiter::new(
                cfg.icmp_rate,
                cfg.icmp_rate.max(1),
                cfg.ticks_per_second,
            ),
            stats,
            pending: [None; crate::dpdk::BURST],
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
        // Pass 1: parse, classify, hash, prefetch.
        for i in 0..n {
            if let Some(next) = pkts.get(i + 2) {
                next.prefetch();
            }
            let (verdict, pending) = match (pkts.get(i), self.pending.get(i)) {
                (Some(p), Some(_)) => self.classify(snap, p.data()),
                _ => (Verdict::Drop(DropReason::Buffer), None),
            };
            if let Some(v) = verdicts.get_mut(i) {
                *v = verdict;
            }
            if let Some(p) = &pending {
                if p.track {
                    self.conntrack.prefetch(p.hash);
                }
            }
            if let Some(slot) = self.pending.get_mut(i) {
                *slot = pending;
            } else {
                self.stats.count_drop(DropReason::Buffer);
            }
        }
        // Pass 2: conntrack, select, encapsulate.
        for i in 0..n {
            let Some(Some(p)) = self.pending.get(i).copied() else {
                continue;
            };
            let (Some(pkt), Some(v)) = (pkts.get_mut(i), verdicts.get_mut(i)) else {
                continue;
            };
            *v = self.forward(snap, port, pkt, &p, now);
            if let Verdict::Drop(reason) = *v {
                if reason != DropReason::Parse {
                    self.stats.count_drop(reason);
                }
            }
        }
        self.mirror_conntrack_stats();
    }

    /// Idle-time work: sweep expired flows.
    pub fn housekeeping(&mut self, now: u64) {
        self.conntrack.expire_some(now, 256);
        self.mirror_conntrack_stats();
    }

    fn mirror_conntrack_stats(&mut self) {
        let s = self.conntrack.stats();
        if s == self.last_ct {
            return;
        }
        self.last_ct = s;
        self.stats.conntrack_hits.set(s.hits);
        self.stats.conntrack_misses.set(s.misses);
        self.stats.conntrack_inserts.set(s.inserts);
        self.stats.conntrack_evictions.set(s.evictions);
        self.stats.conntrack_expiries.set(s.expiries);
        self.stats.conntrack_flows.set(self.conntrack.len() as u64);
    }

    /// Pass 1 for one frame.
    #[inline]
    fn classify(&self, snap: &Snapshot, frame: &[u8]) -> (Verdict, Option<Pending>) {
        let meta = match wire::parse(frame) {
            Ok(Parsed::Ip(meta)) => meta,
            Ok(Parsed::NotIp { .. }) => return (Verdict::Exception, None),
            Err(e) => {
                self.stats.parse_drop(e as usize);
                return (Verdict::Drop(DropReason::Parse), None);
            }
        };
        let (key, fragment, track) = match &meta.icmp_error {
            Some(err) => (err.flow, Fragment::None, false),
            None => (meta.tuple, meta.fragment, meta.fragment == Fragment::None),
        };
        let vip = if fragment == Fragment::None {
            snap.classifier.lookup(&key.dst, key.dst_port, key.proto)
        } else {
            snap.classifier.lookup_fragment(&key.dst, key.proto)
        };
        let Some(vip) = vip else {
            return (Verdict::Exception, None);
        };
        let hash = if fragment == Fragment::None {
            key.flow_hash()
        } else {
            self.stats.fragments.inc();
            key.fragment_hash()
        };
        (
            Verdict::Forward,
            Some(Pending {
                meta,
                key,
                hash,
                vip,
                track,
            }),
        )
    }

    /// The backend id for a flow: its tracked backend if that still keeps flows, else a fresh
    /// Maglev pick (recorded in conntrack).
    #[inline]
    fn backend_for(&mut self, snap: &Snapshot, p: &Pending, vip_id: u32, now: u64) -> Option<u32> {
        let vip = snap.vips.get(p.vip as usize)?;
        if !p.track {
            // Fragments and ICMP errors: follow a tracked flow if there is one, never create one.
            if p.meta.icmp_error.is_some() {
                if let Some(v) = self.conntrack.peek(&p.key, p.hash, now) {
                    if snap
                        .backend(v.backend)
                        .is_some_and(|b| b.vip_id == vip_id && b.keeps_flows())
                    {
                        return Some(v.backend);
                    }
                }
            }
            return vip.pick(p.hash);
        }
        if let Some(v) = self.conntrack.lookup(&p.key, p.hash, now) {
            if snap
                .backend(v.backend)
                .is_some_and(|b| b.vip_id == vip_id && b.keeps_flows())
            {
                return Some(v.backend);
            }
            self.stats.conntrack_repicks.inc();
        }
        let picked = vip.pick(p.hash)?;
        let value = FlowValue {
            backend: picked,
            vip: vip_id as u16,
            flags: 0,
        };
        if let InsertResult::Evicted { .. } = self.conntrack.insert(&p.key, p.hash, now, value) {
            // counted by the table itself
        }
        Some(picked)
    }

    /// Pass 2 for one packet.
    #[inline]
    fn forward<P: PacketBuf>(
        &mut self,
        snap: &Snapshot,
        port: usize,
        pkt: &mut P,
        p: &Pending,
        now: u64,
    ) -> Verdict {
        let Some(vip) = snap.vips.get(p.vip as usize) else {
            return Verdict::Drop(DropReason::NoVip);
        };
        let vip_id = vip.id;
        let (encap_mode, gue_port) = (vip.encap, vip.gue_port);
        let Some(backend_id) = self.backend_for(snap, p, vip_id, now) else {
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
            return self.too_big(snap, port, pkt, p, overhead, now);
        }
        let next_hop = match encap_mode {
            EncapMode::L2Dsr => backend.mac,
            _ => port_info.gateway_mac.or(backend.mac),
        };
        let Some(next_hop) = next_hop else {
            return Verdict::Drop(DropReason::NoNextHop);
        };
        let params = EncapParams {
            mode: encap_mode,
            port_mac: port_info.mac,
            next_hop_mac: next_hop,
            src_v4: port_info.src_v4,
            src_v6: port_info.src_v6,
            backend: backend.addr,
            gue_port,
            flow_hash: p.hash,
        };
        let len = pkt.len();
        if encap::encap(pkt, &p.meta, &params).is_err() {
            return Verdict::Drop(DropReason::Buffer);
        }
        if p.meta.icmp_error.is_some() {
            self.stats.icmp_errors_forwarded.inc();
        }
        if p.meta.tcp_flags & wire::tcp::flags::SYN != 0 {
            self.stats.syns.inc();
        }
        self.stats.vip_packet(vip_id, len);
        self.stats.backend_packet(backend_id, len);
        Verdict::Forward
    }

    /// The packet would not fit the port once encapsulated.
    #[cold]
    fn too_big<P: PacketBuf>(
        &mut self,
        snap: &Snapshot,
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
        if !self.limiter.allow(now) {
            return Verdict::Drop(DropReason::IcmpRateLimited);
        }
        let mtu = (port_info.mtu as usize).saturating_sub(overhead) as u32;
        if icmp_reply::too_big_reply(pkt, &p.meta, mtu).is_err() {
            return Verdict::Drop(DropReason::Mtu);
        }
        self.stats.icmp_too_big_sent.inc();
        Verdict::Reply
    }
}
