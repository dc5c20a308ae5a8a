//! Handing snapshots to the workers: one atomic pointer swap to publish, one atomic load per
//! burst to notice, and retired snapshots freed on the control thread, never on a worker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::model::Snapshot;

struct Shared {
    current: ArcSwap<Snapshot>,
    version: AtomicU64,
}

/// The control thread's handle: publishes snapshots and frees retired ones.
pub struct Publisher {
    shared: Arc<Shared>,
    retired: Vec<Arc<Snapshot>>,
}

/// A worker's handle: the snapshot it runs, refreshed at burst boundaries.
pub struct Reader {
    shared: Arc<Shared>,
    local: Arc<Snapshot>,
}

impl Publisher {
    pub fn new(first: Snapshot) -> Publisher {
        let version = first.version;
        Publisher {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(first),
                version: AtomicU64::new(version),
            }),
            retired: Vec::new(),
        }
    }

    /// A reader for one worker.
    pub fn reader(&self) -> Reader {
        Reader {
            shared: self.shared.clone(),
            local: self.shared.current.load_full(),
        }
    }

    /// The version workers will pick up next.
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    /// The newest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// Publishes `next`; workers adopt it at their next burst boundary.
    pub fn publish(&mut self, next: Snapshot) {
        let version = next.version;
        let old = self.shared.current.swap(Arc::new(next));
        // Release: a worker that sees the new version also sees the new pointer.
        self.shared.version.store(version, Ordering::Release);
        self.retired.push(old);
        self.reclaim();
    }

    /// Frees retired snapshots no worker holds any more. Returns how many are still waiting.
    pub fn reclaim(&mut self) -> usize {
        self.retired.retain(|s| Arc::strong_count(s) > 1);
        self.retired.len()
    }
}

impl Reader {
    /// Adopts the newest snapshot if there is one; returns whether it changed. The cost when
    /// nothing changed is one atomic load. Dropping the old snapshot here never frees it: the
    /// publisher still holds it.
    #[inline]
    pub fn refresh(&mut self) -> bool {
        if self.shared.version.load(Ordering::Acquire) == self.local.version {
            return false;
        }
        self.local = self.shared.current.load_full();
        true
    }

    #[inline]
    pub fn snapshot(&self) -> &Snapshot {
        &self.local
    }
}
