//! runsc's command line read the way runsc reads it, so the wrapper completes exactly the bundle runsc is about
//! to load; and handing over to the real runsc with the arguments untouched.
//!
//! runsc parses with Go's `flag` package, twice: global flags, then the first non-flag token names the
//! subcommand, whose own flags follow. Go's rules: `-name` and `--name` are the same; `-name=value` or
//! `-name value` for flags that take a value (the next token is taken even when it starts with `-`); booleans
//! take no separate value (`-debug`, `-debug=false`); parsing stops at the first non-flag token or after `--`.
//! So a flag's value is never a subcommand (`--root create start ...` starts), and in `create ID --bundle B`
//! the flag is an argument: runsc reads the working directory's config.json.

use std::ffi::{OsStr, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::logging::LogFormat;
use crate::Error;

/// runsc's global flags that take no value, over the releases in use (2022-12 to current; `runsc/config/flags.go`
/// and the deprecated ones, plus `help`, `h` and `version` from runsc's main). Every other known global flag
/// takes a value.
const GLOBAL_BOOLS: &[&str] = &[
    "EXPERIMENTAL-afxdp",
    "EXPERIMENTAL-xdp-need-wakeup",
    "TESTONLY-afs-syscall-panic",
    "TESTONLY-allow-packet-endpoint-write",
    "TESTONLY-autosave-resume",
    "TESTONLY-nftables",
    "TESTONLY-unsafe-nonroot",
    "allow-connected-on-save",
    "allow-flag-override",
    "allow-live-tcp-migration",
    "allow-packet-socket-write",
    "allow-rootfs-tar-annotation",
    "allow-suid",
    "alsologtostderr",
    "app-huge-pages",
    "buffer-pooling",
    "cgroupfs",
    "cpu-num-from-quota",
    "debug",
    "debug-to-user-log",
    "directfs",
    "enable-core-tags",
    "fsgofer-host-uds",
    "fuse",
    "gso",
    "gvisor-gro",
    "gvisor-marker-file",
    "h",
    "help",
    "ignore-cgroups",
    "iouring",
    "kvm-use-cpu-nums",
    "lisafs",
    "log-packets",
    "mount-cgroup-v2",
    "net-disconnect-ok",
    "net-raw",
    "nvproxy",
    "nvproxy-allow-unsupported-driver",
    "nvproxy-docker",
    "oci-seccomp",
    "overlay",
    "pause-external-networking",
    "profile",
    "rdmaproxy",
    "reproduce-nat",
    "reproduce-nftables",
    "rootless",
    "rx-checksum-offload",
    "save-restore-netstack",
    "software-gso",
    "strace",
    "strace-event",
    "systemd-cgroup",
    "systrap-disable-fast-path",
    "systrap-disable-syscall-patching",
    "tpuproxy",
    "tx-checksum-offload",
    "version",
    "vfs2",
];

/// runsc's global flags that take a value.
const GLOBAL_VALUES: &[&str] = &[
    "EXPERIMENTAL-xdp",
    "TESTONLY-autosave-image-path",
    "TESTONLY-test-name-env",
    "character-device-policy",
    "control-rpc-stop-timeout",
    "coverage-fd",
    "coverage-report",
    "dcache",
    "debug-command",
    "debug-log",
    "debug-log-fd",
    "debug-log-format",
    "fdlimit",
    "file-access",
    "file-access-mounts",
    "final-metrics-log",
    "gofer-network-namespace",
    "host-fifo",
    "host-settings",
    "host-uds",
    "log",
    "log-fd",
    "log-format",
    "metric-server",
    "network",
    "network-processors-per-channel",
    "num-network-channels",
    "nvproxy-allowed-driver-capabilities",
    "nvproxy-driver-version",
    "overlay2",
    "override-procs",
    "panic-log",
    "panic-log-fd",
    "panic-signal",
    "pcap-log",
    "platform",
    "platform_device_path",
    "pod-init-config",
    "profile-block",
    "profile-cpu",
    "profile-gc-interval",
    "profile-heap",
    "profile-mutex",
    "profiling-metrics",
    "profiling-metrics-log",
    "profiling-metrics-rate-us",
    "qdisc",
    "qdisc-tbf-burst",
    "qdisc-tbf-rate",
    "ref-leak-mode",
    "restore-spec-validation",
    "root",
    "shared-root",
    "sidecar-release-enforcement-policy",
    "strace-log-size",
    "strace-syscalls",
    "trace",
    "traceback",
    "watchdog-action",
];

/// runsc's subcommands (`Name()` of every command registered in runsc's main), for telling a newer flag's
/// value from a subcommand, and for keeping the hook's own mode names apart from them.
pub const SUBCOMMANDS: &[&str] = &[
    "boot",
    "checkpoint",
    "commands",
    "cpu-features",
    "create",
    "debug",
    "delete",
    "do",
    "events",
    "exec",
    "export-metrics",
    "features",
    "flags",
    "fscheckpoint",
    "gofer",
    "help",
    "install",
    "kill",
    "list",
    "metric-metadata",
    "metric-server",
    "mitigate",
    "nvproxy",
    "pause",
    "platforms",
    "port-forward",
    "ps",
    "read",
    "read-control",
    "restore",
    "resume",
    "run",
    "sandboxexec",
    "spec",
    "start",
    "state",
    "symbolize",
    "tar",
    "trace",
    "umount",
    "uninstall",
    "update",
    "usage",
    "wait",
    "write-control",
];

/// The subcommands that load `<bundle>/config.json` (`specutils.ReadSpec` in `runsc/cmd`): `create`, `run`,
/// and `restore`, which builds the container from the bundle like `create`. With their flags: `run` and
/// `restore` take every `create` flag.
const CREATE_BOOLS: &[&str] = &["fs-restore-direct"];
const CREATE_VALUES: &[&str] = &["bundle", "console-socket", "pid-file", "user-log", "fs-restore-image-path"];
const RUN_BOOLS: &[&str] = &["detach"];
const RUN_VALUES: &[&str] = &["pass-fd", "exec-fd"];
const RESTORE_BOOLS: &[&str] = &["detach", "direct", "background", "no-subreaper"];
const RESTORE_VALUES: &[&str] = &["image-path", "work-path"];

fn reads_spec(subcommand: &str) -> Option<[FlagSet; 2]> {
    let create = FlagSet { bools: CREATE_BOOLS, values: CREATE_VALUES };
    match subcommand {
        "create" => Some([create, FlagSet { bools: &[], values: &[] }]),
        "run" => Some([create, FlagSet { bools: RUN_BOOLS, values: RUN_VALUES }]),
        "restore" => Some([create, FlagSet { bools: RESTORE_BOOLS, values: RESTORE_VALUES }]),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
struct FlagSet {
    bools: &'static [&'static str],
    values: &'static [&'static str],
}

/// What the wrapper needs from a runsc command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeCall {
    /// `None` when runsc would run no subcommand: `--help`, `--version`, no arguments, or flags it refuses.
    pub subcommand: Option<String>,
    /// The bundle whose config.json the subcommand loads, absolute; `None` when it loads none.
    pub bundle: Option<PathBuf>,
    /// Where runsc reports errors: `--log-fd`, else `--log`, in `--log-format`.
    pub log: RuntimeLog,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeLog {
    pub fd: Option<RawFd>,
    pub file: Option<PathBuf>,
    pub format: LogFormat,
}

/// Go's `strconv.ParseBool`, which `flag` uses for `-name=value` on a boolean.
fn go_bool(value: &OsStr) -> Option<bool> {
    match value.as_bytes() {
        b"1" | b"t" | b"T" | b"true" | b"TRUE" | b"True" => Some(true),
        b"0" | b"f" | b"F" | b"false" | b"FALSE" | b"False" => Some(false),
        _ => None,
    }
}

/// The flags one pass saw, in order: name and value (`None` for a boolean given bare).
type SeenFlags = Vec<(String, Option<OsString>)>;

/// runsc would stop with a usage error.
#[derive(Debug)]
struct Refused;

/// One Go `flag` pass over `args`: the flags seen (name, value) and the index of the first argument after
/// them. A flag none of `sets` knows (a runsc newer than this list) is taken as a boolean when the next token
/// is absent, a flag, or a subcommand name (`subcommand_follows`), and as taking a value otherwise.
fn parse_flags(args: &[OsString], sets: &[FlagSet], subcommand_follows: bool) -> Result<(SeenFlags, usize), Refused> {
    let mut seen = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_bytes();
        if arg.len() < 2 || arg[0] != b'-' {
            break;
        }
        let body = match arg.strip_prefix(b"--") {
            Some([]) => {
                i += 1;
                break;
            }
            Some(body) => body,
            None => &arg[1..],
        };
        if body.first().is_none_or(|&b| b == b'-' || b == b'=') {
            return Err(Refused);
        }
        let (name, inline) = match body.iter().position(|&b| b == b'=') {
            Some(eq) => (&body[..eq], Some(OsStr::from_bytes(&body[eq + 1..]).to_owned())),
            None => (body, None),
        };
        let name = std::str::from_utf8(name).map_err(|_| Refused)?;
        i += 1;
        let is_bool = if sets.iter().any(|s| s.bools.contains(&name)) {
            true
        } else if sets.iter().any(|s| s.values.contains(&name)) {
            false
        } else if name == "h" || name == "help" {
            // Undefined -h/-help: Go's flag prints the usage and fails.
            return Err(Refused);
        } else {
            args.get(i).is_none_or(|next| {
                let next = next.as_bytes();
                next.starts_with(b"-")
                    || (subcommand_follows && std::str::from_utf8(next).is_ok_and(|s| SUBCOMMANDS.contains(&s)))
            })
        };
        let value = match (is_bool, inline) {
            (true, Some(v)) => {
                go_bool(&v).ok_or(Refused)?;
                Some(v)
            }
            (true, None) => None,
            (false, Some(v)) => Some(v),
            (false, None) => {
                let v = args.get(i).ok_or(Refused)?.clone();
                i += 1;
                Some(v)
            }
        };
        seen.push((name.to_owned(), value));
    }
    Ok((seen, i))
}

/// The last value given for `name` (Go keeps the last).
fn last<'a>(flags: &'a [(String, Option<OsString>)], name: &str) -> Option<&'a Option<OsString>> {
    flags.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v)
}

fn is_set(flags: &[(String, Option<OsString>)], name: &str) -> bool {
    last(flags, name).is_some_and(|v| v.as_deref().is_none_or(|v| go_bool(v) == Some(true)))
}

pub fn parse_runtime_args(args: &[OsString], cwd: &Path) -> RuntimeCall {
    let global = FlagSet { bools: GLOBAL_BOOLS, values: GLOBAL_VALUES };
    let Ok((globals, at)) = parse_flags(args, &[global], true) else { return RuntimeCall::default() };
    let value = |name: &str| last(&globals, name).cloned().flatten();
    let log = RuntimeLog {
        fd: value("log-fd").and_then(|v| v.to_str()?.parse().ok()).filter(|fd: &RawFd| *fd >= 0),
        file: value("log").filter(|v| !v.is_empty()).map(|v| cwd.join(v)),
        format: value("log-format").and_then(|v| v.to_str()?.parse().ok()).unwrap_or_default(),
    };
    if ["help", "h", "version"].iter().any(|f| is_set(&globals, f)) {
        return RuntimeCall { subcommand: None, bundle: None, log };
    }
    let Some(subcommand) = args.get(at).map(|s| s.to_string_lossy().into_owned()) else {
        return RuntimeCall { subcommand: None, bundle: None, log };
    };
    let bundle = reads_spec(&subcommand).and_then(|sets| {
        let rest = &args[at + 1..];
        let (flags, positional) = parse_flags(rest, &sets, false).ok()?;
        // Without a container ID runsc stops before it reads the spec.
        if positional >= rest.len() {
            return None;
        }
        let dir = last(&flags, "bundle").cloned().flatten().filter(|b| !b.is_empty());
        // runsc opens a relative bundle from its working directory, which is ours.
        Some(dir.map_or_else(|| cwd.to_owned(), |d| cwd.join(d)))
    });
    RuntimeCall { subcommand: Some(subcommand), bundle, log }
}

/// Replaces this process with `runtime` and `args`; returns only if that failed.
pub fn exec_runtime(runtime: &Path, args: &[OsString]) -> Error {
    let source = Command::new(runtime).args(args).exec();
    Error::Exec { path: runtime.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &[&str]) -> RuntimeCall {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse_runtime_args(&args, Path::new("/cwd"))
    }

    /// (arguments, subcommand, bundle whose config.json runsc reads)
    const TABLE: &[(&str, Option<&str>, Option<&str>)] = &[
        // Every spelling of the bundle.
        ("create --bundle /b id", Some("create"), Some("/b")),
        ("create --bundle=/b id", Some("create"), Some("/b")),
        ("create -bundle /b id", Some("create"), Some("/b")),
        ("create -bundle=rel id", Some("create"), Some("/cwd/rel")),
        ("create --bundle= id", Some("create"), Some("/cwd")),
        ("create --bundle /a --bundle /b id", Some("create"), Some("/b")),
        ("create --pid-file /p id", Some("create"), Some("/cwd")),
        ("create --pid-file --bundle id", Some("create"), Some("/cwd")),
        ("create --console-socket /s --bundle /b --pid-file /p id", Some("create"), Some("/b")),
        // The subcommand's flags end at the container ID: runsc reads the working directory.
        ("create id --bundle /b", Some("create"), Some("/cwd")),
        ("create -- --bundle /b", Some("create"), Some("/cwd")),
        // No container ID, an unknown -h, a flag without its value: runsc stops before reading.
        ("create --bundle /b", Some("create"), None),
        ("create -h --bundle /b id", Some("create"), None),
        ("create --bundle", Some("create"), None),
        ("create --fs-restore-direct=maybe --bundle /b id", Some("create"), None),
        // run and restore read the bundle too, with their own flags.
        ("run --detach --bundle /b id", Some("run"), Some("/b")),
        ("run --pass-fd 3:3 --exec-fd 4 -bundle=/b id", Some("run"), Some("/b")),
        ("restore --image-path /img --detach --bundle /b id", Some("restore"), Some("/b")),
        ("restore --work-path /w --no-subreaper --bundle=/b id", Some("restore"), Some("/b")),
        ("restore --image-path /img id", Some("restore"), Some("/cwd")),
        // Global flags and their values.
        ("--root /run/runsc --network none --debug create --bundle /b id", Some("create"), Some("/b")),
        ("--root create start id", Some("start"), None),
        ("--root=create start id", Some("start"), None),
        ("--debug-command start create --bundle /b id", Some("create"), Some("/b")),
        ("--log /l --log-format json create --bundle /b id", Some("create"), Some("/b")),
        ("--debug=false --systemd-cgroup create --bundle /b id", Some("create"), Some("/b")),
        ("-root /r -platform ptrace run -bundle /b id", Some("run"), Some("/b")),
        ("--debug true create --bundle /b id", Some("true"), None),
        ("--root --debug create --bundle /b id", Some("create"), Some("/b")),
        // A flag this list does not know: a boolean before a subcommand, otherwise it takes a value.
        ("--some-new-bool create --bundle /b id", Some("create"), Some("/b")),
        ("--some-new-value /x create --bundle /b id", Some("create"), Some("/b")),
        // Other subcommands read no bundle.
        ("--root /r start id", Some("start"), None),
        ("--root /r delete --force id", Some("delete"), None),
        ("--root /r checkpoint --image-path /i id", Some("checkpoint"), None),
        ("exec --bundle /b id", Some("exec"), None),
        ("spec --bundle /b", Some("spec"), None),
        // Help and version: runsc prints and exits.
        ("--version", None, None),
        ("--version create --bundle /b id", None, None),
        ("-h", None, None),
        ("--help create --bundle /b id", None, None),
        ("--version=false create --bundle /b id", Some("create"), Some("/b")),
        ("help create", Some("help"), None),
        ("", None, None),
        // Flag syntax runsc refuses.
        ("---root /r create --bundle /b id", None, None),
        ("--root", None, None),
        ("--debug=maybe create --bundle /b id", None, None),
    ];

    #[test]
    fn argument_table() {
        for (args, subcommand, bundle) in TABLE {
            let parsed = call(&args.split_whitespace().collect::<Vec<_>>());
            assert_eq!(parsed.subcommand.as_deref(), *subcommand, "subcommand of `{args}`");
            assert_eq!(parsed.bundle.as_deref(), bundle.map(Path::new), "bundle of `{args}`");
        }
    }

    #[test]
    fn the_runtime_log_is_found_like_runsc_finds_it() {
        let parsed = call(&["--log", "/var/log/runsc.log", "--log-format=json", "create", "--bundle", "/b", "id"]);
        assert_eq!(parsed.log.file.as_deref(), Some(Path::new("/var/log/runsc.log")));
        assert_eq!(parsed.log.format, LogFormat::Json);
        assert_eq!(call(&["-log", "rel.log", "start", "id"]).log.file.as_deref(), Some(Path::new("/cwd/rel.log")));
        assert_eq!(call(&["--log-fd", "5", "start", "id"]).log.fd, Some(5));
        assert_eq!(call(&["--log-format", "json-k8s", "start", "id"]).log.format, LogFormat::JsonK8s);
        assert_eq!(call(&["start", "id"]).log, RuntimeLog::default());
        // A value that follows a subcommand is the subcommand's, not runsc's log.
        assert_eq!(call(&["start", "--log", "/l", "id"]).log.file, None);
    }

    #[test]
    fn flag_lists_do_not_overlap() {
        for name in GLOBAL_BOOLS {
            assert!(!GLOBAL_VALUES.contains(name), "{name}");
        }
        for sub in ["create", "run", "restore"] {
            let sets = reads_spec(sub).unwrap();
            for set in sets {
                for b in set.bools {
                    assert!(sets.iter().all(|s| !s.values.contains(b)), "{sub} {b}");
                }
            }
        }
    }
}
