//! `install` and `uninstall`: put the hook on a node seen through a host root (the DaemonSet's `/host`), point
//! the gVisor shim's `runsc.toml` at it, and undo both exactly.
//!
//! Every file is replaced by rename, so a `runsc create` that execs the hook meanwhile gets the old or the new
//! binary, never a partial one. The shim's file is edited in place of its `binary_name` only (`toml_edit`
//! keeps every other byte); the bytes before and after go to a state file, so `uninstall` puts the original
//! back byte for byte, and a second `install` changes nothing.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml_edit::{DocumentMut, Item, Value};

use crate::config::{HookConfig, DEFAULT_CONFIG, DEFAULT_RUNTIME, HOOK_PATH};

/// The gVisor shim's configuration (containerd's runtime handler `options.ConfigPath`).
pub const DEFAULT_RUNSC_TOML: &str = "/etc/containerd/runsc.toml";
/// What `install` changed, for `uninstall` and for the next `install`.
pub const STATE: &str = "/etc/mount-hints/install-state.json";
const BINARY_NAME: &str = "binary_name";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}: expected an absolute path without `..` (it is looked up inside the host root)")]
    BadPath(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not valid TOML: {source}")]
    Toml {
        path: PathBuf,
        #[source]
        source: toml_edit::TomlError,
    },
    #[error("{path}: the top-level binary_name is not a string")]
    BinaryName { path: PathBuf },
    #[error("{path} is a symbolic link; name the file it points to with --runsc-toml")]
    Symlink { path: PathBuf },
    #[error("{path} does not exist")]
    Missing { path: PathBuf },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The node's filesystem as mounted here (`/` on the node itself).
#[derive(Debug, Clone)]
pub struct HostRoot(PathBuf);

impl HostRoot {
    pub fn new(dir: impl Into<PathBuf>) -> HostRoot {
        HostRoot(dir.into())
    }

    /// Where a node path (absolute, no `..`) is found here.
    pub fn path(&self, on_node: &Path) -> Result<PathBuf, InstallError> {
        let mut components = on_node.components();
        if components.next() != Some(Component::RootDir) || components.any(|c| !matches!(c, Component::Normal(_))) {
            return Err(InstallError::BadPath(on_node.to_owned()));
        }
        Ok(self.0.join(on_node.strip_prefix("/").expect("absolute")))
    }
}

/// runsc.toml before and after `install` pointed it at the hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShimEdit {
    /// The file, as a node path.
    pub path: PathBuf,
    pub before: String,
    pub after: String,
    /// `binary_name` before: the runsc the shim ran.
    pub previous_binary_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runsc_toml: Option<ShimEdit>,
    /// hook.json as it was before the first install (`None`: there was none).
    #[serde(default)]
    pub hook_json_before: Option<String>,
}

/// `binary_name` of the runsc.toml at `path`: `Ok(None)` when unset.
pub fn binary_name(doc: &DocumentMut, path: &Path) -> Result<Option<String>, InstallError> {
    match doc.get(BINARY_NAME) {
        None => Ok(None),
        Some(item) => {
            item.as_str().map(|s| Some(s.to_owned())).ok_or_else(|| InstallError::BinaryName { path: path.to_owned() })
        }
    }
}

/// Sets the top-level `binary_name` (or removes it, for `None`), keeping the key's place, its comments and the
/// spacing around the value.
pub fn set_binary_name(doc: &mut DocumentMut, value: Option<&str>) {
    let Some(value) = value else {
        doc.remove(BINARY_NAME);
        return;
    };
    match doc.get_mut(BINARY_NAME) {
        Some(Item::Value(old)) => {
            let decor = old.decor().clone();
            let mut new = Value::from(value);
            *new.decor_mut() = decor;
            *old = new;
        }
        _ => {
            // A new key goes before the first table, where top-level keys belong.
            doc.insert(BINARY_NAME, toml_edit::value(value));
        }
    }
}

/// What one step did, as printed.
pub type Report = Vec<String>;

/// Installs the hook from `binary` into `root`, wiring the gVisor shim configuration at `runsc_toml` (a node
/// path) when it exists; `runsc_toml_required` makes its absence an error (it was named explicitly).
pub fn install(
    root: &HostRoot,
    binary: &Path,
    runsc_toml: &Path,
    runsc_toml_required: bool,
) -> Result<Report, InstallError> {
    let mut report = Report::new();
    let state_path = root.path(Path::new(STATE))?;
    let old_state = read_state(&state_path)?;
    let mut state = old_state.clone().unwrap_or_default();

    // The shim configuration: which runsc it ran, and its new text.
    let shim_path = root.path(runsc_toml)?;
    let shim_text = read_optional(&shim_path)?;
    if shim_path.is_symlink() {
        return Err(InstallError::Symlink { path: shim_path });
    }
    let mut shim_write = None;
    // Printed last: the shim's file is written last.
    let shim_line;
    let shim_runtime = match &shim_text {
        None if runsc_toml_required => return Err(InstallError::Missing { path: shim_path }),
        None => {
            shim_line = format!("{}: not found, no gVisor shim to wire", runsc_toml.display());
            None
        }
        Some(text) => {
            let mut doc: DocumentMut =
                text.parse().map_err(|source| InstallError::Toml { path: shim_path.clone(), source })?;
            let current = binary_name(&doc, &shim_path)?;
            if current.as_deref() == Some(HOOK_PATH) {
                shim_line = format!("{}: binary_name already runs the hook", runsc_toml.display());
                // The runsc it ran before is only known from an earlier install.
                state.runsc_toml.as_ref().filter(|e| e.path == runsc_toml).and_then(|e| e.previous_binary_name.clone())
            } else {
                set_binary_name(&mut doc, Some(HOOK_PATH));
                let after = doc.to_string();
                shim_line = format!(
                    "{}: binary_name {} -> \"{HOOK_PATH}\" (the previous value is kept in {STATE})",
                    runsc_toml.display(),
                    current.as_deref().map_or("(unset)".to_owned(), |c| format!("{c:?}")),
                );
                state.runsc_toml = Some(ShimEdit {
                    path: runsc_toml.to_owned(),
                    before: text.clone(),
                    after: after.clone(),
                    previous_binary_name: current.clone(),
                });
                shim_write = Some(after);
                current
            }
        }
    };

    // The binary.
    let target = root.path(Path::new(HOOK_PATH))?;
    let bytes = std::fs::read(binary).map_err(|source| InstallError::Read { path: binary.to_owned(), source })?;
    let same_binary = std::fs::read(&target).is_ok_and(|old| old == bytes)
        && std::fs::metadata(&target).is_ok_and(|m| m.mode() & 0o7777 == 0o755);
    if same_binary {
        report.push(format!("{HOOK_PATH}: unchanged"));
    } else {
        write_atomic(&target, &bytes, 0o755)?;
        report.push(format!("{HOOK_PATH}: installed ({} bytes)", bytes.len()));
    }

    // hook.json: the runsc the shim ran; without a shim configuration, what hook.json already said.
    let config_path = root.path(Path::new(DEFAULT_CONFIG))?;
    let config_before = read_optional(&config_path)?;
    let mut config: HookConfig = match &config_before {
        Some(text) => {
            serde_json::from_str(text).map_err(|source| InstallError::Json { path: config_path.clone(), source })?
        }
        None => HookConfig::default(),
    };
    let (runtime, why) = match (shim_runtime.filter(|r| *r != HOOK_PATH), &shim_text, &config.runtime) {
        (Some(r), _, _) => (PathBuf::from(r), format!("the runsc {} named", runsc_toml.display())),
        (None, None, Some(r)) => (r.clone(), "kept".to_owned()),
        (None, _, _) => (PathBuf::from(DEFAULT_RUNTIME), "the default".to_owned()),
    };
    config.runtime = Some(runtime.clone());
    let mut config_text = serde_json::to_string_pretty(&config).expect("a HookConfig always serializes");
    config_text.push('\n');
    if config_before.as_deref() == Some(config_text.as_str()) {
        report.push(format!("{DEFAULT_CONFIG}: unchanged (runtime {})", runtime.display()));
    } else {
        write_atomic(&config_path, config_text.as_bytes(), 0o644)?;
        report.push(format!("{DEFAULT_CONFIG}: runtime {} ({why})", runtime.display()));
    }

    // The state goes down before the shim file changes, so an interrupted install can still be undone.
    if old_state.is_none() {
        state.hook_json_before = config_before;
    }
    if old_state.as_ref() != Some(&state) {
        let mut text = serde_json::to_string_pretty(&state).expect("the state always serializes");
        text.push('\n');
        write_atomic(&state_path, text.as_bytes(), 0o644)?;
        report.push(format!("{STATE}: recorded what uninstall restores"));
    }
    if let Some(after) = shim_write {
        let mode = std::fs::metadata(&shim_path).map(|m| m.mode() & 0o7777).unwrap_or(0o644);
        write_atomic(&shim_path, after.as_bytes(), mode)?;
    }
    report.push(shim_line);
    Ok(report)
}

/// Undoes `install`: runsc.toml back to its bytes before (or, when edited since, only its `binary_name`
/// back), hook.json back or removed, the binary and the state removed.
pub fn uninstall(root: &HostRoot) -> Result<Report, InstallError> {
    let mut report = Report::new();
    let state_path = root.path(Path::new(STATE))?;
    let Some(state) = read_state(&state_path)? else {
        report.push(format!("{STATE}: not found, nothing was installed here; nothing changed"));
        return Ok(report);
    };
    if let Some(edit) = &state.runsc_toml {
        let path = root.path(&edit.path)?;
        let mode = std::fs::metadata(&path).map(|m| m.mode() & 0o7777).unwrap_or(0o644);
        match read_optional(&path)? {
            Some(now) if now == edit.after => {
                write_atomic(&path, edit.before.as_bytes(), mode)?;
                report.push(format!("{}: restored as it was before install", edit.path.display()));
            }
            Some(now) => {
                let mut doc: DocumentMut =
                    now.parse().map_err(|source| InstallError::Toml { path: path.clone(), source })?;
                if binary_name(&doc, &path).ok().flatten().as_deref() == Some(HOOK_PATH) {
                    set_binary_name(&mut doc, edit.previous_binary_name.as_deref());
                    write_atomic(&path, doc.to_string().as_bytes(), mode)?;
                    report.push(format!(
                        "{}: edited since install; binary_name set back to {}",
                        edit.path.display(),
                        edit.previous_binary_name.as_deref().map_or("(unset)".to_owned(), |c| format!("{c:?}"))
                    ));
                } else {
                    report.push(format!("{}: no longer runs the hook; left as it is", edit.path.display()));
                }
            }
            None => report.push(format!("{}: gone; nothing to restore", edit.path.display())),
        }
    }
    let config_path = root.path(Path::new(DEFAULT_CONFIG))?;
    match &state.hook_json_before {
        Some(before) => {
            write_atomic(&config_path, before.as_bytes(), 0o644)?;
            report.push(format!("{DEFAULT_CONFIG}: restored"));
        }
        None => {
            remove(&config_path)?;
            report.push(format!("{DEFAULT_CONFIG}: removed"));
        }
    }
    remove(&root.path(Path::new(HOOK_PATH))?)?;
    report.push(format!("{HOOK_PATH}: removed"));
    remove(&state_path)?;
    report.push(format!("{STATE}: removed"));
    Ok(report)
}

fn read_state(path: &Path) -> Result<Option<InstallState>, InstallError> {
    read_optional(path)?
        .map(|text| serde_json::from_str(&text).map_err(|source| InstallError::Json { path: path.to_owned(), source }))
        .transpose()
}

fn read_optional(path: &Path) -> Result<Option<String>, InstallError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InstallError::Read { path: path.to_owned(), source }),
    }
}

fn remove(path: &Path) -> Result<(), InstallError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(InstallError::Write { path: path.to_owned(), source: e }),
        _ => Ok(()),
    }
}

/// Replaces `path` by rename from a synced temporary file beside it (created with the parents if needed);
/// on any error the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let write_err = |source| InstallError::Write { path: path.to_owned(), source };
    let dir = path.parent().ok_or_else(|| InstallError::BadPath(path.to_owned()))?;
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.mount-hints."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(write_err)?;
    let file = tmp.as_file_mut();
    file.write_all(bytes).map_err(write_err)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIM: &str = "# The gVisor shim's configuration.\nbinary_name = \"/usr/bin/runsc\"  # the runtime\nroot = \"/run/containerd/runsc\"\n\n[runsc_config]\n  platform = \"systrap\"\n";

    #[test]
    fn binary_name_edits_keep_every_other_byte() {
        let mut doc: DocumentMut = SHIM.parse().unwrap();
        assert_eq!(binary_name(&doc, Path::new("r")).unwrap(), Some("/usr/bin/runsc".to_owned()));
        set_binary_name(&mut doc, Some(HOOK_PATH));
        assert_eq!(doc.to_string(), SHIM.replace("\"/usr/bin/runsc\"", &format!("\"{HOOK_PATH}\"")));
        set_binary_name(&mut doc, Some("/usr/bin/runsc"));
        assert_eq!(doc.to_string(), SHIM);
    }

    #[test]
    fn a_missing_binary_name_is_added_at_the_top_and_removed_again() {
        let text = "root = \"/run/containerd/runsc\"\n\n[runsc_config]\n  platform = \"systrap\"\n";
        let mut doc: DocumentMut = text.parse().unwrap();
        assert_eq!(binary_name(&doc, Path::new("r")).unwrap(), None);
        set_binary_name(&mut doc, Some(HOOK_PATH));
        let edited = doc.to_string();
        let reparsed: toml::Table = edited.parse().unwrap();
        assert_eq!(reparsed["binary_name"].as_str(), Some(HOOK_PATH), "top level, not inside [runsc_config]");
        set_binary_name(&mut doc, None);
        assert_eq!(doc.to_string(), text);
        let bad: DocumentMut = "binary_name = 3\n".parse().unwrap();
        assert!(matches!(binary_name(&bad, Path::new("r")), Err(InstallError::BinaryName { .. })));
    }

    #[test]
    fn node_paths_stay_inside_the_host_root() {
        let root = HostRoot::new("/host");
        assert_eq!(
            root.path(Path::new("/etc/containerd/runsc.toml")).unwrap(),
            Path::new("/host/etc/containerd/runsc.toml")
        );
        for bad in ["etc/x", "/etc/../../x", "/etc/../x", "../x"] {
            assert!(root.path(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
