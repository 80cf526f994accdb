//! `serve`: the admission webhook over TLS, until SIGTERM drains it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use mount_hints_webhook::logging::{self, LogFormat};
use mount_hints_webhook::serve::{self, parse_duration, CertFiles, ClusterAccess, Limits, ServeConfig, TlsSource};
use mount_hints_webhook::Error;

use super::SettingsArgs;

#[derive(Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Plain-HTTP port for /livez, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    health_listen: SocketAddr,
    /// PEM certificate (chain); reloaded when it changes.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key; reloaded when it changes.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Also offer HTTP/2 (ALPN h2). Off by default: the API server calls webhooks over HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = Limits::DEFAULT_BODY_BYTES)]
    body_limit: usize,
    /// Time allowed for a client to send its request headers (and the TLS handshake), on both ports; also how
    /// long an idle keep-alive connection stays open, and how long a connection waits for a free slot.
    #[arg(long, default_value = Limits::DEFAULT_HEADER_TIMEOUT, value_parser = parse_duration)]
    header_timeout: Duration,
    /// Time allowed to receive a body and answer it.
    #[arg(long, default_value = Limits::DEFAULT_REQUEST_TIMEOUT, value_parser = parse_duration)]
    request_timeout: Duration,
    /// Time a reply may wait for the client to read it, on both ports; then the connection is closed.
    #[arg(long, default_value = Limits::DEFAULT_WRITE_TIMEOUT, value_parser = parse_duration)]
    write_timeout: Duration,
    /// Reviews answered at once; more wait.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_CONCURRENT)]
    max_concurrent: usize,
    /// Memory, in bytes, that all reviews in flight may use together; each reserves a multiple of its body
    /// size before the body is read, and more wait.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_BYTES_IN_FLIGHT)]
    max_bytes_in_flight: usize,
    /// Connections open at once on the webhook port; more wait for a slot.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// On SIGTERM: how long to keep serving while reporting not ready, before refusing new connections.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain_delay: Duration,
    /// On SIGTERM: how long in-flight requests may take to finish after that.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    drain_grace: Duration,
    /// How often the certificate files are checked for changes.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    cert_poll_interval: Duration,
    /// Deny a review that cannot be decoded or whose mutation failed (default: allow it untouched).
    #[arg(long)]
    deny_on_error: bool,
    /// Kubeconfig for the RuntimeClass watch (default: in-cluster, then KUBECONFIG / ~/.kube/config).
    #[arg(long, value_name = "FILE", conflicts_with = "no_cluster")]
    kubeconfig: Option<PathBuf>,
    /// Do not watch RuntimeClasses; use the configured runtime class names only.
    #[arg(long)]
    no_cluster: bool,
    /// A RuntimeClass handler that means gVisor (repeatable; replaces the configured list).
    #[arg(long = "runtime-handler", value_name = "HANDLER")]
    runtime_handlers: Vec<String>,
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    #[command(flatten)]
    settings: SettingsArgs,
}

pub fn run(args: ServeArgs) -> Result<(), Error> {
    let log = logging::init(args.log_format);
    let mut settings = args.settings.load()?;
    if !args.runtime_handlers.is_empty() {
        settings.runtime_handlers = args.runtime_handlers.iter().cloned().collect();
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => TlsSource::Files(CertFiles { cert: cert.clone(), key: key.clone() }),
        _ => TlsSource::SelfSigned,
    };
    let cluster = match (&args.kubeconfig, args.no_cluster) {
        (_, true) => ClusterAccess::Disabled,
        (Some(path), _) => ClusterAccess::Kubeconfig(path.clone()),
        (None, false) => ClusterAccess::Infer,
    };
    let config = ServeConfig {
        listen: args.listen,
        health_listen: args.health_listen,
        tls,
        http2: args.http2,
        limits: Limits {
            body_bytes: args.body_limit,
            header_timeout: args.header_timeout,
            request_timeout: args.request_timeout,
            write_timeout: args.write_timeout,
            max_concurrent: args.max_concurrent,
            max_bytes_in_flight: args.max_bytes_in_flight,
            max_connections: args.max_connections,
        },
        cert_poll_interval: args.cert_poll_interval,
        settings,
        deny_on_error: args.deny_on_error,
        cluster,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let running = serve::start(config).await?;
        tracing::info!(addr = %running.addr, health = %running.health_addr, "serving");
        if running.self_signed_pem.is_some() {
            // After the "serving" line, not before it.
            log.flush();
            let port = running.addr.port();
            eprintln!(
                "mount-hints-webhook: serving https://localhost:{port}/mutate with an in-memory self-signed certificate \
                 (localhost, 127.0.0.1); health and metrics on http://{}/\n  try: curl -sk -H 'Content-Type: application/json' \
                 --data-binary @webhook/examples/admission-review.json https://localhost:{port}/mutate",
                running.health_addr
            );
        }
        // SIGTERM (the kubelet) gets the full drain; Ctrl-C at a terminal skips the endpoint delay.
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let delay = tokio::select! {
            _ = sigterm.recv() => args.drain_delay,
            _ = tokio::signal::ctrl_c() => Duration::ZERO,
        };
        running.drain(delay, args.drain_grace).await
    })
}
