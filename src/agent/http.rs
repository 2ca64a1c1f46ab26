//! Health endpoints for `--healthz-port`: an axum router served by hyper's HTTP/1.1 server
//! on the agent's (current-thread) runtime.
//!
//! - `GET /healthz` → 200 `weft is running` while the control loop has called
//!   [`Health::beat`] within the staleness bound, else 503 saying how long ago it last ran.
//!   (flannel answers 200 whenever the process is up; weft reports a stuck loop.)
//! - `GET /readyz` → 200 `weft is ready` once [`Health::set_ready`]`(true)` (lease held,
//!   subnet.env written, initial sync done), else 503 `weft is not ready yet`.
//! - `GET /metrics` → 200, the agent's [`Metrics`] in the Prometheus text format 0.0.4
//!   (`Content-Type: text/plain; version=0.0.4; charset=utf-8`); see [`crate::agent::metrics`].
//! - `HEAD` of each: the same status and headers, no body. Anything else → 404; methods other
//!   than GET/HEAD → 405 with `Allow: GET,HEAD`; a malformed request → 400.
//!
//! Limits, so a slow or hostile client can neither stall the server nor grow its memory:
//! - the request head is at most 8 KiB (hyper's read buffer; larger → 431);
//! - the whole head must arrive within 5 s (hyper's header read timeout; then the connection
//!   is closed without a response, as Go's `net/http` does);
//! - a connection lives at most read + write deadline (10 s) in all, which bounds the time to
//!   send the response to a client that does not read;
//! - one request per connection (`Connection: close`);
//! - at most 64 open connections: more are closed as soon as they are accepted.
//!
//! The cap counts connections, not requests, so it sits in the accept loop: a tower
//! concurrency limit would only count requests in the service, and a client that never sends
//! a whole head never becomes one. The deadlines are on the socket for the same reason (the
//! handlers answer from memory, without waiting; there is nothing for a service timeout to cut).
//!
//! On shutdown the server stops accepting, idle connections close at once, and a request in
//! flight gets its answer within [`SHUTDOWN_GRACE`], after which it is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agent::metrics::Metrics;

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

/// Time a request in flight at shutdown still gets to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Bounds of the server; [`serve`] uses [`Limits::default`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Time allowed to receive the whole request head.
    read_timeout: Duration,
    /// Time allowed, beyond `read_timeout`, to send the response.
    write_timeout: Duration,
    /// Largest request head accepted (at least hyper's minimum read buffer, 8 KiB).
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

/// Serve the health endpoints on `listener` until `shutdown` is cancelled (see the module doc
/// for what happens to open connections then). Accept errors are logged and retried.
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
    let router = router(health);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .max_buf_size(limits.max_head)
        .keep_alive(false)
        .title_case_headers(true);
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
        let conn = serve_connection(&http, stream, router.clone(), limits, shutdown.clone());
        conns.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "health server: {e}");
            }
            drop(permit);
        });
    }
    // Idle connections have seen the cancellation and close; give requests in flight a moment.
    if tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::debug!("health server: dropping connections still open after the grace period");
    }
    conns.shutdown().await;
    tracing::debug!("health server stopped");
}

/// One connection: a single request, within the read and write deadlines; on `shutdown` it
/// closes when idle or once the request in flight is answered.
fn serve_connection(
    http: &http1::Builder,
    stream: TcpStream,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> impl Future<Output = Result<(), String>> + use<> {
    let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    async move {
        let mut conn = std::pin::pin!(conn);
        let served = async {
            tokio::select! {
                r = conn.as_mut() => return r,
                () = shutdown.cancelled() => {}
            }
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        };
        match tokio::time::timeout(limits.read_timeout + limits.write_timeout, served).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("connection failed: {e}")),
            Err(_) => Err("connection closed at its deadline".to_string()),
        }
    }
}

/// The routes. `get` answers HEAD too (same headers, no body) and 405 to other methods.
fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(health)
}

async fn healthz(State(health): State<Health>) -> (StatusCode, String) {
    liveness(&health, Instant::now())
}

/// The `/healthz` answer at `now`.
fn liveness(health: &Health, now: Instant) -> (StatusCode, String) {
    if health.is_alive(now) {
        (StatusCode::OK, "weft is running".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "weft control loop last ran {:.1}s ago (limit {}s)",
                health.since_beat(now).as_secs_f64(),
                health.stale_after().as_secs()
            ),
        )
    }
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.is_ready() {
        (StatusCode::OK, "weft is ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "weft is not ready yet")
    }
}

async fn metrics(State(health): State<Health>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::agent::metrics::CONTENT_TYPE)],
        health.metrics().render(),
    )
        .into_response()
}

/// Unknown paths: 404, or 405 for a method that no path allows (as before the router).
async fn not_found(method: Method) -> Response {
    if method == Method::GET || method == Method::HEAD {
        (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
    } else {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET,HEAD")],
            "method not allowed\n",
        )
            .into_response()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        assert_eq!(
            get(srv.addr, "/").await,
            (404, "404 page not found\n".into())
        );
        assert_eq!(get(srv.addr, "/healthz/x").await.0, 404);
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
        let (samples, _) = weft_testkit::prom::exposition(&body).expect("valid exposition");
        let value = |name, labels| weft_testkit::prom::value(&samples, name, labels);
        assert_eq!(value("weft_peers", &[("backend", "vxlan")]), Some(2.0));
        assert_eq!(value("weft_ready", &[]), Some(1.0));
        // HEAD: headers only.
        let (status, head, body) = raw(srv.addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!((status, body.as_str()), (200, ""), "{head}");
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn headers_head_and_methods() {
        let srv = start(Health::new(DEFAULT_STALE_AFTER), Limits::default()).await;
        let (status, head, body) = raw(srv.addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, 200);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Length: 15\r\n"), "{head}");
        assert!(
            head.contains("Content-Type: text/plain; charset=utf-8\r\n"),
            "{head}"
        );
        assert!(head.contains("Connection: close\r\n"), "{head}");
        assert_eq!(body, "weft is running");
        // HTTP/1.0: answered in HTTP/1.0 (hyper speaks the client's version), then closed
        // (`raw` reads to the end).
        let (status, head, body) = raw(srv.addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
        assert_eq!(status, 200);
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
        assert_eq!(body, "weft is running");
        // HEAD: headers only.
        let (status, head, body) = raw(srv.addr, b"HEAD /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, 200);
        assert!(head.contains("Content-Length: 15\r\n"), "{head}");
        assert_eq!(body, "");
        // Bare LF line endings are accepted.
        assert_eq!(raw(srv.addr, b"GET /healthz HTTP/1.1\n\n").await.0, 200);
        // Other methods: 405 naming the allowed ones, on known and unknown paths.
        for req in [
            &b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n"[..],
            b"DELETE /metrics HTTP/1.1\r\n\r\n",
            b"PUT /nowhere HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        ] {
            let (status, head, _) = raw(srv.addr, req).await;
            assert_eq!(status, 405, "{head}");
            let allow = head
                .lines()
                .find_map(|l| l.strip_prefix("Allow: "))
                .unwrap_or_else(|| panic!("no Allow header: {head}"));
            let mut allowed: Vec<&str> = allow.split(',').map(str::trim).collect();
            allowed.sort_unstable();
            assert_eq!(allowed, ["GET", "HEAD"], "{head}");
        }
        // Malformed request lines: no version, an unknown protocol, a method that is no token.
        assert_eq!(raw(srv.addr, b"GET /healthz\r\n\r\n").await.0, 400);
        assert_eq!(raw(srv.addr, b"GET /healthz SPDY/3\r\n\r\n").await.0, 400);
        assert_eq!(raw(srv.addr, b"\xff\xfe /x HTTP/1.1\r\n\r\n").await.0, 400);
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
        assert_eq!(
            liveness(&h, t0 + Duration::from_secs(200)),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "weft control loop last ran 100.0s ago (limit 60s)".to_string()
            )
        );
    }

    #[tokio::test]
    async fn silent_client_does_not_stall_others_and_times_out() {
        let limits = Limits {
            read_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let srv = start(Health::new(DEFAULT_STALE_AFTER), limits).await;
        let connected = Instant::now();
        let mut silent = TcpStream::connect(srv.addr).await.unwrap();
        // A partial request line, never finished.
        silent.write_all(b"GET /hea").await.unwrap();
        assert_eq!(get(srv.addr, "/healthz").await.0, 200);
        // The silent one is closed, without a response, once the read deadline has passed
        // (and well before the connection's overall deadline).
        let mut out = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, silent.read_to_end(&mut out))
            .await
            .expect("closed within deadline");
        let took = connected.elapsed();
        assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
        assert!(took >= limits.read_timeout, "closed after {took:?}");
        assert!(
            took < limits.read_timeout + limits.write_timeout,
            "closed after {took:?}"
        );
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
        let mut idle = TcpStream::connect(srv.addr).await.unwrap();
        assert_eq!(get(srv.addr, "/healthz").await.0, 200);
        let mut srv = srv;
        srv.shutdown.cancel();
        let task = srv.task.take().unwrap();
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("serve returned within deadline")
            .unwrap();
        // The idle connection was closed, and nothing listens any more.
        let mut out = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, idle.read_to_end(&mut out))
            .await
            .expect("idle connection closed");
        assert!(out.is_empty());
        assert!(TcpStream::connect(srv.addr).await.is_err());
    }

    #[tokio::test]
    async fn shutdown_answers_the_request_in_flight() {
        let srv = start(Health::new(DEFAULT_STALE_AFTER), Limits::default()).await;
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        // Half a request when the shutdown comes; the rest after it.
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut srv = srv;
        srv.shutdown.cancel();
        s.write_all(b"Host: x\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
            .await
            .expect("answered within deadline")
            .unwrap();
        assert_eq!(parse_response(&out).0, 200);
        let task = srv.task.take().unwrap();
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("serve returned within deadline")
            .unwrap();
    }
}
