//! The completion rules of SPEC section 4, on kubelet trees under a temporary root and specs shaped like the
//! ones containerd and CRI-O generate.

mod fixtures;

use fixtures::*;
use mount_hints::{EmptyDirMedium, RunscRelease};
use mount_hints_hook::{
    complete, Completion, ContainerKind, EmptyDirState, HostNode, NodeView, PodUid, RuntimeRelease,
};
use serde_json::Value;

const OLD: &str = "0.0~20221219.0";
const NEW: &str = "0.0~20240729.0";

fn node(tree: &KubeletTree, release: Option<&str>) -> HostNode {
    HostNode::new(&tree.root, RuntimeRelease::Known(release.map(|r| r.parse::<RunscRelease>().unwrap())))
}

fn run(spec: &Value, node: &HostNode) -> Completion {
    let done = complete(spec, node, false).unwrap();
    let again = complete(&done.spec, node, false).unwrap();
    assert!(again.changes.is_empty(), "a second run changed {:?}", again.changes);
    done
}

fn source_of(spec: &Value, name: &str) -> Option<String> {
    annotation(spec, &format!("dev.gvisor.spec.mount.{name}.source")).map(str::to_owned)
}

fn type_share<'a>(spec: &'a Value, name: &str) -> (Option<&'a str>, Option<&'a str>) {
    (
        annotation(spec, &format!("dev.gvisor.spec.mount.{name}.type")),
        annotation(spec, &format!("dev.gvisor.spec.mount.{name}.share")),
    )
}

#[test]
fn memory_empty_dir_gets_its_source_and_stays_tmpfs_on_every_runsc() {
    for runtime in [Runtime::Containerd, Runtime::CriO] {
        for release in [Some(OLD), Some(NEW), None] {
            let tree = KubeletTree::new();
            let dir = tree.memory_empty_dir("cache");
            let sandbox = spec(runtime, true, hint("cache", "tmpfs", "pod"), vec![]);
            let done = run(&sandbox, &node(&tree, release));
            assert_eq!(done.kind, ContainerKind::Sandbox);
            assert_eq!(source_of(&done.spec, "cache"), Some(path_str(&dir)), "{runtime:?} {release:?}");
            assert_eq!(type_share(&done.spec, "cache"), (Some("tmpfs"), Some("pod")));
        }
    }
}

#[test]
fn disk_empty_dir_is_disk_backed_tmpfs_only_where_runsc_can() {
    let tree = KubeletTree::new();
    tree.empty_dir("scratch");
    let sandbox = spec(Runtime::Containerd, true, hint("scratch", "bind", "container"), vec![]);
    let new = run(&sandbox, &node(&tree, Some(NEW)));
    assert_eq!(type_share(&new.spec, "scratch"), (Some("tmpfs"), Some("container")));
    for release in [Some(OLD), None] {
        let old = run(&sandbox, &node(&tree, release));
        assert_eq!(type_share(&old.spec, "scratch"), (Some("bind"), Some("shared")), "{release:?}");
    }
}

#[test]
fn files_on_the_host_or_force_shared_keep_a_shared_bind() {
    let tree = KubeletTree::new();
    let full = tree.memory_empty_dir("full");
    std::fs::write(full.join("data"), b"x").unwrap();
    let filestore = tree.empty_dir("filestore");
    std::fs::write(filestore.join(".gvisor.filestore.1234"), b"").unwrap();
    tree.memory_empty_dir("forced");
    let mut hints = hint("full", "tmpfs", "pod");
    hints.extend(hint("filestore", "bind", "pod"));
    hints.extend(hint("forced", "tmpfs", "pod"));
    hints.push(("dev.gvisor.empty-dir.forced.force-shared".into(), "true".into()));
    let done = run(&spec(Runtime::CriO, true, hints, vec![]), &node(&tree, Some(NEW)));
    assert_eq!(type_share(&done.spec, "full"), (Some("bind"), Some("shared")));
    assert_eq!(type_share(&done.spec, "filestore"), (Some("tmpfs"), Some("pod")), "a lone filestore counts as empty");
    assert_eq!(type_share(&done.spec, "forced"), (Some("bind"), Some("shared")));
    assert!(done.warnings.iter().any(|w| w.contains("\"full\" already holds files")));
}

#[test]
fn hostile_annotations_never_reach_a_path_and_never_survive() {
    let tree = KubeletTree::new();
    let data = tree.memory_empty_dir("data");
    tree.empty_dir("twice");
    tree.volume(UID, "kubernetes.io~configmap", "twice");
    let mut hints = hint("data", "tmpfs", "pod");
    hints.push(("dev.gvisor.spec.mount.data.source".into(), "/etc".into()));
    for name in ["..", "*", "a/b", "Upper", "ghost", "twice"] {
        hints.extend(hint(name, "tmpfs", "pod"));
    }
    hints.push(("dev.gvisor.spec.mount.x.y.type".into(), "tmpfs".into()));
    hints.push(("dev.gvisor.spec.mount.bad.type".into(), "Tmpfs".into()));
    hints.push(("dev.gvisor.spec.mount.bad.share".into(), "pod".into()));
    hints.push(("dev.gvisor.spec.mount.gvisorinternaldevshm.source".into(), "/etc".into()));
    let sandbox = spec(Runtime::Containerd, true, hints, vec![]);
    let done = run(&sandbox, &node(&tree, Some(OLD)));
    assert_eq!(source_of(&done.spec, "data"), Some(path_str(&data)), "an author-set source is replaced");
    let hint_keys: Vec<&String> = done.spec["annotations"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("dev.gvisor.spec.mount."))
        .collect();
    for key in &hint_keys {
        assert!(
            key.starts_with("dev.gvisor.spec.mount.data.")
                || key.starts_with("dev.gvisor.spec.mount.gvisorinternaldevshm."),
            "{key} survived"
        );
    }
    assert_eq!(source_of(&done.spec, "gvisorinternaldevshm"), Some(shm_source(Runtime::Containerd)));
    let warnings = done.warnings.join("\n");
    for want in [
        "\"twice\" removed: 2 volume directories",
        "\"ghost\" removed: no directory",
        "\"Upper\" removed: the name is not a DNS-1123",
        "invalid type `Tmpfs`",
    ] {
        assert!(warnings.contains(want), "missing {want}: {warnings}");
    }
    assert!(complete(&sandbox, &node(&tree, Some(OLD)), true).is_err(), "--strict fails instead");
}

#[test]
fn without_a_pod_uid_hints_are_dropped_or_strict_fails() {
    let tree = KubeletTree::new();
    tree.empty_dir("cache");
    let mut sandbox = spec(Runtime::Containerd, true, hint("cache", "tmpfs", "pod"), vec![]);
    let annotations = sandbox["annotations"].as_object_mut().unwrap();
    annotations.remove("io.kubernetes.cri.sandbox-uid");
    annotations.remove("io.kubernetes.cri.sandbox-log-directory");
    let done = run(&sandbox, &node(&tree, Some(NEW)));
    assert_eq!(type_share(&done.spec, "cache"), (None, None));
    let err = complete(&sandbox, &node(&tree, Some(NEW)), true).unwrap_err();
    assert!(err.to_string().contains("pod UID"), "{err}");
}

#[test]
fn application_mounts_follow_the_hints_matched_by_pod_uid() {
    for runtime in [Runtime::Containerd, Runtime::CriO] {
        let tree = KubeletTree::new();
        let cache = tree.memory_empty_dir("cache");
        let scratch = tree.empty_dir("scratch");
        let sub = tree.sub_path("scratch", "app");
        let other_pod = tree.volume(OTHER_UID, "kubernetes.io~empty-dir", "cache");
        let config = tree.volume(UID, "kubernetes.io~configmap", "config");
        let mut hints = hint("cache", "tmpfs", "pod");
        hints.extend(hint("scratch", "bind", "container"));
        let app = spec(
            runtime,
            false,
            hints,
            vec![
                bind("/cache", &path_str(&cache)),
                bind("/scratch", &path_str(&scratch)),
                bind("/logs", &path_str(&sub)),
                bind("/other", &path_str(&other_pod)),
                bind("/etc/app", &path_str(&config)),
            ],
        );
        let done = run(&app, &node(&tree, Some(NEW)));
        assert_eq!(done.kind, ContainerKind::Container);
        let cache_mount = mount_at(&done.spec, "/cache")[0];
        assert_eq!(cache_mount["type"], "tmpfs");
        assert!(!cache_mount["options"].as_array().unwrap().iter().any(|o| o == "rbind" || o == "bind"));
        assert_eq!(mount_at(&done.spec, "/scratch")[0]["type"], "bind", "disk emptyDir: hint tmpfs + mount bind");
        for untouched in ["/logs", "/other", "/etc/app"] {
            assert_eq!(mount_at(&done.spec, untouched)[0], mount_at(&app, untouched)[0], "{untouched}");
        }
        assert!(done.spec["annotations"].get("dev.gvisor.spec.mount.cache.source").is_none(), "no sources on apps");
    }
}

#[test]
fn symlinked_kubelet_root_resolves_to_the_path_kubelet_mounts() {
    let (tree, link) = KubeletTree::symlinked();
    let real = tree.memory_empty_dir("cache");
    let via_link = link.join("pods").join(UID).join("volumes/kubernetes.io~empty-dir/cache");
    let node = HostNode::new(&link, RuntimeRelease::Known(Some(NEW.parse().unwrap())));
    let sandbox = run(&spec(Runtime::Containerd, true, hint("cache", "tmpfs", "pod"), vec![]), &node);
    assert_eq!(source_of(&sandbox.spec, "cache"), Some(path_str(&real)));
    // A container mount spelled through the symlink is matched and respelled, so runsc's exact-string match
    // between the hint source and the mount source holds.
    for mount_source in [path_str(&real), path_str(&via_link)] {
        let app = run(
            &spec(Runtime::Containerd, false, hint("cache", "tmpfs", "pod"), vec![bind("/cache", &mount_source)]),
            &node,
        );
        let mount = mount_at(&app.spec, "/cache")[0];
        assert_eq!(mount["type"], "tmpfs");
        assert_eq!(mount["source"], path_str(&real));
    }
}

#[test]
fn dev_shm_becomes_one_pod_tmpfs_and_host_ipc_is_left_alone() {
    for runtime in [Runtime::Containerd, Runtime::CriO] {
        let tree = KubeletTree::new();
        let node = node(&tree, Some(OLD));
        let sandbox = run(&spec(runtime, true, vec![], vec![]), &node);
        let shm = mount_at(&sandbox.spec, "/dev/shm");
        assert_eq!(shm.len(), 1, "the runtime's own tmpfs /dev/shm is removed");
        assert_eq!(shm[0]["type"], "tmpfs");
        assert_eq!(shm[0]["source"], shm_source(runtime));
        let key = |f: &str| format!("dev.gvisor.spec.mount.gvisorinternaldevshm.{f}");
        assert_eq!(annotation(&sandbox.spec, &key("source")), Some(shm_source(runtime).as_str()));
        assert_eq!(annotation(&sandbox.spec, &key("type")), Some("tmpfs"));
        assert_eq!(annotation(&sandbox.spec, &key("share")), Some("pod"));
        assert_eq!(annotation(&sandbox.spec, &key("options")), Some("rw"));

        let app = run(&spec(runtime, false, vec![], vec![]), &node);
        assert_eq!(mount_at(&app.spec, "/dev/shm").len(), 1);
        assert_eq!(mount_at(&app.spec, "/dev/shm")[0]["type"], "tmpfs");
        assert!(annotation(&app.spec, &key("source")).is_none(), "hints only on the sandbox");

        let mut host_ipc = spec(runtime, true, vec![], vec![]);
        let mounts = host_ipc["mounts"].as_array_mut().unwrap();
        mounts.retain(|m| m["destination"] != "/dev/shm");
        mounts.push(bind("/dev/shm", "/dev/shm"));
        let done = run(&host_ipc, &node);
        assert!(done.changes.is_empty(), "{:?}", done.changes);
    }
}

#[test]
fn fields_the_code_does_not_model_survive() {
    let tree = KubeletTree::new();
    tree.memory_empty_dir("cache");
    let sandbox = spec(Runtime::Containerd, true, hint("cache", "tmpfs", "pod"), vec![]);
    let done = run(&sandbox, &node(&tree, Some(NEW)));
    for pointer in ["/x-vendor-extension", "/linux/futureField", "/process/x-runtime-private", "/hostname", "/root"] {
        assert_eq!(done.spec.pointer(pointer), sandbox.pointer(pointer), "{pointer}");
    }
    // Every annotation the runtime set is still there.
    for (key, value) in sandbox["annotations"].as_object().unwrap() {
        assert_eq!(done.spec["annotations"].get(key), Some(value), "{key}");
    }
}

#[test]
fn a_lone_container_is_completed_as_root_and_application() {
    let tree = KubeletTree::new();
    let cache = tree.memory_empty_dir("cache");
    let mut lone =
        spec(Runtime::Containerd, true, hint("cache", "tmpfs", "pod"), vec![bind("/cache", &path_str(&cache))]);
    let annotations = lone["annotations"].as_object_mut().unwrap();
    annotations.remove("io.kubernetes.cri.container-type");
    let done = run(&lone, &node(&tree, Some(OLD)));
    assert_eq!(done.kind, ContainerKind::Root);
    assert_eq!(source_of(&done.spec, "cache"), Some(path_str(&cache)));
    assert_eq!(mount_at(&done.spec, "/cache")[0]["type"], "tmpfs");
}

/// Seen on a cluster: gVisor's shim runs before the hook (the hook is its `binary_name`) and completes a disk
/// emptyDir's hint to a disk-backed `type: tmpfs` with its source, leaving the container mount a bind. The 2022
/// runsc cannot back a tmpfs with disk and failed the container; the medium read on the node keeps it a shared
/// bind there. A Memory emptyDir whose hint says `bind` is memory-backed all the same.
#[test]
fn an_empty_dir_follows_its_medium_on_the_node_not_a_rewritten_hint_type() {
    let tree = KubeletTree::new();
    let scratch = tree.empty_dir("scratch");
    let cache = tree.memory_empty_dir("cache");
    let mut hints = hint("scratch", "tmpfs", "pod");
    hints.push(("dev.gvisor.spec.mount.scratch.source".into(), path_str(&scratch)));
    hints.extend(hint("cache", "bind", "pod"));
    let sandbox = spec(Runtime::Containerd, true, hints.clone(), vec![]);
    let app = spec(
        Runtime::Containerd,
        false,
        hints,
        vec![bind("/scratch", &path_str(&scratch)), bind("/cache", &path_str(&cache))],
    );
    for (release, scratch_hint) in
        [(Some(OLD), ("bind", "shared")), (None, ("bind", "shared")), (Some(NEW), ("tmpfs", "pod"))]
    {
        let node = node(&tree, release);
        let done = run(&sandbox, &node);
        assert_eq!(type_share(&done.spec, "scratch"), (Some(scratch_hint.0), Some(scratch_hint.1)), "{release:?}");
        assert_eq!(source_of(&done.spec, "scratch"), Some(path_str(&scratch)));
        assert_eq!(type_share(&done.spec, "cache"), (Some("tmpfs"), Some("pod")), "{release:?}");
        let done = run(&app, &node);
        assert_eq!(mount_at(&done.spec, "/scratch")[0]["type"], "bind", "disk: a bind, under either hint type");
        assert_eq!(mount_at(&done.spec, "/cache")[0]["type"], "tmpfs", "memory: a tmpfs, as the hint now says");
    }
}

/// The node tells the medium: a tmpfs mounted on the volume directory (what kubelet does for `medium: Memory`)
/// is Memory; a plain directory is on disk, also when the kubelet root itself is on a tmpfs.
#[test]
fn the_medium_is_a_tmpfs_mounted_on_the_volume_directory() {
    let disk_root = KubeletTree::new();
    let tmpfs_root = KubeletTree::new();
    tmpfs_root.mount_tmpfs(&tmpfs_root.root);
    let cases = [
        (&disk_root, disk_root.memory_empty_dir("memory"), EmptyDirMedium::Memory),
        (&disk_root, disk_root.empty_dir("disk"), EmptyDirMedium::Disk),
        (&tmpfs_root, tmpfs_root.empty_dir("disk"), EmptyDirMedium::Disk),
        (&tmpfs_root, tmpfs_root.memory_empty_dir("memory"), EmptyDirMedium::Memory),
    ];
    let uid = PodUid::parse(UID).unwrap();
    for (tree, dir, medium) in cases {
        let node = node(tree, Some(NEW));
        let want = EmptyDirState { medium, empty: true };
        // Looked up by path, then opened from the plugin directory it was listed in.
        assert_eq!(node.inspect_empty_dir(&dir).unwrap(), want, "{}, by path", dir.display());
        let listed = node.volume_dirs(&uid, dir.file_name().unwrap().to_str().unwrap()).unwrap();
        assert_eq!(listed[0].path, dir);
        assert_eq!(node.inspect_empty_dir(&listed[0].path).unwrap(), want, "{}, listed", dir.display());
        std::fs::write(dir.join("data"), b"x").unwrap();
        assert_eq!(node.inspect_empty_dir(&dir).unwrap(), EmptyDirState { medium, empty: false });
    }
}

/// Found by the `completion` fuzz target: on a second run (`runsc restore`, or the hook both in front of runsc
/// and as a Podman hook) a lone container's disk emptyDir, completed to a disk-backed tmpfs, had its bind mount
/// turned into a memory tmpfs.
#[test]
fn a_lone_container_keeps_its_disk_backed_tmpfs_on_a_second_run() {
    let tree = KubeletTree::new();
    let scratch = tree.empty_dir("scratch");
    let mut lone =
        spec(Runtime::CriO, true, hint("scratch", "bind", "container"), vec![bind("/scratch", &path_str(&scratch))]);
    lone["annotations"].as_object_mut().unwrap().remove("io.kubernetes.cri-o.ContainerType");
    let done = run(&lone, &node(&tree, Some(NEW)));
    assert_eq!(done.kind, ContainerKind::Root);
    assert_eq!(type_share(&done.spec, "scratch"), (Some("tmpfs"), Some("container")));
    assert_eq!(mount_at(&done.spec, "/scratch")[0]["type"], "bind", "a bind under a tmpfs hint is disk-backed");
}

/// Found by the `completion` fuzz target: a `/dev/shm` bind without a source got a shm hint with an empty
/// source, and a second run removed it again.
#[test]
fn a_dev_shm_bind_without_a_source_gets_no_hint() {
    let tree = KubeletTree::new();
    let mut sandbox = spec(Runtime::Containerd, true, vec![], vec![]);
    let shm = sandbox["mounts"].as_array_mut().unwrap().iter_mut().find(|m| m["type"] == "bind").unwrap();
    shm.as_object_mut().unwrap().remove("source");
    let done = run(&sandbox, &node(&tree, Some(NEW)));
    let keys: Vec<&String> = done.spec["annotations"].as_object().unwrap().keys().collect();
    assert!(!keys.iter().any(|k| k.contains("gvisorinternaldevshm")), "{keys:?}");
    assert_eq!(mount_at(&done.spec, "/dev/shm").len(), 2, "nothing to share, so nothing is replaced");
}

/// Found by the `completion` fuzz target: a mount of another directory with the hinted volume's name was
/// turned into a tmpfs, which runsc (matching hints by exact source) would have made an empty private one.
#[test]
fn only_the_hinted_directory_follows_the_hint() {
    let tree = KubeletTree::new();
    tree.memory_empty_dir("cache");
    let elsewhere = tree.root.join("pods").join(UID).join("volumes/kubernetes.io~csi/cache");
    let container =
        spec(Runtime::CriO, false, hint("cache", "tmpfs", "pod"), vec![bind("/cache", &path_str(&elsewhere))]);
    let done = run(&container, &node(&tree, Some(NEW)));
    assert_eq!(mount_at(&done.spec, "/cache")[0]["type"], "bind");
}

/// Found by the `completion` fuzz target: a disk emptyDir mounted at /dev/shm was taken for the runtime's shm
/// bind and made a tmpfs against its hint, then flipped back and forth on every run.
#[test]
fn an_empty_dir_at_dev_shm_follows_its_hint_not_the_shm_rule() {
    let tree = KubeletTree::new();
    let dshm = tree.empty_dir("dshm");
    let mut container =
        spec(Runtime::CriO, false, hint("dshm", "bind", "container"), vec![bind("/dev/shm", &path_str(&dshm))]);
    // The runtime mounts the volume in place of its own shm bind.
    let runtime_shm = shm_source(Runtime::CriO);
    container["mounts"].as_array_mut().unwrap().retain(|m| m["source"] != runtime_shm.as_str());
    let done = run(&container, &node(&tree, Some(OLD)));
    let at_shm = mount_at(&done.spec, "/dev/shm");
    let volume = at_shm.iter().find(|m| m["source"] == path_str(&dshm).as_str()).expect("the volume mount stays");
    assert_eq!(volume["type"], "bind", "a disk emptyDir on the 2022 runsc stays a bind");
}

#[test]
fn malformed_specs_are_errors_not_panics() {
    let tree = KubeletTree::new();
    let node = node(&tree, None);
    for bad in [serde_json::json!([]), serde_json::json!({"annotations": []}), serde_json::json!({"mounts": {}})] {
        assert!(complete(&bad, &node, false).is_err(), "{bad}");
    }
    assert!(complete(&serde_json::json!({}), &node, false).unwrap().changes.is_empty());
}

const DIRECTFS_RELEASE: &str = "release-20260520.0";

#[test]
fn directfs_is_kept_only_where_the_detected_runsc_knows_it() {
    let tree = KubeletTree::new();
    tree.memory_empty_dir("data");
    let mut hints = hint("data", "tmpfs", "pod");
    hints.push(("dev.gvisor.spec.mount.data.directfs".into(), "off".into()));
    let sandbox = spec(Runtime::Containerd, true, hints, vec![]);
    for release in [Some(OLD), Some(NEW), Some("release-20260511.0"), None] {
        let done = run(&sandbox, &node(&tree, release));
        assert_eq!(annotation(&done.spec, "dev.gvisor.spec.mount.data.directfs"), None, "{release:?}");
        assert!(done.warnings.iter().any(|w| w.contains("directfs of volume \"data\" removed")), "{release:?}");
        assert_eq!(type_share(&done.spec, "data"), (Some("tmpfs"), Some("pod")), "the hint itself stays");
    }
    let done = run(&sandbox, &node(&tree, Some(DIRECTFS_RELEASE)));
    assert_eq!(annotation(&done.spec, "dev.gvisor.spec.mount.data.directfs"), Some("off"));

    let mut bad = hint("data", "tmpfs", "pod");
    bad.push(("dev.gvisor.spec.mount.data.directfs".into(), "on".into()));
    let done = run(&spec(Runtime::Containerd, true, bad, vec![]), &node(&tree, Some(DIRECTFS_RELEASE)));
    assert_eq!(annotation(&done.spec, "dev.gvisor.spec.mount.data.directfs"), None);
}

#[test]
fn force_shared_is_read_like_go_parse_bool() {
    let tree = KubeletTree::new();
    for name in ["one", "upper", "yes", "zero"] {
        tree.memory_empty_dir(name);
    }
    let mut hints = Vec::new();
    for (name, value) in [("one", "1"), ("upper", "TRUE"), ("yes", "yes"), ("zero", "0")] {
        hints.extend(hint(name, "tmpfs", "pod"));
        hints.push((format!("dev.gvisor.empty-dir.{name}.force-shared"), value.into()));
    }
    let done = run(&spec(Runtime::Containerd, true, hints, vec![]), &node(&tree, Some(NEW)));
    assert_eq!(type_share(&done.spec, "one"), (Some("bind"), Some("shared")));
    assert_eq!(type_share(&done.spec, "upper"), (Some("bind"), Some("shared")));
    assert_eq!(type_share(&done.spec, "yes"), (Some("tmpfs"), Some("pod")), "not a boolean: ignored");
    assert_eq!(type_share(&done.spec, "zero"), (Some("tmpfs"), Some("pod")));
    assert!(
        done.warnings.iter().any(|w| w.contains("\"yes\"") && w.contains("`yes` is not a boolean")),
        "{:?}",
        done.warnings
    );
}

#[test]
fn a_volume_that_is_not_an_empty_dir_never_becomes_tmpfs() {
    let tree = KubeletTree::new();
    let cfg = tree.volume(UID, "kubernetes.io~configmap", "cfg");
    let sec = tree.volume(UID, "kubernetes.io~secret", "sec");
    let mut hints = hint("cfg", "tmpfs", "pod");
    hints.extend(hint("sec", "bind", "container"));
    let sandbox = spec(Runtime::CriO, true, hints.clone(), vec![]);
    let done = complete(&sandbox, &node(&tree, Some(NEW)), false).unwrap();
    assert_eq!(type_share(&done.spec, "cfg"), (None, None), "a tmpfs hint over a configMap is removed whole");
    assert!(done.warnings.iter().any(|w| w.contains("\"cfg\" removed") && w.contains("not an emptyDir")));
    assert_eq!(type_share(&done.spec, "sec"), (Some("bind"), Some("container")), "the bind escape hatch stays");
    assert_eq!(source_of(&done.spec, "sec"), Some(path_str(&sec)));
    assert!(complete(&sandbox, &node(&tree, Some(NEW)), true).is_err(), "strict fails instead");

    let app =
        spec(Runtime::CriO, false, hints, vec![bind("/etc/cfg", &path_str(&cfg)), bind("/etc/sec", &path_str(&sec))]);
    let done = run(&app, &node(&tree, Some(NEW)));
    assert_eq!(mount_at(&done.spec, "/etc/cfg")[0]["type"], "bind");
    assert_eq!(mount_at(&done.spec, "/etc/sec")[0]["type"], "bind");
}

#[test]
fn only_a_regular_file_counts_as_the_filestore() {
    let tree = KubeletTree::new();
    let as_dir = tree.memory_empty_dir("asdir");
    std::fs::create_dir(as_dir.join(".gvisor.filestore.1")).unwrap();
    let as_link = tree.memory_empty_dir("aslink");
    std::os::unix::fs::symlink("/etc/passwd", as_link.join(".gvisor.filestore.2")).unwrap();
    let real = tree.memory_empty_dir("real");
    std::fs::write(real.join(".gvisor.filestore.3"), b"").unwrap();
    let mut hints = hint("asdir", "tmpfs", "pod");
    hints.extend(hint("aslink", "tmpfs", "pod"));
    hints.extend(hint("real", "tmpfs", "pod"));
    let done = run(&spec(Runtime::Containerd, true, hints, vec![]), &node(&tree, Some(NEW)));
    assert_eq!(type_share(&done.spec, "asdir"), (Some("bind"), Some("shared")));
    assert_eq!(type_share(&done.spec, "aslink"), (Some("bind"), Some("shared")));
    assert_eq!(type_share(&done.spec, "real"), (Some("tmpfs"), Some("pod")));
}
