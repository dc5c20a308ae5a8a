//! IPv4 (RFC 791), options allowed.

use super::{checksum, get16, put16, ParseError};
use std::net::Ipv4Addr;

/// The header without options.
pub const HEADER_LEN: usize = 20;
/// The longest header: IHL 15.
pub const MAX_HEADER_LEN: usize = 60;

/// Bits of the flags/fragment-offset word.
pub mod flags {
    pub const DONT_FRAGMENT: u16 = 0x4000;
    pub const MORE_FRAGMENTS: u16 = 0x2000;
    /// The offset, in units of 8 bytes.
    pub const OFFSET_MASK: u16 = 0x1fff;
}

/// Field offsets.
pub mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    /// DSCP (6 bits) and ECN (2 bits), the old TOS byte.
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// Validates the length fields of a header against the `available` bytes (from the start of
/// the header to the end of the frame) and returns `(header_len, total_len)`. Shared by
/// [`Ipv4Packet::check_len`] and the classifier so both reject exactly the same packets.
#[inline(always)]
pub(crate) fn validate(
    ver_ihl: u8,
    total_len: u16,
    available: usize,
) -> Result<(usize, usize), ParseError> {
    if ver_ihl >> 4 != 4 {
        return Err(ParseError::BadVersion);
    }
    let total_len = usize::from(total_len);
    // Bytes beyond the total length are Ethernet padding, which is fine; fewer are not.
    if total_len < HEADER_LEN || total_len > available {
        return Err(ParseError::BadTotalLength);
    }
    let header_len = usize::from(ver_ihl & 0x0f) * 4;
    if header_len < HEADER_LEN || header_len > total_len {
        return Err(ParseError::BadIhl);
    }
    Ok((header_len, total_len))
}

/// A view of an IPv4 packet: header, options and payload up to the total length.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A view without checks; accessors panic on a buffer shorter than 20 bytes, and
    /// `options`/`payload` when the length fields point past it. For writing a header.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view whose accessors cannot panic: version 4, IHL and total length consistent with
    /// each other and with the buffer (which may be longer: Ethernet padding).
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    pub fn check_len(&self) -> Result<(), ParseError> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(ParseError::TruncatedIpv4);
        }
        validate(data[field::VER_IHL], self.total_len(), data.len()).map(|_| ())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    pub fn total_len(&self) -> u16 {
        get16(self.buffer.as_ref(), field::TOTAL_LEN)
    }

    pub fn ident(&self) -> u16 {
        get16(self.buffer.as_ref(), field::IDENT)
    }

    fn flags_frag(&self) -> u16 {
        get16(self.buffer.as_ref(), field::FLAGS_FRAG)
    }

    pub fn dont_fragment(&self) -> bool {
        self.flags_frag() & flags::DONT_FRAGMENT != 0
    }

    pub fn more_fragments(&self) -> bool {
        self.flags_frag() & flags::MORE_FRAGMENTS != 0
    }

    /// The fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.flags_frag() & flags::OFFSET_MASK) << 3
    }

    /// Whether this is one piece of a fragmented datagram.
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (flags::MORE_FRAGMENTS | flags::OFFSET_MASK) != 0
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(addr(&self.buffer.as_ref()[field::SRC_ADDR]))
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(addr(&self.buffer.as_ref()[field::DST_ADDR]))
    }

    /// The options, empty when IHL is 5.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// Whether the header (options included) sums to a valid checksum.
    pub fn verify_checksum(&self) -> bool {
        checksum::is_valid(checksum::sum(&self.buffer.as_ref()[..self.header_len()]))
    }

    /// The payload up to the total length: Ethernet padding excluded.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the header length (a multiple of 4, 20..=60).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    pub fn set_total_len(&mut self, value: u16) {
        put16(self.buffer.as_mut(), field::TOTAL_LEN, value);
    }

    pub fn set_ident(&mut self, value: u16) {
        put16(self.buffer.as_mut(), field::IDENT, value);
    }

    /// Sets the DF and MF bits and the fragment offset (in bytes, a multiple of 8).
    pub fn set_flags_and_frag_offset(
        &mut self,
        dont_fragment: bool,
        more_fragments: bool,
        offset: u16,
    ) {
        let mut word = (offset >> 3) & flags::OFFSET_MASK;
        if dont_fragment {
            word |= flags::DONT_FRAGMENT;
        }
        if more_fragments {
            word |= flags::MORE_FRAGMENTS;
        }
        put16(self.buffer.as_mut(), field::FLAGS_FRAG, word);
    }

    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = value;
    }

    pub fn set_checksum(&mut self, value: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes and writes the header checksum over the header and its options.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let sum = checksum::sum(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(checksum::finish(sum));
    }

    /// The payload up to the total length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

/// An option-less IPv4 header as a plain value: what the balancer writes (the outer header
/// of an encapsulation, the header of an ICMP reply). Never a fragment: MF and the offset
/// are 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: u8,
    /// DSCP (6 bits) and ECN (2 bits).
    pub dscp_ecn: u8,
    /// The whole packet's length, this header included.
    pub total_len: u16,
    pub ident: u16,
    pub dont_fragment: bool,
    pub ttl: u8,
}

impl Ipv4Repr {
    /// Writes the header, checksum included, as five big-endian words, with the checksum
    /// summed from the words while they are still in registers. Writing field by field (or
    /// summing the header back from memory) makes the CPU reload bytes it has just stored in
    /// narrower pieces, which store-to-load forwarding cannot serve: writing words saved 29
    /// of ~65 cycles of an IPIP encapsulation (docs/benchmarks.md). Written straight into the
    /// packet, not into a stack copy, for the same reason.
    #[inline(always)]
    pub fn emit(&self, header: &mut [u8; HEADER_LEN]) {
        // Identification and flags in one select: with the caller's choice of identification
        // (encapsulation clears it under DF) the two fold into one conditional move.
        let ident_flags = if self.dont_fragment {
            u32::from(self.ident) << 16 | u32::from(flags::DONT_FRAGMENT)
        } else {
            u32::from(self.ident) << 16
        };
        // Version 4, IHL 5 (no options).
        let words: [u32; 5] = [
            0x4500_0000 | u32::from(self.dscp_ecn) << 16 | u32::from(self.total_len),
            ident_flags,
            u32::from(self.ttl) << 24 | u32::from(self.protocol) << 16,
            u32::from(self.src_addr),
            u32::from(self.dst_addr),
        ];
        let sum: u64 = words.iter().map(|&w| u64::from(w)).sum();
        let words = [
            words[0],
            words[1],
            words[2] | u32::from(checksum::finish(sum)),
            words[3],
            words[4],
        ];
        for (chunk, word) in header.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
    }
}

fn addr(bytes: &[u8]) -> [u8; 4] {
    let mut out = [0; 4];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_emits_what_the_view_reads_back() {
        for (dont_fragment, ident) in [(true, 0), (false, 0xbeef)] {
            let repr = Ipv4Repr {
                src_addr: Ipv4Addr::new(203, 0, 113, 5),
                dst_addr: Ipv4Addr::new(198, 51, 100, 7),
                protocol: 17,
                dscp_ecn: 0xb9,
                total_len: 48,
                ident,
                dont_fragment,
                ttl: 64,
            };
            let mut packet = [0xaau8; 48];
            let header = packet.first_chunk_mut().unwrap();
            repr.emit(header);
            let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
            assert_eq!(ip.header_len(), HEADER_LEN);
            assert!(ip.verify_checksum());
            let read = Ipv4Repr {
                src_addr: ip.src_addr(),
                dst_addr: ip.dst_addr(),
                protocol: ip.protocol(),
                dscp_ecn: ip.dscp_ecn(),
                total_len: ip.total_len(),
                ident: ip.ident(),
                dont_fragment: ip.dont_fragment(),
                ttl: ip.ttl(),
            };
            assert_eq!(read, repr);
            assert!(!ip.more_fragments() && ip.frag_offset() == 0);
            // The same header the field setters and fill_checksum write.
            let mut by_fields = [0u8; HEADER_LEN];
            let mut view = Ipv4Packet::new_unchecked(&mut by_fields);
            view.set_version_and_header_len(HEADER_LEN);
            view.set_dscp_ecn(0xb9);
            view.set_total_len(48);
            view.set_ident(ident);
            view.set_flags_and_frag_offset(dont_fragment, false, 0);
            view.set_ttl(64);
            view.set_protocol(17);
            view.set_src_addr(repr.src_addr);
            view.set_dst_addr(repr.dst_addr);
            view.fill_checksum();
            assert_eq!(packet[..HEADER_LEN], by_fields);
        }
    }

    /// 20-byte header, 4 bytes of options (IHL 6), 4 bytes of payload, 2 of padding.
    fn sample() -> Vec<u8> {
        let mut p = vec![0u8; 30];
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.set_version_and_header_len(24);
        ip.set_dscp_ecn(0xb9);
        ip.set_total_len(28);
        ip.set_ident(0x1234);
        ip.set_flags_and_frag_offset(true, false, 0);
        ip.set_ttl(63);
        ip.set_protocol(17);
        ip.set_src_addr(Ipv4Addr::new(192, 0, 2, 1));
        ip.set_dst_addr(Ipv4Addr::new(198, 51, 100, 7));
        p[20..24].copy_from_slice(&[1, 1, 1, 0]);
        p[24..28].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
        p
    }

    #[test]
    fn reads_back_what_was_written() {
        let p = sample();
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!((ip.version(), ip.header_len(), ip.total_len()), (4, 24, 28));
        assert_eq!(
            (ip.dscp_ecn(), ip.ident(), ip.ttl(), ip.protocol()),
            (0xb9, 0x1234, 63, 17)
        );
        assert!(ip.dont_fragment() && !ip.more_fragments() && !ip.is_fragment());
        assert_eq!(ip.src_addr(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(198, 51, 100, 7));
        assert_eq!(ip.options(), &[1, 1, 1, 0]);
        assert_eq!(ip.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(ip.verify_checksum());
    }

    #[test]
    fn fragment_fields_round_trip() {
        let mut p = sample();
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.set_flags_and_frag_offset(false, true, 1480);
        assert!(ip.more_fragments() && !ip.dont_fragment() && ip.is_fragment());
        assert_eq!(ip.frag_offset(), 1480);
        assert!(
            !ip.verify_checksum(),
            "the flags changed under the checksum"
        );
    }

    #[test]
    fn rejects_inconsistent_lengths() {
        let p = sample();
        for len in 0..20 {
            assert_eq!(
                Ipv4Packet::new_checked(&p[..len]).err(),
                Some(ParseError::TruncatedIpv4)
            );
        }
        for len in 20..28 {
            assert_eq!(
                Ipv4Packet::new_checked(&p[..len]).err(),
                Some(ParseError::BadTotalLength)
            );
        }
        let cases: [(usize, u8, ParseError); 4] = [
            (0, 0x64, ParseError::BadVersion),
            (0, 0x44, ParseError::BadIhl),
            (0, 0x48, ParseError::BadIhl),
            (3, 19, ParseError::BadTotalLength),
        ];
        for (at, value, expected) in cases {
            let mut bad = sample();
            bad[at] = value;
            assert_eq!(Ipv4Packet::new_checked(&bad[..]).err(), Some(expected));
        }
    }
}
