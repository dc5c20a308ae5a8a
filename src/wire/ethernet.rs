//! Ethernet II frames, with at most one 802.1Q tag.

use super::{get16, put16, ParseError};

/// An untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// An 802.1Q tag: TPID (0x8100) then the tag control information.
pub const VLAN_TAG_LEN: usize = 4;
/// An Ethernet header carrying one 802.1Q tag.
pub const TAGGED_HEADER_LEN: usize = HEADER_LEN + VLAN_TAG_LEN;

/// Ethertypes the balancer recognises.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
}

/// Field offsets.
pub mod field {
    use core::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    /// The ethertype of an untagged frame, or the TPID of a tagged one.
    pub const ETHERTYPE: usize = 12;
    /// Priority (3 bits), drop eligible (1), VLAN id (12).
    pub const VLAN_TCI: usize = 14;
    /// The ethertype of the payload of a tagged frame.
    pub const INNER_ETHERTYPE: usize = 16;
}

/// A view of an Ethernet frame (header and payload).
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// A view without checks; accessors panic if the buffer is shorter than the header.
    /// For writing a header into bytes the caller has sized.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view whose accessors cannot panic.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Whether the buffer holds the whole header, tag included.
    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.header_len() {
            return Err(ParseError::TruncatedEthernet);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// 14, or 18 when the frame carries an 802.1Q tag.
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            TAGGED_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    fn is_tagged(&self) -> bool {
        get16(self.buffer.as_ref(), field::ETHERTYPE) == ethertype::VLAN
    }

    pub fn destination(&self) -> [u8; 6] {
        mac(&self.buffer.as_ref()[field::DESTINATION])
    }

    pub fn source(&self) -> [u8; 6] {
        mac(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The ethertype of the payload, looking past an 802.1Q tag.
    pub fn ethertype(&self) -> u16 {
        if self.is_tagged() {
            get16(self.buffer.as_ref(), field::INNER_ETHERTYPE)
        } else {
            get16(self.buffer.as_ref(), field::ETHERTYPE)
        }
    }

    /// The whole tag control information (priority, DEI, VLAN id) of a tagged frame.
    pub fn vlan_tci(&self) -> Option<u16> {
        self.is_tagged()
            .then(|| get16(self.buffer.as_ref(), field::VLAN_TCI))
    }

    /// The 12-bit VLAN id of a tagged frame.
    pub fn vlan_id(&self) -> Option<u16> {
        self.vlan_tci().map(|tci| tci & 0x0fff)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_destination(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac);
    }

    pub fn set_source(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac);
    }

    /// Writes a whole header: addresses, the tag when `vlan_tci` is given, and the payload's
    /// ethertype. The buffer must hold 14 bytes, or 18 with a tag.
    pub fn set_header(
        &mut self,
        destination: [u8; 6],
        source: [u8; 6],
        vlan_tci: Option<u16>,
        payload_ethertype: u16,
    ) {
        self.set_destination(destination);
        self.set_source(source);
        let data = self.buffer.as_mut();
        match vlan_tci {
            Some(tci) => {
                put16(data, field::ETHERTYPE, ethertype::VLAN);
                put16(data, field::VLAN_TCI, tci);
                put16(data, field::INNER_ETHERTYPE, payload_ethertype);
            }
            None => put16(data, field::ETHERTYPE, payload_ethertype),
        }
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

fn mac(bytes: &[u8]) -> [u8; 6] {
    let mut out = [0; 6];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGGED: [u8; 20] = [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x81, 0x00, 0xa0, 0x64, 0x86, 0xdd, 0xee, 0xff,
    ];

    #[test]
    fn reads_a_tagged_frame() {
        let frame = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(frame.destination(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(frame.source(), [7, 8, 9, 10, 11, 12]);
        assert_eq!(frame.header_len(), 18);
        assert_eq!(frame.vlan_tci(), Some(0xa064));
        assert_eq!(frame.vlan_id(), Some(100));
        assert_eq!(frame.ethertype(), ethertype::IPV6);
        assert_eq!(frame.payload(), &[0xee, 0xff]);
    }

    #[test]
    fn a_tag_cut_short_is_rejected_and_an_untagged_frame_is_not() {
        for len in 0..18 {
            assert_eq!(
                EthernetFrame::new_checked(&TAGGED[..len]).err(),
                Some(ParseError::TruncatedEthernet)
            );
        }
        let mut untagged = TAGGED;
        untagged[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        let frame = EthernetFrame::new_checked(&untagged[..14]).unwrap();
        assert_eq!((frame.header_len(), frame.vlan_id()), (14, None));
        assert_eq!(frame.ethertype(), ethertype::IPV4);
    }

    #[test]
    fn set_header_round_trips_with_and_without_a_tag() {
        let mut buf = [0u8; 18];
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        frame.set_header([1; 6], [2; 6], Some(0x2005), ethertype::IPV4);
        let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(frame.destination(), [1; 6]);
        assert_eq!(frame.source(), [2; 6]);
        assert_eq!(frame.vlan_tci(), Some(0x2005));
        assert_eq!(frame.ethertype(), ethertype::IPV4);

        let mut buf = [0u8; 14];
        EthernetFrame::new_unchecked(&mut buf[..]).set_header([3; 6], [4; 6], None, 0x86dd);
        let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!((frame.vlan_tci(), frame.ethertype()), (None, 0x86dd));
    }
}
