//! The real daemon's control API against clients that misbehave: a body announced and never
//! sent, a header line that never ends, thousands of idle connections, heads and bodies over
//! the limits, more connections than `max_connections`, a client without the token
//! announcing a large body, and running out of file descriptors. The API must keep
//! answering everyone else at once, refuse with a status and a reason, and SIGTERM must stop
//! the daemon promptly whatever its clients do. Every refusal and close is also counted, by
//! reason, in `/metrics` (`fulcrum_api_*`) and `GET /v1/stats` (`api`). Everything stays on
//! 127.0.0.1.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::{dataplane_toml, unique_prefix, DaemonProcess};

/// The body limit of the API (`fulcrum::control` refuses larger bodies with 413).
const MAX_BODY: usize = 4 << 20;

/// A daemon on net_null with one VIP; `control` is added to its `[control]` table.
fn config_text(prefix: &str, control: &str) -> String {
    format!(
        r#"{}
[[port]]
device = "net_null0"
address = "203.0.113.2"

[[vip]]
address = "192.0.2.10:80"
protocol = "tcp"
encap = "ipip"
table_size = 251

[[vip.backend]]
address = "198.51.100.11"

[control]
listen = "127.0.0.1:0"
{control}
"#,
        dataplane_toml(prefix, 128, "exception_path = false"),
    )
}

struct Started {
    daemon: DaemonProcess,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

fn write_config(test: &str, control: &str) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix(test);
    let config = dir.path().join("fulcrum.toml");
    std::fs::write(&config, config_text(&prefix, control)).unwrap();
    (dir, config, prefix)
}

fn started(daemon: DaemonProcess, dir: tempfile::TempDir) -> Started {
    let addr = daemon
        .url
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not a TCP API address: {}", daemon.url));
    Started {
        daemon,
        addr,
        _dir: dir,
    }
}

fn start(test: &str, control: &str) -> Started {
    let (dir, config, prefix) = write_config(test, control);
    started(
        DaemonProcess::start(&config, &prefix, Duration::from_secs(30)),
        dir,
    )
}

/// An answer as read off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The head, header names in lower case.
    head: String,
    body: String,
}

/// Reads one HTTP/1.1 answer (head, then `Content-Length` bytes) before `deadline`.
fn read_answer(stream: &mut TcpStream, deadline: Instant) -> Result<Answer, String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| format!("no content-length in {head:?}"))?;
            if raw.len() >= end + 4 + length {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad status line in {head:?}"))?;
                let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + length]).into_owned();
                return Ok(Answer { status, head, body });
            }
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "no complete answer in time; got {:?}",
                    String::from_utf8_lossy(&raw)
                )
            })?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "closed before a complete answer; got {:?}",
                    String::from_utf8_lossy(&raw)
                ))
            }
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("{e}; got {:?}", String::from_utf8_lossy(&raw))),
        }
    }
}

/// Sends `request` on a new connection and reads the answer within `limit`.
fn exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> Result<Answer, String> {
    let deadline = Instant::now() + limit;
    let mut stream = TcpStream::connect_timeout(&addr, limit).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(limit)).unwrap();
    stream.write_all(request).map_err(|e| e.to_string())?;
    read_answer(&mut stream, deadline)
}

const GET_VIPS: &[u8] = b"GET /v1/vips HTTP/1.1\r\nHost: test\r\n\r\n";

/// A normal request, which must be answered 200 within `limit`; returns how long it took.
fn normal_request(addr: SocketAddr, limit: Duration) -> Duration {
    let started = Instant::now();
    let answer = exchange(addr, GET_VIPS, limit)
        .unwrap_or_else(|e| panic!("GET /v1/vips was not answered within {limit:?}: {e}"));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains("192.0.2.10:80/tcp"), "{answer:?}");
    started.elapsed()
}

/// `GET path` on a new connection (with the token, if one is given), which must be answered
/// 200; returns the body.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> String {
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth}\r\n");
    let answer = exchange(addr, request.as_bytes(), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(answer.status, 200, "GET {path}: {answer:?}");
    answer.body
}

/// The `fulcrum_api_*` samples of `/metrics`, `name{labels}` to value. Fetching them opens
/// one connection, counted in `fulcrum_api_connections_total` before the answer is made.
fn api_metrics(addr: SocketAddr, token: Option<&str>) -> BTreeMap<String, u64> {
    let text = get(addr, "/metrics", token);
    for family in [
        "fulcrum_api_connections_open gauge",
        "fulcrum_api_connections_total counter",
        "fulcrum_api_accept_errors_total counter",
        "fulcrum_api_refused_total counter",
        "fulcrum_api_closed_total counter",
    ] {
        assert!(
            text.lines().any(|l| l == format!("# TYPE {family}")),
            "no {family} family in\n{text}"
        );
    }
    text.lines()
        .filter(|l| l.starts_with("fulcrum_api_"))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            let value = value.parse().unwrap_or_else(|e| panic!("{l}: {e}"));
            (name.to_owned(), value)
        })
        .collect()
}

fn metric(metrics: &BTreeMap<String, u64>, name: &str) -> u64 {
    *metrics
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {metrics:#?}"))
}

const REFUSALS: [&str; 9] = [
    "max_connections",
    "queue_full",
    "body_budget",
    "head_too_large",
    "body_too_large",
    "head_timeout",
    "body_timeout",
    "unauthorized",
    "malformed",
];
const CLOSES: [&str; 3] = ["idle", "silent", "write_timeout"];

/// Every reason's refusals and closes are as given (reasons not given: 0).
fn assert_counted(
    metrics: &BTreeMap<String, u64>,
    refused: &[(&str, u64)],
    closed: &[(&str, u64)],
) {
    for (family, reasons, expected) in [
        ("fulcrum_api_refused_total", &REFUSALS[..], refused),
        ("fulcrum_api_closed_total", &CLOSES[..], closed),
    ] {
        for (reason, _) in expected {
            assert!(reasons.contains(reason), "no such reason {reason}");
        }
        for reason in reasons {
            let want = expected
                .iter()
                .find(|(r, _)| r == reason)
                .map_or(0, |(_, n)| *n);
            let got = metric(metrics, &format!("{family}{{reason=\"{reason}\"}}"));
            assert_eq!(got, want, "{family}{{reason=\"{reason}\"}} in {metrics:#?}");
        }
    }
}

/// Lets this test process hold at least `n` file descriptors.
fn allow_open_files(n: u64) {
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
    if soft >= n {
        return;
    }
    assert!(
        n <= hard,
        "this test needs {n} file descriptors; the hard limit (ulimit -Hn) is {hard}"
    );
    rlimit::Resource::NOFILE.set(n, hard).unwrap();
}

/// Waits until the daemon has read what was sent so far (there is no signal to wait for).
fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}

#[test]
fn stuck_and_idle_clients_neither_stall_the_api_nor_delay_sigterm() {
    let Started { daemon, addr, _dir } = start("hostile", "");
    // Announces a body and never sends it.
    let mut slow_body = TcpStream::connect(addr).unwrap();
    slow_body
        .write_all(b"POST /v1/config HTTP/1.1\r\nHost: test\r\nContent-Length: 5000\r\n\r\n")
        .unwrap();
    // A header line that never ends: a byte every 50 ms, on its own thread.
    let mut endless = TcpStream::connect(addr).unwrap();
    endless
        .write_all(b"GET /v1/vips HTTP/1.1\r\nHost: test\r\nX-Endless: ")
        .unwrap();
    let trickling = Arc::new(AtomicBool::new(true));
    let trickle = {
        let trickling = trickling.clone();
        std::thread::spawn(move || {
            while trickling.load(Ordering::Relaxed) && endless.write_all(b"a").is_ok() {
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    settle();
    allow_open_files(4_096);
    let connecting = Instant::now();
    let idle: Vec<TcpStream> = (0..2_000)
        .map(|i| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
        })
        .collect();
    eprintln!("2,000 connections opened in {:?}", connecting.elapsed());
    settle();

    let took = normal_request(addr, Duration::from_secs(1));
    eprintln!(
        "with 2,000 idle connections, a slow body and an endless header: answered in {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    // Open: the 2,000, the slow body, the endless header and the scrape itself (some of the
    // idle ones may have been closed as silent meanwhile, on a slow machine).
    let metrics = api_metrics(addr, None);
    let silent = metric(&metrics, "fulcrum_api_closed_total{reason=\"silent\"}");
    assert_eq!(
        metric(&metrics, "fulcrum_api_connections_open"),
        2_003 - silent,
        "{metrics:#?}"
    );
    assert_eq!(
        metric(&metrics, "fulcrum_api_connections_total"),
        2_004,
        "{metrics:#?}"
    );

    let signalled = Instant::now();
    let exit = daemon.terminate(Duration::from_secs(2));
    assert!(exit.status.success(), "{}\n{}", exit.status, exit.stderr);
    eprintln!(
        "exited {:.0} ms after SIGTERM",
        signalled.elapsed().as_secs_f64() * 1e3
    );
    trickling.store(false, Ordering::Relaxed);
    let _ = trickle.join();
    drop((idle, slow_body));
}

#[test]
fn oversized_requests_are_refused_with_a_reason() {
    let Started {
        daemon: _daemon,
        addr,
        _dir,
    } = start("oversized", "");
    let limit = Duration::from_secs(2);

    // A body announced over the limit is refused before a byte of it is sent.
    let announced = format!(
        "POST /v1/config HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY + 1
    );
    let answer = exchange(addr, announced.as_bytes(), limit).unwrap();
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(
        answer
            .body
            .contains("request body larger than 4194304 bytes"),
        "{answer:?}"
    );
    assert!(answer.head.contains("connection: close"), "{answer:?}");

    // A chunked body that grows past the limit (it announces no length).
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_write_timeout(Some(limit)).unwrap();
    stream
        .write_all(b"POST /v1/config HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = vec![b'#'; 16 << 10];
    let mut sent = 0;
    while sent <= MAX_BODY {
        write!(stream, "{:x}\r\n", chunk.len()).unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
        sent += chunk.len();
    }
    let answer = read_answer(&mut stream, Instant::now() + limit).unwrap();
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(
        answer
            .body
            .contains("request body larger than 4194304 bytes"),
        "{answer:?}"
    );

    // A header over the head limit (16 KiB).
    let big = format!(
        "GET /v1/vips HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let answer = exchange(addr, big.as_bytes(), limit).unwrap();
    assert_eq!(answer.status, 431, "{answer:?}");
    assert!(
        answer
            .body
            .contains("the request line and headers are larger than 16384 bytes"),
        "{answer:?}"
    );

    // A header line that never ends, sent as fast as it goes: refused at the limit, not
    // buffered without end.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_write_timeout(Some(limit)).unwrap();
    stream
        .write_all(b"GET /v1/vips HTTP/1.1\r\nX-Endless: ")
        .unwrap();
    let mut refused = None;
    for _ in 0..64 {
        if stream.write_all(&[b'a'; 1024]).is_err() {
            break;
        }
        stream
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut peek = [0u8; 1];
        if stream.peek(&mut peek).is_ok_and(|n| n > 0) {
            refused = Some(read_answer(&mut stream, Instant::now() + limit).unwrap());
            break;
        }
    }
    let answer = match refused {
        Some(answer) => answer,
        None => read_answer(&mut stream, Instant::now() + limit).unwrap(),
    };
    assert_eq!(answer.status, 431, "{answer:?}");

    // Too many header lines.
    let many = format!(
        "GET /v1/vips HTTP/1.1\r\nHost: test\r\n{}\r\n",
        "X-Line: 1\r\n".repeat(150)
    );
    let answer = exchange(addr, many.as_bytes(), limit).unwrap();
    assert_eq!(answer.status, 431, "{answer:?}");
    assert!(
        answer.body.contains("more than 100 header lines"),
        "{answer:?}"
    );

    // Not HTTP at all (a TLS client on the plain port): hyper answers 400.
    let answer = exchange(
        addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        limit,
    )
    .unwrap();
    assert_eq!(answer.status, 400, "{answer:?}");

    normal_request(addr, Duration::from_secs(1));
    assert_counted(
        &api_metrics(addr, None),
        &[
            ("body_too_large", 2),
            ("head_too_large", 3),
            ("malformed", 1),
        ],
        &[],
    );
}

#[test]
fn a_connection_over_max_connections_is_answered_503_and_the_slot_comes_back() {
    let Started {
        daemon: _daemon,
        addr,
        _dir,
    } = start("maxconn", "max_connections = 8");
    let mut idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    settle();
    // What the counters must show: every connection this test opens, every 503.
    let (mut connections, mut refused) = (8, 0);
    let answer = exchange(addr, GET_VIPS, Duration::from_secs(2)).unwrap();
    connections += 1;
    assert_eq!(answer.status, 503, "{answer:?}");
    refused += 1;
    assert!(
        answer.body.contains(
            "the control API has its maximum of 8 connections open ([control] max_connections)"
        ),
        "{answer:?}"
    );
    // One closes: its slot is free again once the daemon has seen it go.
    drop(idle.pop());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let answer = exchange(addr, GET_VIPS, Duration::from_secs(1)).unwrap();
        connections += 1;
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 503, "{answer:?}");
        refused += 1;
        assert!(Instant::now() < deadline, "the freed slot never came back");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Every 503 was counted, and every connection; the open ones go back to just the scrape
    // once the daemon has seen the others close.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(2);
    let metrics = loop {
        let metrics = api_metrics(addr, None);
        connections += 1;
        if metrics["fulcrum_api_connections_open"] == 1 {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "connections stayed counted as open: {metrics:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_counted(&metrics, &[("max_connections", refused)], &[]);
    assert_eq!(metrics["fulcrum_api_connections_total"], connections);
    assert_eq!(metrics["fulcrum_api_accept_errors_total"], 0);

    // `GET /v1/stats` has the same numbers.
    let stats: serde_json::Value = serde_json::from_str(&get(addr, "/v1/stats", None)).unwrap();
    connections += 1;
    let api = &stats["api"];
    assert_eq!(api["connections_total"], connections, "{api}");
    assert_eq!(api["connections_open"], 1, "{api}");
    assert_eq!(api["accept_errors"], 0, "{api}");
    let counts = |list: &serde_json::Value| -> Vec<(String, u64)> {
        list.as_array()
            .unwrap_or_else(|| panic!("not a list: {list}"))
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let want: Vec<(String, u64)> = REFUSALS
        .iter()
        .map(|r| {
            (
                r.to_string(),
                if *r == "max_connections" { refused } else { 0 },
            )
        })
        .collect();
    assert_eq!(counts(&api["refused"]), want, "{api}");
    let want: Vec<(String, u64)> = CLOSES.iter().map(|c| (c.to_string(), 0)).collect();
    assert_eq!(counts(&api["closed"]), want, "{api}");
}

#[test]
fn request_bodies_are_held_to_the_body_budget() {
    let Started {
        daemon: _daemon,
        addr,
        _dir,
    } = start("budget", "");
    // Eight bodies of the largest size announced and never sent take the whole budget.
    let announce = |length: usize| {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "POST /v1/config?dry_run=true HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n\r\n"
        )
        .unwrap();
        stream
    };
    let held: Vec<TcpStream> = (0..8).map(|_| announce(MAX_BODY)).collect();
    settle();
    let mut ninth = announce(100);
    let answer = read_answer(&mut ninth, Instant::now() + Duration::from_secs(2)).unwrap();
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        answer
            .body
            .contains("already reading 32 MiB of request bodies"),
        "{answer:?}"
    );
    assert!(answer.head.contains("connection: close"), "{answer:?}");
    assert_counted(&api_metrics(addr, None), &[("body_budget", 1)], &[]);

    // Their clients go away mid-body (which is no refusal): the budget comes back.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut stream = announce(7);
        stream.write_all(b"[[vip]]").unwrap();
        let answer = read_answer(&mut stream, Instant::now() + Duration::from_secs(2)).unwrap();
        if answer.status != 503 {
            // The control thread read it: a configuration without ports is refused.
            assert_eq!(answer.status, 400, "{answer:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the budget never came back: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = api_metrics(addr, None);
    let refused = metric(
        &metrics,
        "fulcrum_api_refused_total{reason=\"body_budget\"}",
    );
    assert_counted(&metrics, &[("body_budget", refused)], &[]);
}

#[test]
fn a_client_without_the_token_is_refused_before_it_sends_its_body() {
    let Started {
        daemon: _daemon,
        addr,
        _dir,
    } = start("token", "token = \"s3cret-token\"");
    let limit = Duration::from_secs(1);
    let started = Instant::now();
    let answer = exchange(
        addr,
        b"POST /v1/config HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000\r\n\r\n",
        limit,
    )
    .unwrap();
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(answer.body.contains("missing API token"), "{answer:?}");
    assert!(
        answer
            .head
            .contains("www-authenticate: bearer realm=\"fulcrum\""),
        "{answer:?}"
    );
    assert!(answer.head.contains("connection: close"), "{answer:?}");
    let answer = exchange(
        addr,
        b"POST /v1/config HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer s3cret-tokem\r\nContent-Length: 1000000\r\n\r\n",
        limit,
    )
    .unwrap();
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(answer.body.contains("wrong API token"), "{answer:?}");
    assert!(started.elapsed() < 2 * limit);
    // A client that sends its body along is refused too, and gets to read the refusal.
    let mut with_body =
        b"POST /v1/config HTTP/1.1\r\nHost: test\r\nContent-Length: 262144\r\n\r\n".to_vec();
    with_body.extend_from_slice(&[b'#'; 262144]);
    let answer = exchange(addr, &with_body, limit).unwrap();
    assert_eq!(answer.status, 401, "{answer:?}");

    let answer = exchange(
        addr,
        b"GET /v1/vips HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer s3cret-token\r\n\r\n",
        limit,
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_counted(
        &api_metrics(addr, Some("s3cret-token")),
        &[("unauthorized", 3)],
        &[],
    );
}

#[test]
fn slow_clients_get_408_and_silent_or_idle_ones_are_closed() {
    let Started {
        daemon: _daemon,
        addr,
        _dir,
    } = start(
        "timeouts",
        "header_timeout_ms = 300\nbody_timeout_ms = 300\nidle_timeout_ms = 300",
    );
    let limit = Duration::from_secs(3);

    let answer = exchange(addr, b"GET /v1/vips HTTP/1.1\r\nHost: test\r\n", limit).unwrap();
    assert_eq!(answer.status, 408, "{answer:?}");
    assert!(
        answer
            .body
            .contains("the request line and headers did not arrive within 300 ms ([control] header_timeout_ms)"),
        "{answer:?}"
    );

    let answer = exchange(
        addr,
        b"POST /v1/config HTTP/1.1\r\nHost: test\r\nContent-Length: 5000\r\n\r\n[[vip]]",
        limit,
    )
    .unwrap();
    assert_eq!(answer.status, 408, "{answer:?}");
    assert!(
        answer.body.contains(
            "the request body (5000 bytes announced) did not arrive within 300 ms ([control] body_timeout_ms)"
        ),
        "{answer:?}"
    );

    // Connected and silent: closed without a word.
    let closed_within = |stream: &mut TcpStream| {
        let started = Instant::now();
        stream.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 1];
        let n = stream.read(&mut buf).expect("closed, not timed out");
        assert_eq!(n, 0, "the daemon wrote to a connection it closed");
        started.elapsed()
    };
    let mut silent = TcpStream::connect(addr).unwrap();
    assert!(closed_within(&mut silent) < limit);

    // Kept alive after an answer, then idle: closed.
    let mut kept = TcpStream::connect(addr).unwrap();
    kept.write_all(GET_VIPS).unwrap();
    let answer = read_answer(&mut kept, Instant::now() + limit).unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(!answer.head.contains("connection: close"), "{answer:?}");
    assert!(closed_within(&mut kept) < limit);

    normal_request(addr, Duration::from_secs(1));
    assert_counted(
        &api_metrics(addr, None),
        &[("head_timeout", 1), ("body_timeout", 1)],
        &[("silent", 1), ("idle", 1)],
    );
}

#[test]
fn running_out_of_file_descriptors_does_not_end_the_api() {
    /// Room for the daemon's own descriptors (about 25) and about 100 connections.
    const OPEN_FILES: u64 = 128;
    let (dir, config, prefix) = write_config("nofile", "");
    let Started { daemon, addr, _dir } = started(
        DaemonProcess::start_with_open_files(
            Path::new(&config),
            &prefix,
            Duration::from_secs(30),
            OPEN_FILES,
        ),
        dir,
    );
    normal_request(addr, Duration::from_secs(1));
    // More connections than the daemon has descriptors: the last ones wait in the listen
    // backlog, and once that is full, connecting fails.
    let mut held = Vec::new();
    for _ in 0..OPEN_FILES + 64 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    assert!(
        held.len() as u64 > OPEN_FILES,
        "only {} connections were opened",
        held.len()
    );
    settle();
    drop(held);
    // Once they are closed, the API answers again.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match exchange(addr, GET_VIPS, Duration::from_millis(500)) {
            Ok(answer) => {
                assert_eq!(answer.status, 200, "{answer:?}");
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "the API never answered again after running out of file descriptors: {e}\n{}",
                daemon.stderr()
            ),
        }
    }
    normal_request(addr, Duration::from_secs(1));
    // And it did run out (else this test showed nothing), and counted it.
    assert!(
        daemon.stderr().contains("cannot accept connections"),
        "{}",
        daemon.stderr()
    );
    let metrics = api_metrics(addr, None);
    assert!(
        metrics["fulcrum_api_accept_errors_total"] > 0,
        "{metrics:#?}"
    );
    // Waiting in the backlog is no refusal.
    assert_counted(&metrics, &[], &[]);
}
