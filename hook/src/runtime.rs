//! runsc's command line, as the wrapper sees it: which subcommand, which bundle; and handing over to the real
//! runsc with the arguments untouched.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// runsc subcommands, so a flag's value (`--network none`) is not mistaken for one.
const SUBCOMMANDS: &[&str] = &[
    "boot",
    "checkpoint",
    "create",
    "debug",
    "delete",
    "do",
    "events",
    "exec",
    "flags",
    "gofer",
    "help",
    "install",
    "kill",
    "list",
    "mitigate",
    "pause",
    "port-forward",
    "ps",
    "restore",
    "resume",
    "run",
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
];

/// Subcommands that read config.json from the bundle.
const READS_SPEC: &[&str] = &["create", "run"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeCall {
    pub subcommand: Option<String>,
    /// Set for `create` and `run`: `--bundle X`, `--bundle=X`, `-bundle X`, `-b X`, or the working directory.
    pub bundle: Option<PathBuf>,
}

pub fn parse_runtime_args(args: &[OsString], cwd: &Path) -> RuntimeCall {
    let position = args.iter().position(|a| a.to_str().is_some_and(|s| SUBCOMMANDS.contains(&s)));
    let Some(position) = position else { return RuntimeCall { subcommand: None, bundle: None } };
    let subcommand = args[position].to_string_lossy().into_owned();
    if !READS_SPEC.contains(&subcommand.as_str()) {
        return RuntimeCall { subcommand: Some(subcommand), bundle: None };
    }
    let rest = &args[position + 1..];
    let mut bundle = None;
    let mut i = 0;
    while i < rest.len() {
        let arg = rest[i].as_bytes();
        let flag = arg.strip_prefix(b"--").or_else(|| arg.strip_prefix(b"-"));
        if let Some(flag) = flag {
            let (name, value) = match flag.iter().position(|&b| b == b'=') {
                Some(eq) => (&flag[..eq], Some(OsStr::from_bytes(&flag[eq + 1..]).to_owned())),
                None => (flag, None),
            };
            if name == b"bundle" || name == b"b" {
                bundle = value.or_else(|| rest.get(i + 1).cloned());
            }
        }
        i += 1;
    }
    let bundle = bundle.map(PathBuf::from).unwrap_or_else(|| cwd.to_owned());
    let bundle = if bundle.is_absolute() { bundle } else { cwd.join(bundle) };
    RuntimeCall { subcommand: Some(subcommand), bundle: Some(bundle) }
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

    #[test]
    fn finds_the_bundle_in_every_spelling() {
        let global = ["--root", "/run/runsc", "--network", "none", "--debug"];
        for (flags, want) in [
            (vec!["--bundle", "/b1"], "/b1"),
            (vec!["--bundle=/b2"], "/b2"),
            (vec!["-bundle", "/b3"], "/b3"),
            (vec!["-b", "/b4"], "/b4"),
            (vec!["-b=rel"], "/cwd/rel"),
            (vec!["--pid-file", "/p"], "/cwd"),
        ] {
            let mut args: Vec<&str> = global.to_vec();
            args.push("create");
            args.extend(flags);
            args.push("container-id");
            let parsed = call(&args);
            assert_eq!(parsed.subcommand.as_deref(), Some("create"));
            assert_eq!(parsed.bundle, Some(PathBuf::from(want)), "{args:?}");
        }
    }

    #[test]
    fn other_subcommands_have_no_bundle() {
        assert_eq!(call(&["--root", "/r", "start", "id"]).bundle, None);
        assert_eq!(call(&["--root", "/r", "delete", "--force", "id"]).subcommand.as_deref(), Some("delete"));
        assert_eq!(call(&["--version"]).subcommand, None);
        assert_eq!(call(&["run", "--bundle", "/b", "id"]).bundle, Some(PathBuf::from("/b")));
    }
}
