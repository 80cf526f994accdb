//! The install manifests, loaded as the real Kubernetes types, and their cross-references: a typo in a label, a
//! port name or a Secret name breaks an install silently, so each link is checked here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Service, ServiceAccount};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mount_hints_webhook::certs::CertRequest;
use mount_hints_webhook::MutationSettings;
use serde_json::Value;

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// Every document of every YAML file in `dir`, by kind.
fn load(dir: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") || path.file_name().unwrap() == "kustomization.yaml" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in mount_hints_webhook::preview::parse_documents(&text, &path.display().to_string()).unwrap() {
            by_kind.entry(doc["kind"].as_str().unwrap().to_owned()).or_default().push(doc);
        }
    }
    by_kind
}

fn one<T: serde::de::DeserializeOwned>(docs: &BTreeMap<String, Vec<Value>>, kind: &str) -> T {
    let list = &docs[kind];
    assert_eq!(list.len(), 1, "one {kind}");
    serde_json::from_value(list[0].clone()).unwrap_or_else(|e| panic!("{kind} is not a valid {kind}: {e}"))
}

fn kustomize_namespace() -> String {
    let text = std::fs::read_to_string(manifests().join("base/kustomization.yaml")).unwrap();
    let k: Value = mount_hints_webhook::preview::parse_documents(&text, "kustomization").unwrap().remove(0);
    k["namespace"].as_str().unwrap().to_owned()
}

fn arg<'a>(container: &'a Container, flag: &str) -> &'a str {
    let prefix = format!("{flag}=");
    container.args.iter().flatten().find_map(|a| a.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {flag}"))
}

fn port_named(container: &Container, name: &str) -> i32 {
    container.ports.iter().flatten().find(|p| p.name.as_deref() == Some(name)).unwrap().container_port
}

#[test]
fn base_manifests_are_valid_and_wired_together() {
    let docs = load(&manifests().join("base"));
    let namespace = kustomize_namespace();
    let ns: Namespace = one(&docs, "Namespace");
    assert_eq!(ns.metadata.name.as_deref(), Some(namespace.as_str()));
    let sa: ServiceAccount = one(&docs, "ServiceAccount");
    let role: ClusterRole = one(&docs, "ClusterRole");
    let binding: ClusterRoleBinding = one(&docs, "ClusterRoleBinding");
    let deployment: Deployment = one(&docs, "Deployment");
    let service: Service = one(&docs, "Service");
    let pdb: PodDisruptionBudget = one(&docs, "PodDisruptionBudget");
    let webhook: MutatingWebhookConfiguration = one(&docs, "MutatingWebhookConfiguration");
    let runtime_class: RuntimeClass = one(&docs, "RuntimeClass");
    let config: ConfigMap = one(&docs, "ConfigMap");

    // RBAC: read RuntimeClasses, nothing else, for the Deployment's service account.
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].resources.as_deref(), Some(&["runtimeclasses".to_owned()][..]));
    assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
    assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(Some(&subject.name), sa.metadata.name.as_ref());
    assert_eq!(subject.namespace.as_deref(), Some(namespace.as_str()));

    // Deployment: hardened, two replicas spread over nodes, probes on the health port.
    let spec = deployment.spec.unwrap();
    assert!(spec.replicas.unwrap() >= 2);
    let template = spec.template;
    let labels = template.metadata.unwrap().labels.unwrap();
    let selects = |selector: &BTreeMap<String, String>| selector.iter().all(|(k, v)| labels.get(k) == Some(v));
    assert!(selects(spec.selector.match_labels.as_ref().unwrap()));
    let pod = template.spec.unwrap();
    assert_eq!(pod.service_account_name, sa.metadata.name);
    let security = pod.security_context.unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert!(pod.affinity.unwrap().pod_anti_affinity.is_some());
    let container = &pod.containers[0];
    let csec = container.security_context.as_ref().unwrap();
    assert_eq!(csec.read_only_root_filesystem, Some(true));
    assert_eq!(csec.allow_privilege_escalation, Some(false));
    assert_eq!(csec.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let resources = container.resources.as_ref().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());
    let https = port_named(container, "https");
    let health = port_named(container, "health");
    assert!(arg(container, "--listen").ends_with(&format!(":{https}")));
    assert!(arg(container, "--health-listen").ends_with(&format!(":{health}")));
    for probe in [container.readiness_probe.as_ref().unwrap(), container.liveness_probe.as_ref().unwrap()] {
        assert_eq!(probe.http_get.as_ref().unwrap().port, IntOrString::String("health".into()));
    }
    assert_eq!(container.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
    // The settings file the Deployment reads is a valid settings file.
    let mount = |path: &str| {
        container.volume_mounts.iter().flatten().find(|m| path.starts_with(&m.mount_path)).unwrap().name.clone()
    };
    let config_volume = pod.volumes.iter().flatten().find(|v| v.name == mount(arg(container, "--config"))).unwrap();
    assert_eq!(config_volume.config_map.as_ref().unwrap().name, config.metadata.name.clone().unwrap());
    let settings: MutationSettings = serde_yaml_ng::from_str(&config.data.unwrap()["settings.yaml"]).unwrap();
    assert_eq!(settings, MutationSettings::default());
    let tls_volume = pod.volumes.iter().flatten().find(|v| v.name == mount(arg(container, "--tls-cert"))).unwrap();
    let secret_name = tls_volume.secret.as_ref().unwrap().secret_name.clone().unwrap();
    assert_eq!(secret_name, "mount-hints-webhook-tls");

    // Service and PDB select the Deployment's pods; the Service targets the https port.
    let service_spec = service.spec.unwrap();
    assert!(selects(service_spec.selector.as_ref().unwrap()));
    assert!(selects(pdb.spec.unwrap().selector.unwrap().match_labels.as_ref().unwrap()));
    let service_port = &service_spec.ports.unwrap()[0];
    assert_eq!(service_port.target_port, Some(IntOrString::String("https".into())));

    // The webhook configuration calls that Service, and is safe to have in a cluster.
    let hook = &webhook.webhooks.unwrap()[0];
    let client = hook.client_config.service.as_ref().unwrap();
    assert_eq!(Some(&client.name), service.metadata.name.as_ref());
    assert_eq!(client.namespace, namespace);
    assert_eq!(client.port, Some(service_port.port));
    assert_eq!(client.path.as_deref(), Some("/mutate"));
    assert_eq!(hook.admission_review_versions, ["v1"]);
    assert_eq!(hook.side_effects, "None");
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
    assert!(hook.timeout_seconds.unwrap() <= 5);
    let rules = hook.rules.as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].operations.as_deref(), Some(&["CREATE".to_owned()][..]));
    assert_eq!(rules[0].resources.as_deref(), Some(&["pods".to_owned()][..]));
    let excluded = hook.namespace_selector.as_ref().unwrap().match_expressions.as_ref().unwrap();
    let not_in = excluded.iter().find(|e| e.operator == "NotIn").unwrap().values.clone().unwrap();
    assert!(not_in.contains(&namespace) && not_in.contains(&"kube-system".to_owned()));
    assert!(hook.match_conditions.as_ref().is_some_and(|c| c[0].expression.contains("runtimeClassName")));

    // The RuntimeClass the webhook's default settings recognise.
    assert_eq!(runtime_class.metadata.name.as_deref(), Some("gvisor"));
    assert!(
        settings.runtime_class_names.contains("gvisor") && settings.runtime_handlers.contains(&runtime_class.handler)
    );

    // Serving certificates name the Service: cert-manager's, and those `mount-hints-webhook certs` makes.
    let service_dns = format!("{}.{namespace}.svc", client.name);
    let cert_manager = load(&manifests().join("overlays/cert-manager"));
    let certificate = cert_manager["Certificate"][0].clone();
    assert_eq!(certificate["spec"]["secretName"], secret_name);
    assert!(certificate["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == &Value::String(service_dns.clone())));
    let request =
        CertRequest { service: client.name.clone(), namespace, extra_dns: vec![], ips: vec![], days: 1, ca_days: 1 };
    assert!(request.dns_names().contains(&service_dns));
}

#[test]
fn overlays_patch_what_exists() {
    let base = load(&manifests().join("base"));
    let secret = "mount-hints-webhook-tls";
    for overlay in ["cert-manager", "self-signed"] {
        let text = std::fs::read_to_string(manifests().join(format!("overlays/{overlay}/kustomization.yaml"))).unwrap();
        let k: Value = mount_hints_webhook::preview::parse_documents(&text, overlay).unwrap().remove(0);
        assert_eq!(k["resources"][0], "../../base");
        let targets: Vec<&str> = k["patches"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(k["replacements"].as_array().into_iter().flatten().flat_map(|r| r["targets"].as_array().unwrap()))
            .map(|p| p.get("target").or(p.get("select")).unwrap()["kind"].as_str().unwrap())
            .collect();
        for kind in targets {
            assert!(base.contains_key(kind), "{overlay} patches a {kind} the base does not have");
        }
        if overlay == "self-signed" {
            assert_eq!(k["secretGenerator"][0]["name"], secret);
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// What `kubectl apply -k` would send: both overlays rendered by kubectl's own kustomize, with certificates
/// from `mount-hints-webhook certs` for the self-signed one.
#[test]
fn overlays_render_with_kubectl_kustomize() {
    let work = tempfile::tempdir().unwrap();
    copy_tree(&manifests(), work.path());
    let certs_dir = work.path().join("overlays/self-signed/certs");
    let request = CertRequest {
        service: "mount-hints-webhook".into(),
        namespace: "mount-hints".into(),
        extra_dns: vec![],
        ips: vec![],
        days: 1,
        ca_days: 1,
    };
    let issued = mount_hints_webhook::certs::issue(&request, None).unwrap();
    mount_hints_webhook::certs::write_issued(&certs_dir, &issued).unwrap();
    for overlay in ["cert-manager", "self-signed"] {
        let out = std::process::Command::new("kubectl")
            .args(["kustomize"])
            .arg(work.path().join("overlays").join(overlay))
            .output()
            .expect("kubectl (with its built-in kustomize) is needed for this test");
        assert!(out.status.success(), "{overlay}: {}", String::from_utf8_lossy(&out.stderr));
        let docs =
            mount_hints_webhook::preview::parse_documents(&String::from_utf8_lossy(&out.stdout), overlay).unwrap();
        let webhook = docs.iter().find(|d| d["kind"] == "MutatingWebhookConfiguration").unwrap();
        let webhook: MutatingWebhookConfiguration = serde_json::from_value(webhook.clone()).unwrap();
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        assert_eq!(deployment["metadata"]["namespace"], "mount-hints");
        if overlay == "self-signed" {
            let bundle = webhook.webhooks.unwrap()[0].client_config.ca_bundle.clone().expect("caBundle filled in");
            assert_eq!(bundle.0, issued.ca_cert_pem.as_bytes());
            let secret = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
            assert_eq!(secret["metadata"]["name"], "mount-hints-webhook-tls");
            assert_eq!(secret["type"], "kubernetes.io/tls");
        } else {
            let annotations = webhook.metadata.annotations.unwrap();
            assert_eq!(annotations["cert-manager.io/inject-ca-from"], "mount-hints/mount-hints-webhook");
        }
    }

    // An API server before 1.21: the overlay plus the kubernetes-1.20 component, as tests/cluster applies it.
    let old_cluster = work.path().join("overlays/kubernetes-1.20");
    std::fs::create_dir_all(&old_cluster).unwrap();
    std::fs::write(
        old_cluster.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../self-signed]\n\
         components: [../../components/kubernetes-1.20]\n",
    )
    .unwrap();
    let out = std::process::Command::new("kubectl").arg("kustomize").arg(&old_cluster).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = mount_hints_webhook::preview::parse_documents(&String::from_utf8_lossy(&out.stdout), "1.20").unwrap();
    let budgets: Vec<_> = docs.iter().filter(|d| d["kind"] == "PodDisruptionBudget").collect();
    assert_eq!(budgets.len(), 1, "one budget, in the version 1.20 serves");
    assert_eq!(budgets[0]["apiVersion"], "policy/v1beta1");
    assert_eq!(budgets[0]["metadata"]["namespace"], "mount-hints");
    let webhook = docs.iter().find(|d| d["kind"] == "MutatingWebhookConfiguration").unwrap();
    assert!(webhook["webhooks"][0].get("matchConditions").is_none(), "{webhook}");
    assert!(webhook["webhooks"][0]["clientConfig"].get("caBundle").is_some(), "{webhook}");
}
