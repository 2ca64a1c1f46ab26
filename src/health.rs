//! Health endpoints: a minimal HTTP/1.1 server (no framework) for `--healthz-port`.
//!
//! - `GET /healthz` → 200 `weft is running` while the control loop has called
//!   [`Health::beat`] within the staleness bound, else 503 saying how long ago it last ran.
//!   (flannel answers 200 whenever the process is up; weft reports a stuck loop.)
//! - `GET /readyz` → 200 `weft is ready` once [`Health::set_ready`]`(true)` (lease held,
//!   subnet.env written, initial sync done), else 503 `weft is not ready yet`.
//! - `GET /metrics` → 200, the agent's [`Metrics`] in the Prometheus text format 0.0.4
//!   (`Content-Type: text/plain; version=0.0.4; charset=utf-8`); see [`crate::metrics`].
//! - Anything else → 404; methods other than GET/HEAD → 405.
//!
//! Each connection runs in its own task with a bounded request head (8 KiB) and a read and
//! write deadline, and the number of open connections is capped, so a slow or hostile client
//! cannot stall the server or grow its memory. One request per connection (`Connection: close`).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// A sensible staleness bound for [`Health::new`]: the control loop beats at least this often.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(60);

/// Shared liveness/readiness state. Cheap to clone; all clones see the same state.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ready: AtomicBool,
    /// Reference point for `last_beat_nanos`.
    epoch: Instant,
    /// Nanoseconds after `epoch` of the latest beat (0 = creation counts as a beat).
    last_beat_nanos: AtomicU64,
    stale_after: Duration,
    metrics: Metrics,
}

impl Health {
    /// New state: not ready, alive (creation counts as the first beat) until `stale_after`
    /// passes without a [`beat`](Health::beat).
    pub fn new(stale_after: Duration) -> Self {
        Health {
            inner: Arc::new(Inner {
                ready: AtomicBool::new(false),
                epoch: Instant::now(),
                last_beat_nanos: AtomicU64::new(0),
                stale_after,
                metrics: Metrics::new(),
            }),
        }
    }

    /// Sets the `/readyz` state (and the `weft_ready` gauge).
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Release);
        self.inner.metrics.set_ready(ready);
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// The control loop is alive now. Called from the loop on each iteration or tick.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    /// Record a beat at `now` (beats never move backwards).
    pub fn beat_at(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.inner.epoch).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        self.inner
            .last_beat_nanos
            .fetch_max(nanos, Ordering::AcqRel);
    }

    /// Time from the last beat to `now`.
    pub fn since_beat(&self, now: Instant) -> Duration {
        let last = self.inner.epoch
            + Duration::from_nanos(self.inner.last_beat_nanos.load(Ordering::Acquire));
        now.saturating_duration_since(last)
    }

    /// Whether the last beat is within the staleness bound at `now`.
    pub fn is_alive(&self, now: Instant) -> bool {
        self.since_beat(now) <= self.inner.stale_after
    }

    pub fn stale_after(&self) -> Duration {
        self.inner.stale_after
    }

    /// The agent's metrics, served on `/metrics` (shared by all clones).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// Bounds of the server; [`serve`] uses [`Limits::default`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Time allowed to receive the whole request head.
    read_timeout: Duration,
    /// Time allowed to send the response.
    write_timeout: Duration,
    /// Largest request head accepted.
    max_head: usize,
    /// Open connections at once; more are closed at once.
    max_conns: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_head: 8 * 1024,
            max_conns: 64,
        }
    }
}

/// Serve the health endpoints on `listener` until `shutdown` is cancelled; then stop accepting
/// and drop in-flight connections. Accept errors are logged and retried.
pub async fn serve(listener: TcpListener, health: Health, shutdown: CancellationToken) {
    serve_with(listener, health, shutdown, Limits::default()).await;
}

async fn serve_with(
    listener: TcpListener,
    health: Health,
    shutdown: CancellationToken,
    limits: Limits,
) {
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "health server listening (/healthz, /readyz, /metrics)"),
        Err(e) => tracing::info!(error = %e, "health server listening"),
    }
    let permits = Arc::new(Semaphore::new(limits.max_conns));
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // E.g. EMFILE: back off briefly instead of spinning.
                tracing::warn!(error = %e, "health server: accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::debug!(%peer, "health server: too many connections, closing this one");
            drop(stream);
            continue;
        };
        let health = health.clone();
        conns.spawn(async move {
            if let Err(e) = handle(stream, &health, limits).await {
                tracing::debug!(%peer, error = %e, "health server: connection failed");
            }
            drop(permit);
        });
    }
    conns.shutdown().await;
    tracing::debug!("health server stopped");
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
    /// The client closed before sending a whole head.
    Closed,
}

/// Read until the blank line ending the request head, at most `max` bytes.
async fn read_head(stream: &mut TcpStream, max: usize) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&buf) {
            buf.truncate(end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() > max {
            return Ok(Head::TooLarge);
        }
    }
}

/// Index just past the first empty line (`\r\n\r\n` or a bare `\n\n`).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

struct Response {
    status: u16,
    body: String,
    /// HEAD: headers only.
    head_only: bool,
    allow: bool,
    content_type: &'static str,
}

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn plain(status: u16, body: impl Into<String>) -> Response {
    Response {
        status,
        body: body.into(),
        head_only: false,
        allow: false,
        content_type: TEXT_PLAIN,
    }
}

/// Decide the response to a request head (pure apart from reading `health` and the clock).
fn respond(head: &[u8], health: &Health, now: Instant) -> Response {
    let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return plain(400, "malformed request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return plain(400, "unsupported HTTP version\n");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return Response {
                allow: true,
                ..plain(405, "method not allowed\n")
            };
        }
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let mut r = match path {
        "/healthz" => {
            if health.is_alive(now) {
                plain(200, "weft is running")
            } else {
                plain(
                    503,
                    format!(
                        "weft control loop last ran {:.1}s ago (limit {}s)",
                        health.since_beat(now).as_secs_f64(),
                        health.stale_after().as_secs()
                    ),
                )
            }
        }
        "/readyz" => {
            if health.is_ready() {
                plain(200, "weft is ready")
            } else {
                plain(503, "weft is not ready yet")
            }
        }
        "/metrics" => Response {
            content_type: crate::metrics::CONTENT_TYPE,
            ..plain(200, health.metrics().render())
        },
        _ => plain(404, "404 page not found\n"),
    };
    r.head_only = head_only;
    r
}

fn render(r: &Response) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    if r.allow {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !r.head_only {
        out.push_str(&r.body);
    }
    out.into_bytes()
}

async fn handle(mut stream: TcpStream, health: &Health, limits: Limits) -> io::Result<()> {
    let response =
        match tokio::time::timeout(limits.read_timeout, read_head(&mut stream, limits.max_head))
            .await
        {
            Err(_elapsed) => plain(408, "timed out reading the request\n"),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Head::Closed)) => return Ok(()),
            Ok(Ok(Head::TooLarge)) => plain(431, "request head too large\n"),
            Ok(Ok(Head::Complete(head))) => respond(&head, health, Instant::now()),
        };
    let bytes = render(&response);
    let write = async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(limits.write_timeout, write).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "timed out writing the response",
            ));
        }
    }
    // Lingering close: closing with unread input makes the kernel send a reset, which can
    // destroy the response before the client reads it (e.g. after a 431). Read and discard
    // what the client still sends, bounded in bytes and time.
    let mut sink = [0u8; 1024];
    let mut left = LINGER_BYTES;
    let drain = async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    Ok(())
}

/// Bounds of the lingering close.
const LINGER_BYTES: usize = 64 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(1);

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;
    use std::net::SocketAddr;

    const DEADLINE: Duration = Duration::from_secs(10);

    struct Server {
        addr: SocketAddr,
        shutdown: CancellationToken,
        task: Option<tokio::task::JoinHandle<()>>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    async fn start(health: Health, limits: Limits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_with(listener, health, shutdown.clone(), limits));
        Server {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    /// Send raw bytes, read the whole response; returns (status, headers, body).
    async fn raw(addr: SocketAddr, req: &[u8]) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
            .await
            .expect("response within deadline")
            .unwrap();
        parse_response(&out)
    }

    fn parse_response(out: &[u8]) -> (u16, String, String) {
        let text = String::from_utf8(out.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("complete response");
        let status = head[9..12].parse().unwrap();
        (status, format!("{head}\r\n"), body.to_string())
    }

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n");
        let (status, _, body) = raw(addr, req.as_bytes()).await;
        (status, body)
    }

    #[tokio::test]
    async fn healthz_and_readyz() {
        let health = Health::new(DEFAULT_STALE_AFTER);
        let srv = start(health.clone(), Limits::default()).await;
        assert_eq!(
            get(srv.addr, "/healthz").await,
            (200, "weft is running".into())
        );
        assert_eq!(
            get(srv.addr, "/readyz").await,
            (503, "weft is not ready yet".into())
        );
        health.set_ready(true);
        assert_eq!(
            get(srv.addr, "/readyz").await,
            (200, "weft is ready".into())
        );
        assert_eq!(get(srv.addr, "/readyz?verbose=1").await.0, 200);
        health.set_ready(false);
        assert_eq!(get(srv.addr, "/readyz").await.0, 503);
        assert_eq!(get(srv.addr, "/").await.0, 404);
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_the_text_format() {
        let health = Health::new(DEFAULT_STALE_AFTER);
        let srv = start(health.clone(), Limits::default()).await;
        health.metrics().set_peers(["vxlan", "vxlan"]);
        health.set_ready(true);
        let (status, head, body) = raw(srv.addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, 200);
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{head}"
        );
        let (samples, _) = crate::prom::exposition(&body).expect("valid exposition");
        let value = |name, labels| crate::prom::value(&samples, name, labels);
        assert_eq!(value("weft_peers", &[("backend", "vxlan")]), Some(2.0));
        assert_eq!(value("weft_ready", &[]), Some(1.0));
        // HEAD: headers only.
        let (status, _, body) = raw(srv.addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!((status, body.as_str()), (200, ""));
    }

    #[tokio::test]
    async fn headers_head_and_methods() {
        let srv = start(Health::new(DEFAULT_STALE_AFTER), Limits::default()).await;
        let (status, head, body) = raw(srv.addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
        assert_eq!(status, 200);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Length: 15\r\n"), "{head}");
        assert!(head.contains("Connection: close\r\n"), "{head}");
        assert_eq!(body, "weft is running");
        // HEAD: headers only.
        let (status, head, body) = raw(srv.addr, b"HEAD /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, 200);
        assert!(head.contains("Content-Length: 15\r\n"));
        assert_eq!(body, "");
        // Bare LF line endings are accepted.
        assert_eq!(raw(srv.addr, b"GET /healthz HTTP/1.1\n\n").await.0, 200);
        let (status, head, _) = raw(srv.addr, b"POST /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, 405);
        assert!(head.contains("Allow: GET, HEAD\r\n"));
        assert_eq!(raw(srv.addr, b"GET /healthz\r\n\r\n").await.0, 400);
        assert_eq!(raw(srv.addr, b"GET /healthz SPDY/3\r\n\r\n").await.0, 400);
        assert_eq!(raw(srv.addr, b"\xff\xfe /x HTTP/1.1\r\n\r\n").await.0, 405);
    }

    #[tokio::test]
    async fn healthz_turns_503_when_the_loop_stops_beating() {
        let health = Health::new(Duration::from_millis(200));
        let srv = start(health.clone(), Limits::default()).await;
        assert_eq!(get(srv.addr, "/healthz").await.0, 200);
        // No beats: poll until stale (deadline, not a fixed sleep).
        let until = Instant::now() + DEADLINE;
        let body = loop {
            let (status, body) = get(srv.addr, "/healthz").await;
            if status == 503 {
                break body;
            }
            assert!(Instant::now() < until, "healthz never went stale");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(body.starts_with("weft control loop last ran "), "{body}");
        assert!(body.contains("s ago"), "{body}");
        health.beat();
        assert_eq!(get(srv.addr, "/healthz").await.0, 200);
    }

    #[test]
    fn liveness_arithmetic() {
        let h = Health::new(Duration::from_secs(60));
        let t0 = Instant::now();
        h.beat_at(t0);
        assert!(h.is_alive(t0));
        assert!(h.is_alive(t0 + Duration::from_secs(60)));
        assert!(!h.is_alive(t0 + Duration::from_secs(61)));
        assert_eq!(
            h.since_beat(t0 + Duration::from_secs(61)),
            Duration::from_secs(61)
        );
        // Beats never go backwards.
        h.beat_at(t0 + Duration::from_secs(100));
        h.beat_at(t0 + Duration::from_secs(50));
        assert!(h.is_alive(t0 + Duration::from_secs(150)));
        // Clones share state.
        let c = h.clone();
        c.set_ready(true);
        assert!(h.is_ready());
        let body = respond(
            b"GET /healthz HTTP/1.1\r\n\r\n",
            &h,
            t0 + Duration::from_secs(200),
        );
        assert_eq!(body.status, 503);
        assert_eq!(
            body.body,
            "weft control loop last ran 100.0s ago (limit 60s)"
        );
    }

    #[tokio::test]
    async fn silent_client_does_not_stall_others_and_times_out() {
        let limits = Limits {
            read_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let srv = start(Health::new(DEFAULT_STALE_AFTER), limits).await;
        let mut silent = TcpStream::connect(srv.addr).await.unwrap();
        // A partial request line, never finished.
        silent.write_all(b"GET /hea").await.unwrap();
        assert_eq!(get(srv.addr, "/healthz").await.0, 200);
        // The silent one gets 408 after the read timeout, then EOF.
        let mut out = Vec::new();
        tokio::time::timeout(DEADLINE, silent.read_to_end(&mut out))
            .await
            .expect("closed within deadline")
            .unwrap();
        assert_eq!(parse_response(&out).0, 408);
    }

    #[tokio::test]
    async fn oversized_request_is_rejected() {
        let srv = start(Health::new(DEFAULT_STALE_AFTER), Limits::default()).await;
        let mut req = b"GET /healthz HTTP/1.1\r\nX-Pad: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', 20_000));
        req.extend_from_slice(b"\r\n\r\n");
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        // The server may close before reading all of it; ignore write errors.
        let _ = s.write_all(&req).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
            .await
            .expect("answered within deadline");
        assert!(
            out.starts_with(b"HTTP/1.1 431 "),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        // The server still works.
        assert_eq!(get(srv.addr, "/healthz").await.0, 200);
    }

    #[tokio::test]
    async fn connection_cap_closes_extra_connections() {
        let limits = Limits {
            max_conns: 2,
            ..Limits::default()
        };
        let srv = start(Health::new(DEFAULT_STALE_AFTER), limits).await;
        let a = TcpStream::connect(srv.addr).await.unwrap();
        let b = TcpStream::connect(srv.addr).await.unwrap();
        // Both hold permits once accepted; a third is closed without a response. Poll: the
        // server accepts asynchronously.
        let until = Instant::now() + DEADLINE;
        loop {
            let mut c = TcpStream::connect(srv.addr).await.unwrap();
            let _ = c.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(DEADLINE, c.read_to_end(&mut out)).await;
            if out.is_empty() {
                break;
            }
            assert!(Instant::now() < until, "third connection was never refused");
        }
        drop(a);
        drop(b);
        // Permits come back when the held connections end.
        let until = Instant::now() + DEADLINE;
        loop {
            let mut c = TcpStream::connect(srv.addr).await.unwrap();
            let _ = c.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(DEADLINE, c.read_to_end(&mut out)).await;
            if out.starts_with(b"HTTP/1.1 200 ") {
                break;
            }
            assert!(Instant::now() < until, "server never recovered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let srv = start(Health::new(DEFAULT_STALE_AFTER), Limits::default()).await;
        // An idle connection must not keep the server from stopping.
        let _idle = TcpStream::connect(srv.addr).await.unwrap();
        assert_eq!(get(srv.addr, "/healthz").await.0, 200);
        let mut srv = srv;
        srv.shutdown.cancel();
        let task = srv.task.take().unwrap();
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("serve returned within deadline")
            .unwrap();
    }
}
