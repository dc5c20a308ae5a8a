//! The control API's network side: every socket the API uses lives here, on one thread.
//!
//! [`NetThread`] is a single-threaded tokio runtime on its own thread ("fulcrum-api"),
//! spawned from the control thread so it shares that thread's CPU affinity. The API server is
//! one task on it; later network work of the control plane (an xDS client) can be another
//! task on the same runtime ([`NetThread::handle`]).
//!
//! The server accepts (TCP or Unix socket), parses HTTP/1.1 with hyper, and keeps every client
//! within bounds before the control thread sees anything:
//!
//! - at most `max_connections` open connections; one more is answered 503 and closed;
//! - a request's line and headers within [`MAX_HEAD_BYTES`] and [`MAX_HEAD_LINES`] (else 431),
//!   arriving within `header_timeout_ms` (else 408); its body within [`api::MAX_BODY`] (else
//!   413), arriving within `body_timeout_ms` (else 408); an idle kept-alive connection is
//!   closed after `idle_timeout_ms`, an answer the client does not take after
//!   `write_timeout_ms`;
//! - the token is checked before a byte of the body is read (401 without reading it);
//! - request bodies being read add up to at most [`BODY_BUDGET`] bytes (else 503).
//!
//! Only complete, authenticated requests reach the control thread, through a bounded queue
//! ([`QUEUE`]; full: 503); the answer comes back through a oneshot channel. The control thread
//! never touches a socket, so no client can stall it.
//!
//! Every refusal and every connection closed without an answer is counted by reason in
//! [`ApiCounters`] (`counters.rs`), beside connections accepted and open and failed accepts: atomics the
//! network thread adds to and the control thread reads for `/metrics` and `GET /v1/stats`.
//!
//! A connection's time limits are one deadline per connection that moves with the phase of
//! the request on it ([`Watch`]): the IO wrapper ([`Guarded`]) sees bytes arrive and answers
//! leave, the request handler sees a request start and its answer come back.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use crossbeam::channel::{Sender, TrySendError};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::api::{self, ApiResponse, MAX_BODY};
use super::counters::{ApiCounters, Closure, Refusal};
use super::state::ApiError;
use crate::config::{Control, Token};

/// Longest request line plus headers accepted (the API's requests need a few hundred bytes).
pub const MAX_HEAD_BYTES: usize = 16 << 10;
/// Most lines in a request head (request line and headers).
pub const MAX_HEAD_LINES: usize = 100;
/// Most request bodies' bytes held at once, over all connections: bounds the memory a crowd
/// of clients announcing large bodies can make the daemon hold.
pub const BODY_BUDGET: usize = 8 * MAX_BODY;
/// Requests waiting for the control thread. The control thread answers most in microseconds;
/// a full queue means it is busy with something slow (a large `config apply`).
pub const QUEUE: usize = 64;
/// hyper's read buffer, which also bounds what a pipelining client can make it hold.
const READ_BUFFER: usize = 4 * MAX_HEAD_BYTES;
/// How long the accept loop pauses after an error such as running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How often a repeated problem (accept errors, refused connections) is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// After refusing a request, how long its connection is read (and the bytes dropped) before
/// it is closed: closing with unread bytes makes the kernel send a reset, which can destroy
/// the answer before the client has read it.
const LINGER: Duration = Duration::from_secs(1);
/// Most refused connections lingering at once; beyond, they are closed at once.
const MAX_LINGERING: usize = 256;
/// How long stopping the runtime waits for its tasks; connections are dropped, not drained.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// The time limits of one connection, from `[control]`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header: Duration,
    pub body: Duration,
    pub idle: Duration,
    pub write: Duration,
}

impl Limits {
    pub fn of(control: &Control) -> Limits {
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        Limits {
            max_connections: usize::try_from(control.max_connections).unwrap_or(usize::MAX),
            header: ms(control.header_timeout_ms),
            body: ms(control.body_timeout_ms),
            idle: ms(control.idle_timeout_ms),
            write: ms(control.write_timeout_ms),
        }
    }
}

/// Connections the kernel completes before the API accepts them: a burst of clients (a
/// script that opens many at once) waits here instead of having its SYNs dropped and retried
/// a second later. Linux caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 1024;

/// Listens on `addr` (with `SO_REUSEADDR`, as std does) with a backlog of [`BACKLOG`].
pub fn listen_tcp(addr: std::net::SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Listens on the Unix socket `path` (which must not exist) with a backlog of [`BACKLOG`].
pub fn listen_unix(path: &std::path::Path) -> io::Result<std::os::unix::net::UnixListener> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A bound listener, handed to [`serve`] (bound by the caller, so that binding errors are
/// reported at start-up and the address is known before serving).
pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// A complete, authenticated request for the control thread, and where its answer goes.
pub struct Job {
    pub method: String,
    /// Path and query, as sent.
    pub url: String,
    pub authorization: Option<String>,
    pub body: Bytes,
    pub reply: oneshot::Sender<ApiResponse>,
}

impl Job {
    pub fn request(&self) -> api::ApiRequest<'_> {
        api::ApiRequest {
            method: &self.method,
            url: &self.url,
            authorization: self.authorization.as_deref(),
            body: &self.body,
        }
    }
}

/// One thread running a single-threaded tokio runtime: the control plane's network I/O.
/// Stopping it (or dropping it) drops every task on it, open connections included.
pub struct NetThread {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NetThread {
    /// Starts the thread. Call it from the control thread: the new thread inherits its CPU
    /// affinity, so it never runs on a worker's core.
    pub fn start(name: &str) -> io::Result<NetThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            // Nothing here blocks; keep tokio from ever adding threads of its own.
            .max_blocking_threads(1)
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // Runs every task until told to stop (or until the owner is gone).
                let _ = runtime.block_on(stopped);
                runtime.shutdown_timeout(SHUTDOWN_GRACE);
            })?;
        Ok(NetThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where tasks are spawned onto this thread.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Stops the runtime, dropping its tasks and their connections, and joins the thread.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for NetThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What every connection task shares.
struct Shared {
    limits: Limits,
    token: Option<Token>,
    jobs: Sender<Job>,
    counters: Arc<ApiCounters>,
    lingering: AtomicUsize,
    /// Bytes of request bodies reserved by requests reading them.
    body_bytes: AtomicUsize,
    refused: Mutex<Throttle>,
}

/// Serves the API on `listener` from `net`'s runtime until `net` stops. Requests go to
/// `jobs`, which the control thread answers; what the server accepts, refuses and closes is
/// counted in `counters`.
pub fn serve(
    net: &NetThread,
    listener: Listener,
    limits: Limits,
    token: Option<Token>,
    jobs: Sender<Job>,
    counters: Arc<ApiCounters>,
) -> io::Result<()> {
    // tokio's listeners register with the runtime they are created in.
    let _runtime = net.handle.enter();
    let listener = match listener {
        Listener::Tcp(l) => {
            l.set_nonblocking(true)?;
            Accepting::Tcp(tokio::net::TcpListener::from_std(l)?)
        }
        Listener::Unix(l) => {
            l.set_nonblocking(true)?;
            Accepting::Unix(tokio::net::UnixListener::from_std(l)?)
        }
    };
    let shared = Arc::new(Shared {
        limits,
        token,
        jobs,
        counters,
        lingering: AtomicUsize::new(0),
        body_bytes: AtomicUsize::new(0),
        refused: Mutex::new(Throttle::default()),
    });
    net.handle.spawn(accept_loop(listener, shared));
    Ok(())
}

enum Accepting {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Accepting {
    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Accepting::Tcp(l) => l.accept().await.map(|(s, _)| Accepted::Tcp(s)),
            Accepting::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
        }
    }
}

/// Accepts forever: an error (out of file descriptors, out of memory) is logged, at most
/// every [`LOG_EVERY`], and accepting goes on after [`ACCEPT_BACKOFF`].
async fn accept_loop(listener: Accepting, shared: Arc<Shared>) {
    let mut errors = Throttle::default();
    loop {
        match listener.accept().await {
            Ok(Accepted::Tcp(stream)) => {
                // Answers are one write each; do not hold them back for the next one.
                let _ = stream.set_nodelay(true);
                admit(stream, &shared);
            }
            Ok(Accepted::Unix(stream)) => admit(stream, &shared),
            Err(e) if is_transient(&e) => {
                // The client gave up before we accepted it: nothing of ours is wrong.
                tracing::debug!("control API: accept: {e}");
            }
            Err(e) => {
                shared.counters.accept_failed();
                if let Some(suppressed) = errors.note() {
                    tracing::warn!(
                        "control API: cannot accept connections: {e}{}; retrying every {} ms{}",
                        repeated(suppressed),
                        ACCEPT_BACKOFF.as_millis(),
                        if is_fd_exhaustion(&e) {
                            " (raise the open-file limit, LimitNOFILE= in systemd, or lower [control] max_connections)"
                        } else {
                            ""
                        }
                    );
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

fn repeated(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" (and {suppressed} more times since the last report)")
    }
}

/// A stream a connection can run on.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Writes what the socket takes at once (a fresh socket's send buffer takes a short
    /// answer whole) and closes it.
    fn write_and_close(self, bytes: &[u8]);
}

impl Stream for tokio::net::TcpStream {
    fn write_and_close(self, bytes: &[u8]) {
        use std::io::Write;
        // Out of the runtime: a fresh socket's readiness is not known to it yet.
        if let Ok(mut s) = self.into_std() {
            let _ = s.write(bytes);
        }
    }
}

impl Stream for tokio::net::UnixStream {
    fn write_and_close(self, bytes: &[u8]) {
        use std::io::Write;
        if let Ok(mut s) = self.into_std() {
            let _ = s.write(bytes);
        }
    }
}

/// Serves the new connection, or refuses it (503) when `max_connections` are open.
fn admit<S: Stream>(stream: S, shared: &Arc<Shared>) {
    let counters = &shared.counters;
    counters.accepted();
    if !counters.open_one(shared.limits.max_connections) {
        counters.refused(Refusal::MaxConnections);
        refuse(stream, shared);
        return;
    }
    let guard = Open(shared.clone());
    tokio::spawn(async move {
        let _open = guard;
        connection(stream, &_open.0).await;
    });
}

/// Counts a connection as open while it lives.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.counters.close_one();
    }
}

/// Answers 503 on a connection over the limit and closes it, lingering briefly (see
/// [`LINGER`]) unless too many refused connections already do.
fn refuse<S: Stream>(stream: S, shared: &Arc<Shared>) {
    let max = shared.limits.max_connections;
    let reply = raw_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!(
            "the control API has its maximum of {max} connections open ([control] max_connections); retry later, or close idle connections"
        ),
    );
    if let Some(suppressed) = shared
        .refused
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .note()
    {
        tracing::warn!(
            "control API: refused a connection: {max} connections are open ([control] max_connections){}",
            repeated(suppressed)
        );
    }
    if shared.lingering.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
        shared.lingering.fetch_sub(1, Ordering::AcqRel);
        stream.write_and_close(&reply);
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        answer_and_close(stream, &reply, LINGER).await;
        shared.lingering.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Writes `reply` (may be empty), closes our side for writing, then reads and drops what the
/// client still sends, until it closes, 64 KiB or `limit` (all of it).
async fn answer_and_close<S: Stream>(mut stream: S, reply: &[u8], limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        stream.write_all(reply).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 4096];
        let mut left = 64usize << 10;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
        Ok::<(), io::Error>(())
    })
    .await;
}

/// A complete HTTP/1.1 answer with a JSON error body, for answers hyper does not write:
/// refusals before hyper runs and after it gave up on the connection.
fn raw_reply(status: StatusCode, message: &str) -> Vec<u8> {
    let body = ApiResponse::error(ApiError {
        status: status.as_u16(),
        message: message.to_owned(),
    })
    .body;
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Where a connection's current request is, and so which time limit applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading a request's line and headers (a connection starts here).
    Head,
    /// The head is parsed; reading the body (or deciding not to).
    Body,
    /// Waiting for the control thread: no client-made delay, no time limit.
    Control,
    /// Writing the answer.
    Write,
    /// Answered; waiting for the next request on a kept-alive connection.
    Idle,
}

/// Why a connection was ended by us rather than by HTTP.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    HeadTooLarge,
    TooManyHeadLines,
}

impl Verdict {
    fn message(self) -> String {
        match self {
            Verdict::HeadTooLarge => format!(
                "the request line and headers are larger than {MAX_HEAD_BYTES} bytes; send a shorter request"
            ),
            Verdict::TooManyHeadLines => format!(
                "the request has more than {MAX_HEAD_LINES} header lines; send fewer headers"
            ),
        }
    }
}

/// One connection's phase and deadline, moved by [`Guarded`] and the request handler, read
/// by the connection's watchdog. All of them run in the connection's task, so the lock is
/// never contended; it only makes the state shareable.
struct Watch {
    limits: Limits,
    state: Mutex<WatchState>,
}

struct WatchState {
    phase: Phase,
    /// `None` while no time limit applies.
    deadline: Option<Instant>,
    head: HeadScan,
    /// The body length the current request announced.
    announced: Option<u64>,
    verdict: Option<Verdict>,
}

/// Follows the bytes of a request head as they arrive, to bound it before hyper buffers it.
#[derive(Default)]
struct HeadScan {
    bytes: usize,
    /// Non-empty lines ended so far.
    lines: usize,
    /// Bytes of the current line, line endings excluded.
    line: usize,
    done: bool,
}

impl HeadScan {
    /// Takes bytes read in the head phase; stops at the empty line that ends the head (what
    /// follows is body, which hyper bounds).
    fn take(&mut self, bytes: &[u8]) -> Result<(), Verdict> {
        for &b in bytes {
            if self.done {
                return Ok(());
            }
            self.bytes += 1;
            if self.bytes > MAX_HEAD_BYTES {
                return Err(Verdict::HeadTooLarge);
            }
            match b {
                b'\n' if self.line == 0 => {
                    // Empty lines before the request line are allowed (RFC 9112, 2.2).
                    self.done = self.lines > 0;
                }
                b'\n' => {
                    self.lines += 1;
                    self.line = 0;
                    if self.lines > MAX_HEAD_LINES {
                        return Err(Verdict::TooManyHeadLines);
                    }
                }
                b'\r' => {}
                _ => self.line += 1,
            }
        }
        Ok(())
    }
}

impl Watch {
    fn new(limits: Limits) -> Watch {
        Watch {
            limits,
            state: Mutex::new(WatchState {
                phase: Phase::Head,
                deadline: Some(Instant::now() + limits.header),
                head: HeadScan::default(),
                announced: None,
                verdict: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enter(state: &mut WatchState, phase: Phase, limit: Option<Duration>) {
        state.phase = phase;
        state.deadline = limit.map(|l| Instant::now() + l);
    }

    /// Bytes arrived. A kept-alive connection's next request starts with its first byte.
    fn received(&self, bytes: &[u8]) -> Result<(), Verdict> {
        let mut state = self.lock();
        if state.phase == Phase::Idle {
            Watch::enter(&mut state, Phase::Head, Some(self.limits.header));
            state.head = HeadScan::default();
        }
        if state.phase != Phase::Head {
            return Ok(());
        }
        let scanned = state.head.take(bytes);
        if let Err(verdict) = scanned {
            state.verdict = Some(verdict);
        }
        scanned
    }

    /// Bytes of an answer are being written.
    fn writing(&self) {
        let mut state = self.lock();
        if state.phase == Phase::Idle {
            Watch::enter(&mut state, Phase::Write, Some(self.limits.write));
        }
    }

    /// Everything written so far has left.
    fn flushed(&self) {
        let mut state = self.lock();
        if state.phase == Phase::Write {
            Watch::enter(&mut state, Phase::Idle, Some(self.limits.idle));
        }
    }

    /// hyper parsed a request head.
    fn request(&self, announced: Option<u64>) {
        let mut state = self.lock();
        Watch::enter(&mut state, Phase::Body, Some(self.limits.body));
        state.announced = announced;
    }

    fn awaiting_control(&self) {
        Watch::enter(&mut self.lock(), Phase::Control, None);
    }

    fn answering(&self) {
        Watch::enter(&mut self.lock(), Phase::Write, Some(self.limits.write));
    }

    fn deadline(&self) -> Option<Instant> {
        self.lock().deadline
    }
}

/// The connection's stream as hyper sees it: tells the [`Watch`] when bytes come and go,
/// and fails the read that would take a request head over its bounds.
struct Guarded<S> {
    inner: S,
    watch: Arc<Watch>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if new.is_empty() {
            return Poll::Ready(Ok(()));
        }
        match this.watch.received(new) {
            Ok(()) => Poll::Ready(Ok(())),
            // hyper drops the bytes of a failed read; the connection task answers 431.
            Err(verdict) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                verdict.message(),
            ))),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !buf.is_empty() {
            this.watch.writing();
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if bufs.iter().any(|b| !b.is_empty()) {
            this.watch.writing();
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.watch.flushed();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// How a connection's HTTP exchange ended.
enum Ending {
    /// hyper is done: the client closed, or an answer said `Connection: close`.
    Finished(hyper::Result<()>),
    /// The deadline of this phase passed.
    Expired(Phase),
}

/// Serves one connection until it ends, its deadline passes or the runtime stops.
async fn connection<S: Stream>(stream: S, shared: &Arc<Shared>) {
    let limits = shared.limits;
    let watch = Arc::new(Watch::new(limits));
    let io = TokioIo::new(Guarded {
        inner: stream,
        watch: watch.clone(),
    });
    let service = ApiService {
        shared: shared.clone(),
        watch: watch.clone(),
    };
    let mut conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(READ_BUFFER)
        .max_headers(MAX_HEAD_LINES)
        // hyper's own header timeout also runs while a connection is idle; ours tells the
        // two apart (see `Watch`).
        .header_read_timeout(None)
        // A client that shuts down its sending side after the request still gets the answer.
        .half_close(true)
        .serve_connection(io, service);
    let mut alarm = Box::pin(tokio::time::sleep_until(Instant::now() + limits.header));
    let ending = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = conn.poll_without_shutdown(cx) {
            return Poll::Ready(Ending::Finished(result));
        }
        // Polling the connection may have moved the phase, and with it the deadline.
        let Some(deadline) = watch.deadline() else {
            return Poll::Pending;
        };
        if alarm.deadline() != deadline {
            alarm.as_mut().reset(deadline);
        }
        match alarm.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Ending::Expired(watch.lock().phase)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    let (verdict, received, announced) = {
        let state = watch.lock();
        (state.verdict, state.head.bytes, state.announced)
    };
    let counters = &shared.counters;
    let reply = match (ending, verdict) {
        // hyper takes the failed read for the end of the connection when it had nothing
        // buffered, or reports it as an error: either way the head was over its bounds.
        (Ending::Finished(_), Some(verdict)) => {
            tracing::debug!("control API: {}", verdict.message());
            counters.refused(Refusal::HeadTooLarge);
            Some(raw_reply(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                &verdict.message(),
            ))
        }
        (Ending::Finished(Ok(())), None) => None,
        (Ending::Finished(Err(e)), None) => {
            // hyper answered what it could (400 to a malformed request, 431 to a head over
            // its own bounds, which are looser than ours), or the client went away.
            tracing::debug!("control API: connection ended: {e}");
            if e.is_parse_too_large() {
                counters.refused(Refusal::HeadTooLarge);
            } else if e.is_parse() {
                counters.refused(Refusal::Malformed);
            }
            None
        }
        (Ending::Expired(Phase::Head), _) if received > 0 => {
            counters.refused(Refusal::HeadTimeout);
            Some(raw_reply(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request line and headers did not arrive within {} ms ([control] header_timeout_ms)",
                    limits.header.as_millis()
                ),
            ))
        }
        (Ending::Expired(Phase::Body), _) => {
            counters.refused(Refusal::BodyTimeout);
            Some(raw_reply(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body{} did not arrive within {} ms ([control] body_timeout_ms)",
                    announced.map_or_else(String::new, |n| format!(" ({n} bytes announced)")),
                    limits.body.as_millis()
                ),
            ))
        }
        (Ending::Expired(phase), _) => {
            // Connected and silent, idle, or not taking its answer: nothing to say to it.
            tracing::debug!("control API: closing a connection whose {phase:?} time ran out");
            match phase {
                Phase::Head => counters.closed(Closure::Silent),
                Phase::Idle => counters.closed(Closure::Idle),
                Phase::Write => counters.closed(Closure::WriteTimeout),
                // No time limit runs in these (the body's is matched above).
                Phase::Body | Phase::Control => {}
            }
            None
        }
    };
    // hyper has written nothing of an answer in the phases a reply is made for, so the
    // stream is at a message boundary. Without a reply the close is drained all the same:
    // the client may still be sending the body of a request refused with `Connection:
    // close`, and closing on unread bytes would reset the connection, answer and all.
    let stream = conn.into_parts().io.into_inner().inner;
    answer_and_close(stream, &reply.unwrap_or_default(), limits.write.max(LINGER)).await;
}

/// Hands hyper's requests to [`answer`].
struct ApiService {
    shared: Arc<Shared>,
    watch: Arc<Watch>,
}

type Answer = Response<Full<Bytes>>;

impl hyper::service::Service<Request<Incoming>> for ApiService {
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let (shared, watch) = (self.shared.clone(), self.watch.clone());
        Box::pin(async move {
            let reply = answer(&shared, &watch, request).await;
            watch.answering();
            Ok(reply.into_response())
        })
    }
}

/// An answer and whether the connection must close after it (its request's body was not
/// read, so the stream is not at the next request).
struct Reply {
    response: ApiResponse,
    close: bool,
}

impl Reply {
    fn refusal(status: StatusCode, message: String, close: bool) -> Reply {
        Reply {
            response: ApiResponse::error(ApiError {
                status: status.as_u16(),
                message,
            }),
            close,
        }
    }

    fn into_response(self) -> Answer {
        let status =
            StatusCode::from_u16(self.response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = Response::new(Full::new(Bytes::from(self.response.body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(self.response.content_type),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fulcrum\""),
            );
        }
        if self.close {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// A share of [`BODY_BUDGET`], given back on drop.
struct Reservation<'a> {
    counter: &'a AtomicUsize,
    bytes: usize,
}

impl<'a> Reservation<'a> {
    fn take(counter: &'a AtomicUsize, bytes: usize) -> Option<Reservation<'a>> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&t| t <= BODY_BUDGET)
            })
            .ok()
            .map(|_| Reservation { counter, bytes })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// One request: authenticated and bounded here, answered by the control thread.
async fn answer(shared: &Shared, watch: &Watch, request: Request<Incoming>) -> Reply {
    let announced = request.body().size_hint().exact();
    let has_body = !request.body().is_end_stream();
    watch.request(announced);
    let method = request.method().as_str().to_owned();
    let url = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().to_string(), |p| p.as_str().to_owned());
    // Not text: passed on as such, so it is reported as a wrong token, not a missing one.
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let counters = &shared.counters;
    if let Err(e) = api::authorize(shared.token.as_ref(), authorization.as_deref()) {
        // The body is never read for a client without the token.
        counters.refused(Refusal::Unauthorized);
        return Reply {
            response: ApiResponse::error(e),
            close: has_body,
        };
    }
    if announced.is_some_and(|n| n > MAX_BODY as u64) {
        counters.refused(Refusal::BodyTooLarge);
        return Reply::refusal(StatusCode::PAYLOAD_TOO_LARGE, api::too_large(), true);
    }
    let wanted = announced.map_or(MAX_BODY, |n| n as usize);
    let Some(_reservation) = Reservation::take(&shared.body_bytes, wanted) else {
        counters.refused(Refusal::BodyBudget);
        return Reply::refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the control API is already reading {} MiB of request bodies; retry in a moment",
                BODY_BUDGET >> 20
            ),
            true,
        );
    };
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            counters.refused(Refusal::BodyTooLarge);
            return Reply::refusal(StatusCode::PAYLOAD_TOO_LARGE, api::too_large(), true);
        }
        Err(e) => {
            // A client that went away mid-body is no refusal; a body hyper cannot decode is.
            if is_malformed_body(e.as_ref()) {
                counters.refused(Refusal::Malformed);
            }
            return Reply::refusal(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
                true,
            );
        }
    };
    watch.awaiting_control();
    let (reply, answered) = oneshot::channel();
    let job = Job {
        method,
        url,
        authorization,
        body,
        reply,
    };
    match shared.jobs.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            counters.refused(Refusal::QueueFull);
            return Reply::refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the control thread has {QUEUE} requests waiting; retry in a moment"),
                false,
            );
        }
        Err(TrySendError::Disconnected(_)) => {
            return Reply::refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the control plane is stopping".into(),
                true,
            );
        }
    }
    match answered.await {
        Ok(response) => Reply {
            response,
            close: false,
        },
        Err(_) => Reply::refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the control plane stopped before answering".into(),
            true,
        ),
    }
}

/// Whether reading a body failed on its encoding (hyper's decoder says `InvalidData` or
/// `InvalidInput`: a bad chunk size, a missing line end) rather than on the connection.
fn is_malformed_body(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
            );
        }
        source = e.source();
    }
    false
}

/// Lets a repeated event through at most once per [`LOG_EVERY`], counting the others.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(how many were suppressed since the last one)` if this one is to be logged.
    fn note(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|l| now.duration_since(l) < LOG_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::messages::{ApiStats, NamedCount};

    #[test]
    fn a_head_ends_at_its_empty_line_and_is_bounded() {
        let mut scan = HeadScan::default();
        scan.take(b"GET /v1/vips HTTP/1.1\r\nHost: x\r\n").unwrap();
        assert!(!scan.done);
        scan.take(b"\r\nBODY BYTES ARE NOT COUNTED").unwrap();
        assert!(scan.done);
        assert_eq!(scan.bytes, 34);

        // Bare line feeds and empty lines before the request line.
        let mut scan = HeadScan::default();
        scan.take(b"\r\n\nGET / HTTP/1.1\nHost: x\n\n").unwrap();
        assert!(scan.done);

        // A line that never ends, byte by byte.
        let mut scan = HeadScan::default();
        scan.take(b"GET / HTTP/1.1\r\nX-Long: ").unwrap();
        let mut result = Ok(());
        for _ in 0..MAX_HEAD_BYTES {
            result = scan.take(b"a");
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(Verdict::HeadTooLarge)));

        let mut scan = HeadScan::default();
        let many = "X: y\r\n".repeat(MAX_HEAD_LINES);
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(
            scan.take(head.as_bytes()),
            Err(Verdict::TooManyHeadLines)
        ));
    }

    #[test]
    fn the_body_budget_is_shared_and_given_back() {
        let counter = AtomicUsize::new(0);
        let a = Reservation::take(&counter, BODY_BUDGET - 10).unwrap();
        assert!(Reservation::take(&counter, 11).is_none());
        let b = Reservation::take(&counter, 10).unwrap();
        drop(a);
        assert_eq!(counter.load(Ordering::Relaxed), 10);
        drop(b);
        assert_eq!(counter.load(Ordering::Relaxed), 0);
        assert!(Reservation::take(&counter, usize::MAX).is_none());
    }

    /// The API's network side on 127.0.0.1, its requests going to `jobs`.
    struct Server {
        _net: NetThread,
        addr: std::net::SocketAddr,
        counters: Arc<ApiCounters>,
    }

    fn server(jobs: Sender<Job>) -> Server {
        let net = NetThread::start("fulcrum-api-test").unwrap();
        let listener = listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(ApiCounters::default());
        let limits = Limits {
            max_connections: 128,
            header: Duration::from_secs(5),
            body: Duration::from_secs(5),
            idle: Duration::from_secs(5),
            write: Duration::from_millis(300),
        };
        serve(
            &net,
            Listener::Tcp(listener),
            limits,
            None,
            jobs,
            counters.clone(),
        )
        .unwrap();
        Server {
            _net: net,
            addr,
            counters,
        }
    }

    fn send(addr: std::net::SocketAddr, request: &[u8]) -> std::net::TcpStream {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(request).unwrap();
        stream
    }

    /// The status line and body of the answer on `stream` (read until the server closes or
    /// the body is complete).
    fn answer_on(stream: &mut std::net::TcpStream) -> (String, String) {
        use std::io::Read;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&raw).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse::<usize>().ok());
                if length.is_some_and(|n| body.len() >= n) {
                    let status = head.lines().next().unwrap_or("").to_owned();
                    return (status, body.to_owned());
                }
            }
            match stream.read(&mut buf) {
                Ok(0) => panic!("closed before a complete answer: {text:?}"),
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) => panic!("{e}; got {text:?}"),
            }
        }
    }

    fn count(list: &[NamedCount], name: &str) -> u64 {
        list.iter()
            .find(|c| c.name == name)
            .map_or_else(|| panic!("no reason {name} in {list:?}"), |c| c.count)
    }

    /// Waits (at most 5 s) until `done` holds of the counters; returns them.
    fn counters_when(server: &Server, done: impl Fn(&ApiStats) -> bool) -> ApiStats {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stats = server.counters.read();
            if done(&stats) {
                return stats;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the counters never got there: {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    const GET: &[u8] = b"GET /v1/vips HTTP/1.1\r\nHost: test\r\n\r\n";

    #[test]
    fn a_full_queue_is_counted() {
        // Nobody takes the requests: the queue fills.
        let (jobs, waiting) = crossbeam::channel::bounded::<Job>(QUEUE);
        let server = server(jobs);
        let held: Vec<_> = (0..QUEUE).map(|_| send(server.addr, GET)).collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while waiting.len() < QUEUE {
            assert!(
                std::time::Instant::now() < deadline,
                "{} queued",
                waiting.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut refused = send(server.addr, GET);
        let (status, body) = answer_on(&mut refused);
        assert!(status.starts_with("HTTP/1.1 503"), "{status} {body}");
        assert!(body.contains("requests waiting"), "{body}");
        let stats = server.counters.read();
        assert_eq!(count(&stats.refused, "queue_full"), 1, "{stats:?}");
        assert_eq!(stats.connections_total, QUEUE as u64 + 1);
        assert_eq!(stats.connections_open, QUEUE as u64 + 1);
        // The control thread takes the requests (and drops them: 503 to each).
        drop(waiting.try_iter().collect::<Vec<_>>());
        drop((held, refused));
        // Every connection's end is seen, and the gauge comes back down.
        counters_when(&server, |s| s.connections_open == 0);
    }

    #[test]
    fn an_answer_not_taken_is_counted_as_a_write_timeout() {
        let (jobs, requests) = crossbeam::channel::bounded::<Job>(QUEUE);
        // A control thread whose answer is far larger than the socket buffers hold.
        let control = std::thread::spawn(move || {
            for job in requests {
                let _ = job.reply.send(ApiResponse {
                    status: 200,
                    content_type: "text/plain",
                    body: vec![b'x'; 32 << 20],
                });
            }
        });
        let server = server(jobs);
        // Sends its request and never reads.
        let stalled = send(server.addr, GET);
        let stats = counters_when(&server, |s| count(&s.closed, "write_timeout") == 1);
        assert_eq!(count(&stats.closed, "idle"), 0, "{stats:?}");
        assert_eq!(count(&stats.closed, "silent"), 0, "{stats:?}");
        assert!(stats.refused.iter().all(|c| c.count == 0), "{stats:?}");
        drop(stalled);
        drop(server);
        control.join().unwrap();
    }

    #[test]
    fn malformed_requests_are_counted() {
        let (jobs, _requests) = crossbeam::channel::bounded::<Job>(QUEUE);
        let server = server(jobs);
        // Not a request line.
        let mut garbage = send(server.addr, b"\x16\x03\x01 HELLO\r\n\r\n");
        let (status, _) = answer_on(&mut garbage);
        assert!(status.starts_with("HTTP/1.1 400"), "{status}");
        // A chunk size that is not hexadecimal.
        let mut chunked = send(
            server.addr,
            b"POST /v1/config HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        );
        let (status, body) = answer_on(&mut chunked);
        assert!(status.starts_with("HTTP/1.1 400"), "{status} {body}");
        assert!(body.contains("cannot read the request body"), "{body}");
        let stats = counters_when(&server, |s| count(&s.refused, "malformed") == 2);
        // A client that goes away in the middle of its body is no refusal.
        drop(send(
            server.addr,
            b"POST /v1/config HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n[[vip]]",
        ));
        counters_when(&server, |s| s.connections_open == 0);
        assert_eq!(
            server.counters.read().refused,
            stats.refused,
            "a closed connection was counted as a refusal"
        );
    }

    #[test]
    fn repeated_problems_are_logged_once_per_period() {
        let mut t = Throttle::default();
        assert_eq!(t.note(), Some(0));
        assert_eq!(t.note(), None);
        assert_eq!(t.note(), None);
        t.last = Some(Instant::now() - LOG_EVERY);
        assert_eq!(t.note(), Some(2));
    }
}
