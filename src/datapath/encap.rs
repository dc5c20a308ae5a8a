//! Encapsulation toward the backend: the last edit a packet gets before tx.
//!
//! Every operation edits the packet in place. It grows into the headroom (`prepend`), never
//! copies the inner packet, and either succeeds or leaves the packet exactly as it was.
//!
//! - **l2dsr**: the destination MAC becomes the backend's and the source MAC the port's;
//!   nothing else changes. The backend must be on-link and own the VIP on a
//!   non-ARP-answering interface.
//! - **ipip**: a new outer IP header: IPv4 in IPv4 (protocol 4), IPv6 in IPv4 (41), IPv4 in
//!   IPv6 (next header 4) or IPv6 in IPv6 (41). The outer family is the backend address's.
//! - **gue**: outer IP, then UDP to `gue_port` (6080 by convention), then the inner packet.
//!   This is **GUE variant 1**, direct IP encapsulation (draft-ietf-intarea-gue): no GUE
//!   header bytes follow the UDP header, and the inner IP version nibble (0100 or 0110)
//!   makes the two GUE version bits read 01. It costs 4 bytes less than variant 0 and is
//!   what a Linux receiver set up with `ip fou add port 6080 gue` decapsulates (its
//!   `gue_udp_recv` maps version 1 to IPIP or IPv6 by that nibble). The UDP source port is
//!   `49152 + (flow_hash & 0x3fff)`, so a backend NIC's RSS spreads flows over its queues
//!   while each flow stays on one. The UDP checksum is 0 (none) under IPv4 and computed
//!   under IPv6, which requires it (RFC 8200 section 8.1).
//!
//! Outer headers: the source is the port's address of the backend's family, the destination
//! the backend. TTL/hop limit is 64. DSCP and ECN are copied from the inner header (RFC 6040
//! normal mode), and the IPv6 flow label comes from the flow hash so ECMP paths spread flows
//! too. The IPv4 outer DF bit is copied from an IPv4 inner packet (and its identification
//! with it, so a fragmentable datagram keeps a meaningful id), and set for IPv6 inner
//! packets, which routers must not fragment.
//!
//! The Ethernet header is replaced by one of the same shape: next-hop MAC, port MAC, and the
//! same 802.1Q tag when the packet arrived tagged (it leaves by the port it came in on). So
//! the frame grows by exactly [`overhead`] bytes, which the worker adds to the IP length for
//! its MTU check before calling in here. Ethernet padding after the inner packet is dropped.
//!
//! The inner TTL is left alone: the balancer is the tunnel's entry point, not a routed hop,
//! and the backend that decapsulates delivers the packet locally, so decrementing would only
//! make the balancer visible to traceroute and cost a checksum update. A worker that wants
//! router semantics anyway drops packets for which [`ttl_exhausted`] holds (and counts them).

use crate::packet::PacketBuf;
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::ipv6::{self, Ipv6Packet, Ipv6Repr};
use crate::wire::udp::{self, UdpPacket};
use crate::wire::{checksum, Family, IpMeta};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// TTL (IPv4) or hop limit (IPv6) of every outer header.
pub const OUTER_TTL: u8 = 64;
/// The customary GUE/FOU destination port.
pub const GUE_DEFAULT_PORT: u16 = 6080;
/// GUE source ports are `GUE_SRC_PORT_BASE + (flow_hash & GUE_SRC_PORT_MASK)`: the ephemeral
/// range, which middleboxes expect a UDP source port in.
pub const GUE_SRC_PORT_BASE: u16 = 49152;
pub const GUE_SRC_PORT_MASK: u64 = 0x3fff;

/// How packets reach a backend: the one encapsulation type of the configuration file, the
/// API, the snapshot and the pipeline. Spelled `ipip`, `gue`, `l2dsr` in configuration, in
/// JSON and by [`FromStr`]/[`Display`](fmt::Display). GUE's UDP port travels beside it
/// (`gue_port`), so the mode stays one byte on the packet path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncapMode {
    /// IP-in-IP (protocol 4 or 41) from the port's own address to the backend.
    Ipip,
    /// Generic UDP Encapsulation (variant 1) to the VIP's `gue_port` of the backend.
    Gue,
    /// Layer-2 direct server return: the frame is re-addressed to the backend's MAC, the IP
    /// packet is untouched. Backends must share a link with the balancer.
    L2Dsr,
}

impl EncapMode {
    pub const ALL: [EncapMode; 3] = [EncapMode::Ipip, EncapMode::Gue, EncapMode::L2Dsr];

    pub const fn as_str(self) -> &'static str {
        match self {
            EncapMode::Ipip => "ipip",
            EncapMode::Gue => "gue",
            EncapMode::L2Dsr => "l2dsr",
        }
    }
}

impl fmt::Display for EncapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An encapsulation mode name that is not one of `ipip`, `gue`, `l2dsr`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown encap mode '{0}' (expected one of: ipip, gue, l2dsr)")]
pub struct UnknownEncapMode(pub String);

impl FromStr for EncapMode {
    type Err = UnknownEncapMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EncapMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| UnknownEncapMode(s.to_owned()))
    }
}

/// Everything one encapsulation needs: the port's identity, the chosen backend, the flow.
/// Plain `Copy` data, cheap to fill per packet from the worker's snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncapParams {
    pub mode: EncapMode,
    /// The transmitting port's MAC: the new source MAC.
    pub port_mac: [u8; 6],
    /// The new destination MAC: the next hop toward the backend for `ipip`/`gue`, the
    /// backend itself for `l2dsr`.
    pub next_hop_mac: [u8; 6],
    /// The port's addresses, the outer source for a backend of that family.
    pub src_v4: Option<Ipv4Addr>,
    pub src_v6: Option<Ipv6Addr>,
    /// The outer destination; its family picks the outer header's.
    pub backend: IpAddr,
    /// The GUE destination port.
    pub gue_port: u16,
    /// The flow's hash, for the GUE source port and the IPv6 flow label.
    pub flow_hash: u64,
}

/// Why a packet could not be encapsulated. The packet is unchanged in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EncapError {
    #[error("not enough headroom in the buffer for the outer headers")]
    NoHeadroom,
    #[error("the port has no {0:?} address to send to an {0:?} backend from")]
    NoSourceAddress(Family),
    #[error("the outer packet would exceed the 65535 bytes an IP length field can say")]
    TooBig,
    #[error("the packet is shorter than the headers its parse result describes")]
    PacketMismatch,
}

impl EncapError {
    /// The metric label.
    pub const fn name(self) -> &'static str {
        match self {
            EncapError::NoHeadroom => "encap_no_headroom",
            EncapError::NoSourceAddress(_) => "encap_no_source_address",
            EncapError::TooBig => "encap_too_big",
            EncapError::PacketMismatch => "encap_packet_mismatch",
        }
    }
}

/// Bytes the frame grows by: the outer IP header, plus UDP for GUE. The Ethernet header is
/// replaced by one of the same size, so it does not count.
pub const fn overhead(mode: EncapMode, outer: Family) -> usize {
    let ip = match outer {
        Family::V4 => ipv4::HEADER_LEN,
        Family::V6 => ipv6::HEADER_LEN,
    };
    match mode {
        EncapMode::L2Dsr => 0,
        EncapMode::Ipip => ip,
        EncapMode::Gue => ip + udp::HEADER_LEN,
    }
}

/// The GUE UDP source port for a flow.
pub const fn gue_src_port(flow_hash: u64) -> u16 {
    GUE_SRC_PORT_BASE + (flow_hash & GUE_SRC_PORT_MASK) as u16
}

/// Whether a packet arrived with no hop left to spend (TTL or hop limit 0 or 1).
pub const fn ttl_exhausted(meta: &IpMeta) -> bool {
    meta.ttl_or_hop_limit <= 1
}

/// Encapsulates by `params.mode`. `meta` is this packet's parse result.
pub fn encap<P: PacketBuf + ?Sized>(
    pkt: &mut P,
    meta: &IpMeta,
    params: &EncapParams,
) -> Result<(), EncapError> {
    match params.mode {
        EncapMode::L2Dsr => l2dsr(pkt, params),
        EncapMode::Ipip => ipip(pkt, meta, params),
        EncapMode::Gue => gue(pkt, meta, params),
    }
}

/// Rewrites the MACs: destination `params.next_hop_mac` (the backend), source the port's.
pub fn l2dsr<P: PacketBuf + ?Sized>(pkt: &mut P, params: &EncapParams) -> Result<(), EncapError> {
    let mut frame =
        EthernetFrame::new_checked(pkt.data_mut()).map_err(|_| EncapError::PacketMismatch)?;
    frame.set_destination(params.next_hop_mac);
    frame.set_source(params.port_mac);
    Ok(())
}

/// IP-in-IP: a new Ethernet header and an outer IP header in front of the inner IP packet.
pub fn ipip<P: PacketBuf + ?Sized>(
    pkt: &mut P,
    meta: &IpMeta,
    params: &EncapParams,
) -> Result<(), EncapError> {
    tunnel(pkt, meta, params, false)
}

/// GUE variant 1: a new Ethernet header, outer IP and UDP in front of the inner IP packet.
pub fn gue<P: PacketBuf + ?Sized>(
    pkt: &mut P,
    meta: &IpMeta,
    params: &EncapParams,
) -> Result<(), EncapError> {
    tunnel(pkt, meta, params, true)
}

/// What the outer header copies from the inner one: DSCP/ECN, DF, identification, and the
/// outer protocol number for this inner family. Packed into one word, which the compiler
/// keeps in a register or stores and reloads whole: as a struct of small fields it was
/// spilled field by field and reloaded two fields at a time, a store-forwarding stall that
/// cost a third of `tunnel` (docs/benchmarks.md).
#[derive(Clone, Copy)]
struct InnerFields(u64);

impl InnerFields {
    #[inline(always)]
    fn new(dscp_ecn: u8, dont_fragment: bool, ident: u16, protocol: u8) -> Self {
        Self(
            u64::from(dscp_ecn)
                | u64::from(dont_fragment) << 8
                | u64::from(ident) << 16
                | u64::from(protocol) << 32,
        )
    }
    #[inline(always)]
    fn dscp_ecn(self) -> u8 {
        self.0 as u8
    }
    #[inline(always)]
    fn dont_fragment(self) -> bool {
        self.0 >> 8 & 1 != 0
    }
    #[inline(always)]
    fn ident(self) -> u16 {
        (self.0 >> 16) as u16
    }
    #[inline(always)]
    fn protocol(self) -> u8 {
        (self.0 >> 32) as u8
    }
}

/// Reads the fields the outer header copies. `parse` has validated the inner header; this
/// only needs its fixed part to be there.
fn inner_fields(inner: &[u8], family: Family) -> Result<InnerFields, EncapError> {
    match family {
        Family::V4 => {
            let fixed = inner
                .first_chunk::<{ ipv4::HEADER_LEN }>()
                .ok_or(EncapError::PacketMismatch)?;
            let ip = Ipv4Packet::new_unchecked(fixed);
            Ok(InnerFields::new(
                ip.dscp_ecn(),
                ip.dont_fragment(),
                ip.ident(),
                ipv6::next_header::IPV4,
            ))
        }
        Family::V6 => {
            let fixed = inner
                .first_chunk::<{ ipv6::HEADER_LEN }>()
                .ok_or(EncapError::PacketMismatch)?;
            Ok(InnerFields::new(
                Ipv6Packet::new_unchecked(fixed).traffic_class(),
                true,
                0,
                ipv6::next_header::IPV6,
            ))
        }
    }
}

enum OuterSource {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

fn outer_addresses(params: &EncapParams) -> Result<OuterSource, EncapError> {
    match params.backend {
        IpAddr::V4(dst) => params
            .src_v4
            .map(|src| OuterSource::V4(src, dst))
            .ok_or(EncapError::NoSourceAddress(Family::V4)),
        IpAddr::V6(dst) => params
            .src_v6
            .map(|src| OuterSource::V6(src, dst))
            .ok_or(EncapError::NoSourceAddress(Family::V6)),
    }
}

// The outer IP headers are written by the wire layer's emitters (`Ipv4Repr`, `Ipv6Repr`)
// straight into the packet. The UDP header is written into a fixed-size array (the view
// then compiles to plain stores, without bounds checks) and copied in one piece.

/// The outer IPv4 header: DSCP/ECN copied, and the identification only when routers may
/// fragment (DF clear), as the module documentation says.
#[inline(always)]
fn outer_ipv4(
    fields: InnerFields,
    total_len: u16,
    protocol: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) -> Ipv4Repr {
    let dont_fragment = fields.dont_fragment();
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol,
        dscp_ecn: fields.dscp_ecn(),
        total_len,
        ident: if dont_fragment { 0 } else { fields.ident() },
        dont_fragment,
        ttl: OUTER_TTL,
    }
}

fn gue_udp_header(flow_hash: u64, dst_port: u16, udp_len: u16) -> [u8; udp::HEADER_LEN] {
    let mut header = [0u8; udp::HEADER_LEN];
    let mut udp = UdpPacket::new_unchecked(&mut header);
    udp.set_src_port(gue_src_port(flow_hash));
    udp.set_dst_port(dst_port);
    udp.set_len(udp_len);
    // Zero: no checksum under IPv4; under IPv6 it is filled in over the whole datagram.
    udp.set_checksum(0);
    header
}

fn tunnel<P: PacketBuf + ?Sized>(
    pkt: &mut P,
    meta: &IpMeta,
    params: &EncapParams,
    with_udp: bool,
) -> Result<(), EncapError> {
    let addresses = outer_addresses(params)?;
    let outer_family = Family::of(&params.backend);
    let mode = if with_udp {
        EncapMode::Gue
    } else {
        EncapMode::Ipip
    };
    let grow = overhead(mode, outer_family);
    let l2_len = usize::from(meta.l2_len);
    let inner_len = meta.ip_len as usize;

    // Everything the new headers copy is read before the first byte is overwritten, and
    // every check happens before the packet is touched.
    let data = pkt.data();
    let eth = EthernetFrame::new_checked(data).map_err(|_| EncapError::PacketMismatch)?;
    if eth.header_len() != l2_len {
        return Err(EncapError::PacketMismatch);
    }
    let vlan_tci = eth.vlan_tci();
    let inner = data
        .get(l2_len..l2_len + inner_len)
        .ok_or(EncapError::PacketMismatch)?;
    let fields = inner_fields(inner, meta.family)?;
    let padding = data.len() - (l2_len + inner_len);
    // The IPv4 total length, the IPv6 payload length and the UDP length must fit 16 bits.
    let ipv4_total_len = grow + inner_len;
    let after_ip_len = ipv4_total_len - overhead(EncapMode::Ipip, outer_family);
    let length_field = match outer_family {
        Family::V4 => ipv4_total_len,
        Family::V6 => after_ip_len,
    };
    let length_field = u16::try_from(length_field).map_err(|_| EncapError::TooBig)?;
    let after_ip_len = after_ip_len as u16;
    let protocol = if with_udp {
        crate::datapath::flow::proto::UDP
    } else {
        fields.protocol()
    };

    let buf = pkt.prepend(grow).ok_or(EncapError::NoHeadroom)?;
    let frame = &mut buf[..l2_len + grow + inner_len];
    let (l2, outer) = frame.split_at_mut(l2_len);
    let outer_ethertype = match outer_family {
        Family::V4 => ethernet::ethertype::IPV4,
        Family::V6 => ethernet::ethertype::IPV6,
    };
    EthernetFrame::new_unchecked(l2).set_header(
        params.next_hop_mac,
        params.port_mac,
        vlan_tci,
        outer_ethertype,
    );
    let after_ip = match addresses {
        OuterSource::V4(src, dst) => {
            let (ip, after_ip) = outer.split_at_mut(ipv4::HEADER_LEN);
            if let Some(header) = ip.first_chunk_mut() {
                outer_ipv4(fields, length_field, protocol, src, dst).emit(header);
            }
            after_ip
        }
        OuterSource::V6(src, dst) => {
            let mut header = [0u8; ipv6::HEADER_LEN];
            Ipv6Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: protocol,
                traffic_class: fields.dscp_ecn(),
                flow_label: flow_label(params.flow_hash),
                payload_len: length_field,
                hop_limit: OUTER_TTL,
            }
            .emit(&mut header);
            let (ip, after_ip) = outer.split_at_mut(ipv6::HEADER_LEN);
            ip.copy_from_slice(&header);
            after_ip
        }
    };
    if with_udp {
        let header = gue_udp_header(params.flow_hash, params.gue_port, after_ip_len);
        after_ip[..udp::HEADER_LEN].copy_from_slice(&header);
        if let OuterSource::V6(src, dst) = addresses {
            let pseudo = checksum::pseudo_header_v6(
                &src.octets(),
                &dst.octets(),
                crate::datapath::flow::proto::UDP,
                u32::from(after_ip_len),
            );
            UdpPacket::new_unchecked(after_ip).fill_checksum(pseudo);
        }
    }
    if padding > 0 {
        // Cannot fail: the padding is part of the data.
        pkt.trim(padding);
    }
    Ok(())
}

/// 20 bits of the flow hash, folded so both halves contribute.
fn flow_label(flow_hash: u64) -> u32 {
    ((flow_hash ^ (flow_hash >> 32)) as u32) & 0x000f_ffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::VecPacket;
    use crate::wire::testutil::*;
    use crate::wire::{parse, Parsed};
    use etherparse::{
        Ipv6Extensions, LinkSlice, NetSlice, SlicedPacket, TransportSlice, VlanSlice,
    };

    const NEXT_HOP_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x99];
    const SRC_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
    const BACKEND_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 21);
    const SRC_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xfb, 0, 0, 0, 0, 5);
    const BACKEND_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbe, 0, 0, 0, 0, 21);
    const HASH: u64 = 0x1234_5678_9abc_def0;

    fn params(mode: EncapMode, backend: IpAddr) -> EncapParams {
        EncapParams {
            mode,
            port_mac: PORT_MAC,
            next_hop_mac: NEXT_HOP_MAC,
            src_v4: Some(SRC_V4),
            src_v6: Some(SRC_V6),
            backend,
            gue_port: GUE_DEFAULT_PORT,
            flow_hash: HASH,
        }
    }

    /// A client's TCP packet to the VIP, with TOS bits and (for IPv4) DF as given.
    fn inner_frame(family: Family, vlan: Option<u16>, dont_fragment: bool) -> Vec<u8> {
        let payload = b"some request bytes";
        match family {
            Family::V4 => {
                let v4 = V4 {
                    dont_fragment,
                    ident: 0x7777,
                    dscp: 10,
                    ecn: 2,
                    ..V4::default()
                };
                frame(
                    vlan,
                    ipv4(CLIENT4, VIP4, 1, &v4),
                    tcp(40000, 80, true),
                    payload,
                )
            }
            Family::V6 => {
                let ip = ipv6(CLIENT6, VIP6, 1, Ipv6Extensions::default());
                frame(vlan, ip, tcp(40000, 80, true), payload)
            }
        }
    }

    fn meta_of(bytes: &[u8]) -> IpMeta {
        match parse(bytes) {
            Ok(Parsed::Ip(meta)) => meta,
            other => panic!("{other:?}"),
        }
    }

    fn backend(family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(BACKEND_V4),
            Family::V6 => IpAddr::V6(BACKEND_V6),
        }
    }

    /// Checks one encapsulated frame field by field with etherparse.
    fn check_tunnel(
        mode: EncapMode,
        outer: Family,
        original: &[u8],
        meta: &IpMeta,
        out: &[u8],
        case: &str,
    ) {
        let l2 = usize::from(meta.l2_len);
        let inner = &original[l2..l2 + meta.ip_len as usize];
        assert_eq!(
            out.len(),
            l2 + overhead(mode, outer) + inner.len(),
            "{case}"
        );

        let sliced = SlicedPacket::from_ethernet(out).expect(case);
        let Some(LinkSlice::Ethernet2(eth)) = &sliced.link else {
            panic!("{case}")
        };
        assert_eq!(
            (eth.destination(), eth.source()),
            (NEXT_HOP_MAC, PORT_MAC),
            "{case}"
        );
        let vlan = match &sliced.vlan {
            Some(VlanSlice::SingleVlan(v)) => Some(v.vlan_identifier().value()),
            None => None,
            Some(_) => panic!("{case}"),
        };
        assert_eq!(vlan, meta.vlan, "{case}: the tag is kept");

        let (inner_tos, inner_df, inner_ident) = match meta.family {
            Family::V4 => (
                original[l2 + 1],
                original[l2 + 6] & 0x40 != 0,
                [original[l2 + 4], original[l2 + 5]],
            ),
            Family::V6 => (
                ((original[l2] & 0x0f) << 4) | (original[l2 + 1] >> 4),
                true,
                [0, 0],
            ),
        };
        let inner_proto = match meta.family {
            Family::V4 => 4,
            Family::V6 => 41,
        };
        let expected_proto = if mode == EncapMode::Gue {
            17
        } else {
            inner_proto
        };
        let ip_payload = match sliced.net.as_ref().expect(case) {
            NetSlice::Ipv4(ip) => {
                assert_eq!(outer, Family::V4, "{case}");
                let h = ip.header();
                assert_eq!(h.source_addr(), SRC_V4, "{case}");
                assert_eq!(h.destination_addr(), BACKEND_V4, "{case}");
                assert_eq!(h.ttl(), OUTER_TTL, "{case}");
                assert_eq!(h.protocol().0, expected_proto, "{case}");
                assert_eq!(
                    (h.dcp().value() << 2) | h.ecn().value(),
                    inner_tos,
                    "{case}"
                );
                assert_eq!(h.dont_fragment(), inner_df, "{case}");
                assert!(
                    !h.more_fragments() && h.fragments_offset().value() == 0,
                    "{case}"
                );
                let ident = if inner_df {
                    0
                } else {
                    u16::from_be_bytes(inner_ident)
                };
                assert_eq!(h.identification(), ident, "{case}");
                assert_eq!(usize::from(h.total_len()), out.len() - l2, "{case}");
                let recomputed = h.to_header().calc_header_checksum();
                assert_eq!(h.header_checksum(), recomputed, "{case}: header checksum");
                ip.payload().payload
            }
            NetSlice::Ipv6(ip) => {
                assert_eq!(outer, Family::V6, "{case}");
                let h = ip.header();
                assert_eq!(h.source_addr(), SRC_V6, "{case}");
                assert_eq!(h.destination_addr(), BACKEND_V6, "{case}");
                assert_eq!(h.hop_limit(), OUTER_TTL, "{case}");
                assert_eq!(h.next_header().0, expected_proto, "{case}");
                assert_eq!(h.traffic_class(), inner_tos, "{case}");
                assert_eq!(h.flow_label().value(), flow_label(HASH), "{case}");
                assert_eq!(
                    usize::from(h.payload_length()),
                    out.len() - l2 - 40,
                    "{case}"
                );
                ip.payload().payload
            }
        };
        let tunnelled = match mode {
            EncapMode::Ipip => ip_payload,
            EncapMode::Gue => {
                let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
                    panic!("{case}: no UDP")
                };
                assert_eq!(udp.source_port(), gue_src_port(HASH), "{case}");
                assert_eq!(udp.source_port(), 49152 + (HASH & 0x3fff) as u16, "{case}");
                assert_eq!(udp.destination_port(), GUE_DEFAULT_PORT, "{case}");
                assert_eq!(usize::from(udp.length()), 8 + inner.len(), "{case}");
                match sliced.net.as_ref().unwrap() {
                    NetSlice::Ipv4(_) => assert_eq!(udp.checksum(), 0, "{case}"),
                    NetSlice::Ipv6(ip) => {
                        let expected = udp
                            .to_header()
                            .calc_checksum_ipv6(&ip.header().to_header(), udp.payload())
                            .unwrap();
                        assert_ne!(udp.checksum(), 0, "{case}");
                        assert_eq!(udp.checksum(), expected, "{case}: UDP checksum");
                    }
                }
                // Variant 1: the GUE version bits (the inner IP version's top two) read 01.
                assert_eq!(udp.payload()[0] >> 6, 1, "{case}");
                udp.payload()
            }
            EncapMode::L2Dsr => unreachable!(),
        };
        assert_eq!(tunnelled, inner, "{case}: inner packet byte-identical");
    }

    #[test]
    fn every_tunnel_mode_family_and_tag_produces_valid_outer_headers() {
        let mut cases = 0;
        for mode in [EncapMode::Ipip, EncapMode::Gue] {
            for outer in [Family::V4, Family::V6] {
                for inner in [Family::V4, Family::V6] {
                    for vlan in [None, Some(42)] {
                        for dont_fragment in [true, false] {
                            let case = format!("{mode} {outer:?} outer, {inner:?} inner, vlan {vlan:?}, df {dont_fragment}");
                            let original = inner_frame(inner, vlan, dont_fragment);
                            let meta = meta_of(&original);
                            let mut pkt = VecPacket::new(&original);
                            encap(&mut pkt, &meta, &params(mode, backend(outer))).expect(&case);
                            check_tunnel(mode, outer, &original, &meta, pkt.data(), &case);
                            // Our own parser sees the outer flow: port address -> backend.
                            let outer_meta = meta_of(pkt.data());
                            assert_eq!(outer_meta.dst_addr(), backend(outer), "{case}");
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 32);
    }

    #[test]
    fn ethernet_padding_is_not_tunnelled() {
        let mut original = frame(
            None,
            ipv4(CLIENT4, VIP4, 9, &V4::default()),
            L4::Udp(1, 2),
            &[],
        );
        assert_eq!(original.len(), 42);
        original.resize(60, 0);
        let meta = meta_of(&original);
        for mode in [EncapMode::Ipip, EncapMode::Gue] {
            for outer in [Family::V4, Family::V6] {
                let mut pkt = VecPacket::new(&original);
                encap(&mut pkt, &meta, &params(mode, backend(outer))).unwrap();
                check_tunnel(mode, outer, &original, &meta, pkt.data(), "padded");
            }
        }
    }

    #[test]
    fn l2dsr_rewrites_only_the_macs() {
        for vlan in [None, Some(3)] {
            for family in [Family::V4, Family::V6] {
                let original = inner_frame(family, vlan, true);
                let meta = meta_of(&original);
                let mut pkt = VecPacket::new(&original);
                let p = params(EncapMode::L2Dsr, backend(family));
                encap(&mut pkt, &meta, &p).unwrap();
                let out = pkt.data();
                assert_eq!(&out[0..6], &NEXT_HOP_MAC);
                assert_eq!(&out[6..12], &PORT_MAC);
                assert_eq!(&out[12..], &original[12..]);
                assert_eq!(overhead(EncapMode::L2Dsr, family), 0);
            }
        }
        let mut runt = VecPacket::new(&[0; 13]);
        let p = params(EncapMode::L2Dsr, backend(Family::V4));
        assert_eq!(l2dsr(&mut runt, &p), Err(EncapError::PacketMismatch));
        assert_eq!(runt.data(), &[0; 13]);
    }

    #[test]
    fn failures_leave_the_packet_unchanged() {
        for mode in [EncapMode::Ipip, EncapMode::Gue] {
            for outer in [Family::V4, Family::V6] {
                let original = inner_frame(Family::V4, None, true);
                let meta = meta_of(&original);
                let need = overhead(mode, outer);
                let mut tight = VecPacket::with_room(&original, need - 1, 64);
                let result = encap(&mut tight, &meta, &params(mode, backend(outer)));
                assert_eq!(result, Err(EncapError::NoHeadroom));
                assert_eq!(tight.data(), &original[..]);
                assert_eq!(tight.headroom(), need - 1);
                let mut exact = VecPacket::with_room(&original, need, 0);
                assert!(encap(&mut exact, &meta, &params(mode, backend(outer))).is_ok());

                let mut no_source = params(mode, backend(outer));
                no_source.src_v4 = None;
                no_source.src_v6 = None;
                let mut pkt = VecPacket::new(&original);
                assert_eq!(
                    encap(&mut pkt, &meta, &no_source),
                    Err(EncapError::NoSourceAddress(outer))
                );
                assert_eq!(pkt.data(), &original[..]);

                // A parse result that promises more bytes than the packet has.
                let mut lying = meta;
                lying.ip_len += 1;
                let mut pkt = VecPacket::new(&original);
                let result = encap(&mut pkt, &lying, &params(mode, backend(outer)));
                assert_eq!(result, Err(EncapError::PacketMismatch));
                assert_eq!(pkt.data(), &original[..]);
            }
        }
    }

    #[test]
    fn an_inner_packet_near_64k_is_too_big_for_an_outer_length_field() {
        let original = frame(
            None,
            ipv4(CLIENT4, VIP4, 9, &V4::default()),
            L4::Raw(253),
            &vec![0; 65_500],
        );
        let meta = meta_of(&original);
        let mut pkt = VecPacket::with_room(&original, 128, 0);
        assert_eq!(
            encap(
                &mut pkt,
                &meta,
                &params(EncapMode::Gue, backend(Family::V4))
            ),
            Err(EncapError::TooBig)
        );
        assert_eq!(pkt.data(), &original[..]);
        // Under IPv6 the 40-byte header is not counted in the length field, so it fits.
        assert!(encap(
            &mut pkt,
            &meta,
            &params(EncapMode::Gue, backend(Family::V6))
        )
        .is_ok());
    }

    #[test]
    fn overheads_match_the_header_sizes() {
        assert_eq!(overhead(EncapMode::Ipip, Family::V4), 20);
        assert_eq!(overhead(EncapMode::Ipip, Family::V6), 40);
        assert_eq!(overhead(EncapMode::Gue, Family::V4), 28);
        assert_eq!(overhead(EncapMode::Gue, Family::V6), 48);
        assert_eq!(gue_src_port(0), 49152);
        assert_eq!(gue_src_port(u64::MAX), 65535);
    }

    #[test]
    fn ttl_helper_flags_packets_with_no_hop_left() {
        let mut meta = meta_of(&inner_frame(Family::V4, None, true));
        for (ttl, exhausted) in [(0, true), (1, true), (2, false), (255, false)] {
            meta.ttl_or_hop_limit = ttl;
            assert_eq!(ttl_exhausted(&meta), exhausted, "ttl {ttl}");
        }
    }

    #[test]
    fn modes_use_their_lowercase_names_in_config() {
        for (mode, name) in [
            (EncapMode::Ipip, "ipip"),
            (EncapMode::Gue, "gue"),
            (EncapMode::L2Dsr, "l2dsr"),
        ] {
            assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<EncapMode>(&format!("\"{name}\"")).unwrap(),
                mode
            );
            assert_eq!(name.parse::<EncapMode>().unwrap(), mode);
            assert_eq!(mode.to_string(), name);
        }
        let err = "gre".parse::<EncapMode>().unwrap_err();
        assert!(err.to_string().contains("ipip, gue, l2dsr"), "{err}");
        assert!(serde_json::from_str::<EncapMode>("\"L2DSR\"").is_err());
    }
}
