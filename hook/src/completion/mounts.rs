//! Volume mounts of a container that joins the sandbox: their type must agree with the pod's hint (runsc
//! matches a mount to a hint by its exact source, then uses the mount type to tell memory- from disk-backed).

use std::collections::BTreeMap;
use std::path::Path;

use mount_hints::{
    decide_backing, force_shared, hint_key, is_dns1123_label, EmptyDirMedium, HintField, HintType, Share, VolumeOnNode,
};
use serde_json::Value;

use super::{mount_field, set_mount_type, Change, SpecEdit};
use crate::identity::PodUid;
use crate::node::{NodeView, EMPTY_DIR_PLUGIN};

/// `<root>/pods/<uid>/volumes/<plugin>/<name>` exactly: a whole pod volume, not a subPath
/// (`volume-subpaths/...`) and not a file inside one.
struct VolumeSource<'a> {
    root_is_alias: bool,
    uid: &'a str,
    plugin: &'a str,
    name: &'a str,
}

/// Whether `source` is a pod volume directory under the kubelet root (any spelling of it).
pub(super) fn is_pod_volume(source: &str, node: &dyn NodeView) -> bool {
    parse_volume_source(source, node).is_some()
}

fn parse_volume_source<'a>(source: &'a str, node: &dyn NodeView) -> Option<VolumeSource<'a>> {
    let roots = std::iter::once((node.kubelet_root(), false))
        .chain(node.kubelet_root_aliases().iter().map(|a| (a.as_path(), true)));
    for (root, root_is_alias) in roots {
        let Some(rest) = strip_dir_prefix(source, root) else { continue };
        let parts: Vec<&str> = rest.split('/').collect();
        if let ["pods", uid, "volumes", plugin, name] = parts.as_slice() {
            return Some(VolumeSource { root_is_alias, uid, plugin, name });
        }
    }
    None
}

fn strip_dir_prefix<'a>(path: &'a str, dir: &Path) -> Option<&'a str> {
    let dir = dir.to_str()?.trim_end_matches('/');
    path.strip_prefix(dir)?.strip_prefix('/')
}

pub(super) fn complete_volume_mounts(
    edit: &mut SpecEdit,
    annotations: &BTreeMap<String, String>,
    uid: Option<&PodUid>,
    node: &dyn NodeView,
) {
    let Some(count) = edit.mounts_mut().map(|m| m.len()) else { return };
    for index in 0..count {
        let mount = edit.mounts_mut().expect("counted above")[index].clone();
        let source = mount_field(&mount, "source");
        let Some(volume) = parse_volume_source(source, node) else { continue };
        let Some(hint_type) = annotations.get(&hint_key(volume.name, HintField::Type)) else { continue };
        // Match by pod UID, not by name alone: a mount of another pod's volume with the same name is not ours.
        let Some(uid) = uid else {
            edit.warn(format!("mount {source}: the pod UID is unknown, so it is not matched to a hint"));
            continue;
        };
        if volume.uid != uid.as_str() || !is_dns1123_label(volume.name) {
            continue;
        }
        let Ok(hint_type) = hint_type.parse::<HintType>() else { continue };
        let resolved =
            node.kubelet_root().join("pods").join(volume.uid).join("volumes").join(volume.plugin).join(volume.name);
        // runsc matches a mount to its hint by the exact source, which the sandbox got from the node: a mount of
        // any other directory of that name is not the hinted volume, and as a tmpfs it would be an empty one.
        let is_hinted_dir = matches!(node.volume_dirs(uid, volume.name).as_deref(), Ok([dir]) if dir.path == resolved);
        if !is_hinted_dir {
            continue;
        }
        // The same decision as the sandbox's hint, from the same node, so mount and hint agree whatever the
        // hint's type says now (the webhook's, a shim's, or this hook's from an earlier run on this spec). The
        // share does not change a mount's type; a force-shared value that is not a boolean was reported on the
        // sandbox; a directory that cannot be read lost its hint there, so its mounts stay binds.
        let on_node = if volume.plugin == EMPTY_DIR_PLUGIN {
            let lookup = |key: &str| annotations.get(key).map(String::as_str);
            let force_shared = force_shared(lookup, volume.name).unwrap_or(false);
            match node.inspect_empty_dir(&resolved) {
                Ok(state) => VolumeOnNode::EmptyDir { medium: state.medium, empty: state.empty, force_shared },
                Err(_) => VolumeOnNode::EmptyDir { medium: EmptyDirMedium::Disk, empty: false, force_shared },
            }
        } else {
            VolumeOnNode::Other
        };
        // The mount type never depends on the release: no need to ask runsc for it.
        let target = match decide_backing(hint_type, Share::Pod, on_node, || None) {
            Ok(backing) => backing.mount_type.as_str(),
            Err(e) => {
                edit.warn(format!("mount {source}: left as it is: {e}"));
                continue;
            }
        };
        let destination = mount_field(&mount, "destination").to_owned();
        let from = source.to_owned();
        if volume.root_is_alias {
            // The sandbox's hint source uses the resolved root; runsc compares the strings.
            let to = resolved.to_string_lossy().into_owned();
            edit.mounts_mut().expect("counted above")[index]["source"] = Value::String(to.clone());
            edit.changes.push(Change::MountSource { destination, from, to });
        }
        set_mount_type(edit, index, target);
    }
}
