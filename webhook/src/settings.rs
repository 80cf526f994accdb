//! What an operator can configure about the mutation. The same settings serve `preview` and `serve`, from
//! flags or a YAML/JSON file, so a preview shows exactly what the server would do.

use std::collections::BTreeSet;
use std::path::Path;

use mount_hints::RunscRelease;
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
    /// The oldest runsc release on any gVisor node, as `YYYYMMDD` (or `release-YYYYMMDD.N`). Every
    /// release-dependent rule derives from it: valued options such as `size=`, the `directfs` field. Unset:
    /// the strictest supported runsc (release-20221219), or release-20240501 when `memorySizeOption` is on.
    #[serde(with = "release_setting")]
    pub min_runsc_release: Option<RunscRelease>,
    /// Emit `size=<bytes>` from a Memory emptyDir's `sizeLimit`. Needs every node on runsc release-20240501 or
    /// newer: on its own it implies that `minRunscRelease`; with an older `minRunscRelease` it is an error.
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
            min_runsc_release: None,
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
        let settings: MutationSettings = serde_yaml_ng::from_str(&text).map_err(|e| Error::yaml(path, &e))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Settings that contradict each other are refused rather than resolved silently.
    pub fn validate(&self) -> Result<(), SettingsError> {
        match self.min_runsc_release {
            Some(release) if self.memory_size_option && !release.supports_valued_options() => {
                Err(SettingsError::SizeOptionNeedsNewerRunsc { release })
            }
            _ => Ok(()),
        }
    }

    /// The oldest runsc every rule must satisfy.
    pub fn oldest_runsc(&self) -> RunscRelease {
        match (self.min_runsc_release, self.memory_size_option) {
            (Some(release), _) => release,
            (None, true) => RunscRelease::VALUED_OPTIONS,
            (None, false) => RunscRelease::OLDEST_SUPPORTED,
        }
    }

    /// Whether a Memory emptyDir's `sizeLimit` becomes `size=<bytes>`.
    pub fn emits_size_option(&self) -> bool {
        self.memory_size_option && self.oldest_runsc().supports_valued_options()
    }

    pub fn is_denied(&self, key: &str) -> bool {
        self.deny_annotations.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == pattern,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("memorySizeOption needs runsc release-20240501 or newer on every node, but minRunscRelease is {release}")]
    SizeOptionNeedsNewerRunsc { release: RunscRelease },
}

/// `minRunscRelease` in a settings file: a `YYYYMMDD` number or any spelling [`RunscRelease`] parses.
mod release_setting {
    use mount_hints::RunscRelease;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(release: &Option<RunscRelease>, s: S) -> Result<S::Ok, S::Error> {
        match release {
            Some(release) => s.serialize_u32(release.date()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RunscRelease>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Spelling {
            Date(u32),
            Text(String),
        }
        Option::<Spelling>::deserialize(d)?
            .map(|spelling| match spelling {
                Spelling::Date(date) => RunscRelease::from_date(date),
                Spelling::Text(text) => text.parse(),
            })
            .transpose()
            .map_err(de::Error::custom)
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
    fn min_runsc_release_decides_and_memory_size_option_keeps_working() {
        let default = MutationSettings::default();
        assert_eq!(default.oldest_runsc(), RunscRelease::OLDEST_SUPPORTED);
        assert!(!default.emits_size_option());

        let legacy: MutationSettings = serde_yaml_ng::from_str("memorySizeOption: true\n").unwrap();
        assert_eq!(legacy.oldest_runsc(), RunscRelease::VALUED_OPTIONS);
        assert!(legacy.emits_size_option() && legacy.validate().is_ok());

        let newest: MutationSettings = serde_yaml_ng::from_str("minRunscRelease: 20260520\n").unwrap();
        assert!(newest.oldest_runsc().supports_directfs());
        assert!(!newest.emits_size_option(), "size= stays opt-in");
        let text: MutationSettings = serde_yaml_ng::from_str("minRunscRelease: release-20240729.0\n").unwrap();
        assert_eq!(text.oldest_runsc().date(), 20240729);

        let contradiction: MutationSettings =
            serde_yaml_ng::from_str("minRunscRelease: 20221219\nmemorySizeOption: true\n").unwrap();
        assert!(contradiction.validate().unwrap_err().to_string().contains("release-20221219"));
        assert!(serde_yaml_ng::from_str::<MutationSettings>("minRunscRelease: 2026\n").is_err());
        assert!(serde_yaml_ng::from_str::<MutationSettings>("minRunscRelease: latest\n").is_err());
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
