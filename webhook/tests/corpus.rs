//! Real public manifests (`webhook/tests/corpus/`, each with its source repository, path and commit in a
//! leading comment) through `preview` as a user runs it: the hints each one gets, a round trip of the YAML
//! output through kubectl's own YAML reader (go-yaml, YAML 1.1) that must give back the input plus the
//! annotations, and idempotence (previewing the output changes nothing).

mod preview_run;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use preview_run::{preview, text};

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(name)
}

/// The objects kubectl reads from a YAML stream, as JSON: `kubectl patch --local` decodes with go-yaml (the
/// YAML 1.1 reader `kubectl apply` uses) and needs no cluster.
fn kubectl_read(yaml: &[u8]) -> Vec<Value> {
    let mut child = Command::new("kubectl")
        .args(["patch", "--local", "-f", "-", "--type=merge", "-p", "{}", "-o", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is preinstalled on every machine that runs the tests");
    child.stdin.take().unwrap().write_all(yaml).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kubectl cannot read it: {}\n{}", text(&out.stderr), text(yaml));
    serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>().map(Result::unwrap).collect()
}

/// Drops what the mutation adds: `dev.gvisor.*` annotations, and the annotation or metadata maps left empty.
fn without_hints(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(annotations)) = map.get_mut("annotations") {
                annotations.retain(|k, _| !k.starts_with("dev.gvisor."));
            }
            for child in map.values_mut() {
                without_hints(child);
            }
            map.retain(|k, v| {
                !(matches!(k.as_str(), "annotations" | "metadata") && v.as_object().is_some_and(|m| m.is_empty()))
            });
        }
        Value::Array(items) => items.iter_mut().for_each(without_hints),
        _ => {}
    }
}

struct Case {
    file: &'static str,
    /// Every `audit:` line preview prints (label: hints=...), in order.
    audit: &'static [&'static str],
    /// Fragments that must appear in preview's notes and warnings.
    stderr: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        file: "agent-sandbox-nono-sandbox.yaml",
        audit: &[
        ],
        stderr: &["note: Sandbox/nono-agent: previewing the pod template at /spec/podTemplate"],
    },
    Case {
        file: "agent-sandbox-nono-template.yaml",
        audit: &[
        ],
        stderr: &["note: SandboxTemplate/nono-agent-template: previewing the pod template at /spec/podTemplate"],
    },
    Case {
        file: "agent-sandbox-python-template.yaml",
        audit: &[
        ],
        stderr: &["previewing the pod template at /spec/podTemplate"],
    },
    Case {
        file: "argo-cd-namespace-install.yaml",
        audit: &[
            "Deployment/argocd-applicationset-controller: hints=gpg-keyring=bind/container,tmp=bind/container",
            "Deployment/argocd-dex-server: hints=dexconfig=bind/pod,static-files=bind/pod",
            "Deployment/argocd-repo-server: hints=gpg-keyring=bind/container,helm-working-dir=bind/container,plugins=bind/container,tmp=bind/container,var-files=bind/container",
            "Deployment/argocd-server: hints=plugins-home=bind/container,tmp=bind/container",
            "StatefulSet/argocd-application-controller: hints=argocd-application-controller-tmp=bind/container,argocd-home=bind/container",
        ],
        stderr: &[],
    },
    Case {
        file: "datadog-cluster-agent-deployment.yaml",
        audit: &[
            "Deployment/datadog-cluster-agent: hints=config=bind/pod,datadogrun=bind/container,tmpdir=bind/container,varlog=bind/container",
        ],
        stderr: &[],
    },
    Case {
        file: "datadog-daemonset-default.yaml",
        audit: &[
            "DaemonSet/datadog: hints=auth-token=bind/pod,config=bind/pod,datadogrun=bind/container,logdatadog=bind/pod,sysprobe-socket-dir=bind/pod,tmpdir=bind/pod",
            "Deployment/datadog-cluster-agent: hints=config=bind/pod,datadogrun=bind/container,tmpdir=bind/container,varlog=bind/container",
        ],
        stderr: &["warning: DaemonSet/datadog: volume \"s6-run\" not hinted: no container mounts it"],
    },
    Case {
        file: "istio-cronjob-injected.yaml",
        audit: &[
            "CronJob/hellocron: hints=credential-socket=bind/container,istio-data=bind/container,istio-envoy=tmpfs/container,workload-certs=bind/container,workload-socket=bind/container",
        ],
        stderr: &[],
    },
    Case {
        file: "istio-hello-injected.yaml",
        audit: &[
            "Deployment/hello: hints=credential-socket=bind/container,istio-data=bind/container,istio-envoy=tmpfs/container,workload-certs=bind/container,workload-socket=bind/container",
        ],
        stderr: &["volume \"workload-socket\" has no source; the API server makes it an emptyDir", "volume \"credential-socket\" has no source", "volume \"workload-certs\" has no source"],
    },
    Case {
        file: "istio-jwt-server.yaml",
        audit: &[
        ],
        stderr: &["note: Service/jwt-server: no Pod, workload or nested pod template"],
    },
    Case {
        file: "istio-list-injected.yaml",
        audit: &[
            "Deployment/hello-v1: hints=credential-socket=bind/container,istio-data=bind/container,istio-envoy=tmpfs/container,workload-certs=bind/container,workload-socket=bind/container",
            "Deployment/hello-v2: hints=credential-socket=bind/container,istio-data=bind/container,istio-envoy=tmpfs/container,workload-certs=bind/container,workload-socket=bind/container",
        ],
        stderr: &["Deployment/hello-v2: volume \"workload-socket\" has no source"],
    },
    Case {
        file: "istio-native-sidecar-injected.yaml",
        audit: &[
            "Pod/hello: hints=credential-socket=bind/container,istio-data=bind/container,istio-envoy=tmpfs/container,workload-certs=bind/container,workload-socket=bind/container",
        ],
        stderr: &["Pod/hello: volume \"workload-socket\" has no source"],
    },
    Case {
        file: "kube-prometheus-blackbox-exporter-deployment.yaml",
        audit: &[
        ],
        stderr: &[],
    },
    Case {
        file: "kube-prometheus-grafana-deployment.yaml",
        audit: &[
            "Deployment/grafana: hints=grafana-storage=bind/container,tmp-plugins=tmpfs/container",
        ],
        stderr: &[],
    },
    Case {
        file: "kube-prometheus-node-exporter-daemonset.yaml",
        audit: &[
        ],
        stderr: &[],
    },
    Case {
        file: "kube-prometheus-prometheus.yaml",
        audit: &[
        ],
        stderr: &["note: Prometheus/k8s: no Pod, workload or nested pod template; unchanged"],
    },
    Case {
        file: "linkerd-emojivoto-deployment-injected.yaml",
        audit: &[
            "Deployment/web: hints=linkerd-identity-end-entity=tmpfs/container,linkerd-proxy-init-xtables-lock=bind/container",
        ],
        stderr: &[],
    },
    Case {
        file: "lws-multi-template.yaml",
        audit: &[
        ],
        stderr: &["previewing the pod template at /spec/leaderWorkerTemplate/workerTemplate"],
    },
    Case {
        file: "lws-sglang.yaml",
        audit: &[
            "LeaderWorkerSet/sglang /spec/leaderWorkerTemplate/leaderTemplate: hints=dshm=tmpfs/container",
            "LeaderWorkerSet/sglang /spec/leaderWorkerTemplate/workerTemplate: hints=dshm=tmpfs/container",
        ],
        stderr: &[],
    },
    Case {
        file: "lws-vllm-gpu.yaml",
        audit: &[
            "LeaderWorkerSet/vllm /spec/leaderWorkerTemplate/leaderTemplate: hints=dshm=tmpfs/container",
            "LeaderWorkerSet/vllm /spec/leaderWorkerTemplate/workerTemplate: hints=dshm=tmpfs/container",
        ],
        stderr: &["note: LeaderWorkerSet/vllm: previewing the pod template at /spec/leaderWorkerTemplate/leaderTemplate", "note: LeaderWorkerSet/vllm: previewing the pod template at /spec/leaderWorkerTemplate/workerTemplate"],
    },
    Case {
        file: "otel-filelog-receiver-deployment.yaml",
        audit: &[
            "Deployment/log-generator: hints=logs=bind/container",
        ],
        stderr: &[],
    },
    Case {
        file: "otel-target-allocator-deployment.yaml",
        audit: &[
        ],
        stderr: &[],
    },
    Case {
        file: "vllm-prefill-deploy.yaml",
        audit: &[
            "Deployment/prefill: hints=dshm=tmpfs/container",
        ],
        stderr: &[],
    },
    Case {
        file: "vllm-router-deploy.yaml",
        audit: &[
            "Deployment/router: hints=dshm=tmpfs/container",
        ],
        stderr: &[],
    },
];

#[test]
fn every_manifest_gets_its_hints_survives_kubectl_and_is_idempotent() {
    assert!(CASES.len() >= 20);
    let mut failures = Vec::new();
    for case in CASES {
        let input = std::fs::read(corpus(case.file)).unwrap();
        let out = preview(&["--assume-gvisor", "-o", "yaml"], &input);
        let stderr = text(&out.stderr);
        if !out.status.success() {
            failures.push(format!("{}: exit {:?}: {stderr}", case.file, out.status.code()));
            continue;
        }
        let audit: Vec<&str> = stderr.lines().filter_map(|l| l.strip_prefix("audit: ")).collect();
        if audit != case.audit {
            failures.push(format!("{}: audit\n  got  {audit:#?}\n  want {:#?}", case.file, case.audit));
        }
        for fragment in case.stderr {
            if !stderr.contains(fragment) {
                failures.push(format!("{}: stderr lacks {fragment:?}:\n{stderr}", case.file));
            }
        }
        // Round trip: what kubectl reads from the output is what it reads from the input, plus the hints.
        let mut before = kubectl_read(&input);
        let mut after = kubectl_read(&out.stdout);
        before.iter_mut().for_each(without_hints);
        after.iter_mut().for_each(without_hints);
        if before != after {
            let diff = before.iter().zip(&after).position(|(b, a)| b != a).unwrap_or(before.len().min(after.len()));
            failures.push(format!(
                "{}: kubectl reads the output differently (object {diff}):\n  input  {}\n  output {}",
                case.file,
                before.get(diff).map(Value::to_string).unwrap_or_default(),
                after.get(diff).map(Value::to_string).unwrap_or_default()
            ));
        }
        // Idempotence: the output previewed again needs no patch and prints the same YAML.
        let again = preview(&["--assume-gvisor", "-o", "yaml"], &out.stdout);
        assert!(again.status.success(), "{}: {}", case.file, text(&again.stderr));
        if again.stdout != out.stdout {
            failures.push(format!("{}: a second preview changed the output", case.file));
        }
        let patch = preview(&["--assume-gvisor", "-o", "patch"], &out.stdout);
        let patch: Value = serde_json::from_slice(&patch.stdout).unwrap();
        let ops = match &patch {
            Value::Array(entries) if entries.iter().all(|e| e.get("patch").is_some()) => {
                entries.iter().map(|e| e["patch"].as_array().unwrap().len()).sum()
            }
            Value::Array(ops) => ops.len(),
            other => panic!("{}: -o patch printed {other}", case.file),
        };
        if ops != 0 {
            failures.push(format!("{}: a second pass patches again: {patch}", case.file));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
