//! What the completion may ask about the node: the kubelet's volume directories and the runsc in use. The
//! completion itself never touches the filesystem; tests give it a kubelet tree under a temporary root.

use std::cell::{OnceCell, RefCell};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use mount_hints::{is_filestore_entry, RunscRelease};

use crate::identity::PodUid;

/// The emptyDir plugin directory under `pods/<uid>/volumes/`.
pub const EMPTY_DIR_PLUGIN: &str = "kubernetes.io~empty-dir";

/// A pod volume directory: `<kubelet-root>/pods/<uid>/volumes/<plugin>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDir {
    pub plugin: String,
    pub path: PathBuf,
}

impl VolumeDir {
    pub fn is_empty_dir(&self) -> bool {
        self.plugin == EMPTY_DIR_PLUGIN
    }
}

pub trait NodeView {
    /// The kubelet root with symlinks resolved: the prefix kubelet uses in container mount sources.
    fn kubelet_root(&self) -> &Path;
    /// Other spellings of the root a mount source may use (the configured, unresolved path).
    fn kubelet_root_aliases(&self) -> &[PathBuf];
    /// Every `pods/<uid>/volumes/*/<name>` directory. `name` is a validated DNS-1123 label.
    fn volume_dirs(&self, uid: &PodUid, name: &str) -> io::Result<Vec<VolumeDir>>;
    /// Empty, or holding only runsc's filestore file: safe to back with a sandbox tmpfs.
    fn is_empty_for_tmpfs(&self, dir: &Path) -> io::Result<bool>;
    /// The runsc release in use; `None` when unknown (then the strictest rules apply).
    fn runsc_release(&self) -> Option<RunscRelease>;
}

/// The real node.
pub struct HostNode {
    root: PathBuf,
    aliases: Vec<PathBuf>,
    release: RuntimeRelease,
    /// The plugin directories of the last pod listed: a sandbox's hints all belong to one pod.
    plugins: RefCell<Option<(PodUid, Vec<String>)>>,
}

/// How the runsc release is known: configured, or asked of the runtime binary the first time it matters.
pub enum RuntimeRelease {
    Known(Option<RunscRelease>),
    Detect { runtime: PathBuf, cached: OnceCell<Option<RunscRelease>> },
}

impl HostNode {
    /// `kubelet_root` is resolved through symlinks when it exists; kubelet writes mount sources under the
    /// resolved path.
    pub fn new(kubelet_root: &Path, release: RuntimeRelease) -> HostNode {
        let root = std::fs::canonicalize(kubelet_root).unwrap_or_else(|_| kubelet_root.to_owned());
        let aliases = if root != kubelet_root { vec![kubelet_root.to_owned()] } else { Vec::new() };
        HostNode { root, aliases, release, plugins: RefCell::new(None) }
    }
}

impl NodeView for HostNode {
    fn kubelet_root(&self) -> &Path {
        &self.root
    }

    fn kubelet_root_aliases(&self) -> &[PathBuf] {
        &self.aliases
    }

    fn volume_dirs(&self, uid: &PodUid, name: &str) -> io::Result<Vec<VolumeDir>> {
        let volumes = self.root.join("pods").join(uid.as_str()).join("volumes");
        let mut cache = self.plugins.borrow_mut();
        if cache.as_ref().is_none_or(|(cached, _)| cached != uid) {
            let mut plugins = Vec::new();
            match std::fs::read_dir(&volumes) {
                Ok(entries) => {
                    for entry in entries {
                        plugins.push(entry?.file_name().to_string_lossy().into_owned());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            plugins.sort();
            *cache = Some((uid.clone(), plugins));
        }
        let (_, plugins) = cache.as_ref().expect("filled above");
        let mut found = Vec::new();
        for plugin in plugins {
            let path = volumes.join(plugin).join(name);
            // symlink_metadata: a volume directory is a real directory; a symlink planted there is not followed.
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                found.push(VolumeDir { plugin: plugin.clone(), path });
            }
        }
        Ok(found)
    }

    fn is_empty_for_tmpfs(&self, dir: &Path) -> io::Result<bool> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            // DirEntry::file_type does not follow symlinks: a symlink named like a filestore is data.
            let is_regular_file = entry.file_type()?.is_file();
            if !is_filestore_entry(&entry.file_name().to_string_lossy(), is_regular_file) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn runsc_release(&self) -> Option<RunscRelease> {
        match &self.release {
            RuntimeRelease::Known(release) => *release,
            RuntimeRelease::Detect { runtime, cached } => *cached.get_or_init(|| detect_release(runtime)),
        }
    }
}

/// `runsc --version`, read once per process and only when a decision depends on it.
pub fn detect_release(runtime: &Path) -> Option<RunscRelease> {
    let output = Command::new(runtime).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    match RunscRelease::from_version_output(&text) {
        Ok(release) => Some(release),
        Err(e) => {
            tracing::warn!(runtime = %runtime.display(), error = %e, "cannot tell the runsc release; assuming the strictest");
            None
        }
    }
}
