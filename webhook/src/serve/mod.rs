//! The webhook server: `/mutate` over rustls, a plain health port with `/livez`, `/readyz` and `/metrics`,
//! certificate reload, a RuntimeClass watch, limits and a graceful drain. Policy lives in the mutation; this is
//! the shell around it.

mod admission;
mod metrics;
mod runtime_classes;
mod tls;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use axum_server::Handle;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

pub use admission::{answer_review, Reply};
pub use metrics::{Metrics, Outcome};
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
    /// Time for a client to send the request headers (slow-loris protection).
    pub header_timeout: Duration,
    /// Time to receive the body and answer, from the start of the handler.
    pub request_timeout: Duration,
    /// Reviews answered at once; more wait (within `request_timeout`).
    pub max_concurrent: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 7 * 1024 * 1024,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_concurrent: 256,
        }
    }
}

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
    health: JoinHandle<std::io::Result<()>>,
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

    let state = Arc::new(AppState {
        settings: config.settings.clone(),
        scope,
        metrics,
        certs: certs.clone(),
        draining: AtomicBool::new(false),
        permits: Semaphore::new(config.limits.max_concurrent.max(1)),
        limits: config.limits.clone(),
        deny_on_error: config.deny_on_error,
    });

    let tls_config = server_config(certs, config.http2).map_err(|e| Error::Tls(e.to_string()))?;
    let acceptor = RustlsAcceptor::new(RustlsConfig::from_config(tls_config))
        .handshake_timeout(config.limits.header_timeout)
        .acceptor(NoDelayAcceptor::new());
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
        .header_read_timeout(config.limits.header_timeout);
    let app = Router::new()
        .route("/mutate", post(mutate_handler))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not found; the webhook serves POST /mutate") })
        .with_state(state.clone());
    let server = tokio::spawn(server.serve(app.into_make_service()));

    let health_listener = bind(config.health_listen)?;
    let health_addr =
        health_listener.local_addr().map_err(|source| Error::Listen { addr: config.health_listen, source })?;
    let health_handle = Handle::new();
    let health_app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(state.clone());
    let health = tokio::spawn(
        axum_server::from_tcp(health_listener)
            .map_err(|source| Error::Listen { addr: health_addr, source })?
            .handle(health_handle.clone())
            .serve(health_app.into_make_service()),
    );

    Ok(RunningServer { addr, health_addr, self_signed_pem, state, handle, health_handle, stop, server, health })
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
        let _ = self.health.await;
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

/// Keeps the in-flight gauge honest whichever way the handler returns.
struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

async fn mutate_handler(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let metrics = &state.metrics;
    metrics.in_flight.inc();
    let _in_flight = InFlight(metrics);
    let reply = read_and_answer(&state, &headers, body).await;
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
    (reply.status, [(header::CONTENT_TYPE, "application/json")], reply.body).into_response()
}

async fn read_and_answer(state: &AppState, headers: &HeaderMap, body: Body) -> Reply {
    let limits = &state.limits;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Outcome::unsupported_media_type,
            &format!("expected Content-Type application/json, got {content_type:?}"),
        );
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
        return too_large();
    }
    let work = async {
        let bytes = match Limited::new(body, limits.body_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
            Err(e) => {
                return Reply::error(StatusCode::BAD_REQUEST, Outcome::bad_request, &format!("reading the body: {e}"))
            }
        };
        let _permit = state.permits.acquire().await.expect("the semaphore is never closed");
        let scope = state.scope.load();
        answer_review(&bytes, &state.settings, &scope, state.deny_on_error)
    };
    match tokio::time::timeout(limits.request_timeout, work).await {
        Ok(reply) => reply,
        Err(_) => Reply::error(StatusCode::REQUEST_TIMEOUT, Outcome::bad_request, "request timed out"),
    }
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
