//! One module per mode; what several modes share is here.

pub mod doctor;
pub mod idle;
pub mod inspect;
pub mod install;
pub mod oci_hook;
pub mod precreate;
pub mod wrap;

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use mount_hints_hook::config::Settings;
use mount_hints_hook::{Completion, Error, HostNode, RuntimeRelease};
use tracing_subscriber::filter::LevelFilter;

/// A plain level from `MOUNT_HINTS_LOG` (error, warn, info, debug): the hook runs once per container create,
/// and compiling an EnvFilter's directives would cost more than the completion itself.
pub fn log_level() -> LevelFilter {
    std::env::var("MOUNT_HINTS_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(LevelFilter::INFO)
}

/// Every mode but `wrap` owns its stderr: log lines go there.
pub fn log_to_stderr() {
    tracing_subscriber::fmt()
        .with_max_level(log_level())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

pub fn report(result: Result<(), Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The node as the completion sees it; `detect` asks the runtime for its release when none is configured.
pub fn host_node(settings: &Settings, detect: bool) -> HostNode {
    let release = match (settings.release, detect) {
        (Some(r), _) => RuntimeRelease::Known(Some(r)),
        (None, true) => RuntimeRelease::Detect { runtime: settings.runtime.clone(), cached: Default::default() },
        (None, false) => RuntimeRelease::Known(None),
    };
    HostNode::new(&settings.kubelet_root, release)
}

/// One line per completed spec at info (a node creates many containers), each change at debug.
pub fn log_completion(completion: &Completion, what: &str) {
    if !completion.changes.is_empty() {
        tracing::info!("{what}: {:?} container, {} change(s)", completion.kind, completion.changes.len());
    }
    for change in &completion.changes {
        tracing::debug!("{what}: {change}");
    }
    for warning in &completion.warnings {
        tracing::warn!("{what}: {warning}");
    }
}

pub fn read_stdin() -> Result<Vec<u8>, Error> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).map_err(|source| Error::Read { path: "<stdin>".into(), source })?;
    Ok(input)
}

pub fn version() -> ExitCode {
    println!("mount-hints-hook {}", env!("CARGO_PKG_VERSION"));
    ExitCode::SUCCESS
}
