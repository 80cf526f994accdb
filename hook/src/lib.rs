//! mount-hints node hook: completes gVisor mount hints in an OCI bundle before runsc reads it.
//!
//! runsc reads `config.json` once, at `runsc create`, before any OCI hook runs, so the completion must happen
//! in front of it: as a wrapper in place of the runsc binary (containerd's gVisor shim `binary_name`, CRI-O's
//! `runtime_path`), or in Podman's `precreate` stage. The [`completion`] is pure; [`bundle`] writes the
//! result safely; [`runtime`] reads runsc's command line and execs the real runsc; [`config`] resolves the
//! settings; [`logging`] keeps log lines out of the container's stdio; [`install`] puts the hook on a node.

pub mod bundle;
pub mod check;
pub mod completion;
pub mod config;
pub mod doctor;
mod error;
pub mod identity;
pub mod install;
pub mod logging;
pub mod node;
pub mod runtime;

pub use completion::{complete, Change, Completion};
pub use error::Error;
pub use identity::{ContainerKind, PodUid};
pub use node::{EmptyDirState, HostNode, NodeView, RuntimeRelease, VolumeDir};
