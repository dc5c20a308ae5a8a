//! Where the daemon is and how to talk to it: [`ApiArgs`] and [`ApiTarget`], the HTTP
//! transport (TCP or a Unix socket), [`Answer`], [`CliError`] and the API's paths.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::http::uri::Authority;
use hyper::{header, Method, Request};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;

use crate::addr::{BackendAddr, VipKey};
use crate::control::messages::{ErrorBody, SnapshotReport};

/// Where the CLI looks for the daemon without `--api` or `FULCRUM_API`.
pub const DEFAULT_API: &str = "http://127.0.0.1:9180";
pub const API_ENV: &str = "FULCRUM_API";

/// Longest answer read from the daemon.
const MAX_RESPONSE: usize = 64 << 20;

/// How long one request may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(60);

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
    /// `host:port` of `http://host:port`.
    Http(String),
    Unix(PathBuf),
}

/// A daemon's API and how to authenticate to it.
#[derive(Clone)]
pub struct ApiTarget {
    endpoint: Endpoint,
    token: Option<String>,
    shown: String,
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
            Endpoint::Http(host.to_string())
        } else if url.starts_with("https://") {
            return Err(bad("uses https, which the local API does not serve"));
        } else {
            return Err(bad("is not an API address"));
        };
        Ok(ApiTarget {
            endpoint,
            token: token.filter(|t| !t.is_empty()),
            shown: url.to_string(),
        })
    }

    /// Sends one request on a connection of its own; any HTTP status is an answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Answer, CliError> {
        let method = match method {
            "GET" => Method::GET,
            "DELETE" => Method::DELETE,
            "POST" => Method::POST,
            "PATCH" => Method::PATCH,
            _ => return Err(CliError::Usage(format!("unsupported method {method}"))),
        };
        let host = match &self.endpoint {
            Endpoint::Http(authority) => authority.as_str(),
            Endpoint::Unix(_) => "localhost",
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, host)
            .header(header::CONNECTION, "close");
        if let Some(token) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        // GET and DELETE carry no body; hyper sends the Content-Length of the others.
        let data = match body {
            Some((content_type, data)) if method != Method::GET && method != Method::DELETE => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                Bytes::copy_from_slice(data)
            }
            _ => Bytes::new(),
        };
        let request = builder
            .body(Full::new(data))
            .map_err(|e| self.protocol(e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Io(format!("cannot start the HTTP client: {e}")))?;
        runtime.block_on(async {
            tokio::time::timeout(TIMEOUT, self.exchange(request))
                .await
                .unwrap_or_else(|_| {
                    Err(self.unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))
                })
        })
    }

    /// Connects (TCP or the Unix socket) and runs one HTTP/1.1 exchange over it.
    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<Answer, CliError> {
        match &self.endpoint {
            Endpoint::Http(authority) => {
                let authority: Authority = authority.parse().map_err(|e| self.protocol(e))?;
                // As a browser would: `http://HOST` means port 80.
                let address = format!(
                    "{}:{}",
                    authority.host(),
                    authority.port_u16().unwrap_or(80)
                );
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(|e| self.unreachable(e))?;
                self.over(stream, request).await
            }
            Endpoint::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|e| self.unreachable(e))?;
                self.over(stream, request).await
            }
        }
    }

    async fn over<S>(&self, stream: S, request: Request<Full<Bytes>>) -> Result<Answer, CliError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.failed(e))?;
        let driver = tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.failed(e))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    self.protocol(format!(
                        "the answer is longer than {} MiB",
                        MAX_RESPONSE >> 20
                    ))
                } else {
                    self.protocol(chain(&*e))
                }
            })?
            .to_bytes()
            .to_vec();
        driver.abort();
        Ok(Answer { status, body })
    }

    /// A broken exchange: a malformed or cut-off answer is the API's fault, anything else
    /// (refused, reset) means the daemon is not there.
    fn failed(&self, e: hyper::Error) -> CliError {
        if e.is_parse()
            || e.is_parse_status()
            || e.is_parse_too_large()
            || e.is_incomplete_message()
        {
            self.protocol(chain(&e))
        } else {
            self.unreachable(chain(&e))
        }
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> CliError {
        CliError::Unreachable {
            api: self.shown.clone(),
            reason: reason.to_string(),
        }
    }

    fn protocol(&self, reason: impl std::fmt::Display) -> CliError {
        CliError::Protocol {
            api: self.shown.clone(),
            reason: reason.to_string(),
        }
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

/// An error and its causes, as one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// What [`encode_segment`] leaves as it is: RFC 3986's unreserved characters, and `:`,
/// which a path segment may hold and every address has.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':');

/// A path segment, percent-encoded: `192.0.2.10:80/tcp` -> `192.0.2.10:80%2Ftcp`.
pub fn encode_segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
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
        // Byte for byte as the hand-written encoder did: unreserved and `:` kept, every
        // other byte (UTF-8 included) as %XX in upper case.
        let all: String = (1..=0x7fu8).map(char::from).chain(['é', '€']).collect();
        let mut want = String::new();
        for b in all.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
                want.push(b as char);
            } else {
                let _ = write!(want, "%{b:02X}");
            }
        }
        assert_eq!(encode_segment(&all), want);
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

    /// A one-shot daemon stand-in on a Unix socket (or TCP): reads one request head, writes
    /// `answer`, closes; returns the `--api` URL and the request it read.
    fn serve_once(unix: bool, answer: Vec<u8>) -> (String, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        fn answer_one(mut stream: impl Read + Write, answer: &[u8]) -> String {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            // The client may hang up once it has read enough.
            let _ = stream.write_all(answer);
            String::from_utf8_lossy(&head).into_owned()
        }
        if unix {
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("api.sock");
            let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
            let url = format!("unix:{}", socket.display());
            let server = std::thread::spawn(move || {
                let _dir = dir;
                answer_one(listener.accept().unwrap().0, &answer)
            });
            (url, server)
        } else {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let server =
                std::thread::spawn(move || answer_one(listener.accept().unwrap().0, &answer));
            (url, server)
        }
    }

    fn ask(unix: bool, answer: &[u8]) -> Result<Answer, CliError> {
        let (url, server) = serve_once(unix, answer.to_vec());
        let got = ApiTarget::new(&url, None)
            .unwrap()
            .request("GET", "/v1/vips", None);
        server.join().unwrap();
        got
    }

    #[test]
    fn raw_http_answers_parse() {
        for unix in [true, false] {
            let a = ask(
                unix,
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nabcdXX",
            )
            .unwrap();
            assert_eq!((a.status, a.body.as_slice()), (404, &b"abcd"[..]));
            let a = ask(unix, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
            assert_eq!(a.body, b"abcde");
            assert!(ask(unix, b"garbage").is_err());
        }
    }

    #[test]
    fn a_broken_answer_is_a_protocol_error() {
        for unix in [true, false] {
            for answer in [
                &b"garbage\r\n\r\n"[..],
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
                b"",
            ] {
                let e = ask(unix, answer).unwrap_err();
                assert!(matches!(e, CliError::Protocol { .. }), "{e}");
                assert_eq!(e.exit_code(), 1);
            }
        }
    }

    #[test]
    fn requests_carry_the_token_and_their_body() {
        for unix in [true, false] {
            let (url, server) = serve_once(
                unix,
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            );
            let api = ApiTarget::new(&url, Some("t0ken".into())).unwrap();
            let a = api
                .request("POST", "/v1/vips", Some(("application/json", b"{}")))
                .unwrap();
            assert_eq!((a.status, a.body.as_slice()), (200, &b"{}"[..]));
            let head = server.join().unwrap().to_ascii_lowercase();
            assert!(head.starts_with("post /v1/vips http/1.1\r\n"), "{head}");
            for line in [
                "authorization: bearer t0ken",
                "content-type: application/json",
                "content-length: 2",
            ] {
                assert!(head.contains(&format!("\r\n{line}\r\n")), "{head}");
            }
        }
    }

    #[test]
    fn an_answer_over_the_limit_is_refused() {
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_RESPONSE + 1
        )
        .into_bytes();
        answer.resize(answer.len() + MAX_RESPONSE + 1, b'x');
        let e = ask(true, &answer).unwrap_err();
        assert!(e.to_string().contains("longer than 64 MiB"), "{e}");
    }

    #[test]
    fn an_absent_daemon_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("unix:{}", dir.path().join("none.sock").display());
        let e = ApiTarget::new(&url, None)
            .unwrap()
            .request("GET", "/v1/vips", None)
            .unwrap_err();
        assert_eq!(e.exit_code(), 3, "{e}");
    }
}
