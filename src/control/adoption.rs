//! How long the workers take to adopt a published snapshot: the control thread publishes,
//! answers, then watches the workers' versions ([`Adoption::wait`]) and records each wait
//! in [`AdoptionStats`], which `/metrics` shows as `fulcrum_snapshot_adoption_seconds` and
//! `GET /v1/snapshot` as its `adoption`.

use std::time::{Duration, Instant};

use crate::handle::DataplaneHandle;

/// How long [`Adoption::wait`] polls without yielding its core.
const SPIN: Duration = Duration::from_millis(1);

/// A snapshot published but not yet seen running on every worker.
#[derive(Clone, Copy)]
struct Pending {
    version: u64,
    /// When the change began (validation), and when the snapshot was published.
    started: Instant,
    published: Instant,
}

/// The snapshot waiting to be adopted, and what the waits so far measured.
#[derive(Default)]
pub struct Adoption {
    pending: Option<Pending>,
    stats: AdoptionStats,
}

impl Adoption {
    /// Notes that `version` was published; the next [`Adoption::wait`] measures it. Nothing
    /// is noted without workers (tests, `config check`): nothing would adopt it.
    pub fn expect(
        &mut self,
        dataplane: &DataplaneHandle,
        version: u64,
        started: Instant,
        published: Instant,
    ) {
        if dataplane.workers.is_empty() {
            return;
        }
        self.pending = Some(Pending {
            version,
            started,
            published,
        });
    }

    /// Forgets the snapshot noted last, unmeasured.
    pub fn forget(&mut self) {
        self.pending = None;
    }

    /// Measures how long the workers take to run the snapshot published last: called once
    /// its answer has left (`answered`; `None` for a change nobody asked for), so the wait
    /// never delays an answer. Polls the workers' versions (one relaxed load each) for at
    /// most [`ADOPTION_LIMIT`]; the next request waits that long at worst, and only if a
    /// worker is stuck.
    pub fn wait(&mut self, dataplane: &DataplaneHandle, answered: Option<Instant>) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let from = answered.unwrap_or(pending.published);
        let adopted = loop {
            if dataplane.all_workers_at(pending.version) {
                break Some(from.elapsed());
            }
            let waited = from.elapsed();
            if waited >= ADOPTION_LIMIT {
                break None;
            }
            // Spin through the first millisecond: a yield on a busy core can hand it away for
            // a whole time slice, and the measurement would be the scheduler's. Past that,
            // let the helper threads that share this core run.
            if waited < SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        };
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        self.stats.record(AdoptionSample {
            version: pending.version,
            adopted_us: adopted.map(micros),
            answered_us: micros(from.duration_since(pending.published)),
            commit_us: micros(pending.published.duration_since(pending.started)),
        });
        if adopted.is_none() {
            tracing::warn!(
                version = pending.version,
                "some worker has not adopted snapshot version {} within {} ms (worker versions: {:?}); is a worker stuck or starved of its core?",
                pending.version,
                ADOPTION_LIMIT.as_millis(),
                dataplane.worker_versions()
            );
        }
    }

    pub fn stats(&self) -> &AdoptionStats {
        &self.stats
    }
}

/// Upper bounds of the `fulcrum_snapshot_adoption_seconds` buckets: from a worker that was
/// between two bursts (microseconds) to one that is starved of its core (tens of ms).
pub const ADOPTION_BUCKETS: [f64; 11] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05,
];

/// How long the control thread waits for the workers to adopt a snapshot before it counts a
/// timeout and moves on (the largest bucket).
pub const ADOPTION_LIMIT: Duration = Duration::from_millis(50);

/// One published snapshot's way to the workers. Times are in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdoptionSample {
    pub version: u64,
    /// From the API answer leaving (from the publish, for a health or MAC change, which has
    /// no answer) until every worker runs this version or a newer one; when they already did,
    /// the cost of one look (under a microsecond). `None`: not every worker had it within
    /// [`ADOPTION_LIMIT`].
    pub adopted_us: Option<f64>,
    /// From the publish until the answer left (0 without an answer).
    pub answered_us: f64,
    /// The change's validate + build + persist + publish, on the control thread.
    pub commit_us: f64,
}

/// `GET /v1/snapshot`'s `adoption`: the last sample and the totals behind
/// `fulcrum_snapshot_adoption_seconds`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdoptionReport {
    /// Publishes measured (API changes, health and MAC changes).
    pub measured: u64,
    /// Publishes some worker had not adopted within the wait limit.
    pub timeouts: u64,
    pub max_adopted_us: f64,
    pub last: Option<AdoptionSample>,
}

/// How long workers take to adopt published snapshots, as a Prometheus histogram.
#[derive(Clone, Debug, Default)]
pub struct AdoptionStats {
    /// Per bucket of [`ADOPTION_BUCKETS`], not cumulative.
    pub(super) buckets: [u64; ADOPTION_BUCKETS.len()],
    pub(super) sum_seconds: f64,
    pub(super) report: AdoptionReport,
}

impl AdoptionStats {
    pub fn record(&mut self, sample: AdoptionSample) {
        self.report.measured += 1;
        match sample.adopted_us {
            Some(us) => {
                let seconds = us / 1e6;
                self.sum_seconds += seconds;
                if let Some(i) = ADOPTION_BUCKETS.iter().position(|b| seconds <= *b) {
                    self.buckets[i] += 1;
                }
                self.report.max_adopted_us = self.report.max_adopted_us.max(us);
            }
            // Counted in `+Inf` only: the real time is unknown, and adding the limit to the
            // sum would pass a guess off as a measurement.
            None => self.report.timeouts += 1,
        }
        self.report.last = Some(sample);
    }

    pub fn report(&self) -> &AdoptionReport {
        &self.report
    }
}
