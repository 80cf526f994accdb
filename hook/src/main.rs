//! mount-hints-hook: runs the mode the first argument names; with anything else it stands in for runsc.

mod cli;
mod modes;

use std::ffi::OsString;
use std::process::ExitCode;

use cli::Mode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let Some(command) = cli::mode_command(&args[1..]) else {
        return modes::wrap::stand_in(&args[1..]);
    };
    let mode = cli::parse_mode(command, &args);
    if !matches!(mode, Mode::Wrap(_)) {
        modes::log_to_stderr();
    }
    match mode {
        Mode::Wrap(args) => modes::wrap::run(args),
        Mode::Precreate(args) => modes::precreate::run(args),
        Mode::OciHook(args) => modes::oci_hook::run(args),
        Mode::Inspect(args) => modes::inspect::run(args),
        Mode::Doctor(args) => modes::doctor::run(args),
        Mode::Install(args) => modes::install::install(args),
        Mode::Uninstall(args) => modes::install::uninstall(args),
        Mode::Idle => modes::idle::run(),
        Mode::Version => modes::version(),
    }
}
