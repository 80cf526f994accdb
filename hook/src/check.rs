//! What an OCI hook can still do after runsc loaded the spec: say whether the hints it loaded were complete.
//! It cannot change anything; it makes a misconfigured node visible (e.g. the wrapper is not in front of runsc).

use std::collections::BTreeMap;

use mount_hints::{parse_hint_key, parse_options, HintField, HintType, Share};
use serde_json::Value;

/// Problems with the hints of a loaded spec; empty when every hint is complete and valid.
pub fn hint_problems(spec: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let annotations = spec.get("annotations").and_then(Value::as_object);
    let mut by_name: BTreeMap<&str, BTreeMap<HintField, &str>> = BTreeMap::new();
    for (key, value) in annotations.into_iter().flatten() {
        let value = value.as_str().unwrap_or_default();
        match parse_hint_key(key) {
            Ok(Some(k)) => {
                by_name.entry(k.name).or_default().insert(k.field, value);
            }
            Ok(None) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    let mut sources: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, fields) in &by_name {
        match fields.get(&HintField::Source) {
            None => problems.push(format!("hint {name:?} has no source: the node completion did not run")),
            Some(source) if !source.starts_with('/') => {
                problems.push(format!("hint {name:?}: source {source:?} is not absolute"))
            }
            Some(source) => {
                if let Some(other) = sources.insert(source, name) {
                    problems.push(format!("hints {other:?} and {name:?} share the source {source}"));
                }
            }
        }
        match fields.get(&HintField::Type).map(|t| t.parse::<HintType>()) {
            None => problems.push(format!("hint {name:?} has no type")),
            Some(Err(e)) => problems.push(format!("hint {name:?}: {e}")),
            Some(Ok(_)) => {}
        }
        match fields.get(&HintField::Share).map(|s| s.parse::<Share>()) {
            None => problems.push(format!("hint {name:?} has no share")),
            Some(Err(e)) => problems.push(format!("hint {name:?}: {e}")),
            Some(Ok(_)) => {}
        }
        if let Some(Err(e)) = fields.get(&HintField::Options).map(|o| parse_options(o, true)) {
            problems.push(format!("hint {name:?}: {e}"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_incomplete_and_invalid_hints() {
        let complete = json!({"annotations": {
            "dev.gvisor.spec.mount.a.source": "/k/pods/u/volumes/kubernetes.io~empty-dir/a",
            "dev.gvisor.spec.mount.a.type": "tmpfs", "dev.gvisor.spec.mount.a.share": "pod"}});
        assert!(hint_problems(&complete).is_empty());
        let broken = json!({"annotations": {
            "dev.gvisor.spec.mount.a.type": "tmpfs", "dev.gvisor.spec.mount.a.share": "pod",
            "dev.gvisor.spec.mount.b.source": "/x", "dev.gvisor.spec.mount.b.type": "Tmpfs",
            "dev.gvisor.spec.mount.c.source": "/x", "dev.gvisor.spec.mount.c.type": "bind",
            "dev.gvisor.spec.mount.c.share": "pod", "dev.gvisor.spec.mount.d.e.type": "bind"}});
        let problems = hint_problems(&broken).join("\n");
        for want in [
            "\"a\" has no source",
            "invalid type `Tmpfs`",
            "\"b\" has no share",
            "share the source /x",
            "exactly <name>.<field>",
        ] {
            assert!(problems.contains(want), "missing {want}: {problems}");
        }
    }
}
