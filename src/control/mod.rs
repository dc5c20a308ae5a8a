//! The control plane: the one writer of the configuration.
//!
//! It owns the VIPs, backends, weights, drains and health; on every change it builds one
//! immutable snapshot of everything (all VIPs, one version) and publishes it; workers adopt
//! it at a burst boundary. It serves the local HTTP API and `/metrics`, runs the health
//! checks and reads next-hop MACs from the kernel. Everything runs on the control thread
//! except blocking work, which goes to a few helper threads it spawns (so they share its CPU
//! affinity and never run on a worker's core):
//!
//! - `tiny_http`'s accept and connection threads parse requests; the control thread answers
//!   them one at a time (`api.rs`);
//! - [`health::PROBERS`] prober threads connect to backends ([`health`]);
//! - one thread reads the kernel's neighbour table ([`neighbours`]).
//!
//! The control thread's order for a change is in `plane.rs`: validate, build, persist,
//! publish, answer.

mod api;
pub mod diff;
pub mod health;
pub mod messages;
pub mod metrics;
pub mod neighbours;
pub mod persist;
mod plane;
pub mod state;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use plane::ProbeRedirect;
pub use state::ApiError;

use crate::addr::ControlAddr;
use crate::config::Config;
use crate::handle::DataplaneHandle;
use crate::stats::WorkerStats;
use persist::PersistError;
use plane::Plane;
use state::Desired;

/// How long the control thread waits for a request before doing its other work; bounds the
/// delay of a due health check.
const TICK: Duration = Duration::from_millis(10);
/// How often retired snapshots are freed and histograms collected.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Settings that are not in the configuration file.
#[derive(Clone, Default)]
pub struct Options {
    /// Where health checks really connect (see [`ProbeRedirect`]). `None` in the daemon.
    pub probe_redirect: Option<ProbeRedirect>,
}

/// Why the control plane cannot start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control.listen = {listen} is reachable from other hosts and no API token is set, so anyone who reaches it could reconfigure the balancer; set [control] token (or the FULCRUM_TOKEN environment variable), or listen on 127.0.0.1:9180 or unix:/run/fulcrum.sock")]
    InsecureListen { listen: ControlAddr },
    #[error("cannot listen on {listen}: {reason}")]
    Listen { listen: ControlAddr, reason: String },
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("state file {path} does not fit the configuration: {message}; fix the configuration file, or move the state file away to start from the configuration file's VIPs")]
    StateConflict { path: PathBuf, message: String },
    #[error("the configuration's VIPs cannot be published: {0}")]
    Invalid(String),
    #[error("cannot start the control plane's helper threads: {0}")]
    Thread(#[source] std::io::Error),
}

/// The control plane, bound to its listen address, its first snapshot published.
pub struct ControlPlane {
    server: tiny_http::Server,
    listen: ControlAddr,
    plane: Plane,
    /// Dropped after `server`, whose accept thread it lets end.
    socket: Option<SocketFile>,
}

/// A Unix socket bound under a temporary name and renamed into place.
struct SocketFile {
    path: PathBuf,
    bound: PathBuf,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.bound);
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlPlane {
    /// Builds the state from `config` (and the state file, if configured and present: its
    /// VIPs replace the file's), publishes the first snapshot and binds the API listener.
    pub fn new(config: Config, dataplane: DataplaneHandle) -> Result<ControlPlane, ControlError> {
        ControlPlane::with_options(config, dataplane, Options::default())
    }

    pub fn with_options(
        config: Config,
        dataplane: DataplaneHandle,
        options: Options,
    ) -> Result<ControlPlane, ControlError> {
        let token = config.control.effective_token();
        let listen = config.control.listen.clone();
        if token.is_none() && !listen.is_local() {
            return Err(ControlError::InsecureListen { listen });
        }
        let desired = initial_state(&config)?;
        let plane = Plane::new(config, desired, dataplane, token, options.probe_redirect)
            .map_err(|e| ControlError::Invalid(e.message))?;
        let listen_error = |reason: String| ControlError::Listen {
            listen: listen.clone(),
            reason,
        };
        let (server, bound, socket) = match &listen {
            ControlAddr::Tcp(addr) => {
                let listener = TcpListener::bind(addr).map_err(|e| {
                    listen_error(format!(
                        "{e}; is another fulcrum running? Pick another [control] listen address"
                    ))
                })?;
                let bound = listener
                    .local_addr()
                    .map_err(|e| listen_error(e.to_string()))?;
                let server = tiny_http::Server::from_listener(listener, None)
                    .map_err(|e| listen_error(e.to_string()))?;
                (server, ControlAddr::Tcp(bound), None)
            }
            ControlAddr::Unix(path) => {
                let (listener, bound) = bind_unix(path).map_err(listen_error)?;
                let socket = SocketFile {
                    path: path.clone(),
                    bound,
                };
                let server = tiny_http::Server::from_listener(listener, None)
                    .map_err(|e| listen_error(e.to_string()))?;
                (server, listen.clone(), Some(socket))
            }
        };
        tracing::info!(
            version = plane.version,
            "control API listening on {bound}{}",
            if plane.token.is_some() {
                " (token required)"
            } else {
                ""
            }
        );
        Ok(ControlPlane {
            server,
            listen: bound,
            plane,
            socket,
        })
    }

    /// The bound API address (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> ControlAddr {
        self.listen.clone()
    }

    /// The newest published snapshot version.
    pub fn version(&self) -> u64 {
        self.plane.version
    }

    /// Serves the API and runs health checks until `stop` is set. Call it on the control
    /// thread: the helper threads it spawns inherit that thread's CPU affinity.
    pub fn serve(mut self, stop: Arc<AtomicBool>) -> Result<(), ControlError> {
        self.plane.start_helpers().map_err(ControlError::Thread)?;
        let mut last_housekeeping = Instant::now();
        while !stop.load(Ordering::Acquire) {
            match self.server.recv_timeout(TICK) {
                Ok(Some(request)) => api::serve(&mut self.plane, request),
                Ok(None) => {}
                Err(e) => tracing::warn!("control API: {e}"),
            }
            let now = Instant::now();
            self.plane.tick(now);
            if now.duration_since(last_housekeeping) >= HOUSEKEEPING {
                self.plane.housekeeping();
                last_housekeeping = now;
            }
        }
        tracing::info!("control plane stopping");
        Ok(())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.server.unblock();
        // tiny_http wakes its accept thread by connecting to the name the socket was bound
        // under; give the socket that name back until the server is gone.
        if let Some(socket) = &self.socket {
            let _ = std::fs::rename(&socket.path, &socket.bound);
        }
    }
}

/// The VIPs the data plane starts with, before the control plane runs: the ones
/// [`ControlPlane::new`] publishes first, with the same ids, so workers balance from their
/// first packet and keep their flows when the control plane takes over. Every backend starts
/// healthy (health checks have not run yet); drained ones and weight 0 drain.
pub fn initial_specs(config: &Config) -> Result<Vec<crate::snapshot::VipSpec>, ControlError> {
    let desired = match &config.control.state_file {
        Some(path) => match persist::load(path)? {
            Some(d) => d,
            None => Desired::from_config(config).map_err(|e| ControlError::Invalid(e.message))?,
        },
        None => Desired::from_config(config).map_err(|e| ControlError::Invalid(e.message))?,
    };
    Ok(plane::specs_of(
        &desired,
        |b| {
            if b.drained || b.weight == 0 {
                crate::snapshot::BackendState::Draining
            } else {
                crate::snapshot::BackendState::Active
            }
        },
        |b| b.mac.map(|m| m.0),
    ))
}

/// The VIPs to start from: the state file's if it exists (it holds every change made through
/// the API, which the configuration file does not), else the configuration file's, written to
/// the state file at once so their ids are fixed from the first start.
fn initial_state(config: &Config) -> Result<Desired, ControlError> {
    let Some(path) = &config.control.state_file else {
        return Desired::from_config(config).map_err(|e| ControlError::Invalid(e.message));
    };
    match persist::load(path)? {
        Some(desired) => {
            desired
                .validate(config)
                .map_err(|e| ControlError::StateConflict {
                    path: path.clone(),
                    message: e.message,
                })?;
            if config.vips.len() != desired.vips.len()
                || config.vips.iter().any(|v| desired.vip(&v.key).is_err())
            {
                tracing::warn!(
                    "state file {} holds {} VIPs and replaces the configuration file's {} [[vip]] tables; to make the file's VIPs current: fulcrum config apply FILE",
                    path.display(),
                    desired.vips.len(),
                    config.vips.len()
                );
            } else {
                tracing::info!("state file {}: {} VIPs", path.display(), desired.vips.len());
            }
            Ok(desired)
        }
        None => {
            let desired =
                Desired::from_config(config).map_err(|e| ControlError::Invalid(e.message))?;
            desired
                .validate(config)
                .map_err(|e| ControlError::Invalid(e.message))?;
            persist::store(path, &desired)?;
            Ok(desired)
        }
    }
}

/// Binds a Unix socket that only its owner may use: bound under a temporary name, restricted
/// to 0600, then renamed into place, so the final path is never open to others.
fn bind_unix(path: &Path) -> Result<(UnixListener, PathBuf), String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{} exists and is not a socket; remove it or pick another path",
                path.display()
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another process serves {}; is fulcrum already running?",
                path.display()
            ));
        }
        // A socket nobody listens on: left over by a fulcrum that was killed.
        std::fs::remove_file(path).map_err(|e| format!("cannot remove the stale socket: {e}"))?;
    }
    let name = path.file_name().ok_or("the path has no file name")?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(|e| e.to_string())?;
    let result = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.to_string());
    }
    Ok((listener, tmp))
}

/// Whether every worker runs `version` or newer (true with no workers).
pub fn workers_at(workers: &[Arc<WorkerStats>], version: u64) -> bool {
    workers.iter().all(|w| w.snapshot_version.get() >= version)
}

/// For the benchmark of change propagation: waits until every worker runs `version` or
/// newer; returns how long that took, or `None` after `timeout`. Clone the handle's
/// `workers` before giving it to [`ControlPlane::new`], then call this with the `version`
/// an API answer carries.
pub fn wait_for_workers(
    workers: &[Arc<WorkerStats>],
    version: u64,
    timeout: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if workers_at(workers, version) {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::yield_now();
    }
}

/// Where a `ControlAddr` can be reached as an HTTP base URL (for tests and logs).
pub fn api_url(addr: &ControlAddr) -> String {
    match addr {
        ControlAddr::Tcp(SocketAddr::V6(a)) => format!("http://[{}]:{}", a.ip(), a.port()),
        ControlAddr::Tcp(a) => format!("http://{a}"),
        ControlAddr::Unix(path) => format!("unix:{}", path.display()),
    }
}
