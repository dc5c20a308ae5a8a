//! Raw, generated bindings to DPDK 22.11.
//!
//! Everything here is `unsafe` to call. fulcrum's safe layer lives in `fulcrum::dpdk`;
//! nothing else should use this crate directly.

#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all, clippy::undocumented_unsafe_blocks)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// The DPDK version found by pkg-config when these bindings were generated.
pub const DPDK_BUILD_VERSION: &str = env!("DPDK_SYS_VERSION");

extern "C" {
    /// The calling thread's `rte_errno` (a thread-local behind a C macro).
    pub fn fulcrum_rte_errno() -> ::std::os::raw::c_int;
}
