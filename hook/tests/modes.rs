//! The binary's modes as runtimes call them: the wrapper in front of a (recording) runtime, with explicit
//! arguments and as a configured stand-in; Podman's precreate; the OCI hook; inspect.

mod fixtures;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use fixtures::*;
use serde_json::Value;

const HOOK: &str = env!("CARGO_BIN_EXE_mount-hints-hook");

/// A runtime that records its arguments and the config.json it was given, so the test sees what runsc would.
fn recording_runtime(dir: &Path) -> PathBuf {
    let path = dir.join("fake-runsc");
    let script = r#"#!/bin/sh
out="$(dirname "$0")/calls"
printf '%s\n' "$*" >> "$out.args"
for a in "$@"; do case "$prev" in --bundle|-b) cp "$a/config.json" "$out.config.json";; esac; prev="$a"; done
[ "$1" = "--version" ] && echo "runsc version 0.0~20240729.0"
exit 0
"#;
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn bundle_with(dir: &Path, spec: &Value) -> PathBuf {
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(spec).unwrap()).unwrap();
    std::fs::set_permissions(bundle.join("config.json"), std::fs::Permissions::from_mode(0o640)).unwrap();
    bundle
}

fn run(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(HOOK)
        .args(args)
        .envs(env.iter().copied())
        // An empty configuration, so a hook.json on the test machine cannot change the outcome.
        .env("MOUNT_HINTS_HOOK_CONFIG", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/empty-hook.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn wrap_completes_create_and_execs_the_runtime_with_unchanged_arguments() {
    let tree = KubeletTree::new();
    let cache = tree.empty_dir("cache");
    let work = tempfile::tempdir().unwrap();
    let runtime = recording_runtime(work.path());
    let bundle = bundle_with(work.path(), &spec(Runtime::Containerd, true, hint("cache", "tmpfs", "pod"), vec![]));
    let root = path_str(&tree.root);
    let runtime_args = [
        "--root",
        "/run/runsc",
        "--network=none",
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "--pid-file",
        "/p",
        "sandbox-1",
    ];
    let mut args = vec!["wrap", "--runtime", runtime.to_str().unwrap(), "--kubelet-root", &root, "--"];
    args.extend(runtime_args);
    let out = run(&args, &[], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));

    assert_eq!(std::fs::read_to_string(work.path().join("calls.args")).unwrap(), runtime_args.join(" ") + "\n");
    let seen: Value = serde_json::from_slice(&std::fs::read(work.path().join("calls.config.json")).unwrap()).unwrap();
    assert_eq!(annotation(&seen, "dev.gvisor.spec.mount.cache.source"), Some(path_str(&cache).as_str()));
    let config = bundle.join("config.json");
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o640, "mode kept");
    assert_eq!(std::fs::read_dir(&bundle).unwrap().count(), 1, "no temporary file left behind");
    assert_eq!(seen["x-vendor-extension"], serde_json::json!({"anything": ["goes", {"here": null}]}));
    assert!(text(&out.stderr).contains("Sandbox container, "), "the completion is logged: {}", text(&out.stderr));
}

#[test]
fn wrap_passes_every_other_subcommand_straight_through() {
    let work = tempfile::tempdir().unwrap();
    let runtime = recording_runtime(work.path());
    let bundle = bundle_with(work.path(), &spec(Runtime::Containerd, true, hint("cache", "tmpfs", "pod"), vec![]));
    let before = std::fs::read(bundle.join("config.json")).unwrap();
    for args in
        [vec!["--root", "/r", "start", "id"], vec!["--root", "/r", "delete", "--force", "id"], vec!["--version"]]
    {
        let mut all = vec!["wrap", "--runtime", runtime.to_str().unwrap(), "--"];
        all.extend(args.iter().copied());
        let out = run(&all, &[], b"");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let calls = std::fs::read_to_string(work.path().join("calls.args")).unwrap();
    assert_eq!(calls, "--root /r start id\n--root /r delete --force id\n--version\n");
    assert_eq!(std::fs::read(bundle.join("config.json")).unwrap(), before);
}

#[test]
fn configured_stand_in_for_runsc_takes_runsc_arguments_only() {
    let tree = KubeletTree::new();
    tree.empty_dir("cache");
    let work = tempfile::tempdir().unwrap();
    let runtime = recording_runtime(work.path());
    let bundle = bundle_with(work.path(), &spec(Runtime::CriO, true, hint("cache", "bind", "container"), vec![]));
    let config = work.path().join("hook.json");
    let config_json = serde_json::json!({"runtime": runtime, "kubeletRoot": tree.root});
    std::fs::write(&config, config_json.to_string()).unwrap();
    let out = Command::new(HOOK)
        .args(["--root", "/run/runsc", "create", "--bundle", bundle.to_str().unwrap(), "id"])
        .env("MOUNT_HINTS_HOOK_CONFIG", &config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen: Value = serde_json::from_slice(&std::fs::read(work.path().join("calls.config.json")).unwrap()).unwrap();
    // The release was detected from the runtime's --version (0.0~20240729.0): disk-backed tmpfs.
    assert_eq!(annotation(&seen, "dev.gvisor.spec.mount.cache.type"), Some("tmpfs"));
    let calls = std::fs::read_to_string(work.path().join("calls.args")).unwrap();
    assert!(calls.starts_with("--version\n"), "{calls}");
}

#[test]
fn strict_wrap_refuses_to_start_what_it_cannot_complete() {
    let tree = KubeletTree::new();
    let work = tempfile::tempdir().unwrap();
    let runtime = recording_runtime(work.path());
    let bundle = bundle_with(work.path(), &spec(Runtime::Containerd, true, hint("missing", "tmpfs", "pod"), vec![]));
    let root = path_str(&tree.root);
    let b = bundle.to_str().unwrap();
    let args = [
        "wrap",
        "--strict",
        "--runtime",
        runtime.to_str().unwrap(),
        "--kubelet-root",
        &root,
        "--",
        "create",
        "--bundle",
        b,
        "id",
    ];
    let out = run(&args, &[], b"");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("\"missing\" removed: no directory"), "{}", text(&out.stderr));
    assert!(!work.path().join("calls.args").exists(), "the runtime was not started");
}

#[test]
fn precreate_reads_stdin_and_writes_the_completed_config() {
    let tree = KubeletTree::new();
    let cache = tree.empty_dir("cache");
    let lone = spec(Runtime::Containerd, false, hint("cache", "tmpfs", "pod"), vec![bind("/cache", &path_str(&cache))]);
    let root = path_str(&tree.root);
    let out = run(&["precreate", "--kubelet-root", &root], &[], &serde_json::to_vec(&lone).unwrap());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(mount_at(&done, "/cache")[0]["type"], "tmpfs");
    let out = run(&["precreate"], &[], b"{not json");
    assert!(!out.status.success() && out.stdout.is_empty());
}

#[test]
fn oci_hook_reports_hints_that_were_never_completed() {
    let work = tempfile::tempdir().unwrap();
    let bundle = bundle_with(work.path(), &spec(Runtime::Containerd, true, hint("cache", "tmpfs", "pod"), vec![]));
    let state =
        serde_json::json!({"ociVersion": "1.0.2", "id": "sandbox-1", "status": "created", "pid": 42, "bundle": bundle});
    let state = serde_json::to_vec(&state).unwrap();
    let out = run(&["oci-hook"], &[], &state);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("\"cache\" has no source"), "{}", text(&out.stderr));
    assert!(!run(&["oci-hook", "--strict"], &[], &state).status.success());
}

#[test]
fn inspect_prints_changes_without_writing() {
    let tree = KubeletTree::new();
    tree.empty_dir("cache");
    let work = tempfile::tempdir().unwrap();
    let bundle = bundle_with(work.path(), &spec(Runtime::Containerd, true, hint("cache", "tmpfs", "pod"), vec![]));
    let before = std::fs::read(bundle.join("config.json")).unwrap();
    let root = path_str(&tree.root);
    let out = run(&["inspect", "--bundle", bundle.to_str().unwrap(), "--kubelet-root", &root], &[], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("Sandbox container, "), "{stdout}");
    assert!(stdout.contains("annotation dev.gvisor.spec.mount.cache.source = "));
    assert!(stdout.contains("mount /dev/shm: type bind -> tmpfs"));
    assert_eq!(std::fs::read(bundle.join("config.json")).unwrap(), before);
}

#[test]
fn a_runtime_that_is_the_hook_itself_is_refused_not_looped() {
    let out = run(&["wrap", "--runtime", HOOK, "--", "start", "id"], &[], b"");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("is this hook itself"), "{}", text(&out.stderr));
}
