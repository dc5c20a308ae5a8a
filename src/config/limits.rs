//! The numbers a configuration is held to: each key's range ([`Limit`]) and the defaults
//! of the keys a file may leave out.
//!
//! A default that belongs to another concept is defined there and only used here: the
//! Maglev table size is [`crate::maglev::DEFAULT_TABLE_SIZE`], the GUE port
//! [`crate::datapath::encap::GUE_DEFAULT_PORT`].

use super::model::Weight;

/// Where the control API and `/metrics` listen unless `control.listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9180";
/// Most packets a worker receives or sends per burst; workers size their batches by it.
pub const MAX_BURST: u16 = 256;
/// Highest backend weight. Weights are relative; 0 drains a backend (no new flows, existing
/// connections stay).
pub const MAX_WEIGHT: Weight = 10_000;
/// DPDK's default RTE_MAX_LCORE: lcore ids are below it.
pub const MAX_LCORE: u16 = 128;

/// An inclusive range a number must lie in, with the message given when it does not.
pub(super) struct Limit {
    pub(super) key: &'static str,
    pub(super) min: i64,
    pub(super) max: i64,
    /// Completes "use MIN to MAX…": a unit or what the extremes mean.
    pub(super) unit: &'static str,
}

impl Limit {
    const fn new(key: &'static str, min: i64, max: i64, unit: &'static str) -> Self {
        Self {
            key,
            min,
            max,
            unit,
        }
    }

    pub(super) fn problem(&self, value: i64) -> Option<String> {
        (value < self.min || value > self.max).then(|| {
            format!(
                "{} = {value} is out of range; use {} to {}{}",
                self.key, self.min, self.max, self.unit
            )
        })
    }
}

pub(super) const WORKERS: Limit = Limit::new("workers", 1, MAX_LCORE as i64 - 1, " worker lcores");
pub(super) const LCORE: Limit = Limit::new(
    "lcores",
    0,
    MAX_LCORE as i64 - 1,
    " (lcore ids are below RTE_MAX_LCORE)",
);
pub(super) const CONNTRACK_FLOWS: Limit =
    Limit::new("conntrack_flows", 1024, 1 << 26, " flows per worker");
pub(super) const IDLE_TIMEOUT: Limit =
    Limit::new("conntrack_idle_timeout_secs", 1, 86_400, " seconds");
pub(super) const BURST: Limit = Limit::new("burst", 1, MAX_BURST as i64, " packets");
pub(super) const MTU: Limit = Limit::new("mtu", 68, 9000, " bytes");
pub(super) const PREFIX_LEN: Limit = Limit::new("prefix_len", 1, 32, " bits");
pub(super) const PREFIX_LEN6: Limit = Limit::new("prefix_len6", 1, 128, " bits");
/// RFC 8200: every link that carries IPv6 has at least this MTU.
pub(super) const IPV6_MIN_MTU: u16 = 1280;
pub(super) const RX_DESC: Limit =
    Limit::new("rx_desc", 64, 32_768, " descriptors (a power of two)");
pub(super) const TX_DESC: Limit =
    Limit::new("tx_desc", 64, 32_768, " descriptors (a power of two)");
pub(super) const TABLE_SIZE: Limit = Limit::new("table_size", 7, 1 << 24, " (a prime)");
pub(super) const GUE_PORT: Limit = Limit::new("gue_port", 1, 65_535, "");
pub(super) const WEIGHT: Limit =
    Limit::new("weight", 0, MAX_WEIGHT as i64, " (0 drains the backend)");
pub(super) const CHECK_PORT: Limit = Limit::new("port", 1, 65_535, "");
pub(super) const EXPECT_STATUS: Limit = Limit::new("expect_status", 100, 599, "");
pub(super) const INTERVAL: Limit = Limit::new("interval_ms", 50, 3_600_000, " milliseconds");
pub(super) const TIMEOUT: Limit = Limit::new("timeout_ms", 1, 3_600_000, " milliseconds");
pub(super) const RISE: Limit = Limit::new("rise", 1, 100, " consecutive checks");
pub(super) const FALL: Limit = Limit::new("fall", 1, 100, " consecutive checks");
pub(super) const MAX_CONNECTIONS: Limit =
    Limit::new("max_connections", 1, 1_000_000, " connections");
pub(super) const HEADER_TIMEOUT: Limit =
    Limit::new("header_timeout_ms", 100, 300_000, " milliseconds");
pub(super) const BODY_TIMEOUT: Limit = Limit::new("body_timeout_ms", 100, 600_000, " milliseconds");
pub(super) const API_IDLE_TIMEOUT: Limit =
    Limit::new("idle_timeout_ms", 100, 3_600_000, " milliseconds");
pub(super) const WRITE_TIMEOUT: Limit =
    Limit::new("write_timeout_ms", 100, 600_000, " milliseconds");

/// Most control API connections open at once unless `max_connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
/// How long a client has to send a request's line and headers, from its first byte (or from
/// connecting), unless `header_timeout_ms` says otherwise.
pub const DEFAULT_HEADER_TIMEOUT_MS: u32 = 5_000;
/// How long a client has to send a request's whole body unless `body_timeout_ms` says
/// otherwise.
pub const DEFAULT_BODY_TIMEOUT_MS: u32 = 10_000;
/// How long a kept-alive connection may wait for its next request unless `idle_timeout_ms`
/// says otherwise.
pub const DEFAULT_IDLE_TIMEOUT_MS: u32 = 60_000;
/// How long a client has to take a whole answer unless `write_timeout_ms` says otherwise.
pub const DEFAULT_WRITE_TIMEOUT_MS: u32 = 10_000;

/// Milliseconds between two checks of a backend unless `interval_ms` says otherwise.
pub const DEFAULT_CHECK_INTERVAL_MS: u32 = 1000;
/// Milliseconds a check may take unless `timeout_ms` says otherwise.
pub const DEFAULT_CHECK_TIMEOUT_MS: u32 = 500;
/// Consecutive successes that bring a down backend up unless `rise` says otherwise.
pub const DEFAULT_CHECK_RISE: u8 = 2;
/// Consecutive failures that take an up backend down unless `fall` says otherwise.
pub const DEFAULT_CHECK_FALL: u8 = 3;
/// The path of an HTTP check unless `path` says otherwise.
pub const DEFAULT_CHECK_PATH: &str = "/";
/// The status an HTTP check expects unless `expect_status` says otherwise.
pub const DEFAULT_EXPECT_STATUS: u16 = 200;
