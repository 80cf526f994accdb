//! The server over real TLS on loopback: protocol choices, error replies, health, metrics, certificate rotation
//! (including the `..data` symlink swap) while a client keeps requesting, and draining with requests in flight.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use mount_hints_webhook::certs::IssuedCerts;
use mount_hints_webhook::serve::{self, CertFiles, ClusterAccess, Limits, RunningServer, ServeConfig, TlsSource};
use mount_hints_webhook::MutationSettings;
use serde_json::Value;
use support::{finish_partial_post, http_get, loopback_certs, metric, start_partial_post, wait_for, TlsClient};
use tokio::sync::Notify;

const REVIEW: &str = include_str!("../examples/admission-review.json");
const LARGE: &str = include_str!("../benches/bodies/large.json");
const DEADLINE: Duration = Duration::from_secs(30);

/// Lays the pair out the way the kubelet mounts a Secret: `..<version>/` holds the files, `..data` points at
/// it, and `tls.crt`/`tls.key` point through `..data`. A new version is published by swapping `..data`.
fn publish_secret(dir: &Path, version: &str, cert: &[u8], key: &[u8]) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&versioned).unwrap();
    std::fs::write(versioned.join("tls.crt"), cert).unwrap();
    std::fs::write(versioned.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(dir.join(name)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
    }
}

fn config(tls: TlsSource) -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        health_listen: "127.0.0.1:0".parse().unwrap(),
        tls,
        http2: false,
        limits: Limits { body_bytes: 256 * 1024, ..Limits::default() },
        cert_poll_interval: Duration::from_millis(50),
        settings: MutationSettings::default(),
        deny_on_error: false,
        cluster: ClusterAccess::Disabled,
    }
}

fn files(dir: &Path) -> TlsSource {
    TlsSource::Files(CertFiles { cert: dir.join("tls.crt"), key: dir.join("tls.key") })
}

async fn start_with_secret(http2: bool) -> (RunningServer, IssuedCerts, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let certs = loopback_certs(None);
    publish_secret(dir.path(), "v1", certs.cert_pem.as_bytes(), certs.key_pem.as_bytes());
    let server = serve::start(ServeConfig { http2, ..config(files(dir.path())) }).await.unwrap();
    (server, certs, dir)
}

fn leaf_der(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap().1.contents
}

/// Checks an AdmissionReview reply: the uid, allowed, and a base64 JSON Patch that applies to `request`.
fn assert_patched_reply(request: &str, status: u16, body: &[u8]) {
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(body));
    let reply: Value = serde_json::from_slice(body).unwrap();
    let review: Value = serde_json::from_str(request).unwrap();
    assert_eq!(reply["kind"], "AdmissionReview");
    assert_eq!(reply["response"]["uid"], review["request"]["uid"]);
    assert_eq!(reply["response"]["allowed"], true);
    assert_eq!(reply["response"]["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD.decode(reply["response"]["patch"].as_str().unwrap()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch.0).unwrap();
    assert!(object["metadata"]["annotations"]
        .as_object()
        .unwrap()
        .keys()
        .any(|k| k.starts_with("dev.gvisor.spec.mount.")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_reviews_over_tls_1_2_and_1_3_with_http1_unless_asked() {
    let (server, certs, _dir) = start_with_secret(false).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let client = TlsClient::with(&certs.ca_cert_pem, server.addr, &[version], &[b"h2", b"http/1.1"]);
        let handshake = client.handshake().await.unwrap();
        assert_eq!(handshake.alpn.as_deref(), Some(&b"http/1.1"[..]), "h2 offered, http/1.1 chosen");
        assert_eq!(handshake.peer_leaf, leaf_der(&certs.cert_pem));
        let mut conn = client.connect().await.unwrap();
        for body in [REVIEW, LARGE] {
            let (status, reply) = conn.post("/mutate", "application/json", Bytes::from(body)).await.unwrap();
            assert_patched_reply(body, status, &reply);
        }
    }
    server.drain(Duration::ZERO, Duration::from_secs(5)).await.unwrap();

    let (server, certs, _dir) = start_with_secret(true).await;
    let client = TlsClient::with(&certs.ca_cert_pem, server.addr, &[&rustls::version::TLS13], &[b"h2", b"http/1.1"]);
    assert_eq!(client.handshake().await.unwrap().alpn.as_deref(), Some(&b"h2"[..]));
    server.drain(Duration::ZERO, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_request_gets_a_clear_reply_and_is_counted() {
    let (server, certs, _dir) = start_with_secret(false).await;
    let client = TlsClient::new(&certs.ca_cert_pem, server.addr);
    let mut conn = client.connect().await.unwrap();
    let undecodable = REVIEW.replacen("\"containers\": [", "\"containers\": 7, \"x\": [", 1);
    let cases: Vec<(&str, &str, Bytes, u16, &str)> = vec![
        ("/mutate", "text/plain", Bytes::from(REVIEW), 415, "expected Content-Type application/json"),
        (
            "/mutate",
            "application/json",
            Bytes::from("{\"hello\": 1}"),
            400,
            "not an admission.k8s.io/v1 AdmissionReview",
        ),
        ("/mutate", "application/json", Bytes::from("not json"), 400, "not an admission.k8s.io/v1 AdmissionReview"),
        ("/other", "application/json", Bytes::from(REVIEW), 404, "POST /mutate"),
        ("/mutate", "application/json; charset=utf-8", Bytes::from(undecodable), 200, "cannot decode this request"),
    ];
    for (path, content_type, body, want_status, want_text) in cases {
        let mut conn2 = client.connect().await.unwrap();
        let (status, reply) = conn2.post(path, content_type, body).await.unwrap();
        let text = String::from_utf8_lossy(&reply);
        assert_eq!(status, want_status, "{path} {content_type}: {text}");
        assert!(text.contains(want_text), "{text}");
        let json: Value = serde_json::from_slice(&reply).expect("every reply is JSON");
        if status == 200 {
            assert_eq!(json["response"]["uid"], "7f0b2c1e-5a4d-4c3b-9e2f-000000000001");
            assert_eq!(json["response"]["allowed"], true);
        }
    }
    let (status, reply) = conn.post("/mutate", "application/json", Bytes::from(REVIEW)).await.unwrap();
    assert_patched_reply(REVIEW, status, &reply);
    // Over the body limit: refused from the declared length, before the body is read.
    let oversized = vec![b' '; 300 * 1024];
    let response = finish_partial_post(start_partial_post(&client, &oversized, 0).await, &[]).await;
    assert!(response.starts_with("HTTP/1.1 413") && response.contains("over the limit of 262144 bytes"), "{response}");

    let (status, metrics) = http_get(server.health_addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let count = |outcome: &str| {
        metric(&metrics, &format!("mount_hints_webhook_admission_requests_total{{outcome=\"{outcome}\"}}"))
    };
    assert_eq!(count("unsupported_media_type"), 1.0);
    assert_eq!(count("bad_request"), 2.0);
    assert_eq!(count("too_large"), 1.0);
    assert_eq!(count("decode_error"), 1.0);
    assert_eq!(count("patched"), 1.0);
    assert_eq!(metric(&metrics, "mount_hints_webhook_admission_in_flight_requests"), 0.0);
    assert!(metric(&metrics, "mount_hints_webhook_admission_duration_seconds_bucket{le=\"0.00005\"}") >= 0.0);
    assert!(metrics.contains("mount_hints_webhook_admission_duration_seconds_bucket{le=\"0.00005\"}"));
    let not_after = metric(&metrics, "mount_hints_webhook_certificate_not_after_timestamp_seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(not_after > now + 86400.0 && not_after < now + 3.0 * 86400.0, "a 2-day certificate: {not_after}");
    assert_eq!(http_get(server.health_addr, "/livez").await.unwrap().0, 200);
    assert_eq!(http_get(server.health_addr, "/readyz").await.unwrap().0, 200);
    server.drain(Duration::ZERO, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotates_under_load_without_a_failed_request() {
    let (server, first, dir) = start_with_secret(false).await;
    let second = loopback_certs(Some(&first));
    let client = Arc::new(TlsClient::new(&first.ca_cert_pem, server.addr));
    let done_with_old = Arc::new(Notify::new());
    let requests = Arc::new(AtomicUsize::new(0));
    let new_leaf = leaf_der(&second.cert_pem);

    let load = {
        let (client, done_with_old, requests, new_leaf) =
            (client.clone(), done_with_old.clone(), requests.clone(), new_leaf.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let mut seen_new = 0;
            while seen_new < 20 {
                assert!(start.elapsed() < DEADLINE, "never saw the new certificate");
                // A new connection each time: a rotation shows on the next handshake.
                let mut conn = client.connect().await.expect("no failed connection");
                let (status, reply) =
                    conn.post("/mutate", "application/json", Bytes::from(REVIEW)).await.expect("no failed request");
                assert_patched_reply(REVIEW, status, &reply);
                if conn.peer_leaf == new_leaf {
                    seen_new += 1;
                }
                if requests.fetch_add(1, Ordering::SeqCst) == 20 {
                    done_with_old.notify_one();
                }
            }
        })
    };
    done_with_old.notified().await;
    publish_secret(dir.path(), "v2", second.cert_pem.as_bytes(), second.key_pem.as_bytes());
    load.await.unwrap();

    // A half-written or mismatched pair is refused and the current certificate stays.
    std::fs::write(dir.path().join("..v2/tls.crt"), &second.cert_pem.as_bytes()[..200]).unwrap();
    wait_for("a reload failure", async || {
        let metrics = http_get(server.health_addr, "/metrics").await.unwrap().1;
        metric(&metrics, "mount_hints_webhook_certificate_reload_failures_total") >= 1.0
    })
    .await;
    let other = loopback_certs(None);
    publish_secret(dir.path(), "v3", second.cert_pem.as_bytes(), other.key_pem.as_bytes());
    wait_for("a second reload failure", async || {
        let metrics = http_get(server.health_addr, "/metrics").await.unwrap().1;
        metric(&metrics, "mount_hints_webhook_certificate_reload_failures_total") >= 2.0
    })
    .await;
    let mut conn = client.connect().await.unwrap();
    assert_eq!(conn.peer_leaf, new_leaf, "the last valid certificate is still served");
    let (status, reply) = conn.post("/mutate", "application/json", Bytes::from(REVIEW)).await.unwrap();
    assert_patched_reply(REVIEW, status, &reply);
    let metrics = http_get(server.health_addr, "/metrics").await.unwrap().1;
    assert_eq!(metric(&metrics, "mount_hints_webhook_certificate_reloads_total"), 1.0);
    assert_eq!(http_get(server.health_addr, "/readyz").await.unwrap().0, 200);
    server.drain(Duration::ZERO, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_a_valid_certificate_appears() {
    let dir = tempfile::tempdir().unwrap();
    publish_secret(dir.path(), "v0", b"", b"");
    let server = serve::start(config(files(dir.path()))).await.unwrap();
    let (status, body) = http_get(server.health_addr, "/readyz").await.unwrap();
    assert_eq!((status, body.as_str()), (503, "no valid serving certificate"));
    let certs = loopback_certs(None);
    publish_secret(dir.path(), "v1", certs.cert_pem.as_bytes(), certs.key_pem.as_bytes());
    wait_for("readiness", async || http_get(server.health_addr, "/readyz").await.unwrap().0 == 200).await;
    let mut conn = TlsClient::new(&certs.ca_cert_pem, server.addr).connect().await.unwrap();
    let (status, reply) = conn.post("/mutate", "application/json", Bytes::from(REVIEW)).await.unwrap();
    assert_patched_reply(REVIEW, status, &reply);
    server.drain(Duration::ZERO, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_reports_not_ready_and_finishes_requests_in_flight() {
    let (server, certs, _dir) = start_with_secret(false).await;
    let client = TlsClient::new(&certs.ca_cert_pem, server.addr);
    let health = server.health_addr;
    let body = REVIEW.as_bytes();
    let in_flight = start_partial_post(&client, body, body.len() / 2).await;
    wait_for("the request to be in flight", async || {
        let metrics = http_get(health, "/metrics").await.unwrap().1;
        metric(&metrics, "mount_hints_webhook_admission_in_flight_requests") == 1.0
    })
    .await;

    let drain = tokio::spawn(server.drain(Duration::from_millis(300), Duration::from_secs(10)));
    wait_for("not ready", async || http_get(health, "/readyz").await.is_ok_and(|r| r.0 == 503)).await;
    let response = finish_partial_post(in_flight, &body[body.len() / 2..]).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("7f0b2c1e-5a4d-4c3b-9e2f-000000000001"));
    drain.await.unwrap().expect("drain ends cleanly");
    assert!(client.handshake().await.is_err(), "no new connections after the drain");
}
