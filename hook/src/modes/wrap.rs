//! `wrap`, and the hook standing in for runsc: complete the bundle runsc is about to load, then become runsc.
//!
//! The inherited stdio is the container's, so nothing is written there unless the create fails: log lines go
//! to the runtime's `--log-fd`/`--log` in its `--log-format`, else to hook.json's `log`, else nowhere. A
//! node-side failure leaves the spec as it was (runsc then reports its own error) unless `--strict`.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mount_hints_hook::bundle::{read_config, write_config};
use mount_hints_hook::config::{Flags, Settings};
use mount_hints_hook::logging::{dup_fd, open_append, LineLayer, LogFormat};
use mount_hints_hook::runtime::{exec_runtime, parse_runtime_args, RuntimeCall};
use mount_hints_hook::{complete, Error};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use super::{host_node, log_completion, log_level};
use crate::cli::WrapArgs;

pub fn run(args: WrapArgs) -> ExitCode {
    wrap(&args.node.flags(args.runtime.clone()), &args.args)
}

/// Called as runsc itself (gVisor shim `binary_name`, CRI-O `runtime_path`): every argument is runsc's.
pub fn stand_in(args: &[OsString]) -> ExitCode {
    wrap(&Flags::default(), args)
}

fn wrap(flags: &Flags, args: &[OsString]) -> ExitCode {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let call = parse_runtime_args(args, &cwd);
    let settings = Settings::load(flags);
    let logging = log_sink(&call, settings.as_ref().ok());
    if let Some((file, format)) = logging {
        let subscriber = tracing_subscriber::registry().with(LineLayer::new(file, format).with_filter(log_level()));
        let _ = tracing::subscriber::set_global_default(subscriber);
    }
    // Only returns when the runtime could not be started.
    let error = match settings {
        Ok(settings) => complete_then_exec(&settings, &call, args),
        Err(e) => e.into(),
    };
    tracing::error!("{error}");
    // The create fails, so the container never runs: say so on stderr too, where runsc reports its own fatal
    // errors and callers look for them.
    eprintln!("mount-hints-hook: {error}");
    ExitCode::FAILURE
}

/// The runtime's log (`--log-fd` wins over `--log`, as in runsc), else hook.json's.
fn log_sink(call: &RuntimeCall, settings: Option<&Settings>) -> Option<(File, LogFormat)> {
    let runtime = call.log.fd.and_then(|fd| dup_fd(fd).ok()).or_else(|| call.log.file.as_deref().and_then(open));
    if let Some(file) = runtime {
        return Some((file, call.log.format));
    }
    let settings = settings?;
    Some((open(settings.log.as_deref()?)?, settings.log_format))
}

fn open(path: &Path) -> Option<File> {
    open_append(path).ok()
}

fn complete_then_exec(settings: &Settings, call: &RuntimeCall, args: &[OsString]) -> Error {
    // A runtime path that leads back here (hook.json naming the hook, or a runsc symlink or hard link to it)
    // would exec forever; refuse it with the fix. Compared as files (two stats), not as resolved paths (a
    // readlink per path component).
    if is_this_hook(&settings.runtime) {
        return Error::Usage(format!(
            "the runtime {} is this hook itself: set \"runtime\" in hook.json (or --runtime) to the real runsc",
            settings.runtime.display()
        ));
    }
    if let Some(bundle) = &call.bundle {
        match complete_bundle(settings, bundle) {
            Ok(()) => {}
            Err(e) if settings.strict => return e,
            Err(e) => tracing::error!(bundle = %bundle.display(), "left unchanged: {e}"),
        }
    }
    exec_runtime(&settings.runtime, args)
}

fn is_this_hook(runtime: &Path) -> bool {
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let me = std::fs::metadata("/proc/self/exe").map(id);
    me.is_ok_and(|me| std::fs::metadata(runtime).map(id).is_ok_and(|it| it == me))
}

fn complete_bundle(settings: &Settings, bundle: &Path) -> Result<(), Error> {
    let spec = read_config(bundle)?;
    let completion = complete(&spec, &host_node(settings, true), settings.strict)?;
    log_completion(&completion, &bundle.display().to_string());
    if !completion.changes.is_empty() {
        write_config(bundle, &completion.spec)?;
    }
    Ok(())
}
