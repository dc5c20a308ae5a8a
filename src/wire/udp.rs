//! UDP (RFC 768) headers.

use super::{checksum, get16, put16, ParseError};

pub const HEADER_LEN: usize = 8;

/// Field offsets.
pub mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// Validates the UDP length field against the `available` datagram bytes.
#[inline(always)]
pub(crate) fn validate(length: u16, available: usize) -> Result<usize, ParseError> {
    let length = usize::from(length);
    if length < HEADER_LEN || length > available {
        return Err(ParseError::BadUdpLength);
    }
    Ok(length)
}

/// A view of a UDP datagram.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// A view without checks; accessors panic on a buffer shorter than 8 bytes and
    /// `payload` when the length field points past it. For writing a header.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view whose accessors cannot panic: 8 bytes at least and a length that fits.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(ParseError::TruncatedL4);
        }
        validate(self.len(), len).map(|_| ())
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

    /// The length field: header plus payload.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        get16(self.buffer.as_ref(), field::LENGTH)
    }

    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload up to the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// Whether the datagram (up to its length field) sums to a valid checksum with
    /// `pseudo_header`. A zero checksum means "none" and is not valid here: callers on IPv4
    /// that accept it check [`checksum`](Self::checksum) first.
    pub fn verify_checksum(&self, pseudo_header: u64) -> bool {
        let datagram = &self.buffer.as_ref()[..usize::from(self.len())];
        self.checksum() != 0 && checksum::is_valid(pseudo_header + checksum::sum(datagram))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    pub fn set_dst_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    pub fn set_len(&mut self, value: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, value);
    }

    pub fn set_checksum(&mut self, value: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes the checksum over the datagram (up to its length field) and `pseudo_header`.
    /// A computed zero is sent as 0xffff (RFC 768), since zero means "no checksum".
    pub fn fill_checksum(&mut self, pseudo_header: u64) {
        self.set_checksum(0);
        let datagram = &self.buffer.as_ref()[..usize::from(self.len())];
        let value = checksum::finish(pseudo_header + checksum::sum(datagram));
        self.set_checksum(if value == 0 { 0xffff } else { value });
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_checks_the_length() {
        let mut dgram = [0u8; 12];
        let mut udp = UdpPacket::new_unchecked(&mut dgram[..]);
        udp.set_src_port(5353);
        udp.set_dst_port(6080);
        udp.set_len(11);
        udp.payload_mut().copy_from_slice(b"abc");
        let udp = UdpPacket::new_checked(&dgram[..]).unwrap();
        assert_eq!(
            (udp.src_port(), udp.dst_port(), udp.len()),
            (5353, 6080, 11)
        );
        assert_eq!(udp.payload(), b"abc");

        for len in 0..8 {
            let err = UdpPacket::new_checked(&dgram[..len]).err();
            assert_eq!(err, Some(ParseError::TruncatedL4));
        }
        for len in 8..11 {
            let err = UdpPacket::new_checked(&dgram[..len]).err();
            assert_eq!(err, Some(ParseError::BadUdpLength));
        }
        dgram[4..6].copy_from_slice(&7u16.to_be_bytes());
        let err = UdpPacket::new_checked(&dgram[..]).err();
        assert_eq!(err, Some(ParseError::BadUdpLength));
    }

    #[test]
    fn a_computed_zero_checksum_is_sent_as_all_ones() {
        // With an all-zero pseudo-header the datagram below sums to 0xffff, so the
        // complement is zero and must be transmitted as 0xffff.
        let mut dgram = [0u8; 10];
        dgram[4..6].copy_from_slice(&10u16.to_be_bytes());
        dgram[8..10].copy_from_slice(&(0xffff - 10u16).to_be_bytes());
        let mut udp = UdpPacket::new_unchecked(&mut dgram[..]);
        udp.fill_checksum(0);
        assert_eq!(udp.checksum(), 0xffff);
        assert!(udp.verify_checksum(0));
    }
}
