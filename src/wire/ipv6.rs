//! IPv6 (RFC 8200) and the walk over its extension headers.

use super::{get16, get32, put16, put32, ParseError};
use std::net::Ipv6Addr;

pub const HEADER_LEN: usize = 40;

/// The most extension headers [`walk_ext_headers`] follows before giving up. RFC 8200's
/// recommended order has at most 7 (two destination options); a longer chain is either an
/// attack on parsers or something the backend would not accept either.
pub const MAX_EXT_HEADERS: usize = 8;

/// Next-header values the walk knows.
pub mod next_header {
    pub const HOP_BY_HOP: u8 = 0;
    /// IPv4 encapsulated in IPv6.
    pub const IPV4: u8 = 4;
    /// IPv6 encapsulated in IPv4 or IPv6.
    pub const IPV6: u8 = 41;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AUTH: u8 = 51;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTIONS: u8 = 60;
}

/// Field offsets.
pub mod field {
    use core::ops::Range;
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// Field offsets of the fragment header (RFC 8200 section 4.5).
pub mod frag_field {
    pub const NEXT_HEADER: usize = 0;
    /// Offset (13 bits, units of 8 bytes), two reserved bits, M flag.
    pub const OFFSET_M: usize = 2;
    pub const IDENT: usize = 4;
    pub const LEN: usize = 8;
}

/// A view of an IPv6 packet: fixed header, then the payload up to the payload length.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// A view without checks; accessors panic on a buffer shorter than 40 bytes and
    /// `payload` when the payload length points past it. For writing a header.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view whose accessors cannot panic: version 6 and the payload length within the
    /// buffer (which may be longer: Ethernet padding).
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(ParseError::TruncatedIpv6);
        }
        if self.version() != 6 {
            return Err(ParseError::BadVersion);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(ParseError::Ipv6PayloadLength);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    pub fn traffic_class(&self) -> u8 {
        (get16(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4) as u8
    }

    pub fn flow_label(&self) -> u32 {
        get32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    pub fn payload_len(&self) -> u16 {
        get16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr(&self.buffer.as_ref()[field::SRC_ADDR]))
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr(&self.buffer.as_ref()[field::DST_ADDR]))
    }

    /// Extension headers and upper-layer data, up to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Writes version 6, the traffic class and the flow label (low 20 bits) at once.
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let word = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        put32(self.buffer.as_mut(), field::VER_TC_FLOW, word);
    }

    pub fn set_payload_len(&mut self, value: u16) {
        put16(self.buffer.as_mut(), field::PAYLOAD_LEN, value);
    }

    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = value;
    }

    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// A fixed IPv6 header (no extension headers) as a plain value: what the balancer writes
/// (the outer header of an encapsulation, the header of an ICMPv6 reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src_addr: Ipv6Addr,
    pub dst_addr: Ipv6Addr,
    pub next_header: u8,
    pub traffic_class: u8,
    /// The low 20 bits are written.
    pub flow_label: u32,
    /// The length after this header.
    pub payload_len: u16,
    pub hop_limit: u8,
}

impl Ipv6Repr {
    /// Writes the header. Into a fixed-size array the field writes compile to plain stores,
    /// without bounds checks.
    #[inline(always)]
    pub fn emit(&self, header: &mut [u8; HEADER_LEN]) {
        let mut ip = Ipv6Packet::new_unchecked(header);
        ip.set_version_tc_flow(self.traffic_class, self.flow_label);
        ip.set_payload_len(self.payload_len);
        ip.set_next_header(self.next_header);
        ip.set_hop_limit(self.hop_limit);
        ip.set_src_addr(self.src_addr);
        ip.set_dst_addr(self.dst_addr);
    }
}

/// What a fragment header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentInfo {
    /// Offset of this fragment's data in the datagram, in bytes.
    pub offset: u16,
    pub more_fragments: bool,
    pub ident: u32,
}

/// Where the extension headers end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpperLayer {
    /// The upper-layer protocol: TCP, UDP, ICMPv6, ... For a fragment, the fragment
    /// header's next header (every fragment of a datagram carries the same one, so all of
    /// them classify alike), even when that is another extension header.
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 payload.
    pub offset: usize,
    /// Set when a fragment header with a non-zero offset or the M flag was found; the walk
    /// stops there, as what follows belongs to the reassembled datagram. An atomic fragment
    /// (RFC 6946: offset 0, no M) is no fragment and the walk continues past it.
    pub fragment: Option<FragmentInfo>,
}

/// Whether `next_header` is one of the extension headers [`walk_ext_headers`] follows.
#[inline(always)]
pub const fn is_ext_header(next_header: u8) -> bool {
    matches!(
        next_header,
        next_header::HOP_BY_HOP
            | next_header::ROUTING
            | next_header::FRAGMENT
            | next_header::AUTH
            | next_header::DEST_OPTIONS
    )
}

/// Walks the extension headers at the start of `payload` (hop-by-hop, routing, destination
/// options, fragment, authentication), at most [`MAX_EXT_HEADERS`] of them, and reports
/// where the upper-layer header starts. The upper-layer header itself is not checked.
pub fn walk_ext_headers(first: u8, payload: &[u8]) -> Result<UpperLayer, ParseError> {
    let mut protocol = first;
    let mut offset = 0usize;
    for index in 0..=MAX_EXT_HEADERS {
        let header_len = match protocol {
            next_header::HOP_BY_HOP if index != 0 => return Err(ParseError::HopByHopNotFirst),
            next_header::HOP_BY_HOP | next_header::ROUTING | next_header::DEST_OPTIONS => {
                // Length in 8-byte units, not counting the first 8.
                let len = *payload
                    .get(offset + 1)
                    .ok_or(ParseError::TruncatedExtHeader)?;
                (usize::from(len) + 1) * 8
            }
            next_header::AUTH => {
                // RFC 4302: length in 4-byte units, minus 2.
                let len = *payload
                    .get(offset + 1)
                    .ok_or(ParseError::TruncatedExtHeader)?;
                (usize::from(len) + 2) * 4
            }
            next_header::FRAGMENT => {
                let frag = payload
                    .get(offset..offset + frag_field::LEN)
                    .ok_or(ParseError::TruncatedExtHeader)?;
                let offset_m = get16(frag, frag_field::OFFSET_M);
                let info = FragmentInfo {
                    offset: offset_m & 0xfff8,
                    more_fragments: offset_m & 1 != 0,
                    ident: get32(frag, frag_field::IDENT),
                };
                if info.offset != 0 || info.more_fragments {
                    return Ok(UpperLayer {
                        protocol: frag[frag_field::NEXT_HEADER],
                        offset: offset + frag_field::LEN,
                        fragment: Some(info),
                    });
                }
                frag_field::LEN
            }
            _ => {
                return Ok(UpperLayer {
                    protocol,
                    offset,
                    fragment: None,
                })
            }
        };
        if index == MAX_EXT_HEADERS {
            break;
        }
        let header = payload
            .get(offset..offset + header_len)
            .ok_or(ParseError::TruncatedExtHeader)?;
        protocol = header[0];
        offset += header_len;
    }
    Err(ParseError::TooManyExtHeaders)
}

fn addr(bytes: &[u8]) -> [u8; 16] {
    let mut out = [0; 16];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::flow::proto;

    #[test]
    fn repr_emits_what_the_view_reads_back() {
        let repr = Ipv6Repr {
            src_addr: "2001:db8::5".parse().unwrap(),
            dst_addr: "2001:db8::21".parse().unwrap(),
            next_header: proto::UDP,
            traffic_class: 0xb9,
            flow_label: 0xf_1234,
            payload_len: 8,
            hop_limit: 64,
        };
        let mut packet = [0xaau8; HEADER_LEN + 8];
        repr.emit(packet.first_chunk_mut().unwrap());
        let ip = Ipv6Packet::new_checked(&packet[..]).unwrap();
        let read = Ipv6Repr {
            src_addr: ip.src_addr(),
            dst_addr: ip.dst_addr(),
            next_header: ip.next_header(),
            traffic_class: ip.traffic_class(),
            flow_label: ip.flow_label(),
            payload_len: ip.payload_len(),
            hop_limit: ip.hop_limit(),
        };
        assert_eq!(read, repr);
        assert_eq!(ip.version(), 6);
    }

    fn sample(payload: &[u8], first: u8) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN + payload.len() + 3];
        let mut ip = Ipv6Packet::new_unchecked(&mut p[..]);
        ip.set_version_tc_flow(0xb8, 0xabcde);
        ip.set_payload_len(payload.len() as u16);
        ip.set_next_header(first);
        ip.set_hop_limit(7);
        ip.set_src_addr("2001:db8::1".parse().unwrap());
        ip.set_dst_addr("2001:db8::a".parse().unwrap());
        ip.payload_mut().copy_from_slice(payload);
        p
    }

    #[test]
    fn reads_back_what_was_written() {
        let p = sample(&[1, 2, 3], proto::UDP);
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(ip.version(), 6);
        assert_eq!(ip.traffic_class(), 0xb8);
        assert_eq!(ip.flow_label(), 0xabcde);
        assert_eq!(
            (ip.payload_len(), ip.next_header(), ip.hop_limit()),
            (3, 17, 7)
        );
        assert_eq!(ip.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.dst_addr(), "2001:db8::a".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.payload(), &[1, 2, 3]);
    }

    #[test]
    fn rejects_short_buffers_wrong_version_and_lying_payload_length() {
        let p = sample(&[1, 2, 3], proto::UDP);
        for len in 0..40 {
            let err = Ipv6Packet::new_checked(&p[..len]).err();
            assert_eq!(err, Some(ParseError::TruncatedIpv6));
        }
        for len in 40..43 {
            let err = Ipv6Packet::new_checked(&p[..len]).err();
            assert_eq!(err, Some(ParseError::Ipv6PayloadLength));
        }
        let mut v4 = p.clone();
        v4[0] = 0x40;
        assert_eq!(
            Ipv6Packet::new_checked(&v4[..]).err(),
            Some(ParseError::BadVersion)
        );
    }

    fn ext(next: u8, units: u8) -> Vec<u8> {
        let mut h = vec![0u8; (usize::from(units) + 1) * 8];
        h[0] = next;
        h[1] = units;
        h
    }

    #[test]
    fn walks_hop_by_hop_routing_destination_and_auth() {
        let mut payload = ext(next_header::ROUTING, 0);
        payload.extend(ext(next_header::DEST_OPTIONS, 1));
        payload.extend(ext(next_header::AUTH, 0));
        // AH with length field 1: (1 + 2) * 4 = 12 bytes.
        payload.extend([proto::TCP, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let upper = walk_ext_headers(next_header::HOP_BY_HOP, &payload).unwrap();
        assert_eq!(upper.protocol, proto::TCP);
        assert_eq!(upper.offset, 8 + 8 + 16 + 12);
        assert_eq!(upper.fragment, None);
    }

    #[test]
    fn stops_at_a_real_fragment_and_walks_past_an_atomic_one() {
        let frag = |offset_m: u16, next: u8| {
            let mut h = vec![next, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
            h[2..4].copy_from_slice(&offset_m.to_be_bytes());
            h
        };
        let mut payload = frag(1480 | 1, next_header::DEST_OPTIONS);
        payload.extend(ext(proto::UDP, 0));
        let upper = walk_ext_headers(next_header::FRAGMENT, &payload).unwrap();
        assert_eq!(upper.protocol, next_header::DEST_OPTIONS);
        assert_eq!(upper.offset, 8);
        let info = upper.fragment.unwrap();
        assert_eq!(
            (info.offset, info.more_fragments, info.ident),
            (1480, true, 0xdeadbeef)
        );

        let mut atomic = frag(0, next_header::DEST_OPTIONS);
        atomic.extend(ext(proto::UDP, 0));
        let upper = walk_ext_headers(next_header::FRAGMENT, &atomic).unwrap();
        assert_eq!(
            (upper.protocol, upper.offset, upper.fragment),
            (proto::UDP, 16, None)
        );
    }

    #[test]
    fn bounded_truncated_and_misordered_chains_are_errors() {
        let mut chain = Vec::new();
        for _ in 0..MAX_EXT_HEADERS {
            chain.extend(ext(next_header::DEST_OPTIONS, 0));
        }
        let upper_at_limit = {
            let mut c = chain.clone();
            let last = c.len() - 8;
            c[last] = proto::TCP;
            walk_ext_headers(next_header::DEST_OPTIONS, &c).unwrap()
        };
        assert_eq!(upper_at_limit.offset, MAX_EXT_HEADERS * 8);
        chain.extend(ext(proto::TCP, 0));
        assert_eq!(
            walk_ext_headers(next_header::DEST_OPTIONS, &chain),
            Err(ParseError::TooManyExtHeaders)
        );

        let two = [ext(next_header::DEST_OPTIONS, 1), ext(proto::TCP, 0)].concat();
        for len in 0..two.len() {
            assert_eq!(
                walk_ext_headers(next_header::DEST_OPTIONS, &two[..len]),
                Err(ParseError::TruncatedExtHeader),
                "len {len}"
            );
        }
        let late_hop_by_hop = ext(next_header::HOP_BY_HOP, 0);
        assert_eq!(
            walk_ext_headers(next_header::ROUTING, &late_hop_by_hop),
            Err(ParseError::HopByHopNotFirst)
        );
    }
}
