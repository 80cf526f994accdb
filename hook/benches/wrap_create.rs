//! What the wrapper adds to each `runsc create`: the whole process (exec, read config.json, complete, write it
//! atomically, exec the runtime, here a no-op) for sandboxes with 1, 10, 100 and 200 hinted volumes, as a ratio
//! to exec'ing the no-op directly; then once more at 10 volumes with the hook called as runsc itself, as the shims
//! call it (its settings from hook.json, no flags of its own).
//!
//!   cargo bench -p mount-hints-hook --bench wrap_create
//!   MOUNT_HINTS_BENCH_HOOK=/path/to/mount-hints-hook cargo bench -p mount-hints-hook --bench wrap_create
//!
//! The second form measures another build of the hook (the static `image` build the container images ship).
//! The machine is shared, so the two are measured in alternating pairs (wrapper, then the bare exec, then the
//! other way round) and the ratio is the median of the pairs' ratios, which load spikes move far less than
//! either median alone. Each timed wrapper run rewrites config.json: the original is restored, untimed, first.
//! Bundles live where the runtimes keep them, on tmpfs (/run), when this machine has it; the table says where.

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fixtures::*;

/// Names the hook binary to measure instead of this build's.
const HOOK_ENV: &str = "MOUNT_HINTS_BENCH_HOOK";
const PAIRS: usize = 300;
const WARM_UP: usize = 20;
const NOOP: &str = "/bin/true";

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let hook: PathBuf =
        std::env::var_os(HOOK_ENV).map_or_else(|| env!("CARGO_BIN_EXE_mount-hints-hook").into(), Into::into);
    println!("hook {}", hook.display());
    println!("bundles under {} (tmpfs, as on a node), log level info", bundle_parent().display());
    println!("load average before: {}", load_average());
    println!("| hinted volumes | wrapper + no-op runtime, median | `{NOOP}` alone, median | ratio, median of {PAIRS} pairs |");
    println!("|---|---|---|---|");
    let mut ratios = Vec::new();
    let mut floors = Vec::new();
    for volumes in [1usize, 10, 100, 200] {
        let sample = measure(&hook, volumes, Call::Wrap);
        println!("| {volumes} | {:.3} ms | {:.3} ms | {:.2}x |", ms(sample.wrapped), ms(sample.floor), sample.ratio);
        ratios.push((volumes, sample.ratio));
        floors.push(sample.floor);
    }
    // The cost of one more volume between each size and the next, from the paired ratios (in units of the bare
    // exec, whose median over the whole run converts them to time): the medians of wrapper times alone drift
    // with the load. Equal slopes mean linear growth.
    let floor = median(floors);
    let slopes: Vec<String> = ratios
        .windows(2)
        .map(|w| {
            let ((a, ra), (b, rb)) = (w[0], w[1]);
            let per = (rb - ra) * floor.as_secs_f64() * 1e6 / (b - a) as f64;
            format!("{a}->{b}: {per:.1} us")
        })
        .collect();
    println!("per added volume (ratio slope x {:.3} ms): {}", ms(floor), slopes.join(", "));
    // As the shims call it: in place of runsc, its settings from hook.json.
    let sample = measure(&hook, 10, Call::StandIn);
    println!("as runsc itself (settings from hook.json), 10 volumes: {:.2}x", sample.ratio);
    println!("load average after: {}", load_average());
}

struct Sample {
    wrapped: Duration,
    floor: Duration,
    ratio: f64,
}

/// How the hook is called: `wrap` with flags, or as runsc with nothing but runsc's arguments.
#[derive(Clone, Copy, PartialEq)]
enum Call {
    Wrap,
    StandIn,
}

fn measure(hook: &Path, volumes: usize, call: Call) -> Sample {
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
    let hook_json = work.path().join("hook.json");
    let settings = serde_json::json!({"runtime": NOOP, "kubeletRoot": root, "runscRelease": "20240729"});
    std::fs::write(&hook_json, settings.to_string()).unwrap();
    let wrap = || {
        std::fs::write(bundle.join("config.json"), &original).unwrap();
        let t = Instant::now();
        let mut command = Command::new(hook);
        match call {
            Call::Wrap => command
                .args(["wrap", "--runtime", NOOP, "--runsc-release", "20240729", "--kubelet-root", &root, "--"])
                .env("MOUNT_HINTS_HOOK_CONFIG", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/empty-hook.json")),
            Call::StandIn => command.env("MOUNT_HINTS_HOOK_CONFIG", &hook_json),
        };
        let status = command
            .args(["--root", "/run/runsc", "create", "--bundle", &b, "sandbox"])
            .env("MOUNT_HINTS_LOG", "info")
            .stderr(Stdio::null())
            .status()
            .unwrap();
        let elapsed = t.elapsed();
        assert!(status.success());
        elapsed
    };
    let bare = || {
        let t = Instant::now();
        assert!(Command::new(NOOP).arg("create").status().unwrap().success());
        t.elapsed()
    };
    for _ in 0..WARM_UP {
        wrap();
        bare();
    }
    let mut wrapped = Vec::with_capacity(PAIRS);
    let mut floor = Vec::with_capacity(PAIRS);
    let mut ratios = Vec::with_capacity(PAIRS);
    for i in 0..PAIRS {
        let (w, f) = if i % 2 == 0 {
            let w = wrap();
            (w, bare())
        } else {
            let f = bare();
            (wrap(), f)
        };
        ratios.push(w.as_secs_f64() / f.as_secs_f64());
        wrapped.push(w);
        floor.push(f);
    }
    let rewritten: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert!(annotation(&rewritten, "dev.gvisor.spec.mount.vol-0.source").is_some(), "the wrapper completed the spec");
    ratios.sort_by(f64::total_cmp);
    Sample { wrapped: median(wrapped), floor: median(floor), ratio: ratios[PAIRS / 2] }
}

/// containerd and CRI-O keep bundles under /run, a tmpfs on a node: fsync there is nearly free, on a disk it is
/// not. /dev/shm stands in for it where /run is a plain directory.
fn bundle_parent() -> PathBuf {
    let is_tmpfs = |dir: &str| {
        std::fs::read_to_string("/proc/mounts")
            .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(dir) && l.split(' ').nth(2) == Some("tmpfs")))
    };
    ["/run", "/dev/shm"].into_iter().find(|d| is_tmpfs(d)).map_or_else(std::env::temp_dir, Into::into)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
