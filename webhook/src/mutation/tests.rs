//! One test per rule of SPEC section 3. The property tests in `webhook/tests/` cover the invariants.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;
use crate::settings::SharePolicy;

fn pod(value: Value) -> PodFacts {
    serde_json::from_value(value).unwrap()
}

/// A gVisor pod with the given volumes and containers (`[name, [mount, ...]]`, `mount` = `vol` or `vol:sub`).
fn gvisor_pod(volumes: Value, containers: &[(&str, &[&str])]) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|(name, mounts)| {
            let mounts: Vec<Value> = mounts
                .iter()
                .map(|m| match m.split_once(':') {
                    Some((vol, sub)) => json!({"name": vol, "mountPath": "/m", "subPath": sub}),
                    None => json!({"name": m, "mountPath": "/m"}),
                })
                .collect();
            json!({"name": name, "image": "busybox", "volumeMounts": mounts})
        })
        .collect();
    json!({"metadata": {"name": "p"}, "spec": {"runtimeClassName": "gvisor", "volumes": volumes, "containers": containers}})
}

fn run(value: &Value) -> Mutation {
    run_with(value, &MutationSettings::default())
}

fn run_with(value: &Value, settings: &MutationSettings) -> Mutation {
    mutate(&pod(value.clone()), settings, &GvisorScope::from_settings(settings))
}

/// The pod's annotations after applying the mutation's patch.
fn applied(value: &Value, m: &Mutation) -> BTreeMap<String, String> {
    let mut doc = value.clone();
    json_patch::patch(&mut doc, &m.patch.0).expect("patch applies");
    serde_json::from_value(doc["metadata"]["annotations"].clone()).unwrap_or_default()
}

fn hint_of<'a>(m: &'a Mutation, volume: &str) -> Option<&'a EmptyDirHint> {
    m.hints.iter().find(|h| h.volume == volume)
}

#[test]
fn pods_outside_gvisor_are_left_alone() {
    let mut p = gvisor_pod(json!([{"name": "v", "emptyDir": {}}]), &[("c", &["v"])]);
    for class in [json!("runc"), Value::Null] {
        p["spec"]["runtimeClassName"] = class;
        let m = run(&p);
        assert!(!m.in_scope && m.patch.0.is_empty() && m.warnings.is_empty() && m.audit.is_empty());
    }
}

#[test]
fn medium_decides_the_type() {
    let p = gvisor_pod(
        json!([{"name": "disk", "emptyDir": {}}, {"name": "mem", "emptyDir": {"medium": "Memory"}}]),
        &[("c", &["disk", "mem"])],
    );
    let m = run(&p);
    assert_eq!(hint_of(&m, "disk").unwrap().hint_type, HintType::Bind);
    assert_eq!(hint_of(&m, "mem").unwrap().hint_type, HintType::Tmpfs);
    let a = applied(&p, &m);
    assert_eq!(a["dev.gvisor.spec.mount.mem.type"], "tmpfs");
    assert_eq!(a["dev.gvisor.spec.mount.disk.type"], "bind");
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

#[test]
fn share_counts_distinct_containers_of_every_kind() {
    let volumes = json!([{"name": "v", "emptyDir": {}}]);
    let one = gvisor_pod(volumes.clone(), &[("a", &["v", "v"])]);
    assert_eq!(hint_of(&run(&one), "v").unwrap().share, Share::Container);

    let mut init_and_main = gvisor_pod(volumes.clone(), &[("a", &["v"])]);
    init_and_main["spec"]["initContainers"] =
        json!([{"name": "sidecar", "restartPolicy": "Always", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]);
    assert_eq!(hint_of(&run(&init_and_main), "v").unwrap().share, Share::Pod);

    let mut ephemeral = gvisor_pod(volumes.clone(), &[("a", &["v"])]);
    ephemeral["spec"]["ephemeralContainers"] =
        json!([{"name": "debug", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]);
    assert_eq!(hint_of(&run(&ephemeral), "v").unwrap().share, Share::Pod);

    let always = MutationSettings { share_policy: SharePolicy::AlwaysPod, ..Default::default() };
    assert_eq!(hint_of(&run_with(&one, &always), "v").unwrap().share, Share::Pod);
}

#[test]
fn skipped_volumes_are_named_in_a_warning() {
    let p = gvisor_pod(
        json!([
            {"name": "unused", "emptyDir": {}},
            {"name": "sub", "emptyDir": {}},
            {"name": "huge", "emptyDir": {"medium": "HugePages-1Gi"}},
            {"name": "odd", "emptyDir": {"medium": "Tape"}},
            {"name": "emptysub", "emptyDir": {}},
        ]),
        &[("a", &["sub", "huge", "odd"]), ("b", &["sub:logs"])],
    );
    let mut p = p;
    p["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "emptysub", "mountPath": "/e", "subPath": ""}));
    let m = run(&p);
    let text = m.warnings.join("\n");
    for (volume, reason) in [
        ("unused", "no container mounts it"),
        ("sub", "\"b\" mounts it with subPath"),
        ("huge", "HugePages-1Gi"),
        ("odd", "unknown medium"),
    ] {
        assert!(text.contains(&format!("volume {volume:?} not hinted")) && text.contains(reason), "{volume}: {text}");
    }
    assert_eq!(
        m.hints.iter().map(|h| h.volume.as_str()).collect::<Vec<_>>(),
        ["emptysub"],
        "an empty subPath is no subPath"
    );

    let mut expr = gvisor_pod(json!([{"name": "v", "emptyDir": {}}]), &[("a", &["v"])]);
    expr["spec"]["containers"][0]["volumeMounts"][0]["subPathExpr"] = json!("$(POD_NAME)");
    assert!(run(&expr).hints.is_empty());
}

#[test]
fn names_too_long_for_the_keys_are_skipped_at_the_exact_limit() {
    let fits = "v".repeat(35);
    let too_long = "w".repeat(36);
    let p = gvisor_pod(
        json!([{"name": fits, "emptyDir": {}}, {"name": too_long, "emptyDir": {}}]),
        &[("a", &[fits.as_str(), too_long.as_str()])],
    );
    let m = run(&p);
    assert!(hint_of(&m, &fits).is_some());
    assert!(hint_of(&m, &too_long).is_none());
    assert!(m.warnings.iter().any(|w| w.contains(&too_long) && w.contains("exceed 63")));
    assert!(applied(&p, &m).keys().all(|k| mount_hints::is_valid_annotation_key(k)));
}

#[test]
fn size_option_is_opt_in_and_memory_only() {
    let p = gvisor_pod(
        json!([
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
            {"name": "disk", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "m34-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        ]),
        &[("a", &["mem", "disk", "m34-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"])],
    );
    assert!(run(&p).hints.iter().all(|h| h.options.is_none()));
    let on = MutationSettings { memory_size_option: true, ..Default::default() };
    let m = run_with(&p, &on);
    assert_eq!(hint_of(&m, "mem").unwrap().options.as_deref(), Some("size=268435456"));
    assert_eq!(hint_of(&m, "disk").unwrap().options, None);
    let long = hint_of(&m, "m34-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
    assert_eq!(long.options, None, "an options key for a 34-character name would be 64 characters");
    assert!(m.warnings.iter().any(|w| w.contains("sizeLimit not passed on")));
    assert_eq!(applied(&p, &m)["dev.gvisor.spec.mount.mem.options"], "size=268435456");
}

#[test]
fn author_annotations_follow_the_policy() {
    let mut p = gvisor_pod(
        json!([{"name": "data", "emptyDir": {"medium": "Memory"}}, {"name": "cache", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "x"}}, {"name": "cm2", "configMap": {"name": "y"}}]),
        &[("a", &["data", "cache", "cfg", "cm2"]), ("b", &["data"])],
    );
    p["metadata"]["annotations"] = json!({
        "dev.gvisor.spec.mount.data.source": "/etc",
        "dev.gvisor.spec.mount.data.share": "POD",
        "dev.gvisor.spec.mount.cache.type": "tmpfs",
        "dev.gvisor.spec.mount.cfg.type": "bind",
        "dev.gvisor.spec.mount.cm2.type": "bind",
        "dev.gvisor.spec.mount.cm2.share": "shared",
        "dev.gvisor.spec.mount.x.y.type": "tmpfs",
        "dev.gvisor.spec.mount.ghost.type": "tmpfs",
        "dev.gvisor.internal.anything": "x",
        "dev.gvisor.empty-dir.cache.force-shared": "true",
        "team": "storage",
    });
    let m = run(&p);
    let a = applied(&p, &m);
    // The node's field and everything invalid are gone.
    for gone in ["data.source", "x.y.type", "ghost.type", "cfg.type"] {
        assert!(!a.contains_key(&format!("dev.gvisor.spec.mount.{gone}")), "{gone} kept");
    }
    assert!(!a.contains_key("dev.gvisor.internal.anything"));
    // Invalid value replaced by ours; valid author value kept over ours.
    assert_eq!(a["dev.gvisor.spec.mount.data.share"], "pod");
    assert_eq!(a["dev.gvisor.spec.mount.cache.type"], "tmpfs");
    assert_eq!(a["dev.gvisor.spec.mount.cache.share"], "container");
    // A complete author hint on a non-emptyDir volume is the author's escape hatch; an incomplete one is not.
    assert_eq!(a["dev.gvisor.spec.mount.cm2.share"], "shared");
    assert!(m.warnings.iter().any(|w| w.contains("author hint for volume \"cfg\" removed")));
    // Unrelated annotations and the opt-out survive, and the audit reports what happened.
    assert_eq!(a["team"], "storage");
    assert_eq!(a["dev.gvisor.empty-dir.cache.force-shared"], "true");
    assert!(hint_of(&m, "cache").unwrap().force_shared);
    assert_eq!(m.audit[AUDIT_FORCE_SHARED], "cache");
    assert_eq!(m.audit[AUDIT_HINTS], "cache=tmpfs/container,cm2=bind/shared,data=tmpfs/pod");
    assert!(m.audit[AUDIT_REMOVED].contains("dev.gvisor.spec.mount.data.source"));
    for key in ["data.source", "data.share", "x.y.type", "ghost.type"] {
        assert!(m.warnings.iter().any(|w| w.contains(&format!("dev.gvisor.spec.mount.{key}"))), "{key}");
    }
}

#[test]
fn author_filled_hint_never_gets_a_key_over_the_limit() {
    let name = "n".repeat(36);
    let mut p = gvisor_pod(json!([{"name": name, "emptyDir": {}}]), &[("a", &[name.as_str()])]);
    p["metadata"]["annotations"] = json!({ format!("dev.gvisor.spec.mount.{name}.type"): "tmpfs" });
    let m = run(&p);
    let a = applied(&p, &m);
    assert!(a.is_empty(), "{a:?}");
    assert!(a.keys().all(|k| mount_hints::is_valid_annotation_key(k)));
}

#[test]
fn patch_creates_the_annotation_map_and_escapes_keys() {
    let p = gvisor_pod(json!([{"name": "v", "emptyDir": {}}]), &[("a", &["v"])]);
    let m = run(&p);
    assert_eq!(m.patch.0.len(), 1);
    assert_eq!(serde_json::to_value(&m.patch.0[0]).unwrap()["path"], "/metadata/annotations");

    let mut with = p.clone();
    with["metadata"]["annotations"] = json!({"example.com/a~b": "x"});
    let deny = MutationSettings { deny_annotations: vec!["example.com/a~b".into()], ..Default::default() };
    let m = run_with(&with, &deny);
    let paths: Vec<Value> = m.patch.0.iter().map(|op| serde_json::to_value(op).unwrap()["path"].clone()).collect();
    assert!(paths.contains(&json!("/metadata/annotations/example.com~1a~0b")), "{paths:?}");
    assert_eq!(applied(&with, &m).get("example.com/a~b"), None);
}

#[test]
fn second_pass_is_empty_and_output_is_deterministic() {
    let mut p = gvisor_pod(
        json!([{"name": "b", "emptyDir": {"medium": "Memory", "sizeLimit": "1G"}}, {"name": "a", "emptyDir": {}}]),
        &[("x", &["a", "b"]), ("y", &["b"])],
    );
    p["metadata"]["annotations"] = json!({"dev.gvisor.spec.mount.a.source": "/"});
    let on = MutationSettings { memory_size_option: true, ..Default::default() };
    let first = run_with(&p, &on);
    assert_eq!(first, run_with(&p, &on));
    let mut mutated = p.clone();
    json_patch::patch(&mut mutated, &first.patch.0).unwrap();
    let second = run_with(&mutated, &on);
    assert!(second.patch.0.is_empty(), "{:?}", second.patch);
    assert_eq!(
        second.hints.iter().map(|h| (&h.volume, h.hint_type, h.share)).collect::<Vec<_>>(),
        first.hints.iter().map(|h| (&h.volume, h.hint_type, h.share)).collect::<Vec<_>>()
    );
}

fn release(date: u32) -> Option<mount_hints::RunscRelease> {
    Some(mount_hints::RunscRelease::from_date(date).unwrap())
}

#[test]
fn a_share_never_narrows() {
    let mut p = gvisor_pod(
        json!([{"name": "both", "emptyDir": {}}, {"name": "one", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}},
               {"name": "wide", "emptyDir": {}}]),
        &[("a", &["both", "one", "cfg", "wide"]), ("b", &["both", "cfg", "wide"])],
    );
    p["metadata"]["annotations"] = json!({
        "dev.gvisor.spec.mount.both.share": "container",
        "dev.gvisor.spec.mount.one.share": "container",
        "dev.gvisor.spec.mount.cfg.type": "bind",
        "dev.gvisor.spec.mount.cfg.share": "container",
        "dev.gvisor.spec.mount.wide.share": "shared",
    });
    let m = run(&p);
    let a = applied(&p, &m);
    assert_eq!(a["dev.gvisor.spec.mount.both.share"], "pod");
    assert_eq!(a["dev.gvisor.spec.mount.cfg.share"], "pod", "the escape hatch is widened too");
    assert_eq!(a["dev.gvisor.spec.mount.one.share"], "container", "one container: the author's value stands");
    assert_eq!(a["dev.gvisor.spec.mount.wide.share"], "shared", "wider than needed is never narrowed");
    for volume in ["both", "cfg"] {
        let warning = format!("share of volume {volume:?} widened from container to pod: 2 containers mount it");
        assert!(m.warnings.contains(&warning), "{:?}", m.warnings);
    }
    assert_eq!(m.warnings.iter().filter(|w| w.contains("widened")).count(), 2);
}

#[test]
fn reinvocation_after_a_sidecar_was_added_widens_our_own_share() {
    let p = gvisor_pod(json!([{"name": "logs", "emptyDir": {}}]), &[("app", &["logs"])]);
    let first = run(&p);
    let mut mutated = p.clone();
    json_patch::patch(&mut mutated, &first.patch.0).unwrap();
    assert_eq!(applied(&p, &first)["dev.gvisor.spec.mount.logs.share"], "container");
    // Another webhook injects a log shipper that mounts the same volume (reinvocationPolicy: IfNeeded).
    mutated["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "shipper", "image": "x", "volumeMounts": [{"name": "logs", "mountPath": "/l"}]}));
    let second = run(&mutated);
    assert_eq!(applied(&mutated, &second)["dev.gvisor.spec.mount.logs.share"], "pod");
    assert!(second.warnings.iter().any(|w| w.contains("\"logs\" widened")));
}

#[test]
fn directfs_follows_min_runsc_release() {
    let mut p = gvisor_pod(
        json!([{"name": "data", "emptyDir": {}}, {"name": "bad", "emptyDir": {}}]),
        &[("a", &["data", "bad"])],
    );
    p["metadata"]["annotations"] = json!({
        "dev.gvisor.spec.mount.data.directfs": "off",
        "dev.gvisor.spec.mount.bad.directfs": "on",
    });
    // Default (the 2022 runsc, where the field is fatal): removed with a warning naming the release.
    let m = run(&p);
    let a = applied(&p, &m);
    assert!(!a.contains_key("dev.gvisor.spec.mount.data.directfs"));
    assert!(
        m.warnings.iter().any(|w| w.contains("data.directfs") && w.contains("release-20260520")),
        "{:?}",
        m.warnings
    );
    // Just before the first release with the field: still removed.
    let before = MutationSettings { min_runsc_release: release(20260511), ..Default::default() };
    assert!(!applied(&p, &run_with(&p, &before)).contains_key("dev.gvisor.spec.mount.data.directfs"));
    // From that release on: kept, and the webhook fills type and share around it.
    let newest = MutationSettings { min_runsc_release: release(20260520), ..Default::default() };
    let m = run_with(&p, &newest);
    let a = applied(&p, &m);
    assert_eq!(a["dev.gvisor.spec.mount.data.directfs"], "off");
    assert_eq!(a["dev.gvisor.spec.mount.data.type"], "bind");
    assert_eq!(hint_of(&m, "data").unwrap().directfs, Some(mount_hints::Directfs::Off));
    assert!(m.audit[AUDIT_HINTS].contains("data=bind/container/directfs=off"));
    // Any other value is wrong on every runsc.
    assert!(!a.contains_key("dev.gvisor.spec.mount.bad.directfs"));
    assert!(m.warnings.iter().any(|w| w.contains("bad.directfs") && w.contains("invalid directfs `on`")));
    let again = {
        let mut mutated = p.clone();
        json_patch::patch(&mut mutated, &m.patch.0).unwrap();
        run_with(&mutated, &newest)
    };
    assert!(again.patch.0.is_empty(), "{:?}", again.patch);
}

#[test]
fn min_runsc_release_allows_valued_author_options() {
    let mut p = gvisor_pod(json!([{"name": "m", "emptyDir": {"medium": "Memory"}}]), &[("a", &["m"])]);
    p["metadata"]["annotations"] = json!({"dev.gvisor.spec.mount.m.options": "size=1g"});
    assert!(!applied(&p, &run(&p)).contains_key("dev.gvisor.spec.mount.m.options"));
    let new = MutationSettings { min_runsc_release: release(20240501), ..Default::default() };
    assert_eq!(applied(&p, &run_with(&p, &new))["dev.gvisor.spec.mount.m.options"], "size=1g");
}

#[test]
fn force_shared_is_read_like_go_parse_bool() {
    let mut p = gvisor_pod(
        json!([{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}, {"name": "c", "emptyDir": {}}]),
        &[("x", &["a", "b", "c"])],
    );
    p["metadata"]["annotations"] = json!({
        "dev.gvisor.empty-dir.a.force-shared": "T",
        "dev.gvisor.empty-dir.b.force-shared": "yes",
        "dev.gvisor.empty-dir.c.force-shared": "False",
    });
    let m = run(&p);
    assert!(hint_of(&m, "a").unwrap().force_shared);
    assert!(!hint_of(&m, "b").unwrap().force_shared);
    assert!(!hint_of(&m, "c").unwrap().force_shared);
    assert_eq!(m.audit[AUDIT_FORCE_SHARED], "a");
    assert!(m.warnings.iter().any(|w| w.contains("dev.gvisor.empty-dir.b.force-shared") && w.contains("`yes`")));
    // Kept as written: the node reads it with the same parser.
    assert_eq!(applied(&p, &m)["dev.gvisor.empty-dir.b.force-shared"], "yes");
}

#[test]
fn tmpfs_is_never_kept_on_a_volume_that_is_not_an_empty_dir() {
    let mut p = gvisor_pod(
        json!([{"name": "cfg", "configMap": {"name": "c"}}, {"name": "sec", "secret": {"secretName": "s"}},
               {"name": "tok", "projected": {"sources": []}}]),
        &[("a", &["cfg", "sec", "tok"])],
    );
    p["metadata"]["annotations"] = json!({
        "dev.gvisor.spec.mount.cfg.type": "tmpfs", "dev.gvisor.spec.mount.cfg.share": "container",
        "dev.gvisor.spec.mount.sec.type": "bind", "dev.gvisor.spec.mount.sec.share": "container",
        "dev.gvisor.spec.mount.tok.type": "tmpfs",
    });
    let m = run(&p);
    let a = applied(&p, &m);
    assert!(!a.keys().any(|k| k.starts_with("dev.gvisor.spec.mount.cfg.")), "{a:?}");
    assert!(!a.keys().any(|k| k.starts_with("dev.gvisor.spec.mount.tok.")), "{a:?}");
    assert_eq!(a["dev.gvisor.spec.mount.sec.type"], "bind");
    assert!(m.warnings.iter().any(|w| w.contains("cfg.type") && w.contains("not an emptyDir")), "{:?}", m.warnings);
}
