//! Golden tests: the real binary on net_pcap ports. Each test writes an input pcap, runs
//! `fulcrum run` until SIGTERM, and checks every output packet with etherparse, an
//! independent parser.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::golden::*;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
}
fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

/// A client address for flow i (documentation range 198.18.0.0/15).
fn client_v4(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc612_0000 + (i % 60000)))
}
fn client_v6(i: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        0xc,
        0,
        0,
        0,
        (i >> 16) as u16,
        i as u16,
    ))
}

/// What an encapsulated output packet says.
#[derive(Debug)]
struct Tunnelled {
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    outer_src: IpAddr,
    outer_dst: IpAddr,
    /// IP protocol / next header of the outer packet.
    outer_proto: u8,
    ttl: u8,
    gue_dst_port: Option<u16>,
    gue_src_port: Option<u16>,
    inner: Vec<u8>,
}

/// Parses an encapsulated frame with etherparse, checking the outer IPv4 header checksum and
/// the GUE UDP checksum under IPv6.
fn untunnel(frame: &[u8]) -> Tunnelled {
    let sp = SlicedPacket::from_ethernet(frame).unwrap_or_else(|e| panic!("etherparse: {e:?}"));
    let link = match sp.link {
        Some(etherparse::LinkSlice::Ethernet2(e)) => e,
        other => panic!("not Ethernet II: {other:?}"),
    };
    let (outer_src, outer_dst, outer_proto, ttl, ip_payload_start) = match sp.net {
        Some(NetSlice::Ipv4(ref ip)) => {
            let h = ip.header();
            let hdr = h.to_header();
            assert_eq!(
                hdr.header_checksum,
                hdr.calc_header_checksum(),
                "outer IPv4 checksum"
            );
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                h.protocol().0,
                h.ttl(),
                14 + h.slice().len(),
            )
        }
        Some(NetSlice::Ipv6(ref ip)) => {
            let h = ip.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                h.next_header().0,
                h.hop_limit(),
                14 + 40,
            )
        }
        other => panic!("no outer IP: {other:?}"),
    };
    let (mut gue_dst_port, mut gue_src_port, mut start) = (None, None, ip_payload_start);
    if outer_proto == 17 {
        let Some(TransportSlice::Udp(u)) = sp.transport else {
            panic!("outer UDP expected")
        };
        gue_dst_port = Some(u.destination_port());
        gue_src_port = Some(u.source_port());
        if let Some(NetSlice::Ipv6(ref ip)) = sp.net {
            let hdr = u.to_header();
            let want = hdr
                .calc_checksum_ipv6(&ip.header().to_header(), u.payload())
                .expect("udp checksum");
            assert_eq!(hdr.checksum, want, "GUE UDP checksum under IPv6");
            assert_ne!(hdr.checksum, 0);
        }
        start += 8;
    }
    Tunnelled {
        eth_dst: link.destination(),
        eth_src: link.source(),
        outer_src,
        outer_dst,
        outer_proto,
        ttl,
        gue_dst_port,
        gue_src_port,
        inner: frame[start..].to_vec(),
    }
}

fn vip_toml(
    addr_port: &str,
    proto: &str,
    encap: &str,
    extra: &str,
    backends: &[(&str, u32)],
) -> String {
    let mut s = format!(
        "[[vip]]\naddress = \"{addr_port}\"\nprotocol = \"{proto}\"\nencap = \"{encap}\"\n{extra}\n"
    );
    for (b, w) in backends {
        s.push_str(&format!(
            "[[vip.backend]]\naddress = \"{b}\"\nweight = {w}\n"
        ));
    }
    s
}

fn assert_clean_exit(o: &Outcome) {
    assert!(
        o.status.success(),
        "fulcrum failed: {:?}\n{}",
        o.status,
        o.stderr
    );
    assert!(
        !o.totals.is_null(),
        "no final counters printed\n{}",
        o.stderr
    );
    assert_eq!(
        o.totals["mempool_in_use_at_exit"].as_u64(),
        Some(0),
        "every mbuf returned to the pool"
    );
}

#[test]
fn ipip_v4_spreads_by_weight_and_keeps_flows() {
    const FLOWS: u32 = 10_000;
    let vip = v4("192.0.2.10");
    let mut frames = Vec::new();
    for i in 0..FLOWS {
        let c = client_v4(i);
        let sport = 1024 + (i % 60000) as u16;
        frames.push(tcp_frame(c, vip, sport, 80, SYN, b""));
    }
    // Second packet of every flow, after all SYNs.
    for i in 0..FLOWS {
        let c = client_v4(i);
        let sport = 1024 + (i % 60000) as u16;
        frames.push(tcp_frame(c, vip, sport, 80, ACK, &i.to_be_bytes()));
    }
    let backends = [
        ("198.51.100.11", 1u32),
        ("198.51.100.12", 2),
        ("198.51.100.13", 3),
    ];
    let o = run_fulcrum(
        &frames,
        &vip_toml("192.0.2.10:80", "tcp", "ipip", "", &backends),
        "",
    );
    assert_clean_exit(&o);
    assert_eq!(o.total("rx_packets"), frames.len() as u64, "{}", o.stderr);
    assert_eq!(o.out.len(), frames.len(), "every packet forwarded");
    let mut flow_backend: HashMap<Vec<u8>, IpAddr> = HashMap::new();
    let mut per_backend: HashMap<IpAddr, u32> = HashMap::new();
    let inputs: HashSet<&[u8]> = frames.iter().map(|f| &f[14..]).collect();
    for f in &o.out {
        let t = untunnel(f);
        assert_eq!(t.eth_dst, GATEWAY_MAC);
        assert_eq!(t.eth_src[0] & 1, 0, "source MAC is the port's unicast MAC");
        assert_ne!(t.eth_src, [0; 6]);
        assert_eq!(t.outer_src, IpAddr::V4(LB_V4));
        assert_eq!(t.outer_proto, 4, "IPv4 in IPv4");
        assert_eq!(t.ttl, 64);
        assert!(
            inputs.contains(t.inner.as_slice()),
            "inner packet unchanged"
        );
        // The flow: the inner source address and port.
        let key = t.inner[12..16]
            .iter()
            .chain(&t.inner[20..22])
            .copied()
            .collect::<Vec<u8>>();
        if let Some(prev) = flow_backend.insert(key, t.outer_dst) {
            assert_eq!(prev, t.outer_dst, "a flow stays on its backend");
        } else {
            *per_backend.entry(t.outer_dst).or_default() += 1;
        }
    }
    assert_eq!(flow_backend.len(), FLOWS as usize);
    let total_w: u32 = backends.iter().map(|b| b.1).sum();
    for (b, w) in backends {
        let got = per_backend.get(&v4(b)).copied().unwrap_or(0) as f64 / FLOWS as f64;
        let want = w as f64 / total_w as f64;
        assert!(
            (got - want).abs() <= 0.05 * want,
            "backend {b}: share {got:.4}, weight share {want:.4}"
        );
    }
}

#[test]
fn every_encap_mode_and_family() {
    let b6 = [("2001:db8:2::11", 1u32), ("2001:db8:2::12", 1)];
    let b4 = [("198.51.100.21", 1u32), ("198.51.100.22", 1)];
    let mut vips = String::new();
    vips += &vip_toml("[2001:db8:10::10]:53", "udp", "gue", "gue_port = 6080", &b6);
    vips += &vip_toml("192.0.2.20:80", "tcp", "ipip", "", &b6); // IPv4 over IPv6
    vips += &vip_toml("[2001:db8:10::20]:80", "tcp", "ipip", "", &b4); // IPv6 over IPv4
    vips += &vip_toml("[2001:db8:10::30]:443", "tcp", "ipip", "", &b6); // IPv6 in IPv6
    vips += &vip_toml("192.0.2.21:53", "udp", "gue", "gue_port = 7777", &b4); // GUE over IPv4
    let cases: Vec<(IpAddr, u8, u16, u8, Option<u16>)> = vec![
        // (vip, proto, port, expected outer proto, gue port)
        (v6("2001:db8:10::10"), 17, 53, 17, Some(6080)),
        (v4("192.0.2.20"), 6, 80, 4, None),
        (v6("2001:db8:10::20"), 6, 80, 41, None),
        (v6("2001:db8:10::30"), 6, 443, 41, None),
        (v4("192.0.2.21"), 17, 53, 17, Some(7777)),
    ];
    let mut frames = Vec::new();
    let mut expect = Vec::new();
    for (k, (vip, proto, port, outer, gue)) in cases.iter().enumerate() {
        for i in 0..50u32 {
            let c = if vip.is_ipv4() {
                client_v4(i)
            } else {
                client_v6(i)
            };
            let payload = [k as u8, i as u8];
            let f = if *proto == 6 {
                tcp_frame(c, *vip, 2000 + i as u16, *port, SYN, &payload)
            } else {
                udp_frame(c, *vip, 2000 + i as u16, *port, &payload)
            };
            expect.push((f[14..].to_vec(), *outer, *gue, *vip));
            frames.push(f);
        }
    }
    let o = run_fulcrum(&frames, &vips, "");
    assert_clean_exit(&o);
    assert_eq!(o.out.len(), frames.len(), "{}\n{}", o.totals, o.stderr);
    let by_inner: HashMap<Vec<u8>, (u8, Option<u16>, IpAddr)> = expect
        .into_iter()
        .map(|(i, o, g, v)| (i, (o, g, v)))
        .collect();
    for f in &o.out {
        let t = untunnel(f);
        let (outer, gue, vip) = by_inner
            .get(&t.inner)
            .unwrap_or_else(|| panic!("output carries an unknown inner packet: {t:?}"));
        assert_eq!(t.outer_proto, *outer, "outer protocol for VIP {vip}");
        assert_eq!(t.gue_dst_port, *gue);
        if let Some(sp) = t.gue_src_port {
            assert!(sp >= 49152, "GUE source port in the ephemeral range");
        }
        match t.outer_dst {
            IpAddr::V4(_) => assert_eq!(t.outer_src, IpAddr::V4(LB_V4)),
            IpAddr::V6(_) => assert_eq!(t.outer_src, IpAddr::V6(LB_V6)),
        }
        assert_eq!(t.eth_dst, GATEWAY_MAC);
        assert_eq!(t.ttl, 64);
    }
}

#[test]
fn l2dsr_rewrites_only_the_macs() {
    let vips = "[[vip]]\naddress = \"192.0.2.30:80\"\nprotocol = \"tcp\"\nencap = \"l2dsr\"\n\
        [[vip.backend]]\naddress = \"203.0.113.31\"\nweight = 1\nmac = \"02:00:00:00:31:01\"\n\
        [[vip.backend]]\naddress = \"203.0.113.32\"\nweight = 1\nmac = \"02:00:00:00:32:01\"\n";
    let frames: Vec<Vec<u8>> = (0..200u32)
        .map(|i| {
            tcp_frame(
                client_v4(i),
                v4("192.0.2.30"),
                3000 + i as u16,
                80,
                SYN,
                b"x",
            )
        })
        .collect();
    let o = run_fulcrum(&frames, vips, "");
    assert_clean_exit(&o);
    assert_eq!(o.out.len(), frames.len());
    let macs: HashSet<[u8; 6]> = [[2, 0, 0, 0, 0x31, 1], [2, 0, 0, 0, 0x32, 1]].into();
    let mut seen = HashSet::new();
    let src_macs: HashSet<[u8; 6]> = o.out.iter().map(|f| f[6..12].try_into().unwrap()).collect();
    assert_eq!(src_macs.len(), 1, "one port MAC as source");
    for (f, input) in o.out.iter().zip(&frames) {
        let dst: [u8; 6] = f[0..6].try_into().unwrap();
        assert!(macs.contains(&dst), "destination is a backend MAC");
        seen.insert(dst);
        assert_eq!(
            &f[12..],
            &input[12..],
            "everything after the MACs is untouched"
        );
    }
    assert_eq!(seen.len(), 2, "both backends used");
}

#[test]
fn icmp_errors_reach_the_backend_of_their_flow() {
    let vip = v4("192.0.2.40");
    let backends = [
        ("198.51.100.41", 1u32),
        ("198.51.100.42", 1),
        ("198.51.100.43", 1),
    ];
    let mut frames = Vec::new();
    for i in 0..100u32 {
        frames.push(tcp_frame(client_v4(i), vip, 4000 + i as u16, 80, SYN, b""));
    }
    // A router on the way back reports, for every flow, that the backend's answer
    // (VIP:80 -> client) needs fragmentation: it quotes that answer.
    for i in 0..100u32 {
        let IpAddr::V4(c) = client_v4(i) else {
            unreachable!()
        };
        let quoted = ipv4(
            Ipv4Addr::new(192, 0, 2, 40),
            c,
            6,
            V4 {
                df: true,
                ..V4::default()
            },
            &tcp(80, 4000 + i as u16, ACK, &[0u8; 32]),
        );
        let mut icmp = vec![3u8, 4, 0, 0, 0, 0, 0x05, 0x00];
        icmp.extend_from_slice(&quoted[..28]);
        let c = checksum(&icmp, 0);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        frames.push(eth(
            0x0800,
            &ipv4(
                Ipv4Addr::new(198, 18, 255, 1),
                Ipv4Addr::new(192, 0, 2, 40),
                1,
                V4::default(),
                &icmp,
            ),
        ));
    }
    // And an error about a flow that is not a VIP's: the kernel's business.
    let quoted = ipv4(
        LB_V4,
        Ipv4Addr::new(198, 18, 0, 9),
        6,
        V4::default(),
        &tcp(22, 5555, ACK, b""),
    );
    let mut icmp = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted[..28]);
    let c = checksum(&icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let stray = eth(
        0x0800,
        &ipv4(
            Ipv4Addr::new(198, 18, 255, 1),
            LB_V4,
            1,
            V4::default(),
            &icmp,
        ),
    );
    frames.push(stray.clone());

    let o = run_fulcrum(
        &frames,
        &vip_toml("192.0.2.40:80", "tcp", "ipip", "", &backends),
        "",
    );
    assert_clean_exit(&o);
    assert_eq!(o.out.len(), 200, "{}", o.totals);
    assert_eq!(o.total("icmp_errors_forwarded"), 100);
    let mut flow_backend: HashMap<(Vec<u8>, u16), IpAddr> = HashMap::new();
    for f in &o.out {
        let t = untunnel(f);
        let inner = &t.inner;
        if inner[9] == 6 {
            let client = inner[12..16].to_vec();
            let sport = u16::from_be_bytes([inner[20], inner[21]]);
            flow_backend.insert((client, sport), t.outer_dst);
        }
    }
    for f in &o.out {
        let t = untunnel(f);
        let inner = &t.inner;
        if inner[9] == 1 {
            // Quoted packet starts at 20 (outer ICMP-carrying IPv4) + 8 (ICMP header).
            let q = &inner[28..];
            let client = q[16..20].to_vec();
            let cport = u16::from_be_bytes([q[22], q[23]]);
            let b = flow_backend
                .get(&(client, cport))
                .expect("the flow was seen");
            assert_eq!(*b, t.outer_dst, "the ICMP error follows its flow's backend");
        }
    }
    assert_eq!(
        o.exception,
        vec![stray],
        "the stray error goes to the kernel unchanged"
    );
}

#[test]
fn fragments_of_a_datagram_share_a_backend() {
    let backends = [
        ("198.51.100.51", 1u32),
        ("198.51.100.52", 1),
        ("198.51.100.53", 1),
    ];
    let mut frames = Vec::new();
    let mut v6frames = Vec::new();
    for i in 0..300u32 {
        let IpAddr::V4(c) = client_v4(i * 7) else {
            unreachable!()
        };
        let vip = Ipv4Addr::new(192, 0, 2, 50);
        let body = udp(5000 + i as u16, 53, &[7u8; 40]);
        let id = i as u16;
        frames.push(eth(
            0x0800,
            &ipv4(
                c,
                vip,
                17,
                V4 {
                    id,
                    more_fragments: true,
                    ..V4::default()
                },
                &body[..24],
            ),
        ));
        frames.push(eth(
            0x0800,
            &ipv4(
                c,
                vip,
                17,
                V4 {
                    id,
                    frag_offset8: 3,
                    more_fragments: true,
                    ..V4::default()
                },
                &body[24..40],
            ),
        ));
        frames.push(eth(
            0x0800,
            &ipv4(
                c,
                vip,
                17,
                V4 {
                    id,
                    frag_offset8: 5,
                    ..V4::default()
                },
                &body[40..],
            ),
        ));
        let IpAddr::V6(c6) = client_v6(i * 7) else {
            unreachable!()
        };
        let vip6: Ipv6Addr = "2001:db8:10::50".parse().unwrap();
        let body6 = udp(5000 + i as u16, 53, &[9u8; 40]);
        v6frames.push(eth(
            0x86dd,
            &ipv6(
                c6,
                vip6,
                44,
                64,
                &ipv6_fragment(17, 0, true, i, &body6[..24]),
            ),
        ));
        v6frames.push(eth(
            0x86dd,
            &ipv6(
                c6,
                vip6,
                44,
                64,
                &ipv6_fragment(17, 3, false, i, &body6[24..]),
            ),
        ));
    }
    frames.extend(v6frames);
    let mut vips = vip_toml("192.0.2.50:53", "udp", "ipip", "", &backends);
    vips += &vip_toml("[2001:db8:10::50]:53", "udp", "ipip", "", &backends);
    let o = run_fulcrum(&frames, &vips, "");
    assert_clean_exit(&o);
    assert_eq!(o.out.len(), frames.len(), "{}", o.totals);
    assert_eq!(o.total("fragments"), frames.len() as u64);
    // Datagram identity: (inner source address, IP id / fragment id).
    let mut datagram_backend: HashMap<(Vec<u8>, u32), IpAddr> = HashMap::new();
    let mut used = HashSet::new();
    for f in &o.out {
        let t = untunnel(f);
        let i = &t.inner;
        let key = if i[0] >> 4 == 4 {
            (i[12..16].to_vec(), u16::from_be_bytes([i[4], i[5]]) as u32)
        } else {
            (
                i[8..24].to_vec(),
                u32::from_be_bytes([i[44], i[45], i[46], i[47]]),
            )
        };
        used.insert(t.outer_dst);
        if let Some(prev) = datagram_backend.insert(key, t.outer_dst) {
            assert_eq!(
                prev, t.outer_dst,
                "all fragments of a datagram on one backend"
            );
        }
    }
    assert_eq!(
        used.len(),
        3,
        "fragmented traffic still spreads over backends"
    );
}

#[test]
fn too_big_packets_get_frag_needed_or_packet_too_big() {
    let b4 = [("198.51.100.61", 1u32)];
    let b6 = [("2001:db8:2::61", 1u32)];
    let mut vips = vip_toml("192.0.2.60:80", "tcp", "ipip", "", &b4);
    vips += &vip_toml("[2001:db8:10::60]:80", "tcp", "ipip", "", &b6);
    let client = Ipv4Addr::new(198, 18, 6, 1);
    let client6: Ipv6Addr = "2001:db8:c::61".parse().unwrap();
    let big_df = eth(
        0x0800,
        &ipv4(
            client,
            Ipv4Addr::new(192, 0, 2, 60),
            6,
            V4 {
                df: true,
                ..V4::default()
            },
            &tcp(6000, 80, ACK, &[1u8; 1460]),
        ),
    );
    let big_no_df = eth(
        0x0800,
        &ipv4(
            client,
            Ipv4Addr::new(192, 0, 2, 60),
            6,
            V4::default(),
            &tcp(6001, 80, ACK, &[1u8; 1460]),
        ),
    );
    let fits = eth(
        0x0800,
        &ipv4(
            client,
            Ipv4Addr::new(192, 0, 2, 60),
            6,
            V4 {
                df: true,
                ..V4::default()
            },
            &tcp(6002, 80, ACK, &[1u8; 1440]),
        ),
    );
    let big6 = eth(
        0x86dd,
        &ipv6(
            client6,
            "2001:db8:10::60".parse().unwrap(),
            6,
            64,
            &tcp(6003, 80, ACK, &[1u8; 1440]),
        ),
    );
    let frames = vec![big_df.clone(), big_no_df, fits, big6.clone()];
    let o = run_fulcrum(&frames, &vips, "");
    assert_clean_exit(&o);
    assert_eq!(
        o.drops("mtu"),
        1,
        "IPv4 without DF cannot be told to shrink: dropped"
    );
    assert_eq!(o.total("icmp_too_big_sent"), 2);
    assert_eq!(o.out.len(), 3);
    let mut replies = 0;
    for f in &o.out {
        let sp = SlicedPacket::from_ethernet(f).expect("parse");
        match (&sp.net, &sp.transport) {
            (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Icmpv4(icmp))) => {
                replies += 1;
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum());
                assert_eq!(h.source, [192, 0, 2, 60], "from the VIP");
                assert_eq!(h.destination, client.octets(), "to the client");
                assert_eq!(&f[0..6], &CLIENT_MAC, "back to the sender's MAC");
                assert_eq!(icmp.type_u8(), 3);
                assert_eq!(icmp.code_u8(), 4);
                let mtu = u16::from_be_bytes([icmp.slice()[6], icmp.slice()[7]]);
                assert_eq!(mtu, 1480, "port MTU minus the IPIP header");
                assert_eq!(checksum(icmp.slice(), 0), 0, "ICMP checksum");
                let quoted = &icmp.slice()[8..];
                assert!(quoted.len() >= 28);
                assert_eq!(
                    quoted,
                    &big_df[14..14 + quoted.len()],
                    "quotes the original"
                );
            }
            (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Icmpv6(icmp))) => {
                replies += 1;
                let h = ip.header();
                assert_eq!(
                    h.source_addr(),
                    "2001:db8:10::60".parse::<Ipv6Addr>().unwrap()
                );
                assert_eq!(h.destination_addr(), client6);
                assert_eq!(icmp.type_u8(), 2, "packet too big");
                let mtu = u32::from_be_bytes(icmp.slice()[4..8].try_into().unwrap());
                assert_eq!(mtu, 1460, "port MTU minus the IPv6 outer header");
                let hdr = icmp.header();
                let want = hdr
                    .icmp_type
                    .calc_checksum(h.source(), h.destination(), icmp.payload())
                    .expect("checksum");
                assert_eq!(hdr.checksum, want, "ICMPv6 checksum");
                let quoted = icmp.payload();
                assert_eq!(quoted, &big6[14..14 + quoted.len()]);
                assert!(
                    14 + 40 + 8 + quoted.len() <= 14 + 1280,
                    "within the IPv6 minimum MTU"
                );
            }
            _ => {
                let t = untunnel(f);
                assert_eq!(
                    t.inner,
                    frames[2][14..].to_vec(),
                    "the packet that fits is forwarded"
                );
            }
        }
    }
    assert_eq!(replies, 2);
}

#[test]
fn exception_path_gets_what_is_not_for_a_vip_untouched() {
    let backends = [("198.51.100.71", 1u32)];
    let vips = vip_toml("192.0.2.70:80", "tcp", "ipip", "", &backends);
    let mut arp = vec![0u8, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[198, 18, 0, 1]);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&LB_V4.octets());
    let mut arp_frame = eth(0x0806, &arp);
    arp_frame[0..6].copy_from_slice(&[0xff; 6]);
    let client = v4("198.18.0.1");
    let ping = eth(
        0x0800,
        &ipv4(
            Ipv4Addr::new(198, 18, 0, 1),
            LB_V4,
            1,
            V4::default(),
            &[8, 0, 0xf7, 0xff, 0, 0, 0, 0],
        ),
    );
    let ssh = tcp_frame(client, IpAddr::V4(LB_V4), 40000, 22, SYN, b"");
    let other_port = tcp_frame(client, v4("192.0.2.70"), 40001, 8080, SYN, b"");
    let nd = eth(
        0x86dd,
        &ipv6(
            "2001:db8:c::1".parse().unwrap(),
            LB_V6,
            58,
            255,
            &[135, 0, 0, 0, 0, 0, 0, 0],
        ),
    );
    let vip_pkt = tcp_frame(client, v4("192.0.2.70"), 40002, 80, SYN, b"");
    let expected = vec![arp_frame, ping, ssh, other_port, nd];
    let mut frames = expected.clone();
    frames.push(vip_pkt);
    let o = run_fulcrum(&frames, &vips, "");
    assert_clean_exit(&o);
    assert_eq!(o.exception, expected, "byte for byte, in order");
    assert_eq!(o.out.len(), 1, "only the VIP packet is balanced");
    assert_eq!(o.total("to_kernel_packets"), 5);
}

/// Issue 11, defects 3 and 5, through the real binary: fragments obey the VIP's port, and
/// frames to another station's MAC are not balanced.
#[test]
fn fragments_obey_the_vip_port_and_frames_to_other_macs_are_dropped() {
    let backends = [
        ("198.51.100.91", 1u32),
        ("198.51.100.92", 1),
        ("198.51.100.93", 1),
    ];
    let mut vips = vip_toml("192.0.2.90:80", "tcp", "ipip", "", &backends);
    vips += &vip_toml("[2001:db8:10::90]:80", "tcp", "ipip", "", &backends);
    vips += &vip_toml("192.0.2.91:0", "udp", "ipip", "", &backends);
    let (vip4, vip6) = (
        Ipv4Addr::new(192, 0, 2, 90),
        "2001:db8:10::90".parse::<Ipv6Addr>().unwrap(),
    );
    let frag4 =
        |c: Ipv4Addr, dst: Ipv4Addr, proto: u8, id: u16, off: u16, more: bool, body: &[u8]| {
            let o = V4 {
                id,
                frag_offset8: off,
                more_fragments: more,
                ..V4::default()
            };
            eth(0x0800, &ipv4(c, dst, proto, o, body))
        };
    let mut balanced = Vec::new();
    let mut kernel = Vec::new();
    let mut frames = Vec::new();
    for i in 0..20u32 {
        let IpAddr::V4(c) = client_v4(i) else {
            unreachable!()
        };
        let IpAddr::V6(c6) = client_v6(i) else {
            unreachable!()
        };
        let sport = 41000 + i as u16;
        // The flow's unfragmented SYN, then a 40-byte segment of it in two fragments.
        let body = tcp(sport, 80, ACK, &[5u8; 20]);
        frames.push(tcp_frame(
            IpAddr::V4(c),
            IpAddr::V4(vip4),
            sport,
            80,
            SYN,
            b"",
        ));
        frames.push(frag4(c, vip4, 6, i as u16, 0, true, &body[..24]));
        frames.push(frag4(c, vip4, 6, i as u16, 3, false, &body[24..]));
        let body6 = tcp(sport, 80, ACK, &[6u8; 20]);
        frames.push(tcp_frame(
            IpAddr::V6(c6),
            IpAddr::V6(vip6),
            sport,
            80,
            SYN,
            b"",
        ));
        frames.push(eth(
            0x86dd,
            &ipv6(
                c6,
                vip6,
                44,
                64,
                &ipv6_fragment(6, 0, true, 0x10000 + i, &body6[..24]),
            ),
        ));
        frames.push(eth(
            0x86dd,
            &ipv6(
                c6,
                vip6,
                44,
                64,
                &ipv6_fragment(6, 3, false, 0x10000 + i, &body6[24..]),
            ),
        ));
        balanced.extend(frames[frames.len() - 6..].iter().cloned());
        // A SYN to port 22 of the same addresses, in two fragments: the kernel's, whole.
        let ssh = tcp(sport, 22, SYN, &[7u8; 20]);
        let ssh4 = [
            frag4(c, vip4, 6, 1000 + i as u16, 0, true, &ssh[..24]),
            frag4(c, vip4, 6, 1000 + i as u16, 3, false, &ssh[24..]),
        ];
        let ssh6 = [
            eth(
                0x86dd,
                &ipv6(
                    c6,
                    vip6,
                    44,
                    64,
                    &ipv6_fragment(6, 0, true, 0x20000 + i, &ssh[..24]),
                ),
            ),
            eth(
                0x86dd,
                &ipv6(
                    c6,
                    vip6,
                    44,
                    64,
                    &ipv6_fragment(6, 3, false, 0x20000 + i, &ssh[24..]),
                ),
            ),
        ];
        for f in ssh4.into_iter().chain(ssh6) {
            kernel.push(f.clone());
            frames.push(f);
        }
        // Later fragments whose first fragment never came: dropped.
        frames.push(frag4(c, vip4, 6, 2000 + i as u16, 3, false, &[0u8; 16]));
        frames.push(eth(
            0x86dd,
            &ipv6(
                c6,
                vip6,
                44,
                64,
                &ipv6_fragment(6, 3, false, 0x30000 + i, &[0u8; 16]),
            ),
        ));
        // An all-ports UDP VIP: later fragment first, still balanced.
        let u = udp(sport, 53, &[8u8; 32]);
        frames.push(frag4(
            c,
            Ipv4Addr::new(192, 0, 2, 91),
            17,
            3000 + i as u16,
            3,
            false,
            &u[24..],
        ));
        frames.push(frag4(
            c,
            Ipv4Addr::new(192, 0, 2, 91),
            17,
            3000 + i as u16,
            0,
            true,
            &u[..24],
        ));
        balanced.extend(frames[frames.len() - 2..].iter().cloned());
    }
    // A flow's packet to another station's MAC.
    let mut stray = tcp_frame(client_v4(999), IpAddr::V4(vip4), 40999, 80, SYN, b"");
    stray[0..6].copy_from_slice(&[0x02, 0x99, 0, 0, 0, 1]);
    frames.push(stray);
    let o = run_fulcrum(&frames, &vips, "");
    assert_clean_exit(&o);
    assert_eq!(o.out.len(), balanced.len(), "{}", o.totals);
    assert_eq!(
        o.exception, kernel,
        "the port-22 datagrams go to the kernel whole, in order"
    );
    assert_eq!(o.drops("fragment_no_first"), 40, "{}", o.totals);
    assert_eq!(o.drops("not_our_mac"), 1, "{}", o.totals);
    // Per client and family: the SYN's backend is the one both fragments went to; per
    // all-ports datagram, both fragments on one backend.
    let mut by_flow: HashMap<Vec<u8>, HashSet<IpAddr>> = HashMap::new();
    for f in &o.out {
        let t = untunnel(f);
        let i = &t.inner;
        assert_ne!(i.len(), 0);
        // (family, protocol, client address): fragments keep the IPv4 protocol field.
        let src = if i[0] >> 4 == 4 {
            [&[4, i[9]], &i[12..16]].concat()
        } else {
            [&[6][..], &i[8..24]].concat()
        };
        by_flow.entry(src).or_default().insert(t.outer_dst);
    }
    assert_eq!(by_flow.len(), 60, "20 clients x (tcp v4, tcp v6, udp v4)");
    for (flow, used) in &by_flow {
        assert_eq!(used.len(), 1, "one backend for {flow:?}: {used:?}");
    }
}

/// `[dataplane] burst` sets how many packets a worker takes per RX burst: net_pcap hands over
/// as many as asked for, so 1000 queued packets arrive in ceil(1000 / burst) bursts.
#[test]
fn the_configured_burst_sizes_rx_bursts() {
    let vip = v4("192.0.2.10");
    let frames: Vec<Vec<u8>> = (0..1000)
        .map(|i| tcp_frame(client_v4(i), vip, 1024 + i as u16, 80, SYN, b""))
        .collect();
    let vips = vip_toml("192.0.2.10:80", "tcp", "ipip", "", &[("198.51.100.11", 1)]);
    let o = run_fulcrum_with(&frames, &vips, "", 1500, "burst = 256");
    assert_clean_exit(&o);
    assert_eq!(o.total("rx_packets"), 1000, "{}", o.stderr);
    assert_eq!(o.out.len(), 1000, "every packet forwarded");
    assert_eq!(o.total("bursts"), 4, "1000 packets in bursts of up to 256");
}
