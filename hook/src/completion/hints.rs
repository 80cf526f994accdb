//! Hints on the spec runsc reads them from: validate, resolve the source, decide tmpfs or bind.

use std::collections::{BTreeMap, BTreeSet};

use mount_hints::{
    check_field, decide_backing, force_shared, group_hints, hint_key, is_dns1123_label, BackingChange, HintField,
    HintType, RawHint, RunscRelease, Share, VolumeOnNode, DEV_SHM_HINT_NAME,
};

use super::SpecEdit;
use crate::identity::PodUid;
use crate::node::NodeView;

pub(super) fn complete_hints(
    edit: &mut SpecEdit,
    annotations: &BTreeMap<String, String>,
    uid: Option<&PodUid>,
    node: &dyn NodeView,
) {
    let mut groups = group_hints(annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (key, e) in &groups.malformed {
        edit.remove_annotation(key);
        edit.drop_with(format!("removed {key}: {e}"));
    }
    // The /dev/shm hint is derived from the spec's own mounts by the shm step, never taken from annotations.
    groups.hints.remove(DEV_SHM_HINT_NAME);
    for (name, hint) in &groups.hints {
        if let Err(reason) = complete_one(edit, annotations, name, hint, uid, node) {
            edit.remove_hint(name);
            edit.drop_with(format!("hint for volume {name:?} removed: {reason}"));
        }
    }
}

fn complete_one(
    edit: &mut SpecEdit,
    annotations: &BTreeMap<String, String>,
    name: &str,
    hint: &RawHint<'_>,
    uid: Option<&PodUid>,
    node: &dyn NodeView,
) -> Result<(), String> {
    // The name becomes a path component: nothing but a DNS-1123 label gets that far.
    if !is_dns1123_label(name) {
        return Err("the name is not a DNS-1123 label".into());
    }
    // The release is asked only when a decision depends on it: detecting it runs `runsc --version`.
    let oldest = || node.runsc_release().unwrap_or(RunscRelease::OLDEST_SUPPORTED);
    // Optional fields the runsc in use would refuse go; the hint itself stays.
    for field in [HintField::Options, HintField::Directfs] {
        if let Some(Err(e)) = hint.get(field).map(|value| check_field(field, value, oldest())) {
            edit.remove_annotation(&hint_key(name, field));
            edit.warn(format!("{field} of volume {name:?} removed: {e}"));
        }
    }
    // A wrong value is reported before anything is looked up on the node: it is the author's mistake.
    for field in [HintField::Type, HintField::Share] {
        if let Some(value) = hint.get(field) {
            // Type and share values do not depend on the release.
            check_field(field, value, RunscRelease::OLDEST_SUPPORTED).map_err(|e| e.to_string())?;
        }
    }
    let uid = uid.ok_or("the pod UID is not in the spec's annotations")?;
    let dirs = node.volume_dirs(uid, name).map_err(|e| format!("cannot list the pod's volumes: {e}"))?;
    let dir = match dirs.as_slice() {
        [one] => one,
        [] => return Err(format!("no directory pods/{uid}/volumes/*/{name} under the kubelet root")),
        many => {
            let plugins: BTreeSet<&str> = many.iter().map(|d| d.plugin.as_str()).collect();
            return Err(format!("{} volume directories match ({plugins:?})", many.len()));
        }
    };
    // Whatever the annotations said about the source (the pod author cannot be trusted with a host path),
    // it is the kubelet's directory for this pod and name.
    let source = dir.path.to_string_lossy().into_owned();
    let mut completed = hint.clone();
    completed.insert(HintField::Source, &source);
    completed.check_complete().map_err(|e| format!("it {e}"))?;
    let hint_type: HintType = completed.get(HintField::Type).expect("complete").parse().expect("checked");
    let share: Share = completed.get(HintField::Share).expect("complete").parse().expect("checked");

    let volume = if dir.is_empty_dir() {
        let lookup = |key: &str| annotations.get(key).map(String::as_str);
        let force_shared = force_shared(lookup, name).unwrap_or_else(|e| {
            edit.warn(format!("emptyDir {name:?}: {e}"));
            false
        });
        // The medium is the node's to tell: a shim before this hook may have rewritten the hint's type.
        let state = node.inspect_empty_dir(&dir.path).map_err(|e| format!("cannot read {source}: {e}"))?;
        VolumeOnNode::EmptyDir { medium: state.medium, empty: state.empty, force_shared }
    } else {
        VolumeOnNode::Other
    };
    let backing = decide_backing(hint_type, share, volume, || node.runsc_release()).map_err(|e| e.to_string())?;
    if backing.changed == Some(BackingChange::NotEmpty) {
        edit.warn(format!("emptyDir {name:?} {}; served as a shared bind", BackingChange::NotEmpty));
    }
    edit.set_annotation(&hint_key(name, HintField::Source), &source);
    edit.set_annotation(&hint_key(name, HintField::Type), backing.hint_type.as_str());
    edit.set_annotation(&hint_key(name, HintField::Share), backing.share.as_str());
    Ok(())
}
