//! Flows: the 5-tuple that identifies one, and the hash that spreads them.
//!
//! # The flow hash is a wire contract
//!
//! Every fulcrum instance behind the same ECMP group must send a given flow to the same
//! backend, so [`FiveTuple::flow_hash`] is a fixed function, identical on every build,
//! architecture and endianness:
//!
//! ```text
//! flow_hash = XXH3_64bits_withSeed(bytes, FLOW_HASH_SEED)
//! bytes     = src[16] || dst[16] || src_port (big-endian, 2) || dst_port (big-endian, 2) || proto (1)
//! ```
//!
//! 37 bytes, addresses as 16-byte IPv6 (IPv4 as `::ffff:a.b.c.d`), ports in network byte
//! order. Anyone can reproduce it with a stock xxHash library (for example Python's
//! `xxhash.xxh3_64(bytes, seed=0x66756c6372756d31)`); the tests pin known values so a change
//! cannot slip through. Changing the serialisation or the seed moves flows between backends
//! during a rolling upgrade: treat it as a breaking change.
//!
//! The same hash indexes the Maglev lookup table and the connection table, so a packet is
//! hashed once.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol numbers fulcrum balances or inspects.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// The seed of [`FiveTuple::flow_hash`]: the ASCII bytes `fulcrum1`. Part of the wire
/// contract (see the module documentation).
pub const FLOW_HASH_SEED: u64 = 0x6675_6c63_7275_6d31;

/// Length of the serialisation the flow hash is computed over.
const HASH_INPUT_LEN: usize = 37;

/// A flow's identity as the balancer sees it. IPv4 addresses are stored IPv4-mapped
/// (`::ffff:a.b.c.d`) so one key type serves both families. For fragments (which carry no
/// ports after the first) and for non-TCP/UDP traffic the ports are zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[repr(C)]
pub struct FiveTuple {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
}

impl FiveTuple {
    /// An IPv4 flow; the addresses are stored IPv4-mapped.
    pub fn from_v4(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16, proto: u8) -> Self {
        Self {
            src: mapped_v4(&src.octets()),
            dst: mapped_v4(&dst.octets()),
            src_port,
            dst_port,
            proto,
        }
    }

    /// An IPv6 flow.
    pub fn from_v6(src: Ipv6Addr, dst: Ipv6Addr, src_port: u16, dst_port: u16, proto: u8) -> Self {
        Self {
            src: src.octets(),
            dst: dst.octets(),
            src_port,
            dst_port,
            proto,
        }
    }

    /// A flow of either family. Mixing families (one IPv4, one IPv6 address) yields a tuple
    /// no real packet has; the parser never builds one.
    pub fn new(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16, proto: u8) -> Self {
        Self {
            src: mapped(src),
            dst: mapped(dst),
            src_port,
            dst_port,
            proto,
        }
    }

    /// The source address, IPv4 again if it was stored IPv4-mapped. An IPv6 packet whose
    /// source really is `::ffff:a.b.c.d` reads back as IPv4: such addresses are not routable
    /// on the wire, so the ambiguity costs nothing.
    pub fn src_addr(&self) -> IpAddr {
        unmapped(self.src)
    }

    /// The destination address, unmapped like [`FiveTuple::src_addr`].
    pub fn dst_addr(&self) -> IpAddr {
        unmapped(self.dst)
    }

    /// Whether both addresses are IPv4 (stored IPv4-mapped).
    pub fn is_ipv4(&self) -> bool {
        is_mapped(&self.src) && is_mapped(&self.dst)
    }

    /// The same flow seen from the other end: addresses and ports swapped.
    pub fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
        }
    }

    /// The flow hash: fixed, seeded XXH3-64 over the 37-byte serialisation described in the
    /// module documentation. Indexes both the Maglev table and the connection table.
    #[inline]
    pub fn flow_hash(&self) -> u64 {
        hash_fields(
            &self.src,
            &self.dst,
            self.src_port,
            self.dst_port,
            self.proto,
        )
    }

    /// The hash to use for every fragment of a fragmented datagram, the first one included:
    /// only the first fragment carries the ports, so hashing (src, dst, proto) is what keeps
    /// all of them on one backend. It equals the flow hash of the same tuple with both ports
    /// zero, so for port-less protocols (ICMP, GRE, ESP...) fragmented and unfragmented
    /// packets of a flow also agree. For TCP/UDP they do not: a datagram that is fragmented
    /// may land on a different backend than its unfragmented siblings, the usual trade-off
    /// of stateless L4 balancers.
    #[inline]
    pub fn fragment_hash(&self) -> u64 {
        hash_fields(&self.src, &self.dst, 0, 0, self.proto)
    }
}

/// XXH3-64 of the 37-byte serialisation, computed from the fields in registers. XXH3 reads
/// inputs of 17-128 bytes as little-endian 64-bit words at fixed offsets (for 37 bytes: 0, 8,
/// 16, 24, 5, 13, 21 and 29); assembling the bytes in memory and reading those words back
/// spans two or three narrower stores each, which the CPU cannot forward and waits out.
/// Here each word is cut from the two addresses as 128-bit numbers instead. Equal to
/// `xxh3_64_with_seed(serialisation, FLOW_HASH_SEED)` (a test compares them on many tuples).
#[inline(always)]
fn hash_fields(src: &[u8; 16], dst: &[u8; 16], src_port: u16, dst_port: u16, proto: u8) -> u64 {
    let s = u128::from_le_bytes(*src);
    let d = u128::from_le_bytes(*dst);
    // Bytes 32-36: the ports in network order, then the protocol.
    let tail = u64::from(src_port.swap_bytes())
        | u64::from(dst_port.swap_bytes()) << 16
        | u64::from(proto) << 32;
    let word = |value: u128| value as u64;
    let mut acc = (HASH_INPUT_LEN as u64).wrapping_mul(xxh3::PRIME64_1);
    acc = acc.wrapping_add(xxh3::mix16(word(d), word(d >> 64), 2));
    acc = acc.wrapping_add(xxh3::mix16(
        word(s >> 40),
        word(s >> 104) | word(d << 24),
        3,
    ));
    acc = acc.wrapping_add(xxh3::mix16(word(s), word(s >> 64), 0));
    acc = acc.wrapping_add(xxh3::mix16(word(d >> 40), word(d >> 104) | tail << 24, 1));
    xxh3::avalanche(acc)
}

/// The pieces of XXH3 (xxHash's 64-bit variant, as specified by its reference) that the flow
/// hash's fixed input length uses, with [`FLOW_HASH_SEED`] folded into the secret.
mod xxh3 {
    use super::FLOW_HASH_SEED;

    pub const PRIME64_1: u64 = 0x9E37_79B1_85EB_CA87;

    /// The first 64 bytes of XXH3's default secret as little-endian words: four pairs, one
    /// per 16-byte input chunk.
    const SECRET: [u64; 8] = [
        0xbe4b_a423_396c_feb8,
        0x1cad_21f7_2c81_017c,
        0xdb97_9083_e96d_d4de,
        0x1f67_b3b7_a4a4_4072,
        0x78e5_c0cc_4ee6_79cb,
        0x2172_ffcc_7dd0_5a82,
        0x8e24_43f7_7446_08b8,
        0x4c26_3a81_e690_35e0,
    ];

    /// XXH3's 16-byte mix with the `pair`-th secret pair and the seed.
    #[inline(always)]
    pub fn mix16(low: u64, high: u64, pair: usize) -> u64 {
        let low = low ^ SECRET[2 * pair].wrapping_add(FLOW_HASH_SEED);
        let high = high ^ SECRET[2 * pair + 1].wrapping_sub(FLOW_HASH_SEED);
        let product = u128::from(low) * u128::from(high);
        product as u64 ^ (product >> 64) as u64
    }

    #[inline(always)]
    pub fn avalanche(mut h: u64) -> u64 {
        h ^= h >> 37;
        h = h.wrapping_mul(0x1656_6791_9E37_79F9);
        h ^ (h >> 32)
    }
}

// The one place an address becomes the 16 bytes a flow key stores and back: IPv6 as it
// is, IPv4 IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 2.5.5.2). The parser, the classifier's
// VIP keys, the fragment table and the snapshot all store addresses this way.

/// The first 12 bytes of every IPv4-mapped address.
const MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// An IPv4 address (its four bytes in network order) as a flow key stores it.
#[inline(always)]
pub fn mapped_v4(v4: &[u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..12].copy_from_slice(&MAPPED_PREFIX);
    out[12..].copy_from_slice(v4);
    out
}

/// An address as a flow key stores it: IPv6 as it is, IPv4 IPv4-mapped.
#[inline]
pub fn mapped(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => mapped_v4(&v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address 16 stored bytes stand for: IPv4 again if they are IPv4-mapped.
pub fn unmapped(octets: [u8; 16]) -> IpAddr {
    match octets.split_last_chunk::<4>() {
        Some((prefix, v4)) if *prefix == MAPPED_PREFIX => IpAddr::V4(Ipv4Addr::from(*v4)),
        _ => IpAddr::V6(Ipv6Addr::from(octets)),
    }
}

/// Whether 16 stored bytes are an IPv4 address (IPv4-mapped).
pub fn is_mapped(octets: &[u8; 16]) -> bool {
    octets.starts_with(&MAPPED_PREFIX)
}

fn proto_name(proto: u8) -> Option<&'static str> {
    match proto {
        proto::ICMP => Some("icmp"),
        proto::TCP => Some("tcp"),
        proto::UDP => Some("udp"),
        proto::ICMPV6 => Some("icmpv6"),
        _ => None,
    }
}

/// `tcp 192.0.2.1:40000 -> 198.51.100.7:80`, IPv6 addresses in brackets, unknown protocols by
/// number (`proto 47`): the form logs and the CLI print.
impl fmt::Display for FiveTuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match proto_name(self.proto) {
            Some(name) => write!(f, "{name} ")?,
            None => write!(f, "proto {} ", self.proto)?,
        }
        let endpoint = |f: &mut fmt::Formatter<'_>, addr: IpAddr, port: u16| match addr {
            IpAddr::V4(v4) => write!(f, "{v4}:{port}"),
            IpAddr::V6(v6) => write!(f, "[{v6}]:{port}"),
        };
        endpoint(f, self.src_addr(), self.src_port)?;
        f.write_str(" -> ")?;
        endpoint(f, self.dst_addr(), self.dst_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (SplitMix64) so the tests need no `rand`.
    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn tuple(&mut self) -> FiveTuple {
            let mut t = FiveTuple::default();
            t.src[..8].copy_from_slice(&self.next().to_le_bytes());
            t.src[8..].copy_from_slice(&self.next().to_le_bytes());
            t.dst[..8].copy_from_slice(&self.next().to_le_bytes());
            t.dst[8..].copy_from_slice(&self.next().to_le_bytes());
            let r = self.next();
            t.src_port = r as u16;
            t.dst_port = (r >> 16) as u16;
            t.proto = (r >> 32) as u8;
            t
        }
    }

    fn v4(a: [u8; 4]) -> Ipv4Addr {
        Ipv4Addr::from(a)
    }

    #[test]
    fn v4_addresses_are_stored_mapped_and_read_back_unmapped() {
        let t = FiveTuple::from_v4(
            v4([192, 0, 2, 1]),
            v4([198, 51, 100, 7]),
            40000,
            80,
            proto::TCP,
        );
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[192, 0, 2, 1]);
        assert_eq!(t.src, mapped);
        assert_eq!(t.src_addr(), IpAddr::V4(v4([192, 0, 2, 1])));
        assert_eq!(t.dst_addr(), IpAddr::V4(v4([198, 51, 100, 7])));
        assert!(t.is_ipv4());
        assert_eq!(
            FiveTuple::new(t.src_addr(), t.dst_addr(), 40000, 80, proto::TCP),
            t
        );
    }

    #[test]
    fn v6_addresses_read_back_as_v6() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::80".parse().unwrap();
        let t = FiveTuple::from_v6(src, dst, 5353, 53, proto::UDP);
        assert_eq!(t.src_addr(), IpAddr::V6(src));
        assert_eq!(t.dst_addr(), IpAddr::V6(dst));
        assert!(!t.is_ipv4());
        assert_eq!(t.to_string(), "udp [2001:db8::1]:5353 -> [2001:db8::80]:53");
    }

    #[test]
    fn reversed_swaps_ends_and_is_an_involution() {
        let t = FiveTuple::from_v4(
            v4([192, 0, 2, 1]),
            v4([198, 51, 100, 7]),
            40000,
            80,
            proto::TCP,
        );
        let r = t.reversed();
        assert_eq!(r.src_addr(), IpAddr::V4(v4([198, 51, 100, 7])));
        assert_eq!(r.dst_addr(), IpAddr::V4(v4([192, 0, 2, 1])));
        assert_eq!((r.src_port, r.dst_port, r.proto), (80, 40000, proto::TCP));
        assert_eq!(r.reversed(), t);
        assert_eq!(t.to_string(), "tcp 192.0.2.1:40000 -> 198.51.100.7:80");
        assert_ne!(t.flow_hash(), r.flow_hash());
    }

    /// Pinned values: if this fails, the flow hash changed and a rolling upgrade would move
    /// flows between backends. Cross-checked against the reference xxHash C library through
    /// Python's `xxhash.xxh3_64(bytes, seed=FLOW_HASH_SEED)`.
    #[test]
    fn flow_hash_is_pinned() {
        let v4_tcp = FiveTuple::from_v4(
            v4([192, 0, 2, 1]),
            v4([198, 51, 100, 7]),
            40000,
            80,
            proto::TCP,
        );
        let v6_udp = FiveTuple::from_v6(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::80".parse().unwrap(),
            5353,
            53,
            proto::UDP,
        );
        let zero = FiveTuple::default();
        let got = [
            v4_tcp.flow_hash(),
            v4_tcp.fragment_hash(),
            v6_udp.flow_hash(),
            v6_udp.fragment_hash(),
            zero.flow_hash(),
        ];
        assert_eq!(got, PINNED, "flow hash changed: got {got:#018x?}");
    }

    const PINNED: [u64; 5] = [
        0x2bc2_f1d3_5a28_1a28,
        0xfb11_51b2_32fc_0882,
        0x813f_ce85_e96e_c4af,
        0x0971_3c5d_219e_41e4,
        0xe26c_5c11_a74d_6200,
    ];

    #[test]
    fn flow_hash_serialises_ports_big_endian() {
        let t = FiveTuple::from_v4(
            v4([10, 0, 0, 1]),
            v4([10, 0, 0, 2]),
            0x1234,
            0xabcd,
            proto::UDP,
        );
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&t.src);
        bytes.extend_from_slice(&t.dst);
        bytes.extend_from_slice(&[0x12, 0x34, 0xab, 0xcd, proto::UDP]);
        assert_eq!(bytes.len(), HASH_INPUT_LEN);
        assert_eq!(
            t.flow_hash(),
            xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, FLOW_HASH_SEED)
        );
    }

    /// The register-built hash against the library's XXH3 over the serialised bytes, on
    /// random tuples (every byte of the input varies) and on IPv4-mapped ones.
    #[test]
    fn flow_hash_equals_xxh3_of_the_serialisation() {
        let mut rng = SplitMix(7);
        for round in 0..20_000 {
            let mut t = rng.tuple();
            if round % 2 == 1 {
                t = FiveTuple::from_v4(
                    Ipv4Addr::from(rng.next() as u32),
                    Ipv4Addr::from(rng.next() as u32),
                    t.src_port,
                    t.dst_port,
                    t.proto,
                );
            }
            let mut bytes = [0u8; HASH_INPUT_LEN];
            bytes[..16].copy_from_slice(&t.src);
            bytes[16..32].copy_from_slice(&t.dst);
            bytes[32..34].copy_from_slice(&t.src_port.to_be_bytes());
            bytes[34..36].copy_from_slice(&t.dst_port.to_be_bytes());
            bytes[36] = t.proto;
            assert_eq!(
                t.flow_hash(),
                xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, FLOW_HASH_SEED),
                "{t:?}"
            );
        }
    }

    #[test]
    fn fragment_hash_ignores_ports_only() {
        let a = FiveTuple::from_v4(
            v4([192, 0, 2, 1]),
            v4([198, 51, 100, 7]),
            40000,
            80,
            proto::UDP,
        );
        let b = FiveTuple {
            src_port: 1,
            dst_port: 2,
            ..a
        };
        let first_fragment = a;
        let later_fragment = FiveTuple {
            src_port: 0,
            dst_port: 0,
            ..a
        };
        assert_eq!(a.fragment_hash(), b.fragment_hash());
        assert_eq!(
            first_fragment.fragment_hash(),
            later_fragment.fragment_hash()
        );
        assert_eq!(later_fragment.fragment_hash(), later_fragment.flow_hash());
        assert_ne!(a.flow_hash(), b.flow_hash());
        let other_src = FiveTuple::from_v4(
            v4([192, 0, 2, 2]),
            v4([198, 51, 100, 7]),
            40000,
            80,
            proto::UDP,
        );
        let other_proto = FiveTuple {
            proto: proto::TCP,
            ..a
        };
        assert_ne!(a.fragment_hash(), other_src.fragment_hash());
        assert_ne!(a.fragment_hash(), other_proto.fragment_hash());
    }

    /// Pearson's chi-square statistic of `keys` hashed into `bins` bins by `bin_of`.
    fn chi_square(hashes: &[u64], bins: usize, bin_of: impl Fn(u64) -> usize) -> f64 {
        let mut counts = vec![0u64; bins];
        for &h in hashes {
            counts[bin_of(h)] += 1;
        }
        let expected = hashes.len() as f64 / bins as f64;
        counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum()
    }

    /// The statistic for `bins - 1` degrees of freedom has mean `bins - 1` and standard
    /// deviation `sqrt(2 (bins - 1))`; six deviations is far beyond chance for a good hash
    /// yet catches a hash that ignores a field or clusters (which lands orders of magnitude
    /// higher).
    fn assert_uniform(what: &str, hashes: &[u64], bins: usize, bin_of: impl Fn(u64) -> usize) {
        let dof = (bins - 1) as f64;
        let limit = dof + 6.0 * (2.0 * dof).sqrt();
        let chi = chi_square(hashes, bins, bin_of);
        assert!(
            chi < limit,
            "{what}: chi-square {chi:.1} over {bins} bins exceeds {limit:.1}"
        );
    }

    fn assert_spreads(what: &str, hashes: &[u64]) {
        // Low bits index the connection table, the top 16 bits are its signatures, and
        // Maglev scales the upper 32 bits to its (prime) table size: all must be uniform.
        assert_uniform(&format!("{what}, low bits"), hashes, 1024, |h| {
            (h & 1023) as usize
        });
        assert_uniform(&format!("{what}, top bits"), hashes, 1024, |h| {
            (h >> 54) as usize
        });
        assert_uniform(&format!("{what}, maglev slot"), hashes, 1024, |h| {
            let slot = ((h >> 32) * 65537) >> 32;
            (slot % 1024) as usize
        });
    }

    #[test]
    fn flow_hash_spreads_random_tuples() {
        let mut rng = SplitMix(1);
        let hashes: Vec<u64> = (0..100_000).map(|_| rng.tuple().flow_hash()).collect();
        assert_spreads("random tuples", &hashes);
    }

    #[test]
    fn flow_hash_spreads_one_client_sweeping_ports() {
        // The realistic worst case: one NATed client opening connections from consecutive
        // source ports to one VIP.
        let hashes: Vec<u64> = (0..100_000u32)
            .map(|i| {
                let client = v4([203, 0, 113, (i >> 16) as u8]);
                FiveTuple::from_v4(client, v4([192, 0, 2, 10]), i as u16, 443, proto::TCP)
                    .flow_hash()
            })
            .collect();
        assert_spreads("sequential ports", &hashes);
    }

    #[test]
    fn fragment_hash_spreads_sequential_clients() {
        let hashes: Vec<u64> = (0..100_000u32)
            .map(|i| {
                let [_, b, c, d] = i.to_be_bytes();
                FiveTuple::from_v4(v4([10, b, c, d]), v4([192, 0, 2, 10]), 0, 0, proto::UDP)
                    .fragment_hash()
            })
            .collect();
        assert_spreads("sequential clients", &hashes);
    }

    #[test]
    fn a_broken_hash_fails_the_spread_check() {
        // Guards the guard: a hash of the source port alone must be rejected.
        let hashes: Vec<u64> = (0..100_000u64).map(|i| (i % 512) * 0x0101_0101).collect();
        let dof = 1023.0_f64;
        let chi = chi_square(&hashes, 1024, |h| (h & 1023) as usize);
        assert!(chi > dof + 6.0 * (2.0 * dof).sqrt());
    }
}
