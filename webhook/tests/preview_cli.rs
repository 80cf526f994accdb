//! The `preview` command as a user runs it, on the example manifests shipped in `webhook/examples/`.

mod preview_run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use preview_run::{preview, text};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

/// Mutated pod annotations from the YAML output, decoded as the real Pod type.
fn mutated_pod(file: &str) -> (BTreeMap<String, String>, String) {
    let out = preview(&[example(file).to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pod: Pod = serde_yaml_ng::from_slice(&out.stdout).expect("output is a valid Pod");
    (pod.metadata.annotations.unwrap_or_default(), text(&out.stderr))
}

fn hints(annotations: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    annotations
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("dev.gvisor.spec.mount.").map(|k| (k.to_owned(), v.clone())))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn every_example_gets_the_documented_hints_and_warnings() {
    /// (example file, expected hints as `name.field` = value, expected warning fragments)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        ("shared-memory.yaml", &[("cache.share", "pod"), ("cache.type", "tmpfs")], &[]),
        ("disk-scratch.yaml", &[("scratch.share", "container"), ("scratch.type", "bind")], &[]),
        ("subpath.yaml", &[], &["volume \"work\" not hinted: container \"main\" mounts it with subPath"]),
        (
            "long-name.yaml",
            &[("short.share", "container"), ("short.type", "bind")],
            &["volume \"a-volume-name-that-is-forty-characters-x\" not hinted: the name is longer than 35"],
        ),
        ("hugepages.yaml", &[], &["volume \"huge\" not hinted: medium HugePages-2Mi"]),
        ("configmap.yaml", &[("tmp.share", "container"), ("tmp.type", "bind")], &[]),
        (
            "hostile-annotations.yaml",
            &[
                ("cache.share", "container"),
                ("cache.type", "bind"),
                ("data.share", "container"),
                ("data.type", "tmpfs"),
            ],
            &[
                "\"dev.gvisor.spec.mount.data.source\" removed: the source of a hint is set by the node",
                "\"dev.gvisor.spec.mount.data.share\" removed: invalid share `POD`",
                "\"dev.gvisor.spec.mount.a.b.type\" removed",
                "\"dev.gvisor.spec.mount.data.mode\" removed",
                "\"dev.gvisor.spec.mount.ghost.type\" removed: the pod has no volume named \"ghost\"",
                "\"dev.gvisor.spec.mount.ghost.share\" removed: the pod has no volume named \"ghost\"",
                "\"dev.gvisor.spec.mount.cache.options\" removed: valued option `size=1g`",
                "\"dev.gvisor.internal.sandbox-config\" removed: it matches the deny list",
            ],
        ),
    ];
    for (file, want_hints, want_warnings) in cases {
        let (annotations, stderr) = mutated_pod(file);
        assert_eq!(hints(&annotations), map(want_hints), "{file}");
        let warnings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("warning: ")).collect();
        assert_eq!(warnings.len(), want_warnings.len(), "{file}: {stderr}");
        for want in *want_warnings {
            assert!(warnings.iter().any(|w| w.contains(want)), "{file}: missing {want:?} in {stderr}");
        }
    }
}

#[test]
fn hostile_pod_keeps_only_safe_annotations() {
    let (annotations, stderr) = mutated_pod("hostile-annotations.yaml");
    assert_eq!(annotations["example.com/team"], "storage");
    assert_eq!(annotations["dev.gvisor.empty-dir.cache.force-shared"], "true");
    assert!(!annotations.keys().any(|k| k.ends_with(".source") || k.starts_with("dev.gvisor.internal.")));
    assert!(stderr.contains("audit: Pod/hostile: force-shared=cache"), "{stderr}");
}

#[test]
fn workloads_get_their_pod_templates_mutated_and_other_objects_pass_through() {
    let out = preview(&[example("workloads.yaml").to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let docs: Vec<&str> = stdout.split("\n---\n").collect();
    assert_eq!(docs.len(), 3, "{stdout}");
    let deployment: Deployment = serde_yaml_ng::from_str(docs[0]).unwrap();
    let template = deployment.spec.unwrap().template.metadata.unwrap();
    assert_eq!(hints(&template.annotations.unwrap()), map(&[("shm-cache.share", "pod"), ("shm-cache.type", "tmpfs")]));
    assert_eq!(template.labels.unwrap()["app"], "web", "existing template metadata is kept");
    let cronjob: CronJob = serde_yaml_ng::from_str(docs[1]).unwrap();
    let job_template = cronjob.spec.unwrap().job_template.spec.unwrap().template;
    assert_eq!(
        hints(&job_template.metadata.unwrap().annotations.unwrap()),
        map(&[("work.share", "container"), ("work.type", "bind")])
    );
    assert!(docs[2].contains("kind: Service") && !docs[2].contains("dev.gvisor"));
    assert!(text(&out.stderr).contains("note: Service/web: no Pod, workload or nested pod template; unchanged"));
}

#[test]
fn patch_output_applies_to_the_input() {
    for file in ["hostile-annotations.yaml", "workloads.yaml"] {
        let input = std::fs::read_to_string(example(file)).unwrap();
        let out = preview(&["-o", "patch", "-"], input.as_bytes());
        assert!(out.status.success(), "{}", text(&out.stderr));
        // One JSON value whatever the number of documents: the patch, or one entry per document.
        let report: Value = serde_json::from_slice(&out.stdout).expect("-o patch prints one JSON value");
        let inputs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&input)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let patches: Vec<Value> = if inputs.len() == 1 {
            vec![report]
        } else {
            let entries = report.as_array().unwrap();
            for (i, (entry, doc)) in entries.iter().zip(&inputs).enumerate() {
                assert_eq!(entry["document"], i + 1);
                assert_eq!(entry["kind"], doc["kind"]);
                assert_eq!(entry["name"], doc["metadata"]["name"]);
            }
            entries.iter().map(|e| e["patch"].clone()).collect()
        };
        let yaml = preview(&["-o", "json", "-"], input.as_bytes());
        let outputs: Vec<Value> =
            serde_json::Deserializer::from_slice(&yaml.stdout).into_iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(patches.len(), inputs.len());
        for ((mut doc, patch), want) in inputs.into_iter().zip(patches).zip(outputs) {
            let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
            json_patch::patch(&mut doc, &patch.0).unwrap();
            assert_eq!(doc, want, "{file}");
        }
    }
}

#[test]
fn patch_report_names_unnamed_pods_by_generate_name_or_position() {
    let pod = |meta: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {meta}\nspec:\n  volumes: [{{name: v, emptyDir: {{}}}}]\n  containers: [{{name: c, image: x, volumeMounts: [{{name: v, mountPath: /v}}]}}]\n")
    };
    let input = [pod("{name: named}"), pod("{generateName: web-}"), pod("{}")].join("---\n");
    let out = preview(&["-o", "patch", "--assume-gvisor"], input.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = report.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["name"], "named");
    assert_eq!(entries[1]["generateName"], "web-");
    assert!(entries[2].get("name").is_none() && entries[2].get("generateName").is_none());
    assert_eq!(entries[2]["document"], 3);
    assert!(entries.iter().all(|e| e["kind"] == "Pod" && e["patch"].as_array().unwrap().len() == 1));
    let stderr = text(&out.stderr);
    for label in ["audit: Pod/named: hints=", "audit: Pod/web-*: hints=", "audit: Pod/#3: hints="] {
        assert!(stderr.contains(label), "{label}: {stderr}");
    }
}

#[test]
fn reads_and_writes_yaml_as_kubectl_does() {
    let yaml = r#"apiVersion: v1
kind: Pod
metadata:
  name: p
  labels: {enabled: "yes", count: "0755"}
spec:
  runtimeClassName: gvisor
  volumes:
  - name: cfg
    configMap: {name: c, defaultMode: 0755}
  - name: shared
    emptyDir: {medium: Memory}
  - name: socket
  - name: nulled
    emptyDir: null
  containers:
  - &app
    name: a
    image: x
    env: [{name: APPENDONLY, value: "no"}, {name: COUNT, value: "1_000"}]
    volumeMounts: [{name: shared, mountPath: /s}, {name: socket, mountPath: /t}, {name: nulled, mountPath: /n}]
  - <<: *app
    name: b
"#;
    let input = &format!("\u{feff}{yaml}");
    let out = preview(&["-o", "yaml"], input.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let pod: Pod = serde_yaml_ng::from_str(&stdout).unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.volumes.as_ref().unwrap()[0].config_map.as_ref().unwrap().default_mode, Some(493));
    assert_eq!(spec.containers[1].volume_mounts.as_ref().unwrap().len(), 3, "the merge key was applied");
    let annotations = pod.metadata.annotations.unwrap();
    // The merged container mounts the volume too, so it is shared by the pod.
    assert_eq!(hints(&annotations)["shared.share"], "pod");
    // Source-less volumes are emptyDirs, as the API server makes them.
    assert_eq!(hints(&annotations)["socket.type"], "bind");
    assert_eq!(hints(&annotations)["nulled.share"], "pod");
    assert!(text(&out.stderr).contains("volume \"socket\" has no source"), "{}", text(&out.stderr));
    // Strings a YAML 1.1 reader would take for something else are quoted.
    for value in ["yes", "0755", "no", "1_000"] {
        let quoted = [format!("'{value}'"), format!("\"{value}\"")];
        assert!(quoted.iter().any(|q| stdout.contains(q.as_str())), "{value} not quoted:\n{stdout}");
        assert!(!stdout.contains(&format!(": {value}\n")), "{value} written plain:\n{stdout}");
    }
    assert!(stdout.contains("defaultMode: 493"), "{stdout}");
}

#[test]
fn pod_templates_nested_in_custom_resources_are_previewed_with_their_path() {
    let out = preview(&["-o", "json", example("leaderworkerset.yaml").to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let object: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lwt = &object["spec"]["leaderWorkerTemplate"];
    assert_eq!(lwt["leaderTemplate"]["metadata"]["annotations"]["dev.gvisor.spec.mount.dshm.type"], "tmpfs");
    let worker = &lwt["workerTemplate"]["metadata"];
    assert_eq!(worker["annotations"]["dev.gvisor.spec.mount.cache.type"], "bind");
    // The source-less volume is an emptyDir mounted by two containers.
    assert_eq!(worker["annotations"]["dev.gvisor.spec.mount.socket.share"], "pod");
    assert_eq!(worker["labels"]["role"], "worker");
    let stderr = text(&out.stderr);
    for path in ["/spec/leaderWorkerTemplate/leaderTemplate", "/spec/leaderWorkerTemplate/workerTemplate"] {
        assert!(
            stderr.contains(&format!("note: LeaderWorkerSet/lws: previewing the pod template at {path}")),
            "{stderr}"
        );
    }
}

#[test]
fn deep_nesting_is_refused_in_well_under_a_second() {
    let depth = 20_000;
    let input = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let started = std::time::Instant::now();
    let out = preview(&[], input.as_bytes());
    assert!(started.elapsed() < std::time::Duration::from_millis(900), "{:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}

#[test]
fn min_runsc_release_setting() {
    let input = r#"apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations: {dev.gvisor.spec.mount.v.directfs: "off"}
spec:
  runtimeClassName: gvisor
  volumes: [{name: v, emptyDir: {}}]
  containers: [{name: c, image: x, volumeMounts: [{name: v, mountPath: /v}]}]
"#;
    let kept = preview(&["-o", "json", "--min-runsc-release", "20260520"], input.as_bytes());
    let pod: Value = serde_json::from_slice(&kept.stdout).unwrap();
    assert_eq!(pod["metadata"]["annotations"]["dev.gvisor.spec.mount.v.directfs"], "off");
    let removed = preview(&["-o", "json"], input.as_bytes());
    let pod: Value = serde_json::from_slice(&removed.stdout).unwrap();
    assert!(pod["metadata"]["annotations"].get("dev.gvisor.spec.mount.v.directfs").is_none());
    assert!(text(&removed.stderr).contains("release-20260520"), "{}", text(&removed.stderr));
    let contradiction = preview(&["--min-runsc-release", "20221219", "--memory-size-option"], input.as_bytes());
    assert_eq!(contradiction.status.code(), Some(2));
    assert!(text(&contradiction.stderr).contains("memorySizeOption needs runsc release-20240501"));
}

#[test]
fn pods_outside_gvisor_are_unchanged_unless_assumed() {
    let input = std::fs::read_to_string(example("disk-scratch.yaml"))
        .unwrap()
        .replace("runtimeClassName: gvisor", "runtimeClassName: runc");
    let out = preview(&["-o", "patch"], input.as_bytes());
    assert_eq!(text(&out.stdout).trim(), "[]");
    assert!(text(&out.stderr).contains("\"runc\" is not a gVisor runtime class"));
    let out = preview(&["-o", "patch", "--assume-gvisor"], input.as_bytes());
    assert!(text(&out.stdout).contains("dev.gvisor.spec.mount.scratch.type"));
    let out = preview(&["-o", "patch", "--runtime-class", "runc"], input.as_bytes());
    assert!(text(&out.stdout).contains("dev.gvisor.spec.mount.scratch.type"));
}

#[test]
fn warnings_output_and_settings_file() {
    let out = preview(&["-o", "warnings", example("subpath.yaml").to_str().unwrap()], b"");
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("Pod/subpath: volume \"work\" not hinted"));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("settings.yaml");
    std::fs::write(&config, "sharePolicy: always-pod\nmemorySizeOption: true\n").unwrap();
    let out = preview(
        &["-o", "json", "--config", config.to_str().unwrap(), example("shared-memory.yaml").to_str().unwrap()],
        b"",
    );
    let pod: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pod["metadata"]["annotations"]["dev.gvisor.spec.mount.cache.options"], "size=268435456");

    std::fs::write(&config, "sharepolicy: pod\n").unwrap();
    let out = preview(&["--config", config.to_str().unwrap(), "-"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("settings.yaml:1:1: unknown field `sharepolicy`"), "{}", text(&out.stderr));
}

#[test]
fn bad_input_exits_2_with_the_location() {
    let cases = [
        ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n spec: [\n", "<stdin>:5:2:"),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers: 3\n",
            "document 1 (Pod/x): spec.containers: invalid type",
        ),
        ("{\"kind\": \"Pod\",\n x}", "<stdin>:2:2:"),
        ("metadata: {name: x}\n", "the object has no `kind`"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {selector: {}}\n", "Deployment/d"),
    ];
    for (input, want) in cases {
        let out = preview(&[], input.as_bytes());
        assert_eq!(out.status.code(), Some(2), "{input}");
        assert!(out.stdout.is_empty(), "nothing half-printed for {input:?}");
        assert!(text(&out.stderr).contains(want), "{input:?}: {}", text(&out.stderr));
    }
    let out = preview(&["/nonexistent/pod.yaml"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read /nonexistent/pod.yaml"));
}
