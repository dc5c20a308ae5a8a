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
//!
//! The parts:
//!
//! - `model`: the typed configuration, one type per table ([`Config`], [`Vip`], [`Backend`]...).
//! - `limits`: each number's range and the defaults of keys a file may leave out.
//! - `raw`: the TOML layer: the file with its spans, its conversion into the model, and the
//!   file form the model serializes to.
//! - `check`: the whole-configuration rules ([`Config::check`]) and where a problem is
//!   ([`Locus`]).

use std::ops::Range;
use std::path::Path;

mod check;
#[cfg(test)]
mod fixtures;
mod limits;
mod model;
mod raw;

pub use check::{Locus, Problem};
pub use limits::{
    DEFAULT_BODY_TIMEOUT_MS, DEFAULT_CHECK_FALL, DEFAULT_CHECK_INTERVAL_MS, DEFAULT_CHECK_PATH,
    DEFAULT_CHECK_RISE, DEFAULT_CHECK_TIMEOUT_MS, DEFAULT_EXPECT_STATUS, DEFAULT_HEADER_TIMEOUT_MS,
    DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS, DEFAULT_WRITE_TIMEOUT_MS,
    MAX_BURST, MAX_LCORE, MAX_WEIGHT,
};
pub use model::{
    Backend, Config, Control, Dataplane, HealthCheck, HealthCheckKind, Port, Token, Vip, Weight,
    TOKEN_ENV,
};

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
    use super::fixtures::*;
    use super::*;
    use crate::addr::{ControlAddr, MacAddr};
    use crate::datapath::encap::EncapMode;
    use crate::maglev::DEFAULT_TABLE_SIZE;
    use std::net::Ipv4Addr;

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
        assert_eq!((vip.encap, vip.gue_port), (EncapMode::Ipip, None));
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
        assert_eq!((gue.encap, gue.gue_port), (EncapMode::Gue, Some(7000)));
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
        assert_eq!((dsr.encap, dsr.gue_port), (EncapMode::L2Dsr, None));
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
    fn every_toml_example_in_the_operations_guide_parses() {
        let doc = include_str!("../../docs/operations.md");
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
        let doc = include_str!("../../docs/operations.md");
        assert!(
            doc.contains(Config::example()),
            "docs/operations.md must show Config::example() verbatim"
        );
    }
}
