//! Jumbo frames through the real binary on net_pcap: with `mtu = 9000`, 8000-byte TCP
//! segments leave in every encap mode byte for byte, and every mbuf returns to the pool.

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::golden::*;
use etherparse::{NetSlice, SlicedPacket};

const SEGMENT: usize = 8000;

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
}
fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

/// An 8000-byte payload that differs per flow and per segment, so a truncated, reordered or
/// mixed-up segment cannot match another's bytes.
fn payload(flow: u32, seg: u32) -> Vec<u8> {
    (0..SEGMENT)
        .map(|i| {
            (i as u32)
                .wrapping_mul(31)
                .wrapping_add(flow * 7 + seg * 13) as u8
        })
        .collect()
}

/// The bytes an encapsulated frame carries behind its outer headers (IPv4/IPv6, plus UDP for
/// GUE), checked against the outer lengths.
fn inner_of(frame: &[u8]) -> Vec<u8> {
    let sp = SlicedPacket::from_ethernet(frame).unwrap_or_else(|e| panic!("etherparse: {e:?}"));
    let (start, proto, outer_len) = match sp.net {
        Some(NetSlice::Ipv4(ref ip)) => {
            let h = ip.header();
            let hdr = h.to_header();
            assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
            (
                14 + h.slice().len(),
                h.protocol().0,
                usize::from(h.total_len()),
            )
        }
        Some(NetSlice::Ipv6(ref ip)) => {
            let h = ip.header();
            (
                14 + 40,
                h.next_header().0,
                40 + usize::from(h.payload_length()),
            )
        }
        ref other => panic!("no outer IP: {other:?}"),
    };
    assert_eq!(outer_len, frame.len() - 14, "outer length covers the frame");
    let start = if proto == 17 { start + 8 } else { start };
    frame[start..].to_vec()
}

#[test]
fn jumbo_segments_pass_every_encap_mode_byte_exact() {
    let mut vips = String::new();
    vips += "[[vip]]\naddress = \"192.0.2.40:80\"\nprotocol = \"tcp\"\nencap = \"ipip\"\n\
             [[vip.backend]]\naddress = \"198.51.100.41\"\nweight = 1\n";
    vips += "[[vip]]\naddress = \"[2001:db8:10::40]:80\"\nprotocol = \"tcp\"\nencap = \"ipip\"\n\
             [[vip.backend]]\naddress = \"2001:db8:2::41\"\nweight = 1\n";
    vips += "[[vip]]\naddress = \"192.0.2.41:80\"\nprotocol = \"tcp\"\nencap = \"gue\"\ngue_port = 6080\n\
             [[vip.backend]]\naddress = \"198.51.100.42\"\nweight = 1\n";
    vips += "[[vip]]\naddress = \"[2001:db8:10::41]:80\"\nprotocol = \"tcp\"\nencap = \"gue\"\ngue_port = 6080\n\
             [[vip.backend]]\naddress = \"2001:db8:2::42\"\nweight = 1\n";
    vips += "[[vip]]\naddress = \"192.0.2.42:80\"\nprotocol = \"tcp\"\nencap = \"l2dsr\"\n\
             [[vip.backend]]\naddress = \"203.0.113.43\"\nweight = 1\nmac = \"02:00:00:00:43:01\"\n";
    let vip_addrs = [
        (v4("192.0.2.40"), "ipip"),
        (v6("2001:db8:10::40"), "ipip"),
        (v4("192.0.2.41"), "gue"),
        (v6("2001:db8:10::41"), "gue"),
        (v4("192.0.2.42"), "l2dsr"),
    ];
    let mut frames = Vec::new();
    let mut want_inner = HashSet::new();
    let mut want_l2dsr = HashSet::new();
    for (k, (vip, mode)) in vip_addrs.iter().enumerate() {
        let client = match vip {
            IpAddr::V4(_) => v4("198.18.0.9"),
            IpAddr::V6(_) => v6("2001:db8:c::9"),
        };
        for seg in 0..4u32 {
            let flags = if seg == 0 { SYN } else { ACK };
            let f = tcp_frame(
                client,
                *vip,
                40000 + k as u16,
                80,
                flags,
                &payload(k as u32, seg),
            );
            assert!(f.len() >= SEGMENT + 14 + 20 + 20, "a jumbo frame");
            if *mode == "l2dsr" {
                want_l2dsr.insert(f[12..].to_vec());
            } else {
                want_inner.insert(f[14..].to_vec());
            }
            frames.push(f);
        }
    }
    let o = run_fulcrum_mtu(&frames, &vips, "", 9000);
    assert!(
        o.status.success(),
        "fulcrum failed: {:?}\n{}",
        o.status,
        o.stderr
    );
    assert_eq!(
        o.out.len(),
        frames.len(),
        "every jumbo segment forwarded\n{}\n{}",
        o.totals,
        o.stderr
    );
    for f in &o.out {
        if f[0..6] == [0x02, 0, 0, 0, 0x43, 0x01] {
            assert!(
                want_l2dsr.remove(&f[12..]),
                "l2dsr frame changed beyond its MACs ({} bytes)",
                f.len()
            );
        } else {
            let inner = inner_of(f);
            assert!(
                want_inner.remove(&inner),
                "an encapsulated segment does not match any input byte for byte ({} bytes)",
                inner.len()
            );
        }
    }
    assert!(want_inner.is_empty() && want_l2dsr.is_empty());
    for reason in ["parse_error", "buffer", "mtu"] {
        assert_eq!(o.drops(reason), 0, "{reason} drops\n{}", o.totals);
    }
    assert_eq!(o.total("rx_packets"), frames.len() as u64);
    assert_eq!(
        o.totals["mempool_in_use_at_exit"].as_u64(),
        Some(0),
        "every mbuf returned to the pool"
    );
}
