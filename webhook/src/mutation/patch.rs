//! RFC 6902 operations that turn one annotation map into another and always apply to the object they were
//! computed from.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use serde_json::Value;

/// `original` is `None` when the object has no `metadata.annotations`; the patch then creates the map in one
/// operation (adding a key under a missing map would fail), and the whole `metadata` when the object has none
/// (`metadata_present` false). Keys are escaped by the pointer type (`/` -> `~1`, `~` -> `~0`). Operations
/// come sorted by key so the same input always yields the same bytes.
pub(crate) fn annotation_patch(
    metadata_present: bool,
    original: Option<&BTreeMap<String, String>>,
    desired: &BTreeMap<String, String>,
) -> Patch {
    let Some(original) = original else {
        if desired.is_empty() {
            return Patch(Vec::new());
        }
        let map = Value::Object(desired.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect());
        let (path, value) = if metadata_present {
            (PointerBuf::from_tokens(["metadata", "annotations"]), map)
        } else {
            (PointerBuf::from_tokens(["metadata"]), serde_json::json!({ "annotations": map }))
        };
        return Patch(vec![PatchOperation::Add(AddOperation { path, value })]);
    };
    let key_path = |key: &str| PointerBuf::from_tokens(["metadata", "annotations", key]);
    let removals = original
        .keys()
        .filter(|k| !desired.contains_key(*k))
        .map(|k| PatchOperation::Remove(RemoveOperation { path: key_path(k) }));
    let additions = desired
        .iter()
        .filter(|(k, v)| original.get(*k) != Some(v))
        .map(|(k, v)| PatchOperation::Add(AddOperation { path: key_path(k), value: Value::String(v.clone()) }));
    Patch(removals.chain(additions).collect())
}

/// The same patch for a pod embedded at `prefix` in a larger object (a workload's pod template), as JSON.
pub fn prefixed_patch_json(patch: &Patch, prefix: &PointerBuf) -> Value {
    let ops = patch
        .0
        .iter()
        .map(|op| {
            let mut op = serde_json::to_value(op).expect("a JSON Patch operation always serializes");
            if let Some(Value::String(path)) = op.get_mut("path") {
                *path = format!("{prefix}{path}");
            }
            op
        })
        .collect();
    Value::Array(ops)
}
