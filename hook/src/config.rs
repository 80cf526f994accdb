//! The hook's settings and where each comes from: a flag wins over `hook.json`, `hook.json` over the defaults
//! below. The defaults are the one source for the CLI's `default_value`s too.
//!
//! `hook.json` exists so the hook can stand in for runsc with no arguments of its own (containerd's gVisor
//! shim `binary_name`, CRI-O's `runtime_path`): everything a flag can say, the file can say.

use std::io;
use std::path::{Path, PathBuf};

use mount_hints::{ReleaseError, RunscRelease};
use serde::{Deserialize, Serialize};

use crate::logging::LogFormat;

/// Names another `hook.json`; when set, the file must exist.
pub const CONFIG_ENV: &str = "MOUNT_HINTS_HOOK_CONFIG";
pub const DEFAULT_CONFIG: &str = "/etc/mount-hints/hook.json";
pub const DEFAULT_RUNTIME: &str = "/usr/bin/runsc";
pub const DEFAULT_KUBELET_ROOT: &str = "/var/lib/kubelet";
/// Where the installer puts the hook on a node, and where `doctor` expects it.
pub const HOOK_PATH: &str = "/usr/local/bin/mount-hints-hook";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid hook configuration: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: runscRelease: {source}")]
    Release {
        path: PathBuf,
        #[source]
        source: ReleaseError,
    },
}

/// `hook.json`. Unknown keys are refused: a misspelt `kubeletRoot` must not silently fall back to the default.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_root: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runsc_release: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
    /// Where `wrap` logs when the runtime's caller passes no `--log`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// What the command line said; `None`/`false` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub runtime: Option<PathBuf>,
    pub kubelet_root: Option<PathBuf>,
    pub runsc_release: Option<RunscRelease>,
    pub strict: bool,
}

/// The settings a mode runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub runtime: PathBuf,
    pub kubelet_root: PathBuf,
    /// `None`: unknown (detected from the runtime in `wrap`, the strictest rules elsewhere).
    pub release: Option<RunscRelease>,
    pub strict: bool,
    pub log: Option<PathBuf>,
    pub log_format: LogFormat,
}

impl Settings {
    /// Flags over the file over the defaults. `strict` can only be switched on: either place may ask for it.
    pub fn resolve(flags: &Flags, file: &HookConfig, file_path: &Path) -> Result<Settings, ConfigError> {
        let file_release = match &file.runsc_release {
            Some(text) => Some(
                text.parse::<RunscRelease>()
                    .map_err(|source| ConfigError::Release { path: file_path.to_owned(), source })?,
            ),
            None => None,
        };
        Ok(Settings {
            runtime: flags.runtime.clone().or_else(|| file.runtime.clone()).unwrap_or_else(|| DEFAULT_RUNTIME.into()),
            kubelet_root: flags
                .kubelet_root
                .clone()
                .or_else(|| file.kubelet_root.clone())
                .unwrap_or_else(|| DEFAULT_KUBELET_ROOT.into()),
            release: flags.runsc_release.or(file_release),
            strict: flags.strict || file.strict,
            log: file.log.clone(),
            log_format: file.log_format.unwrap_or_default(),
        })
    }

    /// Reads the configuration file ([`config_file`]) and resolves `flags` against it.
    pub fn load(flags: &Flags) -> Result<Settings, ConfigError> {
        let (path, required) = config_file();
        let file = load_file(&path, required)?;
        Settings::resolve(flags, &file, &path)
    }
}

/// `$MOUNT_HINTS_HOOK_CONFIG` (which must then exist), else [`DEFAULT_CONFIG`] (which may be absent).
pub fn config_file() -> (PathBuf, bool) {
    match std::env::var_os(CONFIG_ENV) {
        Some(path) => (PathBuf::from(path), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    }
}

/// The file at `path`; an absent optional file is the empty configuration.
pub fn load_file(path: &Path, required: bool) -> Result<HookConfig, ConfigError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| ConfigError::Json { path: path.to_owned(), source })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && !required => Ok(HookConfig::default()),
        Err(source) => Err(ConfigError::Read { path: path.to_owned(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> HookConfig {
        serde_json::from_str(json).unwrap()
    }

    fn release(s: &str) -> RunscRelease {
        s.parse().unwrap()
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let path = Path::new("/etc/mount-hints/hook.json");
        let full = file(
            r#"{"runtime": "/opt/runsc", "kubeletRoot": "/data/kubelet", "runscRelease": "20221219",
                "strict": true, "log": "/var/log/hook.log", "logFormat": "json"}"#,
        );
        let none = Flags::default();
        let all = Flags {
            runtime: Some("/flag/runsc".into()),
            kubelet_root: Some("/flag/kubelet".into()),
            runsc_release: Some(release("20240729")),
            strict: false,
        };
        // (flags, file) -> (runtime, kubelet root, release, strict)
        type Want<'a> = (&'a str, &'a str, Option<&'a str>, bool);
        let cases: [(&Flags, HookConfig, Want); 4] = [
            (&none, HookConfig::default(), (DEFAULT_RUNTIME, DEFAULT_KUBELET_ROOT, None, false)),
            (&none, full.clone(), ("/opt/runsc", "/data/kubelet", Some("20221219"), true)),
            (&all, HookConfig::default(), ("/flag/runsc", "/flag/kubelet", Some("20240729"), false)),
            (&all, full.clone(), ("/flag/runsc", "/flag/kubelet", Some("20240729"), true)),
        ];
        for (flags, config, (runtime, root, rel, strict)) in cases {
            let s = Settings::resolve(flags, &config, path).unwrap();
            assert_eq!(s.runtime, Path::new(runtime), "{config:?}");
            assert_eq!(s.kubelet_root, Path::new(root));
            assert_eq!(s.release, rel.map(release));
            assert_eq!(s.strict, strict);
        }
        let s = Settings::resolve(&none, &full, path).unwrap();
        assert_eq!((s.log.as_deref(), s.log_format), (Some(Path::new("/var/log/hook.log")), LogFormat::Json));
        assert_eq!(Settings::resolve(&none, &HookConfig::default(), path).unwrap().log_format, LogFormat::Text);
    }

    #[test]
    fn a_bad_file_is_a_specific_error() {
        let path = Path::new("/h.json");
        let bad_release = file(r#"{"runscRelease": "yesterday"}"#);
        let err = Settings::resolve(&Flags::default(), &bad_release, path).unwrap_err();
        assert!(matches!(err, ConfigError::Release { .. }), "{err}");
        assert!(serde_json::from_str::<HookConfig>(r#"{"kubeletroot": "/x"}"#).is_err(), "unknown keys refused");
        assert!(serde_json::from_str::<HookConfig>(r#"{"logFormat": "xml"}"#).is_err());
    }

    #[test]
    fn an_absent_file_is_empty_unless_it_was_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("hook.json");
        assert_eq!(load_file(&missing, false).unwrap(), HookConfig::default());
        assert!(matches!(load_file(&missing, true), Err(ConfigError::Read { .. })));
        std::fs::write(&missing, "{not json").unwrap();
        assert!(matches!(load_file(&missing, false), Err(ConfigError::Json { .. })));
    }

    #[test]
    fn serializes_only_what_is_set() {
        let config = HookConfig { runtime: Some("/usr/bin/runsc".into()), ..HookConfig::default() };
        assert_eq!(serde_json::to_string(&config).unwrap(), r#"{"runtime":"/usr/bin/runsc"}"#);
    }
}
