//! "Too big" replies to clients, and the rate limit on them.
//!
//! Encapsulation makes packets longer. When a client's packet plus [`crate::datapath::encap::overhead`]
//! exceeds the port MTU and the packet may not be fragmented (IPv4 DF, or any IPv6 packet),
//! the balancer answers the client the way a router on the path would: ICMPv4 destination
//! unreachable, fragmentation needed (type 3 code 4, RFC 1191) or ICMPv6 packet too big
//! (type 2, RFC 4443), carrying the MTU the client should use. The reply comes from the VIP
//! the client sent to, so it reaches the connection that needs it and passes the client's
//! stateful firewall.
//!
//! The reply is built in place in the original packet's buffer. It quotes the original from
//! its IP header on, and that header already sits exactly where the quote belongs once the
//! reply's IP and ICMP headers are prepended in front of it; the tail beyond the quote limit
//! (576 bytes of IPv4 reply, RFC 1812 4.3.2.3; 1280 of IPv6, RFC 4443 2.4(c)) is trimmed.
//! The Ethernet addresses are swapped (the reply goes back to whoever delivered the packet)
//! and an 802.1Q tag is kept.
//!
//! No reply is sent about an ICMP error, a non-first fragment, or a packet whose source is
//! not a unicast host (RFC 1122 3.2.2, RFC 4443 2.4(e)); see [`may_reply`].

use crate::packet::PacketBuf;
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::icmp::{self, icmpv4, icmpv6, IcmpPacket};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::ipv6::{self, Ipv6Packet, Ipv6Repr};
use crate::wire::{Family, Fragment, IpMeta};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The longest ICMPv4 error, IP header included (RFC 1812 4.3.2.3).
pub const IPV4_REPLY_MAX: usize = 576;
/// The longest ICMPv6 error: the IPv6 minimum MTU (RFC 4443 2.4(c)).
pub const IPV6_REPLY_MAX: usize = 1280;
/// The smallest MTU worth telling an IPv4 host (RFC 791).
pub const IPV4_MIN_MTU: u32 = 68;
/// The smallest MTU an IPv6 link may have (RFC 8200 section 5).
pub const IPV6_MIN_MTU: u32 = 1280;
/// TTL or hop limit of replies.
pub const REPLY_TTL: u8 = 64;
/// DSCP CS6 (internetwork control), which RFC 1812 4.3.2.5 asks of ICMP errors; ECN 0.
pub const REPLY_DSCP_ECN: u8 = 0xc0;

const V4_HEADERS: usize = ipv4::HEADER_LEN + icmp::HEADER_LEN;
const V6_HEADERS: usize = ipv6::HEADER_LEN + icmp::HEADER_LEN;

/// Why no reply was built. The packet is unchanged in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum IcmpReplyError {
    #[error("not enough headroom for the reply's IP and ICMP headers")]
    NoHeadroom,
    #[error("the packet is shorter than the headers its parse result describes")]
    PacketMismatch,
    #[error("no ICMP error may be sent about this packet (an ICMP error, a non-first fragment, or not from a unicast host)")]
    NotAllowed,
    #[error("the MTU is below the protocol minimum (68 for IPv4, 1280 for IPv6)")]
    MtuBelowMinimum,
}

impl IcmpReplyError {
    /// The metric label.
    pub const fn name(self) -> &'static str {
        match self {
            IcmpReplyError::NoHeadroom => "icmp_reply_no_headroom",
            IcmpReplyError::PacketMismatch => "icmp_reply_packet_mismatch",
            IcmpReplyError::NotAllowed => "icmp_reply_not_allowed",
            IcmpReplyError::MtuBelowMinimum => "icmp_reply_mtu_below_minimum",
        }
    }
}

/// Whether an ICMP error may be sent about this packet: it is not itself an ICMP error,
/// not a non-first fragment, and came from, and went to, unicast addresses.
pub fn may_reply(frame: &[u8], meta: &IpMeta) -> bool {
    if meta.fragment == Fragment::NonFirst {
        return false;
    }
    let l4_type = frame.get(usize::from(meta.l4_offset)).copied();
    let is_icmp_error = match (meta.family, meta.tuple.proto) {
        (Family::V4, crate::datapath::flow::proto::ICMP) => l4_type.is_none_or(icmpv4::is_error),
        (Family::V6, crate::datapath::flow::proto::ICMPV6) => l4_type.is_none_or(icmpv6::is_error),
        _ => false,
    };
    !is_icmp_error && is_unicast(meta.src_addr()) && is_unicast(meta.dst_addr())
}

fn is_unicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
        }
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast() || a.is_loopback()),
    }
}

/// Turns the packet into the too-big reply of its family: [`frag_needed_v4`] (with the MTU
/// capped at 65535) or [`packet_too_big_v6`].
pub fn too_big_reply<P: PacketBuf + ?Sized>(
    pkt: &mut P,
    meta: &IpMeta,
    mtu: u32,
) -> Result<(), IcmpReplyError> {
    match meta.family {
        Family::V4 => frag_needed_v4(pkt, meta, u16::try_from(mtu).unwrap_or(u16::MAX)),
        Family::V6 => packet_too_big_v6(pkt, meta, mtu),
    }
}

/// The Ethernet fields of the reply and where the original IP packet is.
struct Original {
    /// The original's source MAC: the reply's destination.
    peer_mac: [u8; 6],
    /// The original's destination MAC (the port's): the reply's source.
    own_mac: [u8; 6],
    vlan_tci: Option<u16>,
    l2_len: usize,
    ip_len: usize,
    /// Bytes after the IP packet (Ethernet padding), trimmed with the rest.
    frame_len: usize,
}

fn original(frame: &[u8], meta: &IpMeta) -> Result<Original, IcmpReplyError> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| IcmpReplyError::PacketMismatch)?;
    let l2_len = usize::from(meta.l2_len);
    let ip_len = meta.ip_len as usize;
    if eth.header_len() != l2_len || frame.len() < l2_len + ip_len {
        return Err(IcmpReplyError::PacketMismatch);
    }
    if !may_reply(frame, meta) {
        return Err(IcmpReplyError::NotAllowed);
    }
    Ok(Original {
        peer_mac: eth.source(),
        own_mac: eth.destination(),
        vlan_tci: eth.vlan_tci(),
        l2_len,
        ip_len,
        frame_len: frame.len(),
    })
}

/// Turns an IPv4 packet that does not fit into an ICMPv4 fragmentation-needed reply to its
/// source, from the address it was sent to, advertising `mtu` as the next-hop MTU.
pub fn frag_needed_v4<P: PacketBuf + ?Sized>(
    pkt: &mut P,
    meta: &IpMeta,
    mtu: u16,
) -> Result<(), IcmpReplyError> {
    if meta.family != Family::V4 {
        return Err(IcmpReplyError::PacketMismatch);
    }
    if u32::from(mtu) < IPV4_MIN_MTU {
        return Err(IcmpReplyError::MtuBelowMinimum);
    }
    let data = pkt.data();
    let orig = original(data, meta)?;
    let ip = Ipv4Packet::new_checked(&data[orig.l2_len..orig.l2_len + orig.ip_len])
        .map_err(|_| IcmpReplyError::PacketMismatch)?;
    let (client, vip, ident): (Ipv4Addr, Ipv4Addr, u16) =
        (ip.src_addr(), ip.dst_addr(), ip.ident());
    let quote_len = orig.ip_len.min(IPV4_REPLY_MAX - V4_HEADERS);

    let buf = pkt.prepend(V4_HEADERS).ok_or(IcmpReplyError::NoHeadroom)?;
    let reply = &mut buf[..orig.l2_len + V4_HEADERS + quote_len];
    let (l2, rest) = reply.split_at_mut(orig.l2_len);
    let (ip_header, message) = rest.split_at_mut(ipv4::HEADER_LEN);
    EthernetFrame::new_unchecked(l2).set_header(
        orig.peer_mac,
        orig.own_mac,
        orig.vlan_tci,
        ethernet::ethertype::IPV4,
    );
    let mut ip = Ipv4Packet::new_unchecked(ip_header);
    ip.set_version_and_header_len(ipv4::HEADER_LEN);
    ip.set_dscp_ecn(REPLY_DSCP_ECN);
    ip.set_total_len((V4_HEADERS + quote_len) as u16);
    // The reply is never fragmented on its way (576 bytes fit every IPv4 path worth the
    // name), so it is sent atomic and any id will do; the original's is at hand.
    ip.set_ident(ident);
    ip.set_flags_and_frag_offset(true, false, 0);
    ip.set_ttl(REPLY_TTL);
    ip.set_protocol(crate::datapath::flow::proto::ICMP);
    ip.set_src_addr(vip);
    ip.set_dst_addr(client);
    ip.fill_checksum();
    let mut icmp = IcmpPacket::new_unchecked(message);
    icmp.set_msg_type(icmpv4::DEST_UNREACHABLE);
    icmp.set_code(icmpv4::CODE_FRAG_NEEDED);
    // RFC 1191: 16 unused bits, then the next-hop MTU.
    icmp.set_rest_of_header(u32::from(mtu));
    icmp.fill_checksum_v4();

    // Cannot fail: everything past the quote was data before.
    pkt.trim(orig.frame_len - orig.l2_len - quote_len);
    Ok(())
}

/// Turns an IPv6 packet that does not fit into an ICMPv6 packet-too-big reply to its source,
/// from the address it was sent to, advertising `mtu`.
pub fn packet_too_big_v6<P: PacketBuf + ?Sized>(
    pkt: &mut P,
    meta: &IpMeta,
    mtu: u32,
) -> Result<(), IcmpReplyError> {
    if meta.family != Family::V6 {
        return Err(IcmpReplyError::PacketMismatch);
    }
    if mtu < IPV6_MIN_MTU {
        return Err(IcmpReplyError::MtuBelowMinimum);
    }
    let data = pkt.data();
    let orig = original(data, meta)?;
    let ip = Ipv6Packet::new_checked(&data[orig.l2_len..orig.l2_len + orig.ip_len])
        .map_err(|_| IcmpReplyError::PacketMismatch)?;
    let (client, vip): (Ipv6Addr, Ipv6Addr) = (ip.src_addr(), ip.dst_addr());
    let quote_len = orig.ip_len.min(IPV6_REPLY_MAX - V6_HEADERS);

    let buf = pkt.prepend(V6_HEADERS).ok_or(IcmpReplyError::NoHeadroom)?;
    let reply = &mut buf[..orig.l2_len + V6_HEADERS + quote_len];
    let (l2, rest) = reply.split_at_mut(orig.l2_len);
    let (ip_header, message) = rest.split_at_mut(ipv6::HEADER_LEN);
    EthernetFrame::new_unchecked(l2).set_header(
        orig.peer_mac,
        orig.own_mac,
        orig.vlan_tci,
        ethernet::ethertype::IPV6,
    );
    if let Some(header) = ip_header.first_chunk_mut() {
        Ipv6Repr {
            src_addr: vip,
            dst_addr: client,
            next_header: crate::datapath::flow::proto::ICMPV6,
            traffic_class: REPLY_DSCP_ECN,
            flow_label: 0,
            payload_len: (icmp::HEADER_LEN + quote_len) as u16,
            hop_limit: REPLY_TTL,
        }
        .emit(header);
    }
    let mut icmp = IcmpPacket::new_unchecked(message);
    icmp.set_msg_type(icmpv6::PACKET_TOO_BIG);
    icmp.set_code(0);
    icmp.set_rest_of_header(mtu);
    icmp.fill_checksum_v6(&vip.octets(), &client.octets());

    pkt.trim(orig.frame_len - orig.l2_len - quote_len);
    Ok(())
}

/// A token bucket that bounds how many ICMP replies one worker sends: `rate_per_sec`
/// replies a second on average, at most `burst` at once. Time is the worker's TSC, so it
/// costs a subtraction and a division per call, no syscall and no allocation. Built with
/// `rate_per_sec` 0 and `burst` 0 it never allows.
#[derive(Clone, Debug)]
pub struct IcmpRateLimiter {
    tokens: u32,
    burst: u32,
    cycles_per_token: u64,
    last_refill: u64,
}

impl IcmpRateLimiter {
    /// A full bucket. `tsc_hz` is the TSC frequency (`rte_get_tsc_hz`).
    pub fn new(rate_per_sec: u32, burst: u32, tsc_hz: u64) -> Self {
        let cycles_per_token = if rate_per_sec == 0 {
            u64::MAX
        } else {
            (tsc_hz / u64::from(rate_per_sec)).max(1)
        };
        Self {
            tokens: burst,
            burst,
            cycles_per_token,
            last_refill: 0,
        }
    }

    /// Whether one more reply may be sent at `now_tsc`; takes a token if so.
    pub fn allow(&mut self, now_tsc: u64) -> bool {
        let earned = now_tsc.saturating_sub(self.last_refill) / self.cycles_per_token;
        if earned > 0 {
            let room = u64::from(self.burst - self.tokens);
            if earned >= room {
                // Full: time spent full earns nothing, so restart the clock now.
                self.tokens = self.burst;
                self.last_refill = now_tsc;
            } else {
                // Keep the fraction of a token already earned.
                self.tokens += earned as u32;
                self.last_refill += earned * self.cycles_per_token;
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::VecPacket;
    use crate::wire::testutil::*;
    use crate::wire::{parse, IcmpErrorKind, Parsed};
    use etherparse::{
        icmpv4 as ep_icmpv4, Icmpv4Header, Icmpv4Type, Icmpv6Type, Ipv6Extensions, LinkSlice,
        NetSlice, SlicedPacket, TransportSlice, VlanSlice,
    };

    fn meta_of(bytes: &[u8]) -> IpMeta {
        match parse(bytes) {
            Ok(Parsed::Ip(meta)) => meta,
            other => panic!("{other:?}"),
        }
    }

    /// A client's packet to the VIP whose IP packet is `ip_len` bytes long.
    fn oversized(family: Family, vlan: Option<u16>, ip_len: usize) -> Vec<u8> {
        match family {
            Family::V4 => {
                let v4 = V4 {
                    dont_fragment: true,
                    ident: 0x1111,
                    ..V4::default()
                };
                let payload: Vec<u8> = (0..ip_len - 40).map(|i| i as u8).collect();
                frame(
                    vlan,
                    ipv4(CLIENT4, VIP4, 60, &v4),
                    tcp(40000, 443, false),
                    &payload,
                )
            }
            Family::V6 => {
                let payload: Vec<u8> = (0..ip_len - 60).map(|i| i as u8).collect();
                let ip = ipv6(CLIENT6, VIP6, 60, Ipv6Extensions::default());
                frame(vlan, ip, tcp(40000, 443, false), &payload)
            }
        }
    }

    fn check_l2(reply: &SlicedPacket, vlan: Option<u16>) {
        let Some(LinkSlice::Ethernet2(eth)) = &reply.link else {
            panic!()
        };
        assert_eq!(eth.destination(), CLIENT_MAC, "back to the client's side");
        assert_eq!(eth.source(), PORT_MAC);
        let tag = match &reply.vlan {
            Some(VlanSlice::SingleVlan(v)) => Some(v.vlan_identifier().value()),
            None => None,
            Some(_) => panic!(),
        };
        assert_eq!(tag, vlan);
    }

    #[test]
    fn frag_needed_reply_is_valid_and_quotes_the_original_prefix() {
        for (vlan, ip_len) in [
            (None, 1500),
            (Some(12), 1500),
            (None, 100),
            (None, 548),
            (None, 549),
        ] {
            let original = oversized(Family::V4, vlan, ip_len);
            let meta = meta_of(&original);
            let l2 = usize::from(meta.l2_len);
            let mut pkt = VecPacket::new(&original);
            too_big_reply(&mut pkt, &meta, 1452).unwrap();
            let out = pkt.data();
            let quote_len = ip_len.min(548);
            assert_eq!(out.len(), l2 + 28 + quote_len, "ip_len {ip_len}");

            let reply = SlicedPacket::from_ethernet(out).unwrap();
            check_l2(&reply, vlan);
            let Some(NetSlice::Ipv4(ip)) = &reply.net else {
                panic!()
            };
            let h = ip.header();
            assert_eq!((h.source(), h.destination()), (VIP4, CLIENT4));
            assert_eq!((h.ttl(), h.protocol().0), (REPLY_TTL, 1));
            assert_eq!(usize::from(h.total_len()), 28 + quote_len);
            assert!(usize::from(h.total_len()) <= IPV4_REPLY_MAX);
            assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
            let Some(TransportSlice::Icmpv4(icmp)) = &reply.transport else {
                panic!()
            };
            let expected_type = Icmpv4Type::DestinationUnreachable(
                ep_icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1452 },
            );
            assert_eq!(icmp.icmp_type(), expected_type);
            let recomputed = Icmpv4Header::with_checksum(expected_type, icmp.payload()).checksum;
            assert_eq!(icmp.checksum(), recomputed, "ICMP checksum");
            assert_eq!(
                icmp.payload(),
                &original[l2..l2 + quote_len],
                "quote is the prefix"
            );

            // Our own classifier reads it as an error about the client's flow.
            let err = meta_of(out).icmp_error.unwrap();
            assert_eq!(err.kind, IcmpErrorKind::FragmentationNeeded);
            assert_eq!(err.mtu, 1452);
            assert_eq!((err.flow.src_port, err.flow.dst_port), (443, 40000));
        }
    }

    #[test]
    fn packet_too_big_reply_is_valid_and_quotes_up_to_1280_bytes() {
        for (vlan, ip_len) in [
            (None, 1500),
            (Some(7), 9000),
            (None, 200),
            (None, 1232),
            (None, 1233),
        ] {
            let original = oversized(Family::V6, vlan, ip_len);
            let meta = meta_of(&original);
            let l2 = usize::from(meta.l2_len);
            let mut pkt = VecPacket::with_room(&original, 128, 0);
            too_big_reply(&mut pkt, &meta, 1400).unwrap();
            let out = pkt.data();
            let quote_len = ip_len.min(1232);
            assert_eq!(out.len(), l2 + 48 + quote_len, "ip_len {ip_len}");

            let reply = SlicedPacket::from_ethernet(out).unwrap();
            check_l2(&reply, vlan);
            let Some(NetSlice::Ipv6(ip)) = &reply.net else {
                panic!()
            };
            let h = ip.header();
            assert_eq!((h.source(), h.destination()), (VIP6, CLIENT6));
            assert_eq!((h.hop_limit(), h.next_header().0), (REPLY_TTL, 58));
            assert_eq!(usize::from(h.payload_length()), 8 + quote_len);
            assert!(40 + usize::from(h.payload_length()) <= IPV6_REPLY_MAX);
            let Some(TransportSlice::Icmpv6(icmp)) = &reply.transport else {
                panic!()
            };
            assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1400 });
            assert!(icmp.is_checksum_valid(VIP6, CLIENT6), "ICMPv6 checksum");
            assert!(!icmp.is_checksum_valid(VIP6, VIP6));
            assert_eq!(
                icmp.payload(),
                &original[l2..l2 + quote_len],
                "quote is the prefix"
            );
        }
    }

    #[test]
    fn no_reply_about_icmp_errors_fragments_or_non_unicast_sources() {
        // An ICMP time exceeded addressed to the VIP.
        let quote = ip_packet(
            ipv4(VIP4, CLIENT4, 1, &V4::default()),
            L4::Udp(53, 5353),
            &[0; 8],
        );
        let t = Icmpv4Type::TimeExceeded(ep_icmpv4::TimeExceededCode::TtlExceededInTransit);
        let icmp_error = frame(
            None,
            ipv4(CLIENT4, VIP4, 64, &V4::default()),
            L4::Icmpv4(t),
            &quote,
        );
        // A ping is fine to answer.
        let echo = Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id: 1, seq: 1 });
        let ping = frame(
            None,
            ipv4(CLIENT4, VIP4, 64, &V4::default()),
            L4::Icmpv4(echo),
            &[0; 1400],
        );
        let non_first = V4 {
            frag_offset: 185,
            ..V4::default()
        };
        let fragment = frame(
            None,
            ipv4(CLIENT4, VIP4, 64, &non_first),
            L4::Udp(1, 2),
            &[0; 1400],
        );
        let multicast = frame(
            None,
            ipv4([224, 0, 0, 5], VIP4, 64, &V4::default()),
            L4::Udp(1, 2),
            &[0; 1400],
        );
        let unspecified = frame(
            None,
            ipv4([0; 4], VIP4, 64, &V4::default()),
            L4::Udp(1, 2),
            &[0; 1400],
        );
        let mut v6_multicast_src = [0u8; 16];
        v6_multicast_src[0] = 0xff;
        let v6_multicast = frame(
            None,
            ipv6(v6_multicast_src, VIP6, 64, Ipv6Extensions::default()),
            L4::Udp(1, 2),
            &[0; 1400],
        );
        let v6_error = frame(
            None,
            ipv6(CLIENT6, VIP6, 64, Ipv6Extensions::default()),
            L4::Icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 }),
            &ip_packet(
                ipv6(VIP6, CLIENT6, 64, Ipv6Extensions::default()),
                L4::Udp(1, 2),
                &[0; 8],
            ),
        );
        for (name, bytes, allowed) in [
            ("icmp error", icmp_error, false),
            ("ping", ping, true),
            ("non-first fragment", fragment, false),
            ("multicast source", multicast, false),
            ("unspecified source", unspecified, false),
            ("v6 multicast source", v6_multicast, false),
            ("icmpv6 error", v6_error, false),
        ] {
            let meta = meta_of(&bytes);
            assert_eq!(may_reply(&bytes, &meta), allowed, "{name}");
            let mut pkt = VecPacket::new(&bytes);
            let result = too_big_reply(&mut pkt, &meta, 1280);
            if allowed {
                assert!(result.is_ok(), "{name}");
            } else {
                assert_eq!(result, Err(IcmpReplyError::NotAllowed), "{name}");
                assert_eq!(pkt.data(), &bytes[..], "{name}: unchanged");
            }
        }
    }

    #[test]
    fn failures_leave_the_packet_unchanged() {
        for (family, headers) in [(Family::V4, 28), (Family::V6, 48)] {
            let original = oversized(family, None, 1500);
            let meta = meta_of(&original);
            let mut tight = VecPacket::with_room(&original, headers - 1, 0);
            assert_eq!(
                too_big_reply(&mut tight, &meta, 1400),
                Err(IcmpReplyError::NoHeadroom)
            );
            assert_eq!(tight.data(), &original[..]);

            let too_small = if family == Family::V4 { 67 } else { 1279 };
            let mut pkt = VecPacket::new(&original);
            assert_eq!(
                too_big_reply(&mut pkt, &meta, too_small),
                Err(IcmpReplyError::MtuBelowMinimum)
            );
            assert_eq!(pkt.data(), &original[..]);

            let mut lying = meta;
            lying.ip_len += 1;
            assert_eq!(
                too_big_reply(&mut pkt, &lying, 1400),
                Err(IcmpReplyError::PacketMismatch)
            );
            assert_eq!(pkt.data(), &original[..]);
        }
        let v4 = oversized(Family::V4, None, 1500);
        let meta = meta_of(&v4);
        let mut pkt = VecPacket::new(&v4);
        assert_eq!(
            packet_too_big_v6(&mut pkt, &meta, 1400),
            Err(IcmpReplyError::PacketMismatch)
        );
    }

    #[test]
    fn rate_limiter_allows_a_burst_then_the_rate() {
        // 10 replies a second on a 1 kHz "TSC": one token per 100 cycles.
        let mut limiter = IcmpRateLimiter::new(10, 3, 1_000);
        assert_eq!((0..5).filter(|_| limiter.allow(50)).count(), 3);
        assert!(!limiter.allow(99));
        // One token per 100 cycles since the last refill.
        assert!(limiter.allow(100));
        assert!(!limiter.allow(150));
        assert!(limiter.allow(200));
        assert!(!limiter.allow(200));
        // The part of a token earned before a refill is kept: 350 earns one and keeps 50
        // cycles, so 400 earns the next.
        assert!(limiter.allow(350));
        assert!(!limiter.allow(399));
        assert!(limiter.allow(400));
        // A long quiet spell refills to the burst, no further.
        assert_eq!((0..10).filter(|_| limiter.allow(1_000_000)).count(), 3);
        // A clock that steps back earns nothing and does not panic.
        assert!(!limiter.allow(10));

        let mut off = IcmpRateLimiter::new(0, 0, 2_000_000_000);
        assert!(!(0..100).any(|i| off.allow(i * 1_000_000_000)));
    }
}
