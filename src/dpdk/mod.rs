//! The safe layer over DPDK: with `mem`, the only place above `dpdk-sys` with `unsafe`.
//!
//! Everything the data plane touches is a safe type here:
//! - [`Eal`]: the environment, started once per process.
//! - [`Mempool`] and [`Mbuf`]: packet buffers, owned, freed on drop, one owner at a time; a
//!   shared mbuf (refcnt > 1, indirect) is read-only.
//! - [`Batch`]: a fixed-capacity burst on the stack; no allocation per burst.
//! - [`Port`], [`RxQueue`], [`TxQueue`]: a NIC and the queues one worker owns.
//! - [`lcore`]: launching workers on their lcores; [`clock`]: the TSC.
//!
//! Lifetimes order the teardown, so misuse does not compile: a [`Mempool`] borrows the
//! [`Eal`], an [`Mbuf`] and a [`Port`] borrow their pool, an [`RxQueue`]/[`TxQueue`] borrows
//! its port, and workers run in an [`lcore::scope`] that waits for them before anything they
//! borrow can go. The hot path pays nothing for it: no reference counts taken or dropped
//! per packet (checking that an mbuf is not shared is a plain load of its refcnt).
//!
//! Ownership rule for transmit: `TxQueue::tx_burst` moves the mbufs the PMD accepted out of
//! the batch; what it did not accept stays in the batch, still owned by the caller. No mbuf can
//! be both sent and freed.

mod batch;
pub mod clock;
mod eal;
mod error;
pub mod lcore;
mod mbuf;
mod mempool;
mod port;

pub use batch::Batch;
pub use eal::{eal_args_with_devices, Eal};
pub use error::DpdkError;
pub use mbuf::Mbuf;
pub use mempool::{data_room_for_mtu, Mempool, FRAME_OVERHEAD, MBUF_HEADROOM};
pub use port::{port_stats, LinkStatus, Port, PortConfig, PortStats, RxQueue, TxQueue};
