//! The classifier against etherparse as an oracle, a malformed corpus, and random frames.

use super::*;
use crate::wire::testutil::*;
use etherparse::{
    icmpv4, icmpv6, Icmpv4Type, Icmpv6Type, IpAuthHeader, IpNumber, Ipv6ExtensionSlice,
    Ipv6Extensions, Ipv6RawExtHeader, Ipv6RoutingExtensions, LaxNetSlice, LaxSlicedPacket,
    LinkSlice, NetSlice, SlicedPacket, TransportSlice, VlanSlice,
};

fn mapped4(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[10] = 0xff;
    out[11] = 0xff;
    out[12..].copy_from_slice(&a);
    out
}

fn offset_in(frame: &[u8], part: &[u8]) -> u16 {
    (part.as_ptr() as usize - frame.as_ptr() as usize) as u16
}

fn tcp_flags(t: &etherparse::TcpSlice) -> u8 {
    [
        t.fin(),
        t.syn(),
        t.rst(),
        t.psh(),
        t.ack(),
        t.urg(),
        t.ece(),
        t.cwr(),
    ]
    .iter()
    .enumerate()
    .fold(0, |acc, (bit, set)| acc | (u8::from(*set) << bit))
}

/// What etherparse says `parse` should return for a frame etherparse accepts.
fn oracle(frame: &[u8]) -> Parsed {
    let sliced = SlicedPacket::from_ethernet(frame).expect("etherparse accepts the frame");
    let Some(LinkSlice::Ethernet2(eth)) = &sliced.link else {
        panic!("not ethernet")
    };
    let (l2_len, vlan, ethertype) = match &sliced.vlan {
        Some(VlanSlice::SingleVlan(v)) => (18u8, Some(v.vlan_identifier().value()), v.ether_type()),
        None => (14, None, eth.ether_type()),
        Some(VlanSlice::DoubleVlan(_)) => panic!("tests build single tags only"),
    };
    let Some(net) = &sliced.net else {
        return Parsed::NotIp {
            ethertype: ethertype.0,
            l2_len,
            vlan,
        };
    };
    let mut meta = match net {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            let fragment = if h.fragments_offset().value() != 0 {
                Fragment::NonFirst
            } else if h.more_fragments() {
                Fragment::First
            } else {
                Fragment::None
            };
            IpMeta {
                l2_len,
                vlan,
                family: Family::V4,
                l3_offset: u16::from(l2_len),
                l4_offset: offset_in(frame, ip.payload().payload),
                ip_len: u32::from(h.total_len()),
                tuple: FiveTuple {
                    src: mapped4(h.source()),
                    dst: mapped4(h.destination()),
                    src_port: 0,
                    dst_port: 0,
                    proto: h.protocol().0,
                },
                fragment,
                frag_id: u32::from(h.identification()),
                dont_fragment: h.dont_fragment(),
                ttl_or_hop_limit: h.ttl(),
                tcp_flags: 0,
                icmp_error: None,
            }
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            // etherparse locates the fragment header; its offset and M flag are decoded
            // here (see `ipv6_fragment`).
            let frag = ip.extensions().clone().into_iter().find_map(|e| match e {
                Ipv6ExtensionSlice::Fragment(f) if rfc_fragment_fields(f.slice()) != (0, false) => {
                    Some(f)
                }
                _ => None,
            });
            let (fragment, frag_id, proto, l4_offset) = match &frag {
                Some(f) => (
                    if rfc_fragment_fields(f.slice()).0 != 0 {
                        Fragment::NonFirst
                    } else {
                        Fragment::First
                    },
                    f.identification(),
                    f.next_header().0,
                    offset_in(frame, f.slice()) + 8,
                ),
                None => (
                    Fragment::None,
                    0,
                    ip.payload().ip_number.0,
                    offset_in(frame, ip.payload().payload),
                ),
            };
            IpMeta {
                l2_len,
                vlan,
                family: Family::V6,
                l3_offset: u16::from(l2_len),
                l4_offset,
                ip_len: 40 + u32::from(h.payload_length()),
                tuple: FiveTuple {
                    src: h.source(),
                    dst: h.destination(),
                    src_port: 0,
                    dst_port: 0,
                    proto,
                },
                fragment,
                frag_id,
                dont_fragment: true,
                ttl_or_hop_limit: h.hop_limit(),
                tcp_flags: 0,
                icmp_error: None,
            }
        }
    };
    if meta.fragment == Fragment::None {
        match &sliced.transport {
            Some(TransportSlice::Tcp(t)) => {
                meta.tuple.src_port = t.source_port();
                meta.tuple.dst_port = t.destination_port();
                meta.tcp_flags = tcp_flags(t);
            }
            Some(TransportSlice::Udp(u)) => {
                meta.tuple.src_port = u.source_port();
                meta.tuple.dst_port = u.destination_port();
            }
            Some(TransportSlice::Icmpv4(i)) => {
                let (kind, mtu) = match i.icmp_type() {
                    Icmpv4Type::DestinationUnreachable(
                        icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu },
                    ) => (
                        Some(IcmpErrorKind::FragmentationNeeded),
                        u32::from(next_hop_mtu),
                    ),
                    Icmpv4Type::DestinationUnreachable(_) => {
                        (Some(IcmpErrorKind::DestUnreachable), 0)
                    }
                    Icmpv4Type::TimeExceeded(_) => (Some(IcmpErrorKind::TimeExceeded), 0),
                    _ => (None, 0),
                };
                meta.icmp_error = kind.map(|kind| IcmpError {
                    kind,
                    code: i.code_u8(),
                    mtu,
                    flow: quoted_oracle(i.payload()),
                });
            }
            Some(TransportSlice::Icmpv6(i)) => {
                let (kind, mtu) = match i.icmp_type() {
                    Icmpv6Type::DestinationUnreachable(_) => {
                        (Some(IcmpErrorKind::DestUnreachable), 0)
                    }
                    Icmpv6Type::PacketTooBig { mtu } => (Some(IcmpErrorKind::PacketTooBig), mtu),
                    Icmpv6Type::TimeExceeded(_) => (Some(IcmpErrorKind::TimeExceeded), 0),
                    _ => (None, 0),
                };
                meta.icmp_error = kind.map(|kind| IcmpError {
                    kind,
                    code: i.code_u8(),
                    mtu,
                    flow: quoted_oracle(i.payload()),
                });
            }
            None => {}
        }
    }
    if meta.fragment == Fragment::First {
        // etherparse does not read a fragment's transport header: take its bytes raw.
        let end = usize::from(meta.l3_offset) + meta.ip_len as usize;
        let l4 = frame.get(usize::from(meta.l4_offset)..end).unwrap_or(&[]);
        let need = match meta.tuple.proto {
            proto::TCP => 20,
            proto::UDP => 8,
            _ => 0,
        };
        if l4.len() < need {
            meta.fragment = Fragment::TinyFirst;
        } else if need > 0 {
            meta.tuple.src_port = u16::from_be_bytes([l4[0], l4[1]]);
            meta.tuple.dst_port = u16::from_be_bytes([l4[2], l4[3]]);
            if meta.tuple.proto == proto::TCP {
                meta.tcp_flags = l4[13];
            }
        }
    }
    Parsed::Ip(meta)
}

/// The reversed flow of a quoted (possibly truncated) packet, by etherparse's lax parser.
fn quoted_oracle(quote: &[u8]) -> FiveTuple {
    let q = LaxSlicedPacket::from_ip(quote).expect("etherparse accepts the quote");
    let payload = q.ip_payload().expect("quote has an IP payload");
    let (src, dst, mut proto, non_first) = match q.net.as_ref().unwrap() {
        LaxNetSlice::Ipv4(ip) => {
            let h = ip.header();
            let non_first = h.fragments_offset().value() != 0;
            (
                mapped4(h.source()),
                mapped4(h.destination()),
                h.protocol().0,
                non_first,
            )
        }
        LaxNetSlice::Ipv6(ip) => {
            let h = ip.header();
            (h.source(), h.destination(), payload.ip_number.0, false)
        }
    };
    let mut non_first = non_first;
    if let Some(LaxNetSlice::Ipv6(ip)) = q.net.as_ref() {
        for ext in ip.extensions().clone() {
            if let Ipv6ExtensionSlice::Fragment(f) = ext {
                let (offset, more) = rfc_fragment_fields(f.slice());
                if offset != 0 || more {
                    proto = f.next_header().0;
                    non_first = offset != 0;
                }
            }
        }
    }
    let mut flow = FiveTuple {
        src: dst,
        dst: src,
        src_port: 0,
        dst_port: 0,
        proto,
    };
    if !non_first && (proto == proto::TCP || proto == proto::UDP) {
        let p = payload.payload;
        flow.src_port = u16::from_be_bytes([p[2], p[3]]);
        flow.dst_port = u16::from_be_bytes([p[0], p[1]]);
    }
    flow
}

fn meta(frame: &[u8]) -> IpMeta {
    match parse(frame) {
        Ok(Parsed::Ip(meta)) => meta,
        other => panic!("expected IP, got {other:?}"),
    }
}

// ---- generated corpus ----------------------------------------------------------------

fn v4_variants() -> Vec<(&'static str, V4)> {
    vec![
        ("plain", V4::default()),
        (
            "df",
            V4 {
                dont_fragment: true,
                ident: 0x4242,
                dscp: 46,
                ecn: 1,
                ..V4::default()
            },
        ),
        (
            "options4",
            V4 {
                options: vec![1, 1, 1, 0],
                ..V4::default()
            },
        ),
        (
            "options40",
            V4 {
                options: vec![1; 40],
                ..V4::default()
            },
        ),
        (
            "first_fragment",
            V4 {
                more_fragments: true,
                ident: 0xbeef,
                ..V4::default()
            },
        ),
        (
            "last_fragment",
            V4 {
                frag_offset: 185,
                ident: 0xbeef,
                ..V4::default()
            },
        ),
        (
            "middle_fragment",
            V4 {
                frag_offset: 185,
                more_fragments: true,
                ..V4::default()
            },
        ),
    ]
}

fn raw_ext(payload_len: usize) -> Ipv6RawExtHeader {
    Ipv6RawExtHeader::new_raw(IpNumber(0), &vec![1u8; payload_len]).unwrap()
}

fn v6_variants() -> Vec<(&'static str, Ipv6Extensions)> {
    let hbh = || Some(raw_ext(6));
    let routing = || {
        Some(Ipv6RoutingExtensions {
            routing: raw_ext(22),
            final_destination_options: None,
        })
    };
    vec![
        ("plain", Ipv6Extensions::default()),
        (
            "hop_by_hop",
            Ipv6Extensions {
                hop_by_hop_options: hbh(),
                ..Default::default()
            },
        ),
        (
            "hbh_dest_routing",
            Ipv6Extensions {
                hop_by_hop_options: hbh(),
                destination_options: Some(raw_ext(14)),
                routing: routing(),
                ..Default::default()
            },
        ),
        (
            "auth",
            Ipv6Extensions {
                auth: Some(IpAuthHeader::new(IpNumber(0), 7, 9, &[0xaa; 12]).unwrap()),
                ..Default::default()
            },
        ),
        (
            "first_fragment",
            Ipv6Extensions {
                fragment: Some(ipv6_fragment(0, true, 0x0102_0304)),
                ..Default::default()
            },
        ),
        (
            "dest_last_fragment",
            Ipv6Extensions {
                destination_options: Some(raw_ext(6)),
                fragment: Some(ipv6_fragment(304, false, 0xfeed_f00d)),
                ..Default::default()
            },
        ),
        (
            "atomic_fragment",
            Ipv6Extensions {
                fragment: Some(ipv6_fragment(0, false, 77)),
                ..Default::default()
            },
        ),
    ]
}

fn l4_variants() -> Vec<(&'static str, L4, Vec<u8>)> {
    vec![
        ("tcp_syn", tcp(40000, 80, true), vec![]),
        (
            "tcp_ack_data",
            tcp(40001, 443, false),
            b"GET / HTTP/1.1\r\n".to_vec(),
        ),
        ("udp", L4::Udp(5353, 53), vec![7; 33]),
        ("gre_raw", L4::Raw(47), vec![0; 12]),
    ]
}

/// Every combination of tag x IP variant x transport, plus pings, in both families.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for vlan in [None, Some(100), Some(4095)] {
        for (ip_name, v4) in v4_variants() {
            for (l4_name, l4, payload) in l4_variants() {
                let ip = ipv4(CLIENT4, VIP4, 64, &v4);
                out.push((
                    format!("{vlan:?}/v4/{ip_name}/{l4_name}"),
                    frame(vlan, ip, l4, &payload),
                ));
            }
            let echo = L4::Icmpv4(Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader {
                id: 1,
                seq: 2,
            }));
            let ip = ipv4(CLIENT4, VIP4, 64, &v4);
            out.push((
                format!("{vlan:?}/v4/{ip_name}/echo"),
                frame(vlan, ip, echo, &[1; 8]),
            ));
        }
        for (ip_name, exts) in v6_variants() {
            for (l4_name, l4, payload) in l4_variants() {
                let ip = ipv6(CLIENT6, VIP6, 64, exts.clone());
                out.push((
                    format!("{vlan:?}/v6/{ip_name}/{l4_name}"),
                    frame(vlan, ip, l4, &payload),
                ));
            }
            let echo = L4::Icmpv6(Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader {
                id: 1,
                seq: 2,
            }));
            let ip = ipv6(CLIENT6, VIP6, 64, exts.clone());
            out.push((
                format!("{vlan:?}/v6/{ip_name}/echo"),
                frame(vlan, ip, echo, &[1; 8]),
            ));
        }
    }
    out.extend(icmp_error_corpus());
    out
}

const ROUTER4: [u8; 4] = [203, 0, 113, 1];
const ROUTER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];

/// What a DSR backend sent (VIP -> client) and a router quoted back to the VIP: TCP and UDP,
/// with options or extension headers, fragments, quoted whole or cut after 8 bytes of L4.
fn quotes_v4() -> Vec<(&'static str, Vec<u8>)> {
    let answer = |v4: &V4, l4: L4| ip_packet(ipv4(VIP4, CLIENT4, 61, v4), l4, &[0x5a; 64]);
    let tcp_answer = answer(
        &V4 {
            dont_fragment: true,
            ..V4::default()
        },
        tcp(80, 40000, false),
    );
    let udp_answer = answer(&V4::default(), L4::Udp(53, 5353));
    let opts = V4 {
        options: vec![1, 1, 1, 0, 1, 1, 1, 0],
        ..V4::default()
    };
    let opts_answer = answer(&opts, tcp(443, 40002, false));
    let frag = V4 {
        frag_offset: 3,
        ..V4::default()
    };
    let frag_answer = answer(&frag, L4::Udp(53, 5353));
    let echo = L4::Icmpv4(Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader {
        id: 5,
        seq: 6,
    }));
    vec![
        ("tcp_cut", tcp_answer[..28].to_vec()),
        ("tcp_whole", tcp_answer),
        ("udp_cut", udp_answer[..28].to_vec()),
        ("options_cut", opts_answer[..36].to_vec()),
        ("non_first_fragment", frag_answer[..28].to_vec()),
        ("echo_reply", answer(&V4::default(), echo)[..28].to_vec()),
    ]
}

fn quotes_v6() -> Vec<(&'static str, Vec<u8>)> {
    let answer =
        |exts: Ipv6Extensions, l4: L4| ip_packet(ipv6(VIP6, CLIENT6, 61, exts), l4, &[0x5a; 64]);
    let tcp_answer = answer(Ipv6Extensions::default(), tcp(80, 40000, false));
    let udp_answer = answer(Ipv6Extensions::default(), L4::Udp(53, 5353));
    let dest = Ipv6Extensions {
        destination_options: Some(raw_ext(6)),
        ..Default::default()
    };
    let dest_answer = answer(dest, tcp(443, 40002, false));
    let frag = Ipv6Extensions {
        fragment: Some(ipv6_fragment(0, true, 99)),
        ..Default::default()
    };
    let first_frag_answer = answer(frag, L4::Udp(123, 5123));
    vec![
        ("tcp_cut", tcp_answer[..48].to_vec()),
        ("tcp_whole", tcp_answer),
        ("udp_cut", udp_answer[..48].to_vec()),
        ("dest_options_cut", dest_answer[..56].to_vec()),
        ("first_fragment_cut", first_frag_answer[..56].to_vec()),
    ]
}

fn icmp_error_corpus() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let v4_types = [
        (
            "frag_needed",
            Icmpv4Type::DestinationUnreachable(
                icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
            ),
        ),
        (
            "port_unreachable",
            Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port),
        ),
        (
            "ttl_exceeded",
            Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit),
        ),
    ];
    for (type_name, icmp_type) in v4_types {
        for (quote_name, quote) in quotes_v4() {
            let ip = ipv4(ROUTER4, VIP4, 250, &V4::default());
            let f = frame(None, ip, L4::Icmpv4(icmp_type.clone()), &quote);
            out.push((format!("icmpv4/{type_name}/{quote_name}"), f));
        }
    }
    let v6_types = [
        ("packet_too_big", Icmpv6Type::PacketTooBig { mtu: 1280 }),
        (
            "port_unreachable",
            Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port),
        ),
        (
            "hop_limit",
            Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded),
        ),
    ];
    for (type_name, icmp_type) in v6_types {
        for (quote_name, quote) in quotes_v6() {
            let ip = ipv6(ROUTER6, VIP6, 250, Ipv6Extensions::default());
            let f = frame(Some(7), ip, L4::Icmpv6(icmp_type), &quote);
            out.push((format!("icmpv6/{type_name}/{quote_name}"), f));
        }
    }
    out
}

// ---- agreement with the oracle --------------------------------------------------------

#[test]
fn every_generated_frame_parses_as_etherparse_says() {
    let corpus = corpus();
    assert!(corpus.len() > 200, "corpus has {} frames", corpus.len());
    for (name, frame) in &corpus {
        assert_eq!(parse(frame), Ok(oracle(frame)), "{name}");
    }
}

#[test]
fn random_addresses_ports_and_lengths_agree_with_etherparse() {
    let mut rng = Rng(0x5eed);
    for i in 0..2_000 {
        let payload_len = rng.below(300);
        let payload = rng.bytes(payload_len);
        let (sport, dport) = (rng.next() as u16, rng.next() as u16);
        let l4 = match i % 3 {
            0 => tcp(sport, dport, rng.next() & 1 == 0),
            1 => L4::Udp(sport, dport),
            _ => L4::Raw(rng.below(256) as u8),
        };
        let ip = if i % 2 == 0 {
            let v4 = V4 {
                options: vec![1; 4 * rng.below(11)],
                dont_fragment: rng.next() & 1 == 0,
                ident: rng.next() as u16,
                dscp: rng.below(64) as u8,
                ecn: rng.below(4) as u8,
                ..V4::default()
            };
            let src: [u8; 4] = rng.bytes(4).try_into().unwrap();
            ipv4(src, VIP4, rng.next() as u8, &v4)
        } else {
            let src: [u8; 16] = rng.bytes(16).try_into().unwrap();
            ipv6(src, VIP6, rng.next() as u8, Ipv6Extensions::default())
        };
        // Extension-header numbers as raw protocols would send etherparse walking.
        if let L4::Raw(p) = l4 {
            if matches!(p, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
                || p == 6
                || p == 17
                || p == 1
                || p == 58
            {
                continue;
            }
        }
        let vlan = (i % 5 == 0).then_some((i % 4096) as u16);
        let f = frame(vlan, ip, l4, &payload);
        assert_eq!(parse(&f), Ok(oracle(&f)), "case {i}");
    }
}

#[test]
fn a_tcp_syn_reads_as_expected() {
    let f = frame(
        None,
        ipv4(
            CLIENT4,
            VIP4,
            57,
            &V4 {
                dont_fragment: true,
                ..V4::default()
            },
        ),
        tcp(40000, 80, true),
        &[],
    );
    let m = meta(&f);
    assert_eq!((m.l2_len, m.vlan, m.family), (14, None, Family::V4));
    assert_eq!(
        (m.l3_offset, m.l4_offset, m.ip_len, m.l4_len()),
        (14, 34, 40, 20)
    );
    assert_eq!(m.tuple.src, mapped4(CLIENT4));
    assert_eq!(m.tuple.dst, mapped4(VIP4));
    assert_eq!(
        (m.tuple.src_port, m.tuple.dst_port, m.tuple.proto),
        (40000, 80, proto::TCP)
    );
    assert_eq!(
        m.tcp_flags & crate::wire::tcp::flags::SYN,
        crate::wire::tcp::flags::SYN
    );
    assert!(m.dont_fragment);
    assert_eq!(m.ttl_or_hop_limit, 57);
    assert_eq!(m.src_addr(), std::net::IpAddr::from(CLIENT4));
    assert_eq!(m.dst_addr(), std::net::IpAddr::from(VIP4));
}

#[test]
fn icmp_errors_are_reversed_to_the_client_to_vip_flow() {
    for (name, f) in icmp_error_corpus() {
        let m = meta(&f);
        let err = m
            .icmp_error
            .unwrap_or_else(|| panic!("{name}: no icmp error"));
        let (client, vip) = match m.family {
            Family::V4 => (mapped4(CLIENT4), mapped4(VIP4)),
            Family::V6 => (CLIENT6, VIP6),
        };
        assert_eq!((err.flow.src, err.flow.dst), (client, vip), "{name}");
        assert_eq!(
            err.flow.dst, m.tuple.dst,
            "{name}: the error was sent to the VIP"
        );
        let ports = (err.flow.src_port, err.flow.dst_port);
        let expected = if name.contains("tcp") {
            (40000, 80)
        } else if name.contains("options") || name.contains("dest_options") {
            (40002, 443)
        } else if name.ends_with("udp_cut") {
            (5353, 53)
        } else if name.contains("first_fragment") && !name.contains("non_first") {
            (5123, 123)
        } else {
            (0, 0)
        };
        assert_eq!(ports, expected, "{name}");
        match err.kind {
            IcmpErrorKind::FragmentationNeeded => assert_eq!(err.mtu, 1400, "{name}"),
            IcmpErrorKind::PacketTooBig => assert_eq!(err.mtu, 1280, "{name}"),
            _ => assert_eq!(err.mtu, 0, "{name}"),
        }
    }
}

#[test]
fn later_fragments_carry_no_ports_but_their_id_first_ones_carry_ports() {
    let first = frame(
        None,
        ipv4(
            CLIENT4,
            VIP4,
            64,
            &V4 {
                more_fragments: true,
                ident: 9,
                ..V4::default()
            },
        ),
        L4::Udp(1, 2),
        &[0; 100],
    );
    let m = meta(&first);
    assert_eq!(
        (m.fragment, m.frag_id, m.tuple.src_port, m.tuple.dst_port),
        (Fragment::First, 9, 1, 2)
    );
    let exts = Ipv6Extensions {
        fragment: Some(ipv6_fragment(96, false, 0xabcdef)),
        ..Default::default()
    };
    let last = frame(
        None,
        ipv6(CLIENT6, VIP6, 64, exts),
        tcp(1, 2, false),
        &[0; 10],
    );
    let m = meta(&last);
    assert_eq!(
        (m.fragment, m.frag_id, m.tuple.proto),
        (Fragment::NonFirst, 0xabcdef, proto::TCP)
    );
    assert_eq!(
        (m.tuple.src_port, m.tuple.dst_port, m.l4_offset),
        (0, 0, 14 + 40 + 8)
    );
}

#[test]
fn a_first_fragment_too_short_for_its_ports_is_tiny() {
    let first_v4 = |l4: L4, payload: &[u8]| {
        let v4 = V4 {
            more_fragments: true,
            ident: 5,
            ..V4::default()
        };
        frame(None, ipv4(CLIENT4, VIP4, 64, &v4), l4, payload)
    };
    // 8 bytes of TCP: ports, but no flags yet (RFC 1858's tiny fragment).
    let m = meta(&first_v4(L4::Raw(proto::TCP), &[0, 1, 0, 22, 0, 0, 0, 0]));
    assert_eq!(
        (m.fragment, m.tuple.src_port, m.tuple.dst_port),
        (Fragment::TinyFirst, 0, 0)
    );
    let m = meta(&first_v4(L4::Raw(proto::TCP), &[0; 20]));
    assert_eq!(m.fragment, Fragment::First, "a whole TCP header is enough");
    let m = meta(&first_v4(L4::Raw(proto::UDP), &[0, 1, 0, 53]));
    assert_eq!(m.fragment, Fragment::TinyFirst);
    let m = meta(&first_v4(L4::Raw(47), &[]));
    assert_eq!(m.fragment, Fragment::First, "no ports to miss");
    let exts = Ipv6Extensions {
        fragment: Some(ipv6_fragment(0, true, 77)),
        ..Default::default()
    };
    let v6 = frame(
        None,
        ipv6(CLIENT6, VIP6, 64, exts),
        L4::Raw(proto::UDP),
        &[0, 1, 0, 53],
    );
    let m = meta(&v6);
    assert_eq!((m.fragment, m.frag_id), (Fragment::TinyFirst, 77));
}

#[test]
fn non_ip_ethertypes_are_not_errors() {
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    assert_eq!(
        parse(&arp),
        Ok(Parsed::NotIp {
            ethertype: 0x0806,
            l2_len: 14,
            vlan: None
        })
    );
    // A tagged LLDP frame, and an 802.1ad outer tag, which the classifier does not unwrap.
    let mut tagged = arp.clone();
    tagged.splice(12..14, [0x81, 0x00, 0x00, 0x2a, 0x88, 0xcc]);
    assert_eq!(
        parse(&tagged),
        Ok(Parsed::NotIp {
            ethertype: 0x88cc,
            l2_len: 18,
            vlan: Some(42)
        })
    );
    let mut qinq = arp.clone();
    qinq[12..14].copy_from_slice(&[0x88, 0xa8]);
    assert!(matches!(
        parse(&qinq),
        Ok(Parsed::NotIp {
            ethertype: 0x88a8,
            ..
        })
    ));
    // A bare Ethernet header is a whole (empty) non-IP frame.
    assert!(matches!(parse(&arp[..14]), Ok(Parsed::NotIp { .. })));
}

// ---- malformed corpus -------------------------------------------------------------------

/// The reason a frame cut to `len` bytes must be dropped for, from where the cut falls.
fn expected_truncation(m: &IpMeta, len: usize) -> ParseError {
    let l3 = usize::from(m.l3_offset);
    let fixed = match m.family {
        Family::V4 => 20,
        Family::V6 => 40,
    };
    if len < usize::from(m.l2_len) {
        ParseError::TruncatedEthernet
    } else if len < l3 + fixed {
        match m.family {
            Family::V4 => ParseError::TruncatedIpv4,
            Family::V6 => ParseError::TruncatedIpv6,
        }
    } else {
        match m.family {
            Family::V4 => ParseError::BadTotalLength,
            Family::V6 => ParseError::Ipv6PayloadLength,
        }
    }
}

#[test]
fn every_truncation_of_every_generated_frame_is_the_right_drop() {
    for (name, frame) in corpus() {
        let m = meta(&frame);
        let ip_end = usize::from(m.l3_offset) + m.ip_len as usize;
        assert_eq!(ip_end, frame.len(), "{name}: builder adds no padding");
        for len in 0..frame.len() {
            let cut = &frame[..len];
            let got = parse(cut);
            if len < 14 {
                assert_eq!(got, Err(ParseError::TruncatedEthernet), "{name} at {len}");
                continue;
            }
            assert_eq!(got, Err(expected_truncation(&m, len)), "{name} at {len}");
        }
    }
}

/// Rewrites the IPv4 total length or IPv6 payload length of a frame. The IPv4 header
/// checksum goes stale, which the parser does not look at.
fn set_ip_len(frame: &mut [u8], m: &IpMeta, ip_len: usize) {
    let l3 = usize::from(m.l3_offset);
    match m.family {
        Family::V4 => frame[l3 + 2..l3 + 4].copy_from_slice(&(ip_len as u16).to_be_bytes()),
        Family::V6 => frame[l3 + 4..l3 + 6].copy_from_slice(&((ip_len - 40) as u16).to_be_bytes()),
    }
}

#[test]
fn ip_lengths_that_lie_are_dropped_or_cut_the_transport_header() {
    for (name, mut frame) in corpus() {
        let m = meta(&frame);
        let l3 = usize::from(m.l3_offset);
        let fixed = if m.family == Family::V4 { 20 } else { 40 };
        // Longer than the frame.
        let mut longer = frame.clone();
        set_ip_len(&mut longer, &m, m.ip_len as usize + 1);
        let expected = expected_truncation(&m, frame.len());
        assert_eq!(parse(&longer), Err(expected), "{name}");
        // Shorter than the frame: the rest reads as padding, so the packet ends early and
        // whatever was cut is an error of that layer (or nothing, if only payload was cut).
        for ip_len in fixed..m.ip_len as usize {
            set_ip_len(&mut frame, &m, ip_len);
            let got = parse(&frame);
            let l4_end = usize::from(m.l4_offset)
                + match (m.tuple.proto, m.fragment) {
                    (_, Fragment::First | Fragment::TinyFirst | Fragment::NonFirst) => 0,
                    (proto::TCP, _) => 20,
                    (proto::UDP, _) | (proto::ICMP | proto::ICMPV6, _) => 8,
                    _ => 0,
                };
            match got {
                Ok(Parsed::Ip(short)) => {
                    assert!(l3 + ip_len >= l4_end, "{name}: accepted ip_len {ip_len}");
                    assert_eq!(short.ip_len as usize, ip_len);
                }
                Ok(other) => panic!("{name}: {other:?}"),
                Err(e) => assert!(
                    l3 + ip_len < l4_end
                        || matches!(
                            e,
                            ParseError::BadUdpLength
                                | ParseError::BadTcpDataOffset
                                | ParseError::BadIhl
                                | ParseError::TruncatedIcmpQuote
                                | ParseError::TruncatedExtHeader
                        ),
                    "{name}: ip_len {ip_len} gave {e:?}"
                ),
            }
        }
        // Below the fixed header: a total length under 20 is a length error, not a panic.
        if m.family == Family::V4 {
            set_ip_len(&mut frame, &m, 19);
            assert_eq!(parse(&frame), Err(ParseError::BadTotalLength), "{name}");
        }
    }
}

#[test]
fn bad_ihl_and_versions_are_reported() {
    let f = frame(
        None,
        ipv4(CLIENT4, VIP4, 64, &V4::default()),
        tcp(1, 2, true),
        &[],
    );
    for ihl in 0..5u8 {
        let mut bad = f.clone();
        bad[14] = 0x40 | ihl;
        assert_eq!(parse(&bad), Err(ParseError::BadIhl), "ihl {ihl}");
    }
    // IHL 15 = 60 bytes, longer than the 40-byte packet.
    let mut bad = f.clone();
    bad[14] = 0x4f;
    assert_eq!(parse(&bad), Err(ParseError::BadIhl));
    // IHL 10 = 40 bytes: fits, but leaves no room for TCP.
    bad[14] = 0x4a;
    assert_eq!(parse(&bad), Err(ParseError::TruncatedL4));
    for version in [0u8, 6, 15] {
        let mut bad = f.clone();
        bad[14] = (version << 4) | 5;
        assert_eq!(parse(&bad), Err(ParseError::BadVersion));
    }
    let v6 = frame(
        None,
        ipv6(CLIENT6, VIP6, 64, Ipv6Extensions::default()),
        tcp(1, 2, true),
        &[],
    );
    let mut bad = v6.clone();
    bad[14] = 0x45;
    assert_eq!(parse(&bad), Err(ParseError::BadVersion));
}

#[test]
fn transport_headers_that_do_not_fit_are_dropped() {
    let f = frame(
        None,
        ipv4(CLIENT4, VIP4, 64, &V4::default()),
        tcp(1, 2, true),
        &[0; 4],
    );
    for doff in [0u8, 4, 7, 15] {
        let mut bad = f.clone();
        bad[14 + 20 + 12] = doff << 4;
        assert_eq!(
            parse(&bad),
            Err(ParseError::BadTcpDataOffset),
            "doff {doff}"
        );
    }
    let mut with_options = f.clone();
    with_options[14 + 20 + 12] = 6 << 4;
    assert!(parse(&with_options).is_ok());
    let u = frame(
        None,
        ipv4(CLIENT4, VIP4, 64, &V4::default()),
        L4::Udp(1, 2),
        &[0; 4],
    );
    for udp_len in [0u16, 7, 13] {
        let mut bad = u.clone();
        bad[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&udp_len.to_be_bytes());
        assert_eq!(
            parse(&bad),
            Err(ParseError::BadUdpLength),
            "udp len {udp_len}"
        );
    }
    // A shorter UDP length than the IP payload is legal (trailing bytes are ignored).
    let mut short = u.clone();
    short[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&8u16.to_be_bytes());
    assert!(parse(&short).is_ok());
}

#[test]
fn runts_and_empty_frames_are_truncated_ethernet() {
    for len in 0..14 {
        assert_eq!(parse(&vec![0x08; len]), Err(ParseError::TruncatedEthernet));
    }
    let mut tag_only = vec![0u8; 17];
    tag_only[12] = 0x81;
    assert_eq!(parse(&tag_only), Err(ParseError::TruncatedEthernet));
    let mut bare_v4 = vec![0u8; 14];
    bare_v4[12] = 0x08;
    assert_eq!(parse(&bare_v4), Err(ParseError::TruncatedIpv4));
    bare_v4[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(parse(&bare_v4), Err(ParseError::TruncatedIpv6));
}

/// An ICMPv4 error to the VIP quoting `quote`.
fn icmpv4_error(quote: &[u8]) -> Vec<u8> {
    let t = Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit);
    frame(
        None,
        ipv4(ROUTER4, VIP4, 64, &V4::default()),
        L4::Icmpv4(t),
        quote,
    )
}

fn icmpv6_error(quote: &[u8]) -> Vec<u8> {
    let t = Icmpv6Type::PacketTooBig { mtu: 1400 };
    frame(
        None,
        ipv6(ROUTER6, VIP6, 64, Ipv6Extensions::default()),
        L4::Icmpv6(t),
        quote,
    )
}

#[test]
fn icmp_errors_quoting_garbage_are_dropped() {
    let tcp4 = ip_packet(
        ipv4(VIP4, CLIENT4, 64, &V4::default()),
        tcp(80, 4000, false),
        &[],
    );
    let tcp6 = ip_packet(
        ipv6(VIP6, CLIENT6, 64, Ipv6Extensions::default()),
        tcp(80, 4000, false),
        &[],
    );
    // Too little quoted to find the ports: anything short of IP header + 8 bytes of TCP.
    for len in 0..28 {
        assert_eq!(
            parse(&icmpv4_error(&tcp4[..len])),
            Err(ParseError::TruncatedIcmpQuote),
            "v4 {len}"
        );
    }
    for len in 0..48 {
        assert_eq!(
            parse(&icmpv6_error(&tcp6[..len])),
            Err(ParseError::TruncatedIcmpQuote),
            "v6 {len}"
        );
    }
    // The wrong IP version, or a quoted IHL below 5.
    assert_eq!(parse(&icmpv4_error(&tcp6)), Err(ParseError::BadIcmpQuote));
    assert_eq!(
        parse(&icmpv6_error(&tcp4[..28])),
        Err(ParseError::TruncatedIcmpQuote)
    );
    let padded_v4 = [&tcp4[..], &[0u8; 20]].concat();
    assert_eq!(
        parse(&icmpv6_error(&padded_v4)),
        Err(ParseError::BadIcmpQuote)
    );
    let mut low_ihl = tcp4.clone();
    low_ihl[0] = 0x44;
    assert_eq!(
        parse(&icmpv4_error(&low_ihl)),
        Err(ParseError::BadIcmpQuote)
    );
    // A quoted IHL that runs past the quote.
    let mut long_ihl = tcp4[..28].to_vec();
    long_ihl[0] = 0x4f;
    assert_eq!(
        parse(&icmpv4_error(&long_ihl)),
        Err(ParseError::TruncatedIcmpQuote)
    );
    // A quoted IPv6 extension chain cut short, or too long.
    let mut ext_cut = tcp6[..48].to_vec();
    ext_cut[6] = 60;
    ext_cut[41] = 200;
    assert_eq!(
        parse(&icmpv6_error(&ext_cut)),
        Err(ParseError::TruncatedIcmpQuote)
    );
    let mut late_hbh = tcp6[..48].to_vec();
    late_hbh[6] = 60;
    late_hbh[40] = 0;
    late_hbh[41] = 0;
    assert_eq!(
        parse(&icmpv6_error(&late_hbh)),
        Err(ParseError::BadIcmpQuote)
    );
    // An ICMP error too short for its own header.
    let mut short = icmpv4_error(&tcp4);
    short.truncate(14 + 20 + 7);
    short[16..18].copy_from_slice(&27u16.to_be_bytes());
    assert_eq!(parse(&short), Err(ParseError::TruncatedL4));
}

#[test]
fn random_bytes_never_panic_and_ok_results_stay_inside_the_frame() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let mut ok = 0usize;
    let mut reasons = std::collections::HashSet::new();
    for i in 0..200_000 {
        let len = rng.below(160);
        let mut f = rng.bytes(len);
        // Bias the random bytes toward headers that get past the first checks, so the deep
        // paths (options, extension headers, ICMP quotes) see random input too.
        let mut at = 12;
        if len >= 18 && i % 4 == 0 {
            f[12..14].copy_from_slice(&[0x81, 0x00]);
            at = 16;
        }
        if len >= at + 2 {
            let ethertype: u16 = match rng.below(8) {
                0..=3 => 0x0800,
                4..=6 => 0x86dd,
                _ => rng.next() as u16,
            };
            f[at..at + 2].copy_from_slice(&ethertype.to_be_bytes());
            let l3 = at + 2;
            if ethertype == 0x0800 && len >= l3 + 20 {
                f[l3] = 0x40 | (5 + rng.below(3) as u8);
                let total = (len - l3 - rng.below(3)) as u16;
                f[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
                f[l3 + 6] &= 0x40;
                if i % 8 != 0 {
                    f[l3 + 7] = 0;
                }
                f[l3 + 9] = [1, 6, 17, 1][rng.below(4)];
                let l4 = l3 + usize::from(f[l3] & 0x0f) * 4;
                if f[l3 + 9] == 1 && len >= l4 + 9 {
                    f[l4] = [3, 11, 3, 8][rng.below(4)];
                    f[l4 + 8] = 0x45;
                }
            } else if ethertype == 0x86dd && len >= l3 + 40 {
                f[l3] = 0x60;
                let payload = (len - l3 - 40 - rng.below(3).min(len - l3 - 40)) as u16;
                f[l3 + 4..l3 + 6].copy_from_slice(&payload.to_be_bytes());
                f[l3 + 6] = [0, 6, 17, 58, 44, 60, 43, 58][rng.below(8)];
                if f[l3 + 6] == 58 && len >= l3 + 49 {
                    f[l3 + 40] = [1, 2, 3, 128][rng.below(4)];
                    f[l3 + 48] = 0x60;
                }
            }
        }
        match parse(&f) {
            Ok(Parsed::Ip(m)) => {
                ok += 1;
                assert!(
                    usize::from(m.l3_offset) + m.ip_len as usize <= f.len(),
                    "case {i}"
                );
                assert!(usize::from(m.l4_offset) <= f.len(), "case {i}");
                assert!(m.l4_offset >= m.l3_offset, "case {i}");
            }
            Ok(Parsed::NotIp { l2_len, .. }) => assert!(usize::from(l2_len) <= f.len()),
            Err(e) => {
                reasons.insert(e);
            }
        }
    }
    assert!(
        ok > 10_000,
        "only {ok} random frames parsed: the bias is not reaching deep paths"
    );
    assert!(reasons.len() >= 10, "random frames hit only {reasons:?}");
}

#[test]
fn flipping_any_byte_of_a_valid_frame_never_panics() {
    let mut rng = Rng(7);
    for (_, frame) in corpus().iter().step_by(3) {
        for at in 0..frame.len() {
            let mut f = frame.clone();
            f[at] ^= 1 << rng.below(8);
            let _ = parse(&f);
            f[at] = 0xff;
            let _ = parse(&f);
        }
    }
}

#[test]
fn the_summary_stays_small_enough_to_return_by_value() {
    // One cache line and a bit; growing it slows every packet.
    let size = std::mem::size_of::<Parsed>();
    assert!(size <= 128, "Parsed is {size} bytes");
    assert_eq!(std::mem::size_of::<ParseError>(), 1);
}

/// `IpMeta::parse_into` is `parse` writing in place: into a slot still holding the previous
/// frame's summary, every frame (whole, cut short, or not IP) gives the same answer.
#[test]
fn parse_into_agrees_with_parse_over_a_reused_slot() {
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let mut frames: Vec<Vec<u8>> = vec![arp];
    for (_, frame) in corpus() {
        frames.push(frame[..frame.len() / 2].to_vec());
        frames.push(frame);
    }
    let mut slot = IpMeta::UNSPECIFIED;
    let (mut ip, mut not_ip, mut errors) = (0, 0, 0);
    for frame in &frames {
        match (slot.parse_into(frame), parse(frame)) {
            (Ok(true), Ok(Parsed::Ip(meta))) => {
                assert_eq!(slot, meta);
                ip += 1;
            }
            (Ok(false), Ok(Parsed::NotIp { .. })) => not_ip += 1,
            (Err(a), Err(b)) => {
                assert_eq!(a, b);
                errors += 1;
            }
            (into, whole) => panic!("parse_into {into:?} but parse {whole:?}"),
        }
    }
    assert!(
        ip > 200 && not_ip == 1 && errors > 200,
        "{ip} {not_ip} {errors}"
    );
}
