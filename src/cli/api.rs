//! The commands that talk to a running daemon's control API: `fulcrum vip`, `backend`,
//! `stats`, `health` and `config`.
//!
//! The daemon is found from `--api URL`, else `FULCRUM_API`, else `http://127.0.0.1:9180`;
//! `unix:/path` reaches a daemon listening on a Unix socket. The token comes from `--token`
//! or `FULCRUM_TOKEN`. Addresses are checked here before anything is sent, with the same
//! messages as the daemon's; every error says what was wrong and how to fix it, and makes
//! the command exit non-zero ([`CliError::exit_code`]).

use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;

use crate::addr::{BackendAddr, MacAddr, VipKey};
use crate::config::MAX_WEIGHT;
use crate::control::messages::{
    ApplyReport, BackendList, BackendReply, BackendRequest, Done, ErrorBody, HealthCheckKindName,
    HealthCheckSpec, HealthReport, HealthStatus, SnapshotReport, StatsReport, VipList, VipReply,
    VipRequest, WeightRequest,
};

/// Where the CLI looks for the daemon without `--api` or `FULCRUM_API`.
pub const DEFAULT_API: &str = "http://127.0.0.1:9180";
pub const API_ENV: &str = "FULCRUM_API";

/// Longest answer read from the daemon.
const MAX_RESPONSE: u64 = 64 << 20;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or a file it names is wrong; nothing was sent.
    #[error("{0}")]
    Usage(String),
    /// The daemon refused the request (and changed nothing).
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("cannot reach the fulcrum API at {api}: {reason}; is `fulcrum run` running there? Point the CLI at it with --api URL or FULCRUM_API")]
    Unreachable { api: String, reason: String },
    #[error("unexpected answer from the fulcrum API at {api}: {reason}")]
    Protocol { api: String, reason: String },
    #[error("{0}")]
    Io(String),
}

impl CliError {
    /// 2 for a wrong command line or file (as clap), 3 when the daemon cannot be reached,
    /// 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
            _ => 1,
        }
    }

    /// The HTTP status of a refused request.
    pub fn status(&self) -> Option<u16> {
        match self {
            CliError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The global options that locate the daemon. Mount with `#[command(flatten)]`.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// The daemon's control API: http://HOST:PORT or unix:PATH.
    #[arg(long, global = true, env = API_ENV, default_value = DEFAULT_API, value_name = "URL")]
    pub api: String,
    /// The API token, if the daemon requires one.
    #[arg(long, global = true, env = crate::config::TOKEN_ENV, hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
}

impl ApiArgs {
    pub fn target(&self) -> Result<ApiTarget, CliError> {
        ApiTarget::new(&self.api, self.token.clone())
    }
}

#[derive(Clone, Debug)]
enum Endpoint {
    /// `http://host:port`, without a trailing slash.
    Http(String),
    Unix(PathBuf),
}

/// A daemon's API and how to authenticate to it.
#[derive(Clone)]
pub struct ApiTarget {
    endpoint: Endpoint,
    token: Option<String>,
    shown: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for ApiTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTarget")
            .field("api", &self.shown)
            .finish_non_exhaustive()
    }
}

/// A raw answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl ApiTarget {
    /// `url` is `http://HOST:PORT` (a path is not allowed) or `unix:PATH`.
    pub fn new(url: &str, token: Option<String>) -> Result<ApiTarget, CliError> {
        let bad = |why: &str| {
            CliError::Usage(format!(
                "--api {url:?} {why}; give http://HOST:PORT (e.g. {DEFAULT_API}) or unix:PATH (e.g. unix:/run/fulcrum.sock)"
            ))
        };
        let endpoint = if let Some(path) = url.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("has no socket path"));
            }
            Endpoint::Unix(PathBuf::from(path))
        } else if let Some(rest) = url.strip_prefix("http://") {
            let host = rest.trim_end_matches('/');
            if host.is_empty() || host.contains('/') {
                return Err(bad("must be only a scheme, host and port"));
            }
            Endpoint::Http(format!("http://{host}"))
        } else if url.starts_with("https://") {
            return Err(bad("uses https, which the local API does not serve"));
        } else {
            return Err(bad("is not an API address"));
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            // The API is local: a proxy from the environment must not intercept it.
            .proxy(None)
            .build()
            .into();
        Ok(ApiTarget {
            endpoint,
            token: token.filter(|t| !t.is_empty()),
            shown: url.to_string(),
            agent,
        })
    }

    /// Sends one request; any HTTP status is an answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Answer, CliError> {
        match &self.endpoint {
            Endpoint::Http(base) => self.request_http(base, method, path, body),
            Endpoint::Unix(socket) => self.request_unix(socket, method, path, body),
        }
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> CliError {
        CliError::Unreachable {
            api: self.shown.clone(),
            reason: reason.to_string(),
        }
    }

    fn request_http(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Answer, CliError> {
        let url = format!("{base}{path}");
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        macro_rules! with_headers {
            ($builder:expr) => {{
                let mut b = $builder;
                if let Some(auth) = &auth {
                    b = b.header("Authorization", auth.as_str());
                }
                b
            }};
        }
        let result = match (method, body) {
            ("GET", _) => with_headers!(self.agent.get(&url)).call(),
            ("DELETE", _) => with_headers!(self.agent.delete(&url)).call(),
            ("POST", Some((ct, data))) => with_headers!(self.agent.post(&url))
                .header("Content-Type", ct)
                .send(data),
            ("POST", None) => with_headers!(self.agent.post(&url)).send_empty(),
            ("PATCH", Some((ct, data))) => with_headers!(self.agent.patch(&url))
                .header("Content-Type", ct)
                .send(data),
            ("PATCH", None) => with_headers!(self.agent.patch(&url)).send_empty(),
            _ => return Err(CliError::Usage(format!("unsupported method {method}"))),
        };
        let mut response = result.map_err(|e| match e {
            ureq::Error::Io(io) => self.unreachable(io),
            ureq::Error::HostNotFound => self.unreachable("host not found"),
            ureq::Error::ConnectionFailed => self.unreachable("connection failed"),
            ureq::Error::Timeout(t) => self.unreachable(format!("timed out ({t})")),
            other => CliError::Protocol {
                api: self.shown.clone(),
                reason: other.to_string(),
            },
        })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .map_err(|e| CliError::Protocol {
                api: self.shown.clone(),
                reason: e.to_string(),
            })?;
        Ok(Answer { status, body })
    }

    /// HTTP/1.1 over a Unix socket, one request per connection.
    fn request_unix(
        &self,
        socket: &std::path::Path,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Answer, CliError> {
        let mut stream =
            std::os::unix::net::UnixStream::connect(socket).map_err(|e| self.unreachable(e))?;
        let timeout = Some(Duration::from_secs(60));
        stream
            .set_read_timeout(timeout)
            .map_err(|e| self.unreachable(e))?;
        stream
            .set_write_timeout(timeout)
            .map_err(|e| self.unreachable(e))?;
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(token) = &self.token {
            let _ = write!(head, "Authorization: Bearer {token}\r\n");
        }
        let data = body.map_or(&[][..], |(_, d)| d);
        if let Some((ct, d)) = body {
            let _ = write!(
                head,
                "Content-Type: {ct}\r\nContent-Length: {}\r\n",
                d.len()
            );
        } else if method != "GET" && method != "DELETE" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(data))
            .map_err(|e| self.unreachable(e))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .map_err(|e| self.unreachable(e))?;
        parse_http_response(&raw).map_err(|reason| CliError::Protocol {
            api: self.shown.clone(),
            reason,
        })
    }

    /// Sends a request and decodes a success's JSON; a refusal becomes [`CliError::Api`].
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<T, CliError> {
        let answer = self.request(method, path, body)?;
        if !(200..300).contains(&answer.status) {
            return Err(self.refusal(&answer));
        }
        serde_json::from_slice(&answer.body).map_err(|e| CliError::Protocol {
            api: self.shown.clone(),
            reason: format!("cannot decode the answer to {method} {path}: {e}"),
        })
    }

    fn call_json<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        let bytes = serde_json::to_vec(body).map_err(|e| CliError::Io(e.to_string()))?;
        self.call(method, path, Some(("application/json", &bytes)))
    }

    fn refusal(&self, answer: &Answer) -> CliError {
        let message = serde_json::from_slice::<ErrorBody>(&answer.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| {
                format!(
                    "the API at {} answered HTTP {}: {}",
                    self.shown,
                    answer.status,
                    String::from_utf8_lossy(&answer.body).trim()
                )
            });
        CliError::Api {
            status: answer.status,
            message,
        }
    }

    /// Polls `GET /v1/snapshot` until every worker runs `version`; returns how long since
    /// the call. For measuring how long a change takes to reach the data plane.
    pub fn wait_for_workers(&self, version: u64, timeout: Duration) -> Result<Duration, CliError> {
        let start = Instant::now();
        loop {
            let report: SnapshotReport = self.call("GET", "/v1/snapshot", None)?;
            if report.workers.iter().all(|w| w.version >= version) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(CliError::Io(format!(
                    "workers still run versions {:?} after {timeout:?}, not {version}",
                    report.workers.iter().map(|w| w.version).collect::<Vec<_>>()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Splits a raw HTTP/1.x response into status and body (Content-Length, chunked, or up to
/// the end of the connection).
fn parse_http_response(raw: &[u8]) -> Result<Answer, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no complete HTTP header")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let line_end = rest[at..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("truncated chunked body")?;
            let size_text = String::from_utf8_lossy(&rest[at..at + line_end]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            at += line_end + 2;
            if size == 0 {
                break;
            }
            body.extend_from_slice(rest.get(at..at + size).ok_or("truncated chunk")?);
            at += size + 2;
        }
        body
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or("the body is shorter than its Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, body })
}

/// A path segment, percent-encoded: `192.0.2.10:80/tcp` -> `192.0.2.10:80%2Ftcp`.
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn vip_path(vip: &VipKey) -> String {
    format!("/v1/vips/{}", encode_segment(&vip.to_string()))
}

fn backend_path(vip: &VipKey, backend: &BackendAddr) -> String {
    format!(
        "{}/backends/{}",
        vip_path(vip),
        encode_segment(&backend.to_string())
    )
}

/// `--weight` and `backend weight`: 0 to 10000, with the daemon's message.
fn parse_weight(text: &str) -> Result<u16, String> {
    let weight: i64 = text.parse().map_err(|_| {
        format!("weight {text:?} is not a number; use 0 to {MAX_WEIGHT} (0 drains the backend)")
    })?;
    u16::try_from(weight)
        .ok()
        .filter(|w| *w <= MAX_WEIGHT)
        .ok_or_else(|| {
            format!("weight {weight} is out of range; use 0 to {MAX_WEIGHT} (0 drains the backend)")
        })
}

fn parse_interval(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds (e.g. 1 or 0.5)"))?;
    if !(0.01..=3600.0).contains(&v) {
        return Err(format!("{v} seconds is out of range (0.01 to 3600)"));
    }
    Ok(v)
}

// The commands that talk to the daemon, for the top-level parser to mount (flattened into
// its subcommands; a doc comment here would become the program's about text).
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// List, add and remove VIPs.
    #[command(subcommand)]
    Vip(VipCommand),
    /// List, add, remove, weight and drain the backends of a VIP.
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Counters summed over workers; --watch for live rates.
    Stats(StatsArgs),
    /// Health-check state of every backend.
    Health(HealthArgs),
    /// Show the running configuration, or apply a configuration file's VIPs.
    #[command(subcommand)]
    Config(ConfigCommand),
}

impl ClientCommand {
    pub fn run(&self, api: &ApiTarget) -> Result<(), CliError> {
        match self {
            ClientCommand::Vip(c) => c.run(api),
            ClientCommand::Backend(c) => c.run(api),
            ClientCommand::Stats(c) => c.run(api),
            ClientCommand::Health(c) => c.run(api),
            ClientCommand::Config(c) => c.run(api),
        }
    }

    pub fn run_to(&self, api: &ApiTarget, out: &mut dyn Write) -> Result<(), CliError> {
        match self {
            ClientCommand::Vip(c) => c.run_to(api, out),
            ClientCommand::Backend(c) => c.run_to(api, out),
            ClientCommand::Stats(c) => c.run_to(api, out, false),
            ClientCommand::Health(c) => c.run_to(api, out),
            ClientCommand::Config(c) => c.run_to(api, out),
        }
    }
}

fn io(e: std::io::Error) -> CliError {
    CliError::Io(format!("cannot write the output: {e}"))
}

fn stdout_run(f: impl FnOnce(&mut dyn Write) -> Result<(), CliError>) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    f(&mut lock)?;
    lock.flush().map_err(io)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EncapArg {
    Ipip,
    Gue,
    L2dsr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CheckArg {
    Tcp,
    Http,
}

#[derive(Subcommand, Debug)]
pub enum VipCommand {
    /// Add a VIP (with no backends; add them with `fulcrum backend add`).
    Add {
        #[arg(
            help = "ADDR:PORT/PROTO, e.g. 192.0.2.10:80/tcp or [2001:db8::10]:443/tcp (port 0 = all ports)"
        )]
        vip: VipKey,
        /// How packets reach the backends.
        #[arg(long, value_enum)]
        encap: EncapArg,
        /// UDP port of GUE packets (encap gue only; default 6080).
        #[arg(long, value_name = "PORT")]
        gue_port: Option<u16>,
        /// Maglev table size, a prime (default 65537).
        #[arg(long, value_name = "M")]
        table_size: Option<u32>,
        /// Health-check every backend: a TCP connect or an HTTP GET.
        #[arg(long, value_enum)]
        check: Option<CheckArg>,
        /// Port the checks go to (default: the backend's, else the VIP's).
        #[arg(long, value_name = "PORT", requires = "check")]
        check_port: Option<u16>,
        /// HTTP path of an http check (default /).
        #[arg(long, value_name = "PATH", requires = "check")]
        check_path: Option<String>,
        /// Status an http check expects (default 200).
        #[arg(long, value_name = "STATUS", requires = "check")]
        expect_status: Option<u16>,
        /// Milliseconds between checks of a backend (default 1000).
        #[arg(long, value_name = "MS", requires = "check")]
        interval_ms: Option<u32>,
        /// Milliseconds a check may take (default 500).
        #[arg(long, value_name = "MS", requires = "check")]
        timeout_ms: Option<u32>,
        /// Consecutive passed checks that bring a backend up (default 2).
        #[arg(long, requires = "check")]
        rise: Option<u32>,
        /// Consecutive failed checks that take a backend down (default 3).
        #[arg(long, requires = "check")]
        fall: Option<u32>,
    },
    /// Remove a VIP and all its backends.
    #[command(visible_alias = "rm")]
    Del {
        /// ADDR:PORT/PROTO.
        vip: VipKey,
    },
    /// List the VIPs.
    #[command(visible_alias = "ls")]
    List {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
}

impl VipCommand {
    pub fn run(&self, api: &ApiTarget) -> Result<(), CliError> {
        stdout_run(|out| self.run_to(api, out))
    }

    pub fn run_to(&self, api: &ApiTarget, out: &mut dyn Write) -> Result<(), CliError> {
        match self {
            VipCommand::Add {
                vip,
                encap,
                gue_port,
                table_size,
                check,
                check_port,
                check_path,
                expect_status,
                interval_ms,
                timeout_ms,
                rise,
                fall,
            } => {
                let encap = match encap {
                    EncapArg::Ipip => "ipip",
                    EncapArg::Gue => "gue",
                    EncapArg::L2dsr => "l2dsr",
                };
                let healthcheck = check.map(|kind| HealthCheckSpec {
                    kind: match kind {
                        CheckArg::Tcp => HealthCheckKindName::Tcp,
                        CheckArg::Http => HealthCheckKindName::Http,
                    },
                    port: *check_port,
                    path: check_path.clone(),
                    expect_status: *expect_status,
                    interval_ms: interval_ms.unwrap_or(1000),
                    timeout_ms: timeout_ms.unwrap_or(500),
                    rise: rise.unwrap_or(2),
                    fall: fall.unwrap_or(3),
                });
                let request = VipRequest {
                    vip: vip.to_string(),
                    encap: encap.into(),
                    gue_port: *gue_port,
                    table_size: *table_size,
                    healthcheck,
                    backends: vec![],
                };
                let reply: VipReply = api.call_json("POST", "/v1/vips", &request)?;
                writeln!(
                    out,
                    "vip {} added ({encap}, table size {}); version {}",
                    reply.vip.vip, reply.vip.table_size, reply.version
                )
                .map_err(io)
            }
            VipCommand::Del { vip } => {
                let done: Done = api.call("DELETE", &vip_path(vip), None)?;
                writeln!(out, "{}; version {}", done.message, done.version).map_err(io)
            }
            VipCommand::List { json } => {
                let list: VipList = api.call("GET", "/v1/vips", None)?;
                if *json {
                    return print_json(out, &list);
                }
                let mut rows = vec![vec![
                    "VIP".to_string(),
                    "ENCAP".into(),
                    "TABLE".into(),
                    "BACKENDS".into(),
                    "CHECK".into(),
                ]];
                for v in &list.vips {
                    let mut encap = v.encap.to_string();
                    if let Some(port) = v.gue_port {
                        let _ = write!(encap, ":{port}");
                    }
                    let mut backends = backend_summary(&v.backends);
                    if v.all_backends_down {
                        backends.push_str(" ALL DOWN");
                    }
                    let check = v
                        .healthcheck
                        .as_ref()
                        .map_or("-".to_string(), |h| match h.kind {
                            HealthCheckKindName::Tcp => format!("tcp/{}ms", h.interval_ms),
                            HealthCheckKindName::Http => format!("http/{}ms", h.interval_ms),
                        });
                    rows.push(vec![
                        v.vip.to_string(),
                        encap,
                        v.table_size.to_string(),
                        backends,
                        check,
                    ]);
                }
                write_table(out, &rows)?;
                if list.vips.is_empty() {
                    writeln!(
                        out,
                        "(no VIPs; add one with: fulcrum vip add ADDR:PORT/PROTO --encap ipip)"
                    )
                    .map_err(io)?;
                }
                Ok(())
            }
        }
    }
}

fn backend_summary(backends: &[crate::control::messages::BackendView]) -> String {
    use crate::snapshot::BackendState;
    let count = |s| backends.iter().filter(|b| b.state == s).count();
    let mut parts = vec![format!("{} active", count(BackendState::Active))];
    for (state, name) in [
        (BackendState::Draining, "draining"),
        (BackendState::Down, "down"),
    ] {
        let n = count(state);
        if n > 0 {
            parts.push(format!("{n} {name}"));
        }
    }
    parts.join(", ")
}

#[derive(Subcommand, Debug)]
pub enum BackendCommand {
    /// Add a backend to a VIP.
    Add {
        /// ADDR:PORT/PROTO.
        vip: VipKey,
        #[arg(help = "ADDR or ADDR:PORT, e.g. 198.51.100.7 or [2001:db8::7]:8080")]
        backend: BackendAddr,
        /// Relative share of new flows, 0 to 10000 (0 drains).
        #[arg(long, default_value = "1", value_parser = parse_weight, allow_negative_numbers = true)]
        weight: u16,
        /// The backend's MAC (l2dsr VIPs), when it is not to be resolved.
        #[arg(long)]
        mac: Option<MacAddr>,
    },
    /// Remove a backend from a VIP (its tracked flows move to other backends).
    #[command(visible_alias = "rm")]
    Del { vip: VipKey, backend: BackendAddr },
    /// List a VIP's backends.
    #[command(visible_alias = "ls")]
    List {
        vip: VipKey,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a backend's weight (0 drains it).
    Weight {
        vip: VipKey,
        backend: BackendAddr,
        #[arg(value_parser = parse_weight, allow_negative_numbers = true)]
        weight: u16,
    },
    /// Drain a backend: no new flows, tracked flows stay.
    Drain { vip: VipKey, backend: BackendAddr },
    /// Undo a drain.
    Undrain { vip: VipKey, backend: BackendAddr },
}

impl BackendCommand {
    pub fn run(&self, api: &ApiTarget) -> Result<(), CliError> {
        stdout_run(|out| self.run_to(api, out))
    }

    pub fn run_to(&self, api: &ApiTarget, out: &mut dyn Write) -> Result<(), CliError> {
        match self {
            BackendCommand::Add {
                vip,
                backend,
                weight,
                mac,
            } => {
                let request = BackendRequest {
                    address: backend.to_string(),
                    weight: Some(i64::from(*weight)),
                    mac: mac.map(|m| m.to_string()),
                };
                let path = format!("{}/backends", vip_path(vip));
                let reply: BackendReply = api.call_json("POST", &path, &request)?;
                writeln!(
                    out,
                    "backend {} added to vip {} (weight {}); version {}",
                    reply.backend.address, reply.vip, reply.backend.weight, reply.version
                )
                .map_err(io)
            }
            BackendCommand::Del { vip, backend } => {
                let done: Done = api.call("DELETE", &backend_path(vip, backend), None)?;
                writeln!(out, "{}; version {}", done.message, done.version).map_err(io)
            }
            BackendCommand::List { vip, json } => {
                let list: BackendList =
                    api.call("GET", &format!("{}/backends", vip_path(vip)), None)?;
                if *json {
                    return print_json(out, &list);
                }
                let mut rows = vec![vec![
                    "BACKEND".to_string(),
                    "WEIGHT".into(),
                    "STATE".into(),
                    "HEALTH".into(),
                    "MAC".into(),
                ]];
                for b in &list.backends {
                    let mut state = serde_json::to_value(b.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    if b.drained {
                        state.push_str(" (drained)");
                    }
                    rows.push(vec![
                        b.address.to_string(),
                        b.weight.to_string(),
                        state,
                        b.health.as_str().into(),
                        b.mac.map_or("-".into(), |m| m.to_string()),
                    ]);
                }
                write_table(out, &rows)?;
                if list.backends.is_empty() {
                    writeln!(
                        out,
                        "(no backends; add one with: fulcrum backend add {vip} ADDR)"
                    )
                    .map_err(io)?;
                }
                Ok(())
            }
            BackendCommand::Weight {
                vip,
                backend,
                weight,
            } => {
                let reply: BackendReply = api.call_json(
                    "PATCH",
                    &backend_path(vip, backend),
                    &WeightRequest {
                        weight: i64::from(*weight),
                    },
                )?;
                writeln!(
                    out,
                    "backend {} of vip {}: weight {}; version {}",
                    reply.backend.address, reply.vip, reply.backend.weight, reply.version
                )
                .map_err(io)
            }
            BackendCommand::Drain { vip, backend } | BackendCommand::Undrain { vip, backend } => {
                let action = if matches!(self, BackendCommand::Drain { .. }) {
                    "drain"
                } else {
                    "undrain"
                };
                let path = format!("{}/{action}", backend_path(vip, backend));
                let reply: BackendReply = api.call("POST", &path, None)?;
                writeln!(
                    out,
                    "backend {} of vip {} {action}ed; version {}",
                    reply.backend.address, reply.vip, reply.version
                )
                .map_err(io)
            }
        }
    }
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Refresh a table of rates per port, VIP and backend until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: stop after this many refreshes.
    #[arg(long, value_name = "N", requires = "watch")]
    pub count: Option<u64>,
    /// With --watch: seconds between refreshes.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_interval)]
    pub interval: f64,
    /// Print the API's JSON (one shot only).
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
}

impl StatsArgs {
    pub fn run(&self, api: &ApiTarget) -> Result<(), CliError> {
        let clear = std::io::stdout().is_terminal();
        stdout_run(|out| self.run_to(api, out, clear))
    }

    /// `clear`: redraw in place (a terminal) rather than print one table after another.
    pub fn run_to(
        &self,
        api: &ApiTarget,
        out: &mut dyn Write,
        clear: bool,
    ) -> Result<(), CliError> {
        let mut previous: StatsReport = api.call("GET", "/v1/stats", None)?;
        if !self.watch {
            if self.json {
                return print_json(out, &previous);
            }
            return write!(out, "{}", totals_text(&previous)).map_err(io);
        }
        let mut taken = Instant::now();
        let mut refreshes = 0;
        while self.count.is_none_or(|n| refreshes < n) {
            std::thread::sleep(Duration::from_secs_f64(self.interval));
            let current: StatsReport = api.call("GET", "/v1/stats", None)?;
            let now = Instant::now();
            let seconds = now.duration_since(taken).as_secs_f64().max(1e-3);
            if clear {
                write!(out, "\x1b[H\x1b[2J").map_err(io)?;
            } else if refreshes > 0 {
                writeln!(out).map_err(io)?;
            }
            write!(out, "{}", rates_text(&previous, &current, seconds)).map_err(io)?;
            out.flush().map_err(io)?;
            previous = current;
            taken = now;
            refreshes += 1;
        }
        Ok(())
    }
}

/// `fulcrum stats` without --watch: the counters.
pub fn totals_text(s: &StatsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "snapshot version {}, {} workers, up {:.0} s",
        s.version, s.workers, s.uptime_secs
    );
    let mut rows = vec![vec![
        "PORT".to_string(),
        "DEVICE".into(),
        "RX PACKETS".into(),
        "RX BYTES".into(),
        "TX PACKETS".into(),
        "TX BYTES".into(),
        "TO KERNEL".into(),
        "FROM KERNEL".into(),
    ]];
    for p in &s.ports {
        rows.push(vec![
            p.port.to_string(),
            p.name.clone(),
            p.rx_packets.to_string(),
            p.rx_bytes.to_string(),
            p.tx_packets.to_string(),
            p.tx_bytes.to_string(),
            p.to_kernel_packets.to_string(),
            p.from_kernel_packets.to_string(),
        ]);
    }
    table_into(&mut out, &rows);
    let mut rows = vec![vec![
        "VIP / BACKEND".to_string(),
        "STATE".into(),
        "PACKETS".into(),
        "BYTES".into(),
    ]];
    for v in &s.vips {
        let state = if v.all_backends_down { "ALL DOWN" } else { "" };
        rows.push(vec![
            v.vip.to_string(),
            state.into(),
            v.packets.to_string(),
            v.bytes.to_string(),
        ]);
        for b in &v.backends {
            rows.push(vec![
                format!("  {}", b.backend),
                state_text(b.state),
                b.packets.to_string(),
                b.bytes.to_string(),
            ]);
        }
    }
    let _ = writeln!(out);
    table_into(&mut out, &rows);
    let drops: Vec<String> = s
        .drops
        .iter()
        .chain(&s.parse_errors)
        .filter(|d| d.count > 0)
        .map(|d| format!("{} {}", d.name, d.count))
        .collect();
    let _ = writeln!(
        out,
        "\ndrops: {}",
        if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(", ")
        }
    );
    let c = &s.conntrack;
    let _ = writeln!(
        out,
        "conntrack: {} flows, {} hits, {} misses, {} evictions ({} confirmed), {} expiries, {} repicks",
        c.flows, c.hits, c.misses, c.evictions, c.confirmed_evictions, c.expiries, c.repicks
    );
    let b = &s.burst_cycles;
    let _ = writeln!(
        out,
        "burst cycles: p50 {} p99 {} p99.9 {} max {} ({} bursts)",
        b.p50, b.p99, b.p999, b.max, b.count
    );
    out
}

fn state_text(state: crate::snapshot::BackendState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn rate(now: u64, before: u64, seconds: f64) -> f64 {
    now.saturating_sub(before) as f64 / seconds
}

fn human(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// One frame of `fulcrum stats --watch`: rates between two reports `seconds` apart.
pub fn rates_text(before: &StatsReport, now: &StatsReport, seconds: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fulcrum stats: snapshot version {}, {} workers, rates over {:.1} s",
        now.version, now.workers, seconds
    );
    let mut rows = vec![vec![
        "PORT".to_string(),
        "DEVICE".into(),
        "RX PPS".into(),
        "RX BIT/S".into(),
        "TX PPS".into(),
        "TX BIT/S".into(),
    ]];
    for p in &now.ports {
        let b = before.ports.iter().find(|q| q.port == p.port);
        let old = |f: fn(&crate::control::messages::PortStatsView) -> u64| b.map_or(0, f);
        rows.push(vec![
            p.port.to_string(),
            p.name.clone(),
            human(rate(p.rx_packets, old(|q| q.rx_packets), seconds)),
            human(8.0 * rate(p.rx_bytes, old(|q| q.rx_bytes), seconds)),
            human(rate(p.tx_packets, old(|q| q.tx_packets), seconds)),
            human(8.0 * rate(p.tx_bytes, old(|q| q.tx_bytes), seconds)),
        ]);
    }
    table_into(&mut out, &rows);
    let mut rows = vec![vec![
        "VIP / BACKEND".to_string(),
        "STATE".into(),
        "PPS".into(),
        "BIT/S".into(),
    ]];
    for v in &now.vips {
        let old = before.vips.iter().find(|o| o.vip == v.vip);
        let state = if v.all_backends_down { "ALL DOWN" } else { "" };
        rows.push(vec![
            v.vip.to_string(),
            state.into(),
            human(rate(v.packets, old.map_or(0, |o| o.packets), seconds)),
            human(8.0 * rate(v.bytes, old.map_or(0, |o| o.bytes), seconds)),
        ]);
        for b in &v.backends {
            let ob = old.and_then(|o| o.backends.iter().find(|x| x.backend == b.backend));
            rows.push(vec![
                format!("  {}", b.backend),
                state_text(b.state),
                human(rate(b.packets, ob.map_or(0, |o| o.packets), seconds)),
                human(8.0 * rate(b.bytes, ob.map_or(0, |o| o.bytes), seconds)),
            ]);
        }
    }
    let _ = writeln!(out);
    table_into(&mut out, &rows);
    let dropped: u64 = now.drops.iter().map(|d| d.count).sum();
    let dropped_before: u64 = before.drops.iter().map(|d| d.count).sum();
    let _ = writeln!(
        out,
        "\ndrops/s: {}",
        human(rate(dropped, dropped_before, seconds))
    );
    out
}

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Only this VIP (ADDR:PORT/PROTO).
    pub vip: Option<VipKey>,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

impl HealthArgs {
    pub fn run(&self, api: &ApiTarget) -> Result<(), CliError> {
        stdout_run(|out| self.run_to(api, out))
    }

    pub fn run_to(&self, api: &ApiTarget, out: &mut dyn Write) -> Result<(), CliError> {
        let mut report: HealthReport = api.call("GET", "/v1/health", None)?;
        if let Some(vip) = &self.vip {
            report.vips.retain(|v| v.vip == *vip);
            if report.vips.is_empty() {
                return Err(CliError::Api {
                    status: 404,
                    message: format!("vip {vip} does not exist (try: fulcrum vip list)"),
                });
            }
        }
        if self.json {
            return print_json(out, &report);
        }
        let mut rows = vec![vec![
            "VIP / BACKEND".to_string(),
            "HEALTH".into(),
            "TARGET".into(),
            "FOR".into(),
            "CHECKS".into(),
            "FAILED".into(),
            "LAST ERROR".into(),
        ]];
        for v in &report.vips {
            let check = match &v.healthcheck {
                None => "no health check".to_string(),
                Some(h) => format!(
                    "{} every {} ms, rise {}, fall {}",
                    match h.kind {
                        HealthCheckKindName::Tcp => "tcp",
                        HealthCheckKindName::Http => "http",
                    },
                    h.interval_ms,
                    h.rise,
                    h.fall
                ),
            };
            rows.push(vec![
                v.vip.to_string(),
                String::new(),
                check,
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            for b in &v.backends {
                rows.push(vec![
                    format!("  {}", b.address),
                    b.status.as_str().to_string(),
                    b.target.clone().unwrap_or_else(|| "-".into()),
                    b.since_secs.map_or("-".into(), |s| format!("{s:.0}s")),
                    b.checks.to_string(),
                    b.failures.to_string(),
                    b.last_error.clone().unwrap_or_default(),
                ]);
            }
        }
        write_table(out, &rows)?;
        for v in report.vips.iter().filter(|v| v.all_backends_down) {
            writeln!(
                out,
                "WARNING: every backend of vip {} is down; fulcrum keeps sending to them rather than dropping the VIP's traffic",
                v.vip
            )
            .map_err(io)?;
        }
        let down = report
            .vips
            .iter()
            .flat_map(|v| &v.backends)
            .filter(|b| b.status == HealthStatus::Down)
            .count();
        if down > 0 {
            writeln!(out, "{down} backend(s) down").map_err(io)?;
        }
        Ok(())
    }
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the running configuration (the token redacted), VIPs as they are now.
    Show,
    #[command(
        about = "Make a configuration file's [[vip]] tables the running ones, all at once: prints the changes, then applies them (VIPs and backends that stay keep their ids and drains)"
    )]
    Apply {
        /// The configuration file.
        file: PathBuf,
        /// Only print what would change.
        #[arg(long)]
        dry_run: bool,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
}

impl ConfigCommand {
    pub fn run(&self, api: &ApiTarget) -> Result<(), CliError> {
        stdout_run(|out| self.run_to(api, out))
    }

    pub fn run_to(&self, api: &ApiTarget, out: &mut dyn Write) -> Result<(), CliError> {
        match self {
            ConfigCommand::Show => {
                let answer = api.request("GET", "/v1/config", None)?;
                if answer.status != 200 {
                    return Err(api.refusal(&answer));
                }
                out.write_all(&answer.body).map_err(io)
            }
            ConfigCommand::Apply {
                file,
                dry_run,
                json,
            } => {
                // Checked here first, so a mistake is reported against the file's own name.
                crate::config::load(file).map_err(|e| CliError::Usage(e.to_string()))?;
                let text = std::fs::read(file)
                    .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
                let path = if *dry_run {
                    "/v1/config?dry_run=true"
                } else {
                    "/v1/config"
                };
                let report: ApplyReport =
                    api.call("POST", path, Some(("application/toml", &text)))?;
                if *json {
                    return print_json(out, &report);
                }
                for change in &report.changes {
                    writeln!(out, "{change}").map_err(io)?;
                }
                if report.changes.is_empty() {
                    writeln!(
                        out,
                        "nothing to change: the running VIPs match {}; version {}",
                        file.display(),
                        report.version
                    )
                    .map_err(io)
                } else if report.applied {
                    writeln!(
                        out,
                        "applied {} changes; version {}",
                        report.changes.len(),
                        report.version
                    )
                    .map_err(io)
                } else {
                    writeln!(
                        out,
                        "dry run: {} changes not applied (run without --dry-run to apply)",
                        report.changes.len()
                    )
                    .map_err(io)
                }
            }
        }
    }
}

fn print_json<T: serde::Serialize>(out: &mut dyn Write, value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Io(e.to_string()))?;
    writeln!(out, "{text}").map_err(io)
}

fn table_into(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn write_table(out: &mut dyn Write, rows: &[Vec<String>]) -> Result<(), CliError> {
    let mut text = String::new();
    table_into(&mut text, rows);
    out.write_all(text.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("192.0.2.10:80/tcp"), "192.0.2.10:80%2Ftcp");
        assert_eq!(
            encode_segment("[2001:db8::7]:8080"),
            "%5B2001:db8::7%5D:8080"
        );
    }

    #[test]
    fn api_urls() {
        assert!(ApiTarget::new("http://127.0.0.1:9180", None).is_ok());
        assert!(ApiTarget::new("http://[::1]:9180/", None).is_ok());
        assert!(ApiTarget::new("unix:/run/fulcrum.sock", None).is_ok());
        for (bad, why) in [
            ("127.0.0.1:9180", "is not an API address"),
            ("https://127.0.0.1:9180", "https"),
            ("http://127.0.0.1:9180/v1", "only a scheme, host and port"),
            ("unix:", "no socket path"),
        ] {
            let e = ApiTarget::new(bad, None).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(why), "{e}");
        }
    }

    #[test]
    fn weights_are_checked_before_sending() {
        assert_eq!(parse_weight("0"), Ok(0));
        assert_eq!(parse_weight("10000"), Ok(10000));
        assert_eq!(
            parse_weight("10001").unwrap_err(),
            "weight 10001 is out of range; use 0 to 10000 (0 drains the backend)"
        );
        assert!(parse_weight("-1").unwrap_err().contains("out of range"));
        assert!(parse_weight("x").unwrap_err().contains("not a number"));
    }

    #[test]
    fn raw_http_answers_parse() {
        let a = parse_http_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nabcdXX")
            .unwrap();
        assert_eq!((a.status, a.body.as_slice()), (404, &b"abcd"[..]));
        let a = parse_http_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(a.body, b"abcde");
        assert!(parse_http_response(b"garbage").is_err());
    }

    #[test]
    fn watch_rates_are_deltas_over_time() {
        use crate::control::messages::{BackendStats, PortStatsView, VipStats};
        let vip: VipKey = "192.0.2.10:80/tcp".parse().unwrap();
        let report = |packets: u64| StatsReport {
            ports: vec![PortStatsView {
                port: 0,
                name: "net_tap0".into(),
                rx_packets: packets,
                rx_bytes: packets * 100,
                ..Default::default()
            }],
            vips: vec![VipStats {
                vip,
                packets,
                bytes: packets * 100,
                all_backends_down: false,
                backends: vec![BackendStats {
                    backend: "198.51.100.7".parse().unwrap(),
                    state: crate::snapshot::BackendState::Active,
                    packets,
                    bytes: packets * 100,
                }],
            }],
            ..Default::default()
        };
        let text = rates_text(&report(1000), &report(3000), 2.0);
        let port_line = text.lines().find(|l| l.starts_with("0 ")).unwrap();
        let cells: Vec<&str> = port_line.split_whitespace().collect();
        assert_eq!(
            cells,
            vec!["0", "net_tap0", "1.0k", "800.0k", "0", "0"],
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["198.51.100.7", "active", "1.0k", "800.0k"]),
            "{text}"
        );
    }
}
