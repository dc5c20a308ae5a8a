//! What the configuration's tests share: a minimal and a full file, and error assertions.

use super::*;
use crate::addr::VipKey;

/// The smallest valid file: one port. Cases append to it.
pub(super) const BASE: &str = r#"[[port]]
device = "net_tap0,iface=fulcrum0"
address = "203.0.113.2"
"#;

/// Every key set, both families, every encap.
pub(super) const FULL: &str = r#"[dataplane]
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

pub(super) fn parse(text: &str) -> Config {
    from_str(text, "test.toml").unwrap_or_else(|e| panic!("{e}\n--- in ---\n{text}"))
}

pub(super) fn error(text: &str) -> String {
    match from_str(text, "test.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts the error names `test.toml`, the line marked `# <-` in `text` and contains
/// every needle (the problem and its fix).
#[track_caller]
pub(super) fn assert_error(text: &str, needles: &[&str]) {
    let line = text
        .lines()
        .position(|l| l.contains("# <-"))
        .expect("the case marks its offending line with # <-")
        + 1;
    assert_error_at(text, line, needles);
}

#[track_caller]
pub(super) fn assert_error_at(text: &str, line: usize, needles: &[&str]) {
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
pub(super) fn with_base(case: &str) -> String {
    if case.contains("[[port]]") {
        case.to_owned()
    } else {
        format!("{BASE}{case}")
    }
}

pub(super) fn key(s: &str) -> VipKey {
    s.parse().unwrap()
}

pub(super) fn ports(count: usize) -> String {
    (0..count)
        .map(|i| {
            format!(
                "[[port]]\ndevice = \"net_ring{i}\"\naddress = \"203.0.113.{}\"\n",
                i + 2
            )
        })
        .collect()
}
