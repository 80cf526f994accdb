//! What the completion may ask about the node: the kubelet's volume directories and the runsc in use. The
//! completion itself never touches the filesystem; tests give it a kubelet tree under a temporary root.

use std::cell::{OnceCell, RefCell};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use mount_hints::{is_filestore_entry, EmptyDirMedium, RunscRelease};
use rustix::fs::{
    fstat, fstatfs, openat, statat, statx, AtFlags, Dir, FileType, Mode, OFlags, StatxAttributes, StatxFlags, CWD,
};

use crate::identity::PodUid;

/// How a volume directory is opened: a directory, never through a symlink planted in its place.
const VOLUME_DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

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

/// An emptyDir's directory as the node shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmptyDirState {
    pub medium: EmptyDirMedium,
    /// Empty, or holding only runsc's filestore file: safe to back with a sandbox tmpfs.
    pub empty: bool,
}

pub trait NodeView {
    /// The kubelet root with symlinks resolved: the prefix kubelet uses in container mount sources.
    fn kubelet_root(&self) -> &Path;
    /// Other spellings of the root a mount source may use (the configured, unresolved path).
    fn kubelet_root_aliases(&self) -> &[PathBuf];
    /// Every `pods/<uid>/volumes/*/<name>` directory. `name` is a validated DNS-1123 label.
    fn volume_dirs(&self, uid: &PodUid, name: &str) -> io::Result<Vec<VolumeDir>>;
    /// What an emptyDir's directory shows: its medium and whether a sandbox tmpfs may hide it.
    fn inspect_empty_dir(&self, dir: &Path) -> io::Result<EmptyDirState>;
    /// The runsc release in use; `None` when unknown (then the strictest rules apply).
    fn runsc_release(&self) -> Option<RunscRelease>;
}

/// The real node.
pub struct HostNode {
    root: PathBuf,
    aliases: Vec<PathBuf>,
    release: RuntimeRelease,
    /// The plugin directories of the last pod listed: a sandbox's hints all belong to one pod.
    plugins: RefCell<Option<(PodUid, Vec<PluginDir>)>>,
}

/// One `pods/<uid>/volumes/<plugin>` directory, kept open: each volume is then looked up by its name alone,
/// not by walking the whole path again (two lookups per hinted volume, most of the per-volume cost).
struct PluginDir {
    name: String,
    path: PathBuf,
    /// `None` when it could not be opened; its volumes are then looked up by path.
    fd: Option<OwnedFd>,
}

impl PluginDir {
    /// `<plugin>/<name>` is a real directory, not a symlink planted there.
    fn has_volume(&self, name: &str) -> bool {
        match &self.fd {
            Some(fd) => statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory),
            None => std::fs::symlink_metadata(self.path.join(name)).is_ok_and(|m| m.is_dir()),
        }
    }
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

impl HostNode {
    /// The plugin directories under `pods/<uid>/volumes`, sorted by name; none when the pod has no volumes.
    fn plugin_dirs(&self, uid: &PodUid) -> io::Result<Vec<PluginDir>> {
        let volumes = self.root.join("pods").join(uid.as_str()).join("volumes");
        let mut names = Vec::new();
        match std::fs::read_dir(&volumes) {
            Ok(entries) => {
                for entry in entries {
                    names.push(entry?.file_name().to_string_lossy().into_owned());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        names.sort();
        Ok(names
            .into_iter()
            .map(|name| {
                let path = volumes.join(&name);
                let fd = openat(CWD, &path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok();
                PluginDir { name, path, fd }
            })
            .collect())
    }

    /// `dir` opened from the open plugin directory it is in, when it is one `volume_dirs` returned.
    fn open_listed_volume(&self, dir: &Path) -> Option<io::Result<OwnedFd>> {
        let cache = self.plugins.borrow();
        let (_, plugins) = cache.as_ref()?;
        let (parent, name) = (dir.parent()?, dir.file_name()?);
        let fd = plugins.iter().find(|p| p.path == parent)?.fd.as_ref()?;
        Some(openat(fd, name, VOLUME_DIR_FLAGS, Mode::empty()).map_err(io::Error::from))
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
        let mut cache = self.plugins.borrow_mut();
        if cache.as_ref().is_none_or(|(cached, _)| cached != uid) {
            *cache = Some((uid.clone(), self.plugin_dirs(uid)?));
        }
        let (_, plugins) = cache.as_ref().expect("filled above");
        Ok(plugins
            .iter()
            .filter(|plugin| plugin.has_volume(name))
            .map(|plugin| VolumeDir { plugin: plugin.name.clone(), path: plugin.path.join(name) })
            .collect())
    }

    fn inspect_empty_dir(&self, dir: &Path) -> io::Result<EmptyDirState> {
        // A volume directory listed by `volume_dirs` is opened from its plugin directory, by name; any other by
        // its path. Neither follows a symlink in its place.
        let opened = match self.open_listed_volume(dir) {
            Some(opened) => opened?,
            None => openat(CWD, dir, VOLUME_DIR_FLAGS, Mode::empty())?,
        };
        Ok(EmptyDirState { medium: medium_of(&opened)?, empty: is_empty_for_tmpfs(&opened)? })
    }

    fn runsc_release(&self) -> Option<RunscRelease> {
        match &self.release {
            RuntimeRelease::Known(release) => *release,
            RuntimeRelease::Detect { runtime, cached } => *cached.get_or_init(|| detect_release(runtime)),
        }
    }
}

/// kubelet mounts a tmpfs on the volume directory of a Memory emptyDir; a disk emptyDir is a plain directory.
/// Both must hold: on a node whose kubelet root is itself on a tmpfs, every disk emptyDir is on a tmpfs too.
fn medium_of(dir: &OwnedFd) -> io::Result<EmptyDirMedium> {
    // `f_type`'s integer type differs between architectures and C libraries; the magic number fits them all.
    #[allow(clippy::unnecessary_cast)]
    let on_tmpfs = fstatfs(dir)?.f_type as i64 == libc::TMPFS_MAGIC as i64;
    Ok(if on_tmpfs && is_mount_root(dir)? { EmptyDirMedium::Memory } else { EmptyDirMedium::Disk })
}

/// Whether `dir` is the root of a mount: as the kernel says (Linux 5.8+), or else by its device.
fn is_mount_root(dir: &OwnedFd) -> io::Result<bool> {
    match mount_root_attribute(dir) {
        Some(known) => Ok(known),
        None => on_another_device_than_its_parent(dir),
    }
}

/// statx's `STATX_ATTR_MOUNT_ROOT`; `None` where the kernel does not report it.
fn mount_root_attribute(dir: &OwnedFd) -> Option<bool> {
    let st = statx(dir, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS).ok()?;
    let known = st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT);
    known.then(|| st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
}

/// A mount of a fresh filesystem is another device than the directory it is mounted in (`..` from the root of a
/// mount is the mount point's parent).
fn on_another_device_than_its_parent(dir: &OwnedFd) -> io::Result<bool> {
    Ok(fstat(dir)?.st_dev != statat(dir, "..", AtFlags::SYMLINK_NOFOLLOW)?.st_dev)
}

/// Empty, or holding only runsc's filestore file.
fn is_empty_for_tmpfs(dir: &OwnedFd) -> io::Result<bool> {
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        // The entry's type never follows a symlink: a symlink named like a filestore is data. Some filesystems
        // leave the type unknown in the listing; then ask, still without following.
        let kind = match entry.file_type() {
            FileType::Unknown => {
                FileType::from_raw_mode(statat(dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)?.st_mode)
            }
            kind => kind,
        };
        if !is_filestore_entry(&String::from_utf8_lossy(name), kind == FileType::RegularFile) {
            return Ok(false);
        }
    }
    Ok(true)
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

#[cfg(test)]
mod tests {
    use mount_hints::FILESTORE_PREFIX;

    use super::*;

    const UID: &str = "5c0d3f4e-1a2b-4c5d-8e9f-0a1b2c3d4e5f";

    /// A pod with an emptyDir `empty`, one holding only a filestore file, one holding a file, a configMap
    /// `config`, and a symlink planted where the emptyDir `planted` would be.
    fn node() -> (tempfile::TempDir, HostNode) {
        let dir = tempfile::tempdir().unwrap();
        let volumes = dir.path().join("pods").join(UID).join("volumes");
        let empty_dirs = volumes.join(EMPTY_DIR_PLUGIN);
        for name in ["empty", "filestore", "used"] {
            std::fs::create_dir_all(empty_dirs.join(name)).unwrap();
        }
        std::fs::write(empty_dirs.join("filestore").join(format!("{FILESTORE_PREFIX}42")), b"").unwrap();
        std::fs::write(empty_dirs.join("used").join("data"), b"x").unwrap();
        std::fs::create_dir_all(volumes.join("kubernetes.io~configmap").join("config")).unwrap();
        std::os::unix::fs::symlink(dir.path(), empty_dirs.join("planted")).unwrap();
        let node = HostNode::new(dir.path(), RuntimeRelease::Known(None));
        (dir, node)
    }

    #[test]
    fn volume_directories_are_found_by_name_and_symlinks_are_not() {
        let (_dir, node) = node();
        let uid = PodUid::parse(UID).unwrap();
        let plugins = |name: &str| -> Vec<String> {
            node.volume_dirs(&uid, name).unwrap().into_iter().map(|d| d.plugin).collect()
        };
        assert_eq!(plugins("empty"), [EMPTY_DIR_PLUGIN]);
        assert_eq!(plugins("config"), ["kubernetes.io~configmap"]);
        assert!(plugins("planted").is_empty());
        assert!(plugins("absent").is_empty());
        let other = PodUid::parse("9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a").unwrap();
        assert!(node.volume_dirs(&other, "empty").unwrap().is_empty(), "a pod without volumes has none");
    }

    #[test]
    fn emptiness_is_the_same_for_listed_and_unlisted_directories() {
        let (dir, node) = node();
        let uid = PodUid::parse(UID).unwrap();
        for (name, empty) in [("empty", true), ("filestore", true), ("used", false)] {
            // Before listing: looked up by path; after: opened from the plugin directory.
            let path = dir.path().join("pods").join(UID).join("volumes").join(EMPTY_DIR_PLUGIN).join(name);
            assert_eq!(node.inspect_empty_dir(&path).unwrap().empty, empty, "{name}, by path");
            let listed = node.volume_dirs(&uid, name).unwrap();
            assert_eq!(listed[0].path, path);
            assert_eq!(node.inspect_empty_dir(&listed[0].path).unwrap().empty, empty, "{name}, listed");
        }
        let planted = dir.path().join("pods").join(UID).join("volumes").join(EMPTY_DIR_PLUGIN).join("planted");
        assert!(node.inspect_empty_dir(&planted).is_err(), "a symlink in a plugin directory is not followed");
        let unlisted = HostNode::new(dir.path(), RuntimeRelease::Known(None));
        assert!(unlisted.inspect_empty_dir(&planted).is_err(), "nor one looked up by path");
    }

    /// Both ways of telling a mount root agree (the device comparison is what kernels before 5.8 get), on a
    /// mount root this machine always has and on a plain directory. Real tmpfs mounts are in tests/completion.rs.
    #[test]
    fn the_two_mount_root_checks_agree() {
        let plain = tempfile::tempdir().unwrap();
        let open = |path: &Path| openat(CWD, path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty());
        for (path, want) in [(Path::new("/proc"), true), (plain.path(), false)] {
            let fd = open(path).unwrap();
            assert_eq!(on_another_device_than_its_parent(&fd).unwrap(), want, "{}", path.display());
            assert_eq!(mount_root_attribute(&fd).unwrap_or(want), want, "{}", path.display());
            assert_eq!(is_mount_root(&fd).unwrap(), want, "{}", path.display());
        }
    }
}
