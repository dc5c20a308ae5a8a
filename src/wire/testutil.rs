//! Test frames built with etherparse (an independent implementation), shared by the tests
//! of `wire`, `encap` and `icmp_reply`.

use etherparse::{
    IpFragOffset, IpHeaders, IpNumber, Ipv4Dscp, Ipv4Ecn, Ipv4Extensions, Ipv4Header, Ipv4Options,
    Ipv6Extensions, Ipv6FlowLabel, Ipv6FragmentHeader, Ipv6Header, PacketBuilder,
    PacketBuilderStep, TcpHeader, VlanId,
};

pub(crate) const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x07];
pub(crate) const PORT_MAC: [u8; 6] = [0x02, 0xfb, 0, 0, 0, 0x01];
pub(crate) const CLIENT4: [u8; 4] = [198, 51, 100, 7];
pub(crate) const VIP4: [u8; 4] = [192, 0, 2, 10];
pub(crate) const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xc1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07,
];
pub(crate) const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// xorshift64: deterministic, so a failing case reproduces.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The transport layer of a test packet.
#[derive(Clone)]
pub(crate) enum L4 {
    Tcp(TcpHeader),
    Udp(u16, u16),
    Icmpv4(etherparse::Icmpv4Type),
    Icmpv6(etherparse::Icmpv6Type),
    /// No transport header etherparse knows: the payload follows the IP headers raw.
    Raw(u8),
}

pub(crate) fn tcp(src_port: u16, dst_port: u16, syn: bool) -> L4 {
    let mut h = TcpHeader::new(src_port, dst_port, 0x0102_0304, 64240);
    h.syn = syn;
    h.ack = !syn;
    L4::Tcp(h)
}

fn finish(step: PacketBuilderStep<IpHeaders>, l4: L4, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match l4 {
        L4::Tcp(h) => step.tcp_header(h).write(&mut out, payload),
        L4::Udp(s, d) => step.udp(s, d).write(&mut out, payload),
        L4::Icmpv4(t) => step.icmpv4(t).write(&mut out, payload),
        L4::Icmpv6(t) => step.icmpv6(t).write(&mut out, payload),
        L4::Raw(protocol) => step.write(&mut out, IpNumber(protocol), payload),
    }
    .expect("etherparse builds the test packet");
    out
}

/// An Ethernet frame, client MAC -> port MAC, optionally tagged.
pub(crate) fn frame(vlan: Option<u16>, ip: IpHeaders, l4: L4, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, PORT_MAC);
    let step = match vlan {
        Some(id) => eth.single_vlan(VlanId::try_new(id).unwrap()).ip(ip),
        None => eth.ip(ip),
    };
    finish(step, l4, payload)
}

/// An IP packet without Ethernet, e.g. to quote in an ICMP error.
pub(crate) fn ip_packet(ip: IpHeaders, l4: L4, payload: &[u8]) -> Vec<u8> {
    finish(PacketBuilder::ip(ip), l4, payload)
}

/// IPv4 header options, frag fields and TOS of a test packet.
#[derive(Clone, Default)]
pub(crate) struct V4 {
    pub options: Vec<u8>,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// In units of 8 bytes.
    pub frag_offset: u16,
    pub ident: u16,
    pub dscp: u8,
    pub ecn: u8,
}

pub(crate) fn ipv4(src: [u8; 4], dst: [u8; 4], ttl: u8, v4: &V4) -> IpHeaders {
    let header = Ipv4Header {
        dscp: Ipv4Dscp::try_new(v4.dscp).unwrap(),
        ecn: Ipv4Ecn::try_new(v4.ecn).unwrap(),
        identification: v4.ident,
        dont_fragment: v4.dont_fragment,
        more_fragments: v4.more_fragments,
        fragment_offset: IpFragOffset::try_new(v4.frag_offset).unwrap(),
        time_to_live: ttl,
        source: src,
        destination: dst,
        options: Ipv4Options::try_from(&v4.options[..]).unwrap(),
        ..Default::default()
    };
    IpHeaders::Ipv4(header, Ipv4Extensions::default())
}

pub(crate) fn ipv6(src: [u8; 16], dst: [u8; 16], hop_limit: u8, exts: Ipv6Extensions) -> IpHeaders {
    let header = Ipv6Header {
        traffic_class: 0x2e,
        flow_label: Ipv6FlowLabel::try_new(0x12345).unwrap(),
        hop_limit,
        source: src,
        destination: dst,
        ..Default::default()
    };
    IpHeaders::Ipv6(header, exts)
}

/// A fragment header whose bytes on the wire are RFC 8200's; the builder fills in its next
/// header.
///
/// etherparse 0.16 writes (and reads) the low five offset bits and the M flag of this header
/// in the wrong bits (etherparse issue #150, fixed in 0.20; Cargo.toml pins 0.16). This
/// passes it the values whose misplaced encoding is the correct one, which works when offset
/// bits 2 and 3 are clear (asserted). Read such headers back with [`rfc_fragment_fields`].
pub(crate) fn ipv6_fragment(offset_units: u16, more: bool, ident: u32) -> Ipv6FragmentHeader {
    assert_eq!(
        offset_units & 0b1100,
        0,
        "etherparse 0.16 cannot place offset bits 2 and 3"
    );
    let [hi, lo] = ((offset_units << 3) | u16::from(more)).to_be_bytes();
    // etherparse writes byte 2 = offset >> 5 and byte 3 = (offset & 0x1f) | M << 7.
    let offset = (u16::from(hi) << 5) | u16::from(lo & 0x1f);
    Ipv6FragmentHeader::new(
        IpNumber(0),
        IpFragOffset::try_new(offset).unwrap(),
        lo & 0x80 != 0,
        ident,
    )
}

/// The RFC 8200 offset (8-byte units) and M flag of an 8-byte fragment header.
pub(crate) fn rfc_fragment_fields(header: &[u8]) -> (u16, bool) {
    let word = u16::from_be_bytes([header[2], header[3]]);
    (word >> 3, word & 1 != 0)
}
