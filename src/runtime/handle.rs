//! What the control plane holds of a running data plane.
//!
//! `fulcrum run` starts the EAL, ports and workers (`dataplane.rs`) and gives the control
//! plane this handle: the snapshot publisher, the workers' counters and histogram collectors,
//! and what it needs to know of the ports. Tests build one with no workers and no DPDK.

use std::sync::Arc;

use crate::datapath::stats::{HistogramCollector, WorkerStats};
use crate::snapshot::{PortInfo, Publisher, Snapshot};

/// Live port counters, read on demand (from DPDK in the daemon).
pub trait PortCounters: Send {
    /// One entry per port, in configuration order.
    fn read(&self) -> Vec<crate::dpdk::PortStats>;
}

/// The control plane's view of the data plane.
pub struct DataplaneHandle {
    pub publisher: Publisher,
    /// Per port, in configuration order: what workers need to build outer headers.
    pub ports: Vec<PortInfo>,
    /// Per port: the DPDK device name (for stats and logs).
    pub port_names: Vec<String>,
    /// Per port: the kernel interface of its exception TAP, if the exception path is on.
    /// The control plane reads next-hop MACs from this interface's neighbour table and sends
    /// its health checks through the kernel, which routes them out of that TAP.
    pub exception_ifaces: Vec<Option<String>>,
    /// One per worker, in worker order.
    pub workers: Vec<Arc<WorkerStats>>,
    /// One per worker, in worker order.
    pub histograms: Vec<HistogramCollector>,
    pub port_counters: Option<Box<dyn PortCounters>>,
}

impl DataplaneHandle {
    /// A handle with no workers and no ports: the control plane alone, for tests and for
    /// checking a configuration.
    pub fn detached() -> DataplaneHandle {
        DataplaneHandle {
            publisher: Publisher::new(Snapshot::empty(Vec::new())),
            ports: Vec::new(),
            port_names: Vec::new(),
            exception_ifaces: Vec::new(),
            workers: Vec::new(),
            histograms: Vec::new(),
            port_counters: None,
        }
    }

    /// The snapshot version each worker runs.
    pub fn worker_versions(&self) -> Vec<u64> {
        self.workers
            .iter()
            .map(|w| w.snapshot_version.get())
            .collect()
    }

    /// Whether every worker runs `version` or newer.
    pub fn all_workers_at(&self, version: u64) -> bool {
        self.workers
            .iter()
            .all(|w| w.snapshot_version.get() >= version)
    }
}
