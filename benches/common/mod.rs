//! What the pipeline benchmarks share: the traffic `scripts/gen-traffic` writes (64-byte
//! IPv4/TCP frames to one VIP with three backends), the snapshot, and the reload of a
//! burst's frames.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::sync::Arc;

use fulcrum::datapath::encap::{EncapMode, GUE_DEFAULT_PORT};
use fulcrum::datapath::pipeline::{Pipeline, PipelineConfig};
use fulcrum::datapath::stats::WorkerStats;
use fulcrum::frames::{self, V4};
use fulcrum::packet::{PacketBuf, VecPacket};
use fulcrum::snapshot::{self, BackendSpec, BackendState, PortInfo, Snapshot, VipSpec};

pub const BURST: usize = 32;
pub const FRAME: usize = 64;
pub const PORT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x1b];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];

/// Flow `i` of `scripts/gen-traffic --flows N`: client 198.18.0.0/15, ports from 1024, to
/// 192.0.2.10:80, TCP ACK, DF, 64 bytes: the IPv4 total length covers all 50 bytes after
/// the Ethernet header (10 of them TCP payload), as gen-traffic writes them.
pub fn frame(i: u32) -> [u8; FRAME] {
    let client = Ipv4Addr::from(0xc612_0000u32 + i % 131_072);
    let sport = 1024 + ((i / 131_072 * 7919 + i) % 64_512) as u16;
    let ip = frames::ipv4(
        client,
        Ipv4Addr::new(192, 0, 2, 10),
        frames::TCP,
        V4 {
            ttl: 64,
            df: true,
            id: i as u16,
            ..V4::default()
        },
        &frames::tcp(sport, 80, frames::ACK, &[0; FRAME - 54]),
    );
    let bytes = frames::ethernet(PORT_MAC, CLIENT_MAC, frames::ETHERTYPE_IPV4, &ip);
    bytes.try_into().expect("a 64-byte frame")
}

pub fn port() -> PortInfo {
    PortInfo {
        mac: PORT_MAC,
        mtu: 1500,
        src_v4: Some(Ipv4Addr::new(203, 0, 113, 2)),
        src_v6: None,
        gateway_mac: Some([0x02, 0, 0, 0, 0, 1]),
        promiscuous: false,
    }
}

/// The benchmark configuration's VIP: three backends of weights 1, 2, 3.
pub fn vip(mode: EncapMode, table_size: u32) -> VipSpec {
    VipSpec {
        id: 0,
        key: "192.0.2.10:80/tcp".parse().expect("vip"),
        encap: mode,
        gue_port: GUE_DEFAULT_PORT,
        table_size,
        backends: (1..=3u8)
            .map(|b| BackendSpec {
                id: u32::from(b),
                addr: format!("198.51.100.{}", 10 + b).parse().expect("backend"),
                weight: u32::from(b),
                state: BackendState::Active,
                mac: Some([0x02, 0xbe, 0, 0, 0, b]),
            })
            .collect(),
    }
}

pub fn snapshot(mode: EncapMode) -> Snapshot {
    snapshot::build(1, &[vip(mode, 65_537)], &[port()], None).expect("snapshot")
}

/// A worker's pipeline with a table of `conntrack_flows` and flows that never expire.
pub fn pipeline(conntrack_flows: usize) -> Pipeline {
    let cfg = PipelineConfig {
        conntrack_flows,
        idle_timeout: u64::MAX / 4,
        ticks_per_second: 1_000_000_000,
        icmp_rate: 1000,
    };
    Pipeline::new(&cfg, Arc::new(WorkerStats::new(0, 1))).expect("pipeline")
}

/// Puts `bytes` back into `p` at the default headroom, whatever encapsulation did to it.
#[inline]
pub fn reload(p: &mut VecPacket, bytes: &[u8]) {
    let len = p.len();
    p.adj(len);
    let back = p.headroom() - VecPacket::DEFAULT_HEADROOM;
    p.prepend(back);
    p.trim(back.saturating_sub(bytes.len()));
    if let Some(tail) = bytes.len().checked_sub(back) {
        p.append(tail);
    }
    p.data_mut().copy_from_slice(bytes);
}
