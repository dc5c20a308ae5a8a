//! The control plane: the one writer of the configuration.
//!
//! It owns the VIPs, backends, weights, drains and health; on every change it builds one
//! immutable snapshot of everything (all VIPs, one version) and publishes it; workers adopt
//! it at a burst boundary. It serves the local HTTP API and `/metrics`, runs the health
//! checks and reads next-hop MACs from the kernel. Everything runs on the control thread
//! except what can block, which goes to a few helper threads it spawns (so they share its
//! CPU affinity and never run on a worker's core):
//!
//! - one network thread, "fulcrum-api" ([`http`]): a single-threaded tokio runtime that
//!   accepts API connections and reads requests within time and size limits; it hands each
//!   complete, authenticated request to the control thread through a bounded queue, and the
//!   control thread answers them one at a time (`api.rs`). The control thread never touches
//!   a socket, so no client can stall it;
//! - [`health::PROBERS`] prober threads connect to backends ([`health`]);
//! - one thread reads the kernel's neighbour table ([`neighbours`]).
//!
//! The control thread's order for a change is in `plane.rs`: validate, build, persist,
//! publish, answer.
//!
//! [`DetachedApi`] is the same request handling without sockets, threads or a data plane.

pub mod adoption;
mod api;
pub mod counters;
pub mod diff;
pub mod health;
pub mod http;
pub mod messages;
pub mod metrics;
pub mod neighbours;
pub mod persist;
mod plane;
pub mod state;

use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::RecvTimeoutError;

pub use health::ProbeRedirect;
pub use state::ApiError;

use crate::addr::ControlAddr;
use crate::config::{Config, Control};
use crate::datapath::stats::WorkerStats;
use crate::runtime::handle::DataplaneHandle;
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
    #[error("cannot serve the control API on {listen}: {source}")]
    Serve {
        listen: ControlAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the control API's network thread ended unexpectedly; restart fulcrum")]
    ApiStopped,
}

/// The control plane, bound to its listen address, its first snapshot published.
pub struct ControlPlane {
    listener: Option<http::Listener>,
    limits: http::Limits,
    listen: ControlAddr,
    plane: Plane,
    /// The Unix socket's file: held for its `Drop`, which removes it.
    _socket: Option<SocketFile>,
}

/// A Unix socket file of ours: removed on drop, unless another process replaced it since.
struct SocketFile {
    path: PathBuf,
    /// Device and inode of the socket as we created it.
    id: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
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
        let initial = Initial::load(&config)?;
        ControlPlane::start(config, initial, dataplane, options)
    }

    /// As [`ControlPlane::new`], from the state [`Initial::load`] read (the daemon reads it
    /// once, before the data plane starts on [`Initial::specs`]).
    pub fn start(
        config: Config,
        initial: Initial,
        dataplane: DataplaneHandle,
        options: Options,
    ) -> Result<ControlPlane, ControlError> {
        let token = config.control.effective_token();
        let listen = config.control.listen.clone();
        if token.is_none() && !listen.is_local() {
            return Err(ControlError::InsecureListen { listen });
        }
        raise_fd_limit(&config.control);
        let limits = http::Limits::of(&config.control);
        let desired = initial.into_desired(&config)?;
        let plane = Plane::new(config, desired, dataplane, token, options.probe_redirect)
            .map_err(|e| ControlError::Invalid(e.message))?;
        let listen_error = |reason: String| ControlError::Listen {
            listen: listen.clone(),
            reason,
        };
        let (listener, bound, socket) = match &listen {
            ControlAddr::Tcp(addr) => {
                let listener = http::listen_tcp(*addr).map_err(|e| {
                    listen_error(format!(
                        "{e}; is another fulcrum running? Pick another [control] listen address"
                    ))
                })?;
                let bound = listener
                    .local_addr()
                    .map_err(|e| listen_error(e.to_string()))?;
                (http::Listener::Tcp(listener), ControlAddr::Tcp(bound), None)
            }
            ControlAddr::Unix(path) => {
                let (listener, socket) = bind_unix(path).map_err(listen_error)?;
                (http::Listener::Unix(listener), listen.clone(), Some(socket))
            }
        };
        tracing::info!(
            version = plane.version(),
            "control API listening on {bound}{}",
            if plane.token().is_some() {
                " (token required)"
            } else {
                ""
            }
        );
        Ok(ControlPlane {
            listener: Some(listener),
            limits,
            listen: bound,
            plane,
            _socket: socket,
        })
    }

    /// The bound API address (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> ControlAddr {
        self.listen.clone()
    }

    /// The newest published snapshot version.
    pub fn version(&self) -> u64 {
        self.plane.version()
    }

    /// Serves the API and runs health checks until `stop` is set (seen within [`TICK`],
    /// whatever the API's clients do). Call it on the control thread: the helper threads it
    /// spawns inherit that thread's CPU affinity.
    pub fn serve(mut self, stop: Arc<AtomicBool>) -> Result<(), ControlError> {
        self.plane.start_helpers().map_err(ControlError::Thread)?;
        let listener = self.listener.take().ok_or(ControlError::ApiStopped)?;
        let mut net = http::NetThread::start("fulcrum-api").map_err(ControlError::Thread)?;
        let (queue, jobs) = crossbeam::channel::bounded::<http::Job>(http::QUEUE);
        http::serve(
            &net,
            listener,
            self.limits,
            self.plane.token().cloned(),
            queue,
            self.plane.api_counters().clone(),
        )
        .map_err(|source| ControlError::Serve {
            listen: self.listen.clone(),
            source,
        })?;
        let mut last_housekeeping = Instant::now();
        let mut result = Ok(());
        while !stop.load(Ordering::Acquire) {
            match jobs.recv_timeout(TICK) {
                Ok(job) => {
                    let response = api::handle(&mut self.plane, &job.request());
                    // The network thread may have dropped the request (the runtime is
                    // stopping); the change, if any, is made all the same.
                    let _ = job.reply.send(response);
                    // After the answer was handed off: a change's adoption by the workers is
                    // measured from there.
                    self.plane.await_adoption(Some(Instant::now()));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    result = Err(ControlError::ApiStopped);
                    break;
                }
            }
            let now = Instant::now();
            self.plane.tick(now);
            if now.duration_since(last_housekeeping) >= HOUSEKEEPING {
                self.plane.housekeeping();
                last_housekeeping = now;
            }
        }
        tracing::info!("control plane stopping");
        // Drops every connection, stuck clients' included.
        net.stop();
        result
    }
}

/// The control API's request handling with no socket, no thread and no data plane: what the
/// daemon does with a request once its network side has read it whole (size limit, token,
/// routing, every endpoint's answer). For fuzzing and tests.
///
/// The token is the configuration's `[control] token`; `FULCRUM_TOKEN` is not read. A
/// configured `state_file` is read and written as the daemon would.
pub struct DetachedApi {
    plane: Plane,
}

impl DetachedApi {
    /// Builds the state from `config` (and its state file) and publishes the first snapshot
    /// to a detached data plane.
    pub fn new(config: Config) -> Result<DetachedApi, ControlError> {
        let token = config.control.token.clone();
        let desired = Initial::load(&config)?.into_desired(&config)?;
        let plane = Plane::new(config, desired, DataplaneHandle::detached(), token, None)
            .map_err(|e| ControlError::Invalid(e.message))?;
        Ok(DetachedApi { plane })
    }

    /// Answers one request: `method` (`GET`), `url` (path and query, `/v1/vips?x=1`),
    /// the `Authorization` header's value and the body. Returns the status, the content
    /// type and the body of the answer.
    pub fn handle(
        &mut self,
        method: &str,
        url: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> (u16, &'static str, Vec<u8>) {
        let response = api::handle(
            &mut self.plane,
            &api::ApiRequest {
                method,
                url,
                authorization,
                body,
            },
        );
        (response.status, response.content_type, response.body)
    }

    /// The newest published snapshot version.
    pub fn version(&self) -> u64 {
        self.plane.version()
    }
}

/// File descriptors kept for everything but API connections (EAL, ports, TAPs, health
/// checks, the state file).
const FD_RESERVE: u64 = 1024;

/// Raises the soft open-file limit toward the hard one so that `max_connections` API
/// connections fit beside everything else; says what it did, or why it could not.
fn raise_fd_limit(control: &Control) {
    let wanted = u64::from(control.max_connections) + FD_RESERVE;
    let (soft, hard) = match rlimit::Resource::NOFILE.get() {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!("cannot read the open-file limit (RLIMIT_NOFILE): {e}");
            return;
        }
    };
    if soft >= wanted {
        return;
    }
    let new = wanted.min(hard);
    if new > soft {
        match rlimit::Resource::NOFILE.set(new, hard) {
            Ok(()) => tracing::info!(
                "raised the open-file limit (RLIMIT_NOFILE) from {soft} to {new} for [control] max_connections = {}",
                control.max_connections
            ),
            Err(e) => tracing::warn!(
                "cannot raise the open-file limit (RLIMIT_NOFILE) from {soft} to {new}: {e}"
            ),
        }
    }
    if new < wanted {
        tracing::warn!(
            "the open-file limit (RLIMIT_NOFILE) is {new} (hard limit {hard}), too low for [control] max_connections = {} and {FD_RESERVE} more; when it runs out, new API connections wait until some close. Raise the hard limit (LimitNOFILE= in systemd, ulimit -Hn) or lower max_connections",
            control.max_connections
        );
    }
}

/// The desired state the daemon starts from, read once at start-up: the state file's if it
/// exists (it holds every change made through the API, which the configuration file does
/// not), else the configuration file's VIPs.
pub struct Initial {
    desired: Desired,
    /// No state file yet: the control plane writes one at once, so the ids are fixed from
    /// the first start.
    fresh: bool,
}

impl Initial {
    /// Reads and checks the state file (if configured and present) or the configuration's
    /// VIPs. Writes nothing.
    pub fn load(config: &Config) -> Result<Initial, ControlError> {
        let Some(path) = &config.control.state_file else {
            let desired =
                Desired::from_config(config).map_err(|e| ControlError::Invalid(e.message))?;
            return Ok(Initial {
                desired,
                fresh: false,
            });
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
                Ok(Initial {
                    desired,
                    fresh: false,
                })
            }
            None => {
                let desired =
                    Desired::from_config(config).map_err(|e| ControlError::Invalid(e.message))?;
                desired
                    .validate(config)
                    .map_err(|e| ControlError::Invalid(e.message))?;
                Ok(Initial {
                    desired,
                    fresh: true,
                })
            }
        }
    }

    /// The VIPs the data plane starts with, before the control plane runs: the ones
    /// [`ControlPlane::start`] publishes first, with the same ids, so workers balance from
    /// their first packet and keep their flows when the control plane takes over. Every
    /// backend starts healthy (health checks have not run yet); drained ones and weight 0
    /// drain.
    pub fn specs(&self) -> Vec<crate::snapshot::VipSpec> {
        plane::specs_of(&self.desired, plane::intended_state, |b| b.mac.map(|m| m.0))
    }

    /// The state to run, written to a fresh state file first.
    fn into_desired(self, config: &Config) -> Result<Desired, ControlError> {
        if let (true, Some(path)) = (self.fresh, &config.control.state_file) {
            persist::store(path, &self.desired)?;
        }
        Ok(self.desired)
    }
}

/// [`Initial::specs`] of [`Initial::load`]: the data plane's first VIPs for `config`.
pub fn initial_specs(config: &Config) -> Result<Vec<crate::snapshot::VipSpec>, ControlError> {
    Ok(Initial::load(config)?.specs())
}

/// Binds a Unix socket that only its owner may use, such that no other user can reach it at
/// any moment: bound inside a fresh directory of mode 0700 next to `path` (which nobody else
/// can enter), set to 0600 there, then renamed into place. The umask is never changed: other
/// threads create files meanwhile.
fn bind_unix(path: &Path) -> Result<(UnixListener, SocketFile), String> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
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
    static PRIVATE_DIRS: AtomicU32 = AtomicU32::new(0);
    let name = path.file_name().ok_or("the path has no file name")?;
    let mut dir_name = std::ffi::OsString::from(".");
    dir_name.push(name);
    dir_name.push(format!(
        ".{}.{}",
        std::process::id(),
        PRIVATE_DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    let dir = path.with_file_name(dir_name);
    // The umask can only take bits away from 0700; the chmod gives the owner back what a
    // strict umask took, never more.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| format!("cannot create the private directory {}: {e}", dir.display()))?;
    let inner = dir.join("s");
    let bound = http::listen_unix(&inner)
        .map_err(|e| {
            format!(
                "{e}{}",
                if inner.as_os_str().len() > 100 {
                    " (a Unix socket's path must be short: use one of at most 80 bytes)"
                } else {
                    ""
                }
            )
        })
        .and_then(|listener| {
            std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))
                .and_then(|()| std::fs::rename(&inner, path))
                .and_then(|()| std::fs::symlink_metadata(path))
                .map(|meta| {
                    (
                        listener,
                        SocketFile {
                            path: path.to_owned(),
                            id: (meta.dev(), meta.ino()),
                        },
                    )
                })
                .map_err(|e| e.to_string())
        });
    let _ = std::fs::remove_file(&inner);
    let _ = std::fs::remove_dir(&dir);
    bound
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
