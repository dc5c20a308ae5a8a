//! Wire formats: views over header bytes, and the one-pass classifier every packet meets.
//!
//! Two layers live here:
//!
//! - Header views ([`ethernet::EthernetFrame`], [`ipv4::Ipv4Packet`], [`ipv6::Ipv6Packet`],
//!   [`tcp::TcpPacket`], [`udp::UdpPacket`], [`icmp::IcmpPacket`], [`arp::ArpPacket`]).
//!   `new_checked` validates lengths once; afterwards every accessor is infallible. Field
//!   offsets are named constants in each module's `field` module; setters exist only when the
//!   buffer is `AsMut<[u8]>`. `encap` and `icmp_reply` write headers through these views.
//! - [`parse`]: reads what the data plane needs (addresses, ports, fragment state, the flow an
//!   ICMP error talks about) in a single pass and returns a small `Copy` summary, so the later
//!   stages (classify, conntrack, select, encap) never decode a header again. Its common case,
//!   Ethernet/IPv4/TCP without options, reads fixed-size arrays after one length check per
//!   header, so the field reads carry no bounds checks.
//!
//! Nothing here allocates or panics on input: a frame that cannot be forwarded is an
//! `Err(ParseError)` whose [`ParseError::name`] is the drop counter's label.
//!
//! What the parser deliberately does not do: verify the IPv4 header checksum (the port's RX
//! checksum offload flags do that, and a balancer forwards rather than consumes packets), or
//! decode 802.1ad/QinQ (double-tagged frames are reported as not IP, for the kernel).

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
mod parse;
pub mod tcp;
#[cfg(test)]
pub(crate) mod testutil;
pub mod udp;

pub use parse::{parse, Family, Fragment, IcmpError, IcmpErrorKind, IpMeta, Parsed};

/// Why a frame was dropped before any balancing decision. Every variant is a counter.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    thiserror::Error,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[repr(u8)]
pub enum ParseError {
    #[error("frame shorter than its Ethernet header (14 bytes, 18 with an 802.1Q tag)")]
    #[strum(serialize = "truncated_ethernet")]
    TruncatedEthernet,
    #[error("frame shorter than a 20-byte IPv4 header")]
    #[strum(serialize = "truncated_ipv4")]
    TruncatedIpv4,
    #[error("frame shorter than a 40-byte IPv6 header")]
    #[strum(serialize = "truncated_ipv6")]
    TruncatedIpv6,
    #[error("IP version field disagrees with the ethertype")]
    #[strum(serialize = "bad_ip_version")]
    BadVersion,
    #[error("IPv4 header length (IHL) below 5 words or longer than the total length")]
    #[strum(serialize = "bad_ihl")]
    BadIhl,
    #[error("IPv4 total length below 20 or longer than the frame")]
    #[strum(serialize = "bad_total_length")]
    BadTotalLength,
    #[error("IPv6 payload length longer than the frame")]
    #[strum(serialize = "bad_ipv6_payload_length")]
    Ipv6PayloadLength,
    #[error("IPv6 extension header runs past the end of the payload")]
    #[strum(serialize = "truncated_ipv6_ext_header")]
    TruncatedExtHeader,
    #[error("IPv6 hop-by-hop options header not directly after the IPv6 header")]
    #[strum(serialize = "ipv6_hop_by_hop_not_first")]
    HopByHopNotFirst,
    #[error("more IPv6 extension headers than the parser follows")]
    #[strum(serialize = "too_many_ipv6_ext_headers")]
    TooManyExtHeaders,
    #[error("transport header (TCP 20, UDP 8, ICMP 8 bytes) truncated")]
    #[strum(serialize = "truncated_l4")]
    TruncatedL4,
    #[error("TCP data offset below 5 words or past the end of the segment")]
    #[strum(serialize = "bad_tcp_data_offset")]
    BadTcpDataOffset,
    #[error("UDP length field below 8 or past the end of the datagram")]
    #[strum(serialize = "bad_udp_length")]
    BadUdpLength,
    #[error("ICMP error quotes too little of the original packet to identify its flow")]
    #[strum(serialize = "truncated_icmp_quote")]
    TruncatedIcmpQuote,
    #[error("ICMP error quotes something that is not an IP packet of the right version")]
    #[strum(serialize = "bad_icmp_quote")]
    BadIcmpQuote,
    #[error("ARP packet shorter than its address lengths say")]
    #[strum(serialize = "truncated_arp")]
    TruncatedArp,
}

impl ParseError {
    /// Every reason, in declaration order: `ALL[e as usize] == e`, so per-worker drop
    /// counters can be a plain array indexed by the reason.
    pub const ALL: &'static [ParseError] = <Self as strum::VariantArray>::VARIANTS;

    /// The metric label for this drop reason.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// Reads a big-endian u16 at a fixed offset of a fixed-size array. With a constant `at` the
/// bounds check is resolved at compile time, which is what keeps `parse` branch-light.
#[inline(always)]
fn be16<const N: usize>(bytes: &[u8; N], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

#[inline(always)]
fn be32<const N: usize>(bytes: &[u8; N], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Big-endian u16 from a slice the caller has already length-checked (views only).
#[inline(always)]
fn get16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

#[inline(always)]
fn get32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[inline(always)]
fn put16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[inline(always)]
fn put32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels are the parse-error counters' names in metrics and `fulcrum stats`.
    #[test]
    fn parse_errors_keep_their_names_and_order() {
        let names: Vec<&str> = ParseError::ALL.iter().map(|e| e.name()).collect();
        assert_eq!(
            names,
            [
                "truncated_ethernet",
                "truncated_ipv4",
                "truncated_ipv6",
                "bad_ip_version",
                "bad_ihl",
                "bad_total_length",
                "bad_ipv6_payload_length",
                "truncated_ipv6_ext_header",
                "ipv6_hop_by_hop_not_first",
                "too_many_ipv6_ext_headers",
                "truncated_l4",
                "bad_tcp_data_offset",
                "bad_udp_length",
                "truncated_icmp_quote",
                "bad_icmp_quote",
                "truncated_arp",
            ]
        );
    }

    #[test]
    fn all_lists_every_reason_at_its_discriminant_with_a_unique_name() {
        let mut names = std::collections::HashSet::new();
        for (i, reason) in ParseError::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
            assert!(
                names.insert(reason.name()),
                "duplicate name {}",
                reason.name()
            );
            assert!(!reason.to_string().is_empty());
        }
    }
}
