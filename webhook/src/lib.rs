//! mount-hints webhook: adds gVisor mount hints to Pods that run under gVisor.
//!
//! The [`mutation`] is a pure function over the [`pod::PodFacts`] a request carries; [`preview`] applies it to
//! manifests offline. The binary (`main.rs`) is a thin shell over these.

pub mod certs;
mod error;
pub mod logging;
pub mod mutation;
pub mod pod;
pub mod preview;
pub mod serve;
pub mod settings;

pub use error::Error;
pub use mutation::{mutate, EmptyDirHint, Mutation};
pub use pod::PodFacts;
pub use settings::{GvisorScope, MutationSettings, SharePolicy};
