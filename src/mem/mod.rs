//! Memory helpers of the data path that need `unsafe` but not DPDK: big tables in huge pages
//! ([`huge`]) and cache prefetch hints ([`prefetch`]). With `dpdk`, the only modules where
//! `unsafe` is allowed; every other module of the crate forbids it (see `lib.rs`).

pub mod huge;
pub mod prefetch;
