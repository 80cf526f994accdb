//! Connection limits on both ports, in process: slow and idle connections are cut, the number open is capped,
//! and a reply the client never reads is dropped after the write timeout, returning its memory.

mod support;

use std::time::Duration;

use bytes::Bytes;
use mount_hints_webhook::serve::{
    self, ClusterAccess, Limits, RunningServer, ServeConfig, TlsSource, HEALTH_MAX_CONNECTIONS,
};
use mount_hints_webhook::MutationSettings;
use support::{hostile_review, loopback_certs, metric, wait_for, TlsClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn start(limits: Limits) -> (RunningServer, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let certs = loopback_certs(None);
    mount_hints_webhook::certs::write_issued(dir.path(), &certs).unwrap();
    let files = serve::CertFiles { cert: dir.path().join("tls.crt"), key: dir.path().join("tls.key") };
    let server = serve::start(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        health_listen: "127.0.0.1:0".parse().unwrap(),
        tls: TlsSource::Files(files),
        http2: false,
        limits,
        cert_poll_interval: Duration::from_secs(60),
        settings: MutationSettings::default(),
        deny_on_error: false,
        cluster: ClusterAccess::Disabled,
    })
    .await
    .unwrap();
    (server, certs.ca_cert_pem, dir)
}

fn port_metric(server: &RunningServer, name: &str, port: &str) -> f64 {
    metric(&server.metrics().encode(), &format!("mount_hints_webhook_{name}{{port=\"{port}\"}}"))
}

/// Reads until the server closes the connection (a reset counts as closed too).
async fn closed_by_server(mut stream: TcpStream) {
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_port_cuts_slow_and_idle_connections_and_caps_how_many_are_open() {
    let header_timeout = Duration::from_millis(500);
    let (server, _, _dir) = start(Limits { header_timeout, ..Limits::default() }).await;
    let health = server.health_addr;
    // Half idle (not a byte sent), half stuck in an endless header line; more than the cap in all.
    let total = HEALTH_MAX_CONNECTIONS + 36;
    let mut connections = Vec::new();
    for i in 0..total {
        let mut stream = TcpStream::connect(health).await.unwrap();
        if i % 2 == 1 {
            stream.write_all(b"GET /livez HTTP/1.1\r\nx-long: ").await.unwrap();
            stream.write_all(&vec![b'a'; 4096]).await.unwrap();
        }
        connections.push(stream);
    }
    // A connection is counted as accepted before it waits for a slot, and as open once it has one.
    wait_for("every connection accepted and the slots taken", async || {
        port_metric(&server, "connections_accepted_total", "health") == total as f64
            && port_metric(&server, "connections_open", "health") >= HEALTH_MAX_CONNECTIONS as f64
    })
    .await;
    assert_eq!(
        port_metric(&server, "connections_open", "health"),
        HEALTH_MAX_CONNECTIONS as f64,
        "connections over the cap wait for a slot"
    );
    // Every one of them is cut: first those holding slots, at the header timeout, then the ones that waited.
    for stream in connections {
        tokio::time::timeout(Duration::from_secs(30), closed_by_server(stream)).await.expect("connection cut");
    }
    wait_for("no connection left", async || port_metric(&server, "connections_open", "health") == 0.0).await;
    // The port still answers.
    assert_eq!(support::http_get(health, "/livez").await.unwrap(), (200, "ok".to_owned()));
    server.drain(Duration::ZERO, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_port_caps_connections_and_cuts_idle_ones() {
    let header_timeout = Duration::from_millis(500);
    let (server, _, _dir) = start(Limits { header_timeout, max_connections: 8, ..Limits::default() }).await;
    let mut connections = Vec::new();
    for _ in 0..12 {
        connections.push(TcpStream::connect(server.addr).await.unwrap());
    }
    wait_for("every connection accepted and the slots taken", async || {
        port_metric(&server, "connections_accepted_total", "webhook") == 12.0
            && port_metric(&server, "connections_open", "webhook") >= 8.0
    })
    .await;
    assert_eq!(port_metric(&server, "connections_open", "webhook"), 8.0);
    for stream in connections {
        tokio::time::timeout(Duration::from_secs(30), closed_by_server(stream)).await.expect("connection cut");
    }
    wait_for("no connection left", async || port_metric(&server, "connections_open", "webhook") == 0.0).await;
    server.drain(Duration::ZERO, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_the_client_never_reads_is_dropped_after_the_write_timeout() {
    let write_timeout = Duration::from_millis(500);
    let (server, ca, _dir) = start(Limits { write_timeout, ..Limits::default() }).await;
    let client = TlsClient::new(&ca, server.addr);
    // A small receive window, and a reply (60,000 removals) far larger than any socket buffer.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let mut stream = client.handshake_over(tcp).await.unwrap().stream;
    let body = hostile_review("never-read", 60_000);
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    stream.flush().await.unwrap();
    wait_for("the review answered", async || {
        metric(&server.metrics().encode(), "mount_hints_webhook_admission_requests_total{outcome=\"patched\"}") == 1.0
    })
    .await;
    // The client reads nothing; the server gives up on it and returns the review's memory.
    wait_for("the connection closed", async || port_metric(&server, "connections_open", "webhook") == 0.0).await;
    wait_for("the reservation returned", async || {
        metric(&server.metrics().encode(), "mount_hints_webhook_review_bytes_reserved") == 0.0
    })
    .await;
    drop(stream);

    // Other clients are served meanwhile and after.
    let mut conn = client.connect().await.unwrap();
    let (status, _) = conn.post("/mutate", "application/json", Bytes::from(hostile_review("read", 10))).await.unwrap();
    assert_eq!(status, 200);
    server.drain(Duration::ZERO, Duration::from_secs(5)).await.unwrap();
}
