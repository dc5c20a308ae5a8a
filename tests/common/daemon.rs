//! A real `fulcrum run` daemon for end-to-end tests: started from a configuration file, found
//! through the "control API on ADDR" line it logs, talked to over HTTP with the CLI's own
//! client (one kept-alive connection), stopped with SIGTERM (it then prints its final
//! counters as one JSON line) or SIGKILL. A test that fails mid-way kills its daemon on drop,
//! and the daemon's DPDK runtime directory is removed. Everything stays on 127.0.0.1.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fulcrum::cli::ApiTarget;

/// The binary under test: `FULCRUM_BIN` if set (e.g. a release build for measurements),
/// else the one Cargo built with this test.
pub fn daemon_bin() -> PathBuf {
    std::env::var_os("FULCRUM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_fulcrum")))
}

static PREFIXES: AtomicU32 = AtomicU32::new(0);

/// A DPDK file prefix no other process on the host uses.
pub fn unique_prefix(test: &str) -> String {
    let n = PREFIXES.fetch_add(1, Ordering::SeqCst);
    format!("fulcrum-{test}-{}-{n}", std::process::id())
}

/// A `[dataplane]` table: one worker, no hugepages, `memory_mb` of EAL memory, the EAL's and
/// the pcap PMD's chatter off.
pub fn dataplane_toml(prefix: &str, memory_mb: u32, extra: &str) -> String {
    format!(
        r#"[dataplane]
workers = 1
eal_args = ["--no-huge", "-m", "{memory_mb}", "--file-prefix={prefix}", "--log-level=lib.eal:error", "--log-level=pmd.net.pcap:error"]
conntrack_flows = 65536
{extra}
"#
    )
}

/// The daemon's status and output once it has exited.
pub struct Exit {
    pub status: ExitStatus,
    /// The final counters (the last JSON line on stdout), `Null` if there was none.
    pub totals: serde_json::Value,
    pub stderr: String,
}

impl Exit {
    pub fn total(&self, key: &str) -> u64 {
        self.totals[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {key} in {}", self.totals))
    }

    pub fn drops(&self) -> std::collections::BTreeMap<String, u64> {
        serde_json::from_value(self.totals["drops"].clone()).unwrap_or_default()
    }
}

/// A running `fulcrum run`. Dropping it kills the process.
pub struct DaemonProcess {
    child: Child,
    pub pid: u32,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub api: ApiTarget,
    prefix: String,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl DaemonProcess {
    /// Starts `fulcrum run --config CONFIG` and waits (at most `timeout`) until its API
    /// listens. `prefix` is the configuration's `--file-prefix`, whose runtime directory is
    /// removed when the daemon is gone.
    pub fn start(config: &Path, prefix: &str, timeout: Duration) -> DaemonProcess {
        DaemonProcess::launch(Command::new(daemon_bin()), config, prefix, timeout)
    }

    /// [`DaemonProcess::start`] with at most `open_files` file descriptors (soft and hard
    /// limit, set by prlimit(1) before fulcrum starts, so fulcrum cannot raise it).
    pub fn start_with_open_files(
        config: &Path,
        prefix: &str,
        timeout: Duration,
        open_files: u64,
    ) -> DaemonProcess {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={open_files}:{open_files}"))
            .arg("--")
            .arg(daemon_bin());
        DaemonProcess::launch(command, config, prefix, timeout)
    }

    /// Runs `command` (fulcrum, or a program that execs it) with `run --config CONFIG`.
    fn launch(
        mut command: Command,
        config: &Path,
        prefix: &str,
        timeout: Duration,
    ) -> DaemonProcess {
        let mut child = command
            .args(["run", "--config"])
            .arg(config)
            .env("FULCRUM_LOG", "info")
            .env_remove("FULCRUM_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let pid = child.id();
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (lines_tx, lines) = mpsc::channel::<String>();
        // Drains stderr for the daemon's whole life: a full pipe would block its logging,
        // and with it the control thread.
        let stderr_reader = {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr_pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut all = stderr.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                    drop(all);
                    let _ = lines_tx.send(line);
                }
            })
        };
        let mut daemon = DaemonProcess {
            child,
            pid,
            url: String::new(),
            api: ApiTarget::new("http://127.0.0.1:9", None).expect("a valid placeholder"),
            prefix: prefix.to_owned(),
            stderr,
            stderr_reader: Some(stderr_reader),
        };
        let deadline = Instant::now() + timeout;
        let addr = loop {
            match lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    if let Some(addr) = line.split("control API on ").nth(1) {
                        break addr.trim().to_owned();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stderr closed: the daemon is exiting; let the status say how.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!(
                    "fulcrum exited ({status}) before its API listened:\n{}",
                    daemon.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "fulcrum's API did not listen within {timeout:?}:\n{}",
                    daemon.stderr()
                );
            }
        };
        daemon.url = format!("http://{addr}");
        daemon.api = ApiTarget::new(&daemon.url, None).expect("the logged address is a URL");
        daemon
    }

    /// What the daemon logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// One request; panics when the daemon cannot be reached. The body is JSON.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let answer = self
            .api
            .request(
                method,
                path,
                body.map(|b| ("application/json", b.as_bytes())),
            )
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.stderr()));
        let value = serde_json::from_slice(&answer.body).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&answer.body)
            )
        });
        (answer.status, value)
    }

    /// A request that must succeed (2xx); returns the JSON answer.
    pub fn ok(&self, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
        let (status, value) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path} {}: {status} {value}",
            body.unwrap_or("")
        );
        value
    }

    /// `GET /metrics`, as text.
    pub fn metrics(&self) -> String {
        let answer = self
            .api
            .request("GET", "/metrics", None)
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        String::from_utf8_lossy(&answer.body).into_owned()
    }

    /// The daemon's resident set (VmRSS) in KiB.
    pub fn vm_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_else(|e| panic!("/proc/{}/status: {e}", self.pid));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{}/status", self.pid))
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the daemon as an operator would (SIGTERM) and waits at most `timeout`.
    pub fn terminate(mut self, timeout: Duration) -> Exit {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {} failed", self.pid);
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for fulcrum") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "fulcrum did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        let totals = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .unwrap_or(serde_json::Value::Null);
        self.join_stderr();
        Exit {
            status,
            totals,
            stderr: self.stderr(),
        }
    }

    /// `kill -9`: no chance to flush, persist or clean up anything.
    pub fn kill9(mut self) -> String {
        self.child.kill().expect("SIGKILL fulcrum");
        let _ = self.child.wait();
        self.join_stderr();
        self.stderr()
    }

    fn join_stderr(&mut self) {
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        remove_runtime_dir(&self.prefix);
    }
}

/// Removes the EAL's runtime files of `prefix` (unique to one test, see [`unique_prefix`]):
/// /var/run/dpdk/PREFIX for root, else under XDG_RUNTIME_DIR or /tmp.
pub fn remove_runtime_dir(prefix: &str) {
    let mut bases = vec![PathBuf::from("/var/run"), PathBuf::from("/tmp")];
    bases.extend(std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from));
    for base in bases {
        let _ = std::fs::remove_dir_all(base.join("dpdk").join(prefix));
    }
}

/// Removes a test process's own EAL runtime files when dropped, even when the test fails.
pub struct RuntimeDir(pub String);

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        remove_runtime_dir(&self.0);
    }
}

/// Runs every thread of this process on `cpus` (a `taskset` list such as "0") until the
/// guard is dropped, which restores the previous set. A measurement pins its client this way
/// so the client never takes the worker's core from it.
pub struct Pinned {
    previous: String,
}

impl Pinned {
    pub fn to(cpus: &str) -> Pinned {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let previous = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list in /proc/self/status")
            .trim()
            .to_owned();
        set_affinity(cpus);
        Pinned { previous }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        set_affinity(&self.previous);
    }
}

fn set_affinity(cpus: &str) {
    let pid = std::process::id().to_string();
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid])
        .output()
        .expect("run taskset");
    assert!(
        out.status.success(),
        "taskset -a -p -c {cpus} {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Percent-encodes a VIP (`192.0.2.10:80/tcp`) for a path.
pub fn vip_path(vip: &str) -> String {
    format!("/v1/vips/{}", vip.replace('/', "%2F"))
}

/// A small deterministic generator (splitmix64): tests that look random repeat exactly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the bias is negligible for small n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The `p`-quantile (0..=1) of `sorted` by the nearest-rank method.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty());
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
