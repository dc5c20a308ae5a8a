//! TCP (RFC 9293) headers: what the balancer reads (ports, flags) and can rewrite.

use super::{checksum, get16, get32, put16, ParseError};

/// The header without options.
pub const HEADER_LEN: usize = 20;

/// Flag bits of the 14th byte.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Field offsets.
pub mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ_NUM: usize = 4;
    pub const ACK_NUM: usize = 8;
    /// Data offset in the high nibble.
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// Validates the data offset against the `available` segment bytes; returns the header length.
#[inline(always)]
pub(crate) fn validate(data_offset_byte: u8, available: usize) -> Result<usize, ParseError> {
    let header_len = usize::from(data_offset_byte >> 4) * 4;
    if header_len < HEADER_LEN || header_len > available {
        return Err(ParseError::BadTcpDataOffset);
    }
    Ok(header_len)
}

/// A view of a TCP segment: header, options, payload.
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// A view without checks; accessors panic on a buffer shorter than 20 bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view whose accessors cannot panic: 20 bytes at least and a data offset that fits.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    pub fn check_len(&self) -> Result<(), ParseError> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(ParseError::TruncatedL4);
        }
        validate(data[field::DATA_OFFSET], data.len()).map(|_| ())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn src_port(&self) -> u16 {
        get16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        get16(self.buffer.as_ref(), field::DST_PORT)
    }

    pub fn seq_number(&self) -> u32 {
        get32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    pub fn ack_number(&self) -> u32 {
        get32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// The header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The eight flag bits (see [`flags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn window(&self) -> u16 {
        get16(self.buffer.as_ref(), field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn urgent(&self) -> u16 {
        get16(self.buffer.as_ref(), field::URGENT)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Whether the segment (the whole buffer) sums to a valid checksum with `pseudo_header`
    /// from [`checksum::pseudo_header_v4`] or [`checksum::pseudo_header_v6`].
    pub fn verify_checksum(&self, pseudo_header: u64) -> bool {
        checksum::is_valid(pseudo_header + checksum::sum(self.buffer.as_ref()))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn set_src_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    pub fn set_dst_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    pub fn set_checksum(&mut self, value: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes the checksum over the whole buffer and `pseudo_header`.
    pub fn fill_checksum(&mut self, pseudo_header: u64) {
        self.set_checksum(0);
        let sum = pseudo_header + checksum::sum(self.buffer.as_ref());
        self.set_checksum(checksum::finish(sum));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_checks_the_data_offset() {
        let mut seg = [0u8; 28];
        seg[0..2].copy_from_slice(&40000u16.to_be_bytes());
        seg[2..4].copy_from_slice(&443u16.to_be_bytes());
        seg[4..8].copy_from_slice(&7u32.to_be_bytes());
        seg[8..12].copy_from_slice(&9u32.to_be_bytes());
        seg[12] = 6 << 4;
        seg[13] = flags::SYN | flags::ECE | flags::CWR;
        seg[14..16].copy_from_slice(&1024u16.to_be_bytes());
        let tcp = TcpPacket::new_checked(&seg[..]).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port()), (40000, 443));
        assert_eq!(
            (tcp.seq_number(), tcp.ack_number(), tcp.window()),
            (7, 9, 1024)
        );
        assert_eq!((tcp.header_len(), tcp.payload().len()), (24, 4));
        assert_eq!(tcp.flags() & flags::SYN, flags::SYN);

        for len in 0..20 {
            let err = TcpPacket::new_checked(&seg[..len]).err();
            assert_eq!(err, Some(ParseError::TruncatedL4));
        }
        for len in 20..24 {
            let err = TcpPacket::new_checked(&seg[..len]).err();
            assert_eq!(err, Some(ParseError::BadTcpDataOffset));
        }
        seg[12] = 4 << 4;
        let err = TcpPacket::new_checked(&seg[..]).err();
        assert_eq!(err, Some(ParseError::BadTcpDataOffset));
    }

    #[test]
    fn filled_checksum_verifies_and_detects_a_flipped_bit() {
        let mut seg = [0u8; 23];
        seg[12] = 5 << 4;
        seg[20..23].copy_from_slice(b"abc");
        let pseudo = checksum::pseudo_header_v4([192, 0, 2, 1], [192, 0, 2, 2], 6, 23);
        let mut tcp = TcpPacket::new_unchecked(&mut seg[..]);
        tcp.set_src_port(1);
        tcp.set_dst_port(2);
        tcp.fill_checksum(pseudo);
        assert!(tcp.verify_checksum(pseudo));
        seg[22] ^= 1;
        assert!(!TcpPacket::new_unchecked(&seg[..]).verify_checksum(pseudo));
    }
}
