//! The real binary under hostile load: its peak memory stays under the shipped Deployment's limit, and the
//! health port keeps answering while reviews take all the CPU.

mod support;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use support::{
    hostile_review, http_get, loopback_certs, metric, review_with_annotations, wait_for, ServerProcess, TlsClient,
};

/// `resources.limits.memory` of the Deployment in manifests/base.
const DEPLOYMENT_LIMIT_MIB: f64 = 128.0;

/// Sends `body` from `clients` connections at once; every one must be answered with 200.
async fn all_at_once(client: &Arc<TlsClient>, clients: usize, body: Bytes) -> Vec<Value> {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, body) = (client.clone(), body.clone());
            tokio::spawn(async move {
                let mut conn = client.connect().await.unwrap();
                let (status, reply) = conn.post("/mutate", "application/json", body).await.unwrap();
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply[..reply.len().min(300)]));
                serde_json::from_slice::<Value>(&reply).unwrap()
            })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_clients_sending_7_mb_bodies_stay_under_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let certs = loopback_certs(None);
    let server = ServerProcess::start(dir.path(), &certs, &["--request-timeout", "300s"]);
    let client = Arc::new(TlsClient::new(&certs.ca_cert_pem, server.addr));
    // A pod with one 7 MB annotation: a body just under the default limit that decodes and mutates.
    let padding = "x".repeat(7_000_000);
    let annotations = [("example.com/padding".to_owned(), Value::from(padding))].into_iter().collect();
    let body = Bytes::from(review_with_annotations("big", annotations));
    let replies = all_at_once(&client, 60, body).await;
    assert!(replies.iter().all(|r| r["response"]["uid"] == "big" && r["response"]["patch"].is_string()));
    let peak = server.peak_rss_mib();
    eprintln!("peak RSS with 60 clients sending 7 MB bodies: {peak:.1} MiB");
    assert!(peak < DEPLOYMENT_LIMIT_MIB, "peak RSS {peak:.1} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_60000_annotation_pods_at_once_stay_under_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let certs = loopback_certs(None);
    let server = ServerProcess::start(dir.path(), &certs, &["--request-timeout", "300s"]);
    let client = Arc::new(TlsClient::new(&certs.ca_cert_pem, server.addr));
    let body = Bytes::from(hostile_review("hostile", 60_000));
    assert!(body.len() > 2_500_000 && body.len() < 3 << 20, "{} bytes", body.len());
    let replies = all_at_once(&client, 4, body).await;
    let peak = server.peak_rss_mib();
    eprintln!("peak RSS with four 60,000-annotation pods at once: {peak:.1} MiB");
    for reply in replies {
        let response = &reply["response"];
        assert_eq!(response["uid"], "hostile");
        assert!(response["patch"].as_str().unwrap().len() > 60_000 * 50, "every annotation removed");
        let warnings = response["warnings"].as_array().unwrap();
        assert!(warnings.len() < 30 && warnings.last().unwrap().as_str().unwrap().contains(" more warnings"));
        let removed = response["auditAnnotations"]["removed-annotations"].as_str().unwrap();
        assert!(removed.len() < 4096 && removed.ends_with(" more"), "{} bytes", removed.len());
    }
    assert!(peak < DEPLOYMENT_LIMIT_MIB, "peak RSS {peak:.1} MiB");
}

/// One probe as the kubelet makes it: a new connection, GET, read to the end. Plain blocking I/O on its own
/// thread, so nothing in this test process delays it.
fn probe(addr: std::net::SocketAddr) -> (Duration, String) {
    let started = Instant::now();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    (started.elapsed(), response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_answers_within_100_ms_while_heavy_reviews_run() {
    let dir = tempfile::tempdir().unwrap();
    let certs = loopback_certs(None);
    // Room for all four heavy reviews at once: the CPU, not the memory budget, is what is under test.
    let server = ServerProcess::start(
        dir.path(),
        &certs,
        &["--request-timeout", "300s", "--max-bytes-in-flight", &(1u64 << 30).to_string()],
    );
    let client = Arc::new(TlsClient::new(&certs.ca_cert_pem, server.addr));
    let body = Bytes::from(hostile_review("heavy", 60_000));
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, body, stop) = (client.clone(), body.clone(), stop.clone());
            tokio::spawn(async move {
                let mut conn = client.connect().await.unwrap();
                while !stop.load(Ordering::SeqCst) {
                    let (status, _) = conn.post("/mutate", "application/json", body.clone()).await.unwrap();
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    let in_flight = async || {
        metric(
            &http_get(server.health, "/metrics").await.unwrap().1,
            "mount_hints_webhook_admission_in_flight_requests",
        )
    };
    wait_for("heavy reviews in flight", async || in_flight().await >= 2.0).await;
    let health = server.health;
    let probes = tokio::task::spawn_blocking(move || (0..50).map(|_| probe(health)).collect::<Vec<_>>()).await.unwrap();
    assert!(in_flight().await >= 1.0, "the reviews were still running");
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let slowest = probes.iter().map(|(took, _)| *took).max().unwrap();
    eprintln!("slowest /livez of {} under heavy reviews: {slowest:?}", probes.len());
    for (took, response) in &probes {
        assert!(response.starts_with("HTTP/1.1 200") && response.ends_with("ok"), "{response}");
        assert!(*took < Duration::from_millis(100), "/livez took {took:?}");
    }
}
