//! `install` and `uninstall` as the DaemonSet's init container runs them; the work is the library's
//! [`mount_hints_hook::install`]. Each prints what it did, one line per file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mount_hints_hook::install::{self, HostRoot, Report, DEFAULT_RUNSC_TOML};
use mount_hints_hook::Error;

use super::report;
use crate::cli::{HostRootArgs, InstallArgs};

pub fn install(args: InstallArgs) -> ExitCode {
    let root = HostRoot::new(&args.host.host_root);
    let (runsc_toml, required) = match &args.runsc_toml {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_RUNSC_TOML), false),
    };
    report(current_exe().and_then(|binary| {
        print(&args.host.host_root, install::install(&root, &binary, &runsc_toml, required)?);
        Ok(())
    }))
}

pub fn uninstall(args: HostRootArgs) -> ExitCode {
    report(install::uninstall(&HostRoot::new(&args.host_root)).map_err(Error::from).map(|r| print(&args.host_root, r)))
}

/// The running binary, read through /proc so a binary replaced on disk meanwhile is still the one copied.
fn current_exe() -> Result<PathBuf, Error> {
    let proc = Path::new("/proc/self/exe");
    if proc.exists() {
        return Ok(proc.to_owned());
    }
    std::env::current_exe().map_err(|source| Error::Read { path: proc.to_owned(), source })
}

fn print(host_root: &Path, report: Report) {
    println!("host root {}", host_root.display());
    for line in report {
        println!("  {line}");
    }
}
