//! The classifier: one pass over a frame's headers into a `Copy` summary.
//!
//! Each header is read from a fixed-size array obtained with one length check
//! (`first_chunk`), so field reads at constant offsets carry no bounds checks and the
//! Ethernet/IPv4/TCP case runs straight through: ethertype, version/IHL/length checks,
//! fragment bits, protocol, data offset.

use super::{be16, be32, ethernet, icmp, ipv4, ipv6, tcp, udp, ParseError};
use crate::datapath::flow::{proto, FiveTuple};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IP version of a packet or of a tunnel's outer header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// A whole datagram (for IPv6 also an atomic fragment: offset 0 and no M flag).
    None,
    /// Offset 0 with more to come: carries the L4 header. For TCP and UDP its ports (and
    /// TCP flags) are read like an unfragmented packet's, so it is classified by them.
    First,
    /// A TCP or UDP first fragment too short to hold the whole transport header (20 bytes,
    /// 8 for UDP): its ports are unknown, and a rule on ports cannot be applied to it
    /// (RFC 1858's tiny fragments). Ports are zero.
    TinyFirst,
    /// Offset > 0: no L4 header.
    NonFirst,
}

/// The ICMP errors the balancer routes to the backend that owns the flow they quote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IcmpErrorKind {
    /// ICMPv4 type 3 (any code but 4) or ICMPv6 type 1.
    DestUnreachable,
    /// ICMPv4 type 3 code 4: fragmentation needed and DF set; carries the next-hop MTU.
    FragmentationNeeded,
    /// ICMPv4 type 11 or ICMPv6 type 3.
    TimeExceeded,
    /// ICMPv6 type 2; carries the MTU.
    PacketTooBig,
}

/// An ICMP error and the flow it is about.
///
/// With direct server return, backends answer clients with the VIP as source without
/// passing through the balancer, so an error about one of those answers (a router on the
/// way to the client cannot forward it) is sent to the VIP and arrives here. It quotes the
/// answer as sent, VIP -> client; `flow` is that quote reversed, client -> VIP, which is the
/// key the flow has in conntrack and what selects its backend, and has the VIP as `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IcmpError {
    pub kind: IcmpErrorKind,
    pub code: u8,
    /// The MTU for `FragmentationNeeded` and `PacketTooBig`, otherwise 0.
    pub mtu: u32,
    /// The quoted packet's 5-tuple, reversed. Ports are zero when the quote is not TCP or
    /// UDP or is a non-first fragment.
    pub flow: FiveTuple,
}

/// What the data plane needs to know about an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpMeta {
    /// 14, or 18 with an 802.1Q tag.
    pub l2_len: u8,
    /// The 802.1Q VLAN id.
    pub vlan: Option<u16>,
    pub family: Family,
    /// Offset of the IP header in the frame (equals `l2_len`).
    pub l3_offset: u16,
    /// Offset of the upper-layer header: after IPv4 options or IPv6 extension headers.
    /// For a non-first fragment, where that fragment's data starts.
    pub l4_offset: u16,
    /// Bytes of the IP packet, header included: the IPv4 total length, or 40 plus the IPv6
    /// payload length. Ethernet padding after it is not counted.
    pub ip_len: u32,
    /// IPv4 addresses are IPv4-mapped; ports are zero unless TCP or UDP, unfragmented or a
    /// first fragment.
    /// `proto` is the upper-layer protocol after any IPv6 extension headers.
    pub tuple: FiveTuple,
    pub fragment: Fragment,
    /// The IPv4 identification or the IPv6 fragment header's identification; 0 for an
    /// unfragmented IPv6 packet.
    pub frag_id: u32,
    /// Whether routers must not fragment this packet: the IPv4 DF bit, and always for IPv6
    /// (RFC 8200 section 5). The MTU check's "reply too-big or fragment" decision.
    pub dont_fragment: bool,
    pub ttl_or_hop_limit: u8,
    /// TCP flags (see [`super::tcp::flags`]), 0 for anything else.
    pub tcp_flags: u8,
    /// Set for the ICMP errors the balancer routes by the flow they quote.
    pub icmp_error: Option<IcmpError>,
}

impl IpMeta {
    /// Bytes from the upper-layer header to the end of the IP packet.
    pub fn l4_len(&self) -> usize {
        (usize::from(self.l3_offset) + self.ip_len as usize)
            .saturating_sub(usize::from(self.l4_offset))
    }

    pub fn src_addr(&self) -> IpAddr {
        addr_of(self.family, &self.tuple.src)
    }

    pub fn dst_addr(&self) -> IpAddr {
        addr_of(self.family, &self.tuple.dst)
    }
}

fn addr_of(family: Family, bytes: &[u8; 16]) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15])),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(*bytes)),
    }
}

/// The classifier's verdict on a frame it can handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Parsed {
    /// IPv4 or IPv6: balanced, or answered.
    Ip(IpMeta),
    /// Any other ethertype (ARP, LLDP, 802.1ad, ...): not an error, but the kernel's business
    /// (the exception path).
    NotIp {
        ethertype: u16,
        l2_len: u8,
        vlan: Option<u16>,
    },
}

/// Classifies one frame. Never panics, never allocates; `Err` is a counted drop.
#[inline]
pub fn parse(frame: &[u8]) -> Result<Parsed, ParseError> {
    let mut meta = IpMeta::UNSPECIFIED;
    Ok(match parse_frame(frame, &mut meta)? {
        Frame::Ip => Parsed::Ip(meta),
        Frame::NotIp {
            ethertype,
            l2_len,
            vlan,
        } => Parsed::NotIp {
            ethertype,
            l2_len,
            vlan,
        },
    })
}

impl IpMeta {
    /// Every field zero: a placeholder for storage that [`IpMeta::parse_into`] fills.
    pub const UNSPECIFIED: IpMeta = IpMeta {
        l2_len: 0,
        vlan: None,
        family: Family::V4,
        l3_offset: 0,
        l4_offset: 0,
        ip_len: 0,
        tuple: FiveTuple {
            src: [0; 16],
            dst: [0; 16],
            src_port: 0,
            dst_port: 0,
            proto: 0,
        },
        fragment: Fragment::None,
        frag_id: 0,
        dont_fragment: false,
        ttl_or_hop_limit: 0,
        tcp_flags: 0,
        icmp_error: None,
    };

    /// [`parse`] for a caller that keeps per-packet state in place, such as a worker's
    /// burst slots: an IP packet's summary is written into `self` (`Ok(true)`) instead of
    /// being returned. Copying a just-built summary out of a temporary reads back bytes
    /// stored moments before in smaller pieces, which store-to-load forwarding cannot
    /// serve; the pipeline measured that stall at a tenth of its per-packet cost
    /// (docs/benchmarks.md). `Ok(false)`: not IP (what [`parse`] calls `NotIp`). After
    /// `Ok(false)` or `Err`, `self` holds unspecified values.
    #[inline]
    pub fn parse_into(&mut self, frame: &[u8]) -> Result<bool, ParseError> {
        Ok(matches!(parse_frame(frame, self)?, Frame::Ip))
    }
}

/// What [`parse_frame`] found; for `Ip` the summary is in its `meta`.
enum Frame {
    Ip,
    NotIp {
        ethertype: u16,
        l2_len: u8,
        vlan: Option<u16>,
    },
}

#[inline(always)]
fn parse_frame(frame: &[u8], meta: &mut IpMeta) -> Result<Frame, ParseError> {
    use ethernet::{ethertype, field};
    let eth = frame
        .first_chunk::<{ ethernet::HEADER_LEN }>()
        .ok_or(ParseError::TruncatedEthernet)?;
    let mut payload_type = be16(eth, field::ETHERTYPE);
    let mut l2_len = ethernet::HEADER_LEN;
    let mut vlan = None;
    if payload_type == ethertype::VLAN {
        let tagged = frame
            .first_chunk::<{ ethernet::TAGGED_HEADER_LEN }>()
            .ok_or(ParseError::TruncatedEthernet)?;
        payload_type = be16(tagged, field::INNER_ETHERTYPE);
        vlan = Some(be16(tagged, field::VLAN_TCI) & 0x0fff);
        l2_len = ethernet::TAGGED_HEADER_LEN;
    }
    let l3 = frame.get(l2_len..).unwrap_or(&[]);
    match payload_type {
        ethertype::IPV4 => parse_ipv4(l3, l2_len, vlan, meta).map(|()| Frame::Ip),
        ethertype::IPV6 => parse_ipv6(l3, l2_len, vlan, meta).map(|()| Frame::Ip),
        _ => Ok(Frame::NotIp {
            ethertype: payload_type,
            l2_len: l2_len as u8,
            vlan,
        }),
    }
}

#[inline(always)]
fn parse_ipv4(
    l3: &[u8],
    l2_len: usize,
    vlan: Option<u16>,
    meta: &mut IpMeta,
) -> Result<(), ParseError> {
    use ipv4::{field, flags};
    let h = l3
        .first_chunk::<{ ipv4::HEADER_LEN }>()
        .ok_or(ParseError::TruncatedIpv4)?;
    let (header_len, total_len) =
        ipv4::validate(h[field::VER_IHL], be16(h, field::TOTAL_LEN), l3.len())?;
    let frag = be16(h, field::FLAGS_FRAG);
    let fragment = if frag & flags::OFFSET_MASK != 0 {
        Fragment::NonFirst
    } else if frag & flags::MORE_FRAGMENTS != 0 {
        Fragment::First
    } else {
        Fragment::None
    };
    *meta = IpMeta {
        l2_len: l2_len as u8,
        vlan,
        family: Family::V4,
        l3_offset: l2_len as u16,
        l4_offset: (l2_len + header_len) as u16,
        ip_len: total_len as u32,
        tuple: FiveTuple {
            src: mapped(h, field::SRC_ADDR.start),
            dst: mapped(h, field::DST_ADDR.start),
            src_port: 0,
            dst_port: 0,
            proto: h[field::PROTOCOL],
        },
        fragment,
        frag_id: u32::from(be16(h, field::IDENT)),
        dont_fragment: frag & flags::DONT_FRAGMENT != 0,
        ttl_or_hop_limit: h[field::TTL],
        tcp_flags: 0,
        icmp_error: None,
    };
    let l4 = l3.get(header_len..total_len).unwrap_or(&[]);
    match fragment {
        Fragment::None => parse_l4(l4, meta)?,
        Fragment::First => first_fragment_ports(l4, meta),
        Fragment::TinyFirst | Fragment::NonFirst => {}
    }
    Ok(())
}

#[inline(always)]
fn parse_ipv6(
    l3: &[u8],
    l2_len: usize,
    vlan: Option<u16>,
    meta: &mut IpMeta,
) -> Result<(), ParseError> {
    use ipv6::field;
    let h = l3
        .first_chunk::<{ ipv6::HEADER_LEN }>()
        .ok_or(ParseError::TruncatedIpv6)?;
    if h[field::VER_TC_FLOW] >> 4 != 6 {
        return Err(ParseError::BadVersion);
    }
    let payload_len = usize::from(be16(h, field::PAYLOAD_LEN));
    let payload = l3
        .get(ipv6::HEADER_LEN..ipv6::HEADER_LEN + payload_len)
        .ok_or(ParseError::Ipv6PayloadLength)?;
    let next_header = h[field::NEXT_HEADER];
    // Most IPv6 packets carry no extension header: skip the walk for them.
    let upper = if ipv6::is_ext_header(next_header) {
        ipv6::walk_ext_headers(next_header, payload)?
    } else {
        ipv6::UpperLayer {
            protocol: next_header,
            offset: 0,
            fragment: None,
        }
    };
    let (fragment, frag_id) = match upper.fragment {
        None => (Fragment::None, 0),
        Some(f) if f.offset == 0 => (Fragment::First, f.ident),
        Some(f) => (Fragment::NonFirst, f.ident),
    };
    *meta = IpMeta {
        l2_len: l2_len as u8,
        vlan,
        family: Family::V6,
        l3_offset: l2_len as u16,
        l4_offset: (l2_len + ipv6::HEADER_LEN + upper.offset) as u16,
        ip_len: (ipv6::HEADER_LEN + payload_len) as u32,
        tuple: FiveTuple {
            src: addr16(h, field::SRC_ADDR.start),
            dst: addr16(h, field::DST_ADDR.start),
            src_port: 0,
            dst_port: 0,
            proto: upper.protocol,
        },
        fragment,
        frag_id,
        dont_fragment: true,
        ttl_or_hop_limit: h[field::HOP_LIMIT],
        tcp_flags: 0,
        icmp_error: None,
    };
    let l4 = payload.get(upper.offset..).unwrap_or(&[]);
    match fragment {
        Fragment::None => parse_l4(l4, meta)?,
        Fragment::First => first_fragment_ports(l4, meta),
        Fragment::TinyFirst | Fragment::NonFirst => {}
    }
    Ok(())
}

/// Reads a first fragment's ports and TCP flags, or marks it [`Fragment::TinyFirst`] when it
/// does not hold the whole TCP or UDP header. Lengths and data offsets are not checked
/// against the datagram: only its end, in a later fragment, says how long it is.
#[inline(always)]
fn first_fragment_ports(l4: &[u8], meta: &mut IpMeta) {
    match meta.tuple.proto {
        proto::TCP => match l4.first_chunk::<{ tcp::HEADER_LEN }>() {
            Some(h) => {
                meta.tuple.src_port = be16(h, tcp::field::SRC_PORT);
                meta.tuple.dst_port = be16(h, tcp::field::DST_PORT);
                meta.tcp_flags = h[tcp::field::FLAGS];
            }
            None => meta.fragment = Fragment::TinyFirst,
        },
        proto::UDP => match l4.first_chunk::<{ udp::HEADER_LEN }>() {
            Some(h) => {
                meta.tuple.src_port = be16(h, udp::field::SRC_PORT);
                meta.tuple.dst_port = be16(h, udp::field::DST_PORT);
            }
            None => meta.fragment = Fragment::TinyFirst,
        },
        _ => {}
    }
}

/// Reads ports and flags, or the flow an ICMP error quotes, from an unfragmented packet's
/// upper-layer bytes (exactly up to the end of the IP packet).
#[inline(always)]
fn parse_l4(l4: &[u8], meta: &mut IpMeta) -> Result<(), ParseError> {
    match (meta.tuple.proto, meta.family) {
        (proto::TCP, _) => {
            let h = l4
                .first_chunk::<{ tcp::HEADER_LEN }>()
                .ok_or(ParseError::TruncatedL4)?;
            tcp::validate(h[tcp::field::DATA_OFFSET], l4.len())?;
            meta.tuple.src_port = be16(h, tcp::field::SRC_PORT);
            meta.tuple.dst_port = be16(h, tcp::field::DST_PORT);
            meta.tcp_flags = h[tcp::field::FLAGS];
        }
        (proto::UDP, _) => {
            let h = l4
                .first_chunk::<{ udp::HEADER_LEN }>()
                .ok_or(ParseError::TruncatedL4)?;
            udp::validate(be16(h, udp::field::LENGTH), l4.len())?;
            meta.tuple.src_port = be16(h, udp::field::SRC_PORT);
            meta.tuple.dst_port = be16(h, udp::field::DST_PORT);
        }
        (proto::ICMP, Family::V4) => meta.icmp_error = icmp_error_v4(l4)?,
        (proto::ICMPV6, Family::V6) => meta.icmp_error = icmp_error_v6(l4)?,
        _ => {}
    }
    Ok(())
}

fn icmp_error_v4(l4: &[u8]) -> Result<Option<IcmpError>, ParseError> {
    use icmp::{field, icmpv4};
    let (h, quote) = l4
        .split_first_chunk::<{ icmp::HEADER_LEN }>()
        .ok_or(ParseError::TruncatedL4)?;
    let (kind, mtu) = match (h[field::TYPE], h[field::CODE]) {
        (icmpv4::DEST_UNREACHABLE, icmpv4::CODE_FRAG_NEEDED) => (
            IcmpErrorKind::FragmentationNeeded,
            u32::from(be16(h, field::NEXT_HOP_MTU)),
        ),
        (icmpv4::DEST_UNREACHABLE, _) => (IcmpErrorKind::DestUnreachable, 0),
        (icmpv4::TIME_EXCEEDED, _) => (IcmpErrorKind::TimeExceeded, 0),
        _ => return Ok(None),
    };
    Ok(Some(IcmpError {
        kind,
        code: h[field::CODE],
        mtu,
        flow: quoted_flow_v4(quote)?,
    }))
}

fn icmp_error_v6(l4: &[u8]) -> Result<Option<IcmpError>, ParseError> {
    use icmp::{field, icmpv6};
    let (h, quote) = l4
        .split_first_chunk::<{ icmp::HEADER_LEN }>()
        .ok_or(ParseError::TruncatedL4)?;
    let (kind, mtu) = match h[field::TYPE] {
        icmpv6::DEST_UNREACHABLE => (IcmpErrorKind::DestUnreachable, 0),
        icmpv6::PACKET_TOO_BIG => (IcmpErrorKind::PacketTooBig, be32(h, field::MTU)),
        icmpv6::TIME_EXCEEDED => (IcmpErrorKind::TimeExceeded, 0),
        _ => return Ok(None),
    };
    Ok(Some(IcmpError {
        kind,
        code: h[field::CODE],
        mtu,
        flow: quoted_flow_v6(quote)?,
    }))
}

/// The flow of a quoted IPv4 packet, reversed. The quote holds the IP header and at least 8
/// bytes of L4 (RFC 792); more is optional, and its total length describes the original
/// packet, not the quote, so it is not checked against it.
fn quoted_flow_v4(quote: &[u8]) -> Result<FiveTuple, ParseError> {
    use ipv4::{field, flags};
    let h = quote
        .first_chunk::<{ ipv4::HEADER_LEN }>()
        .ok_or(ParseError::TruncatedIcmpQuote)?;
    let header_len = usize::from(h[field::VER_IHL] & 0x0f) * 4;
    if h[field::VER_IHL] >> 4 != 4 || header_len < ipv4::HEADER_LEN {
        return Err(ParseError::BadIcmpQuote);
    }
    let l4 = quote
        .get(header_len..)
        .ok_or(ParseError::TruncatedIcmpQuote)?;
    let protocol = h[field::PROTOCOL];
    let mut flow = FiveTuple {
        src: mapped(h, field::DST_ADDR.start),
        dst: mapped(h, field::SRC_ADDR.start),
        src_port: 0,
        dst_port: 0,
        proto: protocol,
    };
    let first_piece = be16(h, field::FLAGS_FRAG) & flags::OFFSET_MASK == 0;
    if first_piece && (protocol == proto::TCP || protocol == proto::UDP) {
        quoted_ports(l4, &mut flow)?;
    }
    Ok(flow)
}

/// The flow of a quoted IPv6 packet, reversed, walking its extension headers within the quote.
fn quoted_flow_v6(quote: &[u8]) -> Result<FiveTuple, ParseError> {
    use ipv6::field;
    let (h, rest) = quote
        .split_first_chunk::<{ ipv6::HEADER_LEN }>()
        .ok_or(ParseError::TruncatedIcmpQuote)?;
    if h[field::VER_TC_FLOW] >> 4 != 6 {
        return Err(ParseError::BadIcmpQuote);
    }
    let upper = ipv6::walk_ext_headers(h[field::NEXT_HEADER], rest).map_err(|e| match e {
        ParseError::TruncatedExtHeader => ParseError::TruncatedIcmpQuote,
        _ => ParseError::BadIcmpQuote,
    })?;
    let mut flow = FiveTuple {
        src: addr16(h, field::DST_ADDR.start),
        dst: addr16(h, field::SRC_ADDR.start),
        src_port: 0,
        dst_port: 0,
        proto: upper.protocol,
    };
    let first_piece = upper.fragment.is_none_or(|f| f.offset == 0);
    if first_piece && (upper.protocol == proto::TCP || upper.protocol == proto::UDP) {
        quoted_ports(rest.get(upper.offset..).unwrap_or(&[]), &mut flow)?;
    }
    Ok(flow)
}

/// Ports from the first 8 quoted bytes of TCP or UDP, swapped with the addresses.
fn quoted_ports(l4: &[u8], flow: &mut FiveTuple) -> Result<(), ParseError> {
    let h = l4
        .first_chunk::<8>()
        .ok_or(ParseError::TruncatedIcmpQuote)?;
    // TCP and UDP both start with source port, destination port.
    flow.src_port = be16(h, 2);
    flow.dst_port = be16(h, 0);
    Ok(())
}

/// The IPv4 address at `at`, IPv4-mapped (`::ffff:a.b.c.d`).
#[inline(always)]
fn mapped<const N: usize>(h: &[u8; N], at: usize) -> [u8; 16] {
    let mut v4 = [0u8; 4];
    v4.copy_from_slice(&h[at..at + 4]);
    crate::datapath::flow::mapped_v4(&v4)
}

#[inline(always)]
fn addr16<const N: usize>(h: &[u8; N], at: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&h[at..at + 16]);
    out
}

#[cfg(test)]
mod tests;
