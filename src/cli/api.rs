//! Where the daemon is and how to talk to it: [`ApiArgs`] and [`ApiTarget`], the HTTP
//! transport (TCP or a Unix socket), [`Answer`], [`CliError`] and the API's paths.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde::de::DeserializeOwned;

use crate::addr::{BackendAddr, VipKey};
use crate::control::messages::{ErrorBody, SnapshotReport};

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

    pub(super) fn call_json<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        let bytes = serde_json::to_vec(body).map_err(|e| CliError::Io(e.to_string()))?;
        self.call(method, path, Some(("application/json", &bytes)))
    }

    pub(super) fn refusal(&self, answer: &Answer) -> CliError {
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

pub(super) fn vip_path(vip: &VipKey) -> String {
    format!("/v1/vips/{}", encode_segment(&vip.to_string()))
}

pub(super) fn backend_path(vip: &VipKey, backend: &BackendAddr) -> String {
    format!(
        "{}/backends/{}",
        vip_path(vip),
        encode_segment(&backend.to_string())
    )
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
    fn raw_http_answers_parse() {
        let a = parse_http_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nabcdXX")
            .unwrap();
        assert_eq!((a.status, a.body.as_slice()), (404, &b"abcd"[..]));
        let a = parse_http_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(a.body, b"abcde");
        assert!(parse_http_response(b"garbage").is_err());
    }
}
