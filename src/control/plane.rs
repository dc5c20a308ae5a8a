//! The control thread's state and the one path every change takes: validate the candidate
//! state, build its snapshot, write it to the state file, publish it, log it — in that
//! order, so a change is durable before the API acknowledges it and published before the
//! response leaves, and a change that fails at any step leaves everything as it was.
//!
//! A change costs what the VIPs it replaces hold, not what every VIP holds: the candidate
//! shares the records of the VIPs it leaves alone with the current state, and validation,
//! snapshot specs, id bookkeeping and health-check plans are redone for the others only.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::adoption::Adoption;
use super::counters::ApiCounters;
use super::health::{Checks, ProbeRedirect};
use super::messages::{
    BackendView, HealthReport, HealthStatus, SnapshotReport, VipHealth, VipView, WorkerVersion,
};
use super::neighbours::Macs;
use super::persist;
use super::state::{records_of, ApiError, BackendRecord, Desired, IdBook, IdPolicy, VipRecord};
use crate::config::{Config, Token};
use crate::runtime::handle::DataplaneHandle;
use crate::snapshot::{self, BackendSpec, BackendState, Snapshot, VipSpec};

/// The control thread's state: the desired state and everything derived from it or
/// observed about it. Every change goes through [`Plane::change`].
pub struct Plane {
    /// The configuration file's sections; its VIPs are `desired`'s starting point only.
    base: Config,
    desired: Desired,
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
    version: u64,
    dataplane: DataplaneHandle,
    token: Option<Token>,
    state_file: Option<PathBuf>,
    checks: Checks,
    macs: Macs,
    /// VIPs whose backends are all down, to log when that starts and ends.
    all_down: HashSet<u32>,
    started: Instant,
    adoption: Adoption,
    /// The API's connection counters, written by its network thread (zero without one).
    api: Arc<ApiCounters>,
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
        let quarantine =
            std::time::Duration::from_secs(u64::from(base.dataplane.conntrack_idle_timeout_secs));
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
            checks: Checks::new(redirect),
            macs: Macs::default(),
            all_down: HashSet::new(),
            started: Instant::now(),
            adoption: Adoption::default(),
            api: Arc::default(),
        };
        plane
            .checks
            .sync(&Desired::default(), &plane.desired, Instant::now());
        plane.publish_runtime("initial configuration")?;
        // Its wait would start only when the API is up, measuring the start-up, not the
        // workers; and the workers began with the same VIPs (`initial_specs`).
        plane.adoption.forget();
        Ok(plane)
    }

    /// Starts the helper threads (from the control thread, whose affinity they inherit).
    pub fn start_helpers(&mut self) -> std::io::Result<()> {
        self.checks.start()?;
        let ifaces: Vec<String> = self
            .dataplane
            .exception_ifaces
            .iter()
            .flatten()
            .cloned()
            .collect();
        self.macs.start(ifaces)?;
        self.update_wanted();
        Ok(())
    }

    /// The one way to change the desired state: `edit` changes a copy of it (with the id
    /// policy for new VIPs and backends) and says what it did; the copy is then validated,
    /// built, persisted, published and logged as one change, or, if any step fails, nothing
    /// changes. Returns the new version and what `edit` returned.
    pub fn change<T>(
        &mut self,
        edit: impl FnOnce(&mut Desired, &mut IdPolicy<'_>) -> Result<(String, T), ApiError>,
    ) -> Result<(u64, T), ApiError> {
        let mut candidate = self.desired.clone();
        let mut ids = self.ids.policy(Instant::now());
        let (what, value) = edit(&mut candidate, &mut ids)?;
        let version = self.commit(what, candidate)?;
        Ok((version, value))
    }

    /// Validates, persists, publishes and logs `candidate`; returns the new version.
    fn commit(&mut self, what: String, mut candidate: Desired) -> Result<u64, ApiError> {
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
        self.adoption.expect(&self.dataplane, version, started, now);
        self.ids.record(&self.desired, &candidate, now);
        self.specs = specs;
        self.specs_stale = false;
        let before = std::mem::replace(&mut self.desired, candidate);
        self.desired_valid = true;
        self.version = version;
        tracing::info!(version, "version {version}: {what}");
        self.specs_stale |= self.checks.sync(&before, &self.desired, now);
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
        self.adoption
            .expect(&self.dataplane, version, started, Instant::now());
        self.version = version;
        tracing::info!(version, "version {version}: {why}");
        self.note_all_down();
        Ok(version)
    }

    /// Measures the workers' adoption of the snapshot published last (see
    /// [`Adoption::wait`]).
    pub fn await_adoption(&mut self, answered: Option<Instant>) {
        self.adoption.wait(&self.dataplane, answered);
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
        if self.checks.status(b.id) == HealthStatus::Down {
            BackendState::Down
        } else {
            intended_state(b)
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
            |b| b.mac.map(|m| m.0).or_else(|| self.macs.get(b.id)),
        )
    }

    /// Tells the neighbour reader which backends need a next-hop MAC.
    fn update_wanted(&self) {
        let encap_needs_mac = self.dataplane.ports.iter().any(|p| p.gateway_mac.is_none());
        self.macs.want(&self.desired, encap_needs_mac);
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
        let mut changed = self.checks.poll(&self.desired, now);
        if self.macs.poll() {
            changed.push("next-hop MACs resolved".into());
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

    /// The version of the newest published snapshot.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The configuration file's sections as the daemon started with them.
    pub fn base(&self) -> &Config {
        &self.base
    }

    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    pub fn dataplane(&self) -> &DataplaneHandle {
        &self.dataplane
    }

    /// When the control plane started.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn adoption(&self) -> &Adoption {
        &self.adoption
    }

    pub fn api_counters(&self) -> &Arc<ApiCounters> {
        &self.api
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
                    health: self.checks.status(b.id),
                    mac: b
                        .mac
                        .or_else(|| self.macs.get(b.id).map(crate::addr::MacAddr)),
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
                        .map(|b| self.checks.report(b, now))
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

/// What the operator asked of a backend, health aside: weight 0 drains as an explicit drain
/// does (tracked flows stay), otherwise it is active.
pub(crate) fn intended_state(b: &BackendRecord) -> BackendState {
    if b.drained || b.weight == 0 {
        BackendState::Draining
    } else {
        BackendState::Active
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
        gue_port: v
            .gue_port
            .unwrap_or(crate::datapath::encap::GUE_DEFAULT_PORT),
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
