//! fulcrum: a kernel-bypass layer-4 load balancer.
//!
//! The modules follow the packet's path (see docs/architecture.md):
//! `dpdk` (rx, the only unsafe layer) -> `wire` (parse) -> `classify` (VIP) ->
//! `conntrack` -> `maglev` (select) -> `encap` -> `dpdk` (tx).
//!
//! `unsafe` is allowed in `dpdk` (the safe layer over DPDK) and `mem` (huge pages, prefetch)
//! only: every other module forbids it, so the compiler keeps the layering.

#[forbid(unsafe_code)]
pub mod addr;
#[forbid(unsafe_code)]
pub mod bench;
#[forbid(unsafe_code)]
pub mod classify;
#[forbid(unsafe_code)]
pub mod cli;
#[forbid(unsafe_code)]
pub mod config;
#[forbid(unsafe_code)]
pub mod conntrack;
#[forbid(unsafe_code)]
pub mod control;
#[forbid(unsafe_code)]
pub mod dataplane;
pub mod dpdk;
#[forbid(unsafe_code)]
pub mod encap;
#[forbid(unsafe_code)]
pub mod flow;
#[forbid(unsafe_code)]
pub mod frag;
#[doc(hidden)]
#[forbid(unsafe_code)]
pub mod fuzzing;
#[forbid(unsafe_code)]
pub mod handle;
#[forbid(unsafe_code)]
pub mod icmp_reply;
#[forbid(unsafe_code)]
pub mod maglev;
pub mod mem;
#[forbid(unsafe_code)]
pub mod packet;
#[forbid(unsafe_code)]
pub mod pipeline;
#[forbid(unsafe_code)]
pub mod snapshot;
#[forbid(unsafe_code)]
pub mod stats;
#[forbid(unsafe_code)]
pub mod version;
#[forbid(unsafe_code)]
pub mod wire;
#[forbid(unsafe_code)]
pub mod worker;
