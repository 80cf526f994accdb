//! The binary as the kubelet runs it: SIGTERM with a request in flight drains it and exits 0.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use mount_hints_webhook::certs::write_issued;
use serde_json::Value;
use support::{finish_partial_post, http_get, loopback_certs, metric, start_partial_post, wait_for, TlsClient};

const REVIEW: &str = include_str!("../examples/admission-review.json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let certs = loopback_certs(None);
    write_issued(dir.path(), &certs).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mount-hints-webhook"))
        .args(["serve", "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--no-cluster"])
        .args(["--drain-delay", "200ms", "--drain-grace", "10s"])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The JSON log says where it listens.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (addr, health): (SocketAddr, SocketAddr) = loop {
        let line = lines.next().expect("the server logs before exiting").unwrap();
        let Ok(log) = serde_json::from_str::<Value>(&line) else { continue };
        if log["message"] == "serving" {
            break (log["addr"].as_str().unwrap().parse().unwrap(), log["health"].as_str().unwrap().parse().unwrap());
        }
    };
    let log_tail = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let client = TlsClient::new(&certs.ca_cert_pem, addr);
    let body = REVIEW.as_bytes();
    let in_flight = start_partial_post(&client, body, 100).await;
    wait_for("the request in flight", async || {
        metric(&http_get(health, "/metrics").await.unwrap().1, "mount_hints_webhook_admission_in_flight_requests")
            == 1.0
    })
    .await;

    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    wait_for("not ready", async || http_get(health, "/readyz").await.is_ok_and(|(s, _)| s == 503)).await;
    let response = finish_partial_post(in_flight, &body[100..]).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"uid\":\"7f0b2c1e-5a4d-4c3b-9e2f-000000000001\""));

    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    let logs = log_tail.join().unwrap().join("\n");
    assert!(logs.contains("\"message\":\"draining\"") && logs.contains("\"message\":\"stopped\""), "{logs}");
    assert!(logs.contains("\"uid\":\"7f0b2c1e-5a4d-4c3b-9e2f-000000000001\""), "review logged with its uid: {logs}");
}

/// Keep-alive clients sending at a steady pace through a SIGTERM: once the drain starts, every reply says
/// `Connection: close`, so each client stops using its connection (and would open the next one elsewhere) before
/// the drain delay ends and the server stops accepting. No request is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keep_alive_request_is_lost_through_sigterm_under_load() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use support::ServerProcess;

    let dir = tempfile::tempdir().unwrap();
    let certs = loopback_certs(None);
    let server = ServerProcess::start(dir.path(), &certs, &["--drain-delay", "1s", "--drain-grace", "10s"]);
    let client = Arc::new(TlsClient::new(&certs.ca_cert_pem, server.addr));
    let answered = Arc::new(AtomicUsize::new(0));
    const CLIENTS: usize = 8;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, answered) = (client.clone(), answered.clone());
            tokio::spawn(async move {
                let mut conn = client.connect().await.unwrap();
                // An API server's pace, not a benchmark's: most of the time a connection is idle between requests.
                let mut pace = tokio::time::interval(Duration::from_millis(20));
                loop {
                    pace.tick().await;
                    let (status, headers, _) = conn
                        .post_with_headers("/mutate", "application/json", Bytes::from(REVIEW))
                        .await
                        .map_err(|e| format!("request lost: {e}"))?;
                    assert_eq!(status, 200);
                    answered.fetch_add(1, Ordering::SeqCst);
                    if headers.get("connection").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close")) {
                        return Ok::<(), String>(());
                    }
                }
            })
        })
        .collect();
    wait_for("every client under way", async || answered.load(Ordering::SeqCst) >= CLIENTS * 3).await;
    let before = answered.load(Ordering::SeqCst);
    let (code, logs) = tokio::task::spawn_blocking(move || server.terminate()).await.unwrap();
    for task in clients {
        task.await.unwrap().expect("every client was told to close before its connection went away");
    }
    assert_eq!(code, Some(0), "{}", logs.join("\n"));
    assert!(answered.load(Ordering::SeqCst) >= before);
}
