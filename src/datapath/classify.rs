//! Classification: which VIP a packet is for.
//!
//! Built once per snapshot on the control thread; read by every worker for every packet.
//! An open-addressing table keyed by (destination address, port, protocol), sized to a power
//! of two at most half full, so a lookup is a multiply, a mask and one or two probes.
//!
//! Rules, in order:
//! 1. an exact (address, port, protocol) VIP;
//! 2. else an "all ports" VIP (port 0) on (address, protocol).
//!
//! Fragments: only a datagram's first fragment carries the ports. The rules that keep a
//! port-specific VIP from taking traffic of other ports (the worker applies them, with its
//! fragment table, see `frag.rs`):
//! - a first fragment is classified by its ports like any packet
//!   ([`Classifier::lookup_first_fragment`]);
//! - later fragments follow their datagram's first fragment; [`Classifier::fragment_class`]
//!   tells the worker whether their address and protocol have any VIP at all, and which
//!   all-ports VIP takes them when their first fragment was not seen.
//!
//! An all-ports VIP takes every fragment to its address and protocol whose first fragment is
//! not for an exact VIP, statelessly (in any order), as it always did.

/// A VIP's index in the snapshot's VIP list.
pub type VipIndex = u16;

/// What the VIPs of one (address, protocol) make of a fragment without ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragmentClass {
    /// No VIP on this address and protocol: the kernel's.
    NoVip,
    /// An all-ports VIP takes what no exact VIP claims.
    AllPorts(VipIndex),
    /// Only VIPs of specific ports: a fragment must follow its first fragment.
    PortsOnly,
}

/// What the VIPs make of a first fragment, which carries its ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstFragmentClass {
    NoVip,
    /// A VIP of exactly this port: its datagram is balanced like the unfragmented packets of
    /// its flow, and the later fragments follow it.
    Exact(VipIndex),
    /// The all-ports VIP, statelessly.
    AllPorts(VipIndex),
    /// The address and protocol have VIPs, none for this port: the kernel's, like the same
    /// packet unfragmented.
    OtherPort,
}

/// A fragment-table slot's `vip` when the address has no all-ports VIP.
const PORTS_ONLY: VipIndex = VipIndex::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    addr: [u8; 16],
    port: u16,
    proto: u8,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    key: Key,
    vip: VipIndex,
}

/// Destination -> VIP lookup for one snapshot.
#[derive(Clone, Debug)]
pub struct Classifier {
    slots: Box<[Option<Slot>]>,
    fragment_slots: Box<[Option<Slot>]>,
    mask: usize,
    fragment_mask: usize,
}

#[inline(always)]
fn hash_key(addr: &[u8; 16], port: u16, proto: u8) -> u64 {
    let hi = u64::from_le_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    let lo = u64::from_le_bytes([
        addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
    ]);
    let x = hi.rotate_left(29) ^ lo ^ ((port as u64) << 8 | proto as u64).rotate_left(40);
    // A 64-bit multiplicative mix (odd constant); the high bits are the best mixed.
    (x ^ (x >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn table_len(entries: usize) -> usize {
    (entries * 2).next_power_of_two().max(8)
}

fn insert(slots: &mut [Option<Slot>], mask: usize, key: Key, vip: VipIndex) -> bool {
    let mut i = (hash_key(&key.addr, key.port, key.proto) >> 32) as usize & mask;
    loop {
        match slots[i] {
            None => {
                slots[i] = Some(Slot { key, vip });
                return true;
            }
            Some(s) if s.key == key => return false,
            Some(_) => i = (i + 1) & mask,
        }
    }
}

#[inline(always)]
fn find(slots: &[Option<Slot>], mask: usize, key: Key) -> Option<VipIndex> {
    let mut i = (hash_key(&key.addr, key.port, key.proto) >> 32) as usize & mask;
    // The table is at most half full, so an empty slot always ends the probe.
    loop {
        match slots.get(i)? {
            None => return None,
            Some(s) if s.key == key => return Some(s.vip),
            Some(_) => i = (i + 1) & mask,
        }
    }
}

/// A VIP as the classifier sees it: destination address (IPv4-mapped for IPv4), port
/// (0 = all ports) and IP protocol number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipMatch {
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
}

/// A duplicate VIP in the list given to [`Classifier::new`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("VIP #{0} duplicates an earlier VIP (same address, port and protocol)")]
pub struct DuplicateVip(pub usize);

impl Classifier {
    /// Builds the lookup for `vips`; entry i is VIP index i.
    pub fn new(vips: &[VipMatch]) -> Result<Classifier, DuplicateVip> {
        let len = table_len(vips.len());
        let mut slots = vec![None; len].into_boxed_slice();
        // (address, protocol) -> its all-ports VIP, or PORTS_ONLY.
        let mut frag_choice: Vec<(Key, VipIndex)> = Vec::new();
        for (i, v) in vips.iter().enumerate() {
            let vip = VipIndex::try_from(i)
                .ok()
                .filter(|&vip| vip != PORTS_ONLY)
                .ok_or(DuplicateVip(i))?;
            let key = Key {
                addr: v.addr,
                port: v.port,
                proto: v.proto,
            };
            if !insert(&mut slots, len - 1, key, vip) {
                return Err(DuplicateVip(i));
            }
            let fkey = Key { port: 0, ..key };
            let all_ports = if v.port == 0 { vip } else { PORTS_ONLY };
            match frag_choice.iter_mut().find(|(k, _)| *k == fkey) {
                Some(c) if all_ports != PORTS_ONLY => c.1 = all_ports,
                Some(_) => {}
                None => frag_choice.push((fkey, all_ports)),
            }
        }
        let flen = table_len(frag_choice.len());
        let mut fragment_slots = vec![None; flen].into_boxed_slice();
        for (k, vip) in frag_choice {
            insert(&mut fragment_slots, flen - 1, k, vip);
        }
        Ok(Classifier {
            slots,
            fragment_slots,
            mask: len - 1,
            fragment_mask: flen - 1,
        })
    }

    /// The VIP for a packet to (addr, port) over `proto`, if any.
    #[inline]
    pub fn lookup(&self, addr: &[u8; 16], port: u16, proto: u8) -> Option<VipIndex> {
        let key = Key {
            addr: *addr,
            port,
            proto,
        };
        find(&self.slots, self.mask, key)
            .or_else(|| find(&self.slots, self.mask, Key { port: 0, ..key }))
    }

    /// What the VIPs on (`addr`, `proto`) make of a fragment that carries no ports: a later
    /// fragment, or a first one too short to hold them.
    #[inline]
    pub fn fragment_class(&self, addr: &[u8; 16], proto: u8) -> FragmentClass {
        let key = Key {
            addr: *addr,
            port: 0,
            proto,
        };
        match find(&self.fragment_slots, self.fragment_mask, key) {
            None => FragmentClass::NoVip,
            Some(PORTS_ONLY) => FragmentClass::PortsOnly,
            Some(vip) => FragmentClass::AllPorts(vip),
        }
    }

    /// What the VIPs make of a first fragment to (`addr`, `port`) over `proto`.
    #[inline]
    pub fn lookup_first_fragment(
        &self,
        addr: &[u8; 16],
        port: u16,
        proto: u8,
    ) -> FirstFragmentClass {
        let class = self.fragment_class(addr, proto);
        if class == FragmentClass::NoVip {
            return FirstFragmentClass::NoVip;
        }
        let exact = Key {
            addr: *addr,
            port,
            proto,
        };
        match (port, find(&self.slots, self.mask, exact), class) {
            (1.., Some(vip), _) => FirstFragmentClass::Exact(vip),
            (_, _, FragmentClass::AllPorts(vip)) => FirstFragmentClass::AllPorts(vip),
            _ => FirstFragmentClass::OtherPort,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::flow::mapped;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn v(addr: &str, port: u16, proto: u8) -> VipMatch {
        VipMatch {
            addr: mapped(addr.parse().unwrap()),
            port,
            proto,
        }
    }

    #[test]
    fn exact_then_all_ports() {
        let c = Classifier::new(&[
            v("192.0.2.10", 80, 6),
            v("192.0.2.10", 0, 6),
            v("192.0.2.10", 53, 17),
            v("2001:db8::10", 443, 6),
        ])
        .unwrap();
        let a = mapped("192.0.2.10".parse().unwrap());
        assert_eq!(c.lookup(&a, 80, 6), Some(0));
        assert_eq!(
            c.lookup(&a, 8080, 6),
            Some(1),
            "falls back to the all-ports VIP"
        );
        assert_eq!(c.lookup(&a, 53, 17), Some(2));
        assert_eq!(c.lookup(&a, 54, 17), None, "no all-ports UDP VIP");
        let b = mapped(IpAddr::V6("2001:db8::10".parse::<Ipv6Addr>().unwrap()));
        assert_eq!(c.lookup(&b, 443, 6), Some(3));
        assert_eq!(c.lookup(&b, 443, 17), None);
        let other = mapped(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)));
        assert_eq!(c.lookup(&other, 80, 6), None);
    }

    #[test]
    fn fragments_are_classified_by_address_and_protocol_first_fragments_by_port() {
        let c = Classifier::new(&[
            v("192.0.2.10", 443, 6),
            v("192.0.2.10", 80, 6),
            v("192.0.2.20", 8080, 17),
            v("192.0.2.20", 0, 17),
            v("192.0.2.30", 0, 6),
        ])
        .unwrap();
        let a = mapped("192.0.2.10".parse().unwrap());
        assert_eq!(c.fragment_class(&a, 6), FragmentClass::PortsOnly);
        assert_eq!(c.fragment_class(&a, 17), FragmentClass::NoVip);
        assert_eq!(
            c.lookup_first_fragment(&a, 80, 6),
            FirstFragmentClass::Exact(1)
        );
        assert_eq!(
            c.lookup_first_fragment(&a, 443, 6),
            FirstFragmentClass::Exact(0)
        );
        assert_eq!(
            c.lookup_first_fragment(&a, 22, 6),
            FirstFragmentClass::OtherPort,
            "port 22 of a :80 and :443 address is not the VIPs'"
        );
        assert_eq!(
            c.lookup_first_fragment(&a, 80, 17),
            FirstFragmentClass::NoVip
        );
        let b = mapped("192.0.2.20".parse().unwrap());
        assert_eq!(c.fragment_class(&b, 17), FragmentClass::AllPorts(3));
        assert_eq!(
            c.lookup_first_fragment(&b, 8080, 17),
            FirstFragmentClass::Exact(2)
        );
        assert_eq!(
            c.lookup_first_fragment(&b, 53, 17),
            FirstFragmentClass::AllPorts(3)
        );
        assert_eq!(
            c.lookup_first_fragment(&b, 0, 17),
            FirstFragmentClass::AllPorts(3),
            "destination port 0 is no exact VIP"
        );
        let d = mapped("192.0.2.30".parse().unwrap());
        assert_eq!(c.fragment_class(&d, 6), FragmentClass::AllPorts(4));
        assert_eq!(
            c.lookup_first_fragment(&d, 22, 6),
            FirstFragmentClass::AllPorts(4)
        );
    }

    #[test]
    fn duplicates_are_rejected() {
        let e = Classifier::new(&[v("192.0.2.10", 80, 6), v("192.0.2.10", 80, 6)]).unwrap_err();
        assert_eq!(e, DuplicateVip(1));
    }

    #[test]
    fn many_vips_all_found() {
        let vips: Vec<VipMatch> = (0..1000u32)
            .map(|i| VipMatch {
                addr: mapped(IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i))),
                port: 80 + (i % 3) as u16,
                proto: 6,
            })
            .collect();
        let c = Classifier::new(&vips).unwrap();
        for (i, vm) in vips.iter().enumerate() {
            assert_eq!(c.lookup(&vm.addr, vm.port, 6), Some(i as u16));
            assert_eq!(c.lookup(&vm.addr, vm.port, 17), None);
        }
        let empty = Classifier::new(&[]).unwrap();
        assert_eq!(empty.lookup(&[0; 16], 80, 6), None);
    }
}
