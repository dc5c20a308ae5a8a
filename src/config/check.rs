//! The rules that span keys and tables ([`Config::check`]) and the name checks they use:
//! interface names, PCI addresses, prime table sizes.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use super::limits::*;
use super::model::*;
use crate::addr::unicast_problem;
use crate::datapath::encap::EncapMode;
use crate::maglev::{is_prime, next_prime, DEFAULT_TABLE_SIZE};

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

impl Config {
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
        let max_ports = crate::datapath::stats::MAX_PORTS / per_port;
        if self.ports.len() > max_ports {
            return Err(Problem {
                locus: Locus::Port(max_ports, "device"),
                message: format!(
                    "{} [[port]] tables are more than DPDK can drive: it has {} ports and each [[port]] takes {per_port}{}; use at most {max_ports}",
                    self.ports.len(),
                    crate::datapath::stats::MAX_PORTS,
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
                        next_prime(vip.table_size).unwrap_or(DEFAULT_TABLE_SIZE)
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
            if let (EncapMode::Gue, Some(port)) = (vip.encap, vip.gue_port) {
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
                    EncapMode::L2Dsr => {
                        if addr.addr.is_ipv4() != key.addr.is_ipv4() {
                            return Err(problem(
                                "address",
                                format!("backend {addr} is not of vip {key}'s address family; L2 DSR forwards the client's packet unchanged, so use a backend of the same family or encap = \"ipip\""),
                            ));
                        }
                    }
                    EncapMode::Ipip | EncapMode::Gue => {
                        if backend.mac.is_some() {
                            return Err(problem(
                                "mac",
                                format!("mac is only used with encap = \"l2dsr\" (vip {key} uses {:?}); remove it", vip.encap.as_str()),
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
            if token.as_str().is_empty() || !token.as_str().bytes().all(|b| b.is_ascii_graphic()) {
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
pub(super) fn device_name(device: &str) -> &str {
    device.split(',').next().unwrap_or(device)
}

/// `DDDD:BB:DD.F` or `BB:DD.F` in hex.
pub(super) fn is_pci_address(name: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use std::net::Ipv4Addr;

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
    fn primes_and_pci_names() {
        assert!(is_prime(65537) && is_prime(7) && is_prime(251));
        assert!(!is_prime(65536) && !is_prime(1) && !is_prime(65535));
        assert_eq!(next_prime(65536), Some(65537));
        assert_eq!(next_prime(100), Some(101));
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
}
