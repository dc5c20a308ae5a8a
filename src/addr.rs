//! Address syntax shared by the configuration file, the control API and the CLI.
//!
//! - [`VipKey`]: `ADDR:PORT/PROTO` — `192.0.2.10:80/tcp`, `[2001:db8::10]:443/udp`
//! - [`BackendAddr`]: `ADDR` or `ADDR:PORT` — `198.51.100.7`, `2001:db8::7`,
//!   `[2001:db8::7]:8080`
//! - [`MacAddr`]: six hex bytes — `02:00:00:00:00:01`
//! - [`ControlAddr`]: `HOST:PORT` or `unix:PATH` — `127.0.0.1:9180`, `unix:/run/fulcrum.sock`
//!
//! Every type parses with `FromStr`, prints its canonical form with `Display` and
//! (de)serializes as that string, so scripts, the API and the configuration file all speak
//! the same syntax. IPv6 addresses print in the RFC 5952 form (lowercase, shortest, `::` for
//! the longest run of zero groups).
//!
//! VIPs and backends must be addresses a packet can really be sent to: the unspecified,
//! loopback, multicast and broadcast addresses are refused, and so are IPv4-mapped IPv6
//! addresses (`::ffff:192.0.2.1`), which would give one host two spellings.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

const VIP_FORM: &str = "ADDR:PORT/PROTO, e.g. 192.0.2.10:80/tcp or [2001:db8::10]:443/tcp";
const VIP_ADDR_PORT_FORM: &str = "ADDR:PORT, e.g. 192.0.2.10:80 or [2001:db8::10]:443";
const BACKEND_FORM: &str =
    "ADDR or ADDR:PORT, e.g. 198.51.100.7, 2001:db8::7 or [2001:db8::7]:8080";
const MAC_FORM: &str = "six hex bytes separated by colons, e.g. 02:00:00:00:00:01";
const PROTOCOL_FORM: &str = "tcp or udp";
const CONTROL_FORM: &str = "HOST:PORT or unix:PATH, e.g. 127.0.0.1:9180 or unix:/run/fulcrum.sock";

/// Longest input an error message repeats; longer junk is cut so a hostile API request cannot
/// make the error (and the log line) arbitrarily large.
const MAX_ECHO: usize = 80;

/// Why a string is not a valid address of some kind: `invalid VIP "192.0.2.10:80": missing
/// protocol (expected ADDR:PORT/PROTO, e.g. 192.0.2.10:80/tcp or [2001:db8::10]:443/tcp)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input}: {problem} (expected {expected})")]
pub struct AddrError {
    what: &'static str,
    input: String,
    problem: String,
    expected: &'static str,
}

impl AddrError {
    fn new(
        what: &'static str,
        input: &str,
        problem: impl Into<String>,
        expected: &'static str,
    ) -> Self {
        let input = Quoted(input).to_string();
        Self {
            what,
            input,
            problem: problem.into(),
            expected,
        }
    }

    /// What is wrong, without the input and the expected form: `missing protocol`.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

/// Input repeated in an error: quoted, escaped, and cut after [`MAX_ECHO`] characters.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (shown, cut) = match self.0.char_indices().nth(MAX_ECHO) {
            Some((end, _)) => (&self.0[..end], true),
            None => (self.0, false),
        };
        write!(
            f,
            "\"{}{}\"",
            shown.escape_debug(),
            if cut { "..." } else { "" }
        )
    }
}

/// Why `addr` cannot be a VIP, a backend or an outer source address, if it cannot.
pub fn unicast_problem(addr: IpAddr) -> Option<String> {
    if addr.is_unspecified() {
        return Some(format!("{addr} is the unspecified address"));
    }
    if addr.is_loopback() {
        return Some(format!("{addr} is a loopback address"));
    }
    if addr.is_multicast() {
        return Some(format!("{addr} is a multicast address"));
    }
    match addr {
        IpAddr::V4(v4) if v4.is_broadcast() => Some(format!("{v4} is the broadcast address")),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| format!("{addr} is an IPv4-mapped IPv6 address; write it as {v4}")),
        IpAddr::V4(_) => None,
    }
}

/// The transport protocol of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number (6 or 17).
    pub fn number(&self) -> u8 {
        match self {
            Protocol::Tcp => crate::datapath::flow::proto::TCP,
            Protocol::Udp => crate::datapath::flow::proto::UDP,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl FromStr for Protocol {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("tcp") {
            Ok(Protocol::Tcp)
        } else if s.eq_ignore_ascii_case("udp") {
            Ok(Protocol::Udp)
        } else {
            Err(AddrError::new(
                "protocol",
                s,
                "unknown protocol",
                PROTOCOL_FORM,
            ))
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A virtual service: the address, port and protocol clients connect to.
/// Port 0 means every port of the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

impl VipKey {
    /// Parses the configuration file's split form: `address = "ADDR:PORT"` plus a separate
    /// `protocol`.
    pub fn from_addr_port(text: &str, protocol: Protocol) -> Result<Self, AddrError> {
        let error =
            |problem: String| AddrError::new("VIP address", text, problem, VIP_ADDR_PORT_FORM);
        let (addr, port) = parse_vip_host_port(text).map_err(error)?;
        Ok(Self {
            addr,
            port,
            protocol,
        })
    }

    /// Whether the VIP serves every port of its address.
    pub fn all_ports(&self) -> bool {
        self.port == 0
    }

    /// `ADDR:PORT` without the protocol, as the configuration file writes it.
    pub fn addr_port(&self) -> String {
        HostPort(self.addr, Some(self.port)).to_string()
    }
}

impl FromStr for VipKey {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |problem: String| AddrError::new("VIP", s, problem, VIP_FORM);
        let Some((host_port, protocol)) = s.rsplit_once('/') else {
            return Err(error("missing protocol".into()));
        };
        let protocol = protocol
            .parse::<Protocol>()
            .map_err(|_| error(format!("unknown protocol {}", Quoted(protocol))))?;
        let (addr, port) = parse_vip_host_port(host_port).map_err(error)?;
        Ok(Self {
            addr,
            port,
            protocol,
        })
    }
}

impl fmt::Display for VipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            HostPort(self.addr, Some(self.port)),
            self.protocol
        )
    }
}

/// Address and port of a VIP, with the port required (0 = all ports).
fn parse_vip_host_port(text: &str) -> Result<(IpAddr, u16), String> {
    let (addr, port) = split_host_port(text)?;
    let Some(port) = port else {
        return Err(match addr {
            IpAddr::V6(_) if !text.starts_with('[') => {
                "missing port; put IPv6 addresses in brackets before the port, e.g. [2001:db8::10]:443 (port 0 = all ports)".into()
            }
            _ => "missing port (use port 0 for all ports)".into(),
        });
    };
    let port = parse_port(port)?;
    if let Some(problem) = unicast_problem(addr) {
        return Err(problem);
    }
    Ok((addr, port))
}

/// A backend (a "real"): the host fulcrum encapsulates a VIP's packets to.
///
/// The port is optional and usually absent: encapsulation keeps the client's destination
/// port, so the port only tells backends on one host apart and is the default health-check
/// port.
///
/// The canonical string (`Display`) is the backend's Maglev key. Every fulcrum instance must
/// produce the same string for the same backend or instances would disagree on where a flow
/// goes, so it is fixed: IPv4 dotted quad, IPv6 in RFC 5952 form, brackets only when a port
/// follows (`198.51.100.7`, `198.51.100.7:8080`, `2001:db8::7`, `[2001:db8::7]:8080`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    pub addr: IpAddr,
    pub port: Option<u16>,
}

impl BackendAddr {
    /// A backend without a port.
    pub fn new(addr: IpAddr) -> Self {
        Self { addr, port: None }
    }
}

impl FromStr for BackendAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |problem: String| AddrError::new("backend", s, problem, BACKEND_FORM);
        let (addr, port) = split_host_port(s).map_err(error)?;
        let port = match port {
            None => None,
            Some(text) => match parse_port(text).map_err(error)? {
                0 => {
                    return Err(error(
                        "port 0 is not a backend port; leave the port out".into(),
                    ))
                }
                port => Some(port),
            },
        };
        if let Some(problem) = unicast_problem(addr) {
            return Err(error(problem));
        }
        Ok(Self { addr, port })
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        HostPort(self.addr, self.port).fmt(f)
    }
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Whether frames to this address reach one station (the group bit is clear) and it is
    /// not all zeros.
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl FromStr for MacAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |problem: String| AddrError::new("MAC address", s, problem, MAC_FORM);
        let mut octets = [0u8; 6];
        let mut count = 0;
        for part in s.split(':') {
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(error(format!(
                    "{} is not a two-digit hex byte",
                    Quoted(part)
                )));
            }
            if let Some(slot) = octets.get_mut(count) {
                *slot = u8::from_str_radix(part, 16).map_err(|e| error(e.to_string()))?;
            }
            count += 1;
        }
        if count != octets.len() {
            return Err(error(format!("{count} bytes instead of 6")));
        }
        Ok(MacAddr(octets))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Where the control API (and `/metrics`) listens and the CLI connects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ControlAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ControlAddr {
    /// Whether only this host can reach the listener.
    pub fn is_local(&self) -> bool {
        match self {
            ControlAddr::Tcp(addr) => addr.ip().is_loopback(),
            ControlAddr::Unix(_) => true,
        }
    }
}

impl FromStr for ControlAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |problem: &str| AddrError::new("control address", s, problem, CONTROL_FORM);
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(error("missing socket path after unix:"));
            }
            return Ok(ControlAddr::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(ControlAddr::Tcp)
            .map_err(|_| error("not an IP address and port (IPv6 goes in brackets: [::1]:9180)"))
    }
}

impl fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlAddr::Tcp(addr) => HostPort(addr.ip(), Some(addr.port())).fmt(f),
            ControlAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Splits `ADDR`, `[V6]`, `V4:PORT` or `[V6]:PORT`; the port text is returned unparsed so the
/// callers can decide whether one is required.
fn split_host_port(text: &str) -> Result<(IpAddr, Option<&str>), String> {
    if text.is_empty() {
        return Err("empty address".into());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err("missing ']' after the IPv6 address".into());
        };
        let addr = match inside.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => v6,
            Ok(IpAddr::V4(_)) => return Err("brackets are only for IPv6 addresses".into()),
            Err(_) => return Err(format!("{} is not an IPv6 address", Quoted(inside))),
        };
        return match after {
            "" => Ok((IpAddr::V6(addr), None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((IpAddr::V6(addr), Some(port))),
                None => Err(format!("unexpected {} after ']'", Quoted(after))),
            },
        };
    }
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok((addr, None));
    }
    match text.split_once(':') {
        Some((host, port)) if !port.contains(':') => match host.parse::<Ipv4Addr>() {
            Ok(v4) => Ok((IpAddr::V4(v4), Some(port))),
            Err(_) => Err(format!(
                "{} is not an IPv4 address (names are not resolved)",
                Quoted(host)
            )),
        },
        Some(_) => Err(
            "not an IP address (an IPv6 address with a port goes in brackets: [2001:db8::10]:443)"
                .into(),
        ),
        None => Err(format!(
            "{} is not an IP address (names are not resolved)",
            Quoted(text)
        )),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() {
        return Err("missing port number after ':'".into());
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {} is not a number", Quoted(text)));
    }
    text.parse::<u16>()
        .map_err(|_| format!("port {text} is out of range (0-65535)"))
}

/// `ADDR`, `ADDR:PORT` or `[V6]:PORT`, with IPv6 in RFC 5952 form.
struct HostPort(IpAddr, Option<u16>);

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (IpAddr::V4(v4), None) => write!(f, "{v4}"),
            (IpAddr::V4(v4), Some(port)) => write!(f, "{v4}:{port}"),
            (IpAddr::V6(v6), None) => write_ipv6(f, v6),
            (IpAddr::V6(v6), Some(port)) => {
                f.write_str("[")?;
                write_ipv6(f, v6)?;
                write!(f, "]:{port}")
            }
        }
    }
}

/// RFC 5952 text form. Written out rather than taken from `Ipv6Addr`'s `Display` because it
/// is part of the backend Maglev key, which must stay identical across releases; std's
/// formatting carries no such promise (and special-cases some IPv4-embedding addresses).
fn write_ipv6(f: &mut fmt::Formatter<'_>, addr: Ipv6Addr) -> fmt::Result {
    let groups = addr.segments();
    // The longest run of two or more zero groups, the first one on a tie.
    let mut best: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < groups.len() {
        if groups[i] != 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i < groups.len() && groups[i] == 0 {
            i += 1;
        }
        let len = i - start;
        if len >= 2 && best.is_none_or(|(_, best_len)| len > best_len) {
            best = Some((start, len));
        }
    }
    match best {
        None => write_groups(f, &groups),
        Some((start, len)) => {
            write_groups(f, &groups[..start])?;
            f.write_str("::")?;
            write_groups(f, &groups[start + len..])
        }
    }
}

fn write_groups(f: &mut fmt::Formatter<'_>, groups: &[u16]) -> fmt::Result {
    for (n, group) in groups.iter().enumerate() {
        if n > 0 {
            f.write_str(":")?;
        }
        write!(f, "{group:x}")?;
    }
    Ok(())
}

/// (De)serializes a type as its canonical string, parsing with `FromStr` so the
/// configuration file reports the same messages as the API and the CLI.
macro_rules! serde_as_string {
    ($($ty:ty),*) => {$(
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_as_string!(Protocol, VipKey, BackendAddr, MacAddr, ControlAddr);

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(s: &str) -> VipKey {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn vip_err(s: &str) -> String {
        match s.parse::<VipKey>() {
            Ok(v) => panic!("{s} parsed as {v}"),
            Err(e) => e.to_string(),
        }
    }

    fn backend(s: &str) -> BackendAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn backend_err(s: &str) -> String {
        match s.parse::<BackendAddr>() {
            Ok(b) => panic!("{s} parsed as {b}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn protocol_names_and_numbers() {
        assert_eq!("tcp".parse::<Protocol>().unwrap(), Protocol::Tcp);
        assert_eq!("UDP".parse::<Protocol>().unwrap(), Protocol::Udp);
        assert_eq!(Protocol::Tcp.number(), 6);
        assert_eq!(Protocol::Udp.number(), 17);
        assert_eq!(Protocol::Udp.to_string(), "udp");
        assert_eq!(
            "sctp".parse::<Protocol>().unwrap_err().to_string(),
            r#"invalid protocol "sctp": unknown protocol (expected tcp or udp)"#
        );
    }

    #[test]
    fn vip_forms_parse_and_print_canonically() {
        let v4 = vip("192.0.2.10:80/tcp");
        assert_eq!(v4.addr, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)));
        assert_eq!((v4.port, v4.protocol), (80, Protocol::Tcp));
        assert_eq!(v4.to_string(), "192.0.2.10:80/tcp");
        assert_eq!(v4.addr_port(), "192.0.2.10:80");

        let v6 = vip("[2001:db8::10]:443/tcp");
        assert_eq!(v6.addr, "2001:db8::10".parse::<IpAddr>().unwrap());
        assert_eq!(v6.to_string(), "[2001:db8::10]:443/tcp");
        assert_eq!(v6.addr_port(), "[2001:db8::10]:443");

        let all = vip("192.0.2.10:0/udp");
        assert!(all.all_ports());
        assert_eq!(all.protocol, Protocol::Udp);
        assert_eq!(all.to_string(), "192.0.2.10:0/udp");

        assert_eq!(
            vip("[2001:DB8:0::10]:443/TCP").to_string(),
            "[2001:db8::10]:443/tcp"
        );
        assert_eq!(vip("[2001:DB8:0::10]:443/TCP"), v6);
        assert_eq!(vip("192.0.2.10:65535/tcp").port, 65535);
    }

    #[test]
    fn vip_config_form_takes_the_protocol_separately() {
        assert_eq!(
            VipKey::from_addr_port("[2001:db8::10]:443", Protocol::Udp).unwrap(),
            vip("[2001:db8::10]:443/udp")
        );
        assert_eq!(
            VipKey::from_addr_port("192.0.2.10", Protocol::Tcp)
                .unwrap_err()
                .to_string(),
            r#"invalid VIP address "192.0.2.10": missing port (use port 0 for all ports) (expected ADDR:PORT, e.g. 192.0.2.10:80 or [2001:db8::10]:443)"#
        );
    }

    #[test]
    fn vip_errors_say_what_is_wrong_and_show_the_form() {
        assert_eq!(
            vip_err("192.0.2.10:80"),
            r#"invalid VIP "192.0.2.10:80": missing protocol (expected ADDR:PORT/PROTO, e.g. 192.0.2.10:80/tcp or [2001:db8::10]:443/tcp)"#
        );
        let cases = [
            ("192.0.2.10/tcp", "missing port (use port 0 for all ports)"),
            ("2001:db8::10/tcp", "put IPv6 addresses in brackets"),
            ("2001:db8::10:443/tcp", "put IPv6 addresses in brackets"),
            (
                "192.0.2.10:70000/tcp",
                "port 70000 is out of range (0-65535)",
            ),
            ("192.0.2.10:http/tcp", r#"port "http" is not a number"#),
            ("192.0.2.10:/tcp", "missing port number after ':'"),
            ("192.0.2.10:+80/tcp", r#"port "+80" is not a number"#),
            ("192.0.2.10:80/sctp", r#"unknown protocol "sctp""#),
            (
                "lb.example:80/tcp",
                r#""lb.example" is not an IPv4 address"#,
            ),
            (
                "192.0.2.300:80/tcp",
                r#""192.0.2.300" is not an IPv4 address"#,
            ),
            (
                "[192.0.2.10]:80/tcp",
                "brackets are only for IPv6 addresses",
            ),
            ("[2001:db8::10:443/tcp", "missing ']'"),
            ("[2001:db8::10]443/tcp", r#"unexpected "443" after ']'"#),
            ("/tcp", "empty address"),
            ("0.0.0.0:80/tcp", "0.0.0.0 is the unspecified address"),
            ("[::]:80/tcp", ":: is the unspecified address"),
            ("127.0.0.1:80/tcp", "127.0.0.1 is a loopback address"),
            ("224.0.0.1:80/udp", "224.0.0.1 is a multicast address"),
            ("[ff02::1]:80/udp", "ff02::1 is a multicast address"),
            (
                "255.255.255.255:80/udp",
                "255.255.255.255 is the broadcast address",
            ),
            (
                "[::ffff:192.0.2.10]:80/tcp",
                "IPv4-mapped IPv6 address; write it as 192.0.2.10",
            ),
        ];
        for (input, problem) in cases {
            let message = vip_err(input);
            assert!(message.contains(problem), "{input}: {message}");
            assert!(message.contains("(expected ADDR:PORT/PROTO"), "{message}");
        }
    }

    #[test]
    fn backend_forms_parse_and_print_their_maglev_key() {
        let cases = [
            ("198.51.100.7", "198.51.100.7", None),
            ("2001:db8::7", "2001:db8::7", None),
            ("[2001:db8::7]", "2001:db8::7", None),
            ("198.51.100.7:8080", "198.51.100.7:8080", Some(8080)),
            ("[2001:db8::7]:8080", "[2001:db8::7]:8080", Some(8080)),
            ("2001:DB8:0:0::7", "2001:db8::7", None),
            (
                "[2001:0DB8::0007]:65535",
                "[2001:db8::7]:65535",
                Some(65535),
            ),
        ];
        for (input, canonical, port) in cases {
            let b = backend(input);
            assert_eq!(b.to_string(), canonical, "{input}");
            assert_eq!(b.port, port, "{input}");
            assert_eq!(backend(canonical), b, "{canonical} does not round-trip");
        }
        assert_eq!(
            BackendAddr::new("198.51.100.7".parse().unwrap()),
            backend("198.51.100.7")
        );
    }

    #[test]
    fn backend_errors_say_what_is_wrong_and_show_the_form() {
        let cases = [
            ("198.51.100.7:0", "port 0 is not a backend port"),
            ("198.51.100.7:65536", "port 65536 is out of range (0-65535)"),
            ("[2001:db8::7]:99999", "port 99999 is out of range"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("239.1.1.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::1", "loopback"),
            ("real-1", "names are not resolved"),
            ("", "empty address"),
            ("198.51.100.7:80:80", "not an IP address"),
        ];
        for (input, problem) in cases {
            let message = backend_err(input);
            assert!(message.contains(problem), "{input}: {message}");
            assert!(
                message.ends_with("(expected ADDR or ADDR:PORT, e.g. 198.51.100.7, 2001:db8::7 or [2001:db8::7]:8080)"),
                "{message}"
            );
        }
    }

    #[test]
    fn mac_round_trips_lowercase() {
        let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        assert_eq!(mac, MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(mac.to_string(), "02:00:00:00:00:01");
        let upper: MacAddr = "0A:1B:2C:3D:4E:5F".parse().unwrap();
        assert_eq!(upper.to_string(), "0a:1b:2c:3d:4e:5f");
        assert!(mac.is_unicast());
        assert!(!MacAddr([1, 0, 0x5e, 0, 0, 1]).is_unicast());
        assert!(!MacAddr([0; 6]).is_unicast());
        for (input, problem) in [
            ("02:00:00:00:00", "5 bytes instead of 6"),
            ("02:00:00:00:00:01:02", "7 bytes instead of 6"),
            ("02:00:00:00:00:1", r#""1" is not a two-digit hex byte"#),
            ("02-00-00-00-00-01", "is not a two-digit hex byte"),
            ("02:00:00:00:00:zz", r#""zz" is not a two-digit hex byte"#),
            ("", r#""" is not a two-digit hex byte"#),
        ] {
            let message = input.parse::<MacAddr>().unwrap_err().to_string();
            assert!(message.contains(problem), "{input}: {message}");
            assert!(message.contains("e.g. 02:00:00:00:00:01"), "{message}");
        }
    }

    #[test]
    fn control_addresses() {
        let tcp: ControlAddr = "127.0.0.1:9180".parse().unwrap();
        assert!(tcp.is_local());
        assert_eq!(tcp.to_string(), "127.0.0.1:9180");
        let v6: ControlAddr = "[::1]:9180".parse().unwrap();
        assert_eq!(v6.to_string(), "[::1]:9180");
        let any: ControlAddr = "0.0.0.0:9180".parse().unwrap();
        assert!(!any.is_local());
        let unix: ControlAddr = "unix:/run/fulcrum.sock".parse().unwrap();
        assert_eq!(unix, ControlAddr::Unix("/run/fulcrum.sock".into()));
        assert_eq!(unix.to_string(), "unix:/run/fulcrum.sock");
        assert!("unix:".parse::<ControlAddr>().is_err());
        let message = "localhost:9180"
            .parse::<ControlAddr>()
            .unwrap_err()
            .to_string();
        assert!(message.contains("unix:PATH"), "{message}");
    }

    #[test]
    fn errors_do_not_echo_unbounded_input() {
        let junk = "x".repeat(10_000);
        let message = junk.parse::<BackendAddr>().unwrap_err().to_string();
        assert!(message.len() < 400, "{} bytes", message.len());
        assert!(message.contains(&format!("\"{}...\"", "x".repeat(MAX_ECHO))));
    }

    #[test]
    fn ipv6_text_follows_rfc_5952() {
        let cases = [
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
            ("2001:db8::", "2001:db8::"),
            ("0:0:0:0:0:0:0:1", "::1"),
            ("fe80:0:0:0:0:0:0:0", "fe80::"),
            (
                "2001:DB8:AAAA:BBBB:CCCC:DDDD:EEEE:0001",
                "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1",
            ),
        ];
        for (input, canonical) in cases {
            let addr: IpAddr = input.parse().unwrap();
            assert_eq!(HostPort(addr, None).to_string(), canonical, "{input}");
        }
    }

    /// Our formatter and std's agree on addresses std does not special-case, so the key did
    /// not change when we took the formatting over.
    #[test]
    fn ipv6_text_matches_std_on_zero_heavy_addresses() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            let mut groups = [0u16; 8];
            for group in &mut groups {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Half the groups zero, so runs of every length and ties occur often.
                if state & 1 == 1 {
                    *group = (state >> 16) as u16 >> (state >> 40 & 15);
                }
            }
            if groups[..5] == [0; 5] {
                continue; // IPv4-compatible and -mapped forms, which std prints dotted.
            }
            let addr = Ipv6Addr::from(groups);
            assert_eq!(
                HostPort(IpAddr::V6(addr), None).to_string(),
                addr.to_string()
            );
        }
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let key = vip("[2001:DB8::10]:443/tcp");
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, r#""[2001:db8::10]:443/tcp""#);
        assert_eq!(serde_json::from_str::<VipKey>(&json).unwrap(), key);

        let b = backend("[2001:db8::7]:8080");
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, r#""[2001:db8::7]:8080""#);
        assert_eq!(serde_json::from_str::<BackendAddr>(&json).unwrap(), b);

        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            r#""02:00:00:00:00:01""#
        );
        assert_eq!(serde_json::to_string(&Protocol::Udp).unwrap(), r#""udp""#);

        let message = serde_json::from_str::<VipKey>(r#""192.0.2.10:80""#)
            .unwrap_err()
            .to_string();
        assert!(message.contains("missing protocol"), "{message}");
    }
}
