//! ICMP (RFC 792) and ICMPv6 (RFC 4443) messages. Both share the layout the balancer cares
//! about (type, code, checksum, four bytes of type-specific data, then the body), so one view
//! serves both; only the checksum differs (ICMPv6 covers a pseudo-header).

use super::{checksum, get16, get32, put16, ParseError};

/// Type, code, checksum and the 4-byte rest of header.
pub const HEADER_LEN: usize = 8;

/// ICMPv4 types and codes.
pub mod icmpv4 {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
    /// Destination unreachable, fragmentation needed and DF set (RFC 1191).
    pub const CODE_FRAG_NEEDED: u8 = 4;

    /// Whether a message of this type reports an error about another packet (RFC 1122
    /// 3.2.2: no error may be sent about one of these).
    pub const fn is_error(msg_type: u8) -> bool {
        matches!(
            msg_type,
            DEST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAMETER_PROBLEM
        )
    }
}

/// ICMPv6 types.
pub mod icmpv6 {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAMETER_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;

    /// RFC 4443 2.1: types 0-127 are errors.
    pub const fn is_error(msg_type: u8) -> bool {
        msg_type < 128
    }
}

/// Field offsets.
pub mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST_OF_HEADER: Range<usize> = 4..8;
    /// ICMPv4 fragmentation needed: the next-hop MTU in the low half of the rest of header.
    pub const NEXT_HOP_MTU: usize = 6;
    /// ICMPv6 packet too big: the whole rest of header.
    pub const MTU: usize = 4;
}

/// A view of an ICMP or ICMPv6 message.
#[derive(Debug, Clone)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// A view without checks; accessors panic on a buffer shorter than 8 bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::TruncatedL4);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn rest_of_header(&self) -> u32 {
        get32(self.buffer.as_ref(), field::REST_OF_HEADER.start)
    }

    /// The next-hop MTU of an ICMPv4 fragmentation-needed message.
    pub fn next_hop_mtu(&self) -> u16 {
        get16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
    }

    /// The MTU of an ICMPv6 packet-too-big message.
    pub fn mtu(&self) -> u32 {
        get32(self.buffer.as_ref(), field::MTU)
    }

    /// The body: for error messages, the quoted original packet.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Whether an ICMPv4 message (the whole buffer) has a valid checksum.
    pub fn verify_checksum_v4(&self) -> bool {
        checksum::is_valid(checksum::sum(self.buffer.as_ref()))
    }

    /// Whether an ICMPv6 message (the whole buffer) has a valid checksum.
    pub fn verify_checksum_v6(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        let data = self.buffer.as_ref();
        let pseudo = pseudo_header_v6(src, dst, data.len());
        checksum::is_valid(pseudo + checksum::sum(data))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    pub fn set_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    pub fn set_checksum(&mut self, value: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    pub fn set_rest_of_header(&mut self, value: u32) {
        self.buffer.as_mut()[field::REST_OF_HEADER].copy_from_slice(&value.to_be_bytes());
    }

    /// Computes the ICMPv4 checksum over the whole buffer.
    pub fn fill_checksum_v4(&mut self) {
        self.set_checksum(0);
        let sum = checksum::sum(self.buffer.as_ref());
        self.set_checksum(checksum::finish(sum));
    }

    /// Computes the ICMPv6 checksum over the pseudo-header and the whole buffer.
    pub fn fill_checksum_v6(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let sum = pseudo_header_v6(src, dst, data.len()) + checksum::sum(data);
        self.set_checksum(checksum::finish(sum));
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], len: usize) -> u64 {
    // ICMPv6 messages fit an IPv6 payload, so the length fits 32 bits.
    checksum::pseudo_header_v6(src, dst, crate::datapath::flow::proto::ICMPV6, len as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mtus_and_checksums_both_versions() {
        let mut msg = [0u8; 12];
        let mut icmp = IcmpPacket::new_unchecked(&mut msg[..]);
        icmp.set_msg_type(icmpv4::DEST_UNREACHABLE);
        icmp.set_code(icmpv4::CODE_FRAG_NEEDED);
        icmp.set_rest_of_header(1400);
        icmp.payload_mut().copy_from_slice(&[0x45, 0, 0, 1]);
        icmp.fill_checksum_v4();
        let icmp = IcmpPacket::new_checked(&msg[..]).unwrap();
        assert_eq!(
            (icmp.msg_type(), icmp.code(), icmp.next_hop_mtu()),
            (3, 4, 1400)
        );
        assert!(icmp.verify_checksum_v4());
        assert_eq!(icmp.payload(), &[0x45, 0, 0, 1]);

        let (src, dst) = ([0x20; 16], [0x30; 16]);
        let mut icmp = IcmpPacket::new_unchecked(&mut msg[..]);
        icmp.set_msg_type(icmpv6::PACKET_TOO_BIG);
        icmp.set_code(0);
        icmp.set_rest_of_header(1280);
        icmp.fill_checksum_v6(&src, &dst);
        let icmp = IcmpPacket::new_checked(&msg[..]).unwrap();
        assert_eq!(icmp.mtu(), 1280);
        assert!(icmp.verify_checksum_v6(&src, &dst));
        assert!(!icmp.verify_checksum_v6(&dst, &dst));
        assert_eq!(
            IcmpPacket::new_checked(&msg[..7]).err(),
            Some(ParseError::TruncatedL4)
        );
    }

    #[test]
    fn error_types_are_classified() {
        assert!(icmpv4::is_error(icmpv4::DEST_UNREACHABLE));
        assert!(icmpv4::is_error(icmpv4::TIME_EXCEEDED));
        assert!(!icmpv4::is_error(icmpv4::ECHO_REQUEST));
        assert!(icmpv6::is_error(icmpv6::PACKET_TOO_BIG));
        assert!(!icmpv6::is_error(icmpv6::ECHO_REPLY));
    }
}
