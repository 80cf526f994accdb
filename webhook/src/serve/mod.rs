//! The webhook server: `/mutate` over rustls, a plain health port with `/livez`, `/readyz` and `/metrics`,
//! certificate reload, a RuntimeClass watch, limits and a graceful drain. Policy lives in the mutation; this is
//! the shell around it.
//!
//! The health port runs on its own thread and runtime, so that no review load (a pod that takes tens of
//! milliseconds to mutate, thousands of connections) delays a probe.

mod admission;
mod budget;
mod connection;
mod metrics;
mod reply;
mod runtime_classes;
mod tls;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use axum_server::Handle;
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

pub use admission::{answer_review, Reply, ReviewVersion};
pub use budget::{ReviewBudget, WORK_FACTOR};
pub use connection::GuardAcceptor;
pub use metrics::{Metrics, Outcome, Port};
pub use reply::{MAX_AUDIT_VALUE, MAX_WARNINGS};
pub use runtime_classes::{scope_for, ClusterAccess};
pub use tls::{server_config, CertFiles, CertStore, ServingCert, TlsError};

use crate::settings::{GvisorScope, MutationSettings};
use crate::Error;

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    Files(CertFiles),
    /// Generated in memory for `localhost`/`127.0.0.1`: for trying the webhook out, never for a cluster.
    SelfSigned,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub body_bytes: usize,
    /// Time for a client to send the request headers, on both ports (slow-loris protection); it also ends idle
    /// keep-alive connections, and bounds the wait for a connection slot.
    pub header_timeout: Duration,
    /// Time to receive the body and answer, from the start of the handler.
    pub request_timeout: Duration,
    /// Time a reply may wait for the client to read it, on both ports.
    pub write_timeout: Duration,
    /// Reviews answered at once; more wait (within `request_timeout`).
    pub max_concurrent: usize,
    /// Memory all reviews in flight may use together (see [`ReviewBudget`]).
    pub max_bytes_in_flight: usize,
    /// Connections open at once on the webhook port; more wait for a slot (within `header_timeout`).
    pub max_connections: usize,
}

impl Limits {
    pub const DEFAULT_BODY_BYTES: usize = 7 * 1024 * 1024;
    pub const DEFAULT_HEADER_TIMEOUT: &str = "5s";
    pub const DEFAULT_REQUEST_TIMEOUT: &str = "10s";
    pub const DEFAULT_WRITE_TIMEOUT: &str = "10s";
    pub const DEFAULT_MAX_CONCURRENT: usize = 256;
    pub const DEFAULT_MAX_BYTES_IN_FLIGHT: usize = 64 * 1024 * 1024;
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: Self::DEFAULT_BODY_BYTES,
            header_timeout: parse_default(Self::DEFAULT_HEADER_TIMEOUT),
            request_timeout: parse_default(Self::DEFAULT_REQUEST_TIMEOUT),
            write_timeout: parse_default(Self::DEFAULT_WRITE_TIMEOUT),
            max_concurrent: Self::DEFAULT_MAX_CONCURRENT,
            max_bytes_in_flight: Self::DEFAULT_MAX_BYTES_IN_FLIGHT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// `500ms`, `5s`, `2m`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number.trim().parse().map_err(|_| format!("{s:?} is not a duration like 500ms, 5s or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit in {s:?}; use ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_default(s: &str) -> Duration {
    parse_duration(s).expect("the default durations are valid")
}

/// Connections open at once on the health port: probes and a scraper or two.
pub const HEALTH_MAX_CONNECTIONS: usize = 64;
/// hyper's read and write buffer limit per connection: webhook requests have small headers (bodies are read in
/// pieces of this size); health requests are tiny.
const WEBHOOK_BUFFER_BYTES: usize = 64 * 1024;
const HEALTH_BUFFER_BYTES: usize = 16 * 1024;
/// Bodies over this size are answered on the blocking pool, off the threads that serve connections: a review
/// this large takes milliseconds of CPU.
const OFFLOAD_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub health_listen: SocketAddr,
    pub tls: TlsSource,
    pub http2: bool,
    pub limits: Limits,
    pub cert_poll_interval: Duration,
    pub settings: MutationSettings,
    /// Deny (instead of allow) a review whose object cannot be decoded or whose mutation failed.
    pub deny_on_error: bool,
    pub cluster: ClusterAccess,
}

struct AppState {
    settings: MutationSettings,
    scope: Arc<ArcSwap<GvisorScope>>,
    metrics: Arc<Metrics>,
    certs: Arc<CertStore>,
    draining: AtomicBool,
    limits: Limits,
    deny_on_error: bool,
    permits: Semaphore,
    budget: ReviewBudget,
}

/// A started server. Dropping it does not stop it; call [`RunningServer::drain`].
pub struct RunningServer {
    pub addr: SocketAddr,
    pub health_addr: SocketAddr,
    /// The generated certificate (PEM) when serving with [`TlsSource::SelfSigned`].
    pub self_signed_pem: Option<String>,
    state: Arc<AppState>,
    handle: Handle<SocketAddr>,
    health_handle: Handle<SocketAddr>,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    health: oneshot::Receiver<std::io::Result<()>>,
}

fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let listener = TcpListener::bind(addr).map_err(|source| Error::Listen { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| Error::Listen { addr, source })?;
    Ok(listener)
}

/// Binds both ports and starts serving. Returns once the sockets are listening.
pub async fn start(config: ServeConfig) -> Result<RunningServer, Error> {
    // One process-wide crypto provider (ring), whoever asks for a default later (kube's client does).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::new());
    let certs = Arc::new(CertStore::default());
    let (stop, stop_rx) = watch::channel(false);

    let mut self_signed_pem = None;
    match &config.tls {
        TlsSource::SelfSigned => {
            let (cert, pem) = ServingCert::self_signed().map_err(|e| Error::Tls(e.to_string()))?;
            metrics.cert_not_after.set(cert.not_after);
            certs.set(cert);
            self_signed_pem = Some(pem);
        }
        TlsSource::Files(files) => {
            // Start even with a bad pair (not ready, so no traffic): a Secret may be filled a moment later.
            match files.load() {
                Ok(cert) => {
                    metrics.cert_not_after.set(cert.not_after);
                    certs.set(cert);
                }
                Err(e) => {
                    metrics.cert_reload_failures.inc();
                    tracing::error!(error = %e, "no valid serving certificate yet; not ready until one appears");
                }
            }
            tokio::spawn(tls::watch_cert_files(
                files.clone(),
                certs.clone(),
                metrics.clone(),
                config.cert_poll_interval,
                stop_rx.clone(),
            ));
        }
    }

    let scope = Arc::new(ArcSwap::from_pointee(GvisorScope::from_settings(&config.settings)));
    metrics.gvisor_runtime_classes.set(config.settings.runtime_class_names.len() as i64);
    tokio::spawn(runtime_classes::watch_runtime_classes(
        config.cluster.clone(),
        config.settings.clone(),
        scope.clone(),
        metrics.clone(),
        stop_rx.clone(),
    ));

    let budget = ReviewBudget::new(config.limits.max_bytes_in_flight, metrics.review_bytes_reserved.clone());
    let state = Arc::new(AppState {
        settings: config.settings.clone(),
        scope,
        metrics,
        certs: certs.clone(),
        draining: AtomicBool::new(false),
        permits: Semaphore::new(config.limits.max_concurrent.max(1)),
        budget,
        limits: config.limits.clone(),
        deny_on_error: config.deny_on_error,
    });

    let limits = &config.limits;
    let tls_config = server_config(certs, config.http2).map_err(|e| Error::Tls(e.to_string()))?;
    let acceptor = RustlsAcceptor::new(RustlsConfig::from_config(tls_config))
        .handshake_timeout(limits.header_timeout)
        .acceptor(GuardAcceptor::new(
            limits.max_connections,
            limits.header_timeout,
            limits.write_timeout,
            &state.metrics,
            Port::webhook,
        ));
    let listener = bind(config.listen)?;
    let addr = listener.local_addr().map_err(|source| Error::Listen { addr: config.listen, source })?;
    let handle = Handle::new();
    let mut server = axum_server::from_tcp(listener)
        .map_err(|source| Error::Listen { addr, source })?
        .acceptor(acceptor)
        .handle(handle.clone());
    if !config.http2 {
        server = server.http1_only();
    }
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(WEBHOOK_BUFFER_BYTES);
    let app = Router::new().route("/mutate", post(mutate_handler)).fallback(not_found).with_state(state.clone());
    let server = tokio::spawn(server.serve(app.into_make_service()));

    let health_listener = bind(config.health_listen)?;
    let health_addr =
        health_listener.local_addr().map_err(|source| Error::Listen { addr: config.health_listen, source })?;
    let health_handle = Handle::new();
    let health = spawn_health(health_listener, state.clone(), health_handle.clone())?;

    Ok(RunningServer { addr, health_addr, self_signed_pem, state, handle, health_handle, stop, server, health })
}

/// The health port, on a thread and runtime of its own.
fn spawn_health(
    listener: TcpListener,
    state: Arc<AppState>,
    handle: Handle<SocketAddr>,
) -> Result<oneshot::Receiver<std::io::Result<()>>, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (done, finished) = oneshot::channel();
    let limits = state.limits.clone();
    let acceptor = GuardAcceptor::new(
        HEALTH_MAX_CONNECTIONS,
        limits.header_timeout,
        limits.write_timeout,
        &state.metrics,
        Port::health,
    );
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(state);
    // Registered with the health runtime's reactor: the listener belongs to that runtime.
    let mut server = {
        let _entered = runtime.enter();
        let addr = listener.local_addr()?;
        axum_server::from_tcp(listener).map_err(|source| Error::Listen { addr, source })?
    }
    .acceptor(acceptor)
    .handle(handle)
    .http1_only();
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(HEALTH_BUFFER_BYTES);
    std::thread::Builder::new().name("health".to_owned()).spawn(move || {
        let served = runtime.block_on(server.serve(app.into_make_service()));
        let _ = done.send(served);
    })?;
    Ok(finished)
}

impl RunningServer {
    /// Graceful stop: report not ready at once, keep serving for `delay` (so endpoints and load balancers stop
    /// sending new requests), then stop accepting and let in-flight requests finish within `grace`.
    pub async fn drain(self, delay: Duration, grace: Duration) -> Result<(), Error> {
        self.state.draining.store(true, Ordering::SeqCst);
        tracing::info!(delay_ms = delay.as_millis() as u64, grace_ms = grace.as_millis() as u64, "draining");
        tokio::time::sleep(delay).await;
        self.handle.graceful_shutdown(Some(grace));
        let served = self.server.await;
        let _ = self.stop.send(true);
        self.health_handle.shutdown();
        if let Ok(Err(e)) = self.health.await {
            tracing::warn!(error = %e, "the health server ended with an error");
        }
        tracing::info!(connections_left = self.handle.connection_count(), "stopped");
        match served {
            Ok(result) => result.map_err(Error::Serve),
            Err(join) => Err(Error::Serve(std::io::Error::other(join))),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let reply = Reply::error(status, Outcome::bad_request, message);
    (status, [(header::CONTENT_TYPE, "application/json")], reply.body).into_response()
}

async fn not_found(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let mut response = json_error(StatusCode::NOT_FOUND, "not found; the webhook serves POST /mutate");
    close_when_draining(&state, request.version(), &mut response);
    response
}

/// Once draining, every HTTP/1 reply says `Connection: close`: the client opens its next connection elsewhere
/// instead of sending a request on this one just as the drain closes it. (HTTP/2 has GOAWAY for this.)
fn close_when_draining(state: &AppState, version: Version, response: &mut Response) {
    if version <= Version::HTTP_11 && state.draining.load(Ordering::Relaxed) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// Keeps the in-flight gauge honest whichever way the handler returns.
struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

async fn mutate_handler(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let metrics = &state.metrics;
    metrics.in_flight.inc();
    let _in_flight = InFlight(metrics);
    let version = request.version();
    let (reply, reservation) = read_and_answer(&state, request).await;
    metrics.count(reply.outcome);
    metrics.latency.observe(started.elapsed().as_secs_f64());
    match reply.outcome {
        Outcome::patched | Outcome::decode_error | Outcome::internal_error => tracing::info!(
            uid = %reply.uid, outcome = ?reply.outcome, hints = reply.patched_hints,
            micros = started.elapsed().as_micros() as u64, "review"
        ),
        Outcome::bad_request | Outcome::unsupported_media_type | Outcome::too_large => {
            tracing::warn!(status = reply.status.as_u16(), outcome = ?reply.outcome, "rejected request")
        }
        _ => tracing::debug!(uid = %reply.uid, outcome = ?reply.outcome, "review"),
    }
    let mut response = Response::new(Body::new(budget::ReplyBody::new(reply.body, reservation)));
    *response.status_mut() = reply.status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    close_when_draining(&state, version, &mut response);
    response
}

/// The reply, and the budget reservation that must last until the reply has been handed to the connection.
async fn read_and_answer(state: &Arc<AppState>, request: Request) -> (Reply, Option<budget::Reservation>) {
    let limits = &state.limits;
    let headers = request.headers();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        let message = format!("expected Content-Type application/json, got {content_type:?}");
        return (Reply::error(StatusCode::UNSUPPORTED_MEDIA_TYPE, Outcome::unsupported_media_type, &message), None);
    }
    let too_large = || {
        Reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::too_large,
            &format!("request body over the limit of {} bytes", limits.body_bytes),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limits.body_bytes) {
        return (too_large(), None);
    }
    let work = async {
        // Both the permit and the memory are taken before a byte of the body is read: waiting reviews hold
        // nothing but their connection.
        let _permit = state.permits.acquire().await.expect("the semaphore is never closed");
        let reservation = state.budget.reserve(declared.unwrap_or(limits.body_bytes)).await;
        let bytes = match read_body(request.into_body(), declared, limits.body_bytes).await {
            Ok(bytes) => bytes,
            Err(BodyError::TooLarge) => return (too_large(), None),
            Err(BodyError::Read(e)) => {
                let message = format!("reading the body: {e}");
                return (Reply::error(StatusCode::BAD_REQUEST, Outcome::bad_request, &message), None);
            }
        };
        let reply = if bytes.len() > OFFLOAD_BYTES {
            let state = state.clone();
            tokio::task::spawn_blocking(move || {
                let reply = answer(&state, &bytes);
                drop(bytes);
                return_freed_memory();
                reply
            })
            .await
            .unwrap_or_else(|_| {
                Reply::error(StatusCode::INTERNAL_SERVER_ERROR, Outcome::internal_error, "review task failed")
            })
        } else {
            answer(state, &bytes)
        };
        (reply, Some(reservation))
    };
    match tokio::time::timeout(limits.request_timeout, work).await {
        Ok(answered) => answered,
        Err(_) => (Reply::error(StatusCode::REQUEST_TIMEOUT, Outcome::bad_request, "request timed out"), None),
    }
}

enum BodyError {
    TooLarge,
    Read(axum::Error),
}

/// The whole body, at most `limit` bytes: a body that came in one piece as it is, else copied once into a
/// buffer of its declared size (collecting the pieces first would hold the body twice).
async fn read_body(mut body: Body, declared: Option<usize>, limit: usize) -> Result<Bytes, BodyError> {
    let (mut first, mut rest, mut total) = (None::<Bytes>, Vec::new(), 0usize);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else { continue };
        total += data.len();
        if total > limit {
            return Err(BodyError::TooLarge);
        }
        match first.take() {
            None if rest.is_empty() => first = Some(data),
            earlier => {
                if let Some(earlier) = earlier {
                    rest.reserve_exact(declared.unwrap_or(total).clamp(total, limit));
                    rest.extend_from_slice(&earlier);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(rest)))
}

/// glibc keeps what a thread freed in that thread's arena; large reviews run on whichever blocking thread is
/// free, so without this each arena would keep its own high-water mark of a large review.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it takes the allocator's locks itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn answer(state: &AppState, body: &[u8]) -> Reply {
    answer_review(body, &state.settings, &state.scope.load(), state.deny_on_error)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else if state.certs.current().is_none() {
        (StatusCode::SERVICE_UNAVAILABLE, "no valid serving certificate").into_response()
    } else {
        (StatusCode::OK, "ok").into_response()
    }
}

async fn metrics_handler(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
        .into_response()
}
