//! The command line: one subcommand per mode. Anything else is runsc's command line (the hook standing in for
//! runsc), so the set of mode names is read from this definition, never repeated.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Command, CommandFactory, FromArgMatches, Parser, Subcommand};
use mount_hints::RunscRelease;
use mount_hints_hook::config::{Flags, DEFAULT_CONFIG, DEFAULT_KUBELET_ROOT, DEFAULT_RUNTIME, HOOK_PATH};
use mount_hints_hook::doctor::{DEFAULT_CONTAINERD_CONFIG, DEFAULT_CRIO_CONFIG, DEFAULT_CRIO_CONFIG_DIR};
use mount_hints_hook::install::DEFAULT_RUNSC_TOML;
use mount_hints_hook::runtime::SUBCOMMANDS;

/// Completes gVisor mount hints in OCI bundles before runsc reads them. Called with runsc's arguments (no
/// mode first), it stands in for runsc: `--help`, `--version` and `help` are then runsc's.
#[derive(Parser)]
#[command(name = "mount-hints-hook", disable_help_subcommand = true, disable_version_flag = true)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Subcommand)]
pub enum Mode {
    /// Stand in front of runsc: complete config.json on `create`/`run`/`restore`, then exec the runtime unchanged.
    Wrap(WrapArgs),
    /// Podman hooks.d `precreate` stage: the config on stdin, the completed config on stdout.
    Precreate(NodeArgs),
    /// OCI `prestart`/`createRuntime` hook (state on stdin): report hints runsc loaded incomplete.
    OciHook(NodeArgs),
    /// Print what the completion would change in a bundle, without writing.
    Inspect(InspectArgs),
    /// Check a node's containerd / CRI-O configuration for what mount hints need; exit 1 when something is missing.
    Doctor(DoctorArgs),
    /// Install the hook into a host root and point the gVisor shim's runsc.toml at it.
    Install(InstallArgs),
    /// Undo `install`: runsc.toml and hook.json as they were, the hook removed.
    Uninstall(HostRootArgs),
    /// Wait for SIGTERM or SIGINT, then exit 0 (the DaemonSet's long-running container; the image has no shell).
    Idle,
    /// Print the hook's version.
    Version,
}

#[derive(Args, Clone, Debug)]
pub struct NodeArgs {
    #[arg(long, value_name = "DIR", help = format!(
        "The kubelet's root directory (symlinks are resolved) [default: hook.json's, else {DEFAULT_KUBELET_ROOT}]"
    ))]
    pub kubelet_root: Option<PathBuf>,
    /// The runsc release in use (YYYYMMDD, release-YYYYMMDD.N or 0.0~YYYYMMDD.N); detected from the runtime
    /// in wrap mode when not given, the strictest rules otherwise.
    #[arg(long, value_name = "RELEASE")]
    pub runsc_release: Option<RunscRelease>,
    /// Fail instead of dropping a hint that cannot be completed.
    #[arg(long)]
    pub strict: bool,
}

impl NodeArgs {
    pub fn flags(&self, runtime: Option<PathBuf>) -> Flags {
        Flags {
            runtime,
            kubelet_root: self.kubelet_root.clone(),
            runsc_release: self.runsc_release,
            strict: self.strict,
        }
    }
}

#[derive(Args, Debug)]
pub struct WrapArgs {
    #[arg(long, value_name = "PATH", help = format!("The real runtime [default: hook.json's, else {DEFAULT_RUNTIME}]"))]
    pub runtime: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeArgs,
    /// The runtime's arguments.
    #[arg(last = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Check the node mounted at DIR (every path below is looked up inside it).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONTAINERD_CONFIG)]
    pub containerd_config: PathBuf,
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CRIO_CONFIG)]
    pub crio_config: PathBuf,
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CRIO_CONFIG_DIR)]
    pub crio_config_dir: PathBuf,
    /// Where the hook is installed on the node.
    #[arg(long, value_name = "PATH", default_value = HOOK_PATH)]
    pub hook_path: PathBuf,
    /// The hook's configuration on the node.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub hook_config: PathBuf,
}

#[derive(Args, Debug)]
pub struct HostRootArgs {
    /// The node's root filesystem as mounted here (the DaemonSet mounts it at /host).
    #[arg(long, value_name = "DIR", required = true)]
    pub host_root: PathBuf,
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    #[command(flatten)]
    pub host: HostRootArgs,
    #[arg(long, value_name = "PATH", help = format!(
        "The gVisor shim's configuration, a path on the node (it must exist) [default: {DEFAULT_RUNSC_TOML}, when present]"
    ))]
    pub runsc_toml: Option<PathBuf>,
}

/// The command-line definition when `args` (without the program name) call one of the modes; `None` when they
/// are runsc's. A mode that shares its name with a runsc subcommand (`install`, `uninstall`) is chosen only with
/// one of its own flags, which runsc's never take, or with `-h`/`--help` (no shim asks runsc's install for its
/// help through the hook).
pub fn mode_command(args: &[OsString]) -> Option<Command> {
    let first = args.first()?.to_str()?;
    // Shims call runsc with its global flags first, and no mode name starts with `-`: the definition, which
    // costs a fair part of the hook's start-up to build, is not built for them.
    if first.starts_with('-') {
        return None;
    }
    let cli = Cli::command();
    let mode = cli.get_subcommands().find(|m| m.get_name() == first)?;
    if !SUBCOMMANDS.contains(&first) {
        return Some(cli);
    }
    let own: Vec<&str> = mode.get_arguments().filter_map(|a| a.get_long()).chain(["help"]).collect();
    let chosen = args[1..].iter().filter_map(|a| a.to_str()).any(|arg| {
        let flag = arg.strip_prefix("--").map(|f| f.split_once('=').map_or(f, |(name, _)| name));
        arg == "-h" || flag.is_some_and(|f| own.contains(&f))
    });
    chosen.then_some(cli)
}

/// The mode `args` (with the program name) call, parsed with `command` from [`mode_command`]: the definition
/// is built once. Exits with clap's message on a usage error, as `Cli::parse` does.
pub fn parse_mode(command: Command, args: &[OsString]) -> Mode {
    let mut matches = command.get_matches_from(args);
    Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut Cli::command()).exit()).mode
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(args: &str) -> bool {
        mode_command(&args.split_whitespace().map(OsString::from).collect::<Vec<_>>()).is_some()
    }

    #[test]
    fn modes_and_runsc_command_lines_are_told_apart() {
        for mode in ["wrap --", "precreate", "oci-hook", "inspect --bundle b", "doctor", "idle", "version"] {
            assert!(names(mode), "{mode}");
        }
        for runsc in ["install --host-root /host", "uninstall --host-root=/host", "install --help", "install -h"] {
            assert!(names(runsc), "{runsc}");
        }
        for runsc in [
            "",
            "--root /r create id",
            "create",
            "--version",
            "-h",
            "--help",
            "help",
            "install",
            "uninstall --x",
            "pause id",
        ] {
            assert!(!names(runsc), "{runsc:?} is runsc's");
        }
    }

    #[test]
    fn no_mode_hides_a_runsc_subcommand_unless_it_needs_a_flag_runsc_lacks() {
        for mode in Cli::command().get_subcommands() {
            if SUBCOMMANDS.contains(&mode.get_name()) {
                assert!(mode.get_arguments().any(|a| a.is_required_set()), "{} would hide runsc's", mode.get_name());
                // runsc's install and uninstall take single-dash Go flags of their own, none of the hook's.
                assert!(!names(&format!("{} -runtime runsc", mode.get_name())));
            }
        }
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
