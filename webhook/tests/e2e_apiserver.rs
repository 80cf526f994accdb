//! The webhook behind a real kube-apiserver (built from Debian's source by `tests/build-kube`) and
//! etcd on loopback, registered with the MutatingWebhookConfiguration from `manifests/` (URL form), driven with
//! the real `kubectl`. Needs the cached kube-apiserver, etcd and kubectl; a missing one is a failure.

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use mount_hints_webhook::certs::write_issued;
use serde_json::Value;

const WEBHOOK: &str = env!("CARGO_BIN_EXE_mount-hints-webhook");
const TOKEN: &str = "mount-hints-e2e-token";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

fn kube_apiserver() -> PathBuf {
    let cache = std::env::var("MOUNT_HINTS_KUBE_CACHE").unwrap_or_else(|_| "/var/cache/mount-hints/kubernetes".into());
    let path = Path::new(&cache).join("kube-apiserver");
    assert!(path.exists(), "{} not found: run tests/build-kube (as root)", path.display());
    path
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// etcd and kube-apiserver on loopback ports, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn start() -> Cluster {
        let apiserver = kube_apiserver();
        let dir = tempfile::Builder::new().prefix("mount-hints-kube.").tempdir().unwrap();
        let d = dir.path().to_owned();
        let (client, peer, secure) = (support::free_port(), support::free_port(), support::free_port());
        let log = |name: &str| File::create(d.join(name)).unwrap();
        let etcd = Command::new("etcd")
            .arg("--data-dir")
            .arg(d.join("etcd"))
            .args(["--name", "default"])
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
            .stdout(log("etcd.log"))
            .stderr(log("etcd.err"))
            .spawn()
            .expect("etcd (Debian etcd-server) is needed: run tests/install-deps");
        let mut cluster = Cluster { dir, children: vec![etcd], kubeconfig: PathBuf::new() };
        let sa = rcgen::KeyPair::generate().unwrap();
        std::fs::write(d.join("sa.key"), sa.serialize_pem()).unwrap();
        std::fs::write(d.join("sa.pub"), sa.public_key_pem()).unwrap();
        std::fs::write(d.join("tokens.csv"), format!("{TOKEN},admin,admin,system:masters\n")).unwrap();
        let server = Command::new(apiserver)
            .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={secure}"))
            .arg(format!("--cert-dir={}", d.join("apiserver-certs").display()))
            .arg(format!("--token-auth-file={}", d.join("tokens.csv").display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", d.join("sa.pub").display()))
            .arg(format!("--service-account-signing-key-file={}", d.join("sa.key").display()))
            .arg("--service-cluster-ip-range=10.96.0.0/24")
            .arg("--disable-admission-plugins=ServiceAccount")
            .stdout(log("apiserver.log"))
            .stderr(log("apiserver.err"))
            .spawn()
            .unwrap();
        cluster.children.push(server);
        cluster.kubeconfig = d.join("kubeconfig");
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:{secure}\n    \
             insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\ncontexts:\n- name: e2e\n  \
             context:\n    cluster: e2e\n    user: admin\n    namespace: default\ncurrent-context: e2e\n"
        );
        std::fs::write(&cluster.kubeconfig, kubeconfig).unwrap();
        wait_until("kube-apiserver /readyz", Duration::from_secs(90), || {
            cluster.kubectl(&["get", "--raw", "/readyz"], None).status.success()
                && cluster.kubectl(&["get", "namespace", "default"], None).status.success()
        });
        cluster
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl is needed");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apiserver_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.err")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Webhook {
    child: Child,
    port: u16,
    health: u16,
}

impl Webhook {
    fn start(dir: &Path, kubeconfig: &Path) -> Webhook {
        let (port, health) = (support::free_port(), support::free_port());
        let child = Command::new(WEBHOOK)
            .args(["serve", "--drain-delay", "0s", "--log-format", "json"])
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--health-listen=127.0.0.1:{health}"))
            .arg("--tls-cert")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("tls.key"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stderr(File::create(dir.join("webhook.log")).unwrap())
            .spawn()
            .unwrap();
        let webhook = Webhook { child, port, health };
        wait_until("the webhook's /readyz", Duration::from_secs(20), || {
            webhook.get("/readyz").is_some_and(|b| b == "ok")
        });
        webhook
    }

    fn get(&self, path: &str) -> Option<String> {
        let out =
            Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{}{path}", self.health)]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn annotations(pod_json: &str) -> serde_json::Map<String, Value> {
    let pod: Value = serde_json::from_str(pod_json).unwrap();
    pod["metadata"]["annotations"].as_object().cloned().unwrap_or_default()
}

fn hint_keys(annotations: &serde_json::Map<String, Value>) -> Vec<String> {
    annotations.keys().filter(|k| k.starts_with("dev.gvisor.spec.mount.")).cloned().collect()
}

/// The base MutatingWebhookConfiguration, pointed at the local webhook by URL with its CA.
fn webhook_configuration(port: u16, ca_pem: &str) -> String {
    let text = std::fs::read_to_string(manifests().join("base/mutatingwebhook.yaml")).unwrap();
    let mut config = mount_hints_webhook::preview::parse_documents(&text, "mutatingwebhook.yaml").unwrap().remove(0);
    let client = &mut config["webhooks"][0]["clientConfig"];
    *client = serde_json::json!({
        "url": format!("https://127.0.0.1:{port}/mutate"),
        "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
    });
    config.to_string()
}

#[test]
fn the_api_server_calls_the_webhook_and_applies_its_patch() {
    let cluster = Cluster::start();
    let certs_dir = cluster.dir.path().join("webhook-certs");
    let certs = support::loopback_certs(None);
    write_issued(&certs_dir, &certs).unwrap();
    let runtime_class = manifests().join("base/runtimeclass.yaml");
    cluster.kubectl_ok(&["apply", "-f", runtime_class.to_str().unwrap()], None);
    cluster.kubectl_ok(
        &["apply", "-f", "-"],
        Some("apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: sandboxed}\nhandler: runsc\n"),
    );
    let webhook = Webhook::start(&certs_dir, &cluster.kubeconfig);
    // matchConditions is newer than this API server, which drops it; kubectl must not refuse it client-side.
    cluster.kubectl_ok(
        &["apply", "--validate=false", "-f", "-"],
        Some(&webhook_configuration(webhook.port, &certs.ca_cert_pem)),
    );

    // Server-side dry run: the hints show, nothing is stored. Registration reaches the admission chain
    // asynchronously, so wait for the first mutated answer.
    let pod = examples().join("shared-memory.yaml");
    let pod = pod.to_str().unwrap();
    let mut dry_run = String::new();
    wait_until("the webhook registration", Duration::from_secs(30), || {
        dry_run = cluster.kubectl_ok(&["apply", "--dry-run=server", "-o", "json", "-f", pod], None);
        !hint_keys(&annotations(&dry_run)).is_empty()
    });
    let yaml = cluster.kubectl_ok(&["apply", "--dry-run=server", "-o", "yaml", "-f", pod], None);
    eprintln!("kubectl apply --dry-run=server -o yaml -f webhook/examples/shared-memory.yaml:\n{yaml}");
    assert!(
        yaml.contains("dev.gvisor.spec.mount.cache.type: tmpfs")
            && yaml.contains("dev.gvisor.spec.mount.cache.share: pod")
    );
    assert!(!cluster.kubectl(&["get", "pod", "shared-memory"], None).status.success(), "a dry run stores nothing");

    // A real create stores the same annotations.
    cluster.kubectl_ok(&["create", "-f", pod], None);
    let stored = cluster.kubectl_ok(&["get", "pod", "shared-memory", "-o", "json"], None);
    let hints = |a: &serde_json::Map<String, Value>| {
        a.iter().filter(|(k, _)| k.starts_with("dev.gvisor.")).map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>()
    };
    assert_eq!(hints(&annotations(&stored)), hints(&annotations(&dry_run)));

    // A runc pod is untouched.
    let runc = std::fs::read_to_string(examples().join("disk-scratch.yaml"))
        .unwrap()
        .replace("  runtimeClassName: gvisor\n", "");
    cluster.kubectl_ok(&["create", "-f", "-"], Some(&runc));
    assert!(
        hint_keys(&annotations(&cluster.kubectl_ok(&["get", "pod", "disk-scratch", "-o", "json"], None))).is_empty()
    );

    // A pod made from a Deployment's template (as its ReplicaSet would) gets the hints.
    let workloads = std::fs::read_to_string(examples().join("workloads.yaml")).unwrap();
    let deployment = mount_hints_webhook::preview::parse_documents(&workloads, "workloads.yaml").unwrap().remove(0);
    let mut from_template = deployment["spec"]["template"].clone();
    from_template["apiVersion"] = "v1".into();
    from_template["kind"] = "Pod".into();
    from_template["metadata"]["name"] = "web-from-template".into();
    cluster.kubectl_ok(&["create", "-f", "-"], Some(&from_template.to_string()));
    let web = annotations(&cluster.kubectl_ok(&["get", "pod", "web-from-template", "-o", "json"], None));
    assert_eq!(web["dev.gvisor.spec.mount.shm-cache.share"], "pod");

    // A RuntimeClass with the runsc handler, learned through the webhook's RuntimeClass watch.
    let sandboxed = std::fs::read_to_string(examples().join("disk-scratch.yaml"))
        .unwrap()
        .replace("runtimeClassName: gvisor", "runtimeClassName: sandboxed")
        .replace("name: disk-scratch", "name: sandboxed-scratch");
    cluster.kubectl_ok(&["create", "-f", "-"], Some(&sandboxed));
    let stored = annotations(&cluster.kubectl_ok(&["get", "pod", "sandboxed-scratch", "-o", "json"], None));
    assert_eq!(stored.get("dev.gvisor.spec.mount.scratch.type"), Some(&Value::String("bind".into())));

    // Hostile author annotations are cleaned as SPEC section 3 says.
    cluster.kubectl_ok(&["create", "-f", examples().join("hostile-annotations.yaml").to_str().unwrap()], None);
    let hostile = annotations(&cluster.kubectl_ok(&["get", "pod", "hostile", "-o", "json"], None));
    for gone in [
        "dev.gvisor.spec.mount.data.source",
        "dev.gvisor.spec.mount.a.b.type",
        "dev.gvisor.internal.sandbox-config",
        "dev.gvisor.spec.mount.ghost.type",
    ] {
        assert!(!hostile.contains_key(gone), "{gone} was stored");
    }
    assert_eq!(hostile["dev.gvisor.spec.mount.data.share"], "container");
    assert_eq!(hostile["example.com/team"], "storage");

    // The webhook counted what it did.
    let metrics = webhook.get("/metrics").unwrap();
    let patched = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mount_hints_webhook_admission_requests_total{outcome=\"patched\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(patched >= 6.0, "{metrics}");

    // With the webhook gone, pods are still created (failurePolicy: Ignore), and the API server says why.
    drop(webhook);
    let unhinted = std::fs::read_to_string(examples().join("configmap.yaml")).unwrap();
    cluster.kubectl_ok(&["create", "-f", "-"], Some(&unhinted));
    assert!(hint_keys(&annotations(&cluster.kubectl_ok(&["get", "pod", "configmap", "-o", "json"], None))).is_empty());
    let log = cluster.apiserver_log();
    assert!(
        log.contains("mount-hints.gvisor.dev") && log.contains("ailed calling webhook"),
        "{}",
        &log[log.len().saturating_sub(3000)..]
    );
}
