//! The binary's modes as runtimes call them: the wrapper in front of a (recording) runtime, with explicit
//! arguments and as a configured stand-in; Podman's precreate; the OCI hook; inspect; idle.

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
    let cache = tree.memory_empty_dir("cache");
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
    assert!(out.stderr.is_empty() && out.stdout.is_empty(), "the container's stdio: {}", text(&out.stderr));
}

/// The hook configured as runsc (hook.json naming the recording runtime), for the stand-in tests.
fn stand_in_config(work: &Path, runtime: &Path, kubelet_root: &Path, extra: Value) -> PathBuf {
    let mut config = serde_json::json!({"runtime": runtime, "kubeletRoot": kubelet_root});
    config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let path = work.join("hook.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn stand_in(args: &[&str], config: &Path) -> Output {
    Command::new(HOOK).args(args).env("MOUNT_HINTS_HOOK_CONFIG", config).stdin(Stdio::null()).output().unwrap()
}

#[test]
fn wrap_logs_to_the_runtime_log_in_its_format_never_to_the_container_stdio() {
    let tree = KubeletTree::new();
    tree.memory_empty_dir("cache");
    for format in ["text", "json", "json-k8s"] {
        let work = tempfile::tempdir().unwrap();
        let runtime = recording_runtime(work.path());
        let bundle = bundle_with(work.path(), &spec(Runtime::Containerd, true, hint("cache", "tmpfs", "pod"), vec![]));
        let log = work.path().join("runsc.log");
        std::fs::write(&log, "runsc's earlier line\n").unwrap();
        let config = stand_in_config(work.path(), &runtime, &tree.root, serde_json::json!({}));
        let args = ["--log", log.to_str().unwrap(), "--log-format", format, "create", "--bundle"];
        let out = stand_in(&[&args[..], &[bundle.to_str().unwrap(), "id"]].concat(), &config);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(out.stderr.is_empty() && out.stdout.is_empty(), "{format}: {}", text(&out.stderr));
        let logged = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = logged.lines().collect();
        assert_eq!(lines[0], "runsc's earlier line", "appended, not truncated");
        let line = lines.iter().find(|l| l.contains("Sandbox container, ")).unwrap_or_else(|| panic!("{logged}"));
        if format == "text" {
            assert!(line.starts_with('I') && line.contains(" mount-hints-hook] "), "{line}");
        } else {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["level"], "info", "{line}");
            let key = if format == "json" { "msg" } else { "log" };
            assert!(v[key].as_str().unwrap().starts_with("mount-hints-hook: "), "{line}");
        }
    }
}

#[test]
fn without_a_runtime_log_lines_go_to_the_configured_file_and_failures_stay_visible() {
    let tree = KubeletTree::new();
    let work = tempfile::tempdir().unwrap();
    let runtime = recording_runtime(work.path());
    let bundle = bundle_with(work.path(), &spec(Runtime::Containerd, true, hint("missing", "tmpfs", "pod"), vec![]));
    let log = work.path().join("hook.log");
    let json = serde_json::json!({"log": log, "logFormat": "json"});
    let config = stand_in_config(work.path(), &runtime, &tree.root, json);
    let b = bundle.to_str().unwrap();
    let out = stand_in(&["create", "--bundle", b, "id"], &config);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", text(&out.stderr));
    let logged = std::fs::read_to_string(&log).unwrap();
    let warned = logged
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .any(|v| v["level"] == "warning" && v["msg"].as_str().unwrap().contains("\"missing\" removed: no directory"));
    assert!(warned, "{logged}");

    // A create that fails: an error line in the log, and the reason on stderr, as runsc reports its own.
    let json = serde_json::json!({"log": log, "logFormat": "json", "strict": true});
    let config = stand_in_config(work.path(), &runtime, &tree.root, json);
    let bundle = bundle_with(work.path(), &spec(Runtime::Containerd, true, hint("missing", "tmpfs", "pod"), vec![]));
    let out = stand_in(&["create", "--bundle", bundle.to_str().unwrap(), "id"], &config);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("\"missing\" removed: no directory"), "{}", text(&out.stderr));
    let last = std::fs::read_to_string(&log).unwrap().lines().last().unwrap().to_owned();
    let v: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["level"], "error", "{last}");
}

#[test]
fn restore_is_completed_like_create() {
    let tree = KubeletTree::new();
    let cache = tree.memory_empty_dir("cache");
    let work = tempfile::tempdir().unwrap();
    let runtime = recording_runtime(work.path());
    let bundle = bundle_with(work.path(), &spec(Runtime::Containerd, true, hint("cache", "tmpfs", "pod"), vec![]));
    let config = stand_in_config(work.path(), &runtime, &tree.root, serde_json::json!({"runscRelease": "20240729"}));
    let b = bundle.to_str().unwrap();
    let out = stand_in(&["--root", "/r", "restore", "--image-path", "/img", "--detach", "--bundle", b, "id"], &config);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen: Value = serde_json::from_slice(&std::fs::read(work.path().join("calls.config.json")).unwrap()).unwrap();
    assert_eq!(annotation(&seen, "dev.gvisor.spec.mount.cache.source"), Some(path_str(&cache).as_str()));
}

#[test]
fn a_flag_value_is_not_a_subcommand_and_help_and_version_are_runsc_s() {
    let tree = KubeletTree::new();
    tree.memory_empty_dir("cache");
    let work = tempfile::tempdir().unwrap();
    let runtime = recording_runtime(work.path());
    let bundle = bundle_with(work.path(), &spec(Runtime::Containerd, true, hint("cache", "tmpfs", "pod"), vec![]));
    let before = std::fs::read(bundle.join("config.json")).unwrap();
    let config = stand_in_config(work.path(), &runtime, &tree.root, serde_json::json!({"runscRelease": "20240729"}));
    let b = bundle.to_str().unwrap();
    let calls: [&[&str]; 7] = [
        &["--version"],
        &["-h"],
        &["--help"],
        &["help", "create"],
        &["install"],
        &["--root", "create", "start", "id"],
        &["create", "id", "--bundle", b],
    ];
    for args in calls {
        let out = stand_in(args, &config);
        // The recording runtime has no config.json to copy in the last call: it still succeeds.
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        if args == ["--version"] {
            assert_eq!(text(&out.stdout), "runsc version 0.0~20240729.0\n", "runsc's version, not the hook's");
        }
    }
    let recorded = std::fs::read_to_string(work.path().join("calls.args")).unwrap();
    let want: Vec<String> = calls.iter().map(|a| a.join(" ")).collect();
    assert_eq!(recorded.lines().collect::<Vec<_>>(), want);
    assert_eq!(std::fs::read(bundle.join("config.json")).unwrap(), before, "no call made runsc read this bundle");

    // The debug-command value `start` is skipped: this is a create of the bundle.
    let out = stand_in(&["--debug-command", "start", "create", "--bundle", b, "id"], &config);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(std::fs::read(bundle.join("config.json")).unwrap(), before);
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
    let cache = tree.memory_empty_dir("cache");
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
fn oci_hook_never_aborts_a_container_without_strict() {
    let work = tempfile::tempdir().unwrap();
    let gone = work.path().join("no-such-bundle");
    let missing_config =
        serde_json::json!({"ociVersion": "1.0.2", "id": "c", "status": "created", "pid": 42, "bundle": gone});
    let missing_config = serde_json::to_vec(&missing_config).unwrap();
    for (input, says) in [(&b"{not a state"[..], "OCI state"), (&missing_config[..], "config.json")] {
        let out = run(&["oci-hook"], &[], input);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("WARN") && text(&out.stderr).contains(says), "{}", text(&out.stderr));
        let out = run(&["oci-hook", "--strict"], &[], input);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
}

#[test]
fn idle_waits_for_sigterm_and_exits_zero() {
    use std::io::{BufRead, BufReader};
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut child = Command::new(HOOK).arg("idle").stdout(Stdio::piped()).spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // The first line is printed once the signals are blocked: from then on they are waited for.
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains("idle"), "{line}");
        assert!(child.try_wait().unwrap().is_none(), "still idle");
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }
}

/// A small xorshift: the kill delays only need to spread, not to be secret.
struct Spread(u64);

impl Spread {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[test]
fn kill_9_during_the_rewrite_leaves_config_json_old_or_new_and_the_next_run_cleans_up() {
    let tree = KubeletTree::new();
    tree.memory_empty_dir("cache");
    let work = tempfile::tempdir().unwrap();
    let mut big = spec(Runtime::Containerd, true, hint("cache", "tmpfs", "pod"), vec![]);
    // A few megabytes, so the rewrite lasts long enough for kills to land inside it.
    big["x-padding"] = serde_json::json!((0..12_000).map(|i| format!("padding line {i:08}")).collect::<Vec<_>>());
    let bundle = bundle_with(work.path(), &big);
    let config = bundle.join("config.json");
    let old = std::fs::read(&config).unwrap();
    let root = path_str(&tree.root);
    let b = bundle.to_str().unwrap();
    let args = [
        "wrap",
        "--runtime",
        "/bin/true",
        "--kubelet-root",
        &root,
        "--runsc-release",
        "20240729",
        "--",
        "create",
        "--bundle",
        b,
        "id",
    ];
    let hook = || {
        let mut command = Command::new(HOOK);
        command
            .args(args)
            .env("MOUNT_HINTS_HOOK_CONFIG", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/empty-hook.json"));
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        command
    };
    let started = std::time::Instant::now();
    assert!(hook().status().unwrap().success());
    let whole_run = started.elapsed();
    let new = std::fs::read(&config).unwrap();
    assert_ne!(new, old);

    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut spread = Spread(seed | 1);
    let (mut olds, mut news, mut leftovers) = (0, 0, 0);
    for i in 0..500 {
        std::fs::write(&config, &old).unwrap();
        let mut child = hook().spawn().unwrap();
        // Fault injection, not synchronisation: the kill lands anywhere in the run.
        let delay = spread.below(whole_run.as_micros() as u64 * 3 / 2);
        std::thread::sleep(std::time::Duration::from_micros(delay));
        let _ = child.kill();
        child.wait().unwrap();
        let now = std::fs::read(&config).unwrap();
        assert!(now == old || now == new, "kill {i} after {delay} us left a config.json that is neither (seed {seed})");
        serde_json::from_slice::<Value>(&now).unwrap();
        if now == old {
            olds += 1
        } else {
            news += 1
        }
        leftovers += std::fs::read_dir(&bundle).unwrap().count() - 1;
    }
    assert!(olds > 0 && news > 0, "kills landed before ({olds}) and after ({news}) the rewrite (seed {seed})");

    std::fs::write(&config, &old).unwrap();
    assert!(hook().status().unwrap().success());
    assert_eq!(std::fs::read(&config).unwrap(), new);
    let names: Vec<_> = std::fs::read_dir(&bundle).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["config.json"], "{leftovers} temporary file(s) seen during the kills; none after the next run");
}

#[test]
fn inspect_prints_changes_without_writing() {
    let tree = KubeletTree::new();
    tree.memory_empty_dir("cache");
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
