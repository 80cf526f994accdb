//! Hints on the spec runsc reads them from: validate, resolve the source, decide tmpfs or bind.

use std::collections::{BTreeMap, BTreeSet};

use mount_hints::{
    force_shared_key, hint_key, is_dns1123_label, parse_hint_key, parse_options, HintField, HintType, Share,
    DEV_SHM_HINT_NAME,
};

use super::SpecEdit;
use crate::identity::PodUid;
use crate::node::NodeView;

/// The hint fields found for one name, by field, with their raw values.
type FieldValues = BTreeMap<HintField, String>;

pub(super) fn complete_hints(
    edit: &mut SpecEdit,
    annotations: &BTreeMap<String, String>,
    uid: Option<&PodUid>,
    node: &dyn NodeView,
) {
    let mut by_name: BTreeMap<&str, FieldValues> = BTreeMap::new();
    for (key, value) in annotations {
        match parse_hint_key(key) {
            Ok(None) => {}
            Ok(Some(k)) => {
                by_name.entry(k.name).or_default().insert(k.field, value.clone());
            }
            Err(e) => {
                edit.remove_annotation(key);
                edit.drop_with(format!("removed {key}: {e}"));
            }
        }
    }
    // The /dev/shm hint is derived from the spec's own mounts by the shm step, never taken from annotations.
    by_name.remove(DEV_SHM_HINT_NAME);
    for (name, fields) in by_name {
        if let Err(reason) = complete_one(edit, annotations, name, &fields, uid, node) {
            edit.remove_hint(name);
            edit.drop_with(format!("hint for volume {name:?} removed: {reason}"));
        }
    }
}

fn complete_one(
    edit: &mut SpecEdit,
    annotations: &BTreeMap<String, String>,
    name: &str,
    fields: &FieldValues,
    uid: Option<&PodUid>,
    node: &dyn NodeView,
) -> Result<(), String> {
    // The name becomes a path component: nothing but a DNS-1123 label gets that far.
    if !is_dns1123_label(name) {
        return Err("the name is not a DNS-1123 label".into());
    }
    let field = |f: HintField| fields.get(&f).map(String::as_str);
    let hint_type: HintType =
        field(HintField::Type).ok_or("it has no type")?.parse().map_err(|e: mount_hints::ValueError| e.to_string())?;
    let share: Share = field(HintField::Share)
        .ok_or("it has no share")?
        .parse()
        .map_err(|e: mount_hints::ValueError| e.to_string())?;
    let release = || node.runsc_release();
    if let Some(options) = field(HintField::Options) {
        let allow_size = release().is_some_and(|r| r.supports_valued_options());
        if let Err(e) = parse_options(options, allow_size) {
            edit.remove_annotation(&hint_key(name, HintField::Options));
            edit.warn(format!("options of volume {name:?} removed: {e}"));
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

    let (hint_type, share) = if dir.is_empty_dir() {
        let force_shared = annotations.get(&force_shared_key(name)).is_some_and(|v| v == "true");
        let empty = node.is_empty_for_tmpfs(&dir.path).map_err(|e| format!("cannot read {source}: {e}"))?;
        match hint_type {
            _ if force_shared => (HintType::Bind, Share::Shared),
            _ if !empty => {
                edit.warn(format!("emptyDir {name:?} already holds files on the host; served as a shared bind"));
                (HintType::Bind, Share::Shared)
            }
            // Memory medium: the sandbox tmpfs is memory-backed and works on every runsc.
            HintType::Tmpfs => (HintType::Tmpfs, share),
            // Disk medium: a tmpfs over the bind mount is disk-backed through a filestore file, which only
            // newer runsc can do; older ones fail the container, so they keep serving it through the gofer.
            HintType::Bind if release().is_some_and(|r| r.supports_disk_backed_tmpfs()) => (HintType::Tmpfs, share),
            HintType::Bind => (HintType::Bind, Share::Shared),
        }
    } else {
        (hint_type, share)
    };
    edit.set_annotation(&hint_key(name, HintField::Source), &source);
    edit.set_annotation(&hint_key(name, HintField::Type), hint_type.as_str());
    edit.set_annotation(&hint_key(name, HintField::Share), share.as_str());
    Ok(())
}
