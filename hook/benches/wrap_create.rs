//! What the wrapper adds to each `runsc create`: the whole process (exec, read config.json, complete, write it
//! atomically, exec the runtime, here a no-op) for sandboxes with 1, 10 and 100 hinted volumes, next to the
//! floor of exec'ing the no-op directly.
//!
//!   cargo bench -p mount-hints-hook --bench wrap_create
//!
//! Each iteration restores the original config.json first (untimed), so every timed run really rewrites it.
//! Bundles live where the runtimes keep them, on tmpfs (/run), when this machine has it; the table says where.

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fixtures::*;

const RUNS: usize = 300;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let noop = "/bin/true";
    let hook = env!("CARGO_BIN_EXE_mount-hints-hook");
    let floor = median(|| {
        let t = Instant::now();
        assert!(Command::new(noop).arg("create").status().unwrap().success());
        t.elapsed()
    });
    println!("bundles under {} (tmpfs, as on a node), log level info", bundle_parent().display());
    println!(
        "| hinted volumes | wrapper + no-op runtime, median | added over exec'ing the no-op ({:.3} ms) | per volume |",
        ms(floor)
    );
    println!("|---|---|---|---|");
    for volumes in [1usize, 10, 100] {
        let tree = KubeletTree::new();
        let mut hints = Vec::new();
        for i in 0..volumes {
            let name = format!("vol-{i}");
            tree.empty_dir(&name);
            hints.extend(hint(&name, if i % 2 == 0 { "tmpfs" } else { "bind" }, "pod"));
        }
        let work = tempfile::Builder::new().tempdir_in(bundle_parent()).unwrap();
        let bundle = work.path().join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        let original = serde_json::to_vec(&spec(Runtime::Containerd, true, hints, vec![])).unwrap();
        let root = path_str(&tree.root);
        let b = path_str(&bundle);
        let wrapped = median(|| {
            std::fs::write(bundle.join("config.json"), &original).unwrap();
            let t = Instant::now();
            let status = Command::new(hook)
                .args(["wrap", "--runtime", noop, "--runsc-release", "20240729", "--kubelet-root", &root])
                .args(["--", "--root", "/run/runsc", "create", "--bundle", &b, "sandbox"])
                .env("MOUNT_HINTS_LOG", "info")
                .env("MOUNT_HINTS_HOOK_CONFIG", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/empty-hook.json"))
                .stderr(Stdio::null())
                .status()
                .unwrap();
            let elapsed = t.elapsed();
            assert!(status.success());
            elapsed
        });
        let rewritten: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
        assert!(
            annotation(&rewritten, "dev.gvisor.spec.mount.vol-0.source").is_some(),
            "the wrapper completed the spec"
        );
        let added = wrapped.saturating_sub(floor);
        println!(
            "| {volumes} | {:.3} ms | {:.3} ms | {:.1} us |",
            ms(wrapped),
            ms(added),
            added.as_secs_f64() * 1e6 / volumes as f64
        );
    }
}

/// containerd and CRI-O keep bundles under /run, a tmpfs on a node: fsync there is nearly free, on a disk it is
/// not. /dev/shm stands in for it where /run is a plain directory.
fn bundle_parent() -> std::path::PathBuf {
    let is_tmpfs = |dir: &str| {
        std::fs::read_to_string("/proc/mounts")
            .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(dir) && l.split(' ').nth(2) == Some("tmpfs")))
    };
    ["/run", "/dev/shm"].into_iter().find(|d| is_tmpfs(d)).map_or_else(std::env::temp_dir, Into::into)
}

fn median(mut run: impl FnMut() -> Duration) -> Duration {
    for _ in 0..20 {
        run();
    }
    let mut times: Vec<Duration> = (0..RUNS).map(|_| run()).collect();
    times.sort();
    times[RUNS / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
