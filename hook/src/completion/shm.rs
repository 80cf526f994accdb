//! `/dev/shm`: the runtimes bind-mount a per-pod host directory there, but glibc's `shm_open` only uses a
//! tmpfs, so inside the sandbox it must be a tmpfs, and one shared by the pod's containers (gVisor #6943).

use mount_hints::{hint_key, HintField, DEV_SHM_HINT_NAME};
use serde_json::Value;

use super::mounts::is_pod_volume;
use super::{mount_field, set_mount_type, Change, SpecEdit};
use crate::identity::ContainerKind;
use crate::node::NodeView;

const SHM: &str = "/dev/shm";

/// The pod's shm mount: a bind from a host path, or one this hook already turned into a tmpfs (its source is
/// still that absolute path, while a runtime's own tmpfs /dev/shm has the source `shm`). A bind without an
/// absolute source names no host directory: runsc could not share it, and once it is a tmpfs nothing would
/// tell it apart from the runtime's own. A pod volume mounted at /dev/shm (an emptyDir, often) is not the
/// runtime's shm: the volume rules decide its type.
fn is_pod_shm(mount: &Value, node: &dyn NodeView) -> bool {
    let source = mount_field(mount, "source");
    mount_field(mount, "destination") == SHM && source.starts_with('/') && !is_pod_volume(source, node)
}

pub(super) fn complete_dev_shm(edit: &mut SpecEdit, kind: ContainerKind, node: &dyn NodeView) {
    let found = edit.mounts_mut().and_then(|mounts| {
        let index = mounts.iter().position(|m| is_pod_shm(m, node))?;
        Some((index, mount_field(&mounts[index], "source").to_owned()))
    });
    // No pod shm, or hostIPC (the pod shares the host's /dev/shm, which a sandbox tmpfs would hide): no hint,
    // whatever the annotations claimed.
    let Some((index, source)) = found.filter(|(_, source)| source != SHM) else {
        if kind.carries_hints() {
            edit.remove_hint(DEV_SHM_HINT_NAME);
        }
        return;
    };
    set_mount_type(edit, index, "tmpfs");
    // The runtime's own tmpfs /dev/shm next to it would shadow or duplicate the shared one.
    let mounts = edit.mounts_mut().expect("found above");
    let mut i = 0;
    let mut removed = Vec::new();
    mounts.retain(|m| {
        let keep = i == index || !(mount_field(m, "destination") == SHM && mount_field(m, "type") == "tmpfs");
        if !keep {
            removed.push(Change::RemoveMount { destination: SHM.to_owned(), mount_type: "tmpfs".to_owned() });
        }
        i += 1;
        keep
    });
    edit.changes.extend(removed);
    if kind.carries_hints() {
        edit.set_annotation(&hint_key(DEV_SHM_HINT_NAME, HintField::Source), &source);
        edit.set_annotation(&hint_key(DEV_SHM_HINT_NAME, HintField::Type), "tmpfs");
        edit.set_annotation(&hint_key(DEV_SHM_HINT_NAME, HintField::Share), "pod");
        // Broad master options: each container's own mount options then restrict its view.
        edit.set_annotation(&hint_key(DEV_SHM_HINT_NAME, HintField::Options), "rw");
    }
}
