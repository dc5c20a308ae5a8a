//! The TOML layer: the file as written (every value with its span) and its conversion into
//! the typed [`Config`](super::Config), and back (the file form `Config` serializes to).

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::PathBuf;

use serde::Serialize;

use super::check::Locus;
use super::limits::*;
use super::model::*;
use crate::addr::{Protocol, VipKey};
use crate::datapath::encap::{EncapMode, GUE_DEFAULT_PORT};
use crate::maglev::DEFAULT_TABLE_SIZE;

/// `[[vip]]` as written: `address = "ADDR:PORT"`, `protocol`, `encap` and `gue_port` apart.
#[derive(Serialize)]
struct VipToml<'a> {
    address: String,
    protocol: Protocol,
    encap: EncapMode,
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
            encap: self.encap,
            gue_port: self.gue_port.filter(|_| self.encap == EncapMode::Gue),
            table_size: self.table_size,
            healthcheck,
            backend: &self.backends,
        }
        .serialize(serializer)
    }
}

pub(super) use file::File;

/// The file as written, every value with its span, before any conversion.
mod file {
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
pub(super) struct Located {
    pub(super) span: Range<usize>,
    pub(super) message: String,
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

impl file::File {
    pub(super) fn to_config(&self) -> Result<Config, Located> {
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
    pub(super) fn locate(&self, locus: Locus) -> Range<usize> {
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

impl file::Dataplane {
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

impl file::Port {
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

impl file::Vip {
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
        let field = self.encap.as_ref().ok_or_else(|| {
            at(
                table,
                format!("vip {key} has no encap; add encap = \"ipip\", \"gue\" or \"l2dsr\""),
            )
        })?;
        let encap: EncapMode = field.get_ref().parse().map_err(|_| {
            at(
                field,
                format!(
                    "unknown encap {:?}; use \"ipip\", \"gue\" or \"l2dsr\"",
                    field.get_ref()
                ),
            )
        })?;
        let gue_port = match encap {
            EncapMode::Gue => Some(number(&self.gue_port, &GUE_PORT, GUE_DEFAULT_PORT)?),
            EncapMode::Ipip | EncapMode::L2Dsr => None,
        };
        if let (Some(field), false) = (&self.gue_port, encap == EncapMode::Gue) {
            return Err(at(field, format!("gue_port is only used with encap = \"gue\" (vip {key} uses {:?}); remove gue_port or set encap = \"gue\"", encap.as_str())));
        }
        Ok(Vip {
            key,
            encap,
            gue_port,
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

impl file::HealthCheck {
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
                    ("path", file::span(&self.path)),
                    ("expect_status", file::span(&self.expect_status)),
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
                    .map_or_else(|| DEFAULT_CHECK_PATH.to_owned(), |p| p.get_ref().clone()),
                expect_status: number(&self.expect_status, &EXPECT_STATUS, DEFAULT_EXPECT_STATUS)?,
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
            interval_ms: number(&self.interval_ms, &INTERVAL, DEFAULT_CHECK_INTERVAL_MS)?,
            timeout_ms: number(&self.timeout_ms, &TIMEOUT, DEFAULT_CHECK_TIMEOUT_MS)?,
            rise: number(&self.rise, &RISE, DEFAULT_CHECK_RISE)?,
            fall: number(&self.fall, &FALL, DEFAULT_CHECK_FALL)?,
        })
    }
}

impl file::Backend {
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

impl file::Control {
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use crate::datapath::encap::EncapMode;

    #[test]
    fn gue_port_defaults_to_6080() {
        let config = parse(&format!(
            "{BASE}[[vip]]\naddress = \"192.0.2.10:80\"\nprotocol = \"udp\"\nencap = \"gue\"\n"
        ));
        let vip = &config.vips[0];
        assert_eq!((vip.encap, vip.gue_port), (EncapMode::Gue, Some(6080)));
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
}
