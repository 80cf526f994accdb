//! A real rustls client for the server tests and the load benchmark: one TLS connection, HTTP/1.1 over it, and
//! what the handshake showed (peer certificate, ALPN).
#![allow(dead_code)]

use std::net::SocketAddr;

use mount_hints_webhook::certs::{issue, CertRequest, IssuedCerts};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub struct TlsClient {
    connector: TlsConnector,
    pub addr: SocketAddr,
}

pub struct Handshake {
    pub stream: TlsStream<TcpStream>,
    pub peer_leaf: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
}

pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    pub peer_leaf: Vec<u8>,
}

impl TlsClient {
    pub fn new(ca_pem: &str, addr: SocketAddr) -> Self {
        Self::with(ca_pem, addr, &[&rustls::version::TLS13, &rustls::version::TLS12], &[b"http/1.1"])
    }

    pub fn with(
        ca_pem: &str,
        addr: SocketAddr,
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Self {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        // Every handshake a full one, so each connection shows the certificate served right now.
        config.resumption = rustls::client::Resumption::disabled();
        TlsClient { connector: TlsConnector::from(Arc::new(config)), addr }
    }

    /// A TLS handshake with server name 127.0.0.1 (the certificates carry that IP SAN).
    pub async fn handshake(&self) -> std::io::Result<Handshake> {
        self.handshake_over(TcpStream::connect(self.addr).await?).await
    }

    /// A TLS handshake over a connection the caller made (e.g. with a small receive buffer).
    pub async fn handshake_over(&self, tcp: TcpStream) -> std::io::Result<Handshake> {
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let stream = self.connector.connect(name, tcp).await?;
        let (_, session) = stream.get_ref();
        let peer_leaf = session.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
        let alpn = session.alpn_protocol().map(|p| p.to_vec());
        Ok(Handshake { stream, peer_leaf, alpn })
    }

    /// A keep-alive HTTP/1.1 connection.
    pub async fn connect(&self) -> Result<Connection, String> {
        let handshake = self.handshake().await.map_err(|e| format!("handshake: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(handshake.stream))
            .await
            .map_err(|e| format!("http handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Connection { sender, peer_leaf: handshake.peer_leaf })
    }
}

impl Connection {
    pub async fn post(&mut self, path: &str, content_type: &str, body: Bytes) -> Result<(u16, Vec<u8>), String> {
        let (status, _, body) = self.post_with_headers(path, content_type, body).await?;
        Ok((status, body))
    }

    /// Like [`Connection::post`], with the response headers.
    pub async fn post_with_headers(
        &mut self,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(u16, hyper::HeaderMap, Vec<u8>), String> {
        self.sender.ready().await.map_err(|e| format!("not ready: {e}"))?;
        let request = Request::post(path)
            .header("host", "127.0.0.1")
            .header("content-type", content_type)
            .body(Full::new(body))
            .unwrap();
        let response = self.sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok((status, headers, body.to_vec()))
    }
}

/// Sends the request head and the first `split` bytes of `body`, returns the stream so the caller can finish
/// the body later: a request that is verifiably in flight.
pub async fn start_partial_post(client: &TlsClient, body: &[u8], split: usize) -> TlsStream<TcpStream> {
    let mut stream = client.handshake().await.unwrap().stream;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..split]).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

/// Finishes a request started by [`start_partial_post`] and returns the raw response.
pub async fn finish_partial_post(mut stream: TlsStream<TcpStream>, rest: &[u8]) -> String {
    stream.write_all(rest).await.unwrap();
    stream.flush().await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// Plain HTTP GET on the health port.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// The value of one sample line of the Prometheus text output, 0 when absent.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A short-lived serving certificate with the IP SAN 127.0.0.1 (what a client dialling loopback checks),
/// signed by `ca` or by a new CA.
pub fn loopback_certs(ca: Option<&IssuedCerts>) -> IssuedCerts {
    let request = CertRequest {
        service: "mount-hints-webhook".into(),
        namespace: "mount-hints".into(),
        extra_dns: vec![],
        ips: vec!["127.0.0.1".parse().unwrap()],
        days: 2,
        ca_days: 2,
    };
    issue(&request, ca.map(|c| (c.ca_cert_pem.clone(), c.ca_key_pem.clone()))).unwrap()
}

/// Polls `condition` until it holds, failing the test after 30 seconds. For waiting on another process's state
/// (a metric, readiness), never as a stand-in for synchronisation inside this one.
pub async fn wait_for(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let start = std::time::Instant::now();
    while !condition().await {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An AdmissionReview (v1, Pod CREATE) of `object`.
pub fn review_of(uid: &str, object: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "userInfo": {"username": "system:serviceaccount:default:test"},
            "object": object, "oldObject": null
        }
    }))
    .unwrap()
}

/// An AdmissionReview of a gVisor pod (one emptyDir, mounted) that carries `annotations`.
pub fn review_with_annotations(uid: &str, annotations: serde_json::Map<String, serde_json::Value>) -> Vec<u8> {
    review_of(
        uid,
        serde_json::json!({
            "metadata": {"name": "hostile", "namespace": "default", "annotations": annotations},
            "spec": {"runtimeClassName": "gvisor",
                "volumes": [{"name": "scratch", "emptyDir": {}}],
                "containers": [{"name": "app", "image": "busybox",
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}]}
        }),
    )
}

/// The pod of the reliability report: `count` removable `dev.gvisor.spec.mount.nX.type` annotations (60,000 make
/// a 2.6 MB review, under the API server's 3 MiB limit), each of which the reply must remove and warn about.
pub fn hostile_review(uid: &str, count: usize) -> Vec<u8> {
    let annotations =
        (0..count).map(|i| (format!("dev.gvisor.spec.mount.n{i}.type"), serde_json::Value::from("bind"))).collect();
    review_with_annotations(uid, annotations)
}

/// The webhook binary serving on loopback ports, with its JSON log on a pipe.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub health: SocketAddr,
    /// Log lines after "serving", collected until the process exits.
    log_tail: Option<std::thread::JoinHandle<Vec<String>>>,
}

/// A test that fails half-way leaves no server behind.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl ServerProcess {
    /// Starts `serve` with `certs` (written to `dir`) and `extra` flags; returns once it logs where it listens.
    /// `MOUNT_HINTS_WEBHOOK_BIN` names another build to run instead (to compare figures with an older one).
    pub fn start(dir: &std::path::Path, certs: &IssuedCerts, extra: &[&str]) -> ServerProcess {
        use std::io::BufRead;
        mount_hints_webhook::certs::write_issued(dir, certs).unwrap();
        let binary = std::env::var_os("MOUNT_HINTS_WEBHOOK_BIN")
            .map_or_else(|| env!("CARGO_BIN_EXE_mount-hints-webhook").into(), std::path::PathBuf::from);
        let mut child = std::process::Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--no-cluster"])
            .arg("--tls-cert")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("tls.key"))
            .args(extra)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let (addr, health) = loop {
            let line = lines.next().expect("the server logs before exiting").unwrap();
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if log["message"] == "serving" {
                break (
                    log["addr"].as_str().unwrap().parse().unwrap(),
                    log["health"].as_str().unwrap().parse().unwrap(),
                );
            }
        };
        let log_tail = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
        ServerProcess { child, addr, health, log_tail: Some(log_tail) }
    }

    /// Peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib / 1024.0
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(mut self) -> (Option<i32>, Vec<String>) {
        let kill = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(kill.success());
        let status = self.child.wait().unwrap();
        (status.code(), self.log_tail.take().unwrap().join().unwrap())
    }
}
