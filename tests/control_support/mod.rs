//! Helpers for the control-plane tests: an in-process daemon (ControlPlane on a detached
//! data plane, listening on 127.0.0.1:0), a raw HTTP client, and small local servers that
//! health checks can probe. Nothing here sends a packet beyond 127.0.0.1.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fulcrum::addr::ControlAddr;
use fulcrum::control::{api_url, ControlError, ControlPlane, Options, ProbeRedirect};
use fulcrum::datapath::stats::WorkerStats;
use fulcrum::runtime::handle::DataplaneHandle;
use fulcrum::snapshot::{Reader, Snapshot};

/// One port with both families, one VIP with one backend, API on an ephemeral port.
pub const CONFIG: &str = r#"
[[port]]
device = "net_tap0,iface=fulcrum0"
address = "203.0.113.2"
address6 = "2001:db8::2"

[[vip]]
address = "192.0.2.10:80"
protocol = "tcp"
encap = "ipip"
table_size = 251

[[vip.backend]]
address = "198.51.100.11"

[control]
listen = "127.0.0.1:0"
"#;

/// Health checks of any backend go to the same port on 127.0.0.1.
pub fn to_loopback() -> ProbeRedirect {
    Arc::new(|addr: SocketAddr| SocketAddr::from(([127, 0, 0, 1], addr.port())))
}

pub fn config(text: &str) -> fulcrum::config::Config {
    fulcrum::config::from_str(text, "test.toml").unwrap_or_else(|e| panic!("{e}"))
}

pub struct Daemon {
    pub addr: ControlAddr,
    pub url: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), ControlError>>>,
    worker: Option<JoinHandle<()>>,
    reader: Mutex<Reader>,
    pub workers: Vec<Arc<WorkerStats>>,
    /// The version the daemon published first.
    pub first_version: u64,
}

impl Daemon {
    pub fn start(text: &str) -> Daemon {
        Daemon::start_with(text, 0)
    }

    /// With `workers` simulated workers that adopt each snapshot within a millisecond.
    pub fn start_with(text: &str, workers: usize) -> Daemon {
        Daemon::try_start(text, workers).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start(text: &str, workers: usize) -> Result<Daemon, ControlError> {
        let mut handle = DataplaneHandle::detached();
        let stats: Vec<Arc<WorkerStats>> = (0..workers)
            .map(|i| Arc::new(WorkerStats::new(i, i as u32 + 1)))
            .collect();
        handle.workers = stats.clone();
        let reader = handle.publisher.reader();
        let worker_readers: Vec<Reader> = (0..workers).map(|_| handle.publisher.reader()).collect();
        let plane = ControlPlane::with_options(
            config(text),
            handle,
            Options {
                probe_redirect: Some(to_loopback()),
            },
        )?;
        let addr = plane.local_addr();
        let first_version = plane.version();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_serve = stop.clone();
        let thread = std::thread::spawn(move || plane.serve(stop_serve));
        let worker = (workers > 0).then(|| {
            let stop = stop.clone();
            let stats = stats.clone();
            std::thread::spawn(move || {
                let mut readers = worker_readers;
                while !stop.load(Ordering::Relaxed) {
                    for (r, s) in readers.iter_mut().zip(&stats) {
                        r.refresh();
                        s.snapshot_version.set(r.snapshot().version);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        });
        Ok(Daemon {
            url: api_url(&addr),
            addr,
            stop,
            thread: Some(thread),
            worker,
            reader: Mutex::new(reader),
            workers: stats,
            first_version,
        })
    }

    pub fn tcp(&self) -> SocketAddr {
        match &self.addr {
            ControlAddr::Tcp(a) => *a,
            ControlAddr::Unix(p) => panic!("listening on {}", p.display()),
        }
    }

    /// Runs `f` on the newest published snapshot.
    pub fn with_snapshot<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> T {
        let mut reader = self.reader.lock().unwrap();
        reader.refresh();
        f(reader.snapshot())
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.tcp(), "GET", path, None, None)
    }

    pub fn send(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(self.tcp(), method, path, None, Some(body))
    }

    pub fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let (status, text) = http(self.tcp(), method, path, None, body);
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, value)
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join()
                .expect("the control thread panicked")
                .expect("serve failed");
        }
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// One HTTP/1.1 request on its own connection; returns the status and the body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: Option<&[(&str, &str)]>,
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers.unwrap_or(&[]) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    (status, body.to_string())
}

/// A local server a health check can probe: accepts connections and, if `http_status` is
/// set, answers each request with that status. Stops (closes its port) on `stop`.
pub struct TestServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(port: u16, http_status: Option<u16>) -> TestServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the test server");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop_thread.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        if let Some(status) = http_status {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                            let mut buf = [0u8; 1024];
                            let _ = s.read(&mut buf);
                            let _ = write!(s, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        TestServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Polls `f` every 5 ms until it holds; returns how long that took, or `None` at `limit`.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
