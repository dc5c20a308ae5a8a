//! fulcrum: a kernel-bypass layer-4 load balancer.
//!
//! The modules follow the packet's path (see docs/architecture.md):
//! `dpdk` (rx, the only unsafe layer) -> `wire` (parse) -> `classify` (VIP) ->
//! `conntrack` -> `maglev` (select) -> `encap` -> `dpdk` (tx).

pub mod config;
pub mod conntrack;
pub mod dpdk;
pub mod encap;
pub mod flow;
pub mod maglev;
pub mod packet;
pub mod version;
pub mod wire;
