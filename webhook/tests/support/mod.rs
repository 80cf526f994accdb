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
        let tcp = TcpStream::connect(self.addr).await?;
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
        self.sender.ready().await.map_err(|e| format!("not ready: {e}"))?;
        let request = Request::post(path)
            .header("host", "127.0.0.1")
            .header("content-type", content_type)
            .body(Full::new(body))
            .unwrap();
        let response = self.sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok((status, body.to_vec()))
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
