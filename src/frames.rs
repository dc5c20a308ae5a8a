//! Frames written byte by byte for the tests, the benchmarks and the fuzz targets: one
//! builder, so every input frame of the project is made one way. (The unit tests of `wire`
//! and `datapath` build theirs with etherparse instead, an independent implementation, so the
//! parser is never checked against its own idea of a header.) Not part of the API.
//!
//! Each function returns the header followed by `payload`, so frames nest inside out:
//! `ethernet(dst, src, ETHERTYPE_IPV4, &ipv4(.., &tcp(.., b"data")))`. Lengths and the IPv4
//! header checksum are filled in; TCP and UDP checksums are left zero (the data plane does
//! not check them). A length past 65,535 is written as 65,535.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
/// TCP flags.
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

/// The Internet checksum (RFC 1071) of `data`, starting from the partial sum `initial`.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn length(n: usize) -> [u8; 2] {
    (n.min(0xffff) as u16).to_be_bytes()
}

/// An Ethernet header.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An 802.1Q tag (after the MACs of an Ethernet header of type [`ETHERTYPE_VLAN`]): the
/// tag control word and the inner ethertype.
pub fn vlan(tci: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + payload.len());
    f.extend_from_slice(&tci.to_be_bytes());
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The fields of an IPv4 header that tests vary.
#[derive(Clone, Copy, Debug)]
pub struct V4 {
    pub ttl: u8,
    pub df: bool,
    pub id: u16,
    /// The fragment offset, in units of 8 bytes.
    pub frag_offset8: u16,
    pub more_fragments: bool,
}

impl Default for V4 {
    fn default() -> Self {
        V4 {
            ttl: 64,
            df: false,
            id: 0x1234,
            frag_offset8: 0,
            more_fragments: false,
        }
    }
}

/// An IPv4 header without options, its checksum filled in.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, o: V4, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&length(20 + payload.len()));
    h[4..6].copy_from_slice(&o.id.to_be_bytes());
    let flags = (o.frag_offset8 & 0x1fff)
        | if o.df { 0x4000 } else { 0 }
        | if o.more_fragments { 0x2000 } else { 0 };
    h[6..8].copy_from_slice(&flags.to_be_bytes());
    h[8] = o.ttl;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&h, 0);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 header.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&length(payload.len()));
    h[6] = next;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 fragment header (offset in units of 8 bytes).
pub fn ipv6_fragment(next: u8, offset8: u16, more: bool, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![next, 0, 0, 0, 0, 0, 0, 0];
    h[2..4].copy_from_slice(&((offset8 << 3) | u16::from(more)).to_be_bytes());
    h[4..8].copy_from_slice(&id.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// A TCP header without options: sequence number 1, window 65,535.
pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..8].copy_from_slice(&1u32.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h[14..16].copy_from_slice(&65535u16.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// A UDP header.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&length(8 + payload.len()));
    h.extend_from_slice(payload);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_tcp_frame_is_what_etherparse_reads() {
        let frame = ethernet(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            ETHERTYPE_IPV4,
            &ipv4(
                Ipv4Addr::new(198, 51, 100, 7),
                Ipv4Addr::new(192, 0, 2, 10),
                TCP,
                V4 {
                    df: true,
                    ..V4::default()
                },
                &tcp(40000, 80, SYN, b"abc"),
            ),
        );
        let p = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!("not IPv4: {:?}", p.net);
        };
        let h = ip.header();
        assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
        assert!(h.dont_fragment());
        assert_eq!(h.total_len(), 20 + 20 + 3);
        let Some(etherparse::TransportSlice::Tcp(t)) = p.transport else {
            panic!("not TCP");
        };
        assert_eq!(
            (t.source_port(), t.destination_port(), t.syn()),
            (40000, 80, true)
        );
        assert_eq!(t.payload(), b"abc");
    }

    #[test]
    fn a_tagged_ipv6_udp_fragment_is_what_etherparse_reads() {
        let inner = ipv6(
            "2001:db8::7".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
            44,
            64,
            &ipv6_fragment(UDP, 0, true, 9, &udp(53, 53, b"q")),
        );
        let frame = ethernet(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            ETHERTYPE_VLAN,
            &vlan(100, ETHERTYPE_IPV6, &inner),
        );
        let p = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
        assert!(p.vlan.is_some());
        let Some(etherparse::NetSlice::Ipv6(ip)) = p.net else {
            panic!("not IPv6");
        };
        assert_eq!(ip.header().payload_length(), 8 + 8 + 1);
        assert!(ip.is_payload_fragmented());
    }
}
