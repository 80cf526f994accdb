//! The node completion over arbitrary spec bytes against an in-memory node. The first byte chooses the node
//! (runsc release, whether volume directories hold files, strict mode); the rest is config.json.
//!
//! Beyond "no panic": a completed spec completes to itself, keeps every field and annotation the hook does not
//! own, and every hint `source` it leaves is the kubelet's directory for that pod and name (never a path the
//! pod author wrote).
#![no_main]

use std::io;
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use mount_hints::{parse_hint_key, EmptyDirMedium, HintField, RunscRelease, DEV_SHM_HINT_NAME, GVISOR_PREFIX};
use mount_hints_hook::{complete, EmptyDirState, NodeView, PodUid, VolumeDir};
use serde_json::Value;

const KUBELET_ROOT: &str = "/var/lib/kubelet";

/// A node whose kubelet tree is decided by the volume name, so one input reaches every branch: `cm-*` is a
/// ConfigMap, `gone-*` has no directory, `dup-*` has two, `eio-*` cannot be listed; anything else is an emptyDir,
/// a Memory one (a tmpfs on its directory) when named `mem-*`, else on disk.
struct FakeNode {
    root: PathBuf,
    aliases: Vec<PathBuf>,
    release: Option<RunscRelease>,
    dirs_hold_files: bool,
}

impl FakeNode {
    fn dir(&self, uid: &PodUid, plugin: &str, name: &str) -> VolumeDir {
        let path = self.root.join("pods").join(uid.as_str()).join("volumes").join(plugin).join(name);
        VolumeDir { plugin: plugin.to_owned(), path }
    }
}

impl NodeView for FakeNode {
    fn kubelet_root(&self) -> &Path {
        &self.root
    }

    fn kubelet_root_aliases(&self) -> &[PathBuf] {
        &self.aliases
    }

    fn volume_dirs(&self, uid: &PodUid, name: &str) -> io::Result<Vec<VolumeDir>> {
        const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
        Ok(if name.starts_with("cm-") {
            vec![self.dir(uid, "kubernetes.io~configmap", name)]
        } else if name.starts_with("gone-") {
            Vec::new()
        } else if name.starts_with("dup-") {
            vec![self.dir(uid, EMPTY_DIR, name), self.dir(uid, "kubernetes.io~csi", name)]
        } else if name.starts_with("eio-") {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "fake node: permission denied"));
        } else {
            vec![self.dir(uid, EMPTY_DIR, name)]
        })
    }

    fn inspect_empty_dir(&self, dir: &Path) -> io::Result<EmptyDirState> {
        let memory = dir.file_name().is_some_and(|name| name.as_encoded_bytes().starts_with(b"mem-"));
        let medium = if memory { EmptyDirMedium::Memory } else { EmptyDirMedium::Disk };
        Ok(EmptyDirState { medium, empty: !self.dirs_hold_files })
    }

    fn runsc_release(&self) -> Option<RunscRelease> {
        self.release
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, spec)) = data.split_first() else { return };
    let Ok(spec) = serde_json::from_slice::<Value>(spec) else { return };
    let release = match flags & 0b11 {
        0 => None,
        1 => Some(RunscRelease::DEBIAN_BOOKWORM),
        2 => Some(RunscRelease::DISK_BACKED_TMPFS),
        _ => Some(RunscRelease::VALUED_OPTIONS),
    };
    let node = FakeNode {
        root: PathBuf::from(KUBELET_ROOT),
        aliases: vec![PathBuf::from("/data/kubelet")],
        release,
        dirs_hold_files: flags & 0b100 != 0,
    };
    let strict = flags & 0b1000 != 0;
    let Ok(done) = complete(&spec, &node, strict) else { return };

    let again = complete(&done.spec, &node, strict).expect("a completed spec completes again");
    assert!(again.changes.is_empty(), "a second run changed {:?}", again.changes);
    assert_eq!(again.spec, done.spec);

    let (input, output) = (spec.as_object().expect("complete accepts objects only"), done.spec.as_object().unwrap());
    for (key, value) in input {
        if key != "annotations" && key != "mounts" {
            assert_eq!(output.get(key), Some(value), "field {key} changed");
        }
    }
    let annotations = |o: &serde_json::Map<String, Value>| o.get("annotations").and_then(Value::as_object).cloned();
    let (before, after) = (annotations(input).unwrap_or_default(), annotations(output).unwrap_or_default());
    for (key, value) in &before {
        if !key.starts_with(GVISOR_PREFIX) {
            assert_eq!(after.get(key), Some(value), "annotation {key} changed");
        }
    }
    if !done.kind.carries_hints() {
        return;
    }
    // Non-string values are left alone: runsc cannot read such a spec at all (annotations are Go strings).
    for (key, value) in after.iter().filter(|(_, v)| v.is_string()) {
        let hint = match parse_hint_key(key) {
            Ok(Some(hint)) => hint,
            Ok(None) => continue,
            Err(e) => panic!("the completed spec keeps a key runsc refuses: {e}"),
        };
        if hint.field != HintField::Source || hint.name == DEV_SHM_HINT_NAME {
            continue;
        }
        let source = value.as_str().expect("filtered above");
        let parts: Option<Vec<&str>> = source
            .strip_prefix(KUBELET_ROOT)
            .and_then(|rest| rest.strip_prefix("/pods/"))
            .map(|r| r.split('/').collect());
        let is_kubelet_dir = matches!(parts.as_deref(), Some([uid, "volumes", plugin, name])
            if PodUid::parse(uid).is_some() && !plugin.is_empty() && *plugin != ".." && *name == hint.name);
        assert!(is_kubelet_dir, "source {source:?} of {key} is not the kubelet's directory for it");
    }
});
