//! What an operator can configure about the mutation. The same settings serve `preview` and `serve`, from
//! flags or a YAML/JSON file, so a preview shows exactly what the server would do.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MutationSettings {
    /// Pods whose `spec.runtimeClassName` is one of these run under gVisor.
    pub runtime_class_names: BTreeSet<String>,
    /// RuntimeClasses whose `handler` is one of these also count (learned from a RuntimeClass watch when the
    /// server runs in a cluster).
    pub runtime_handlers: BTreeSet<String>,
    pub share_policy: SharePolicy,
    /// Emit `size=<bytes>` from a Memory emptyDir's `sizeLimit`, and accept valued options in author hints.
    /// Only for clusters where every node runs runsc release-20240501 or newer: older runsc refuses the pod.
    pub memory_size_option: bool,
    /// Annotation keys removed from every gVisor pod: exact keys, or prefixes written with a trailing `*`.
    pub deny_annotations: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SharePolicy {
    /// `pod` when more than one container mounts the volume, `container` when exactly one does.
    #[default]
    Count,
    /// Always `pod`: a container added later (an injected sidecar, `kubectl debug`) still sees the same data.
    AlwaysPod,
}

impl Default for MutationSettings {
    fn default() -> Self {
        MutationSettings {
            runtime_class_names: BTreeSet::from(["gvisor".to_owned()]),
            runtime_handlers: BTreeSet::from(["runsc".to_owned()]),
            share_policy: SharePolicy::Count,
            memory_size_option: false,
            deny_annotations: vec!["dev.gvisor.internal.*".to_owned()],
        }
    }
}

impl MutationSettings {
    /// Reads a settings file (YAML or JSON); absent keys keep their defaults, unknown keys are an error so a
    /// typo does not silently change nothing.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.into(), source })?;
        serde_yaml_ng::from_str(&text).map_err(|e| Error::yaml(path, &e))
    }

    pub fn is_denied(&self, key: &str) -> bool {
        self.deny_annotations.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == pattern,
        })
    }
}

/// Which pods are gVisor pods. Built by the shell from the settings and, in a cluster, the RuntimeClasses
/// whose handler is configured; the mutation only asks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GvisorScope {
    runtime_classes: BTreeSet<String>,
    every_pod: bool,
}

impl GvisorScope {
    pub fn new(runtime_classes: impl IntoIterator<Item = String>) -> Self {
        GvisorScope { runtime_classes: runtime_classes.into_iter().collect(), every_pod: false }
    }

    /// Every pod is in scope (preview of manifests that do not name a runtime class).
    pub fn every_pod() -> Self {
        GvisorScope { runtime_classes: BTreeSet::new(), every_pod: true }
    }

    pub fn from_settings(settings: &MutationSettings) -> Self {
        GvisorScope::new(settings.runtime_class_names.iter().cloned())
    }

    pub fn contains(&self, runtime_class_name: Option<&str>) -> bool {
        self.every_pod || runtime_class_name.is_some_and(|n| self.runtime_classes.contains(n))
    }

    pub fn runtime_classes(&self) -> &BTreeSet<String> {
        &self.runtime_classes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_patterns() {
        let s = MutationSettings {
            deny_annotations: vec!["dev.gvisor.internal.*".into(), "dev.gvisor.flag.debug".into()],
            ..Default::default()
        };
        assert!(s.is_denied("dev.gvisor.internal.x"));
        assert!(s.is_denied("dev.gvisor.flag.debug"));
        assert!(!s.is_denied("dev.gvisor.flag.debug-log"));
        assert!(!s.is_denied("dev.gvisor.spec.mount.a.type"));
    }

    #[test]
    fn settings_file_rejects_typos() {
        let ok: MutationSettings = serde_yaml_ng::from_str("sharePolicy: always-pod\n").unwrap();
        assert_eq!(ok.share_policy, SharePolicy::AlwaysPod);
        assert_eq!(ok.runtime_class_names, MutationSettings::default().runtime_class_names);
        assert!(serde_yaml_ng::from_str::<MutationSettings>("sharepolicy: pod\n").is_err());
    }

    #[test]
    fn scope() {
        let scope = GvisorScope::from_settings(&MutationSettings::default());
        assert!(scope.contains(Some("gvisor")));
        assert!(!scope.contains(Some("runc")));
        assert!(!scope.contains(None));
        assert!(GvisorScope::every_pod().contains(None));
    }
}
