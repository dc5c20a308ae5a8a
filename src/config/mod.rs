//! The configuration file: its TOML schema, defaults and validation.
//!
//! Every key, its type, default and meaning is documented in docs/operations.md
//! ("Configuration"); [`Config::example`] is the example printed there.
//!
//! Loading goes in three steps, each reporting `FILE:LINE:COL: problem and fix`:
//!
//! 1. TOML syntax and shape (unknown keys, wrong types) — toml's own errors, located by its
//!    spans. The file is read into `raw` structs that keep the span of every value.
//! 2. Per-value conversion into the typed [`Config`] (addresses, enums, number ranges).
//! 3. Whole-configuration rules ([`Config::check`]): duplicates, address families against
//!    the ports' outer addresses, MTU and so on. [`Config::check`] reports a [`Locus`]
//!    (which table and key); the loader maps it back to the line through the raw spans.
//!    It is public so the control plane can hold configurations it builds from API calls
//!    to the same rules.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::addr::{unicast_problem, BackendAddr, ControlAddr, MacAddr, Protocol, VipKey};

/// Environment variable that, when set and not empty, replaces `control.token`.
pub const TOKEN_ENV: &str = "FULCRUM_TOKEN";
/// Where the control API and `/metrics` listen unless `control.listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9180";
/// The Maglev table size (M) of a VIP unless `table_size` says otherwise: a prime comfortably
/// above 100 slots per backend for up to 655 backends.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
/// The UDP destination port of GUE-encapsulated packets unless `gue_port` says otherwise.
pub const DEFAULT_GUE_PORT: u16 = 6080;
/// Most packets a worker receives or sends per burst; workers size their batches by it.
pub const MAX_BURST: u16 = 256;
/// Highest backend weight. Weights are relative; 0 drains a backend (no new flows, existing
/// connections stay).
pub const MAX_WEIGHT: u16 = 10_000;
/// DPDK's default RTE_MAX_LCORE: lcore ids are below it.
pub const MAX_LCORE: u16 = 128;

/// An inclusive range a number must lie in, with the message given when it does not.
struct Limit {
    key: &'static str,
    min: i64,
    max: i64,
    /// Completes "use MIN to MAX…": a unit or what the extremes mean.
    unit: &'static str,
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

    fn problem(&self, value: i64) -> Option<String> {
        (value < self.min || value > self.max).then(|| {
            format!(
                "{} = {value} is out of range; use {} to {}{}",
                self.key, self.min, self.max, self.unit
            )
        })
    }
}

const WORKERS: Limit = Limit::new("workers", 1, MAX_LCORE as i64 - 1, " worker lcores");
const LCORE: Limit = Limit::new(
    "lcores",
    0,
    MAX_LCORE as i64 - 1,
    " (lcore ids are below RTE_MAX_LCORE)",
);
const CONNTRACK_FLOWS: Limit = Limit::new("conntrack_flows", 1024, 1 << 26, " flows per worker");
const IDLE_TIMEOUT: Limit = Limit::new("conntrack_idle_timeout_secs", 1, 86_400, " seconds");
const BURST: Limit = Limit::new("burst", 1, MAX_BURST as i64, " packets");
const MTU: Limit = Limit::new("mtu", 68, 9000, " bytes");
const PREFIX_LEN: Limit = Limit::new("prefix_len", 1, 32, " bits");
const PREFIX_LEN6: Limit = Limit::new("prefix_len6", 1, 128, " bits");
/// RFC 8200: every link that carries IPv6 has at least this MTU.
const IPV6_MIN_MTU: u16 = 1280;
const RX_DESC: Limit = Limit::new("rx_desc", 64, 32_768, " descriptors (a power of two)");
const TX_DESC: Limit = Limit::new("tx_desc", 64, 32_768, " descriptors (a power of two)");
const TABLE_SIZE: Limit = Limit::new("table_size", 7, 1 << 24, " (a prime)");
const GUE_PORT: Limit = Limit::new("gue_port", 1, 65_535, "");
const WEIGHT: Limit = Limit::new("weight", 0, MAX_WEIGHT as i64, " (0 drains the backend)");
const CHECK_PORT: Limit = Limit::new("port", 1, 65_535, "");
const EXPECT_STATUS: Limit = Limit::new("expect_status", 100, 599, "");
const INTERVAL: Limit = Limit::new("interval_ms", 50, 3_600_000, " milliseconds");
const TIMEOUT: Limit = Limit::new("timeout_ms", 1, 3_600_000, " milliseconds");
const RISE: Limit = Limit::new("rise", 1, 100, " consecutive checks");
const FALL: Limit = Limit::new("fall", 1, 100, " consecutive checks");
const MAX_CONNECTIONS: Limit = Limit::new("max_connections", 1, 1_000_000, " connections");
const HEADER_TIMEOUT: Limit = Limit::new("header_timeout_ms", 100, 300_000, " milliseconds");
const BODY_TIMEOUT: Limit = Limit::new("body_timeout_ms", 100, 600_000, " milliseconds");
const API_IDLE_TIMEOUT: Limit = Limit::new("idle_timeout_ms", 100, 3_600_000, " milliseconds");
const WRITE_TIMEOUT: Limit = Limit::new("write_timeout_ms", 100, 600_000, " milliseconds");

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

/// A validated configuration. Serializes to the same TOML schema it is read from
/// (`fulcrum config show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub dataplane: Dataplane,
    #[serde(rename = "port")]
    pub ports: Vec<Port>,
    #[serde(rename = "vip")]
    pub vips: Vec<Vip>,
    pub control: Control,
}

/// `[dataplane]`: the EAL and the workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dataplane {
    /// Worker lcores; each owns one RX and one TX queue on every port.
    pub workers: u16,
    /// The lcore ids of the workers, one per worker; `None` lets fulcrum pick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lcores: Option<Vec<u16>>,
    /// Extra arguments for rte_eal_init.
    pub eal_args: Vec<String>,
    /// Connection-table capacity of each worker.
    pub conntrack_flows: u32,
    /// A flow not seen for this long is forgotten (all protocols).
    pub conntrack_idle_timeout_secs: u32,
    /// Packets per RX/TX burst.
    pub burst: u16,
    /// Whether packets not for a VIP go to the kernel through a TAP per port.
    pub exception_path: bool,
}

impl Default for Dataplane {
    fn default() -> Self {
        Self {
            workers: 1,
            lcores: None,
            eal_args: Vec::new(),
            conntrack_flows: 1 << 20,
            conntrack_idle_timeout_secs: 300,
            burst: 32,
            exception_path: true,
        }
    }
}

/// `[[port]]`: one DPDK port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    /// A DPDK vdev string (`net_tap0,iface=fulcrum0`) or a PCI address (`0000:03:00.0`).
    pub device: String,
    pub mtu: u16,
    /// The balancer's own IPv4 address on this port: the outer source of IPv4 encapsulation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// The balancer's own IPv6 address: the outer source of IPv6 encapsulation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
    /// Overrides the port's MAC address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// The next hop for encapsulated packets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_mac: Option<MacAddr>,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// Name of this port's exception TAP; see [`Port::exception_tap_name`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception_tap: Option<String>,
    /// A DPDK vdev to use as the exception port instead of the default TAP (e.g. a
    /// `net_pcap` device in tests); the kernel side is then not set up by fulcrum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception_device: Option<String>,
    /// Prefix length of `address` on the exception TAP (the on-link subnet).
    pub prefix_len: u8,
    /// Prefix length of `address6` on the exception TAP.
    pub prefix_len6: u8,
    /// Put the device in promiscuous mode and balance frames whatever their destination
    /// MAC. Off by default: only frames to the port's MAC are balanced (broadcast and
    /// multicast go to the exception path, other unicast is dropped as `not_our_mac`).
    pub promiscuous: bool,
}

impl Port {
    /// The exception TAP's interface name: `exception_tap`, or `fulcrum-exc<index>` where
    /// `index` is the port's position in the file (from 0).
    pub fn exception_tap_name(&self, index: usize) -> String {
        match &self.exception_tap {
            Some(name) => name.clone(),
            None => format!("fulcrum-exc{index}"),
        }
    }

    /// Whether `device` names a PCI device rather than a vdev: the EAL then must not get
    /// `--no-pci`.
    pub fn is_pci(&self) -> bool {
        is_pci_address(device_name(&self.device))
    }
}

/// `[[vip]]`: a virtual service and its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    pub key: VipKey,
    pub encap: Encap,
    /// Maglev lookup-table size M (prime).
    pub table_size: u32,
    pub healthcheck: Option<HealthCheck>,
    pub backends: Vec<Backend>,
}

impl Vip {
    /// The port health checks of `backend` go to: the check's own port, else the backend's,
    /// else the VIP's. `None` only for a configuration [`Config::check`] rejects.
    pub fn healthcheck_port(&self, backend: &Backend) -> Option<u16> {
        let check = self.healthcheck.as_ref()?;
        check
            .port
            .or(backend.address.port)
            .or((self.key.port != 0).then_some(self.key.port))
    }
}

/// How packets reach a VIP's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encap {
    /// IP-in-IP (protocol 4 or 41) from the port's own address to the backend.
    Ipip,
    /// Generic UDP Encapsulation to this UDP port of the backend.
    Gue { port: u16 },
    /// Layer-2 direct server return: the frame is re-addressed to the backend's MAC, the IP
    /// packet is untouched. Backends must share a link with the balancer.
    L2dsr,
}

impl Encap {
    /// The `encap` value of the configuration file.
    pub fn name(&self) -> &'static str {
        match self {
            Encap::Ipip => "ipip",
            Encap::Gue { .. } => "gue",
            Encap::L2dsr => "l2dsr",
        }
    }
}

/// `[vip.healthcheck]`: how each backend's health is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    /// See [`Vip::healthcheck_port`].
    pub port: Option<u16>,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    /// Consecutive successes that bring a down backend up.
    pub rise: u8,
    /// Consecutive failures that take an up backend down.
    pub fall: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// A TCP connection is accepted.
    Tcp,
    /// `GET path` answers with `expect_status`.
    Http { path: String, expect_status: u16 },
}

/// `[[vip.backend]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub address: BackendAddr,
    pub weight: u16,
    /// The backend's MAC for `encap = "l2dsr"`, when it is not to be resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

/// `[control]`: the control API, which also serves `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Control {
    pub listen: ControlAddr,
    /// Where API changes are persisted so that a restart keeps them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
    /// Most API connections open at once; one more is answered 503 and closed.
    pub max_connections: u32,
    /// A request's line and headers must arrive within this, from their first byte (from
    /// connecting, for a connection's first request).
    pub header_timeout_ms: u32,
    /// A request's body must arrive within this, from the end of its headers.
    pub body_timeout_ms: u32,
    /// A kept-alive connection with no request for this long is closed.
    pub idle_timeout_ms: u32,
    /// An answer the client does not take within this is dropped with its connection.
    pub write_timeout_ms: u32,
}

impl Control {
    /// The token API clients must present: `FULCRUM_TOKEN` if set and not empty, else
    /// `token` from the file.
    pub fn effective_token(&self) -> Option<Token> {
        self.token_with_env(std::env::var(TOKEN_ENV).ok())
    }

    /// [`Control::effective_token`] with the environment variable's value passed in.
    pub fn token_with_env(&self, env: Option<String>) -> Option<Token> {
        match env {
            Some(value) if !value.is_empty() => Some(Token(value)),
            _ => self.token.clone(),
        }
    }
}

impl Default for Control {
    fn default() -> Self {
        Self {
            listen: ControlAddr::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 9180))),
            state_file: None,
            token: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT_MS,
            body_timeout_ms: DEFAULT_BODY_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            write_timeout_ms: DEFAULT_WRITE_TIMEOUT_MS,
        }
    }
}

/// The control API's bearer token. Its `Debug` output is redacted so the configuration can
/// be logged.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Token(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares in time independent of where the first difference is, so response timing
    /// does not reveal the token byte by byte.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A configuration problem with the place it is at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{locus}: {message}")]
pub struct Problem {
    pub locus: Locus,
    pub message: String,
}

/// Where in the configuration a [`Problem`] is: a table and one of its keys. Indices count
/// from 0 in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locus {
    /// The configuration as a whole.
    File,
    Dataplane(&'static str),
    Port(usize, &'static str),
    Vip(usize, &'static str),
    Healthcheck(usize, &'static str),
    Backend(usize, usize, &'static str),
    Control(&'static str),
}

impl fmt::Display for Locus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Locus::File => f.write_str("configuration"),
            Locus::Dataplane(key) => write!(f, "dataplane.{key}"),
            Locus::Port(port, key) => write!(f, "port[{port}].{key}"),
            Locus::Vip(vip, key) => write!(f, "vip[{vip}].{key}"),
            Locus::Healthcheck(vip, key) => write!(f, "vip[{vip}].healthcheck.{key}"),
            Locus::Backend(vip, backend, key) => write!(f, "vip[{vip}].backend[{backend}].{key}"),
            Locus::Control(key) => write!(f, "control.{key}"),
        }
    }
}

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration file: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `FILE:LINE:COL: message`, lines and columns counted from 1.
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
}

impl ConfigError {
    fn at(origin: &str, text: &str, span: Range<usize>, message: String) -> Self {
        let (line, column) = line_column(text, span.start);
        ConfigError::Invalid {
            origin: origin.to_owned(),
            line,
            column,
            message,
        }
    }
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    from_str(&text, &path.display().to_string())
}

/// Parses and validates configuration `text`; `origin` names it in errors (usually the path).
pub fn from_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let file: raw::File = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ConfigError::at(origin, text, span, explain_toml_error(e.message()))
    })?;
    let config = file
        .to_config()
        .map_err(|e| ConfigError::at(origin, text, e.span, e.message))?;
    config
        .check()
        .map_err(|p| ConfigError::at(origin, text, file.locate(p.locus), p.message))?;
    Ok(config)
}

/// toml's messages, on one line, with the fix for the mistakes people make most.
fn explain_toml_error(message: &str) -> String {
    let mut message = message.trim().replace('\n', "; ");
    let single_bracket_array = ["`port`", "`vip`", "`backend`"]
        .iter()
        .any(|key| message.contains(&format!("duplicate key {key}")));
    if message.contains("invalid type: map, expected a sequence") || single_bracket_array {
        message.push_str(" (write [[port]], [[vip]] and [[vip.backend]] with double brackets: there can be several)");
    }
    message
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

impl Config {
    /// The example configuration of docs/operations.md.
    pub fn example() -> &'static str {
        EXAMPLE
    }

    /// The VIP with this key.
    pub fn vip(&self, key: &VipKey) -> Option<&Vip> {
        self.vips.iter().find(|vip| vip.key == *key)
    }

    /// A copy safe to print: the control token is replaced by `<redacted>`.
    pub fn redacted(&self) -> Config {
        let mut copy = self.clone();
        if copy.control.token.is_some() {
            copy.control.token = Some(Token::new("<redacted>"));
        }
        copy
    }

    /// Checks the rules that span keys and tables. [`from_str`] runs it; run it on
    /// configurations built in code (the control API) before using them.
    pub fn check(&self) -> Result<(), Problem> {
        self.check_dataplane()?;
        self.check_ports()?;
        self.check_vips()?;
        self.check_control()
    }

    fn check_dataplane(&self) -> Result<(), Problem> {
        let d = &self.dataplane;
        let problem = |key, message| Problem {
            locus: Locus::Dataplane(key),
            message,
        };
        for (limit, value) in [
            (&WORKERS, i64::from(d.workers)),
            (&CONNTRACK_FLOWS, i64::from(d.conntrack_flows)),
            (&IDLE_TIMEOUT, i64::from(d.conntrack_idle_timeout_secs)),
            (&BURST, i64::from(d.burst)),
        ] {
            if let Some(message) = limit.problem(value) {
                return Err(problem(limit.key, message));
            }
        }
        if let Some(lcores) = &d.lcores {
            if lcores.len() != usize::from(d.workers) {
                return Err(problem(
                    "lcores",
                    format!(
                        "lcores lists {} lcores but workers = {}; list exactly one lcore per worker (or drop workers: it defaults to the number of lcores)",
                        lcores.len(),
                        d.workers
                    ),
                ));
            }
            let mut seen = HashSet::new();
            for &lcore in lcores {
                if let Some(message) = LCORE.problem(i64::from(lcore)) {
                    return Err(problem("lcores", message));
                }
                if !seen.insert(lcore) {
                    return Err(problem(
                        "lcores",
                        format!("lcore {lcore} is listed twice; each worker needs its own lcore"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_ports(&self) -> Result<(), Problem> {
        if self.ports.is_empty() {
            return Err(Problem {
                locus: Locus::File,
                message: "no [[port]] table; add one, e.g. [[port]] device = \"net_tap0,iface=fulcrum0\" address = \"203.0.113.2\"".into(),
            });
        }
        // Each [[port]] is a DPDK port, and so is its exception TAP: beyond DPDK's
        // RTE_MAX_ETHPORTS the probe fails at start-up, after much else has been set up.
        let per_port = 1 + usize::from(self.dataplane.exception_path);
        let max_ports = crate::stats::MAX_PORTS / per_port;
        if self.ports.len() > max_ports {
            return Err(Problem {
                locus: Locus::Port(max_ports, "device"),
                message: format!(
                    "{} [[port]] tables are more than DPDK can drive: it has {} ports and each [[port]] takes {per_port}{}; use at most {max_ports}",
                    self.ports.len(),
                    crate::stats::MAX_PORTS,
                    if per_port == 2 { " (itself and its exception TAP)" } else { "" },
                ),
            });
        }
        let ipv6_user = self.ipv6_user();
        let mut devices = HashMap::new();
        let mut taps = HashMap::new();
        for (i, port) in self.ports.iter().enumerate() {
            let problem = |key, message| Problem {
                locus: Locus::Port(i, key),
                message,
            };
            let name = device_name(&port.device);
            if name.is_empty() || port.device.chars().any(char::is_whitespace) {
                return Err(problem(
                    "device",
                    format!(
                        "device {:?} is not a DPDK device; give a vdev string such as \"net_tap0,iface=fulcrum0\" or a PCI address such as \"0000:03:00.0\" (no spaces)",
                        port.device
                    ),
                ));
            }
            if let Some(first) = devices.insert(name, i) {
                return Err(problem(
                    "device",
                    format!("device {name} is already port[{first}]; each [[port]] needs its own device"),
                ));
            }
            if port.address.is_none() && port.address6.is_none() {
                return Err(problem(
                    "address",
                    "this port has no own address; set address = \"203.0.113.2\" (IPv4) and/or address6 = \"2001:db8::2\" (IPv6): encapsulated packets leave from it".into(),
                ));
            }
            let addresses = [
                ("address", port.address.map(IpAddr::V4)),
                ("address6", port.address6.map(IpAddr::V6)),
            ];
            for (key, addr) in addresses {
                if let Some(why) = addr.and_then(unicast_problem) {
                    return Err(problem(
                        key,
                        format!("{key} {why}; give this port's own unicast address"),
                    ));
                }
            }
            for (key, mac) in [("mac", port.mac), ("gateway_mac", port.gateway_mac)] {
                if let Some(mac) = mac.filter(|mac| !mac.is_unicast()) {
                    return Err(problem(
                        key,
                        format!("{key} {mac} is not a unicast MAC address; give the station's own address (first byte even, not all zeros)"),
                    ));
                }
            }
            if let Some(message) = MTU.problem(i64::from(port.mtu)) {
                return Err(problem("mtu", message));
            }
            if port.mtu < IPV6_MIN_MTU {
                if let Some(user) = &ipv6_user {
                    return Err(problem(
                        "mtu",
                        format!(
                            "mtu = {} is below IPv6's minimum of {IPV6_MIN_MTU} and this configuration carries IPv6 ({user}); raise mtu to {IPV6_MIN_MTU} or more",
                            port.mtu
                        ),
                    ));
                }
            }
            for (limit, value) in [(&RX_DESC, port.rx_desc), (&TX_DESC, port.tx_desc)] {
                if limit.problem(i64::from(value)).is_some() || !value.is_power_of_two() {
                    return Err(problem(
                        limit.key,
                        format!(
                            "{} = {value} is not a power of two from {} to {}; try {}",
                            limit.key,
                            limit.min,
                            limit.max,
                            value.clamp(64, 16_384).next_power_of_two()
                        ),
                    ));
                }
            }
            if let Some(name) = &port.exception_tap {
                if let Some(why) = interface_name_problem(name) {
                    return Err(problem(
                        "exception_tap",
                        format!("exception_tap {name:?} {why}"),
                    ));
                }
            }
            let tap = port.exception_tap_name(i);
            if let Some(first) = taps.insert(tap.clone(), i) {
                return Err(problem(
                    "exception_tap",
                    format!("exception TAP {tap} is also port[{first}]'s; give each port its own exception_tap"),
                ));
            }
        }
        Ok(())
    }

    /// Something in the configuration that is IPv6, described for messages.
    fn ipv6_user(&self) -> Option<String> {
        if let Some((i, _)) = self
            .ports
            .iter()
            .enumerate()
            .find(|(_, p)| p.address6.is_some())
        {
            return Some(format!("port[{i}] has address6"));
        }
        for vip in &self.vips {
            if vip.key.addr.is_ipv6() {
                return Some(format!("vip {}", vip.key));
            }
            if let Some(b) = vip.backends.iter().find(|b| b.address.addr.is_ipv6()) {
                return Some(format!("backend {} of vip {}", b.address, vip.key));
            }
        }
        None
    }

    fn check_vips(&self) -> Result<(), Problem> {
        let has_v4_source = self.ports.iter().any(|p| p.address.is_some());
        let has_v6_source = self.ports.iter().any(|p| p.address6.is_some());
        let mut keys = HashMap::new();
        for (v, vip) in self.vips.iter().enumerate() {
            let key = vip.key;
            let problem = |key, message| Problem {
                locus: Locus::Vip(v, key),
                message,
            };
            if let Some(why) = unicast_problem(key.addr) {
                return Err(problem(
                    "address",
                    format!("vip {key}: {why}; give the address clients connect to"),
                ));
            }
            if let Some(first) = keys.insert(key, v) {
                return Err(problem(
                    "address",
                    format!("vip {key} is defined twice (also vip[{first}]); merge the two [[vip]] tables"),
                ));
            }
            if let Some(message) = TABLE_SIZE.problem(i64::from(vip.table_size)) {
                return Err(problem("table_size", message));
            }
            if !is_prime(vip.table_size) {
                return Err(problem(
                    "table_size",
                    format!(
                        "table_size = {} is not prime; Maglev needs a prime table size, e.g. {}",
                        vip.table_size,
                        next_prime(vip.table_size)
                    ),
                ));
            }
            if vip.backends.len() >= vip.table_size as usize {
                return Err(problem(
                    "table_size",
                    format!(
                        "table_size = {} is too small for {} backends; Maglev needs more slots than backends (100 per backend keeps the shares even), e.g. {}",
                        vip.table_size,
                        vip.backends.len(),
                        DEFAULT_TABLE_SIZE
                    ),
                ));
            }
            if let Encap::Gue { port } = vip.encap {
                if let Some(message) = GUE_PORT.problem(i64::from(port)) {
                    return Err(problem("gue_port", message));
                }
            }
            if let Some(check) = &vip.healthcheck {
                check_healthcheck(v, check)?;
            }
            let mut backends = HashMap::new();
            for (b, backend) in vip.backends.iter().enumerate() {
                let addr = backend.address;
                let problem = |key, message| Problem {
                    locus: Locus::Backend(v, b, key),
                    message,
                };
                if let Some(why) = unicast_problem(addr.addr) {
                    return Err(problem(
                        "address",
                        format!("backend {addr}: {why}; give the backend's own address"),
                    ));
                }
                if let Some(first) = backends.insert(addr, b) {
                    return Err(problem(
                        "address",
                        format!("backend {addr} is listed twice in vip {key} (also backend[{first}]); remove one"),
                    ));
                }
                if let Some(message) = WEIGHT.problem(i64::from(backend.weight)) {
                    return Err(problem("weight", message));
                }
                if let (Some(port), false) = (addr.port, key.all_ports()) {
                    if port != key.port {
                        return Err(problem(
                            "address",
                            format!(
                                "backend {addr} has port {port} but fulcrum does not rewrite ports: packets keep vip {key}'s port {}; write the backend as {} (or with :{})",
                                key.port,
                                addr.addr,
                                key.port
                            ),
                        ));
                    }
                }
                match vip.encap {
                    Encap::L2dsr => {
                        if addr.addr.is_ipv4() != key.addr.is_ipv4() {
                            return Err(problem(
                                "address",
                                format!("backend {addr} is not of vip {key}'s address family; L2 DSR forwards the client's packet unchanged, so use a backend of the same family or encap = \"ipip\""),
                            ));
                        }
                    }
                    Encap::Ipip | Encap::Gue { .. } => {
                        if backend.mac.is_some() {
                            return Err(problem(
                                "mac",
                                format!("mac is only used with encap = \"l2dsr\" (vip {key} uses {:?}); remove it", vip.encap.name()),
                            ));
                        }
                        if addr.addr.is_ipv4() && !has_v4_source {
                            return Err(problem(
                                "address",
                                format!("backend {addr} is IPv4 but no [[port]] has an IPv4 address to encapsulate from; add address = \"203.0.113.2\" to a port"),
                            ));
                        }
                        if addr.addr.is_ipv6() && !has_v6_source {
                            return Err(problem(
                                "address",
                                format!("backend {addr} is IPv6 but no [[port]] has an IPv6 address to encapsulate from; add address6 = \"2001:db8::2\" to a port"),
                            ));
                        }
                    }
                }
                if let Some(mac) = backend.mac.filter(|mac| !mac.is_unicast()) {
                    return Err(problem(
                        "mac",
                        format!("mac {mac} is not a unicast MAC address; give the backend's own address"),
                    ));
                }
                if vip.healthcheck.is_some() && vip.healthcheck_port(backend).is_none() {
                    return Err(Problem {
                        locus: Locus::Healthcheck(v, "port"),
                        message: format!("vip {key} serves all ports and backend {addr} has no port, so the health check needs one; add port = 80 (for example) to [vip.healthcheck]"),
                    });
                }
            }
        }
        Ok(())
    }

    fn check_control(&self) -> Result<(), Problem> {
        let problem = |key, message| Problem {
            locus: Locus::Control(key),
            message,
        };
        if self
            .control
            .state_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(problem(
                "state_file",
                "state_file is empty; give a path such as \"/var/lib/fulcrum/state.json\" or remove the key".into(),
            ));
        }
        let c = &self.control;
        for (limit, value) in [
            (&MAX_CONNECTIONS, c.max_connections),
            (&HEADER_TIMEOUT, c.header_timeout_ms),
            (&BODY_TIMEOUT, c.body_timeout_ms),
            (&API_IDLE_TIMEOUT, c.idle_timeout_ms),
            (&WRITE_TIMEOUT, c.write_timeout_ms),
        ] {
            if let Some(message) = limit.problem(i64::from(value)) {
                return Err(problem(limit.key, message));
            }
        }
        if let Some(token) = &self.control.token {
            if token.0.is_empty() || !token.0.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(problem(
                    "token",
                    "token must be non-empty printable ASCII without spaces (it travels in an HTTP header)".into(),
                ));
            }
        }
        Ok(())
    }
}

fn check_healthcheck(v: usize, check: &HealthCheck) -> Result<(), Problem> {
    let problem = |key, message| Problem {
        locus: Locus::Healthcheck(v, key),
        message,
    };
    let mut numbers = vec![
        (&INTERVAL, i64::from(check.interval_ms)),
        (&TIMEOUT, i64::from(check.timeout_ms)),
        (&RISE, i64::from(check.rise)),
        (&FALL, i64::from(check.fall)),
    ];
    if let Some(port) = check.port {
        numbers.push((&CHECK_PORT, i64::from(port)));
    }
    if let HealthCheckKind::Http {
        path,
        expect_status,
    } = &check.kind
    {
        numbers.push((&EXPECT_STATUS, i64::from(*expect_status)));
        if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(problem(
                "path",
                format!("path {path:?} is not an HTTP path; give one that starts with '/' and has no spaces, e.g. \"/healthz\""),
            ));
        }
    }
    for (limit, value) in numbers {
        if let Some(message) = limit.problem(value) {
            return Err(problem(limit.key, message));
        }
    }
    if check.timeout_ms > check.interval_ms {
        return Err(problem(
            "timeout_ms",
            format!(
                "timeout_ms = {} is longer than interval_ms = {}; checks would overlap, so make the timeout at most the interval",
                check.timeout_ms, check.interval_ms
            ),
        ));
    }
    Ok(())
}

/// The vdev or PCI name: what precedes the first `,` of a device string.
fn device_name(device: &str) -> &str {
    device.split(',').next().unwrap_or(device)
}

/// `DDDD:BB:DD.F` or `BB:DD.F` in hex.
fn is_pci_address(name: &str) -> bool {
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = name.split(':').collect();
    let (bus, rest) = match parts.as_slice() {
        [domain, bus, rest] if hex(domain, 4) => (*bus, *rest),
        [bus, rest] => (*bus, *rest),
        _ => return false,
    };
    match rest.split_once('.') {
        Some((device, function)) => {
            hex(bus, 2) && hex(device, 2) && function.len() == 1 && hex(function, 1)
        }
        None => false,
    }
}

/// Why `name` cannot be a Linux interface name, if it cannot.
fn interface_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 15 {
        Some("must be 1 to 15 characters long (Linux interface names)")
    } else if name == "." || name == ".." {
        Some("is not a valid interface name")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        Some("may contain only letters, digits, '-', '_' and '.'")
    } else {
        None
    }
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

fn next_prime(n: u32) -> u32 {
    (n.saturating_add(1)..u32::MAX)
        .find(|&candidate| is_prime(candidate))
        .unwrap_or(DEFAULT_TABLE_SIZE)
}

/// `[[vip]]` as written: `address = "ADDR:PORT"`, `protocol`, `encap` and `gue_port` apart.
#[derive(Serialize)]
struct VipToml<'a> {
    address: String,
    protocol: Protocol,
    encap: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    gue_port: Option<u16>,
    table_size: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<HealthCheckToml<'a>>,
    backend: &'a [Backend],
}

#[derive(Serialize)]
struct HealthCheckToml<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expect_status: Option<u16>,
    interval_ms: u32,
    timeout_ms: u32,
    rise: u8,
    fall: u8,
}

impl Serialize for Vip {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let healthcheck = self.healthcheck.as_ref().map(|check| {
            let (kind, path, expect_status) = match &check.kind {
                HealthCheckKind::Tcp => ("tcp", None, None),
                HealthCheckKind::Http {
                    path,
                    expect_status,
                } => ("http", Some(path.as_str()), Some(*expect_status)),
            };
            HealthCheckToml {
                kind,
                port: check.port,
                path,
                expect_status,
                interval_ms: check.interval_ms,
                timeout_ms: check.timeout_ms,
                rise: check.rise,
                fall: check.fall,
            }
        });
        VipToml {
            address: self.key.addr_port(),
            protocol: self.key.protocol,
            encap: self.encap.name(),
            gue_port: match self.encap {
                Encap::Gue { port } => Some(port),
                _ => None,
            },
            table_size: self.table_size,
            healthcheck,
            backend: &self.backends,
        }
        .serialize(serializer)
    }
}

/// The file as written, every value with its span, before any conversion.
mod raw {
    use std::ops::Range;

    use serde::Deserialize;
    use toml::Spanned;

    type Field<T> = Option<Spanned<T>>;

    pub fn span<T>(field: &Field<T>) -> Option<Range<usize>> {
        field.as_ref().map(Spanned::span)
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub dataplane: Field<Dataplane>,
        #[serde(default)]
        pub port: Vec<Spanned<Port>>,
        #[serde(default)]
        pub vip: Vec<Spanned<Vip>>,
        pub control: Field<Control>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Dataplane {
        pub workers: Field<i64>,
        pub lcores: Field<Vec<Spanned<i64>>>,
        pub eal_args: Field<Vec<String>>,
        pub conntrack_flows: Field<i64>,
        pub conntrack_idle_timeout_secs: Field<i64>,
        pub burst: Field<i64>,
        pub exception_path: Field<bool>,
    }

    impl Dataplane {
        pub fn span(&self, key: &str) -> Option<Range<usize>> {
            match key {
                "workers" => span(&self.workers),
                "lcores" => span(&self.lcores),
                "eal_args" => span(&self.eal_args),
                "conntrack_flows" => span(&self.conntrack_flows),
                "conntrack_idle_timeout_secs" => span(&self.conntrack_idle_timeout_secs),
                "burst" => span(&self.burst),
                "exception_path" => span(&self.exception_path),
                _ => None,
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Port {
        pub device: Field<String>,
        pub mtu: Field<i64>,
        pub address: Field<String>,
        pub address6: Field<String>,
        pub mac: Field<String>,
        pub gateway_mac: Field<String>,
        pub rx_desc: Field<i64>,
        pub tx_desc: Field<i64>,
        pub exception_tap: Field<String>,
        pub exception_device: Field<String>,
        pub prefix_len: Field<i64>,
        pub prefix_len6: Field<i64>,
        pub promiscuous: Field<bool>,
    }

    impl Port {
        pub fn span(&self, key: &str) -> Option<Range<usize>> {
            match key {
                "device" => span(&self.device),
                "mtu" => span(&self.mtu),
                "address" => span(&self.address),
                "address6" => span(&self.address6),
                "mac" => span(&self.mac),
                "gateway_mac" => span(&self.gateway_mac),
                "rx_desc" => span(&self.rx_desc),
                "tx_desc" => span(&self.tx_desc),
                "exception_tap" => span(&self.exception_tap),
                "exception_device" => span(&self.exception_device),
                "prefix_len" => span(&self.prefix_len),
                "prefix_len6" => span(&self.prefix_len6),
                "promiscuous" => span(&self.promiscuous),
                _ => None,
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Vip {
        pub address: Field<String>,
        pub protocol: Field<String>,
        pub encap: Field<String>,
        pub table_size: Field<i64>,
        pub gue_port: Field<i64>,
        pub healthcheck: Field<HealthCheck>,
        #[serde(default)]
        pub backend: Vec<Spanned<Backend>>,
    }

    impl Vip {
        pub fn span(&self, key: &str) -> Option<Range<usize>> {
            match key {
                "address" => span(&self.address),
                "protocol" => span(&self.protocol),
                "encap" => span(&self.encap),
                "table_size" => span(&self.table_size),
                "gue_port" => span(&self.gue_port),
                "healthcheck" => span(&self.healthcheck),
                _ => None,
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HealthCheck {
        pub kind: Field<String>,
        pub port: Field<i64>,
        pub path: Field<String>,
        pub expect_status: Field<i64>,
        pub interval_ms: Field<i64>,
        pub timeout_ms: Field<i64>,
        pub rise: Field<i64>,
        pub fall: Field<i64>,
    }

    impl HealthCheck {
        pub fn span(&self, key: &str) -> Option<Range<usize>> {
            match key {
                "kind" => span(&self.kind),
                "port" => span(&self.port),
                "path" => span(&self.path),
                "expect_status" => span(&self.expect_status),
                "interval_ms" => span(&self.interval_ms),
                "timeout_ms" => span(&self.timeout_ms),
                "rise" => span(&self.rise),
                "fall" => span(&self.fall),
                _ => None,
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Backend {
        pub address: Field<String>,
        pub weight: Field<i64>,
        pub mac: Field<String>,
    }

    impl Backend {
        pub fn span(&self, key: &str) -> Option<Range<usize>> {
            match key {
                "address" => span(&self.address),
                "weight" => span(&self.weight),
                "mac" => span(&self.mac),
                _ => None,
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Control {
        pub listen: Field<String>,
        pub state_file: Field<String>,
        pub token: Field<String>,
        pub max_connections: Field<i64>,
        pub header_timeout_ms: Field<i64>,
        pub body_timeout_ms: Field<i64>,
        pub idle_timeout_ms: Field<i64>,
        pub write_timeout_ms: Field<i64>,
    }

    impl Control {
        pub fn span(&self, key: &str) -> Option<Range<usize>> {
            match key {
                "listen" => span(&self.listen),
                "state_file" => span(&self.state_file),
                "token" => span(&self.token),
                "max_connections" => span(&self.max_connections),
                "header_timeout_ms" => span(&self.header_timeout_ms),
                "body_timeout_ms" => span(&self.body_timeout_ms),
                "idle_timeout_ms" => span(&self.idle_timeout_ms),
                "write_timeout_ms" => span(&self.write_timeout_ms),
                _ => None,
            }
        }
    }
}

/// A problem found while converting one value, at that value's span.
struct Located {
    span: Range<usize>,
    message: String,
}

fn at<T>(field: &toml::Spanned<T>, message: impl Into<String>) -> Located {
    Located {
        span: field.span(),
        message: message.into(),
    }
}

/// A number within `limit`, or `default` when the key is absent.
fn number<T: TryFrom<i64>>(
    field: &Option<toml::Spanned<i64>>,
    limit: &Limit,
    default: T,
) -> Result<T, Located> {
    field
        .as_ref()
        .map_or(Ok(default), |field| number_at(field, limit))
}

/// A number within `limit`.
fn number_at<T: TryFrom<i64>>(field: &toml::Spanned<i64>, limit: &Limit) -> Result<T, Located> {
    let value = *field.get_ref();
    let out_of_range = || {
        let message = limit.problem(value);
        at(
            field,
            message.unwrap_or_else(|| format!("{} = {value} is out of range", limit.key)),
        )
    };
    if limit.problem(value).is_some() {
        return Err(out_of_range());
    }
    T::try_from(value).map_err(|_| out_of_range())
}

/// A value parsed with `FromStr`, its error message located at the value.
fn parsed<T>(field: &Option<toml::Spanned<String>>) -> Result<Option<T>, Located>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    field
        .as_ref()
        .map(|f| f.get_ref().parse::<T>().map_err(|e| at(f, e.to_string())))
        .transpose()
}

impl raw::File {
    fn to_config(&self) -> Result<Config, Located> {
        let dataplane = match &self.dataplane {
            Some(d) => d.get_ref().to_dataplane()?,
            None => Dataplane::default(),
        };
        let ports = self
            .port
            .iter()
            .map(|p| p.get_ref().to_port(p))
            .collect::<Result<_, _>>()?;
        let vips = self
            .vip
            .iter()
            .map(|v| v.get_ref().to_vip(v))
            .collect::<Result<_, _>>()?;
        let control = match &self.control {
            Some(c) => c.get_ref().to_control()?,
            None => Control::default(),
        };
        Ok(Config {
            dataplane,
            ports,
            vips,
            control,
        })
    }

    /// The span a [`Locus`] refers to: the key's value, else (the key was left out) its
    /// table's header, else the start of the file.
    fn locate(&self, locus: Locus) -> Range<usize> {
        fn key_or_table<T>(
            table: &toml::Spanned<T>,
            key: impl FnOnce(&T) -> Option<Range<usize>>,
        ) -> Range<usize> {
            key(table.get_ref()).unwrap_or_else(|| table.span())
        }
        let found = match locus {
            Locus::File => None,
            Locus::Dataplane(key) => self
                .dataplane
                .as_ref()
                .map(|d| key_or_table(d, |d| d.span(key))),
            Locus::Port(i, key) => self.port.get(i).map(|p| key_or_table(p, |p| p.span(key))),
            Locus::Vip(i, key) => self.vip.get(i).map(|v| key_or_table(v, |v| v.span(key))),
            Locus::Healthcheck(i, key) => self.vip.get(i).map(|v| match &v.get_ref().healthcheck {
                Some(check) => key_or_table(check, |c| c.span(key)),
                None => v.span(),
            }),
            Locus::Backend(i, j, key) => {
                self.vip.get(i).map(|v| match v.get_ref().backend.get(j) {
                    Some(b) => key_or_table(b, |b| b.span(key)),
                    None => v.span(),
                })
            }
            Locus::Control(key) => self
                .control
                .as_ref()
                .map(|c| key_or_table(c, |c| c.span(key))),
        };
        found.unwrap_or(0..0)
    }
}

impl raw::Dataplane {
    fn to_dataplane(&self) -> Result<Dataplane, Located> {
        let defaults = Dataplane::default();
        let lcores = match &self.lcores {
            None => None,
            Some(list) => Some(
                list.get_ref()
                    .iter()
                    .map(|lcore| number_at(lcore, &LCORE))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        // An explicit lcore list says how many workers there are.
        let default_workers = lcores.as_ref().map_or(defaults.workers, |l| {
            u16::try_from(l.len()).unwrap_or(u16::MAX)
        });
        Ok(Dataplane {
            workers: number(&self.workers, &WORKERS, default_workers)?,
            lcores,
            eal_args: self
                .eal_args
                .as_ref()
                .map_or(defaults.eal_args, |a| a.get_ref().clone()),
            conntrack_flows: number(
                &self.conntrack_flows,
                &CONNTRACK_FLOWS,
                defaults.conntrack_flows,
            )?,
            conntrack_idle_timeout_secs: number(
                &self.conntrack_idle_timeout_secs,
                &IDLE_TIMEOUT,
                defaults.conntrack_idle_timeout_secs,
            )?,
            burst: number(&self.burst, &BURST, defaults.burst)?,
            exception_path: self
                .exception_path
                .as_ref()
                .map_or(defaults.exception_path, |e| *e.get_ref()),
        })
    }
}

impl raw::Port {
    fn to_port(&self, table: &toml::Spanned<Self>) -> Result<Port, Located> {
        let device = self.device.as_ref().ok_or_else(|| {
            at(table, "this [[port]] has no device; add device = \"net_tap0,iface=fulcrum0\" (a DPDK vdev string) or a PCI address such as \"0000:03:00.0\"")
        })?;
        let address = match &self.address {
            None => None,
            Some(field) => match field.get_ref().parse::<IpAddr>() {
                Ok(IpAddr::V4(v4)) => Some(v4),
                Ok(IpAddr::V6(v6)) => {
                    return Err(at(
                        field,
                        format!("address is this port's IPv4 address; put {v6} in address6"),
                    ))
                }
                Err(_) => {
                    return Err(at(
                        field,
                        format!(
                            "address {:?} is not an IPv4 address; write it like \"203.0.113.2\"",
                            field.get_ref()
                        ),
                    ))
                }
            },
        };
        let address6 = match &self.address6 {
            None => None,
            Some(field) => match field.get_ref().parse::<IpAddr>() {
                Ok(IpAddr::V6(v6)) => Some(v6),
                Ok(IpAddr::V4(v4)) => {
                    return Err(at(field, format!("address6 is this port's IPv6 address; put {v4} in address")))
                }
                Err(_) => {
                    return Err(at(field, format!("address6 {:?} is not an IPv6 address; write it like \"2001:db8::2\" (no brackets)", field.get_ref())))
                }
            },
        };
        Ok(Port {
            device: device.get_ref().clone(),
            mtu: number(&self.mtu, &MTU, 1500)?,
            address,
            address6,
            mac: parsed(&self.mac)?,
            gateway_mac: parsed(&self.gateway_mac)?,
            rx_desc: number(&self.rx_desc, &RX_DESC, 1024)?,
            tx_desc: number(&self.tx_desc, &TX_DESC, 1024)?,
            exception_tap: self.exception_tap.as_ref().map(|t| t.get_ref().clone()),
            exception_device: self.exception_device.as_ref().map(|t| t.get_ref().clone()),
            prefix_len: number(&self.prefix_len, &PREFIX_LEN, 24)?,
            prefix_len6: number(&self.prefix_len6, &PREFIX_LEN6, 64)?,
            promiscuous: self.promiscuous.as_ref().is_some_and(|p| *p.get_ref()),
        })
    }
}

impl raw::Vip {
    fn to_vip(&self, table: &toml::Spanned<Self>) -> Result<Vip, Located> {
        let address = self.address.as_ref().ok_or_else(|| {
            at(table, "this [[vip]] has no address; add address = \"ADDR:PORT\", e.g. \"192.0.2.10:80\" or \"[2001:db8::10]:443\"")
        })?;
        let protocol: Option<Protocol> = parsed(&self.protocol)?;
        let key = if address.get_ref().contains('/') {
            // The API's ADDR:PORT/PROTO form is accepted too.
            let key: VipKey = address
                .get_ref()
                .parse()
                .map_err(|e: crate::addr::AddrError| at(address, e.to_string()))?;
            if let (Some(field), Some(protocol)) = (&self.protocol, protocol) {
                if protocol != key.protocol {
                    return Err(at(field, format!("protocol = \"{protocol}\" contradicts address {key}; keep one of the two")));
                }
            }
            key
        } else {
            let Some(protocol) = protocol else {
                return Err(at(
                    address,
                    format!(
                        "vip {} has no protocol; add protocol = \"tcp\" or \"udp\"",
                        address.get_ref()
                    ),
                ));
            };
            VipKey::from_addr_port(address.get_ref(), protocol)
                .map_err(|e| at(address, e.to_string()))?
        };
        let encap = self.encap.as_ref().ok_or_else(|| {
            at(
                table,
                format!("vip {key} has no encap; add encap = \"ipip\", \"gue\" or \"l2dsr\""),
            )
        })?;
        let encap = match encap.get_ref().as_str() {
            "ipip" => Encap::Ipip,
            "gue" => Encap::Gue {
                port: number(&self.gue_port, &GUE_PORT, DEFAULT_GUE_PORT)?,
            },
            "l2dsr" => Encap::L2dsr,
            other => {
                return Err(at(
                    encap,
                    format!("unknown encap {other:?}; use \"ipip\", \"gue\" or \"l2dsr\""),
                ))
            }
        };
        if let (Some(field), false) = (&self.gue_port, matches!(encap, Encap::Gue { .. })) {
            return Err(at(field, format!("gue_port is only used with encap = \"gue\" (vip {key} uses {:?}); remove gue_port or set encap = \"gue\"", encap.name())));
        }
        Ok(Vip {
            key,
            encap,
            table_size: number(&self.table_size, &TABLE_SIZE, DEFAULT_TABLE_SIZE)?,
            healthcheck: self
                .healthcheck
                .as_ref()
                .map(|h| h.get_ref().to_healthcheck(h))
                .transpose()?,
            backends: self
                .backend
                .iter()
                .map(|b| b.get_ref().to_backend(b))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl raw::HealthCheck {
    fn to_healthcheck(&self, table: &toml::Spanned<Self>) -> Result<HealthCheck, Located> {
        let kind = self.kind.as_ref().ok_or_else(|| {
            at(
                table,
                "[vip.healthcheck] has no kind; add kind = \"tcp\" or \"http\"",
            )
        })?;
        let kind = match kind.get_ref().as_str() {
            "tcp" => {
                for (key, field) in [
                    ("path", raw::span(&self.path)),
                    ("expect_status", raw::span(&self.expect_status)),
                ] {
                    if let Some(span) = field {
                        return Err(Located {
                            span,
                            message: format!("{key} is only used with kind = \"http\"; remove it or set kind = \"http\""),
                        });
                    }
                }
                HealthCheckKind::Tcp
            }
            "http" => HealthCheckKind::Http {
                path: self
                    .path
                    .as_ref()
                    .map_or_else(|| "/".to_owned(), |p| p.get_ref().clone()),
                expect_status: number(&self.expect_status, &EXPECT_STATUS, 200)?,
            },
            other => {
                return Err(at(
                    kind,
                    format!("unknown health check kind {other:?}; use \"tcp\" or \"http\""),
                ))
            }
        };
        Ok(HealthCheck {
            kind,
            port: self
                .port
                .as_ref()
                .map(|port| number_at(port, &CHECK_PORT))
                .transpose()?,
            interval_ms: number(&self.interval_ms, &INTERVAL, 1000)?,
            timeout_ms: number(&self.timeout_ms, &TIMEOUT, 500)?,
            rise: number(&self.rise, &RISE, 2)?,
            fall: number(&self.fall, &FALL, 3)?,
        })
    }
}

impl raw::Backend {
    fn to_backend(&self, table: &toml::Spanned<Self>) -> Result<Backend, Located> {
        let address = self.address.as_ref().ok_or_else(|| {
            at(table, "this [[vip.backend]] has no address; add address = \"198.51.100.11\" (or \"[2001:db8::11]\")")
        })?;
        Ok(Backend {
            address: address
                .get_ref()
                .parse()
                .map_err(|e: crate::addr::AddrError| at(address, e.to_string()))?,
            weight: number(&self.weight, &WEIGHT, 1)?,
            mac: parsed(&self.mac)?,
        })
    }
}

impl raw::Control {
    fn to_control(&self) -> Result<Control, Located> {
        let defaults = Control::default();
        Ok(Control {
            listen: parsed(&self.listen)?.unwrap_or(defaults.listen),
            state_file: self.state_file.as_ref().map(|p| PathBuf::from(p.get_ref())),
            token: self
                .token
                .as_ref()
                .map(|t| Token::new(t.get_ref().as_str())),
            max_connections: number(
                &self.max_connections,
                &MAX_CONNECTIONS,
                defaults.max_connections,
            )?,
            header_timeout_ms: number(
                &self.header_timeout_ms,
                &HEADER_TIMEOUT,
                defaults.header_timeout_ms,
            )?,
            body_timeout_ms: number(
                &self.body_timeout_ms,
                &BODY_TIMEOUT,
                defaults.body_timeout_ms,
            )?,
            idle_timeout_ms: number(
                &self.idle_timeout_ms,
                &API_IDLE_TIMEOUT,
                defaults.idle_timeout_ms,
            )?,
            write_timeout_ms: number(
                &self.write_timeout_ms,
                &WRITE_TIMEOUT,
                defaults.write_timeout_ms,
            )?,
        })
    }
}

const EXAMPLE: &str = r#"[dataplane]
workers = 1                  # worker lcores; one RX/TX queue each on every port
eal_args = ["--file-prefix=fulcrum"]
conntrack_flows = 1048576    # per worker

[[port]]
device = "net_tap0,iface=fulcrum0"   # a DPDK vdev string or a PCI address
mtu = 1500
address = "203.0.113.2"             # the balancer's own address (outer source)
gateway_mac = "02:00:00:00:00:01"   # optional

[[vip]]
address = "192.0.2.10:80"
protocol = "tcp"                    # tcp | udp
encap = "ipip"                      # ipip | gue | l2dsr

[[vip.backend]]
address = "198.51.100.11"
weight = 1

[control]
listen = "127.0.0.1:9180"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid file: one port. Cases append to it.
    const BASE: &str = r#"[[port]]
device = "net_tap0,iface=fulcrum0"
address = "203.0.113.2"
"#;

    /// Every key set, both families, every encap.
    const FULL: &str = r#"[dataplane]
workers = 2
lcores = [1, 3]
eal_args = ["--file-prefix=fulcrum", "--no-pci"]
conntrack_flows = 65536
conntrack_idle_timeout_secs = 120
burst = 64
exception_path = false

[[port]]
device = "net_tap0,iface=fulcrum0"
mtu = 1500
address = "203.0.113.2"
address6 = "2001:DB8::2"
mac = "02:00:00:00:00:02"
gateway_mac = "02:00:00:00:00:01"
rx_desc = 2048
tx_desc = 512
exception_tap = "fx0"
promiscuous = true

[[port]]
device = "0000:03:00.0"
mtu = 9000
address = "203.0.113.3"

[[vip]]
address = "192.0.2.10:80"
protocol = "tcp"
encap = "ipip"
table_size = 251

[vip.healthcheck]
kind = "http"
path = "/healthz"
expect_status = 204
interval_ms = 2000
timeout_ms = 1000
rise = 3
fall = 5

[[vip.backend]]
address = "198.51.100.11"
weight = 100

[[vip.backend]]
address = "2001:db8::11"
weight = 0

[[vip]]
address = "[2001:DB8:0::10]:443"
protocol = "udp"
encap = "gue"
gue_port = 7000

[vip.healthcheck]
kind = "tcp"

[[vip.backend]]
address = "[2001:db8::12]:443"

[[vip]]
address = "192.0.2.20:0/udp"
encap = "l2dsr"

[vip.healthcheck]
kind = "tcp"
port = 53

[[vip.backend]]
address = "198.51.100.21"
mac = "02:00:00:00:01:21"

[control]
listen = "unix:/run/fulcrum.sock"
state_file = "/var/lib/fulcrum/state.json"
token = "s3cret-token"
max_connections = 512
header_timeout_ms = 2000
body_timeout_ms = 4000
idle_timeout_ms = 30000
write_timeout_ms = 3000
"#;

    fn parse(text: &str) -> Config {
        from_str(text, "test.toml").unwrap_or_else(|e| panic!("{e}\n--- in ---\n{text}"))
    }

    fn error(text: &str) -> String {
        match from_str(text, "test.toml") {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    /// Asserts the error names `test.toml`, the line marked `# <-` in `text` and contains
    /// every needle (the problem and its fix).
    #[track_caller]
    fn assert_error(text: &str, needles: &[&str]) {
        let line = text
            .lines()
            .position(|l| l.contains("# <-"))
            .expect("the case marks its offending line with # <-")
            + 1;
        assert_error_at(text, line, needles);
    }

    #[track_caller]
    fn assert_error_at(text: &str, line: usize, needles: &[&str]) {
        let message = error(text);
        let prefix = format!("test.toml:{line}:");
        assert!(
            message.starts_with(&prefix),
            "expected {prefix}…, got: {message}\n--- in ---\n{text}"
        );
        for needle in needles {
            assert!(message.contains(needle), "{needle:?} not in: {message}");
        }
        assert!(!message.contains('\n'), "multi-line message: {message}");
    }

    /// `case` after [`BASE`], unless it brings its own ports.
    fn with_base(case: &str) -> String {
        if case.contains("[[port]]") {
            case.to_owned()
        } else {
            format!("{BASE}{case}")
        }
    }

    fn key(s: &str) -> VipKey {
        s.parse().unwrap()
    }

    fn ports(count: usize) -> String {
        (0..count)
            .map(|i| {
                format!(
                    "[[port]]\ndevice = \"net_ring{i}\"\naddress = \"203.0.113.{}\"\n",
                    i + 2
                )
            })
            .collect()
    }

    #[test]
    fn more_ports_than_dpdk_drives_are_refused() {
        // 16 ports and their 16 exception TAPs are DPDK's 32.
        parse(&ports(16));
        let text = ports(17);
        // The 17th [[port]] is the one too many.
        let line = text
            .lines()
            .position(|l| l == "device = \"net_ring16\"")
            .unwrap()
            + 1;
        assert_error_at(
            &text,
            line,
            &[
                "17 [[port]] tables are more than DPDK can drive",
                "itself and its exception TAP",
                "use at most 16",
            ],
        );
        // Without the exception path, each port is one DPDK port.
        let without = format!("[dataplane]\nexception_path = false\n{}", ports(32));
        parse(&without);
        let text = format!("[dataplane]\nexception_path = false\n{}", ports(33));
        let line = text
            .lines()
            .position(|l| l == "device = \"net_ring32\"")
            .unwrap()
            + 1;
        assert_error_at(&text, line, &["33 [[port]] tables", "use at most 32"]);
    }

    #[test]
    fn the_example_parses_with_defaults_filled_in() {
        let config = parse(Config::example());
        let d = &config.dataplane;
        assert_eq!(d.workers, 1);
        assert_eq!(d.eal_args, ["--file-prefix=fulcrum"]);
        assert_eq!(d.conntrack_flows, 1_048_576);
        assert_eq!(d.conntrack_idle_timeout_secs, 300);
        assert_eq!(d.burst, 32);
        assert_eq!(d.lcores, None);
        assert!(d.exception_path);

        let [port] = config.ports.as_slice() else {
            panic!("{:?}", config.ports)
        };
        assert_eq!(port.device, "net_tap0,iface=fulcrum0");
        assert_eq!(port.mtu, 1500);
        assert_eq!(port.address, Some(Ipv4Addr::new(203, 0, 113, 2)));
        assert_eq!(port.address6, None);
        assert_eq!(port.gateway_mac, Some(MacAddr([2, 0, 0, 0, 0, 1])));
        assert_eq!((port.rx_desc, port.tx_desc), (1024, 1024));
        assert_eq!(port.exception_tap_name(0), "fulcrum-exc0");
        assert!(!port.is_pci());

        let [vip] = config.vips.as_slice() else {
            panic!("{:?}", config.vips)
        };
        assert_eq!(vip.key, key("192.0.2.10:80/tcp"));
        assert_eq!(vip.encap, Encap::Ipip);
        assert_eq!(vip.table_size, DEFAULT_TABLE_SIZE);
        assert_eq!(vip.healthcheck, None);
        assert_eq!(
            vip.backends,
            [Backend {
                address: "198.51.100.11".parse().unwrap(),
                weight: 1,
                mac: None,
            }]
        );
        assert_eq!(config.control.listen.to_string(), "127.0.0.1:9180");
        assert_eq!(config.control.token, None);
        assert!(config.vip(&key("192.0.2.10:80/tcp")).is_some());
        assert!(config.vip(&key("192.0.2.10:80/udp")).is_none());
    }

    #[test]
    fn a_file_with_only_a_port_gets_every_default() {
        let config = parse(BASE);
        assert_eq!(config.dataplane, Dataplane::default());
        assert_eq!(config.control, Control::default());
        assert_eq!(config.control.listen.to_string(), DEFAULT_LISTEN);
        assert!(config.vips.is_empty());
        assert_eq!(config.ports[0].mtu, 1500);
    }

    #[test]
    fn every_key_parses() {
        let config = parse(FULL);
        let d = &config.dataplane;
        assert_eq!((d.workers, d.lcores.as_deref()), (2, Some(&[1u16, 3][..])));
        assert_eq!(
            (d.conntrack_flows, d.conntrack_idle_timeout_secs, d.burst),
            (65536, 120, 64)
        );
        assert!(!d.exception_path);

        let p = &config.ports[0];
        assert_eq!(p.address6, Some("2001:db8::2".parse().unwrap()));
        assert_eq!(p.mac, Some(MacAddr([2, 0, 0, 0, 0, 2])));
        assert_eq!((p.rx_desc, p.tx_desc), (2048, 512));
        assert_eq!(p.exception_tap_name(0), "fx0");
        assert!(p.promiscuous);
        assert!(
            !config.ports[1].promiscuous,
            "promiscuous is off by default"
        );
        assert!(config.ports[1].is_pci());
        assert_eq!(config.ports[1].exception_tap_name(1), "fulcrum-exc1");

        let web = &config.vips[0];
        assert_eq!(web.table_size, 251);
        let check = web.healthcheck.as_ref().unwrap();
        assert_eq!(
            check.kind,
            HealthCheckKind::Http {
                path: "/healthz".into(),
                expect_status: 204
            }
        );
        assert_eq!(
            (check.interval_ms, check.timeout_ms, check.rise, check.fall),
            (2000, 1000, 3, 5)
        );
        assert_eq!(web.backends[1].weight, 0);
        assert_eq!(web.healthcheck_port(&web.backends[0]), Some(80));

        let gue = &config.vips[1];
        assert_eq!(gue.key, key("[2001:db8::10]:443/udp"));
        assert_eq!(gue.encap, Encap::Gue { port: 7000 });
        let check = gue.healthcheck.as_ref().unwrap();
        assert_eq!(check.kind, HealthCheckKind::Tcp);
        assert_eq!(
            (
                check.port,
                check.interval_ms,
                check.timeout_ms,
                check.rise,
                check.fall
            ),
            (None, 1000, 500, 2, 3)
        );
        assert_eq!(gue.backends[0].address.to_string(), "[2001:db8::12]:443");
        assert_eq!(gue.backends[0].weight, 1);

        let dsr = &config.vips[2];
        assert_eq!(dsr.key, key("192.0.2.20:0/udp"));
        assert_eq!(dsr.encap, Encap::L2dsr);
        assert_eq!(dsr.backends[0].mac, Some(MacAddr([2, 0, 0, 0, 1, 0x21])));
        assert_eq!(dsr.healthcheck_port(&dsr.backends[0]), Some(53));

        let c = &config.control;
        assert_eq!(c.listen, ControlAddr::Unix("/run/fulcrum.sock".into()));
        assert_eq!(
            c.state_file.as_deref(),
            Some(Path::new("/var/lib/fulcrum/state.json"))
        );
        assert_eq!(c.token.as_ref().map(Token::as_str), Some("s3cret-token"));
        assert_eq!(c.max_connections, 512);
        assert_eq!(
            (
                c.header_timeout_ms,
                c.body_timeout_ms,
                c.idle_timeout_ms,
                c.write_timeout_ms
            ),
            (2000, 4000, 30000, 3000)
        );
    }

    #[test]
    fn gue_port_defaults_to_6080() {
        let config = parse(&format!(
            "{BASE}[[vip]]\naddress = \"192.0.2.10:80\"\nprotocol = \"udp\"\nencap = \"gue\"\n"
        ));
        assert_eq!(config.vips[0].encap, Encap::Gue { port: 6080 });
    }

    #[test]
    fn lcores_alone_set_the_worker_count() {
        let config = parse(&format!("[dataplane]\nlcores = [2, 4, 6]\n{BASE}"));
        assert_eq!(config.dataplane.workers, 3);
    }

    #[test]
    fn serialized_configs_parse_back_equal() {
        for text in [Config::example(), FULL, BASE] {
            let config = parse(text);
            let shown = toml::to_string(&config).unwrap();
            let again = from_str(&shown, "shown.toml")
                .unwrap_or_else(|e| panic!("{e}\n--- serialized ---\n{shown}"));
            assert_eq!(again, config, "--- serialized ---\n{shown}");
        }
        let shown = toml::to_string(&parse(FULL)).unwrap();
        // The file's split form and canonical addresses, not the API's VipKey string.
        assert!(
            shown.contains("address = \"[2001:db8::10]:443\""),
            "{shown}"
        );
        assert!(shown.contains("protocol = \"udp\""), "{shown}");
        assert!(shown.contains("gue_port = 7000"), "{shown}");
        assert!(shown.contains("address6 = \"2001:db8::2\""), "{shown}");
    }

    #[test]
    fn redacted_hides_the_token_only() {
        let config = parse(FULL);
        let redacted = config.redacted();
        let shown = toml::to_string(&redacted).unwrap();
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(shown.contains("token = \"<redacted>\""), "{shown}");
        assert_eq!(redacted.vips, config.vips);
        assert!(!format!("{config:?}").contains("s3cret-token"));
    }

    #[test]
    fn the_environment_token_wins_unless_empty() {
        let config = parse(FULL);
        let control = &config.control;
        assert_eq!(
            control.token_with_env(Some("from-env".into())),
            Some(Token::new("from-env"))
        );
        assert_eq!(
            control.token_with_env(Some(String::new())),
            Some(Token::new("s3cret-token"))
        );
        assert_eq!(
            control.token_with_env(None),
            Some(Token::new("s3cret-token"))
        );
        assert_eq!(Control::default().token_with_env(None), None);
    }

    #[test]
    fn tokens_compare_whole() {
        let token = Token::new("s3cret-token");
        assert!(token.matches("s3cret-token"));
        assert!(!token.matches("s3cret-tokem"));
        assert!(!token.matches("s3cret-token2"));
        assert!(!token.matches(""));
    }

    #[test]
    fn syntax_and_shape_errors_point_at_the_line() {
        let cases: &[(&str, &[&str])] = &[
            ("[[vip]]\naddress = \"192.0.2.10:80 # <-\n", &["invalid basic string"]),
            ("[dataplane]\nworkers = 1\nworker = 2 # <-\n", &["unknown field `worker`", "expected one of", "`workers`"]),
            ("[dataplane]\nworkers = \"two\" # <-\n", &["invalid type: string \"two\""]),
            ("[port] # <-\ndevice = \"x\"\n", &["duplicate key `port`", "double brackets"]),
            ("[[vip]]\naddress = \"192.0.2.10:80\"\nprotocol = \"tcp\"\nencap = \"ipip\"\nbackends = [] # <-\n", &["unknown field `backends`", "`backend`"]),
            ("[[vip]]\naddress = \"192.0.2.10:80\"\nprotocol = \"tcp\"\nencap = \"ipip\"\n[[vip.backend]]\naddress = \"198.51.100.1\"\nwieght = 2 # <-\n", &["unknown field `wieght`", "`weight`"]),
            ("[[vip]]\naddress = \"192.0.2.10:80\"\nprotocol = \"tcp\"\nencap = \"ipip\"\n[vip.healthcheck]\nkind = \"tcp\"\ninterval = 5 # <-\n", &["unknown field `interval`", "`interval_ms`"]),
            ("[control]\nlisten = \"127.0.0.1:9180\"\nlisten = \"127.0.0.1:9181\" # <-\n", &["duplicate key `listen`"]),
            ("[metrics] # <-\nlisten = \"127.0.0.1:9100\"\n", &["unknown field `metrics`"]),
            ("[[port]]\ndevice = \"net_tap1\"\npromiscuous = \"yes\" # <-\n", &["invalid type: string \"yes\"", "expected a boolean"]),
        ];
        for (case, needles) in cases {
            assert_error(&with_base(case), needles);
        }
        assert_error(
            "[port] # <-\ndevice = \"x\"\n",
            &["expected a sequence", "double brackets"],
        );
    }

    #[test]
    fn value_errors_point_at_the_value_and_say_the_fix() {
        let vip = "[[vip]]\naddress = \"192.0.2.10:80\"\nprotocol = \"tcp\"\n";
        let cases: Vec<(String, &[&str])> = vec![
            ("[dataplane]\nworkers = 0 # <-\n".into(), &["workers = 0 is out of range; use 1 to 127 worker lcores"]),
            ("[dataplane]\nlcores = [1, 500] # <-\n".into(), &["lcores = 500 is out of range; use 0 to 127"]),
            ("[dataplane]\nburst = 1000 # <-\n".into(), &["burst = 1000 is out of range; use 1 to 256"]),
            ("[dataplane]\nconntrack_flows = -1 # <-\n".into(), &["conntrack_flows = -1 is out of range"]),
            ("[dataplane]\nconntrack_idle_timeout_secs = 0 # <-\n".into(), &["use 1 to 86400 seconds"]),
            (format!("{vip}encap = \"vxlan\" # <-\n"), &["unknown encap \"vxlan\"; use \"ipip\", \"gue\" or \"l2dsr\""]),
            (format!("{vip}encap = \"ipip\"\ngue_port = 7000 # <-\n"), &["gue_port is only used with encap = \"gue\"", "remove gue_port or set encap = \"gue\""]),
            (format!("{vip}encap = \"gue\"\ngue_port = 0 # <-\n"), &["gue_port = 0 is out of range; use 1 to 65535"]),
            ("[[vip]]\naddress = \"192.0.2.10\" # <-\nprotocol = \"tcp\"\nencap = \"ipip\"\n".into(), &["invalid VIP address \"192.0.2.10\": missing port", "expected ADDR:PORT"]),
            ("[[vip]]\naddress = \"192.0.2.10:80\" # <-\nencap = \"ipip\"\n".into(), &["has no protocol; add protocol = \"tcp\" or \"udp\""]),
            ("[[vip]]\naddress = \"192.0.2.10:80\"\nprotocol = \"sctp\" # <-\nencap = \"ipip\"\n".into(), &["invalid protocol \"sctp\"", "expected tcp or udp"]),
            ("[[vip]]\naddress = \"192.0.2.10:80/tcp\"\nprotocol = \"udp\" # <-\nencap = \"ipip\"\n".into(), &["contradicts address 192.0.2.10:80/tcp"]),
            ("[[vip]]\naddress = \"224.0.0.1:80\" # <-\nprotocol = \"udp\"\nencap = \"ipip\"\n".into(), &["224.0.0.1 is a multicast address"]),
            ("[[vip]]\naddress = \"2001:db8::10:443\" # <-\nprotocol = \"tcp\"\nencap = \"ipip\"\n".into(), &["in brackets"]),
            ("[[vip]] # <-\nprotocol = \"tcp\"\nencap = \"ipip\"\n".into(), &["has no address; add address = \"ADDR:PORT\""]),
            ("[[vip]] # <-\naddress = \"192.0.2.10:80\"\nprotocol = \"tcp\"\n".into(), &["has no encap; add encap = \"ipip\", \"gue\" or \"l2dsr\""]),
            (format!("{vip}encap = \"ipip\"\ntable_size = 65536 # <-\n"), &["table_size = 65536 is not prime", "e.g. 65537"]),
            (format!("{vip}encap = \"ipip\"\n[[vip.backend]]\naddress = \"198.51.100.300\" # <-\n"), &["invalid backend \"198.51.100.300\"", "expected ADDR or ADDR:PORT"]),
            (format!("{vip}encap = \"ipip\"\n[[vip.backend]]\naddress = \"255.255.255.255\" # <-\n"), &["broadcast address"]),
            (format!("{vip}encap = \"ipip\"\n[[vip.backend]] # <-\nweight = 1\n"), &["has no address; add address = \"198.51.100.11\""]),
            (format!("{vip}encap = \"ipip\"\n[[vip.backend]]\naddress = \"198.51.100.1\"\nweight = 20000 # <-\n"), &["weight = 20000 is out of range; use 0 to 10000 (0 drains the backend)"]),
            (format!("{vip}encap = \"ipip\"\n[[vip.backend]]\naddress = \"198.51.100.1\"\nweight = 70000 # <-\n"), &["weight = 70000 is out of range"]),
            (format!("{vip}encap = \"ipip\"\n[[vip.backend]]\naddress = \"198.51.100.1\"\nweight = -1 # <-\n"), &["weight = -1 is out of range"]),
            (format!("{vip}encap = \"l2dsr\"\n[[vip.backend]]\naddress = \"198.51.100.1\"\nmac = \"02:00:00:00:01\" # <-\n"), &["invalid MAC address", "5 bytes instead of 6", "e.g. 02:00:00:00:00:01"]),
            (format!("{vip}encap = \"ipip\"\n[vip.healthcheck] # <-\nport = 80\n"), &["has no kind; add kind = \"tcp\" or \"http\""]),
            (format!("{vip}encap = \"ipip\"\n[vip.healthcheck]\nkind = \"icmp\" # <-\n"), &["unknown health check kind \"icmp\""]),
            (format!("{vip}encap = \"ipip\"\n[vip.healthcheck]\nkind = \"tcp\"\npath = \"/\" # <-\n"), &["path is only used with kind = \"http\""]),
            (format!("{vip}encap = \"ipip\"\n[vip.healthcheck]\nkind = \"http\"\nexpect_status = 999 # <-\n"), &["expect_status = 999 is out of range; use 100 to 599"]),
            ("[[port]] # <-\nmtu = 1500\n".into(), &["has no device; add device = \"net_tap0,iface=fulcrum0\""]),
            ("[[port]]\ndevice = \"net_tap0\"\naddress = \"2001:db8::2\" # <-\n".into(), &["put 2001:db8::2 in address6"]),
            ("[[port]]\ndevice = \"net_tap0\"\naddress = \"203.0.113.2\"\naddress6 = \"203.0.113.3\" # <-\n".into(), &["put 203.0.113.3 in address"]),
            ("[[port]]\ndevice = \"net_tap0\"\naddress = \"fulcrum.example\" # <-\n".into(), &["is not an IPv4 address"]),
            ("[[port]]\ndevice = \"net_tap0\"\naddress = \"203.0.113.2\"\nmtu = 60 # <-\n".into(), &["mtu = 60 is out of range; use 68 to 9000 bytes"]),
            ("[[port]]\ndevice = \"net_tap0\"\naddress = \"203.0.113.2\"\ngateway_mac = \"02:00:00:00:00:0g\" # <-\n".into(), &["\"0g\" is not a two-digit hex byte"]),
            ("[control]\nlisten = \"localhost:9180\" # <-\n".into(), &["invalid control address", "unix:PATH"]),
        ];
        for (case, needles) in cases {
            assert_error(&with_base(&case), needles);
        }
    }

    #[test]
    fn whole_file_rules_point_at_the_offending_entry() {
        let vip = |addr: &str, encap: &str| {
            format!("[[vip]]\naddress = \"{addr}\"\nprotocol = \"tcp\"\nencap = \"{encap}\"\n")
        };
        let web = vip("192.0.2.10:80", "ipip");
        let cases: Vec<(String, &[&str])> = vec![
            (
                format!("{web}[[vip]]\naddress = \"192.0.2.10:80/tcp\" # <-\nencap = \"gue\"\n"),
                &["vip 192.0.2.10:80/tcp is defined twice (also vip[0]); merge the two [[vip]] tables"],
            ),
            (
                format!("{web}[[vip.backend]]\naddress = \"198.51.100.1\"\n[[vip.backend]]\naddress = \"198.51.100.2\"\n[[vip.backend]]\naddress = \"198.51.100.1\" # <-\n"),
                &["backend 198.51.100.1 is listed twice in vip 192.0.2.10:80/tcp (also backend[0]); remove one"],
            ),
            (
                format!("{web}[[vip.backend]]\naddress = \"2001:db8::7\" # <-\n"),
                &["backend 2001:db8::7 is IPv6 but no [[port]] has an IPv6 address", "add address6 = \"2001:db8::2\" to a port"],
            ),
            (
                format!("{web}[[vip.backend]]\naddress = \"198.51.100.1:8080\" # <-\n"),
                &["does not rewrite ports", "write the backend as 198.51.100.1"],
            ),
            (
                format!("{web}[[vip.backend]]\naddress = \"198.51.100.1\"\nmac = \"02:00:00:00:00:07\" # <-\n"),
                &["mac is only used with encap = \"l2dsr\"", "remove it"],
            ),
            (
                format!("{}[[vip.backend]]\naddress = \"2001:db8::7\" # <-\n", vip("192.0.2.10:80", "l2dsr")),
                &["not of vip 192.0.2.10:80/tcp's address family", "L2 DSR"],
            ),
            (
                format!("{}[[vip.backend]]\naddress = \"198.51.100.1\"\nmac = \"01:00:5e:00:00:01\" # <-\n", vip("192.0.2.10:80", "l2dsr")),
                &["is not a unicast MAC address"],
            ),
            (
                format!("{}[vip.healthcheck] # <-\nkind = \"tcp\"\n[[vip.backend]]\naddress = \"198.51.100.1\"\n", vip("192.0.2.10:0", "ipip")),
                &["serves all ports and backend 198.51.100.1 has no port", "add port = 80"],
            ),
            (
                format!("{web}[vip.healthcheck]\nkind = \"http\"\ninterval_ms = 100\ntimeout_ms = 200 # <-\n"),
                &["timeout_ms = 200 is longer than interval_ms = 100"],
            ),
            (
                format!("{web}[vip.healthcheck]\nkind = \"http\"\npath = \"healthz\" # <-\n"),
                &["starts with '/'"],
            ),
            (
                format!("{web}table_size = 7\n[[vip.backend]]\naddress = \"198.51.100.1\"\n[[vip.backend]]\naddress = \"198.51.100.2\"\n[[vip.backend]]\naddress = \"198.51.100.3\"\n[[vip.backend]]\naddress = \"198.51.100.4\"\n[[vip.backend]]\naddress = \"198.51.100.5\"\n[[vip.backend]]\naddress = \"198.51.100.6\"\n[[vip.backend]]\naddress = \"198.51.100.7\"\n")
                    .replace("table_size = 7", "table_size = 7 # <-"),
                &["table_size = 7 is too small for 7 backends"],
            ),
            (
                "[dataplane]\nworkers = 2\nlcores = [1] # <-\n".into(),
                &["lcores lists 1 lcores but workers = 2"],
            ),
            (
                "[dataplane]\nlcores = [1, 1] # <-\n".into(),
                &["lcore 1 is listed twice"],
            ),
            (
                "[[port]]\ndevice = \"net_tap0\"\naddress = \"203.0.113.2\"\nrx_desc = 1000 # <-\n".into(),
                &["rx_desc = 1000 is not a power of two", "try 1024"],
            ),
            (
                "[[port]]\ndevice = \"net_tap0\"\naddress = \"203.0.113.2\"\naddress6 = \"2001:db8::2\"\nmtu = 1000 # <-\n".into(),
                &["below IPv6's minimum of 1280", "port[0] has address6", "raise mtu to 1280"],
            ),
            (
                format!("[[port]]\ndevice = \"net_tap0\"\naddress = \"203.0.113.2\"\nmtu = 1200 # <-\n{}", vip("[2001:db8::10]:80", "l2dsr")),
                &["below IPv6's minimum of 1280", "vip [2001:db8::10]:80/tcp"],
            ),
            (
                "[[port]] # <-\ndevice = \"net_tap0\"\n".into(),
                &["has no own address; set address = \"203.0.113.2\""],
            ),
            (
                "[[port]]\ndevice = \"net_tap0\"\naddress = \"0.0.0.0\" # <-\n".into(),
                &["address 0.0.0.0 is the unspecified address"],
            ),
            (
                "[[port]]\ndevice = \"net_tap0,iface=a\"\naddress = \"203.0.113.2\"\n[[port]]\ndevice = \"net_tap0,iface=b\" # <-\naddress = \"203.0.113.3\"\n".into(),
                &["device net_tap0 is already port[0]"],
            ),
            (
                "[[port]]\ndevice = \"net_tap0\"\naddress = \"203.0.113.2\"\nexception_tap = \"fulcrum-exception0\" # <-\n".into(),
                &["1 to 15 characters"],
            ),
            (
                "[[port]]\ndevice = \"net_tap0\"\naddress = \"203.0.113.2\"\nexception_tap = \"fulcrum-exc1\"\n[[port]] # <-\ndevice = \"net_tap1\"\naddress = \"203.0.113.3\"\n".into(),
                &["exception TAP fulcrum-exc1 is also port[0]'s"],
            ),
            (
                "[control]\ntoken = \"two words\" # <-\n".into(),
                &["token must be non-empty printable ASCII without spaces"],
            ),
            (
                "[control]\nmax_connections = 0 # <-\n".into(),
                &["max_connections = 0 is out of range; use 1 to 1000000 connections"],
            ),
            (
                "[control]\nheader_timeout_ms = 10 # <-\n".into(),
                &["header_timeout_ms = 10 is out of range; use 100 to 300000 milliseconds"],
            ),
            (
                "[control]\nbody_timeout_ms = 600001 # <-\n".into(),
                &["body_timeout_ms = 600001 is out of range; use 100 to 600000 milliseconds"],
            ),
            (
                "[control]\nidle_timeout_ms = -1 # <-\n".into(),
                &["idle_timeout_ms = -1 is out of range; use 100 to 3600000 milliseconds"],
            ),
            (
                "[control]\nwrite_timeout_ms = 0 # <-\n".into(),
                &["write_timeout_ms = 0 is out of range; use 100 to 600000 milliseconds"],
            ),
        ];
        for (case, needles) in cases {
            assert_error(&with_base(&case), needles);
        }
    }

    #[test]
    fn a_file_without_ports_is_refused_at_its_start() {
        assert_error_at(
            "[dataplane]\nworkers = 1\n",
            1,
            &["no [[port]] table; add one"],
        );
        assert_error_at("", 1, &["no [[port]] table"]);
    }

    #[test]
    fn check_reports_the_locus_for_configurations_built_in_code() {
        let mut config = parse(Config::example());
        assert_eq!(config.check(), Ok(()));
        let backend = config.vips[0].backends[0].clone();
        config.vips[0].backends.push(backend);
        let problem = config.check().unwrap_err();
        assert_eq!(problem.locus, Locus::Backend(0, 1, "address"));
        assert!(
            problem
                .to_string()
                .starts_with("vip[0].backend[1].address: backend 198.51.100.11 is listed twice"),
            "{problem}"
        );

        let mut config = parse(Config::example());
        config.vips[0].backends[0].weight = MAX_WEIGHT + 1;
        let problem = config.check().unwrap_err();
        assert_eq!(problem.locus, Locus::Backend(0, 0, "weight"));

        let mut config = parse(Config::example());
        config.vips[0].key.addr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert_eq!(config.check().unwrap_err().locus, Locus::Vip(0, "address"));
    }

    #[test]
    fn load_names_the_file_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fulcrum.toml");
        std::fs::write(&path, format!("{BASE}[dataplane]\nworkers = 0\n")).unwrap();
        let message = load(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}:5:", path.display())),
            "{message}"
        );
        std::fs::write(&path, Config::example()).unwrap();
        assert_eq!(load(&path).unwrap(), parse(Config::example()));
        let missing = dir.path().join("missing.toml");
        let message = load(&missing).unwrap_err().to_string();
        assert!(
            message.contains("cannot read the configuration file"),
            "{message}"
        );
    }

    #[test]
    fn columns_count_characters() {
        let text = "a = \"é\"\nb = 1\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, text.find('b').unwrap()), (2, 1));
        assert_eq!(line_column(text, text.find("\"\n").unwrap()), (1, 7));
        assert_eq!(line_column(text, 10_000), (3, 1));
    }

    #[test]
    fn primes_and_pci_names() {
        assert!(is_prime(65537) && is_prime(7) && is_prime(251));
        assert!(!is_prime(65536) && !is_prime(1) && !is_prime(65535));
        assert_eq!(next_prime(65536), 65537);
        assert_eq!(next_prime(100), 101);
        assert!(is_pci_address("0000:03:00.0"));
        assert!(is_pci_address("03:00.1"));
        assert!(!is_pci_address("net_tap0"));
        assert!(!is_pci_address("net_pcap0"));
        let port = |device: &str| Port {
            device: device.into(),
            ..parse(BASE).ports[0].clone()
        };
        assert!(port("0000:81:00.1,rxq_cqe_comp_en=0").is_pci());
        assert!(!port("net_pcap0,rx_pcap=/tmp/a:00.0").is_pci());
    }

    #[test]
    fn every_toml_example_in_the_operations_guide_parses() {
        let doc = include_str!("../docs/operations.md");
        let mut examples = 0;
        for block in doc.split("```toml\n").skip(1) {
            let text = block.split("```").next().unwrap_or_default();
            parse(text);
            examples += 1;
        }
        assert!(examples >= 2, "found {examples} TOML examples");
    }

    #[test]
    fn the_documented_example_is_this_one() {
        let doc = include_str!("../docs/operations.md");
        assert!(
            doc.contains(Config::example()),
            "docs/operations.md must show Config::example() verbatim"
        );
    }
}
