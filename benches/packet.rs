//! Per-packet cost of the classifier and of encapsulation, on an Ethernet/IPv4/TCP packet
//! (the common case) and a VLAN-tagged IPv6/TCP one.
//!
//! `cargo bench --bench packet`. Each encapsulation iteration restores the original frame
//! in place (drop the outer headers, rewrite the Ethernet header), so no allocation or copy
//! of the whole packet is measured.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fulcrum::datapath::encap::{self, EncapMode, EncapParams};
use fulcrum::frames;
use fulcrum::packet::{PacketBuf, VecPacket};
use fulcrum::wire::{self, Family, Parsed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

const PORT_MAC: [u8; 6] = [0x02, 0xfb, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 7];

/// An Ethernet/IPv4/TCP segment with 64 bytes of payload, DF set, from a client to a VIP.
fn ipv4_tcp() -> Vec<u8> {
    let o = frames::V4 {
        df: true,
        ..frames::V4::default()
    };
    let tcp = frames::tcp(40000, 80, frames::ACK, &[0; 64]);
    let ip = frames::ipv4(
        Ipv4Addr::new(198, 51, 100, 7),
        Ipv4Addr::new(192, 0, 2, 10),
        frames::TCP,
        o,
        &tcp,
    );
    frames::ethernet(PORT_MAC, CLIENT_MAC, frames::ETHERTYPE_IPV4, &ip)
}

/// A VLAN-tagged Ethernet/IPv6/TCP segment with 64 bytes of payload.
fn ipv6_tcp_tagged() -> Vec<u8> {
    let tcp = frames::tcp(40000, 443, 0, &[0; 64]);
    let ip = frames::ipv6(
        Ipv6Addr::new(0x2001, 0xdb8, 0xc1, 0, 0, 0, 0, 7),
        Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x10),
        frames::TCP,
        64,
        &tcp,
    );
    let tagged = frames::vlan(100, frames::ETHERTYPE_IPV6, &ip);
    frames::ethernet(PORT_MAC, CLIENT_MAC, frames::ETHERTYPE_VLAN, &tagged)
}

fn params(mode: EncapMode, backend: IpAddr) -> EncapParams {
    EncapParams {
        mode,
        port_mac: PORT_MAC,
        next_hop_mac: [0x02, 0xee, 0, 0, 0, 0x99],
        src_v4: Some(Ipv4Addr::new(203, 0, 113, 5)),
        src_v6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0xfb, 0, 0, 0, 0, 5)),
        backend,
        gue_port: encap::GUE_DEFAULT_PORT,
        flow_hash: 0x9e37_79b9_7f4a_7c15,
    }
}

fn parse_and_encap(c: &mut Criterion, name: &str, frame: &[u8], p: EncapParams) {
    let mut pkt = VecPacket::new(frame);
    let l2_len = if frame[12] == 0x81 { 18 } else { 14 };
    let outer = Family::of(&p.backend);
    let grow = encap::overhead(p.mode, outer);
    c.bench_function(name, |b| {
        b.iter(|| {
            let Ok(Parsed::Ip(meta)) = wire::parse(black_box(pkt.data())) else {
                panic!("bench frame must parse")
            };
            encap::encap(&mut pkt, &meta, black_box(&p)).expect("encap");
            // Undo: drop the outer headers, put the original L2 header back.
            pkt.adj(grow);
            pkt.data_mut()[..l2_len].copy_from_slice(&frame[..l2_len]);
        })
    });
    assert_eq!(pkt.data(), frame, "{name}: the undo must restore the frame");
}

fn benches(c: &mut Criterion) {
    let v4 = ipv4_tcp();
    let v6 = ipv6_tcp_tagged();
    c.bench_function("parse/ipv4_tcp", |b| b.iter(|| wire::parse(black_box(&v4))));
    c.bench_function("parse/ipv6_tcp_vlan", |b| {
        b.iter(|| wire::parse(black_box(&v6)))
    });
    let backend4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 21));
    let backend6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xbe, 0, 0, 0, 0, 21));
    parse_and_encap(
        c,
        "parse_then_ipip/ipv4_in_ipv4",
        &v4,
        params(EncapMode::Ipip, backend4),
    );
    parse_and_encap(
        c,
        "parse_then_gue/ipv4_in_ipv4",
        &v4,
        params(EncapMode::Gue, backend4),
    );
    parse_and_encap(
        c,
        "parse_then_gue/ipv6_in_ipv6",
        &v6,
        params(EncapMode::Gue, backend6),
    );
    parse_and_encap(
        c,
        "parse_then_l2dsr/ipv4",
        &v4,
        params(EncapMode::L2Dsr, backend4),
    );
}

criterion_group! {
    name = packet;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(packet);
