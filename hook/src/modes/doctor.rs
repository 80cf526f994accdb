//! `doctor`: reads a node's runtime configuration (through `--host-root`, so a DaemonSet or a test can check a
//! root that is not `/`) and prints `ok:`/`missing:` lines; the checks themselves are
//! [`mount_hints_hook::doctor`]'s.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mount_hints_hook::config::load_file;
use mount_hints_hook::doctor::{check_containerd, check_crio, check_hook_config, Finding};
use mount_hints_hook::install::HostRoot;

use crate::cli::DoctorArgs;

pub fn run(args: DoctorArgs) -> ExitCode {
    let root = HostRoot::new(&args.host_root);
    let findings = findings(&root, &args);
    let mut out = std::io::stdout().lock();
    for f in &findings {
        let _ = writeln!(out, "{} {}", if f.ok { "ok:     " } else { "missing:" }, f.message);
    }
    if findings.iter().all(|f| f.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn bad(message: String) -> Finding {
    Finding { ok: false, message }
}

/// A node path as seen here; one that cannot be inside the root reads as absent.
fn here(root: &HostRoot, on_node: &Path) -> PathBuf {
    root.path(on_node).unwrap_or_else(|_| PathBuf::from("/nonexistent/outside-the-host-root"))
}

fn read_toml(root: &HostRoot, path: &Path) -> Option<Result<toml::Table, String>> {
    let text = std::fs::read_to_string(here(root, path)).ok()?;
    Some(text.parse::<toml::Table>().map_err(|e| format!("{}: {e}", path.display())))
}

fn is_executable(root: &HostRoot, path: &Path) -> bool {
    std::fs::metadata(here(root, path)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn findings(root: &HostRoot, args: &DoctorArgs) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut seen_runtime = false;
    match read_toml(root, &args.containerd_config) {
        Some(Ok(config)) => {
            seen_runtime = true;
            let runsc_toml = |p: &str| read_toml(root, Path::new(p)).and_then(Result::ok);
            findings.extend(check_containerd(&config, &runsc_toml, &args.hook_path));
        }
        Some(Err(e)) => findings.push(bad(e)),
        None => {}
    }
    let mut crio_files: Vec<PathBuf> = vec![args.crio_config.clone()];
    let mut dropins: Vec<PathBuf> = std::fs::read_dir(here(root, &args.crio_config_dir))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| args.crio_config_dir.join(e.file_name()))
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    dropins.sort();
    crio_files.extend(dropins);
    let mut crio_tables = Vec::new();
    for file in &crio_files {
        match read_toml(root, file) {
            Some(Ok(t)) => crio_tables.push(t),
            Some(Err(e)) => findings.push(bad(e)),
            None => {}
        }
    }
    if !crio_tables.is_empty() {
        seen_runtime = true;
        findings.extend(check_crio(&crio_tables, &args.hook_path));
    }
    if !seen_runtime {
        findings.push(bad(format!(
            "no containerd ({}) or CRI-O ({}) configuration found",
            args.containerd_config.display(),
            args.crio_config.display()
        )));
    }
    if is_executable(root, &args.hook_path) {
        findings.push(Finding { ok: true, message: format!("hook installed at {}", args.hook_path.display()) });
    } else {
        findings.push(bad(format!("hook not installed at {} (or not executable)", args.hook_path.display())));
    }
    let config = load_file(&here(root, &args.hook_config), false).map_err(|e| e.to_string());
    findings.extend(check_hook_config(config, &args.hook_config, &args.hook_path, &|p| is_executable(root, p)));
    findings
}
