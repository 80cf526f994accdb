//! Invariants of the mutation over generated pods: the patch always applies, every key is one the API server
//! accepts, a second pass is a no-op, every hint is complete and names a real volume, no share is narrower
//! than the containers mounting the volume need (pre-set narrower shares included), every field suits the
//! oldest runsc configured (`directfs` included), and the fast decoding path sees the same pod as the typed
//! one.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EphemeralContainer, Pod, PodSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mount_hints::{
    check_field, is_valid_annotation_key, parse_hint_key, HintField, HintType, RunscRelease, Share, MOUNT_PREFIX,
};
use mount_hints_webhook::{mutate, GvisorScope, MutationSettings, PodFacts, SharePolicy};
use proptest::prelude::*;
use proptest::sample::select;

const CASES: u32 = 2000;

fn volume_name() -> impl Strategy<Value = String> {
    // DNS-1123 labels of 1..=63 characters, biased towards the 33..37 boundary of the key limit.
    prop_oneof!["[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", "[a-z]{1}[a-z0-9]{32,36}", "[a-z]{1,6}",]
}

#[derive(Debug, Clone)]
enum Source {
    EmptyDir { medium: Option<&'static str>, size_limit: Option<&'static str> },
    ConfigMap,
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![
        4 => (
            select(vec![None, Some(""), Some("Memory"), Some("HugePages"), Some("HugePages-2Mi"), Some("Tape")]),
            select(vec![None, Some("64Mi"), Some("1G"), Some("0"), Some("1.5Gi")]),
        ).prop_map(|(medium, size_limit)| Source::EmptyDir { medium, size_limit }),
        1 => Just(Source::ConfigMap),
    ]
}

/// A mount: which volume (index into the pod's volumes) and whether it uses subPath / subPathExpr.
fn mounts(volumes: usize) -> impl Strategy<Value = Vec<(usize, u8)>> {
    prop::collection::vec((0..volumes.max(1), select(vec![0u8, 0, 0, 0, 1, 2, 3])), 0..4)
}

/// Author annotations: hint keys with valid and invalid fields/values, node-only sources, deny-listed and
/// malformed keys, and unrelated ones.
fn author_annotations(names: Vec<String>) -> impl Strategy<Value = BTreeMap<String, String>> {
    let mut candidate_names = names;
    candidate_names.extend(["ghost".to_owned(), "x.y".to_owned(), String::new()]);
    let entry = (
        select(candidate_names),
        select(vec!["type", "share", "share", "options", "source", "directfs", "Type", "mode"]),
        select(vec![
            "tmpfs",
            "bind",
            "Tmpfs",
            "pod",
            "container",
            "shared",
            "POD",
            "rw",
            "rw,noexec",
            "size=1g",
            "",
            "/etc",
            "off",
            "default",
            "on",
        ]),
    )
        .prop_map(|(name, field, value)| (format!("{MOUNT_PREFIX}{name}.{field}"), value.to_owned()));
    let other = select(vec![
        ("dev.gvisor.internal.config", "x"),
        ("dev.gvisor.empty-dir.cache.force-shared", "true"),
        ("dev.gvisor.empty-dir.cache.force-shared", "T"),
        ("dev.gvisor.empty-dir.cache.force-shared", "yes"),
        ("example.com/team", "storage"),
        ("dev.gvisor.spec.rootfs.overlay", "memory"),
    ])
    .prop_map(|(k, v)| (k.to_owned(), v.to_owned()));
    prop::collection::vec(prop_oneof![3 => entry, 1 => other], 0..8).prop_map(|entries| {
        // The API server rejects a pod whose own keys are invalid before any webhook matters.
        entries.into_iter().filter(|(k, _)| is_valid_annotation_key(k)).collect()
    })
}

fn mount_of(volumes: &[(String, Source)], (index, sub): (usize, u8)) -> VolumeMount {
    VolumeMount {
        name: volumes[index % volumes.len()].0.clone(),
        mount_path: format!("/m{index}"),
        sub_path: (sub == 1).then(|| "sub".to_owned()).or((sub == 3).then(String::new)),
        sub_path_expr: (sub == 2).then(|| "$(POD_NAME)".to_owned()),
        ..Default::default()
    }
}

prop_compose! {
    fn pod()(
        volumes in prop::collection::btree_map(volume_name(), source(), 0..6)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>()),
        annotations_absent in any::<bool>(),
        runtime_class in select(vec![Some("gvisor"), Some("gvisor"), Some("gvisor"), Some("runc"), None]),
    )(
        kinds in (
            prop::collection::vec(mounts(volumes.len()), 0..3),
            prop::collection::vec(mounts(volumes.len()), 1..4),
            prop::collection::vec(mounts(volumes.len()), 0..2),
        ),
        annotations in author_annotations(volumes.iter().map(|(n, _)| n.clone()).collect()),
        volumes in Just(volumes),
        annotations_absent in Just(annotations_absent),
        runtime_class in Just(runtime_class),
    ) -> Pod {
        let (init, regular, ephemeral) = kinds;
        let container = |prefix: &str, i: usize, ms: &Vec<(usize, u8)>| Container {
            name: format!("{prefix}{i}"),
            volume_mounts: (!volumes.is_empty()).then(|| ms.iter().map(|m| mount_of(&volumes, *m)).collect()),
            ..Default::default()
        };
        Pod {
            metadata: ObjectMeta {
                name: Some("generated".into()),
                annotations: (!annotations_absent || !annotations.is_empty()).then_some(annotations),
                ..Default::default()
            },
            spec: Some(PodSpec {
                runtime_class_name: runtime_class.map(str::to_owned),
                volumes: Some(volumes.iter().map(|(name, source)| Volume {
                    name: name.clone(),
                    empty_dir: match source {
                        Source::EmptyDir { medium, size_limit } => Some(EmptyDirVolumeSource {
                            medium: medium.map(str::to_owned),
                            size_limit: size_limit.map(|s| Quantity(s.to_owned())),
                        }),
                        Source::ConfigMap => None,
                    },
                    config_map: matches!(source, Source::ConfigMap).then(Default::default),
                    ..Default::default()
                }).collect()),
                init_containers: Some(init.iter().enumerate().map(|(i, m)| container("init", i, m)).collect()),
                containers: regular.iter().enumerate().map(|(i, m)| container("app", i, m)).collect(),
                ephemeral_containers: Some(ephemeral.iter().enumerate().map(|(i, m)| {
                    let c = container("debug", i, m);
                    EphemeralContainer { name: c.name, volume_mounts: c.volume_mounts, ..Default::default() }
                }).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn settings() -> impl Strategy<Value = MutationSettings> {
    let releases = select(vec![None, Some(20221219), Some(20240501), Some(20260511), Some(20260520), Some(20260817)]);
    (any::<bool>(), any::<bool>(), releases)
        .prop_map(|(always_pod, size, release)| MutationSettings {
            share_policy: if always_pod { SharePolicy::AlwaysPod } else { SharePolicy::Count },
            memory_size_option: size,
            min_runsc_release: release.map(|d| RunscRelease::from_date(d).unwrap()),
            ..Default::default()
        })
        .prop_filter("contradictory settings are refused at load", |s| s.validate().is_ok())
}

/// How many distinct containers mount each volume.
fn mounted_by(pod: &Pod) -> BTreeMap<String, usize> {
    let spec = pod.spec.as_ref().unwrap();
    let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let regular = spec.init_containers.iter().flatten().chain(&spec.containers);
    let mut add = |container: &str, mounts: Option<&Vec<VolumeMount>>| {
        for m in mounts.into_iter().flatten() {
            users.entry(m.name.clone()).or_default().insert(container.to_owned());
        }
    };
    for c in regular {
        add(&c.name, c.volume_mounts.as_ref());
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        add(&c.name, c.volume_mounts.as_ref());
    }
    users.into_iter().map(|(k, v)| (k, v.len())).collect()
}

fn facts_of(doc: &serde_json::Value) -> PodFacts {
    serde_json::from_value(doc.clone()).expect("a serialized Pod decodes as PodFacts")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn patch_applies_with_valid_keys_and_is_idempotent(pod in pod(), settings in settings()) {
        let scope = GvisorScope::from_settings(&settings);
        let original = serde_json::to_value(&pod).unwrap();
        let mutation = mutate(&facts_of(&original), &settings, &scope);

        let mut mutated = original.clone();
        json_patch::patch(&mut mutated, &mutation.patch.0).map_err(|e| TestCaseError::fail(format!("patch failed: {e}")))?;
        // The result is still a Pod the typed API accepts.
        let typed: Pod = serde_json::from_value(mutated.clone()).unwrap();
        let annotations = typed.metadata.annotations.clone().unwrap_or_default();
        for key in annotations.keys() {
            prop_assert!(is_valid_annotation_key(key), "invalid key {key}");
        }

        let again = mutate(&facts_of(&mutated), &settings, &scope);
        prop_assert!(again.patch.0.is_empty(), "second pass patched: {:?}", again.patch);

        if !mutation.in_scope {
            prop_assert!(mutation.patch.0.is_empty());
            return Ok(());
        }

        // Every hint left on the pod is complete, valid, has no source, and names a distinct volume of the pod.
        let volume_names: BTreeSet<String> =
            typed.spec.as_ref().unwrap().volumes.iter().flatten().map(|v| v.name.clone()).collect();
        let mut fields: BTreeMap<&str, BTreeMap<HintField, &str>> = BTreeMap::new();
        for (key, value) in &annotations {
            match parse_hint_key(key) {
                Ok(Some(k)) => { fields.entry(k.name).or_default().insert(k.field, value); }
                Ok(None) => {}
                Err(e) => prop_assert!(false, "malformed hint key survived: {e}"),
            }
        }
        for (name, f) in &fields {
            prop_assert!(volume_names.contains(*name), "hint for missing volume {name}");
            prop_assert!(!f.contains_key(&HintField::Source), "source survived for {name}");
            let t = f.get(&HintField::Type).ok_or_else(|| TestCaseError::fail(format!("{name}: no type")))?;
            let s = f.get(&HintField::Share).ok_or_else(|| TestCaseError::fail(format!("{name}: no share")))?;
            prop_assert!(t.parse::<HintType>().is_ok() && s.parse::<Share>().is_ok());
            for (field, value) in f {
                prop_assert!(check_field(*field, value, settings.oldest_runsc()).is_ok(), "{name}.{field}={value}");
            }
            // A share never narrows: whatever was pre-set, several containers never get `container`.
            let users = mounted_by(&typed).get(*name).copied().unwrap_or(0);
            prop_assert!(!(users > 1 && *s == "container"), "{name}: share=container with {users} containers");
            // Never a tmpfs over a volume that is not an emptyDir.
            let empty_dir = typed.spec.as_ref().unwrap().volumes.iter().flatten().any(|v| &v.name == name && v.empty_dir.is_some());
            prop_assert!(*t != "tmpfs" || empty_dir, "{name}: tmpfs on a volume that is not an emptyDir");
        }
        let hinted: Vec<&str> = mutation.hints.iter().map(|h| h.volume.as_str()).collect();
        prop_assert_eq!(hinted.len(), fields.len());
        prop_assert!(hinted.iter().all(|h| fields.contains_key(h)));
        prop_assert!(annotations.keys().all(|k| !k.starts_with("dev.gvisor.internal.")));
    }

    #[test]
    fn fast_decoding_sees_the_typed_pod(pod in pod()) {
        let json = serde_json::to_vec(&pod).unwrap();
        let fast: PodFacts = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(fast, PodFacts::from(&pod));
    }
}
