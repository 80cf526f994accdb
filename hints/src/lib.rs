//! The gVisor mount-hint contract, shared by both halves of mount-hints.
//!
//! runsc reads pod annotations `dev.gvisor.spec.mount.<NAME>.<FIELD>` from the sandbox container's spec
//! (`google/gvisor` `runsc/boot/mount_hints.go`). Getting one wrong is expensive: the 2022 runsc refuses to boot
//! the whole pod on an unknown field, a wrong-case value or an unknown option, and every runsc refuses a key
//! whose remainder does not split into exactly two parts. This crate is the one place that knows those rules, so
//! the webhook (which writes `type`/`share`/`options`) and the node hook (which writes `source` and may rewrite
//! `type`/`share`) cannot disagree about them.
//!
//! It has no I/O and no heavy dependencies on purpose: the node hook runs once per container create.

mod backing;
mod force_shared;
mod hint;
mod key;
mod names;
mod release;
mod values;

pub use backing::{
    decide_backing, is_filestore_entry, Backing, BackingChange, EmptyDirMedium, TmpfsOverNonEmptyDir, VolumeOnNode,
    FILESTORE_PREFIX,
};
pub use force_shared::{force_shared, parse_go_bool, ForceSharedError};
pub use hint::{check_field, group_hints, FieldError, HintGroups, Incomplete, RawHint, REQUIRED_FIELDS};

pub use key::{
    force_shared_key, hint_key, parse_force_shared_key, parse_hint_key, HintField, HintKey, KeyError, EMPTY_DIR_PREFIX,
    FORCE_SHARED_SUFFIX, GVISOR_PREFIX, MOUNT_PREFIX,
};
pub use names::{
    is_dns1123_label, is_valid_annotation_key, max_volume_name_len, validate_volume_name, NameError,
    ANNOTATION_NAME_MAX,
};
pub use release::{ReleaseError, RunscRelease};
pub use values::{parse_options, Directfs, HintType, MountOption, OptionsError, Share, ValueError, FLAG_OPTIONS};

/// Name of the hint runsc uses for the pod's shared `/dev/shm` (gVisor's shim uses the same name, so a pod
/// completed by either has one `/dev/shm` hint, never two).
pub const DEV_SHM_HINT_NAME: &str = "gvisorinternaldevshm";
