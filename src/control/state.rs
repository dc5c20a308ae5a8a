//! What the operator asked for — VIPs, backends, weights, drains — with the stable ids the
//! workers know them by. This is the part of the control plane's state that is persisted; the
//! observations (health, resolved MACs) live beside it in the control plane and are not.
//!
//! Every operation works on a copy ([`Desired`] is cloned per change) and is validated before
//! anything is published or written, so a rejected request changes nothing. A copy shares
//! each VIP's record with the state it was cloned from until an operation changes that VIP,
//! so a change costs what the VIPs it touches hold, not what the whole state holds: it is
//! validated, and its ids are accounted for, by the VIPs whose records it replaced.
//!
//! Ids. A VIP id is below `stats::MAX_VIPS`, a backend id below `stats::MAX_BACKENDS`; a
//! backend id names one membership (the same address in two VIPs has two ids). Ids are
//! handed out in increasing order from counters kept in the state file, so a restart keeps
//! every id and does not hand out recently used ones again. When a counter reaches its limit
//! it wraps and the lowest free id is taken, but never one released less than the quarantine
//! ago (the conntrack idle timeout): a worker's connection table may still hold flows that
//! name it until they expire, and those must not land on a different backend. After a restart
//! the workers' tables are empty, so the quarantine starts over empty.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::messages::{BackendRequest, HealthCheckKindName, HealthCheckSpec, VipRequest};
use crate::addr::{BackendAddr, MacAddr, VipKey};
use crate::config::{self, Config, HealthCheck, HealthCheckKind, MAX_WEIGHT};
use crate::datapath::encap::{EncapMode, GUE_DEFAULT_PORT};
use crate::datapath::stats;
use crate::maglev::DEFAULT_TABLE_SIZE;

/// A request the control plane refuses, with the HTTP status it answers and a message that
/// says what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 404,
            message: message.into(),
        }
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 409,
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 500,
            message: message.into(),
        }
    }
}

/// A backend of one VIP, as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRecord {
    pub id: u32,
    pub address: BackendAddr,
    pub weight: u16,
    /// Drained by the operator: no new flows, tracked flows stay, weight kept for undrain.
    #[serde(default)]
    pub drained: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

/// A VIP, as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipRecord {
    pub id: u32,
    pub vip: VipKey,
    pub encap: EncapMode,
    /// Only for `gue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gue_port: Option<u16>,
    pub table_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheckSpec>,
    pub backends: Vec<BackendRecord>,
}

impl VipRecord {
    pub fn backend(&self, address: &BackendAddr) -> Option<&BackendRecord> {
        self.backends.iter().find(|b| b.address == *address)
    }

    /// The configuration file's form of this VIP (for validation, `config show` and diffs).
    pub fn to_config(&self) -> Result<config::Vip, ApiError> {
        Ok(config::Vip {
            key: self.vip,
            encap: self.encap,
            gue_port: (self.encap == EncapMode::Gue)
                .then(|| self.gue_port.unwrap_or(GUE_DEFAULT_PORT)),
            table_size: self.table_size,
            healthcheck: self
                .healthcheck
                .as_ref()
                .map(healthcheck_from_spec)
                .transpose()?,
            backends: self
                .backends
                .iter()
                .map(|b| config::Backend {
                    address: b.address,
                    weight: b.weight,
                    mac: b.mac,
                })
                .collect(),
        })
    }

    /// The effective health check, as the checker runs it.
    pub fn healthcheck(&self) -> Option<HealthCheck> {
        self.healthcheck
            .as_ref()
            .and_then(|s| healthcheck_from_spec(s).ok())
    }
}

/// The persisted control-plane state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// The snapshot version of the last persisted change.
    pub version: u64,
    pub next_vip_id: u32,
    pub next_backend_id: u32,
    /// Shared with the copies a change starts from until the change alters the VIP: that
    /// a VIP is the same allocation as before is how a change's cost stays with its VIPs.
    #[serde(
        serialize_with = "serialize_vips",
        deserialize_with = "deserialize_vips"
    )]
    pub vips: Vec<Arc<VipRecord>>,
}

/// The state file holds the records themselves (the `Arc` is only how copies share them).
fn serialize_vips<S: Serializer>(vips: &[Arc<VipRecord>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(vips.iter().map(|v| &**v))
}

fn deserialize_vips<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Arc<VipRecord>>, D::Error> {
    Ok(Vec::<VipRecord>::deserialize(d)?
        .into_iter()
        .map(Arc::new)
        .collect())
}

/// The records of `vips` by address: a VIP whose record is among them is one a change left
/// alone (an equal copy is not among them, and is checked again, which is merely slower).
pub(crate) fn records_of(vips: &[Arc<VipRecord>]) -> HashSet<*const VipRecord> {
    vips.iter().map(Arc::as_ptr).collect()
}

/// Hints appended to errors, in the CLI's words.
fn list_vips_hint() -> &'static str {
    "(try: fulcrum vip list)"
}

impl Desired {
    pub fn vip(&self, key: &VipKey) -> Result<&VipRecord, ApiError> {
        self.vips
            .iter()
            .find(|v| v.vip == *key)
            .map(|v| &**v)
            .ok_or_else(|| unknown_vip(key))
    }

    /// The VIP's own record to change: a shared one is copied first (that VIP only).
    fn vip_mut(&mut self, key: &VipKey) -> Result<&mut VipRecord, ApiError> {
        self.vips
            .iter_mut()
            .find(|v| v.vip == *key)
            .map(Arc::make_mut)
            .ok_or_else(|| unknown_vip(key))
    }

    fn backend_mut(
        &mut self,
        key: &VipKey,
        address: &BackendAddr,
    ) -> Result<&mut BackendRecord, ApiError> {
        let vip = self.vip_mut(key)?;
        let message = not_a_member(vip, address);
        vip.backends
            .iter_mut()
            .find(|b| b.address == *address)
            .ok_or_else(|| ApiError::not_found(message))
    }

    /// The configuration these VIPs make with `base`'s other sections.
    pub fn to_config(&self, base: &Config) -> Result<Config, ApiError> {
        Ok(Config {
            dataplane: base.dataplane.clone(),
            ports: base.ports.clone(),
            vips: self
                .vips
                .iter()
                .map(|v| v.to_config())
                .collect::<Result<_, _>>()?,
            control: base.control.clone(),
        })
    }

    /// Holds these VIPs to the configuration file's rules, with `base`'s ports (address
    /// families) and limits.
    pub fn validate(&self, base: &Config) -> Result<(), ApiError> {
        if self.vips.len() > stats::MAX_VIPS {
            return Err(ApiError::conflict(format!(
                "fulcrum holds at most {} VIPs; remove one first (try: fulcrum vip list)",
                stats::MAX_VIPS
            )));
        }
        self.to_config(base)?
            .check()
            .map_err(|p| ApiError::bad_request(p.message))
    }

    /// [`Desired::validate`] for a change of `before`, a state that passed it with the same
    /// `base`: the VIPs `before` holds too passed already, so only the ones the change
    /// replaced or added are checked, each on its own, plus the rules that span VIPs (their
    /// number, distinct addresses) in O(VIPs). Whatever this finds wrong is reported by
    /// `validate` itself, so a rejected change gets the very message it always got.
    pub fn validate_change(&self, before: &Desired, base: &Config) -> Result<(), ApiError> {
        if self.passes_as_change_of(before, base) {
            Ok(())
        } else {
            self.validate(base)
        }
    }

    /// Whether `validate` would pass, given that `before` did. The configuration's rules
    /// are per VIP except two: distinct VIP addresses, checked here, and the ports' MTU
    /// against IPv6 anywhere, which a VIP alone trips as it does among others (`before`
    /// passing means no other VIP or port address could have).
    fn passes_as_change_of(&self, before: &Desired, base: &Config) -> bool {
        if self.vips.len() > stats::MAX_VIPS {
            return false;
        }
        let mut keys = HashSet::with_capacity(self.vips.len());
        if !self.vips.iter().all(|v| keys.insert(v.vip)) {
            return false;
        }
        let unchanged = records_of(&before.vips);
        let mut alone = Config {
            dataplane: base.dataplane.clone(),
            ports: base.ports.clone(),
            vips: Vec::new(),
            control: base.control.clone(),
        };
        self.vips
            .iter()
            .filter(|v| !unchanged.contains(&Arc::as_ptr(v)))
            .all(|v| match v.to_config() {
                Ok(vip) => {
                    alone.vips = vec![vip];
                    alone.check().is_ok()
                }
                Err(_) => false,
            })
    }

    /// Builds the state of a configuration file's VIPs, new ids for all.
    pub fn from_config(config: &Config) -> Result<Desired, ApiError> {
        let mut desired = Desired::default();
        let mut ids = IdPolicy::fresh();
        desired.replace_vips(&config.vips, &mut ids)?;
        Ok(desired)
    }

    /// Replaces every VIP by `vips` (a configuration file's). VIPs and backends that stay
    /// keep their ids and an explicit drain; new ones get fresh ids.
    pub fn replace_vips(
        &mut self,
        vips: &[config::Vip],
        ids: &mut IdPolicy,
    ) -> Result<(), ApiError> {
        let mut records = Vec::with_capacity(vips.len());
        for vip in vips {
            let old = self.vips.iter().find(|v| v.vip == vip.key);
            let id = match old {
                Some(old) => old.id,
                None => ids.vip(&mut self.next_vip_id)?,
            };
            // Looked up by address: a linear search per backend is quadratic in the VIP.
            let old_backends: HashMap<BackendAddr, &BackendRecord> = old
                .map(|o| o.backends.iter().map(|b| (b.address, b)).collect())
                .unwrap_or_default();
            let mut backends = Vec::with_capacity(vip.backends.len());
            for b in &vip.backends {
                let kept = old_backends.get(&b.address).copied();
                backends.push(BackendRecord {
                    id: match kept {
                        Some(k) => k.id,
                        None => ids.backend(&mut self.next_backend_id)?,
                    },
                    address: b.address,
                    weight: b.weight,
                    drained: kept.is_some_and(|k| k.drained),
                    mac: b.mac,
                });
            }
            let (encap, gue_port) = (vip.encap, vip.gue_port);
            let record = VipRecord {
                id,
                vip: vip.key,
                encap,
                gue_port,
                table_size: vip.table_size,
                healthcheck: vip.healthcheck.as_ref().map(healthcheck_to_spec),
                backends,
            };
            // A VIP the file leaves as it was stays the same record, so the change does
            // not count as touching it.
            records.push(match old {
                Some(old) if **old == record => Arc::clone(old),
                _ => Arc::new(record),
            });
        }
        self.vips = records;
        Ok(())
    }

    pub fn add_vip(
        &mut self,
        request: &VipRequest,
        ids: &mut IdPolicy,
    ) -> Result<VipKey, ApiError> {
        let key = parse_vip(&request.vip)?;
        if self.vips.iter().any(|v| v.vip == key) {
            return Err(ApiError::conflict(format!(
                "vip {key} already exists (to see it: fulcrum vip list; to replace it: fulcrum vip del {key} first)"
            )));
        }
        let encap: EncapMode =
            request
                .encap
                .parse()
                .map_err(|e: crate::datapath::encap::UnknownEncapMode| {
                    ApiError::bad_request(e.to_string())
                })?;
        if request.gue_port.is_some() && encap != EncapMode::Gue {
            return Err(ApiError::bad_request(format!(
                "gue_port is only used with encap gue (vip {key} uses {encap}); drop --gue-port or use --encap gue"
            )));
        }
        let id = ids.vip(&mut self.next_vip_id)?;
        self.vips.push(Arc::new(VipRecord {
            id,
            vip: key,
            encap,
            gue_port: (encap == EncapMode::Gue)
                .then(|| request.gue_port.unwrap_or(GUE_DEFAULT_PORT)),
            table_size: request.table_size.unwrap_or(DEFAULT_TABLE_SIZE),
            healthcheck: request.healthcheck.clone(),
            backends: Vec::new(),
        }));
        if let Some(spec) = &request.healthcheck {
            healthcheck_from_spec(spec)?;
        }
        for backend in &request.backends {
            self.add_backend(&key, backend, ids)?;
        }
        Ok(key)
    }

    pub fn remove_vip(&mut self, key: &VipKey) -> Result<Arc<VipRecord>, ApiError> {
        let index = self
            .vips
            .iter()
            .position(|v| v.vip == *key)
            .ok_or_else(|| unknown_vip(key))?;
        Ok(self.vips.remove(index))
    }

    pub fn add_backend(
        &mut self,
        key: &VipKey,
        request: &BackendRequest,
        ids: &mut IdPolicy,
    ) -> Result<BackendAddr, ApiError> {
        let address = parse_backend(&request.address)?;
        let weight = parse_weight(request.weight.unwrap_or(1))?;
        let mac = request
            .mac
            .as_deref()
            .map(|m| m.parse::<MacAddr>())
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let vip = self.vip(key)?;
        if let Some(existing) = vip.backend(&address) {
            return Err(ApiError::conflict(format!(
                "backend {address} is already part of vip {key} (weight {}); to change its weight: fulcrum backend weight {key} {address} WEIGHT",
                existing.weight
            )));
        }
        let id = ids.backend(&mut self.next_backend_id)?;
        self.vip_mut(key)?.backends.push(BackendRecord {
            id,
            address,
            weight,
            drained: false,
            mac,
        });
        Ok(address)
    }

    pub fn remove_backend(
        &mut self,
        key: &VipKey,
        address: &BackendAddr,
    ) -> Result<BackendRecord, ApiError> {
        let vip = self.vip_mut(key)?;
        let message = not_a_member(vip, address);
        let index = vip
            .backends
            .iter()
            .position(|b| b.address == *address)
            .ok_or_else(|| ApiError::not_found(message))?;
        Ok(vip.backends.remove(index))
    }

    pub fn set_weight(
        &mut self,
        key: &VipKey,
        address: &BackendAddr,
        weight: i64,
    ) -> Result<(), ApiError> {
        let weight = parse_weight(weight)?;
        self.backend_mut(key, address)?.weight = weight;
        Ok(())
    }

    pub fn set_drained(
        &mut self,
        key: &VipKey,
        address: &BackendAddr,
        drained: bool,
    ) -> Result<(), ApiError> {
        self.backend_mut(key, address)?.drained = drained;
        Ok(())
    }
}

fn unknown_vip(key: &VipKey) -> ApiError {
    ApiError::not_found(format!("vip {key} does not exist {}", list_vips_hint()))
}

fn not_a_member(vip: &VipRecord, address: &BackendAddr) -> String {
    let key = vip.vip;
    let near = vip
        .backends
        .iter()
        .find(|b| b.address.addr == address.addr)
        .map(|b| format!("; did you mean {}?", b.address))
        .unwrap_or_default();
    format!("backend {address} is not part of vip {key}{near} (try: fulcrum backend list {key})")
}

pub fn parse_vip(text: &str) -> Result<VipKey, ApiError> {
    text.parse()
        .map_err(|e: crate::addr::AddrError| ApiError::bad_request(e.to_string()))
}

pub fn parse_backend(text: &str) -> Result<BackendAddr, ApiError> {
    text.parse()
        .map_err(|e: crate::addr::AddrError| ApiError::bad_request(e.to_string()))
}

pub fn parse_weight(weight: i64) -> Result<u16, ApiError> {
    u16::try_from(weight)
        .ok()
        .filter(|w| *w <= MAX_WEIGHT)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "weight {weight} is out of range; use 0 to {MAX_WEIGHT} (0 drains the backend)"
            ))
        })
}

/// The API's health-check form to the configuration's, with its numbers range-checked (the
/// rest of the rules are `Config::check`'s).
pub fn healthcheck_from_spec(spec: &HealthCheckSpec) -> Result<HealthCheck, ApiError> {
    let small = |key: &str, value: u32, max: u32| {
        u8::try_from(value).map_err(|_| {
            ApiError::bad_request(format!(
                "healthcheck {key} = {value} is out of range; use 1 to {max} consecutive checks"
            ))
        })
    };
    let kind = match spec.kind {
        HealthCheckKindName::Tcp => {
            if spec.path.is_some() || spec.expect_status.is_some() {
                return Err(ApiError::bad_request(
                    "healthcheck path and expect_status are only used with kind http; remove them or use kind http",
                ));
            }
            HealthCheckKind::Tcp
        }
        HealthCheckKindName::Http => HealthCheckKind::Http {
            path: spec.path.clone().unwrap_or_else(|| "/".into()),
            expect_status: spec.expect_status.unwrap_or(200),
        },
    };
    Ok(HealthCheck {
        kind,
        port: spec.port,
        interval_ms: spec.interval_ms,
        timeout_ms: spec.timeout_ms,
        rise: small("rise", spec.rise, 100)?,
        fall: small("fall", spec.fall, 100)?,
    })
}

pub fn healthcheck_to_spec(check: &HealthCheck) -> HealthCheckSpec {
    let (kind, path, expect_status) = match &check.kind {
        HealthCheckKind::Tcp => (HealthCheckKindName::Tcp, None, None),
        HealthCheckKind::Http {
            path,
            expect_status,
        } => (
            HealthCheckKindName::Http,
            Some(path.clone()),
            Some(*expect_status),
        ),
    };
    HealthCheckSpec {
        kind,
        port: check.port,
        path,
        expect_status,
        interval_ms: check.interval_ms,
        timeout_ms: check.timeout_ms,
        rise: u32::from(check.rise),
        fall: u32::from(check.fall),
    }
}

/// Which ids a change may hand out: not those in use before the change, not those the
/// change already handed out, not those released within the quarantine.
pub struct IdPolicy<'a> {
    /// What the state before the change uses and released; `None` for a state with no
    /// history.
    book: Option<&'a IdBook>,
    now: Instant,
    vips_handed_out: HashSet<u32>,
    backends_handed_out: HashSet<u32>,
}

impl IdPolicy<'_> {
    /// For a state with no history: every id is free.
    pub fn fresh() -> IdPolicy<'static> {
        IdPolicy {
            book: None,
            now: Instant::now(),
            vips_handed_out: HashSet::new(),
            backends_handed_out: HashSet::new(),
        }
    }

    fn vip(&mut self, next: &mut u32) -> Result<u32, ApiError> {
        let book = self.book;
        let now = self.now;
        let free = |id: u32| {
            book.is_none_or(|b| {
                !b.vips_in_use.contains_key(&id) && !b.quarantined(&b.released_vips, id, now)
            })
        };
        take_id(next, stats::MAX_VIPS as u32, free, &mut self.vips_handed_out).ok_or_else(|| {
            ApiError::conflict(format!(
                "no free VIP id: all {} are in use or were released less than the conntrack idle timeout ago; remove unused VIPs or wait",
                stats::MAX_VIPS
            ))
        })
    }

    fn backend(&mut self, next: &mut u32) -> Result<u32, ApiError> {
        let book = self.book;
        let now = self.now;
        let free = |id: u32| {
            book.is_none_or(|b| {
                !b.backends_in_use.contains_key(&id)
                    && !b.quarantined(&b.released_backends, id, now)
            })
        };
        take_id(
            next,
            stats::MAX_BACKENDS as u32,
            free,
            &mut self.backends_handed_out,
        )
        .ok_or_else(|| {
            ApiError::conflict(format!(
                "no free backend id: all {} are in use or were released less than the conntrack idle timeout ago; remove unused backends or wait",
                stats::MAX_BACKENDS
            ))
        })
    }
}

/// The first id from `*next` on (wrapping at `limit`) that is `free` and not handed out yet.
fn take_id(
    next: &mut u32,
    limit: u32,
    free: impl Fn(u32) -> bool,
    handed_out: &mut HashSet<u32>,
) -> Option<u32> {
    let start = *next % limit;
    let id = (start..limit)
        .chain(0..start)
        .find(|id| !handed_out.contains(id) && free(*id))?;
    handed_out.insert(id);
    *next = (id + 1) % limit;
    Some(id)
}

/// The ids the current state uses, and when ids were released during this run. Kept up to
/// date change by change ([`IdBook::record`]) from the VIPs a change replaced, so neither
/// handing out an id nor recording a change walks every backend.
#[derive(Debug)]
pub struct IdBook {
    pub quarantine: Duration,
    /// How many records name each id: one, unless a state file edited by hand repeats one.
    vips_in_use: HashMap<u32, u32>,
    backends_in_use: HashMap<u32, u32>,
    released_vips: HashMap<u32, Instant>,
    released_backends: HashMap<u32, Instant>,
}

impl IdBook {
    /// For `current`, with nothing released yet.
    pub fn new(current: &Desired, quarantine: Duration) -> IdBook {
        let mut book = IdBook {
            quarantine,
            vips_in_use: HashMap::new(),
            backends_in_use: HashMap::new(),
            released_vips: HashMap::new(),
            released_backends: HashMap::new(),
        };
        for vip in &current.vips {
            book.take(vip);
        }
        book
    }

    /// The id policy for a change of the state this book is for.
    pub fn policy(&self, now: Instant) -> IdPolicy<'_> {
        IdPolicy {
            book: Some(self),
            now,
            vips_handed_out: HashSet::new(),
            backends_handed_out: HashSet::new(),
        }
    }

    /// Moves the book from `before` (the state it is for) to `after`, recording the ids
    /// `before` had and `after` has not as released at `now`. Only the records one of the
    /// two holds and the other does not are looked at.
    pub fn record(&mut self, before: &Desired, after: &Desired, now: Instant) {
        // Net count of each record, so a record listed twice is accounted for twice.
        let mut net: HashMap<*const VipRecord, (&VipRecord, i64)> = HashMap::new();
        for vip in &before.vips {
            net.entry(Arc::as_ptr(vip)).or_insert((vip, 0)).1 -= 1;
        }
        for vip in &after.vips {
            net.entry(Arc::as_ptr(vip)).or_insert((vip, 0)).1 += 1;
        }
        let mut gone: Vec<&VipRecord> = Vec::new();
        for &(vip, count) in net.values().filter(|(_, count)| *count < 0) {
            for _ in 0..count.unsigned_abs() {
                self.give_back(vip);
            }
            gone.push(vip);
        }
        for &(vip, count) in net.values().filter(|(_, count)| *count > 0) {
            for _ in 0..count {
                self.take(vip);
            }
        }
        for vip in gone {
            if !self.vips_in_use.contains_key(&vip.id) {
                self.released_vips.insert(vip.id, now);
            }
            for b in &vip.backends {
                if !self.backends_in_use.contains_key(&b.id) {
                    self.released_backends.insert(b.id, now);
                }
            }
        }
        let quarantine = self.quarantine;
        self.released_vips
            .retain(|_, at| now.duration_since(*at) < quarantine);
        self.released_backends
            .retain(|_, at| now.duration_since(*at) < quarantine);
    }

    fn take(&mut self, vip: &VipRecord) {
        *self.vips_in_use.entry(vip.id).or_default() += 1;
        for b in &vip.backends {
            *self.backends_in_use.entry(b.id).or_default() += 1;
        }
    }

    fn give_back(&mut self, vip: &VipRecord) {
        release_one(&mut self.vips_in_use, vip.id);
        for b in &vip.backends {
            release_one(&mut self.backends_in_use, b.id);
        }
    }

    fn quarantined(&self, released: &HashMap<u32, Instant>, id: u32, now: Instant) -> bool {
        released
            .get(&id)
            .is_some_and(|at| now.duration_since(*at) < self.quarantine)
    }
}

fn release_one(in_use: &mut HashMap<u32, u32>, id: u32) {
    if let Some(count) = in_use.get_mut(&id) {
        *count -= 1;
        if *count == 0 {
            in_use.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        config::from_str(Config::example(), "example.toml").unwrap()
    }

    fn vip_request(vip: &str) -> VipRequest {
        VipRequest {
            vip: vip.into(),
            encap: "ipip".into(),
            gue_port: None,
            table_size: Some(251),
            healthcheck: None,
            backends: vec![],
        }
    }

    fn backend(address: &str, weight: i64) -> BackendRequest {
        BackendRequest {
            address: address.into(),
            weight: Some(weight),
            mac: None,
        }
    }

    #[test]
    fn ids_are_stable_unique_and_not_reused_within_the_quarantine() {
        let mut d = Desired::from_config(&base()).unwrap();
        assert_eq!(d.vips[0].id, 0);
        assert_eq!(d.vips[0].backends[0].id, 0);
        let mut book = IdBook::new(&d, Duration::from_secs(300));
        let now = Instant::now();
        let key: VipKey = "192.0.2.10:80/tcp".parse().unwrap();

        let before = d.clone();
        let mut ids = book.policy(now);
        d.add_backend(&key, &backend("198.51.100.12", 1), &mut ids)
            .unwrap();
        d.add_vip(&vip_request("192.0.2.11:80/tcp"), &mut ids)
            .unwrap();
        let other: VipKey = "192.0.2.11:80/tcp".parse().unwrap();
        d.add_backend(&other, &backend("198.51.100.12", 1), &mut ids)
            .unwrap();
        book.record(&before, &d, now);
        let all: Vec<u32> = d
            .vips
            .iter()
            .flat_map(|v| v.backends.iter().map(|b| b.id))
            .collect();
        assert_eq!(all, vec![0, 1, 2], "one id per membership");
        assert_eq!(d.vips[1].id, 1);

        // Remove backend 1 and add another: it must not get id 1 back.
        let before = d.clone();
        d.remove_backend(&key, &"198.51.100.12".parse().unwrap())
            .unwrap();
        book.record(&before, &d, now);
        let before = d.clone();
        let mut ids = book.policy(now);
        d.next_backend_id = 0; // even after a wrap
        d.add_backend(&key, &backend("198.51.100.13", 1), &mut ids)
            .unwrap();
        assert_eq!(d.vip(&key).unwrap().backends[1].id, 3);
        book.record(&before, &d, now);

        // After the quarantine the lowest free id is taken again on a wrap.
        let later = now + Duration::from_secs(301);
        let mut ids = book.policy(later);
        d.next_backend_id = 0;
        d.add_backend(&key, &backend("198.51.100.14", 1), &mut ids)
            .unwrap();
        assert_eq!(d.vip(&key).unwrap().backends[2].id, 1);
    }

    /// A state of `vips` VIPs with `backends` IPv4 backends each.
    fn state_of(vips: u8, backends: u8) -> Desired {
        let mut d = Desired::default();
        let mut ids = IdPolicy::fresh();
        for v in 0..vips {
            let mut request = vip_request(&format!("192.0.2.{}:80/tcp", 100 + v));
            request.backends = (0..backends)
                .map(|b| backend(&format!("198.51.100.{}", 1 + b), 1))
                .collect();
            d.add_vip(&request, &mut ids).unwrap();
        }
        d
    }

    #[test]
    fn a_change_shares_the_records_of_the_vips_it_leaves_alone() {
        let before = state_of(3, 4);
        let mut d = before.clone();
        let key = before.vips[1].vip;
        d.set_weight(&key, &"198.51.100.2".parse().unwrap(), 5)
            .unwrap();
        let shared: Vec<bool> = before
            .vips
            .iter()
            .zip(&d.vips)
            .map(|(a, b)| Arc::ptr_eq(a, b))
            .collect();
        assert_eq!(shared, [true, false, true]);
        assert_eq!(
            before.vips[1].backends[1].weight, 1,
            "the copy changed, not the original"
        );
        assert_eq!(d.vips[1].backends[1].weight, 5);

        // A file that leaves a VIP as it is keeps its record too.
        let mut config = d.to_config(&base()).unwrap();
        config.vips[2].backends[0].weight = 9;
        let mut replaced = d.clone();
        replaced
            .replace_vips(&config.vips, &mut IdPolicy::fresh())
            .unwrap();
        let shared: Vec<bool> = d
            .vips
            .iter()
            .zip(&replaced.vips)
            .map(|(a, b)| Arc::ptr_eq(a, b))
            .collect();
        assert_eq!(shared, [true, true, false]);
    }

    #[test]
    fn a_change_is_judged_as_the_whole_state_would_be() {
        let base = base();
        let before = state_of(3, 2);
        before.validate(&base).unwrap();
        let key = before.vips[1].vip;
        let mut changes: Vec<(&str, Desired)> = Vec::new();

        let mut d = before.clone();
        d.set_weight(&key, &"198.51.100.1".parse().unwrap(), 3)
            .unwrap();
        changes.push(("a weight", d));
        let mut d = before.clone();
        d.add_backend(&key, &backend("2001:db8::7", 1), &mut IdPolicy::fresh())
            .unwrap();
        changes.push(("an IPv6 backend without an IPv6 port", d));
        let mut d = before.clone();
        d.add_backend(&key, &backend("198.51.100.9:81", 1), &mut IdPolicy::fresh())
            .unwrap();
        changes.push(("a backend port the VIP does not have", d));
        let mut d = before.clone();
        Arc::make_mut(&mut d.vips[2]).table_size = 2;
        changes.push(("a table too small", d));
        let mut d = before.clone();
        let copy = VipRecord::clone(&d.vips[0]);
        d.vips.push(Arc::new(copy));
        changes.push(("a VIP twice", d));
        let mut d = before.clone();
        d.vips.push(Arc::clone(&d.vips[0]));
        changes.push(("the same record twice", d));
        let mut d = before.clone();
        d.remove_vip(&key).unwrap();
        changes.push(("a VIP removed", d));

        let mut passed = 0;
        for (what, d) in &changes {
            let whole = d.validate(&base);
            assert_eq!(d.validate_change(&before, &base), whole, "{what}");
            passed += usize::from(whole.is_ok());
        }
        assert_eq!(
            passed, 2,
            "the weight and the removal pass, the others do not"
        );
    }

    #[test]
    fn a_change_is_validated_by_the_vips_it_replaced() {
        let base = base();
        // A broken VIP the change leaves alone is not looked at again: it passed before
        // (here by construction), and checking it would cost every VIP's backends.
        let mut before = state_of(2, 2);
        Arc::make_mut(&mut before.vips[0]).table_size = 2;
        let mut d = before.clone();
        let key = d.vips[1].vip;
        d.set_weight(&key, &"198.51.100.1".parse().unwrap(), 3)
            .unwrap();
        assert!(d.validate(&base).is_err());
        assert_eq!(d.validate_change(&before, &base), Ok(()));
    }

    type Step = dyn Fn(&mut Desired, &mut IdPolicy);

    #[test]
    fn the_id_book_follows_the_state_change_by_change() {
        let mut d = state_of(3, 3);
        let mut book = IdBook::new(&d, Duration::from_secs(300));
        let now = Instant::now();
        let key = d.vips[0].vip;
        let steps: [&Step; 4] = [
            &move |d, _| {
                d.remove_vip(&d.vips[1].vip.clone()).unwrap();
            },
            &move |d, ids| {
                d.add_backend(&key, &backend("198.51.100.50", 1), ids)
                    .unwrap();
                d.remove_backend(&key, &"198.51.100.1".parse().unwrap())
                    .unwrap();
            },
            &move |d, _| {
                d.set_drained(&key, &"198.51.100.2".parse().unwrap(), true)
                    .unwrap();
            },
            &move |d, ids| {
                d.add_vip(&vip_request("192.0.2.200:80/tcp"), ids).unwrap();
            },
        ];
        for step in steps {
            let before = d.clone();
            step(&mut d, &mut book.policy(now));
            book.record(&before, &d, now);
            let whole = IdBook::new(&d, book.quarantine);
            assert_eq!(book.vips_in_use, whole.vips_in_use);
            assert_eq!(book.backends_in_use, whole.backends_in_use);
        }
        // VIP 1 went with its backends 3, 4, 5; backend 0 was removed.
        let mut released: Vec<u32> = book.released_backends.keys().copied().collect();
        released.sort_unstable();
        assert_eq!(released, [0, 3, 4, 5]);
        assert_eq!(book.released_vips.keys().collect::<Vec<_>>(), [&1]);
    }

    #[test]
    fn replace_keeps_ids_and_drains_of_what_stays() {
        let mut d = Desired::from_config(&base()).unwrap();
        let key: VipKey = "192.0.2.10:80/tcp".parse().unwrap();
        let b: BackendAddr = "198.51.100.11".parse().unwrap();
        d.set_drained(&key, &b, true).unwrap();
        let mut config = base();
        config.vips[0].backends[0].weight = 7;
        config.vips[0].backends.insert(
            0,
            config::Backend {
                address: "198.51.100.9".parse().unwrap(),
                weight: 1,
                mac: None,
            },
        );
        let book = IdBook::new(&d, Duration::ZERO);
        d.replace_vips(&config.vips, &mut book.policy(Instant::now()))
            .unwrap();
        let vip = d.vip(&key).unwrap();
        let kept = vip.backend(&b).unwrap();
        assert_eq!((kept.id, kept.weight, kept.drained), (0, 7, true));
        assert_eq!(vip.backend(&"198.51.100.9".parse().unwrap()).unwrap().id, 1);
    }

    #[test]
    fn errors_say_what_is_wrong_and_what_to_try() {
        let mut d = Desired::from_config(&base()).unwrap();
        let key: VipKey = "192.0.2.10:80/tcp".parse().unwrap();
        let mut ids = IdPolicy::fresh();
        let e = d
            .add_backend(&key, &backend("198.51.100.11", 1), &mut ids)
            .unwrap_err();
        assert_eq!(e.status, 409);
        assert!(
            e.message.contains("already part of vip 192.0.2.10:80/tcp"),
            "{e}"
        );
        let e = d
            .add_backend(&key, &backend("198.51.100.12", 10_001), &mut ids)
            .unwrap_err();
        assert_eq!(
            e.message,
            "weight 10001 is out of range; use 0 to 10000 (0 drains the backend)"
        );
        let e = d
            .add_backend(&key, &backend("198.51.100.12", -1), &mut ids)
            .unwrap_err();
        assert_eq!(e.status, 400);
        let e = d
            .remove_backend(&key, &"198.51.100.11:80".parse().unwrap())
            .unwrap_err();
        assert_eq!(e.status, 404);
        assert_eq!(
            e.message,
            "backend 198.51.100.11:80 is not part of vip 192.0.2.10:80/tcp; did you mean 198.51.100.11? (try: fulcrum backend list 192.0.2.10:80/tcp)"
        );
        let e = d
            .remove_vip(&"192.0.2.99:80/tcp".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            e.message,
            "vip 192.0.2.99:80/tcp does not exist (try: fulcrum vip list)"
        );
        let e = d
            .add_backend(&key, &backend("198.51.100.300", 1), &mut ids)
            .unwrap_err();
        assert!(
            e.message.starts_with("invalid backend \"198.51.100.300\""),
            "{e}"
        );
        // An IPv6 backend with no port to encapsulate from breaks a configuration rule.
        d.add_backend(&key, &backend("2001:db8::7", 1), &mut ids)
            .unwrap();
        let e = d.validate(&base()).unwrap_err();
        assert!(e.message.contains("no [[port]] has an IPv6 address"), "{e}");
    }
}
