//! The node completion: a pure function from an OCI spec (as JSON, so fields this code does not model survive)
//! and a [`NodeView`] to the completed spec, the list of changes and the warnings.
//!
//! - On the spec runsc reads hints from (sandbox or lone root container): every hint is validated, gets its
//!   `source` from the kubelet tree, and emptyDirs get the tmpfs/bind decision; hints that cannot be completed
//!   are removed whole, because one bad hint stops the whole pod on the strict 2022 runsc.
//! - On specs with the pod's volume mounts (application or root container): mount types follow the hints.
//! - On both: `/dev/shm` becomes a pod-shared tmpfs.

mod hints;
mod mounts;
mod shm;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::identity::{ContainerKind, PodUid};
use crate::node::NodeView;
use crate::Error;

/// One edit the completion made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    SetAnnotation { key: String, value: String },
    RemoveAnnotation { key: String },
    MountType { destination: String, from: String, to: String },
    MountSource { destination: String, from: String, to: String },
    RemoveMount { destination: String, mount_type: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::SetAnnotation { key, value } => write!(f, "annotation {key} = {value:?}"),
            Change::RemoveAnnotation { key } => write!(f, "annotation {key} removed"),
            Change::MountType { destination, from, to } => write!(f, "mount {destination}: type {from} -> {to}"),
            Change::MountSource { destination, from, to } => write!(f, "mount {destination}: source {from} -> {to}"),
            Change::RemoveMount { destination, mount_type } => {
                write!(f, "mount {destination} ({mount_type}) removed as a duplicate")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub spec: Value,
    pub kind: ContainerKind,
    pub changes: Vec<Change>,
    pub warnings: Vec<String>,
}

/// Completes `spec`. With `strict`, anything that had to be dropped is an error instead of a warning.
pub fn complete(spec: &Value, node: &dyn NodeView, strict: bool) -> Result<Completion, Error> {
    let Value::Object(_) = spec else { return Err(Error::Spec("config.json is not a JSON object".into())) };
    let mut edit = SpecEdit::new(spec.clone())?;
    let annotations = edit.annotations.clone();
    let kind = ContainerKind::of(&annotations);
    let uid = PodUid::of(&annotations);
    if kind.carries_hints() {
        hints::complete_hints(&mut edit, &annotations, uid.as_ref(), node);
    }
    if kind.has_volume_mounts() {
        mounts::complete_volume_mounts(&mut edit, &annotations, uid.as_ref(), node);
    }
    shm::complete_dev_shm(&mut edit, kind, node);
    if strict && !edit.dropped.is_empty() {
        return Err(Error::Strict(edit.dropped.join("; ")));
    }
    let SpecEdit { spec, changes, warnings, .. } = edit;
    Ok(Completion { spec, kind, changes, warnings })
}

/// The spec being edited, with every edit recorded.
struct SpecEdit {
    spec: Value,
    /// String annotations as they are now (non-string values are left alone).
    annotations: BTreeMap<String, String>,
    changes: Vec<Change>,
    warnings: Vec<String>,
    /// What was dropped because it could not be completed: fatal under `--strict`.
    dropped: Vec<String>,
}

impl SpecEdit {
    fn new(spec: Value) -> Result<SpecEdit, Error> {
        let annotations = match spec.get("annotations") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(map)) => {
                map.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect()
            }
            Some(_) => return Err(Error::Spec("`annotations` is not an object".into())),
        };
        if spec.get("mounts").is_some_and(|m| !m.is_array() && !m.is_null()) {
            return Err(Error::Spec("`mounts` is not an array".into()));
        }
        Ok(SpecEdit { spec, annotations, changes: Vec::new(), warnings: Vec::new(), dropped: Vec::new() })
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    fn set_annotation(&mut self, key: &str, value: &str) {
        if self.annotation(key) == Some(value) {
            return;
        }
        self.annotations.insert(key.to_owned(), value.to_owned());
        let map = annotations_mut(&mut self.spec);
        map.insert(key.to_owned(), Value::String(value.to_owned()));
        self.changes.push(Change::SetAnnotation { key: key.to_owned(), value: value.to_owned() });
    }

    fn remove_annotation(&mut self, key: &str) {
        if self.annotations.remove(key).is_some() {
            annotations_mut(&mut self.spec).shift_remove(key);
            self.changes.push(Change::RemoveAnnotation { key: key.to_owned() });
        }
    }

    fn remove_hint(&mut self, name: &str) {
        for field in mount_hints::HintField::ALL {
            self.remove_annotation(&mount_hints::hint_key(name, field));
        }
    }

    fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }

    /// Something that runsc would have needed was dropped: a warning, and a failure under `--strict`.
    fn drop_with(&mut self, message: String) {
        self.dropped.push(message.clone());
        self.warnings.push(message);
    }

    fn mounts_mut(&mut self) -> Option<&mut Vec<Value>> {
        self.spec.get_mut("mounts").and_then(Value::as_array_mut)
    }
}

fn annotations_mut(spec: &mut Value) -> &mut Map<String, Value> {
    let object = spec.as_object_mut().expect("checked to be an object");
    let entry = object.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("just made an object")
}

/// A mount entry's fields, read leniently (a spec may omit `type` or `options`).
fn mount_field<'a>(mount: &'a Value, field: &str) -> &'a str {
    mount.get(field).and_then(Value::as_str).unwrap_or_default()
}

fn mount_options(mount: &Value) -> Vec<&str> {
    mount.get("options").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
}

/// Turns a mount into `to`, recording the change. A tmpfs mount must not carry `bind`/`rbind` options.
fn set_mount_type(edit: &mut SpecEdit, index: usize, to: &str) {
    let Some(mount) = edit.mounts_mut().and_then(|m| m.get_mut(index)) else { return };
    let from = mount_field(mount, "type").to_owned();
    let had_bind_options = mount_options(mount).iter().any(|o| matches!(*o, "bind" | "rbind"));
    if from == to && !(to == "tmpfs" && had_bind_options) {
        return;
    }
    let destination = mount_field(mount, "destination").to_owned();
    mount["type"] = Value::String(to.to_owned());
    if to == "tmpfs" {
        if let Some(options) = mount.get_mut("options").and_then(Value::as_array_mut) {
            options.retain(|o| !matches!(o.as_str(), Some("bind" | "rbind")));
        }
    }
    edit.changes.push(Change::MountType { destination, from, to: to.to_owned() });
}
