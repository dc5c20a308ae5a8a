//! fulcrum: a kernel-bypass layer-4 load balancer.
//!
//! The modules follow the packet's path (see docs/architecture.md):
//! `dpdk` (rx, the only unsafe layer) -> `wire` (parse) -> `classify` (VIP) ->
//! `conntrack` -> `maglev` (select) -> `encap` -> `dpdk` (tx).

pub mod addr;
pub mod bench;
pub mod classify;
pub mod cli;
pub mod config;
pub mod conntrack;
pub mod control;
pub mod dataplane;
pub mod dpdk;
pub mod encap;
pub mod flow;
pub mod frag;
#[doc(hidden)]
pub mod fuzzing;
pub mod handle;
pub mod icmp_reply;
pub mod maglev;
pub mod packet;
pub mod pipeline;
pub mod snapshot;
pub mod stats;
pub mod version;
pub mod wire;
pub mod worker;
