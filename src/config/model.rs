//! The validated configuration as plain values: one type per table of the file.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use serde::Serialize;

use super::check::{device_name, is_pci_address};
use super::limits::*;
use crate::addr::{BackendAddr, ControlAddr, MacAddr, VipKey};
use crate::datapath::encap::EncapMode;

/// Environment variable that, when set and not empty, replaces `control.token`.
pub const TOKEN_ENV: &str = "FULCRUM_TOKEN";

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
    pub encap: EncapMode,
    /// The UDP destination port of GUE packets: `Some` exactly when `encap` is `gue`.
    pub gue_port: Option<u16>,
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

/// A backend's weight: its share of a VIP's new flows relative to the other backends, 0 to
/// [`MAX_WEIGHT`]; 0 drains it (no new flows, existing connections stay). The file's value
/// (a TOML integer) and the API's are range-checked into it.
pub type Weight = u16;

/// `[[vip.backend]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub address: BackendAddr,
    pub weight: Weight,
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

impl Config {
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
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

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
}
