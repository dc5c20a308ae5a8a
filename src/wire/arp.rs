//! ARP (RFC 826), read only: the balancer hands ARP to the kernel's exception path and
//! only needs to recognise it (and, for the neighbour table, who is asking for whom).

use super::{get16, ParseError};
use std::net::Ipv4Addr;

/// The fixed part, before the variable-length addresses.
pub const FIXED_LEN: usize = 8;
/// An Ethernet/IPv4 ARP packet.
pub const ETHERNET_IPV4_LEN: usize = FIXED_LEN + 2 * (6 + 4);

pub mod hardware {
    pub const ETHERNET: u16 = 1;
}

pub mod operation {
    pub const REQUEST: u16 = 1;
    pub const REPLY: u16 = 2;
}

/// Field offsets of the fixed part.
pub mod field {
    pub const HARDWARE_TYPE: usize = 0;
    pub const PROTOCOL_TYPE: usize = 2;
    pub const HARDWARE_LEN: usize = 4;
    pub const PROTOCOL_LEN: usize = 5;
    pub const OPERATION: usize = 6;
    pub const ADDRESSES: usize = 8;
}

/// A view of an ARP packet.
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// A view without checks; accessors panic on a buffer shorter than the packet.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Whether the buffer holds the fixed part and all four addresses.
    pub fn check_len(&self) -> Result<(), ParseError> {
        let data = self.buffer.as_ref();
        if data.len() < FIXED_LEN || data.len() < self.packet_len() {
            return Err(ParseError::TruncatedArp);
        }
        Ok(())
    }

    fn packet_len(&self) -> usize {
        FIXED_LEN + 2 * (usize::from(self.hardware_len()) + usize::from(self.protocol_len()))
    }

    pub fn hardware_type(&self) -> u16 {
        get16(self.buffer.as_ref(), field::HARDWARE_TYPE)
    }

    /// An ethertype; 0x0800 for IPv4.
    pub fn protocol_type(&self) -> u16 {
        get16(self.buffer.as_ref(), field::PROTOCOL_TYPE)
    }

    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HARDWARE_LEN]
    }

    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL_LEN]
    }

    pub fn operation(&self) -> u16 {
        get16(self.buffer.as_ref(), field::OPERATION)
    }

    /// Whether this is the Ethernet/IPv4 ARP the rest of the accessors decode.
    pub fn is_ethernet_ipv4(&self) -> bool {
        self.hardware_type() == hardware::ETHERNET
            && self.protocol_type() == super::ethernet::ethertype::IPV4
            && self.hardware_len() == 6
            && self.protocol_len() == 4
    }

    fn address(&self, index: usize) -> &[u8] {
        let hlen = usize::from(self.hardware_len());
        let plen = usize::from(self.protocol_len());
        // Order on the wire: sender hardware, sender protocol, target hardware, target protocol.
        let (start, len) = match index {
            0 => (field::ADDRESSES, hlen),
            1 => (field::ADDRESSES + hlen, plen),
            2 => (field::ADDRESSES + hlen + plen, hlen),
            _ => (field::ADDRESSES + 2 * hlen + plen, plen),
        };
        &self.buffer.as_ref()[start..start + len]
    }

    pub fn sender_hardware_addr(&self) -> &[u8] {
        self.address(0)
    }

    pub fn sender_protocol_addr(&self) -> &[u8] {
        self.address(1)
    }

    pub fn target_hardware_addr(&self) -> &[u8] {
        self.address(2)
    }

    pub fn target_protocol_addr(&self) -> &[u8] {
        self.address(3)
    }

    /// The sender's IPv4 address, for Ethernet/IPv4 ARP.
    pub fn sender_ipv4(&self) -> Option<Ipv4Addr> {
        ipv4(self.is_ethernet_ipv4(), self.sender_protocol_addr())
    }

    /// The address being asked about (request) or answered for (reply).
    pub fn target_ipv4(&self) -> Option<Ipv4Addr> {
        ipv4(self.is_ethernet_ipv4(), self.target_protocol_addr())
    }
}

fn ipv4(applies: bool, bytes: &[u8]) -> Option<Ipv4Addr> {
    let octets: [u8; 4] = bytes.try_into().ok()?;
    applies.then_some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Vec<u8> {
        let mut p = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
        p.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[192, 0, 2, 1]);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&[192, 0, 2, 10]);
        p
    }

    #[test]
    fn recognises_a_request() {
        let bytes = request();
        let arp = ArpPacket::new_checked(&bytes[..]).unwrap();
        assert!(arp.is_ethernet_ipv4());
        assert_eq!(arp.operation(), operation::REQUEST);
        assert_eq!(arp.sender_hardware_addr(), &[0x02, 0, 0, 0, 0, 1]);
        assert_eq!(arp.sender_ipv4(), Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(arp.target_ipv4(), Some(Ipv4Addr::new(192, 0, 2, 10)));
        assert_eq!(arp.target_hardware_addr(), &[0; 6]);
    }

    #[test]
    fn every_truncation_and_oversized_address_lengths_are_rejected() {
        let bytes = request();
        for len in 0..ETHERNET_IPV4_LEN {
            assert_eq!(
                ArpPacket::new_checked(&bytes[..len]).err(),
                Some(ParseError::TruncatedArp)
            );
        }
        let mut huge = request();
        huge[4] = 255;
        huge[5] = 255;
        assert!(ArpPacket::new_checked(&huge[..]).is_err());
    }

    #[test]
    fn a_non_ipv4_arp_has_no_ipv4_addresses() {
        let mut bytes = request();
        bytes[2] = 0x86;
        bytes[3] = 0xdd;
        let arp = ArpPacket::new_checked(&bytes[..]).unwrap();
        assert!(!arp.is_ethernet_ipv4());
        assert_eq!(arp.sender_ipv4(), None);
    }
}
