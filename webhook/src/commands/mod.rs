//! The binary's subcommands, one module each; `main.rs` only parses the command line and dispatches.

pub mod certs;
pub mod preview;
pub mod serve;

use std::path::PathBuf;

use clap::Args;
use mount_hints_webhook::{Error, MutationSettings, SharePolicy};

/// Mutation settings shared by every command; flags override the file.
#[derive(Args)]
pub struct SettingsArgs {
    /// Settings file (YAML or JSON): runtimeClassNames, runtimeHandlers, sharePolicy, minRunscRelease,
    /// memorySizeOption, denyAnnotations.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A runtime class name that means gVisor (repeatable; replaces the configured list).
    #[arg(long = "runtime-class", value_name = "NAME")]
    runtime_classes: Vec<String>,
    #[arg(long, value_enum)]
    share_policy: Option<SharePolicy>,
    /// Emit size=<bytes> from a Memory emptyDir's sizeLimit (every node must run runsc >= release-20240501).
    #[arg(long)]
    memory_size_option: bool,
    /// The oldest runsc release on any gVisor node (YYYYMMDD); release-dependent rules (valued options,
    /// directfs) follow it.
    #[arg(long, value_name = "YYYYMMDD")]
    min_runsc_release: Option<mount_hints::RunscRelease>,
}

impl SettingsArgs {
    pub fn load(&self) -> Result<MutationSettings, Error> {
        let mut settings = match &self.config {
            Some(path) => MutationSettings::from_file(path)?,
            None => MutationSettings::default(),
        };
        if !self.runtime_classes.is_empty() {
            settings.runtime_class_names = self.runtime_classes.iter().cloned().collect();
        }
        if let Some(policy) = self.share_policy {
            settings.share_policy = policy;
        }
        settings.memory_size_option |= self.memory_size_option;
        if let Some(release) = self.min_runsc_release {
            settings.min_runsc_release = Some(release);
        }
        settings.validate()?;
        Ok(settings)
    }
}
