//! The serving certificate: loaded from PEM files, swapped in place when the files change (including the
//! `..data` symlink swap Kubernetes does for mounted Secrets), never replaced by an invalid or half-written pair.
//!
//! Handshakes read the current certificate through a resolver, so the rustls `ServerConfig` (versions, ALPN)
//! is built once and a reload is one atomic pointer swap.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::sync::watch;

use super::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate in the PEM data")]
    NoCertificate,
    #[error("bad certificate PEM: {0}")]
    CertificatePem(String),
    #[error("bad private key PEM: {0}")]
    KeyPem(String),
    #[error("key and certificate do not belong together: {0}")]
    Pair(rustls::Error),
    #[error("cannot parse the certificate: {0}")]
    Parse(String),
}

/// A certificate and key that belong together, ready for handshakes.
#[derive(Debug)]
pub struct ServingCert {
    pub certified: Arc<CertifiedKey>,
    /// Unix seconds after which the leaf certificate is no longer valid.
    pub not_after: i64,
    pub subject: String,
}

impl ServingCert {
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::CertificatePem(e.to_string()))?;
        let leaf = chain.first().ok_or(TlsError::NoCertificate)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::Parse(e.to_string()))?;
        let not_after = parsed.validity().not_after.timestamp();
        let subject = parsed.subject().to_string();
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::KeyPem(e.to_string()))?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(TlsError::Pair)?;
        Ok(ServingCert { certified: Arc::new(certified), not_after, subject })
    }

    /// An in-memory self-signed certificate for `localhost` and `127.0.0.1`, for trying the webhook out.
    pub fn self_signed() -> Result<(Self, String), TlsError> {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let generated = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Parse(e.to_string()))?;
        let cert_pem = generated.cert.pem();
        let cert = ServingCert::from_pem(cert_pem.as_bytes(), generated.signing_key.serialize_pem().as_bytes())?;
        Ok((cert, cert_pem))
    }
}

/// Holds the current certificate; empty until a valid one was loaded (the server is not ready then).
#[derive(Debug, Default)]
pub struct CertStore {
    current: ArcSwapOption<ServingCert>,
}

impl CertStore {
    pub fn set(&self, cert: ServingCert) {
        self.current.store(Some(Arc::new(cert)));
    }

    pub fn current(&self) -> Option<Arc<ServingCert>> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|c| c.certified.clone())
    }
}

/// TLS 1.2 and 1.3 with ring; HTTP/1.1 unless `http2` (the API server speaks HTTP/1.1 to webhooks, and
/// advertising h2 only invites clients to multiplex everything onto one connection).
pub fn server_config(store: Arc<CertStore>, http2: bool) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(Arc::new(config))
}

/// Where the certificate and key live on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// Reads both files (through any symlinks) and parses them.
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        Ok((read(&self.cert)?, read(&self.key)?))
    }

    pub fn load(&self) -> Result<ServingCert, String> {
        let (cert, key) = self.read()?;
        ServingCert::from_pem(&cert, &key).map_err(|e| e.to_string())
    }
}

/// Re-reads the files every `interval` and swaps the certificate when their content changed and is valid.
///
/// Polling the content (rather than watching inodes) sees every way a file can change: an in-place write, a
/// rename over it, and the `..data` symlink swap, where no watched file itself changes. A pair that does not
/// parse or does not match is reported once and retried on the next change; the old certificate stays.
pub async fn watch_cert_files(
    files: CertFiles,
    store: Arc<CertStore>,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_seen = files.read().ok();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let files = files.clone();
        let Ok(read) = tokio::task::spawn_blocking(move || files.read()).await else { continue };
        let content = match read {
            Ok(content) => content,
            Err(e) => {
                if last_seen.take().is_some() {
                    metrics.cert_reload_failures.inc();
                    tracing::warn!(error = %e, "certificate files unreadable; keeping the current certificate");
                }
                continue;
            }
        };
        if last_seen.as_ref() == Some(&content) {
            continue;
        }
        match ServingCert::from_pem(&content.0, &content.1) {
            Ok(cert) => {
                tracing::info!(subject = %cert.subject, not_after = cert.not_after, "serving certificate reloaded");
                metrics.cert_not_after.set(cert.not_after);
                metrics.cert_reloads.inc();
                store.set(cert);
            }
            Err(e) => {
                metrics.cert_reload_failures.inc();
                tracing::warn!(error = %e, "new certificate files are not a valid pair; keeping the current certificate");
            }
        }
        last_seen = Some(content);
    }
}
