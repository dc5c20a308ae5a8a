//! Health checks against real TCP and HTTP servers on 127.0.0.1: a backend whose server stops
//! leaves the table within fall x interval and comes back within rise x interval of its
//! server returning; a VIP whose backends are all down keeps its table and says so.
//!
//! Backends cannot be loopback addresses, so the daemon under test redirects every check to
//! the same port on 127.0.0.1 (`Options::probe_redirect`); the VIPs serve all ports so each
//! backend can name its own server's port.

mod control_support;

use std::time::{Duration, Instant};

use control_support::{wait_until, Daemon, TestServer};
use fulcrum::snapshot::BackendState;

const INTERVAL_MS: u64 = 100;
const RISE: u64 = 2;
const FALL: u64 = 2;
/// Scheduling slack on a loaded 2-core machine: the control thread's tick, the prober's
/// queue and the test's polling.
const SLACK: Duration = Duration::from_millis(400);

fn config(tcp: &[u16], http: &[u16]) -> String {
    let mut text = String::from(
        "[[port]]\ndevice = \"net_tap0,iface=fulcrum0\"\naddress = \"203.0.113.2\"\n\n",
    );
    let check = |kind: &str| {
        format!(
            "[vip.healthcheck]\nkind = \"{kind}\"\ninterval_ms = {INTERVAL_MS}\ntimeout_ms = 50\nrise = {RISE}\nfall = {FALL}\n{}\n",
            if kind == "http" { "path = \"/healthz\"\nexpect_status = 200\n" } else { "" }
        )
    };
    text.push_str("[[vip]]\naddress = \"192.0.2.10:0\"\nprotocol = \"tcp\"\nencap = \"ipip\"\ntable_size = 251\n");
    text.push_str(&check("tcp"));
    for (i, port) in tcp.iter().enumerate() {
        text.push_str(&format!(
            "[[vip.backend]]\naddress = \"198.51.100.{}:{port}\"\n\n",
            10 + i
        ));
    }
    if !http.is_empty() {
        text.push_str("[[vip]]\naddress = \"192.0.2.11:0\"\nprotocol = \"tcp\"\nencap = \"ipip\"\ntable_size = 251\n");
        text.push_str(&check("http"));
        for (i, port) in http.iter().enumerate() {
            text.push_str(&format!(
                "[[vip.backend]]\naddress = \"198.51.100.{}:{port}\"\n\n",
                20 + i
            ));
        }
    }
    text.push_str("[control]\nlisten = \"127.0.0.1:0\"\n");
    text
}

fn health_of(d: &Daemon, vip: &str, backend: &str) -> String {
    let (status, list) = d.json("GET", &format!("/v1/vips/{vip}/backends"), None);
    assert_eq!(status, 200, "{list}");
    list["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == backend)
        .map(|b| b["health"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{backend} not in {list}"))
}

/// A port nothing listens on (bound once by the kernel, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn failing_backends_leave_within_fall_intervals_and_return_within_rise_intervals() {
    let tcp_a = TestServer::start(0, None);
    let tcp_b = TestServer::start(0, None);
    let http_a = TestServer::start(0, Some(200));
    let http_b = TestServer::start(0, Some(200));
    let (port_a, port_ha) = (tcp_a.port, http_a.port);
    let d = Daemon::start(&config(
        &[tcp_a.port, tcp_b.port],
        &[http_a.port, http_b.port],
    ));
    let tcp_vip = "192.0.2.10:0%2Ftcp";
    let http_vip = "192.0.2.11:0%2Ftcp";
    let a = format!("198.51.100.10:{port_a}");
    let ha = format!("198.51.100.20:{port_ha}");
    // Everyone passes a first round of checks.
    let settled = wait_until(Duration::from_secs(5), || {
        let (_, h) = d.json("GET", "/v1/health", None);
        h["vips"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|v| v["backends"].as_array().unwrap().clone())
            .all(|b| b["checks"].as_u64() >= Some(1) && b["status"] == "up")
    });
    assert!(settled.is_some(), "checks never ran");

    // TCP: the server goes away.
    let stopped = Instant::now();
    tcp_a.stop();
    let left = wait_until(Duration::from_secs(5), || {
        health_of(&d, tcp_vip, &a) == "down"
    })
    .expect("never marked down");
    let bound = Duration::from_millis(FALL * INTERVAL_MS) + SLACK;
    assert!(
        left <= bound,
        "down after {left:?}, more than fall x interval + slack = {bound:?}"
    );
    d.with_snapshot(|s| {
        let vip = s.vips.iter().find(|v| v.id == 0).unwrap();
        let down = vip
            .members
            .iter()
            .copied()
            .find(|id| s.backend(*id).unwrap().state == BackendState::Down);
        assert!(down.is_some(), "the snapshot does not have it down");
        for h in 0..2000u64 {
            assert_ne!(
                vip.pick(h.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                down,
                "a down backend still takes new flows"
            );
        }
        assert!(!vip.all_down);
    });
    let (_, report) = d.json("GET", "/v1/health", None);
    let err = report["vips"][0]["backends"][0]["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&format!("tcp connect to 127.0.0.1:{port_a}")),
        "{err}"
    );
    eprintln!(
        "tcp backend left the table {:?} after its server stopped ({left:?} observed)",
        stopped.elapsed()
    );

    // Back on the same port.
    let tcp_a = TestServer::start(port_a, None);
    let back = wait_until(Duration::from_secs(5), || {
        health_of(&d, tcp_vip, &a) == "up"
    })
    .expect("never came back");
    let bound = Duration::from_millis(RISE * INTERVAL_MS) + SLACK;
    assert!(
        back <= bound,
        "up after {back:?}, more than rise x interval + slack = {bound:?}"
    );
    d.with_snapshot(|s| {
        assert!(s.vips[0]
            .members
            .iter()
            .all(|id| s.backend(*id).unwrap().state == BackendState::Active))
    });
    eprintln!("tcp backend returned {back:?} after its server came back");

    // HTTP: the server answers 503 instead of 200, then 200 again.
    http_a.stop();
    let http_a = TestServer::start(port_ha, Some(503));
    let left = wait_until(Duration::from_secs(5), || {
        health_of(&d, http_vip, &ha) == "down"
    })
    .expect("http never down");
    assert!(
        left <= Duration::from_millis(FALL * INTERVAL_MS) + SLACK,
        "{left:?}"
    );
    let (_, report) = d.json("GET", "/v1/health", None);
    let err = report["vips"][1]["backends"][0]["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.ends_with("GET /healthz answered 503, expected 200"),
        "{err}"
    );
    http_a.stop();
    let _http_a = TestServer::start(port_ha, Some(200));
    let back = wait_until(Duration::from_secs(5), || {
        health_of(&d, http_vip, &ha) == "up"
    })
    .expect("http never back");
    assert!(
        back <= Duration::from_millis(RISE * INTERVAL_MS) + SLACK,
        "{back:?}"
    );
    drop((tcp_a, tcp_b, http_b));
}

#[test]
fn a_vip_with_every_backend_down_keeps_its_table_and_says_so() {
    let d = Daemon::start(&config(&[free_port(), free_port()], &[]));
    let all_down = wait_until(Duration::from_secs(5), || {
        let (_, v) = d.json("GET", "/v1/vips/192.0.2.10:0%2Ftcp", None);
        v["vip"]["all_backends_down"] == true
    });
    assert!(all_down.is_some(), "never reported all down");
    d.with_snapshot(|s| {
        let vip = &s.vips[0];
        assert!(vip.all_down);
        assert!(vip.pick(12345).is_some(), "the VIP was black-holed");
    });
    let (_, text) = d.get("/metrics");
    assert!(
        text.contains("fulcrum_vip_all_backends_down{vip=\"192.0.2.10:0/tcp\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("fulcrum_vip_backends{vip=\"192.0.2.10:0/tcp\",state=\"down\"} 2"),
        "{text}"
    );
    let (_, health) = d.json("GET", "/v1/health", None);
    assert_eq!(health["vips"][0]["all_backends_down"], true);
    assert!(health["vips"][0]["backends"][0]["failures"].as_u64() >= Some(FALL));
}

#[test]
fn health_checks_do_not_block_the_api() {
    // Backends that never answer (a listener that is never accepted from still completes
    // TCP handshakes, so use HTTP checks that wait for a status line until their timeout).
    let silent: Vec<std::net::TcpListener> = (0..8)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = silent
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let d = Daemon::start(&config(&[], &ports));
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    while start.elapsed() < Duration::from_millis(600) {
        let t = Instant::now();
        let (status, _) = d.get("/v1/vips");
        assert_eq!(status, 200);
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(50),
        "an API call took {slowest:?} while checks timed out"
    );
    let (_, health) = d.json("GET", "/v1/health", None);
    let errors: Vec<String> = health["vips"][1]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["last_error"].as_str().map(String::from))
        .collect();
    assert!(!errors.is_empty(), "{health}");
    drop(silent);
}
