//! Health checks through ordinary kernel sockets.
//!
//! The control thread decides when each backend is due and hands the check to a small fixed
//! pool of prober threads ([`Prober`]), which do the blocking connect (and, for HTTP, one
//! request) under the check's timeout and send the outcome back. The control thread never
//! waits on a backend, so checks cannot block the API, and the number of threads does not
//! grow with the number of backends: a backend is never checked twice at once, and with
//! more slow backends than probers checks fall behind their interval rather than pile up.
//! The probers are spawned by the control thread and inherit its CPU affinity, so they never
//! run on a worker's core.
//!
//! A backend starts up (presumed healthy, so that a restart does not empty the tables) and
//! its first check is due at once. `fall` consecutive failures take it down; `rise`
//! consecutive successes bring it back ([`Health::record`]).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};

use super::messages::{BackendHealth, HealthStatus};
use super::state::{records_of, BackendRecord, Desired, VipRecord};
use crate::config::{HealthCheck, HealthCheckKind};

/// Prober threads. A check takes at most its timeout, so this many keep up with e.g. 400
/// unresponsive backends at 1 s interval and 50 ms timeout, and with any number of answering
/// ones.
pub const PROBERS: usize = 4;

/// What the control thread knows of one backend's health.
#[derive(Clone, Debug)]
pub struct Health {
    pub status: HealthStatus,
    pub successes: u32,
    pub failures: u32,
    pub checks: u64,
    pub failed_checks: u64,
    pub last_error: Option<String>,
    /// When `status` last changed (or checks began).
    pub since: Instant,
    pub next_due: Instant,
    pub in_flight: bool,
}

impl Health {
    /// A backend with a health check, presumed up, first check due now.
    pub fn new(now: Instant) -> Health {
        Health {
            status: HealthStatus::Up,
            successes: 0,
            failures: 0,
            checks: 0,
            failed_checks: 0,
            last_error: None,
            since: now,
            next_due: now,
            in_flight: false,
        }
    }

    /// Counts one check's outcome; returns the new status if it changed.
    pub fn record(
        &mut self,
        outcome: &Result<(), String>,
        check: &HealthCheck,
        now: Instant,
    ) -> Option<HealthStatus> {
        self.in_flight = false;
        self.checks += 1;
        let next = match outcome {
            Ok(()) => {
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
                self.last_error = None;
                (self.status == HealthStatus::Down && self.successes >= u32::from(check.rise))
                    .then_some(HealthStatus::Up)
            }
            Err(e) => {
                self.failed_checks += 1;
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
                self.last_error = Some(e.clone());
                (self.status == HealthStatus::Up && self.failures >= u32::from(check.fall))
                    .then_some(HealthStatus::Down)
            }
        };
        if let Some(status) = next {
            self.status = status;
            self.since = now;
        }
        next
    }
}

/// Where health checks really connect, given where they would: the identity in the daemon.
/// Tests point it at servers on 127.0.0.1, since backends cannot be loopback addresses.
pub type ProbeRedirect = Arc<dyn Fn(SocketAddr) -> SocketAddr + Send + Sync>;

/// How one backend is checked.
#[derive(Clone)]
struct CheckPlan {
    check: HealthCheck,
    target: SocketAddr,
    host: String,
}

/// The health checks of the desired state: how each checked backend is checked, what is
/// known of its health, and the probers that run the checks.
#[derive(Default)]
pub struct Checks {
    plans: HashMap<u32, CheckPlan>,
    health: HashMap<u32, Health>,
    prober: Option<Prober>,
    redirect: Option<ProbeRedirect>,
}

impl Checks {
    pub fn new(redirect: Option<ProbeRedirect>) -> Checks {
        Checks {
            redirect,
            ..Checks::default()
        }
    }

    /// Starts the prober threads (from the control thread, whose affinity they inherit).
    /// Until then checks are planned but not run.
    pub fn start(&mut self) -> std::io::Result<()> {
        self.prober = Some(Prober::start(PROBERS)?);
        Ok(())
    }

    /// Brings the check plans from `before` to `desired`: those of the VIPs that changed are
    /// made anew. Keeps the health of backends that stay checked, starts new ones up.
    /// Returns whether a backend that was down lost its health (a snapshot built before
    /// says it is down; without its health it is not).
    pub fn sync(&mut self, before: &Desired, desired: &Desired, now: Instant) -> bool {
        let kept = records_of(&desired.vips);
        let unchanged = records_of(&before.vips);
        let mut dropped = Vec::new();
        for v in before
            .vips
            .iter()
            .filter(|v| !kept.contains(&Arc::as_ptr(v)))
        {
            for b in &v.backends {
                if self.plans.remove(&b.id).is_some() {
                    dropped.push(b.id);
                }
            }
        }
        let mut added = Vec::new();
        for v in desired
            .vips
            .iter()
            .filter(|v| !unchanged.contains(&Arc::as_ptr(v)))
        {
            for (id, plan) in self.plans_of(v) {
                self.plans.insert(id, plan);
                added.push(id);
            }
        }
        let mut down_dropped = false;
        for id in dropped {
            if self.plans.contains_key(&id) {
                continue;
            }
            if let Some(health) = self.health.remove(&id) {
                down_dropped |= health.status == HealthStatus::Down;
            }
        }
        for id in added {
            self.health.entry(id).or_insert_with(|| Health::new(now));
        }
        down_dropped
    }

    /// How the backends of one VIP are checked, by backend id.
    fn plans_of(&self, v: &VipRecord) -> Vec<(u32, CheckPlan)> {
        let Ok(vip) = v.to_config() else {
            return Vec::new();
        };
        let Some(check) = &vip.healthcheck else {
            return Vec::new();
        };
        let mut plans = Vec::new();
        for (b, record) in vip.backends.iter().zip(&v.backends) {
            let Some(port) = vip.healthcheck_port(b) else {
                continue;
            };
            let real = SocketAddr::new(b.address.addr, port);
            let target = self.redirect.as_ref().map_or(real, |r| r(real));
            plans.push((
                record.id,
                CheckPlan {
                    check: check.clone(),
                    target,
                    host: real.to_string(),
                },
            ));
        }
        plans
    }

    /// A backend's health status; `Unchecked` without a check.
    pub fn status(&self, backend_id: u32) -> HealthStatus {
        self.health
            .get(&backend_id)
            .map_or(HealthStatus::Unchecked, |h| h.status)
    }

    /// What `GET /v1/health` says of one backend.
    pub fn report(&self, b: &BackendRecord, now: Instant) -> BackendHealth {
        let h = self.health.get(&b.id);
        BackendHealth {
            address: b.address,
            id: b.id,
            status: h.map_or(HealthStatus::Unchecked, |h| h.status),
            target: self.plans.get(&b.id).map(|p| p.host.clone()),
            consecutive_successes: h.map_or(0, |h| h.successes),
            consecutive_failures: h.map_or(0, |h| h.failures),
            checks: h.map_or(0, |h| h.checks),
            failures: h.map_or(0, |h| h.failed_checks),
            last_error: h.and_then(|h| h.last_error.clone()),
            since_secs: h.map(|h| now.duration_since(h.since).as_secs_f64()),
        }
    }

    /// Takes in the checks that finished and hands out the ones due. Returns each backend
    /// whose status changed, in words, for the log line of the snapshot it causes.
    pub fn poll(&mut self, desired: &Desired, now: Instant) -> Vec<String> {
        let mut changed = Vec::new();
        while let Some(outcome) = self.prober.as_ref().and_then(Prober::try_outcome) {
            let (Some(plan), Some(health)) = (
                self.plans.get(&outcome.backend_id),
                self.health.get_mut(&outcome.backend_id),
            ) else {
                continue; // the backend went away while its check ran
            };
            let Some(status) = health.record(&outcome.result, &plan.check, now) else {
                continue;
            };
            let (rise, fall) = (plan.check.rise, plan.check.fall);
            let error = health.last_error.clone().unwrap_or_default();
            let (vip, backend) = backend_words(desired, outcome.backend_id);
            match status {
                HealthStatus::Down => tracing::warn!(
                    "backend {backend} of vip {vip} is down after {fall} failed checks: {error}"
                ),
                _ => tracing::info!(
                    "backend {backend} of vip {vip} is up after {rise} passed checks"
                ),
            }
            changed.push(format!(
                "backend {backend} of vip {vip} is {}",
                status.as_str()
            ));
        }
        if let Some(prober) = &self.prober {
            for (id, plan) in &self.plans {
                let Some(health) = self.health.get_mut(id) else {
                    continue;
                };
                if health.in_flight || now < health.next_due {
                    continue;
                }
                health.in_flight = true;
                let interval = Duration::from_millis(u64::from(plan.check.interval_ms));
                // From the due time, not from now, so the interval does not drift by a tick
                // per check; but never schedule into the past after a stall.
                health.next_due = (health.next_due + interval).max(now);
                prober.submit(Job {
                    backend_id: *id,
                    target: plan.target,
                    host: plan.host.clone(),
                    kind: plan.check.kind.clone(),
                    timeout: Duration::from_millis(u64::from(plan.check.timeout_ms)),
                });
            }
        }
        changed
    }
}

/// A backend's VIP and address, for the log.
fn backend_words(desired: &Desired, backend_id: u32) -> (String, String) {
    for v in &desired.vips {
        if let Some(b) = v.backends.iter().find(|b| b.id == backend_id) {
            return (v.vip.to_string(), b.address.to_string());
        }
    }
    ("?".into(), format!("#{backend_id}"))
}

/// One check to run.
#[derive(Clone, Debug)]
pub struct Job {
    pub backend_id: u32,
    /// Where the check connects.
    pub target: SocketAddr,
    /// The `Host` header of an HTTP check: the backend's own address and port.
    pub host: String,
    pub kind: HealthCheckKind,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub backend_id: u32,
    pub result: Result<(), String>,
}

/// The pool of prober threads.
pub struct Prober {
    jobs: Option<Sender<Job>>,
    outcomes: Receiver<Outcome>,
    _threads: Vec<JoinHandle<()>>,
}

impl Prober {
    pub fn start(threads: usize) -> std::io::Result<Prober> {
        let (job_tx, job_rx) = crossbeam::channel::unbounded::<Job>();
        let (out_tx, out_rx) = crossbeam::channel::unbounded();
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let jobs = job_rx.clone();
            let outcomes = out_tx.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("fulcrum-health{i}"))
                    .spawn(move || {
                        for job in jobs {
                            let result = probe(job.target, &job.host, &job.kind, job.timeout);
                            let outcome = Outcome {
                                backend_id: job.backend_id,
                                result,
                            };
                            if outcomes.send(outcome).is_err() {
                                return;
                            }
                        }
                    })?,
            );
        }
        Ok(Prober {
            jobs: Some(job_tx),
            outcomes: out_rx,
            _threads: handles,
        })
    }

    pub fn submit(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // The receivers live as long as the threads, which only end when this sender
            // is dropped; a send cannot fail before that.
            let _ = jobs.send(job);
        }
    }

    pub fn try_outcome(&self) -> Option<Outcome> {
        self.outcomes.try_recv().ok()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        // Closing the queue ends every thread after its current check (within its timeout);
        // they are not joined so that stopping never waits on a backend.
        self.jobs.take();
    }
}

/// Runs one check: a TCP connection is accepted, and for HTTP `GET path` answers the
/// expected status, all within `timeout`.
pub fn probe(
    target: SocketAddr,
    host: &str,
    kind: &HealthCheckKind,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&target, timeout.max(Duration::from_millis(1)))
        .map_err(|e| format!("tcp connect to {target}: {}", describe(&e)))?;
    let HealthCheckKind::Http {
        path,
        expect_status,
    } = kind
    else {
        return Ok(());
    };
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("http check of {target}: no answer within {timeout:?}"))
    };
    let io = |e: std::io::Error| format!("http check of {target}: {}", describe(&e));
    stream.set_write_timeout(Some(left()?)).map_err(io)?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: fulcrum-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    // The status line is all we need: `HTTP/1.1 200 OK`.
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 128];
    while !head.contains(&b'\n') && head.len() < 512 {
        stream.set_read_timeout(Some(left()?)).map_err(io)?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            // DPDK's net_tap PMD raises SIGIO on its queues' file descriptors; a signal landing
            // on this thread interrupts the read, which is no failure of the backend.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            format!(
                "http check of {target}: answer is not HTTP ({:?})",
                line.chars().take(40).collect::<String>()
            )
        })?;
    if status == *expect_status {
        Ok(())
    } else {
        Err(format!(
            "http check of {target}: GET {path} answered {status}, expected {expect_status}"
        ))
    }
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn check(rise: u8, fall: u8) -> HealthCheck {
        HealthCheck {
            kind: HealthCheckKind::Tcp,
            port: None,
            interval_ms: 100,
            timeout_ms: 50,
            rise,
            fall,
        }
    }

    #[test]
    fn fall_failures_take_it_down_rise_successes_bring_it_back() {
        let now = Instant::now();
        let mut h = Health::new(now);
        let c = check(2, 3);
        let fail = Err("refused".to_string());
        assert_eq!(h.record(&fail, &c, now), None);
        assert_eq!(
            h.record(&Ok(()), &c, now),
            None,
            "a success resets the count"
        );
        assert_eq!(h.record(&fail, &c, now), None);
        assert_eq!(h.record(&fail, &c, now), None);
        assert_eq!(h.record(&fail, &c, now), Some(HealthStatus::Down));
        assert_eq!(h.record(&fail, &c, now), None);
        assert_eq!(h.last_error.as_deref(), Some("refused"));
        assert_eq!(h.record(&Ok(()), &c, now), None);
        assert_eq!(h.record(&Ok(()), &c, now), Some(HealthStatus::Up));
        assert_eq!((h.checks, h.failed_checks), (8, 5));
    }

    fn serve_once(answer: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                assert!(buf[..n].starts_with(b"GET /healthz HTTP/1.0\r\n"));
                let _ = s.write_all(answer.as_bytes());
            }
        });
        addr
    }

    #[test]
    fn probes_tcp_and_http_on_loopback() {
        let t = Duration::from_millis(500);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        assert_eq!(probe(open, "x", &HealthCheckKind::Tcp, t), Ok(()));
        drop(listener);
        let e = probe(open, "x", &HealthCheckKind::Tcp, t).unwrap_err();
        assert!(e.contains("tcp connect to 127.0.0.1:"), "{e}");

        let http = |expect_status| HealthCheckKind::Http {
            path: "/healthz".into(),
            expect_status,
        };
        let ok = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(probe(ok, "x", &http(200), t), Ok(()));
        let bad = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let e = probe(bad, "x", &http(200), t).unwrap_err();
        assert!(e.ends_with("answered 503, expected 200"), "{e}");
        let junk = serve_once("SSH-2.0-OpenSSH\r\n");
        let e = probe(junk, "x", &http(200), t).unwrap_err();
        assert!(e.contains("not HTTP"), "{e}");
    }

    #[test]
    fn a_silent_server_times_out_within_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let kind = HealthCheckKind::Http {
            path: "/".into(),
            expect_status: 200,
        };
        let start = Instant::now();
        let e = probe(addr, "x", &kind, Duration::from_millis(100)).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
        assert!(e.contains("timed out") || e.contains("no answer"), "{e}");
        drop(listener);
    }

    #[test]
    fn the_pool_runs_jobs_and_reports_outcomes() {
        let prober = Prober::start(2).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        for id in 0..4 {
            prober.submit(Job {
                backend_id: id,
                target,
                host: target.to_string(),
                kind: HealthCheckKind::Tcp,
                timeout: Duration::from_millis(200),
            });
        }
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.len() < 4 && Instant::now() < deadline {
            match prober.try_outcome() {
                Some(o) => {
                    assert_eq!(o.result, Ok(()));
                    seen.push(o.backend_id);
                }
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3]);
    }
}
