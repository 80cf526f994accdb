//! config.json in and out. A crash or a full disk must never leave a truncated config.json: the new content
//! goes to a temporary file in the bundle directory, is synced, then renamed over the old one, with the old
//! file's mode and owner. A kill -9 can still leave the temporary file; the next rewrite clears it.

use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Error;

pub const CONFIG: &str = "config.json";

pub fn config_path(bundle: &Path) -> PathBuf {
    bundle.join(CONFIG)
}

pub fn read_config(bundle: &Path) -> Result<Value, Error> {
    let path = config_path(bundle);
    let bytes = std::fs::read(&path).map_err(|source| Error::Read { path: path.clone(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json { path, source })
}

/// Temporary files of the rewrite start with this; a run killed between creating and renaming one leaves it
/// behind, and the next rewrite of the bundle removes it.
const TEMP_PREFIX: &str = ".config.json.mount-hints.";

/// Replaces `config.json` atomically. The temporary file's name is random and created exclusively, so a
/// leftover (under any name) can never make the rewrite fail.
pub fn write_config(bundle: &Path, spec: &Value) -> Result<(), Error> {
    let path = config_path(bundle);
    let write_err = |source| Error::Write { path: path.clone(), source };
    let old = std::fs::metadata(&path).map_err(write_err)?;
    remove_leftovers(bundle);
    let bytes = serde_json::to_vec(spec).expect("a JSON value always serializes");
    // Dropping `tmp` on an error removes the file.
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(".tmp")
        .rand_bytes(12)
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(bundle)
        .map_err(write_err)?;
    let file = tmp.as_file_mut();
    file.write_all(&bytes).map_err(write_err)?;
    file.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777)).map_err(write_err)?;
    // Same owner as before when we may set it (root); otherwise the file stays ours.
    let _ = std::os::unix::fs::fchown(&*file, Some(old.uid()), Some(old.gid()));
    file.sync_all().map_err(write_err)?;
    tmp.persist(&path).map_err(|e| write_err(e.error))?;
    File::open(bundle).and_then(|dir| dir.sync_all()).map_err(write_err)
}

/// Temporary files of killed runs. Best effort: one that cannot be removed is in nobody's way.
fn remove_leftovers(bundle: &Path) {
    let Ok(entries) = std::fs::read_dir(bundle) else { return };
    for entry in entries.flatten() {
        if entry.file_name().as_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_keeps_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_path(dir.path());
        std::fs::write(&path, br#"{"ociVersion":"1.0.2"}"#).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let spec = serde_json::json!({"ociVersion": "1.0.2", "x-unknown": {"kept": true}});
        write_config(dir.path(), &spec).unwrap();
        assert_eq!(read_config(dir.path()).unwrap(), spec);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn leftovers_of_killed_runs_neither_block_nor_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_path(dir.path());
        std::fs::write(&path, b"{}").unwrap();
        // The name an earlier release used for this very process, and a random-named one.
        let old_style = dir.path().join(format!(".{CONFIG}.mount-hints.{}.tmp", std::process::id()));
        std::fs::write(&old_style, b"x").unwrap();
        std::fs::write(dir.path().join(".config.json.mount-hints.AbC123xyz.tmp"), b"{\"half").unwrap();
        write_config(dir.path(), &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(read_config(dir.path()).unwrap(), serde_json::json!({"a": 1}));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [CONFIG], "leftovers removed");
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A config.json the rename cannot replace (a non-empty directory), whoever runs the test.
        std::fs::create_dir_all(config_path(dir.path()).join("x")).unwrap();
        let err = write_config(dir.path(), &serde_json::json!({"a": 1})).unwrap_err();
        assert!(matches!(err, Error::Write { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the temporary file is removed");
        assert!(config_path(dir.path()).join("x").is_dir());
    }
}
