//! What an OCI hook can still do after runsc loaded the spec: say whether the hints it loaded were complete.
//! It cannot change anything; it makes a misconfigured node visible (e.g. the wrapper is not in front of runsc).

use std::collections::BTreeMap;

use mount_hints::{check_field, group_hints, HintField, RunscRelease};
use serde_json::Value;

/// Problems with the hints of a loaded spec; empty when every hint is complete and valid. The check cannot
/// know which runsc loaded the spec, so field values are judged by the newest rules known here.
pub fn hint_problems(spec: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let annotations = spec.get("annotations").and_then(Value::as_object);
    let strings = annotations.into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()));
    let groups = group_hints(strings);
    problems.extend(groups.malformed.iter().map(|(_, e)| e.to_string()));
    let mut sources: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, hint) in &groups.hints {
        if let Err(e) = hint.check_complete() {
            let why = if e.0.contains(&HintField::Source) { ": the node completion did not run" } else { "" };
            problems.push(format!("hint {name:?} {e}{why}"));
        }
        for (field, value) in hint.fields() {
            if let Err(e) = check_field(field, value, RunscRelease::DIRECTFS) {
                problems.push(format!("hint {name:?}: {e}"));
            }
        }
        if let Some(source) = hint.get(HintField::Source) {
            if let Some(other) = sources.insert(source, name) {
                problems.push(format!("hints {other:?} and {name:?} share the source {source}"));
            }
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
            "dev.gvisor.spec.mount.a.type": "tmpfs", "dev.gvisor.spec.mount.a.share": "pod",
            "dev.gvisor.spec.mount.a.directfs": "off"}});
        assert!(hint_problems(&complete).is_empty(), "{:?}", hint_problems(&complete));
        let broken = json!({"annotations": {
            "dev.gvisor.spec.mount.a.type": "tmpfs", "dev.gvisor.spec.mount.a.share": "pod",
            "dev.gvisor.spec.mount.b.source": "/x", "dev.gvisor.spec.mount.b.type": "Tmpfs",
            "dev.gvisor.spec.mount.c.source": "/x", "dev.gvisor.spec.mount.c.type": "bind",
            "dev.gvisor.spec.mount.c.share": "pod", "dev.gvisor.spec.mount.d.e.type": "bind",
            "dev.gvisor.spec.mount.d.source": "relative", "dev.gvisor.spec.mount.d.type": "bind",
            "dev.gvisor.spec.mount.d.share": "pod", "dev.gvisor.spec.mount.e.source": "/e",
            "dev.gvisor.spec.mount.e.type": "bind", "dev.gvisor.spec.mount.e.share": "pod",
            "dev.gvisor.spec.mount.e.directfs": "on"}});
        let problems = hint_problems(&broken).join("\n");
        for want in [
            "\"a\" has no source",
            "invalid type `Tmpfs`",
            "\"b\" has no share",
            "\"d\": source `relative` is not an absolute path",
            "\"e\": invalid directfs `on`",
            "share the source /x",
            "exactly <name>.<field>",
        ] {
            assert!(problems.contains(want), "missing {want}: {problems}");
        }
    }
}
