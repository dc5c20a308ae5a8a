//! The malformed corpus through the real binary: every broken frame is a counted drop or goes
//! to the kernel, fulcrum does not crash, every packet is accounted for, and every mbuf is
//! back in the pool at exit.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::golden::*;

fn corpus() -> Vec<Vec<u8>> {
    let vip4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 80));
    let vip6 = IpAddr::V6("2001:db8:10::80".parse::<Ipv6Addr>().unwrap());
    let c4 = IpAddr::V4(Ipv4Addr::new(198, 18, 8, 1));
    let c6 = IpAddr::V6("2001:db8:c::81".parse::<Ipv6Addr>().unwrap());
    let valid = vec![
        tcp_frame(c4, vip4, 1111, 80, SYN, b"hello"),
        udp_frame(c4, vip4, 1112, 53, b"query"),
        tcp_frame(c6, vip6, 1113, 80, SYN, b"hello6"),
        udp_frame(c6, vip6, 1114, 53, b"query6"),
    ];
    let mut out = Vec::new();
    // Truncated at every byte (including zero-length and runt frames).
    for v in &valid {
        for len in 0..v.len() {
            out.push(v[..len].to_vec());
        }
    }
    let base = tcp_frame(c4, vip4, 2222, 80, SYN, b"payload");
    // Bad IHL: below 5, and longer than the packet.
    for ihl in [0u8, 1, 4, 15] {
        let mut f = base.clone();
        f[14] = 0x40 | ihl;
        out.push(f);
    }
    // Total length larger and smaller than the frame / header.
    for total in [0u16, 19, 20, 21, 2000, u16::MAX] {
        let mut f = base.clone();
        f[16..18].copy_from_slice(&total.to_be_bytes());
        out.push(f);
    }
    // Wrong version for the ethertype.
    let mut f = base.clone();
    f[14] = 0x65;
    out.push(f);
    // IPv4 with options that claim more than there is.
    let mut opts = ipv4(
        Ipv4Addr::new(198, 18, 8, 2),
        Ipv4Addr::new(192, 0, 2, 80),
        6,
        V4::default(),
        &tcp(1, 80, SYN, b""),
    );
    opts[0] = 0x46;
    out.push(eth(0x0800, &opts));
    // IPv6 payload length lies (too long, too short).
    for plen in [0u16, 5, 1000, u16::MAX] {
        let mut f = tcp_frame(c6, vip6, 3333, 80, SYN, b"x");
        f[18..20].copy_from_slice(&plen.to_be_bytes());
        out.push(f);
    }
    // IPv6 extension header chain that runs off the end / loops of hop-by-hop.
    let c6a: Ipv6Addr = "2001:db8:c::82".parse().unwrap();
    let v6a: Ipv6Addr = "2001:db8:10::80".parse().unwrap();
    out.push(eth(0x86dd, &ipv6(c6a, v6a, 0, 64, &[6, 200, 0, 0])));
    out.push(eth(
        0x86dd,
        &ipv6(
            c6a,
            v6a,
            60,
            64,
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
    ));
    // TCP data offset nonsense, UDP length lies.
    let mut f = base.clone();
    f[14 + 20 + 12] = 0x20;
    out.push(f);
    let mut f = udp_frame(c4, vip4, 4444, 53, b"abc");
    f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&3u16.to_be_bytes());
    out.push(f);
    // ICMP errors quoting garbage.
    for quote in [
        &[][..],
        &[0x45u8, 0, 0][..],
        &[0x99u8; 28][..],
        &[0x60u8; 20][..],
    ] {
        let mut icmp = vec![3u8, 4, 0, 0, 0, 0, 5, 0];
        icmp.extend_from_slice(quote);
        out.push(eth(
            0x0800,
            &ipv4(
                Ipv4Addr::new(198, 18, 255, 1),
                Ipv4Addr::new(192, 0, 2, 80),
                1,
                V4::default(),
                &icmp,
            ),
        ));
    }
    // Deterministic pseudo-random bytes with IP ethertypes.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 200) as usize;
        let mut f: Vec<u8> = (0..len)
            .map(|k| (x.rotate_left(k as u32 % 64) >> 7) as u8)
            .collect();
        if f.len() >= 14 {
            f[12..14].copy_from_slice(if i % 2 == 0 {
                &[0x08, 0x00]
            } else {
                &[0x86, 0xdd]
            });
        }
        out.push(f);
    }
    out
}

#[test]
fn malformed_frames_are_counted_drops_and_nothing_leaks() {
    let frames = corpus();
    let vips = "[[vip]]\naddress = \"192.0.2.80:0\"\nprotocol = \"tcp\"\nencap = \"ipip\"\n[[vip.backend]]\naddress = \"198.51.100.81\"\nweight = 1\n\
                [[vip]]\naddress = \"192.0.2.80:53\"\nprotocol = \"udp\"\nencap = \"gue\"\n[[vip.backend]]\naddress = \"198.51.100.82\"\nweight = 1\n\
                [[vip]]\naddress = \"[2001:db8:10::80]:0\"\nprotocol = \"tcp\"\nencap = \"ipip\"\n[[vip.backend]]\naddress = \"2001:db8:2::81\"\nweight = 1\n\
                [[vip]]\naddress = \"[2001:db8:10::80]:53\"\nprotocol = \"udp\"\nencap = \"ipip\"\n[[vip.backend]]\naddress = \"198.51.100.83\"\nweight = 1\n";
    // Promiscuous: the corpus mangles destination MACs too, and is here for the parser.
    let o = run_fulcrum(&frames, vips, "promiscuous = true");
    assert!(
        o.status.success(),
        "fulcrum failed: {:?}\n{}",
        o.status,
        o.stderr
    );
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    let rx = o.total("rx_packets");
    assert_eq!(
        rx,
        frames.len() as u64,
        "every frame was received\n{}",
        o.totals
    );
    let tx = o.total("tx_packets");
    let kernel = o.total("to_kernel_packets");
    let drops: u64 = o.totals["drops"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(
        rx,
        tx + kernel + drops,
        "every packet accounted for: {}",
        o.totals
    );
    assert!(o.drops("parse_error") > 500, "{}", o.totals);
    let kinds = o.totals["parse_errors"].as_object().map_or(0, |m| m.len());
    assert!(kinds >= 8, "many distinct parse errors seen: {}", o.totals);
    assert_eq!(o.out.len() as u64, tx);
    assert_eq!(o.exception.len() as u64, kernel);
    assert_eq!(o.totals["mempool_in_use_at_exit"].as_u64(), Some(0));
}
