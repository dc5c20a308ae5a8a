//! Flows: the 5-tuple that identifies one, and the hash that spreads them.

/// IP protocol numbers fulcrum balances or inspects.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

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
