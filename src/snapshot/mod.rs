//! The snapshot: everything a worker reads, published as one immutable value.
//!
//! The control thread owns the configuration. On every change it builds a complete new
//! [`Snapshot`] (all VIPs, their Maglev tables, all backends, the ports' addresses) with a new
//! version number and publishes it with one atomic pointer swap. Workers check the version at
//! every burst boundary — their quiescent point — and adopt the newest snapshot whole, so a
//! worker never sees half of a change (no torn views across VIPs).
//!
//! Reclamation: the publisher keeps a reference to every snapshot it retired. A worker that
//! moves on only drops its own reference, which never frees memory on the worker; the control
//! thread frees a retired snapshot once it holds the last reference ([`Publisher::reclaim`]).
//!
//! The parts: `model.rs` is what a snapshot holds and the specs it is built from, `build.rs`
//! builds one, `publish.rs` hands it to the workers.

mod build;
mod model;
mod publish;
#[cfg(test)]
mod tests;

pub use build::{build, SnapshotError, SpecSource};
pub use model::{BackendEntry, BackendSpec, BackendState, PortInfo, Snapshot, VipEntry, VipSpec};
pub use publish::{Publisher, Reader};
