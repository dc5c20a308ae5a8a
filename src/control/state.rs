//! What the operator asked for — VIPs, backends, weights, drains — with the stable ids the
//! workers know them by. This is the part of the control plane's state that is persisted; the
//! observations (health, resolved MACs) live beside it in the control plane and are not.
//!
//! Every operation works on a copy ([`Desired`] is cloned per change) and is validated whole
//! before anything is published or written, so a rejected request changes nothing.
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
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::messages::{BackendRequest, HealthCheckKindName, HealthCheckSpec, VipRequest};
use crate::addr::{BackendAddr, MacAddr, VipKey};
use crate::config::{self, Config, Encap, HealthCheck, HealthCheckKind, MAX_WEIGHT};
use crate::encap::EncapMode;
use crate::stats;

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
            encap: match self.encap {
                EncapMode::Ipip => Encap::Ipip,
                EncapMode::Gue => Encap::Gue {
                    port: self.gue_port.unwrap_or(config::DEFAULT_GUE_PORT),
                },
                EncapMode::L2Dsr => Encap::L2dsr,
            },
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
    pub vips: Vec<VipRecord>,
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
            .ok_or_else(|| unknown_vip(key))
    }

    fn vip_mut(&mut self, key: &VipKey) -> Result<&mut VipRecord, ApiError> {
        self.vips
            .iter_mut()
            .find(|v| v.vip == *key)
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
                .map(VipRecord::to_config)
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

    /// Every id in use.
    pub fn ids(&self) -> (HashSet<u32>, HashSet<u32>) {
        let vips = self.vips.iter().map(|v| v.id).collect();
        let backends = self
            .vips
            .iter()
            .flat_map(|v| v.backends.iter().map(|b| b.id))
            .collect();
        (vips, backends)
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
            let mut backends = Vec::with_capacity(vip.backends.len());
            for b in &vip.backends {
                let kept = old.and_then(|o| o.backend(&b.address));
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
            let (encap, gue_port) = match vip.encap {
                Encap::Ipip => (EncapMode::Ipip, None),
                Encap::Gue { port } => (EncapMode::Gue, Some(port)),
                Encap::L2dsr => (EncapMode::L2Dsr, None),
            };
            records.push(VipRecord {
                id,
                vip: vip.key,
                encap,
                gue_port,
                table_size: vip.table_size,
                healthcheck: vip.healthcheck.as_ref().map(healthcheck_to_spec),
                backends,
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
        let encap: EncapMode = request
            .encap
            .parse()
            .map_err(|e: crate::encap::UnknownEncapMode| ApiError::bad_request(e.to_string()))?;
        if request.gue_port.is_some() && encap != EncapMode::Gue {
            return Err(ApiError::bad_request(format!(
                "gue_port is only used with encap gue (vip {key} uses {encap}); drop --gue-port or use --encap gue"
            )));
        }
        let id = ids.vip(&mut self.next_vip_id)?;
        self.vips.push(VipRecord {
            id,
            vip: key,
            encap,
            gue_port: (encap == EncapMode::Gue)
                .then(|| request.gue_port.unwrap_or(config::DEFAULT_GUE_PORT)),
            table_size: request.table_size.unwrap_or(config::DEFAULT_TABLE_SIZE),
            healthcheck: request.healthcheck.clone(),
            backends: Vec::new(),
        });
        if let Some(spec) = &request.healthcheck {
            healthcheck_from_spec(spec)?;
        }
        for backend in &request.backends {
            self.add_backend(&key, backend, ids)?;
        }
        Ok(key)
    }

    pub fn remove_vip(&mut self, key: &VipKey) -> Result<VipRecord, ApiError> {
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
pub struct IdPolicy {
    vips_taken: HashSet<u32>,
    backends_taken: HashSet<u32>,
    quarantined_vips: HashSet<u32>,
    quarantined_backends: HashSet<u32>,
}

impl IdPolicy {
    /// For a state with no history: every id is free.
    pub fn fresh() -> IdPolicy {
        IdPolicy {
            vips_taken: HashSet::new(),
            backends_taken: HashSet::new(),
            quarantined_vips: HashSet::new(),
            quarantined_backends: HashSet::new(),
        }
    }

    /// For a change of `current`, with the release times of `released`.
    pub fn for_change(current: &Desired, released: &Released, now: Instant) -> IdPolicy {
        let (vips_taken, backends_taken) = current.ids();
        IdPolicy {
            vips_taken,
            backends_taken,
            quarantined_vips: released.quarantined(&released.vips, now),
            quarantined_backends: released.quarantined(&released.backends, now),
        }
    }

    fn vip(&mut self, next: &mut u32) -> Result<u32, ApiError> {
        take_id(next, stats::MAX_VIPS as u32, &mut self.vips_taken, &self.quarantined_vips)
            .ok_or_else(|| {
                ApiError::conflict(format!(
                    "no free VIP id: all {} are in use or were released less than the conntrack idle timeout ago; remove unused VIPs or wait",
                    stats::MAX_VIPS
                ))
            })
    }

    fn backend(&mut self, next: &mut u32) -> Result<u32, ApiError> {
        take_id(
            next,
            stats::MAX_BACKENDS as u32,
            &mut self.backends_taken,
            &self.quarantined_backends,
        )
        .ok_or_else(|| {
            ApiError::conflict(format!(
                "no free backend id: all {} are in use or were released less than the conntrack idle timeout ago; remove unused backends or wait",
                stats::MAX_BACKENDS
            ))
        })
    }
}

/// The first id from `*next` on (wrapping at `limit`) that is neither taken nor quarantined.
fn take_id(
    next: &mut u32,
    limit: u32,
    taken: &mut HashSet<u32>,
    quarantined: &HashSet<u32>,
) -> Option<u32> {
    let start = *next % limit;
    let id = (start..limit)
        .chain(0..start)
        .find(|id| !taken.contains(id) && !quarantined.contains(id))?;
    taken.insert(id);
    *next = (id + 1) % limit;
    Some(id)
}

/// When ids were released during this run.
#[derive(Debug)]
pub struct Released {
    pub quarantine: Duration,
    vips: HashMap<u32, Instant>,
    backends: HashMap<u32, Instant>,
}

impl Released {
    pub fn new(quarantine: Duration) -> Released {
        Released {
            quarantine,
            vips: HashMap::new(),
            backends: HashMap::new(),
        }
    }

    /// Records the ids `before` had and `after` has not.
    pub fn record(&mut self, before: &Desired, after: &Desired, now: Instant) {
        let (old_vips, old_backends) = before.ids();
        let (new_vips, new_backends) = after.ids();
        for id in old_vips.difference(&new_vips) {
            self.vips.insert(*id, now);
        }
        for id in old_backends.difference(&new_backends) {
            self.backends.insert(*id, now);
        }
        let quarantine = self.quarantine;
        self.vips
            .retain(|_, at| now.duration_since(*at) < quarantine);
        self.backends
            .retain(|_, at| now.duration_since(*at) < quarantine);
    }

    fn quarantined(&self, released: &HashMap<u32, Instant>, now: Instant) -> HashSet<u32> {
        released
            .iter()
            .filter(|(_, at)| now.duration_since(**at) < self.quarantine)
            .map(|(id, _)| *id)
            .collect()
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
        let mut released = Released::new(Duration::from_secs(300));
        let now = Instant::now();
        let key: VipKey = "192.0.2.10:80/tcp".parse().unwrap();

        let before = d.clone();
        let mut ids = IdPolicy::for_change(&d, &released, now);
        d.add_backend(&key, &backend("198.51.100.12", 1), &mut ids)
            .unwrap();
        d.add_vip(&vip_request("192.0.2.11:80/tcp"), &mut ids)
            .unwrap();
        let other: VipKey = "192.0.2.11:80/tcp".parse().unwrap();
        d.add_backend(&other, &backend("198.51.100.12", 1), &mut ids)
            .unwrap();
        released.record(&before, &d, now);
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
        released.record(&before, &d, now);
        let mut ids = IdPolicy::for_change(&d, &released, now);
        d.next_backend_id = 0; // even after a wrap
        d.add_backend(&key, &backend("198.51.100.13", 1), &mut ids)
            .unwrap();
        assert_eq!(d.vip(&key).unwrap().backends[1].id, 3);

        // After the quarantine the lowest free id is taken again on a wrap.
        let later = now + Duration::from_secs(301);
        let mut ids = IdPolicy::for_change(&d, &released, later);
        d.next_backend_id = 0;
        d.add_backend(&key, &backend("198.51.100.14", 1), &mut ids)
            .unwrap();
        assert_eq!(d.vip(&key).unwrap().backends[2].id, 1);
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
        let mut ids = IdPolicy::for_change(&d, &Released::new(Duration::ZERO), Instant::now());
        d.replace_vips(&config.vips, &mut ids).unwrap();
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
