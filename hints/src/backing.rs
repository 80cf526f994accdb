//! How the node backs a hinted volume: a sandbox tmpfs, or the host directory through the gofer. The hint
//! completion (sandbox spec) and the mount rewrite (container specs) must agree on it mount by mount, so both
//! ask [`decide_backing`].

use std::fmt;

use crate::release::RunscRelease;
use crate::values::{HintType, Share};

/// runsc's disk-backed tmpfs keeps its data in a file of this prefix inside the volume directory.
pub const FILESTORE_PREFIX: &str = ".gvisor.filestore.";

/// Whether a directory entry is runsc's filestore: a regular file (not a directory, not a symlink) named
/// `.gvisor.filestore.*`. Anything else in an emptyDir is data a sandbox tmpfs would hide.
pub fn is_filestore_entry(name: &str, is_regular_file: bool) -> bool {
    is_regular_file && name.starts_with(FILESTORE_PREFIX)
}

/// How kubelet backs an emptyDir, as the node shows it: a tmpfs mounted on the volume directory for
/// `medium: Memory`, a plain directory on the kubelet's filesystem otherwise. It is read on the node, never from
/// a hint's `type`: gVisor's shim completes hints before runsc (and this hook, when it is the shim's
/// `binary_name`) and rewrites a disk emptyDir's `bind` to a disk-backed `tmpfs`, so a `tmpfs` hint no longer
/// means Memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyDirMedium {
    Memory,
    Disk,
}

/// What the node knows about the volume behind a hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeOnNode {
    /// A `kubernetes.io~empty-dir` directory.
    EmptyDir {
        medium: EmptyDirMedium,
        /// It holds nothing but (at most) runsc's filestore file.
        empty: bool,
        /// The author set `dev.gvisor.empty-dir.<NAME>.force-shared` to a true value.
        force_shared: bool,
    },
    /// Any other volume plugin (configMap, secret, projected, hostPath, CSI...).
    Other,
}

/// The node's decision for one hinted volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backing {
    /// The hint's `type` and `share` on the sandbox spec.
    pub hint_type: HintType,
    pub share: Share,
    /// The type of the container mounts of the volume: `tmpfs` only for a memory-backed sandbox tmpfs; a
    /// disk-backed one keeps its `bind` mount (runsc then backs the tmpfs with the filestore file).
    pub mount_type: HintType,
    /// Why an emptyDir is served as a shared bind rather than a sandbox tmpfs, if it is.
    pub changed: Option<BackingChange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingChange {
    ForceShared,
    NotEmpty,
    NoDiskBackedTmpfs,
}

impl fmt::Display for BackingChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A predicate for "emptyDir <NAME> ...".
        f.write_str(match self {
            BackingChange::ForceShared => "is force-shared by the pod author",
            BackingChange::NotEmpty => "already holds files on the host",
            BackingChange::NoDiskBackedTmpfs => {
                "is on disk, and this runsc cannot back a tmpfs with disk (release-20231023 can)"
            }
        })
    }
}

/// A tmpfs hint on a volume that is not an emptyDir: a sandbox tmpfs would hide the volume's content (a
/// configMap, a secret, a projected token) and every later update of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("type tmpfs on a volume that is not an emptyDir would hide its content and updates")]
pub struct TmpfsOverNonEmptyDir;

/// Decides the backing of a hinted volume from what the node sees and the runsc release in use (`None`:
/// unknown, so the oldest supported). `release` is asked only when the answer depends on it (finding it may run
/// `runsc --version`); the mount type never does.
///
/// An emptyDir's backing follows its medium on the node, whatever the hint's `type` says (the webhook's
/// `tmpfs`/`bind`, or a shim's rewrite of it); the hint's `share` is kept. For any other volume the hint's
/// `type` is the author's choice, and only `bind` is allowed.
pub fn decide_backing(
    hint_type: HintType,
    share: Share,
    volume: VolumeOnNode,
    release: impl FnOnce() -> Option<RunscRelease>,
) -> Result<Backing, TmpfsOverNonEmptyDir> {
    let shared_bind = |why| Backing {
        hint_type: HintType::Bind,
        share: Share::Shared,
        mount_type: HintType::Bind,
        changed: Some(why),
    };
    let (medium, empty, force_shared) = match volume {
        VolumeOnNode::Other if hint_type == HintType::Tmpfs => return Err(TmpfsOverNonEmptyDir),
        // The author's documented escape hatch: a bind hint on another volume is passed on as written.
        VolumeOnNode::Other => return Ok(Backing { hint_type, share, mount_type: HintType::Bind, changed: None }),
        VolumeOnNode::EmptyDir { medium, empty, force_shared } => (medium, empty, force_shared),
    };
    Ok(if force_shared {
        shared_bind(BackingChange::ForceShared)
    } else if !empty {
        shared_bind(BackingChange::NotEmpty)
    } else {
        match medium {
            // A memory-backed sandbox tmpfs works on every runsc.
            EmptyDirMedium::Memory => {
                Backing { hint_type: HintType::Tmpfs, share, mount_type: HintType::Tmpfs, changed: None }
            }
            // A tmpfs hint over the bind mount is disk-backed through the filestore file, which only newer runsc
            // can do; older ones fail the container ("gofer mount requires a connection FD"), so they keep the
            // gofer.
            EmptyDirMedium::Disk
                if release().unwrap_or(RunscRelease::OLDEST_SUPPORTED).supports_disk_backed_tmpfs() =>
            {
                Backing { hint_type: HintType::Tmpfs, share, mount_type: HintType::Bind, changed: None }
            }
            EmptyDirMedium::Disk => shared_bind(BackingChange::NoDiskBackedTmpfs),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use EmptyDirMedium::{Disk, Memory};
    use HintType::{Bind, Tmpfs};
    use Share::{Container, Pod, Shared};

    const OLD: Option<RunscRelease> = Some(RunscRelease::DEBIAN_BOOKWORM);
    const NEW: Option<RunscRelease> = Some(RunscRelease::VALUED_OPTIONS);

    fn empty_dir(medium: EmptyDirMedium, empty: bool, force_shared: bool) -> VolumeOnNode {
        VolumeOnNode::EmptyDir { medium, empty, force_shared }
    }

    #[test]
    fn decision_table() {
        // (hint type and share as the node finds them, volume, release) -> (hint type, share, mount type)
        let rows = [
            // The webhook's hints: `tmpfs` for Memory, `bind` for disk.
            (Tmpfs, Pod, empty_dir(Memory, true, false), OLD, (Tmpfs, Pod, Tmpfs)),
            (Tmpfs, Container, empty_dir(Memory, true, false), None, (Tmpfs, Container, Tmpfs)),
            (Bind, Pod, empty_dir(Disk, true, false), NEW, (Tmpfs, Pod, Bind)),
            (Bind, Pod, empty_dir(Disk, true, false), OLD, (Bind, Shared, Bind)),
            (Bind, Pod, empty_dir(Disk, true, false), None, (Bind, Shared, Bind)),
            // A disk emptyDir whose hint gVisor's shim already rewrote to a disk-backed `tmpfs`: the medium on
            // the node decides, so the 2022 runsc keeps the gofer.
            (Tmpfs, Pod, empty_dir(Disk, true, false), OLD, (Bind, Shared, Bind)),
            (Tmpfs, Pod, empty_dir(Disk, true, false), None, (Bind, Shared, Bind)),
            (Tmpfs, Pod, empty_dir(Disk, true, false), NEW, (Tmpfs, Pod, Bind)),
            // A Memory emptyDir whose hint says `bind` is still memory-backed.
            (Bind, Pod, empty_dir(Memory, true, false), OLD, (Tmpfs, Pod, Tmpfs)),
            (Bind, Container, empty_dir(Memory, true, false), NEW, (Tmpfs, Container, Tmpfs)),
            // Files on the host or the author's force-shared: a shared bind, whatever the medium.
            (Tmpfs, Pod, empty_dir(Memory, false, false), NEW, (Bind, Shared, Bind)),
            (Bind, Container, empty_dir(Disk, false, false), NEW, (Bind, Shared, Bind)),
            (Tmpfs, Pod, empty_dir(Memory, true, true), NEW, (Bind, Shared, Bind)),
            (Bind, Pod, empty_dir(Disk, true, true), OLD, (Bind, Shared, Bind)),
            (Bind, Container, VolumeOnNode::Other, NEW, (Bind, Container, Bind)),
            (Bind, Pod, VolumeOnNode::Other, OLD, (Bind, Pod, Bind)),
        ];
        for (hint_type, share, volume, release, want) in rows {
            let got = decide_backing(hint_type, share, volume, || release).unwrap();
            let mount_only = decide_backing(hint_type, share, volume, || None).unwrap();
            assert_eq!(got.mount_type, mount_only.mount_type, "the mount type never depends on the release");
            assert_eq!(
                (got.hint_type, got.share, got.mount_type),
                want,
                "{hint_type:?} {share:?} {volume:?} {release:?}"
            );
        }
        let changed = |hint_type, volume, release| decide_backing(hint_type, Pod, volume, || release).unwrap().changed;
        assert_eq!(changed(Tmpfs, empty_dir(Memory, true, true), NEW), Some(BackingChange::ForceShared));
        assert_eq!(changed(Tmpfs, empty_dir(Memory, false, false), NEW), Some(BackingChange::NotEmpty));
        assert_eq!(changed(Tmpfs, empty_dir(Disk, true, false), OLD), Some(BackingChange::NoDiskBackedTmpfs));
        assert_eq!(changed(Bind, empty_dir(Memory, true, false), OLD), None);
    }

    /// What a node completed (this hook, or a shim before it) decides the same again: completing twice changes
    /// nothing.
    #[test]
    fn a_decided_hint_decides_the_same_again() {
        for medium in [Memory, Disk] {
            for (empty, force_shared) in [(true, false), (false, false), (true, true)] {
                for release in [OLD, NEW, None] {
                    for (hint_type, share) in [(Tmpfs, Pod), (Bind, Container), (Bind, Shared)] {
                        let volume = empty_dir(medium, empty, force_shared);
                        let first = decide_backing(hint_type, share, volume, || release).unwrap();
                        let again = decide_backing(first.hint_type, first.share, volume, || release).unwrap();
                        assert_eq!(again, first, "{hint_type:?} {share:?} {volume:?} {release:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_release_is_asked_only_when_it_decides() {
        let asked = std::cell::Cell::new(0);
        let release = || {
            asked.set(asked.get() + 1);
            NEW
        };
        decide_backing(Tmpfs, Pod, empty_dir(Memory, true, false), release).unwrap();
        decide_backing(Bind, Pod, empty_dir(Memory, true, false), release).unwrap();
        decide_backing(Bind, Pod, empty_dir(Disk, false, false), release).unwrap();
        decide_backing(Bind, Pod, VolumeOnNode::Other, release).unwrap();
        assert_eq!(asked.get(), 0);
        decide_backing(Bind, Pod, empty_dir(Disk, true, false), release).unwrap();
        decide_backing(Tmpfs, Pod, empty_dir(Disk, true, false), release).unwrap();
        assert_eq!(asked.get(), 2);
    }

    #[test]
    fn never_tmpfs_over_another_volume() {
        for release in [OLD, NEW, None] {
            assert_eq!(decide_backing(Tmpfs, Pod, VolumeOnNode::Other, || release), Err(TmpfsOverNonEmptyDir));
        }
    }

    #[test]
    fn only_a_regular_file_is_a_filestore() {
        assert!(is_filestore_entry(".gvisor.filestore.1234", true));
        assert!(!is_filestore_entry(".gvisor.filestore.1234", false));
        assert!(!is_filestore_entry(".gvisor.filestore", true));
        assert!(!is_filestore_entry("data", true));
    }
}
