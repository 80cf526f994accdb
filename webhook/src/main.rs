use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mount_hints_webhook::certs::{self, CertRequest};
use mount_hints_webhook::preview::{parse_documents, patch_report, preview_documents, yaml_stream, PreviewedDocument};
use mount_hints_webhook::serve::{self, parse_duration, CertFiles, ClusterAccess, Limits, ServeConfig, TlsSource};
use mount_hints_webhook::logging::{self, LogFormat};
use mount_hints_webhook::{Error, GvisorScope, MutationSettings, SharePolicy};

/// Mutating admission webhook that adds gVisor mount hints to Pods that run under gVisor.
#[derive(Parser)]
#[command(name = "mount-hints-webhook", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the admission webhook (with no certificate flags: a self-signed certificate for localhost).
    Serve(Box<ServeArgs>),
    /// Print what the webhook would do to Pods or workload manifests (YAML or JSON; `-` for stdin).
    Preview(PreviewArgs),
    /// Write a CA, a serving certificate for <service>.<namespace>.svc and the base64 caBundle.
    Certs(CertsArgs),
}

#[derive(Args)]
struct ServeArgs {
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

#[derive(Args)]
struct CertsArgs {
    #[arg(long, default_value = "mount-hints")]
    service: String,
    #[arg(long, default_value = "mount-hints")]
    namespace: String,
    /// Output directory; an existing ca.crt/ca.key there is reused.
    #[arg(long, default_value = "certs/out")]
    out: PathBuf,
    /// Extra DNS name for the serving certificate (repeatable).
    #[arg(long = "dns")]
    dns: Vec<String>,
    /// IP address for the serving certificate (repeatable), e.g. 127.0.0.1 for a webhook called by URL.
    #[arg(long = "ip")]
    ips: Vec<IpAddr>,
    /// Validity of the serving certificate, in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Validity of a new CA, in days.
    #[arg(long, default_value_t = 3650)]
    ca_days: u32,
    /// Make a new CA even when one exists (the caBundle changes).
    #[arg(long)]
    new_ca: bool,
}

/// Mutation settings shared by every command; flags override the file.
#[derive(Args)]
struct SettingsArgs {
    /// Settings file (YAML or JSON): runtimeClassNames, runtimeHandlers, sharePolicy, minRunscRelease,
    /// memorySizeOption, denyAnnotations.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A runtime class name that means gVisor (repeatable; replaces the configured list).
    #[arg(long = "runtime-class", value_name = "NAME")]
    runtime_classes: Vec<String>,
    #[arg(long, value_enum)]
    share_policy: Option<SharePolicy>,
    /// Emit size=<bytes> from a Memory emptyDir's sizeLimit (every node must run runsc >= release-20240501).
    #[arg(long)]
    memory_size_option: bool,
    /// The oldest runsc release on any gVisor node (YYYYMMDD); release-dependent rules (valued options,
    /// directfs) follow it.
    #[arg(long, value_name = "YYYYMMDD")]
    min_runsc_release: Option<mount_hints::RunscRelease>,
}

impl SettingsArgs {
    fn load(&self) -> Result<MutationSettings, Error> {
        let mut settings = match &self.config {
            Some(path) => MutationSettings::from_file(path)?,
            None => MutationSettings::default(),
        };
        if !self.runtime_classes.is_empty() {
            settings.runtime_class_names = self.runtime_classes.iter().cloned().collect();
        }
        if let Some(policy) = self.share_policy {
            settings.share_policy = policy;
        }
        settings.memory_size_option |= self.memory_size_option;
        if let Some(release) = self.min_runsc_release {
            settings.min_runsc_release = Some(release);
        }
        settings.validate()?;
        Ok(settings)
    }
}

#[derive(Args)]
struct PreviewArgs {
    /// Input file, or `-` for standard input.
    #[arg(default_value = "-")]
    input: String,
    #[arg(long, short, value_enum, default_value_t = Output::Yaml)]
    output: Output,
    /// Treat every pod as a gVisor pod, whatever its runtimeClassName.
    #[arg(long)]
    assume_gvisor: bool,
    #[command(flatten)]
    settings: SettingsArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    /// The mutated objects, as a YAML stream.
    Yaml,
    /// The mutated objects, as JSON (one value per document).
    Json,
    /// The RFC 6902 JSON Patch of the document; for several documents, one JSON array of
    /// `{document, kind, name, patch}` entries.
    Patch,
    /// Only the warnings, on standard output.
    Warnings,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Preview(args) => preview(&args),
        Command::Serve(args) => serve_command(*args),
        Command::Certs(args) => certs_command(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mount-hints-webhook: {e}");
            ExitCode::from(if e.is_bad_input() { 2 } else { 1 })
        }
    }
}

fn serve_command(args: ServeArgs) -> Result<(), Error> {
    logging::init(args.log_format);
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

fn certs_command(args: &CertsArgs) -> Result<(), Error> {
    let request = CertRequest {
        service: args.service.clone(),
        namespace: args.namespace.clone(),
        extra_dns: args.dns.clone(),
        ips: args.ips.clone(),
        days: args.days,
        ca_days: args.ca_days,
    };
    let ca = if args.new_ca { None } else { certs::existing_ca(&args.out)? };
    let reused = ca.is_some();
    let issued = certs::issue(&request, ca)?;
    certs::write_issued(&args.out, &issued)?;
    let out = args.out.display();
    println!(
        "{} CA, new serving certificate for {}",
        if reused { "kept the" } else { "new" },
        request.dns_names().join(", ")
    );
    println!("  {out}/{} {out}/{}  (serve --tls-cert/--tls-key, or the Secret)", certs::TLS_CERT, certs::TLS_KEY);
    println!("  {out}/{}  (caBundle of the MutatingWebhookConfiguration)", certs::CA_BUNDLE);
    Ok(())
}

fn preview(args: &PreviewArgs) -> Result<(), Error> {
    let settings = args.settings.load()?;
    let scope = if args.assume_gvisor { GvisorScope::every_pod() } else { GvisorScope::from_settings(&settings) };
    let (origin, text) = if args.input == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|source| Error::Read { path: "<stdin>".into(), source })?;
        ("<stdin>".to_owned(), text)
    } else {
        let path = PathBuf::from(&args.input);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read { path: path.clone(), source })?;
        (args.input.clone(), text)
    };
    let documents = parse_documents(&text, &origin)?;
    let previewed = preview_documents(documents, &origin, &settings, &scope)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for document in &previewed {
        for note in &document.notes {
            eprintln!("note: {note}");
        }
        for audit in &document.audit {
            eprintln!("audit: {audit}");
        }
        if !matches!(args.output, Output::Warnings) {
            for warning in &document.warnings {
                eprintln!("warning: {warning}");
            }
        }
    }
    write_output(&mut out, args.output, &previewed)?;
    out.flush()?;
    Ok(())
}

fn write_output(out: &mut impl Write, output: Output, previewed: &[PreviewedDocument]) -> Result<(), Error> {
    match output {
        Output::Yaml => out.write_all(yaml_stream(previewed)?.as_bytes())?,
        Output::Json => {
            for document in previewed {
                writeln!(out, "{}", pretty(&document.object))?;
            }
        }
        Output::Patch => writeln!(out, "{}", pretty(&patch_report(previewed)))?,
        Output::Warnings => {
            for warning in previewed.iter().flat_map(|d| &d.warnings) {
                writeln!(out, "{warning}")?;
            }
        }
    }
    Ok(())
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).expect("a JSON value always serializes")
}
