//! fulcrum: a kernel-bypass layer-4 load balancer.
//!
//! The modules are the layers of docs/architecture.md, bottom up. `unsafe` is allowed in
//! `dpdk` (the safe layer over DPDK) and `mem` (huge pages, prefetch) only: every other
//! module forbids it, so the compiler keeps the layering.

// The ground: everything that needs `unsafe`.
pub mod dpdk;
pub mod mem;

// Vocabulary: packets as bytes, header formats, addresses.
#[forbid(unsafe_code)]
pub mod addr;
#[forbid(unsafe_code)]
pub mod packet;
#[forbid(unsafe_code)]
pub mod wire;

// The data path: what happens to one packet, and the tables it reads.
#[forbid(unsafe_code)]
pub mod datapath;
#[forbid(unsafe_code)]
pub mod maglev;
#[forbid(unsafe_code)]
pub mod snapshot;

// Running it: workers on lcores, the configuration, the control plane, the command line.
#[forbid(unsafe_code)]
pub mod cli;
#[forbid(unsafe_code)]
pub mod config;
#[forbid(unsafe_code)]
pub mod control;
#[forbid(unsafe_code)]
pub mod runtime;

// Build identity; the bodies of the fuzz targets (`fuzz/`) and the frames tests, benchmarks
// and fuzz targets are built from.
#[doc(hidden)]
#[forbid(unsafe_code)]
pub mod frames;
#[doc(hidden)]
#[forbid(unsafe_code)]
pub mod fuzzing;
#[forbid(unsafe_code)]
pub mod version;
