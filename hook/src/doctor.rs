//! `doctor`: reads a node's runtime configuration and says what keeps mount hints from working. Pure checks
//! over parsed TOML; the shell reads the files.

use std::path::Path;

use toml::{Table, Value};

use crate::config::HookConfig;

pub const DEFAULT_CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
pub const DEFAULT_CRIO_CONFIG: &str = "/etc/crio/crio.conf";
pub const DEFAULT_CRIO_CONFIG_DIR: &str = "/etc/crio/crio.conf.d";

/// A hint annotation key every working configuration must let through to the runtime.
const PROBE_KEY: &str = "dev.gvisor.spec.mount.probe.type";
const GVISOR_SHIM: &str = "io.containerd.runsc.v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub message: String,
}

fn ok(message: String) -> Finding {
    Finding { ok: true, message }
}

fn missing(message: String) -> Finding {
    Finding { ok: false, message }
}

fn table<'a>(t: &'a Table, path: &[&str]) -> Option<&'a Table> {
    path.iter().try_fold(t, |t, key| t.get(*key)?.as_table())
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
}

/// containerd's `pod_annotations` patterns: `*` matches any run of characters.
fn glob_matches(pattern: &str, key: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == key,
        Some((head, tail)) => {
            key.starts_with(head) && (0..=key.len() - head.len()).any(|i| glob_matches(tail, &key[head.len() + i..]))
        }
    }
}

/// The containerd runtime handlers that run gVisor: by shim type, or named `runsc`.
pub fn check_containerd(config: &Table, runsc_toml: &dyn Fn(&str) -> Option<Table>, hook: &Path) -> Vec<Finding> {
    let runtimes = table(config, &["plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"])
        .or_else(|| table(config, &["plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"]));
    let handlers: Vec<(&String, &Table)> = runtimes
        .into_iter()
        .flatten()
        .filter_map(|(name, v)| Some((name, v.as_table()?)))
        .filter(|(name, t)| {
            t.get("runtime_type").and_then(Value::as_str) == Some(GVISOR_SHIM) || name.as_str() == "runsc"
        })
        .collect();
    if handlers.is_empty() {
        return vec![missing(format!("containerd: no runtime handler uses {GVISOR_SHIM} (or is named runsc)"))];
    }
    let mut findings = Vec::new();
    for (name, handler) in handlers {
        let patterns = strings(handler.get("pod_annotations"));
        if patterns.iter().any(|p| glob_matches(p, PROBE_KEY)) {
            findings.push(ok(format!("containerd handler {name:?} passes dev.gvisor.* pod annotations")));
        } else {
            findings.push(missing(format!(
                "containerd handler {name:?}: pod_annotations {patterns:?} does not pass dev.gvisor.* (add \"dev.gvisor.*\")"
            )));
        }
        let config_path =
            handler.get("options").and_then(Value::as_table).and_then(|o| o.get("ConfigPath")).and_then(Value::as_str);
        let binary = config_path
            .and_then(runsc_toml)
            .and_then(|t| t.get("binary_name").and_then(Value::as_str).map(str::to_owned));
        match binary {
            Some(b) if Path::new(&b) == hook => {
                findings.push(ok(format!("containerd handler {name:?} runs the hook ({b})")))
            }
            Some(b) => findings.push(missing(format!(
                "containerd handler {name:?}: the shim runs {b}, not the hook {} (set binary_name in {})",
                hook.display(),
                config_path.unwrap_or_default()
            ))),
            None => findings.push(missing(format!(
                "containerd handler {name:?}: no runsc.toml with binary_name = \"{}\" (options.ConfigPath {})",
                hook.display(),
                config_path.map_or("unset".to_owned(), |p| format!("{p:?} unreadable or without binary_name"))
            ))),
        }
    }
    findings
}

/// CRI-O runtime handlers (`[crio.runtime.runtimes.*]`, merged from crio.conf and crio.conf.d in order).
pub fn check_crio(configs: &[Table], hook: &Path) -> Vec<Finding> {
    let mut handlers: Table = Table::new();
    for config in configs {
        if let Some(runtimes) = table(config, &["crio", "runtime", "runtimes"]) {
            for (name, v) in runtimes {
                handlers.insert(name.clone(), v.clone());
            }
        }
    }
    let gvisor: Vec<(&String, &Table)> = handlers
        .iter()
        .filter_map(|(name, v)| Some((name, v.as_table()?)))
        .filter(|(name, t)| {
            let path = t.get("runtime_path").and_then(Value::as_str).unwrap_or_default();
            name.as_str() == "runsc" || path.ends_with("runsc") || Path::new(path) == hook
        })
        .collect();
    if gvisor.is_empty() {
        return vec![missing("CRI-O: no runsc runtime handler".to_owned())];
    }
    let mut findings = Vec::new();
    for (name, handler) in gvisor {
        let allowed = strings(handler.get("allowed_annotations"));
        if allowed.iter().any(|a| PROBE_KEY.starts_with(a)) {
            findings.push(ok(format!("CRI-O handler {name:?} allows dev.gvisor annotations")));
        } else {
            findings.push(missing(format!(
                "CRI-O handler {name:?}: allowed_annotations {allowed:?} does not allow \"dev.gvisor\""
            )));
        }
        match handler.get("runtime_path").and_then(Value::as_str) {
            Some(p) if Path::new(p) == hook => findings.push(ok(format!("CRI-O handler {name:?} runs the hook ({p})"))),
            other => findings.push(missing(format!(
                "CRI-O handler {name:?}: runtime_path is {other:?}, not the hook {}",
                hook.display()
            ))),
        }
    }
    findings
}

/// hook.json as the hook standing in for runsc reads it: the runtime it names must be a real runsc, neither
/// missing nor the hook itself (an absent hook.json is the default configuration). `is_executable` answers
/// for node paths.
pub fn check_hook_config(
    config: Result<HookConfig, String>,
    config_path: &Path,
    hook: &Path,
    is_executable: &dyn Fn(&Path) -> bool,
) -> Vec<Finding> {
    let config = match config {
        Ok(config) => config,
        Err(e) => return vec![missing(e)],
    };
    let runtime = config.runtime.unwrap_or_else(|| crate::config::DEFAULT_RUNTIME.into());
    if runtime == hook {
        vec![missing(format!("{}: runtime {} is the hook itself", config_path.display(), runtime.display()))]
    } else if !is_executable(&runtime) {
        vec![missing(format!("{}: runtime {} is not an executable file", config_path.display(), runtime.display()))]
    } else {
        vec![ok(format!("{}: the hook runs {}", config_path.display(), runtime.display()))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("dev.gvisor.*", PROBE_KEY));
        assert!(glob_matches("*", PROBE_KEY));
        assert!(glob_matches("dev.*.mount.*", PROBE_KEY));
        assert!(!glob_matches("dev.gvisor.spec.rootfs.*", PROBE_KEY));
        assert!(!glob_matches("io.kubernetes.*", PROBE_KEY));
    }
}
