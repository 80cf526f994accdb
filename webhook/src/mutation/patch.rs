//! RFC 6902 operations that turn one annotation map into another and always apply to the object they were
//! computed from.

use std::borrow::Cow;
use std::collections::BTreeMap;

use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use serde_json::Value;

use crate::pod::FactText;

/// `original` is `None` when the object has no `metadata.annotations`; the patch then creates the map in one
/// operation (adding a key under a missing map would fail), and the whole `metadata` when the object has none
/// (`metadata_present` false). Keys are escaped by the pointer type (`/` -> `~1`, `~` -> `~0`). Operations
/// come sorted by key so the same input always yields the same bytes.
pub(crate) fn annotation_patch<S: FactText>(
    metadata_present: bool,
    original: Option<&BTreeMap<S, S>>,
    desired: &BTreeMap<Cow<'_, str>, Cow<'_, str>>,
) -> Patch {
    let Some(original) = original else {
        if desired.is_empty() {
            return Patch(Vec::new());
        }
        let map = Value::Object(desired.iter().map(|(k, v)| ((**k).to_owned(), Value::from(&**v))).collect());
        let (path, value) = if metadata_present {
            (PointerBuf::from_tokens(["metadata", "annotations"]), map)
        } else {
            (PointerBuf::from_tokens(["metadata"]), serde_json::json!({ "annotations": map }))
        };
        return Patch(vec![PatchOperation::Add(AddOperation { path, value })]);
    };
    let removals = original
        .keys()
        .filter(|k| !desired.contains_key(&***k))
        .map(|k| PatchOperation::Remove(RemoveOperation { path: annotation_path(k) }));
    let additions = desired
        .iter()
        .filter(|(k, v)| original.get(&***k).map(|o| &**o) != Some(&***v))
        .map(|(k, v)| PatchOperation::Add(AddOperation { path: annotation_path(k), value: Value::from(&**v) }));
    Patch(removals.chain(additions).collect())
}

/// `/metadata/annotations/<key>`, built in one allocation of its exact size.
fn annotation_path(key: &str) -> PointerBuf {
    const PREFIX: &str = "/metadata/annotations/";
    let token = Token::new(key);
    let mut path = String::with_capacity(PREFIX.len() + token.encoded().len());
    path.push_str(PREFIX);
    path.push_str(token.encoded());
    PointerBuf::parse(path).expect("an encoded token under a fixed prefix is a valid pointer")
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
