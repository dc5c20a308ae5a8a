//! The control thread's state and the one path every change takes: validate the candidate
//! state, build its snapshot, write it to the state file, publish it, log it — in that
//! order, so a change is durable before the API acknowledges it and published before the
//! response leaves, and a change that fails at any step leaves everything as it was.
//!
//! A change costs what the VIPs it replaces hold, not what every VIP holds: the candidate
//! shares the records of the VIPs it leaves alone with the current state, and validation,
//! snapshot specs, id bookkeeping and health-check plans are redone for the others only.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::health::{Health, Job, Prober};
use super::http::ApiCounters;
use super::messages::{
    BackendHealth, BackendView, HealthReport, HealthStatus, SnapshotReport, VipHealth, VipView,
    WorkerVersion,
};
use super::metrics::{AdoptionSample, AdoptionStats, ADOPTION_LIMIT};
use super::neighbours::{NeighbourReader, Wanted};
use super::persist;
use super::state::{records_of, ApiError, BackendRecord, Desired, IdBook, IdPolicy, VipRecord};
use crate::config::{Config, HealthCheck, Token};
use crate::encap::EncapMode;
use crate::handle::DataplaneHandle;
use crate::snapshot::{self, BackendSpec, BackendState, Snapshot, VipSpec};

/// Where health checks really connect, given where they would: the identity in the daemon.
/// Tests point it at servers on 127.0.0.1, since backends cannot be loopback addresses.
pub type ProbeRedirect = Arc<dyn Fn(SocketAddr) -> SocketAddr + Send + Sync>;

/// How long [`Plane::await_adoption`] polls without yielding its core.
const ADOPTION_SPIN: Duration = Duration::from_millis(1);

/// A snapshot published but not yet seen running on every worker.
#[derive(Clone, Copy)]
struct PendingAdoption {
    version: u64,
    /// When the change began (validation), and when the snapshot was published.
    started: Instant,
    published: Instant,
}

/// How one backend is checked.
#[derive(Clone)]
struct CheckPlan {
    check: HealthCheck,
    target: SocketAddr,
    host: String,
}

pub struct Plane {
    pub base: Config,
    pub desired: Desired,
    /// Whether `desired` passed [`Desired::validate`] against `base`: then a change is
    /// validated by the VIPs it replaces.
    desired_valid: bool,
    ids: IdBook,
    /// The snapshot spec of each VIP of `desired`, in order, as the last build made them:
    /// a change builds specs for the VIPs it replaces only.
    /// In `Arc`s, so `snapshot::build` recognises an unchanged VIP's spec by pointer.
    specs: Vec<Arc<VipSpec>>,
    /// `specs` may no longer say what `desired` and the observations make (a change dropped
    /// the health of a backend that was down): the next build makes every spec anew.
    specs_stale: bool,
    /// The version of the newest published snapshot.
    pub version: u64,
    pub dataplane: DataplaneHandle,
    pub token: Option<Token>,
    state_file: Option<PathBuf>,
    plans: HashMap<u32, CheckPlan>,
    health: HashMap<u32, Health>,
    /// Next-hop MACs resolved from the kernel, by backend id.
    macs: HashMap<u32, [u8; 6]>,
    prober: Option<Prober>,
    neighbours: Option<NeighbourReader>,
    redirect: Option<ProbeRedirect>,
    /// VIPs whose backends are all down, to log when that starts and ends.
    all_down: HashSet<u32>,
    pub started: Instant,
    pending_adoption: Option<PendingAdoption>,
    pub adoption: AdoptionStats,
    /// The API's connection counters, written by its network thread (zero without one).
    pub api: Arc<ApiCounters>,
}

impl Plane {
    /// Publishes `desired` as the first snapshot: version `desired.version + 1`, or one more
    /// than the snapshot the data plane already runs if that is newer (the data plane starts
    /// on its own snapshot of the same VIPs, and a worker adopts only a version it does not
    /// hold).
    pub fn new(
        base: Config,
        desired: Desired,
        dataplane: DataplaneHandle,
        token: Option<Token>,
        redirect: Option<ProbeRedirect>,
    ) -> Result<Plane, ApiError> {
        let quarantine = Duration::from_secs(u64::from(base.dataplane.conntrack_idle_timeout_secs));
        let mut plane = Plane {
            state_file: base.control.state_file.clone(),
            desired_valid: desired.validate(&base).is_ok(),
            ids: IdBook::new(&desired, quarantine),
            specs: Vec::new(),
            specs_stale: true,
            base,
            version: desired.version.max(dataplane.publisher.version()),
            desired,
            dataplane,
            token,
            plans: HashMap::new(),
            health: HashMap::new(),
            macs: HashMap::new(),
            prober: None,
            neighbours: None,
            redirect,
            all_down: HashSet::new(),
            started: Instant::now(),
            pending_adoption: None,
            adoption: AdoptionStats::default(),
            api: Arc::default(),
        };
        plane.sync_health(&Desired::default(), Instant::now());
        plane.publish_runtime("initial configuration")?;
        // Its wait would start only when the API is up, measuring the start-up, not the
        // workers; and the workers began with the same VIPs (`initial_specs`).
        plane.pending_adoption = None;
        Ok(plane)
    }

    /// Starts the helper threads (from the control thread, whose affinity they inherit).
    pub fn start_helpers(&mut self) -> std::io::Result<()> {
        self.prober = Some(Prober::start(super::health::PROBERS)?);
        let ifaces: Vec<String> = self
            .dataplane
            .exception_ifaces
            .iter()
            .flatten()
            .cloned()
            .collect();
        if !ifaces.is_empty() {
            self.neighbours = Some(NeighbourReader::start(ifaces)?);
            self.update_wanted();
        }
        Ok(())
    }

    /// Validates, persists, publishes and logs `candidate`; returns the new version.
    pub fn commit(&mut self, what: String, mut candidate: Desired) -> Result<u64, ApiError> {
        let started = Instant::now();
        if self.desired_valid {
            candidate.validate_change(&self.desired, &self.base)?;
        } else {
            candidate.validate(&self.base)?;
        }
        let version = self.version + 1;
        candidate.version = version;
        let specs = self.specs_for(&candidate);
        let snapshot = snapshot::build(
            version,
            &specs,
            &self.dataplane.ports,
            Some(&self.dataplane.publisher.current()),
        )
        .map_err(|e| ApiError::bad_request(e.to_string()));
        let stored = snapshot.and_then(|snapshot| match &self.state_file {
            Some(path) => persist::store(path, &candidate)
                .map(|()| snapshot)
                .map_err(|e| ApiError::internal(e.to_string())),
            None => Ok(snapshot),
        });
        let snapshot = match stored {
            Ok(snapshot) => snapshot,
            Err(e) => {
                // `specs_for` took the unchanged VIPs' specs over; the current state's are
                // made anew on the next build.
                self.specs_stale = true;
                return Err(e);
            }
        };
        self.dataplane.publisher.publish(snapshot);
        let now = Instant::now();
        self.expect_adoption(version, started, now);
        self.ids.record(&self.desired, &candidate, now);
        self.specs = specs;
        self.specs_stale = false;
        let before = std::mem::replace(&mut self.desired, candidate);
        self.desired_valid = true;
        self.version = version;
        tracing::info!(version, "version {version}: {what}");
        self.sync_health(&before, now);
        if wanted_changed(&before, &self.desired) {
            self.update_wanted();
        }
        self.note_all_down();
        Ok(version)
    }

    /// Publishes the current state again after a health or MAC change (not persisted).
    fn publish_runtime(&mut self, why: &str) -> Result<u64, ApiError> {
        let started = Instant::now();
        let version = self.version + 1;
        // Health and MACs may have changed anywhere: every spec is made anew.
        self.specs = self.specs(&self.desired);
        self.specs_stale = false;
        let current = self.dataplane.publisher.current();
        let snapshot = snapshot::build(version, &self.specs, &self.dataplane.ports, Some(&current))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        drop(current);
        self.dataplane.publisher.publish(snapshot);
        self.expect_adoption(version, started, Instant::now());
        self.version = version;
        tracing::info!(version, "version {version}: {why}");
        self.note_all_down();
        Ok(version)
    }

    fn expect_adoption(&mut self, version: u64, started: Instant, published: Instant) {
        if self.dataplane.workers.is_empty() {
            return; // nothing to adopt it: no data plane (tests, `config check`)
        }
        self.pending_adoption = Some(PendingAdoption {
            version,
            started,
            published,
        });
    }

    /// Measures how long the workers take to run the snapshot published last: called once
    /// its answer has left (`answered`; `None` for a change nobody asked for), so the wait
    /// never delays an answer. Polls the workers' versions (one relaxed load each) for at
    /// most [`ADOPTION_LIMIT`]; the next request waits that long at worst, and only if a
    /// worker is stuck.
    pub fn await_adoption(&mut self, answered: Option<Instant>) {
        let Some(pending) = self.pending_adoption.take() else {
            return;
        };
        let from = answered.unwrap_or(pending.published);
        let adopted = loop {
            if self.dataplane.all_workers_at(pending.version) {
                break Some(from.elapsed());
            }
            let waited = from.elapsed();
            if waited >= ADOPTION_LIMIT {
                break None;
            }
            // Spin through the first millisecond: a yield on a busy core can hand it away for
            // a whole time slice, and the measurement would be the scheduler's. Past that,
            // let the helper threads that share this core run.
            if waited < ADOPTION_SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        };
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        self.adoption.record(AdoptionSample {
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
                self.dataplane.worker_versions()
            );
        }
    }

    /// The id policy for a change of the current state.
    pub fn ids(&self) -> IdPolicy<'_> {
        self.ids.policy(Instant::now())
    }

    /// The specs of `candidate`'s VIPs: those it shares with the current state are taken
    /// from `self.specs` (which the caller puts back or marks stale), the others made.
    fn specs_for(&mut self, candidate: &Desired) -> Vec<Arc<VipSpec>> {
        if self.specs_stale || self.specs.len() != self.desired.vips.len() {
            return self.specs(candidate);
        }
        let mut made: HashMap<*const VipRecord, Arc<VipSpec>> = self
            .desired
            .vips
            .iter()
            .map(Arc::as_ptr)
            .zip(std::mem::take(&mut self.specs))
            .collect();
        self.specs_stale = true; // until the caller stores the new ones
        candidate
            .vips
            .iter()
            .map(|v| {
                made.remove(&Arc::as_ptr(v))
                    .unwrap_or_else(|| Arc::new(self.spec_of(v)))
            })
            .collect()
    }

    fn backend_state(&self, b: &BackendRecord) -> BackendState {
        if self
            .health
            .get(&b.id)
            .is_some_and(|h| h.status == HealthStatus::Down)
        {
            BackendState::Down
        } else if b.drained || b.weight == 0 {
            // Weight 0 drains as an explicit drain does: tracked flows stay.
            BackendState::Draining
        } else {
            BackendState::Active
        }
    }

    fn specs(&self, desired: &Desired) -> Vec<Arc<VipSpec>> {
        desired
            .vips
            .iter()
            .map(|v| Arc::new(self.spec_of(v)))
            .collect()
    }

    fn spec_of(&self, vip: &VipRecord) -> VipSpec {
        spec_of(
            vip,
            |b| self.backend_state(b),
            |b| b.mac.map(|m| m.0).or_else(|| self.macs.get(&b.id).copied()),
        )
    }

    /// Brings the check plans from `before` to the desired state: those of the VIPs that
    /// changed are made anew. Keeps the health of backends that stay checked, starts new
    /// ones up.
    fn sync_health(&mut self, before: &Desired, now: Instant) {
        let kept = records_of(&self.desired.vips);
        let unchanged = records_of(&before.vips);
        let mut dropped = Vec::new();
        for v in before
            .vips
            .iter()
            .filter(|v| !kept.contains(&Arc::as_ptr(v)))
        {
            for b in &v.backends {
                if self.plans.remove(&b.id).is_some() {
                    dropped.push(b.id);
                }
            }
        }
        let mut added = Vec::new();
        for v in self
            .desired
            .vips
            .iter()
            .filter(|v| !unchanged.contains(&Arc::as_ptr(v)))
        {
            for (id, plan) in self.plans_of(v) {
                self.plans.insert(id, plan);
                added.push(id);
            }
        }
        for id in dropped {
            if self.plans.contains_key(&id) {
                continue;
            }
            if let Some(health) = self.health.remove(&id) {
                // The spec built before this made the backend down; without its health it
                // is not, and nothing else would rebuild that spec.
                self.specs_stale |= health.status == HealthStatus::Down;
            }
        }
        for id in added {
            self.health.entry(id).or_insert_with(|| Health::new(now));
        }
    }

    /// How the backends of one VIP are checked, by backend id.
    fn plans_of(&self, v: &VipRecord) -> Vec<(u32, CheckPlan)> {
        let Ok(vip) = v.to_config() else {
            return Vec::new();
        };
        let Some(check) = &vip.healthcheck else {
            return Vec::new();
        };
        let mut plans = Vec::new();
        for (b, record) in vip.backends.iter().zip(&v.backends) {
            let Some(port) = vip.healthcheck_port(b) else {
                continue;
            };
            let real = SocketAddr::new(b.address.addr, port);
            let target = self.redirect.as_ref().map_or(real, |r| r(real));
            plans.push((
                record.id,
                CheckPlan {
                    check: check.clone(),
                    target,
                    host: real.to_string(),
                },
            ));
        }
        plans
    }

    /// Tells the neighbour reader which backends need a next-hop MAC.
    fn update_wanted(&self) {
        let Some(reader) = &self.neighbours else {
            return;
        };
        let encap_needs_mac = self.dataplane.ports.iter().any(|p| p.gateway_mac.is_none());
        let mut wanted = Vec::new();
        for v in &self.desired.vips {
            let l2 = v.encap == EncapMode::L2Dsr;
            if !l2 && !encap_needs_mac {
                continue;
            }
            for b in v.backends.iter().filter(|b| b.mac.is_none()) {
                wanted.push(Wanted {
                    backend_id: b.id,
                    addr: b.address.addr,
                    on_link: l2,
                });
            }
        }
        reader.want(wanted);
    }

    /// Logs VIPs entering or leaving the all-backends-down state.
    fn note_all_down(&mut self) {
        let snapshot = self.dataplane.publisher.current();
        let now_down: HashSet<u32> = snapshot
            .vips
            .iter()
            .filter(|v| v.all_down)
            .map(|v| v.id)
            .collect();
        for v in snapshot.vips.iter() {
            match (now_down.contains(&v.id), self.all_down.contains(&v.id)) {
                (true, false) => tracing::warn!(
                    "vip {}: every backend is down; keeping its table as if they were up rather than dropping its traffic (check the backends: fulcrum health)",
                    v.key
                ),
                (false, true) => tracing::info!("vip {}: a backend is up again", v.key),
                _ => {}
            }
        }
        self.all_down = now_down;
    }

    /// Work between requests: health outcomes and due checks, resolved MACs, reclamation.
    pub fn tick(&mut self, now: Instant) {
        let mut changed: Vec<String> = Vec::new();
        while let Some(outcome) = self.prober.as_ref().and_then(Prober::try_outcome) {
            let (Some(plan), Some(health)) = (
                self.plans.get(&outcome.backend_id),
                self.health.get_mut(&outcome.backend_id),
            ) else {
                continue; // the backend went away while its check ran
            };
            let Some(status) = health.record(&outcome.result, &plan.check, now) else {
                continue;
            };
            let (rise, fall) = (plan.check.rise, plan.check.fall);
            let error = health.last_error.clone().unwrap_or_default();
            let (vip, backend) = self.describe(outcome.backend_id);
            match status {
                HealthStatus::Down => tracing::warn!(
                    "backend {backend} of vip {vip} is down after {fall} failed checks: {error}"
                ),
                _ => tracing::info!(
                    "backend {backend} of vip {vip} is up after {rise} passed checks"
                ),
            }
            changed.push(format!(
                "backend {backend} of vip {vip} is {}",
                status.as_str()
            ));
        }
        if let Some(prober) = &self.prober {
            for (id, plan) in &self.plans {
                let Some(health) = self.health.get_mut(id) else {
                    continue;
                };
                if health.in_flight || now < health.next_due {
                    continue;
                }
                health.in_flight = true;
                let interval = Duration::from_millis(u64::from(plan.check.interval_ms));
                // From the due time, not from now, so the interval does not drift by a tick
                // per check; but never schedule into the past after a stall.
                health.next_due = (health.next_due + interval).max(now);
                prober.submit(Job {
                    backend_id: *id,
                    target: plan.target,
                    host: plan.host.clone(),
                    kind: plan.check.kind.clone(),
                    timeout: Duration::from_millis(u64::from(plan.check.timeout_ms)),
                });
            }
        }
        if let Some(macs) = self
            .neighbours
            .as_ref()
            .and_then(NeighbourReader::try_found)
        {
            if macs != self.macs {
                self.macs = macs;
                changed.push("next-hop MACs resolved".into());
            }
        }
        if !changed.is_empty() {
            if let Err(e) = self.publish_runtime(&changed.join("; ")) {
                tracing::error!("cannot publish a snapshot after a health change: {e}");
            }
        }
        self.await_adoption(None);
    }

    /// Once a second: frees retired snapshots and collects the workers' histograms.
    pub fn housekeeping(&mut self) {
        self.dataplane.publisher.reclaim();
        for collector in &mut self.dataplane.histograms {
            collector.collect();
        }
    }

    fn describe(&self, backend_id: u32) -> (String, String) {
        for v in &self.desired.vips {
            if let Some(b) = v.backends.iter().find(|b| b.id == backend_id) {
                return (v.vip.to_string(), b.address.to_string());
            }
        }
        ("?".into(), format!("#{backend_id}"))
    }

    pub fn vip_views(&self) -> Vec<VipView> {
        let snapshot = self.dataplane.publisher.current();
        self.desired
            .vips
            .iter()
            .map(|v| self.view_of(v, &snapshot))
            .collect()
    }

    /// One VIP's view, without building every other one: a change's answer names one VIP,
    /// and with thousands of backends the full list would cost more than the change.
    pub fn vip_view(&self, key: &crate::addr::VipKey) -> Result<VipView, ApiError> {
        let record = self.desired.vip(key)?;
        Ok(self.view_of(record, &self.dataplane.publisher.current()))
    }

    fn view_of(&self, v: &VipRecord, snapshot: &Snapshot) -> VipView {
        VipView {
            vip: v.vip,
            id: v.id,
            encap: v.encap,
            gue_port: v.gue_port,
            table_size: v.table_size,
            healthcheck: v.healthcheck.clone(),
            all_backends_down: snapshot.vips.iter().any(|e| e.id == v.id && e.all_down),
            backends: v
                .backends
                .iter()
                .map(|b| BackendView {
                    address: b.address,
                    id: b.id,
                    weight: b.weight,
                    state: self.backend_state(b),
                    drained: b.drained,
                    health: self
                        .health
                        .get(&b.id)
                        .map_or(HealthStatus::Unchecked, |h| h.status),
                    mac: b
                        .mac
                        .or_else(|| self.macs.get(&b.id).map(|m| crate::addr::MacAddr(*m))),
                })
                .collect(),
        }
    }

    pub fn health_report(&self) -> HealthReport {
        let now = Instant::now();
        let views = self.vip_views();
        HealthReport {
            version: self.version,
            vips: self
                .desired
                .vips
                .iter()
                .zip(views)
                .map(|(v, view)| VipHealth {
                    vip: v.vip,
                    healthcheck: v.healthcheck.clone(),
                    all_backends_down: view.all_backends_down,
                    backends: v
                        .backends
                        .iter()
                        .map(|b| {
                            let h = self.health.get(&b.id);
                            BackendHealth {
                                address: b.address,
                                id: b.id,
                                status: h.map_or(HealthStatus::Unchecked, |h| h.status),
                                target: self.plans.get(&b.id).map(|p| p.host.clone()),
                                consecutive_successes: h.map_or(0, |h| h.successes),
                                consecutive_failures: h.map_or(0, |h| h.failures),
                                checks: h.map_or(0, |h| h.checks),
                                failures: h.map_or(0, |h| h.failed_checks),
                                last_error: h.and_then(|h| h.last_error.clone()),
                                since_secs: h.map(|h| now.duration_since(h.since).as_secs_f64()),
                            }
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    pub fn snapshot_report(&mut self) -> SnapshotReport {
        let version = self.dataplane.publisher.version();
        SnapshotReport {
            version,
            workers: self.worker_versions(),
            all_workers_current: self.dataplane.all_workers_at(version),
            retired_waiting: self.dataplane.publisher.reclaim(),
        }
    }

    pub fn worker_versions(&self) -> Vec<WorkerVersion> {
        self.dataplane
            .workers
            .iter()
            .map(|w| WorkerVersion {
                worker: w.worker,
                lcore: w.lcore,
                version: w.snapshot_version.get(),
            })
            .collect()
    }

    /// The running configuration: the file's sections with the current VIPs.
    pub fn running_config(&self) -> Result<Config, ApiError> {
        self.desired.to_config(&self.base)
    }
}

/// The snapshot specs of a desired state, with each backend's state and MAC from the callers'
/// knowledge (health, resolved neighbours).
pub(crate) fn specs_of(
    desired: &Desired,
    state: impl Fn(&BackendRecord) -> BackendState,
    mac: impl Fn(&BackendRecord) -> Option<[u8; 6]>,
) -> Vec<VipSpec> {
    desired
        .vips
        .iter()
        .map(|v| spec_of(v, &state, &mac))
        .collect()
}

fn spec_of(
    v: &VipRecord,
    state: impl Fn(&BackendRecord) -> BackendState,
    mac: impl Fn(&BackendRecord) -> Option<[u8; 6]>,
) -> VipSpec {
    VipSpec {
        id: v.id,
        key: v.vip,
        encap: v.encap,
        gue_port: v.gue_port.unwrap_or(crate::encap::GUE_DEFAULT_PORT),
        table_size: v.table_size,
        backends: v
            .backends
            .iter()
            .map(|b| BackendSpec {
                id: b.id,
                addr: b.address,
                weight: u32::from(b.weight),
                state: state(b),
                mac: mac(b),
            })
            .collect(),
    }
}

/// Whether the VIPs a change replaced differ in which backends need a next-hop MAC (most
/// changes, a weight or a drain, do not, and the reader then keeps its list).
fn wanted_changed(before: &Desired, after: &Desired) -> bool {
    let kept = records_of(&after.vips);
    let unchanged = records_of(&before.vips);
    let wanted = |v: &VipRecord| {
        v.backends
            .iter()
            .filter(|b| b.mac.is_none())
            .map(|b| (v.encap, b.id, b.address.addr))
            .collect::<Vec<_>>()
    };
    let gone: Vec<_> = before
        .vips
        .iter()
        .filter(|v| !kept.contains(&Arc::as_ptr(v)))
        .map(|v| wanted(v))
        .collect();
    let come: Vec<_> = after
        .vips
        .iter()
        .filter(|v| !unchanged.contains(&Arc::as_ptr(v)))
        .map(|v| wanted(v))
        .collect();
    gone != come
}
