//! The pipeline's flow semantics, without DPDK: tracked flows keep their backend across
//! changes while it exists and keeps flows (active with weight, or draining); flows whose
//! backend was removed or went down get a fresh Maglev pick.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use common::golden::{tcp_frame, ACK, LB_MAC, SYN};
use fulcrum::datapath::encap::EncapMode;
use fulcrum::datapath::pipeline::{Pipeline, PipelineConfig, Verdict};
use fulcrum::datapath::stats::WorkerStats;
use fulcrum::packet::{PacketBuf, VecPacket};
use fulcrum::snapshot::{self, BackendSpec, BackendState, PortInfo, Snapshot, VipSpec};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fn port() -> PortInfo {
    PortInfo {
        mac: LB_MAC,
        mtu: 1500,
        src_v4: Some(Ipv4Addr::new(203, 0, 113, 2)),
        src_v6: None,
        gateway_mac: Some([2, 0, 0, 0, 0, 1]),
        promiscuous: false,
    }
}

fn spec(backends: &[(u32, &str, u32, BackendState)]) -> VipSpec {
    VipSpec {
        id: 0,
        key: "192.0.2.10:80/tcp".parse().unwrap(),
        encap: EncapMode::Ipip,
        gue_port: 6080,
        table_size: 65537,
        backends: backends
            .iter()
            .map(|&(id, a, weight, state)| BackendSpec {
                id,
                addr: a.parse().unwrap(),
                weight,
                state,
                mac: None,
            })
            .collect(),
    }
}

fn snap(
    version: u64,
    backends: &[(u32, &str, u32, BackendState)],
    prev: Option<&Snapshot>,
) -> Snapshot {
    snapshot::build(version, &[spec(backends)], &[port()], prev).unwrap()
}

fn pipeline() -> Pipeline {
    Pipeline::new(
        &PipelineConfig {
            conntrack_flows: 1 << 16,
            idle_timeout: 1_000_000,
            ticks_per_second: 1_000,
            icmp_rate: 100,
        },
        Arc::new(WorkerStats::new(0, 1)),
    )
    .unwrap()
}

/// Sends one packet of each of `flows` flows; returns each one's backend (outer destination).
fn send(p: &mut Pipeline, s: &Snapshot, flows: u32, now: u64) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for chunk in (0..flows).collect::<Vec<_>>().chunks(32) {
        let mut pkts: Vec<VecPacket> = chunk
            .iter()
            .map(|&i| {
                let client = IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i));
                VecPacket::new(&tcp_frame(
                    client,
                    IpAddr::V4(VIP),
                    1024 + i as u16,
                    80,
                    if now == 0 { SYN } else { ACK },
                    b"",
                ))
            })
            .collect();
        let mut verdicts = vec![Verdict::Exception; pkts.len()];
        p.process_burst(s, 0, &mut pkts, &mut verdicts, now);
        for (pkt, v) in pkts.iter().zip(&verdicts) {
            assert_eq!(*v, Verdict::Forward);
            let d = pkt.data();
            // Ethernet 14 + outer IPv4: destination at 16..20.
            out.push(IpAddr::V4(Ipv4Addr::new(d[30], d[31], d[32], d[33])));
        }
    }
    out
}

const B1: &str = "198.51.100.1";
const B2: &str = "198.51.100.2";
const B3: &str = "198.51.100.3";

#[test]
fn tracked_flows_keep_their_backend_when_another_is_added() {
    use BackendState::*;
    let mut p = pipeline();
    let s1 = snap(1, &[(0, B1, 1, Active), (1, B2, 1, Active)], None);
    let before = send(&mut p, &s1, 2000, 0);
    let s2 = snap(
        2,
        &[(0, B1, 1, Active), (1, B2, 1, Active), (2, B3, 1, Active)],
        Some(&s1),
    );
    let after = send(&mut p, &s2, 2000, 10);
    assert_eq!(before, after, "no tracked flow moved to the new backend");
    // A fresh pipeline (no conntrack) would have moved about a third of them.
    let fresh = send(&mut pipeline(), &s2, 2000, 10);
    let moved = before.iter().zip(&fresh).filter(|(a, b)| a != b).count();
    assert!(
        moved > 400,
        "Maglev alone moves flows to the new backend: {moved}"
    );
}

#[test]
fn draining_keeps_flows_down_and_removed_repick() {
    use BackendState::*;
    let s1 = snap(
        1,
        &[(0, B1, 1, Active), (1, B2, 1, Active), (2, B3, 1, Active)],
        None,
    );
    let b2 = IpAddr::V4(B2.parse().unwrap());

    // Draining: flows on B2 stay; no new flow goes there.
    let mut p = pipeline();
    let before = send(&mut p, &s1, 3000, 0);
    let on_b2 = before.iter().filter(|b| **b == b2).count();
    assert!(on_b2 > 500);
    let s2 = snap(
        2,
        &[(0, B1, 1, Active), (1, B2, 1, Draining), (2, B3, 1, Active)],
        Some(&s1),
    );
    assert_eq!(
        send(&mut p, &s2, 3000, 10),
        before,
        "drained backend keeps its flows"
    );
    let mut fresh = pipeline();
    assert!(
        send(&mut fresh, &s2, 3000, 10).iter().all(|b| *b != b2),
        "no new flows to a drained backend"
    );

    // Down: its flows get a fresh pick; everyone else stays.
    let s3 = snap(
        3,
        &[(0, B1, 1, Active), (1, B2, 1, Down), (2, B3, 1, Active)],
        Some(&s2),
    );
    let after = send(&mut p, &s3, 3000, 20);
    for (b, a) in before.iter().zip(&after) {
        if *b == b2 {
            assert_ne!(*a, b2, "a flow of a down backend moves");
        } else {
            assert_eq!(a, b, "other flows stay");
        }
    }

    // Removed: same as down.
    let mut p = pipeline();
    let before = send(&mut p, &s1, 3000, 0);
    let s4 = snap(4, &[(0, B1, 1, Active), (2, B3, 1, Active)], Some(&s1));
    let after = send(&mut p, &s4, 3000, 10);
    for (b, a) in before.iter().zip(&after) {
        if *b == b2 {
            assert_ne!(*a, b2);
        } else {
            assert_eq!(a, b);
        }
    }
    assert!(p.stats().conntrack_repicks.get() > 500);
}

#[test]
fn idle_flows_expire_and_rebalance() {
    use BackendState::*;
    let mut p = pipeline();
    let s1 = snap(1, &[(0, B1, 1, Active), (1, B2, 1, Active)], None);
    let before = send(&mut p, &s1, 1000, 0);
    let s2 = snap(
        2,
        &[(0, B1, 1, Active), (1, B2, 1, Active), (2, B3, 1, Active)],
        Some(&s1),
    );
    // Long after the idle timeout, tracked flows are forgotten: Maglev decides again.
    let after = send(&mut p, &s2, 1000, 10_000_000);
    let fresh = send(&mut pipeline(), &s2, 1000, 0);
    assert_eq!(after, fresh);
    assert_ne!(before, after);
    assert!(p.stats().conntrack_expiries.get() > 0 || p.stats().conntrack_misses.get() >= 2000);
}
