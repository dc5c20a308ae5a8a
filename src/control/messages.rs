//! The control API's request and response bodies (JSON). The daemon serializes them and the
//! CLI deserializes the same types, so the two cannot drift apart.
//!
//! Addresses travel in their canonical text form (`192.0.2.10:80/tcp`, `198.51.100.7`), as in
//! the configuration file and on the command line.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::addr::{BackendAddr, MacAddr, VipKey};
use crate::encap::EncapMode;
use crate::snapshot::BackendState;

/// Every error response: `{"error": "what is wrong; how to fix it"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `[vip.healthcheck]` as JSON (API and state file). Unset fields take the configuration
/// file's defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    pub kind: HealthCheckKindName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    #[serde(default = "defaults::interval_ms")]
    pub interval_ms: u32,
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u32,
    #[serde(default = "defaults::rise")]
    pub rise: u32,
    #[serde(default = "defaults::fall")]
    pub fall: u32,
}

mod defaults {
    pub fn interval_ms() -> u32 {
        1000
    }
    pub fn timeout_ms() -> u32 {
        500
    }
    pub fn rise() -> u32 {
        2
    }
    pub fn fall() -> u32 {
        3
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKindName {
    Tcp,
    Http,
}

/// `POST /v1/vips`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipRequest {
    /// `ADDR:PORT/PROTO`.
    pub vip: String,
    /// `ipip`, `gue` or `l2dsr`.
    pub encap: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gue_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheckSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendRequest>,
}

/// `POST /v1/vips/{vip}/backends`, and the backends of a [`VipRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendRequest {
    /// `ADDR` or `ADDR:PORT`.
    pub address: String,
    /// 0 to 10000; 1 when absent. Signed so that a negative number gets a range message
    /// rather than a JSON type error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// For `l2dsr` VIPs: the backend's MAC when it is not to be resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// `PATCH /v1/vips/{vip}/backends/{backend}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightRequest {
    pub weight: i64,
}

/// What a health check last concluded about a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Passing (or presumed so: a backend starts up until `fall` checks fail).
    Up,
    /// Failed `fall` consecutive checks; out of the table until `rise` pass.
    Down,
    /// The VIP has no health check.
    Unchecked,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Up => "up",
            HealthStatus::Down => "down",
            HealthStatus::Unchecked => "unchecked",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    pub address: BackendAddr,
    pub id: u32,
    pub weight: u16,
    /// What the workers do with it: `active`, `draining` (weight 0 or drained) or `down`.
    pub state: BackendState,
    /// Drained by the operator (`fulcrum backend drain`), whatever its weight.
    pub drained: bool,
    pub health: HealthStatus,
    /// The next-hop MAC the workers use, configured or resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipView {
    pub vip: VipKey,
    pub id: u32,
    pub encap: EncapMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gue_port: Option<u16>,
    pub table_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheckSpec>,
    /// Every backend with weight failed its health check; the table is kept as if they were
    /// up rather than dropping the VIP's traffic.
    pub all_backends_down: bool,
    pub backends: Vec<BackendView>,
}

/// `GET /v1/vips`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipList {
    pub version: u64,
    pub vips: Vec<VipView>,
}

/// `GET /v1/vips/{vip}`, and the answer to `POST /v1/vips`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipReply {
    /// The snapshot version that carries this state; after a change, the workers run it once
    /// `GET /v1/snapshot` shows them all at it.
    pub version: u64,
    pub vip: VipView,
}

/// `GET /v1/vips/{vip}/backends`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendList {
    pub version: u64,
    pub vip: VipKey,
    pub backends: Vec<BackendView>,
}

/// The answer to a change of one backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendReply {
    pub version: u64,
    pub vip: VipKey,
    pub backend: BackendView,
}

/// The answer to a deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub version: u64,
    pub message: String,
}

/// `GET /v1/health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    pub version: u64,
    pub vips: Vec<VipHealth>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipHealth {
    pub vip: VipKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheckSpec>,
    pub all_backends_down: bool,
    pub backends: Vec<BackendHealth>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendHealth {
    pub address: BackendAddr,
    pub id: u32,
    pub status: HealthStatus,
    /// Where the checks go (`ADDR:PORT`), when the VIP has a health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    pub checks: u64,
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Seconds since the status last changed (or since checks began).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_secs: Option<f64>,
}

/// `GET /v1/snapshot`: which snapshot each worker runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReport {
    /// The newest published version.
    pub version: u64,
    pub workers: Vec<WorkerVersion>,
    /// Every worker runs `version` (true when there are no workers).
    pub all_workers_current: bool,
    /// Retired snapshots some worker still holds.
    pub retired_waiting: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerVersion {
    pub worker: usize,
    pub lcore: u32,
    pub version: u64,
}

/// `POST /v1/config`: what an apply changes (or would change, with `dry_run`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub version: u64,
    pub dry_run: bool,
    pub applied: bool,
    pub changes: Vec<Change>,
}

/// One difference between the running VIPs and a configuration file's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub op: ChangeOp,
    pub vip: VipKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendAddr>,
    /// What changes, e.g. `weight 1 -> 5`.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    AddVip,
    RemoveVip,
    ChangeVip,
    AddBackend,
    RemoveBackend,
    ChangeBackend,
}

impl fmt::Display for Change {
    /// `+ vip 192.0.2.11:80/tcp (ipip, ...)`, `~ backend 198.51.100.7 of vip ...: weight 1 -> 5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.op {
            ChangeOp::AddVip | ChangeOp::AddBackend => '+',
            ChangeOp::RemoveVip | ChangeOp::RemoveBackend => '-',
            ChangeOp::ChangeVip | ChangeOp::ChangeBackend => '~',
        };
        match self.backend {
            Some(backend) => write!(f, "{sign} backend {backend} of vip {}", self.vip)?,
            None => write!(f, "{sign} vip {}", self.vip)?,
        }
        if self.detail.is_empty() {
            Ok(())
        } else {
            write!(f, ": {}", self.detail)
        }
    }
}

/// `GET /v1/stats`: counters summed over workers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    pub version: u64,
    pub workers: usize,
    /// Seconds since the control plane started, to turn counters into rates.
    pub uptime_secs: f64,
    pub ports: Vec<PortStatsView>,
    /// Drops by reason (`stats::DropReason` names).
    pub drops: Vec<NamedCount>,
    /// Malformed frames by kind (`wire::ParseError` names).
    pub parse_errors: Vec<NamedCount>,
    pub vips: Vec<VipStats>,
    pub conntrack: ConntrackStats,
    pub fragments: u64,
    pub icmp_errors_forwarded: u64,
    pub icmp_too_big_sent: u64,
    pub bursts: u64,
    pub burst_cycles: LatencySummary,
    /// The control API's own connections (absent from daemons before it was added).
    #[serde(default)]
    pub api: ApiStats,
}

/// The control API's connections and what its network side refused or closed, since start.
/// The same numbers as the `fulcrum_api_*` metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiStats {
    /// Connections open now (admitted ones; refused ones are not).
    pub connections_open: u64,
    /// Connections accepted, refused ones included.
    pub connections_total: u64,
    /// Accepts that failed for want of file descriptors or memory (each one pauses accepting).
    pub accept_errors: u64,
    /// Requests and connections refused with an error answer, by reason (`counters::Refusal`).
    pub refused: Vec<NamedCount>,
    /// Connections closed without an answer, by reason (`counters::Closure`).
    pub closed: Vec<NamedCount>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCount {
    pub name: String,
    pub count: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatsView {
    pub port: usize,
    pub name: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub to_kernel_packets: u64,
    pub from_kernel_packets: u64,
    /// From the NIC (DPDK port counters), when the daemon runs a data plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_missed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_rx_errors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_tx_errors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_rx_nombuf: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipStats {
    pub vip: VipKey,
    pub packets: u64,
    pub bytes: u64,
    pub all_backends_down: bool,
    pub backends: Vec<BackendStats>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStats {
    pub backend: BackendAddr,
    pub state: BackendState,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackStats {
    pub flows: u64,
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    pub evictions: u64,
    /// The part of `evictions` that were confirmed (established) flows.
    #[serde(default)]
    pub confirmed_evictions: u64,
    pub expiries: u64,
    pub repicks: u64,
}

/// Burst latency in TSC cycles, from the workers' histograms.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthcheck_spec_takes_the_file_defaults() {
        let spec: HealthCheckSpec = serde_json::from_str(r#"{"kind":"tcp"}"#).unwrap();
        assert_eq!(
            (spec.interval_ms, spec.timeout_ms, spec.rise, spec.fall),
            (1000, 500, 2, 3)
        );
        let e = serde_json::from_str::<HealthCheckSpec>(r#"{"kind":"icmp"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant `icmp`"), "{e}");
    }

    #[test]
    fn changes_print_as_a_diff() {
        let vip: VipKey = "192.0.2.10:80/tcp".parse().unwrap();
        let change = Change {
            op: ChangeOp::ChangeBackend,
            vip,
            backend: Some("198.51.100.7".parse().unwrap()),
            detail: "weight 1 -> 5".into(),
        };
        assert_eq!(
            change.to_string(),
            "~ backend 198.51.100.7 of vip 192.0.2.10:80/tcp: weight 1 -> 5"
        );
        let json = serde_json::to_string(&change).unwrap();
        assert!(json.contains(r#""op":"change_backend""#), "{json}");
        assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), change);
    }
}
