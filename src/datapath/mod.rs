//! What happens to one packet, as pure logic over [`crate::packet::PacketBuf`]: no DPDK, no
//! `unsafe`, tested with `VecPacket` and no EAL. [`crate::runtime`] runs it on mbufs.
//!
//! The parts, in the packet's order ([`pipeline`] drives them a burst at a time):
//! [`classify`] finds the VIP, [`flow`] names and hashes the flow, [`frag`] keeps the
//! fragments of a datagram together, [`conntrack`] pins a flow to its backend, the snapshot's
//! Maglev table picks one for a new flow, [`encap`] writes the packet toward the backend,
//! and [`icmp_reply`] answers what does not fit. [`stats`] holds each worker's counters.

pub mod classify;
pub mod conntrack;
pub mod encap;
pub mod flow;
pub mod frag;
pub mod icmp_reply;
pub mod pipeline;
pub mod stats;
