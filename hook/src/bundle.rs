//! config.json in and out. A crash or a full disk must never leave a truncated config.json: the new content
//! goes to a temporary file in the bundle directory, is synced, then renamed over the old one, with the old
//! file's mode and owner.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
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

/// Replaces `config.json` atomically.
pub fn write_config(bundle: &Path, spec: &Value) -> Result<(), Error> {
    let path = config_path(bundle);
    let write_err = |source| Error::Write { path: path.clone(), source };
    let old = std::fs::metadata(&path).map_err(write_err)?;
    let bytes = serde_json::to_vec(spec).expect("a JSON value always serializes");
    let tmp = bundle.join(format!(".{CONFIG}.mount-hints.{}.tmp", std::process::id()));
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(write_err)?;
    let result = (|| {
        file.write_all(&bytes)?;
        file.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777))?;
        // Same owner as before when we may set it (root); otherwise the file stays ours.
        let _ = std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()));
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(bundle)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(write_err)
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
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_path(dir.path());
        std::fs::write(&path, b"{}").unwrap();
        // A leftover temporary file of the same name makes create_new fail: the old config must survive whole.
        std::fs::write(dir.path().join(format!(".{CONFIG}.mount-hints.{}.tmp", std::process::id())), b"x").unwrap();
        assert!(write_config(dir.path(), &serde_json::json!({"a": 1})).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
    }
}
