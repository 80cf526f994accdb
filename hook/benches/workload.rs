//! What the hints buy a workload: the same Memory emptyDir inside a gVisor pod with the hints our webhook and
//! hook write (a sandbox tmpfs shared by the pod), without them (each container's plain bind, served by the
//! gofer), and under runc on a host tmpfs (what kubelet mounts for `medium: Memory`).
//!
//!   cargo bench -p mount-hints-hook --bench workload            (root; runsc 2022 and 2024, runc)
//!
//! Workloads, run by this same binary inside the containers (it re-executes itself as `probe`, with the shared
//! libraries it needs copied into the root filesystem):
//! - small files: create + write 4 KiB + fsync + close + read + delete, 10,000 times;
//! - sequential: write 256 MiB in 1 MiB writes, fsync, read it back;
//! - messages: a writer and a reader in two containers of the pod pass 10,000 messages through files, one at
//!   a time (rename into place, the reader polls for it, acknowledges with a file of its own); the latency is
//!   from the writer's clock reading before the rename to the reader's after it has read the message.
//!
//! Sandboxes run with `--network=none` on each release's default platform (ptrace for 2022, systrap for 2024;
//! KVM does not start on this machine); every gVisor pod is created through `mount-hints-hook wrap`, with and
//! without the webhook's hints, so the only difference is the hints.

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fixtures::{cri_annotations, shm_source, webhook_annotations, Runtime, TmpfsMount, SANDBOX_ID, UID};
use serde_json::{json, Value};

const HOOK: &str = env!("CARGO_BIN_EXE_mount-hints-hook");
const SMALL_FILES: usize = 10_000;
const SEQUENTIAL_MIB: usize = 256;
const MESSAGES: usize = 10_000;
/// How long a reader waits for one message (or the writer for its acknowledgement) before the run fails.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The pod: a Memory emptyDir written by one container and read by the other.
const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: workload, namespace: default}
spec:
  runtimeClassName: gvisor
  volumes:
    - name: shared
      emptyDir: {medium: Memory}
  containers:
    - name: writer
      image: busybox
      volumeMounts: [{name: shared, mountPath: /shared}]
    - name: reader
      image: busybox
      volumeMounts: [{name: shared, mountPath: /shared}]
"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("probe") {
        return probe::run(&args[2..]);
    }
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the workload bench runs containers: it needs root");
    let new_dir =
        std::env::var("MOUNT_HINTS_RUNSC_NEW_DIR").unwrap_or_else(|_| "/var/cache/mount-hints/runsc-backports".into());
    let (old, new) = (PathBuf::from("/usr/bin/runsc"), Path::new(&new_dir).join("usr/bin/runsc"));
    // Each release on its default platform: ptrace in 2022; systrap, which replaced it, in 2024.
    let runsc =
        |path: &PathBuf, platform: &'static str, hinted: bool| Setup::Runsc { path: path.clone(), platform, hinted };
    let runtimes: Vec<(String, Setup)> = vec![
        ("runsc 2022 (ptrace), hinted".into(), runsc(&old, "ptrace", true)),
        ("runsc 2022 (ptrace), gofer bind".into(), runsc(&old, "ptrace", false)),
        ("runsc 2024 (systrap), hinted".into(), runsc(&new, "systrap", true)),
        ("runsc 2024 (systrap), gofer bind".into(), runsc(&new, "systrap", false)),
        ("runc, host tmpfs".into(), Setup::Runc { path: which("runc") }),
    ];
    for (label, setup) in &runtimes {
        let (Setup::Runsc { path, .. } | Setup::Runc { path }) = setup;
        assert!(
            path.exists(),
            "{label}: {} not found (tests/install-deps installs both runsc; runc: apt-get install runc)",
            path.display()
        );
    }
    let image = Image::new();
    println!(
        "small files: {SMALL_FILES} x create+write 4 KiB+fsync+read+delete; sequential: {SEQUENTIAL_MIB} MiB; \
         messages: {MESSAGES}, one at a time, between two containers; median of {ROUNDS} rounds (alternating order)"
    );
    let mut figures: Vec<Vec<Figures>> = runtimes.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        let mut order: Vec<usize> = (0..runtimes.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (label, setup) = &runtimes[i];
            let pod = Pod::start(setup, &image);
            let small = pod.probe("writer", &["small-files", "/shared", &SMALL_FILES.to_string()]);
            let sequential = pod.probe("writer", &["sequential", "/shared", &SEQUENTIAL_MIB.to_string()]);
            let messages = pod.messages();
            let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{label}: no {k} in {v}"));
            let fig = Figures {
                fstype: small["fstype"].as_str().unwrap_or_default().to_owned(),
                files_per_s: f(&small, "files_per_s"),
                write_mib_per_s: f(&sequential, "write_mib_per_s"),
                read_mib_per_s: f(&sequential, "read_mib_per_s"),
                p50_us: f(&messages, "p50_us"),
                p99_us: f(&messages, "p99_us"),
            };
            eprintln!("round {round}: {label}: {fig:?}");
            figures[i].push(fig);
        }
    }
    println!("| runtime, volume (fstype inside) | small files/s | sequential write MiB/s | sequential read MiB/s | message latency p50 / p99 µs |");
    println!("|---|---|---|---|---|");
    let medians: Vec<Figures> = figures.iter().map(|runs| Figures::median(runs)).collect();
    for ((label, _), m) in runtimes.iter().zip(&medians) {
        println!(
            "| {label} ({}) | {:.0} | {:.0} | {:.0} | {:.0} / {:.0} |",
            m.fstype, m.files_per_s, m.write_mib_per_s, m.read_mib_per_s, m.p50_us, m.p99_us
        );
    }
    let runc = &medians[runtimes.len() - 1];
    let gvisor = runtimes.len() - 1;
    for (setups, pair) in runtimes[..gvisor].chunks(2).zip(medians[..gvisor].chunks(2)) {
        let [hinted, gofer] = pair else { continue };
        println!(
            "{}: small files {:.2}x the gofer bind and {:.2}x runc's tmpfs; message latency p50 {:.2}x lower than the \
             gofer bind and {:.2}x runc's",
            setups[0].0,
            hinted.files_per_s / gofer.files_per_s,
            hinted.files_per_s / runc.files_per_s,
            gofer.p50_us / hinted.p50_us,
            hinted.p50_us / runc.p50_us,
        );
    }
}

const ROUNDS: usize = 3;

#[derive(Debug, Clone)]
struct Figures {
    fstype: String,
    files_per_s: f64,
    write_mib_per_s: f64,
    read_mib_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

impl Figures {
    fn median(runs: &[Figures]) -> Figures {
        let of = |get: fn(&Figures) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(get).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Figures {
            fstype: runs[0].fstype.clone(),
            files_per_s: of(|f| f.files_per_s),
            write_mib_per_s: of(|f| f.write_mib_per_s),
            read_mib_per_s: of(|f| f.read_mib_per_s),
            p50_us: of(|f| f.p50_us),
            p99_us: of(|f| f.p99_us),
        }
    }
}

fn which(program: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(program))
}

enum Setup {
    Runsc { path: PathBuf, platform: &'static str, hinted: bool },
    Runc { path: PathBuf },
}

/// One read-only root filesystem for every container: busybox (the sandbox's pause process) and this binary
/// with the shared libraries it was linked against.
struct Image {
    _dir: tempfile::TempDir,
    rootfs: PathBuf,
}

impl Image {
    fn new() -> Image {
        let dir = tempfile::Builder::new().prefix("mount-hints-workload.").tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        fixtures::busybox_rootfs(&rootfs, &["proc", "sys", "dev", "tmp", "shared"]);
        let me = std::env::current_exe().unwrap();
        std::fs::copy(&me, rootfs.join("bin/probe")).unwrap();
        let ldd = Command::new("ldd").arg(&me).output().expect("ldd (libc-bin) lists the probe's libraries");
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`
            let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) else { continue };
            let target = rootfs.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(path, &target).unwrap();
        }
        Image { _dir: dir, rootfs }
    }
}

/// A pod on one runtime: node-side files (a kubelet tree whose emptyDir is a host tmpfs, as kubelet mounts
/// for `medium: Memory`), the runtime's state, the containers. Dropping it removes them all.
struct Pod<'a> {
    dir: tempfile::TempDir,
    setup: &'a Setup,
    image: &'a Image,
    volume: PathBuf,
    /// The host tmpfs on `volume`; `None` once unmounted.
    memory: Option<TmpfsMount>,
    containers: Vec<String>,
}

impl<'a> Pod<'a> {
    fn start(setup: &'a Setup, image: &'a Image) -> Pod<'a> {
        let dir = tempfile::Builder::new().prefix("mount-hints-workload.").tempdir().unwrap();
        let volume = dir.path().join("var/lib/kubelet/pods").join(UID).join("volumes/kubernetes.io~empty-dir/shared");
        let memory = Some(TmpfsMount::new(&volume));
        let mut pod = Pod { dir, setup, image, volume, memory, containers: Vec::new() };
        std::fs::create_dir_all(pod.path(shm_source(Runtime::Containerd).trim_start_matches('/'))).unwrap();
        std::fs::create_dir_all(pod.path("state")).unwrap();
        if let Setup::Runsc { hinted, .. } = setup {
            let annotations = if *hinted { webhook_annotations(POD) } else { BTreeMap::new() };
            assert!(
                !*hinted || annotations.keys().any(|k| k.starts_with("dev.gvisor.spec.mount.shared.")),
                "{annotations:?}"
            );
            let sandbox = pod.bundle(SANDBOX_ID, true, &["/bin/sleep", "3600"], &annotations);
            pod.create(SANDBOX_ID, &sandbox);
            for id in ["writer", "reader"] {
                let bundle = pod.bundle(id, false, &["/bin/sleep", "3600"], &annotations);
                pod.create(id, &bundle);
            }
        }
        pod
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn bundle(&self, id: &str, sandbox: bool, args: &[&str], pod_annotations: &BTreeMap<String, String>) -> PathBuf {
        let mut annotations: serde_json::Map<String, Value> = match self.setup {
            Setup::Runsc { .. } => cri_annotations(Runtime::Containerd, sandbox)
                .into_iter()
                .chain(pod_annotations.clone())
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
            Setup::Runc { .. } => serde_json::Map::new(),
        };
        annotations.retain(|_, v| v.is_string());
        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc"}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}),
            json!({"destination": "/dev/shm", "type": "bind", "source": self.path(shm_source(Runtime::Containerd).trim_start_matches('/')), "options": ["rbind", "rprivate", "rw"]}),
        ];
        if !sandbox {
            mounts.push(json!({"destination": "/shared", "type": "bind", "source": self.volume, "options": ["rbind", "rprivate", "rw"]}));
        }
        fixtures::write_bundle(&self.path(&format!("bundles/{id}")), &self.image.rootfs, args, mounts, annotations)
    }

    fn runtime(&self) -> (PathBuf, Vec<String>) {
        let state = format!("--root={}", self.path("state").display());
        match self.setup {
            Setup::Runsc { path, platform, .. } => {
                (path.clone(), vec![state, "--network=none".into(), format!("--platform={platform}")])
            }
            Setup::Runc { path } => (path.clone(), vec![state]),
        }
    }

    /// `runsc create` through the hook, then `start`. runsc hands its stdio to the container: files, not pipes.
    fn create(&mut self, id: &str, bundle: &Path) {
        let (runsc, global) = self.runtime();
        let mut create = Command::new(HOOK);
        create.arg("wrap").arg("--runtime").arg(&runsc).arg("--kubelet-root").arg(self.path("var/lib/kubelet"));
        create.arg("--").args(&global).args(["create", "--bundle"]).arg(bundle).arg(id);
        let created = fixtures::run_to_files(&mut create, self.dir.path(), id);
        self.containers.push(id.to_owned());
        created.unwrap_or_else(|e| panic!("create {id}: {e}"));
        let mut start = Command::new(&runsc);
        start.args(&global).args(["start", id]);
        fixtures::run_to_files(&mut start, self.dir.path(), &format!("{id}.start"))
            .unwrap_or_else(|e| panic!("start {id}: {e}"));
    }

    /// Starts the probe in container `id` (an exec into the running container under runsc, a container of its
    /// own under runc).
    fn spawn_probe(&self, id: &str, args: &[&str]) -> Child {
        let (runtime, global) = self.runtime();
        let mut command = Command::new(runtime);
        command.args(&global);
        match self.setup {
            Setup::Runsc { .. } => {
                command.args(["exec", id, "/bin/probe", "probe"]).args(args);
            }
            Setup::Runc { .. } => {
                let mut probe_args = vec!["/bin/probe", "probe"];
                probe_args.extend_from_slice(args);
                let run_id = format!("{id}-{}", args[0]);
                let bundle = self.bundle(&run_id, false, &probe_args, &BTreeMap::new());
                command.args(["run", "--bundle"]).arg(bundle).arg(run_id);
            }
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }

    fn probe(&self, id: &str, args: &[&str]) -> Value {
        result(self.spawn_probe(id, args).wait_with_output().unwrap(), args[0])
    }

    /// The writer/reader pair, started together.
    fn messages(&self) -> Value {
        let count = MESSAGES.to_string();
        let reader = self.spawn_probe("reader", &["reader", "/shared", &count]);
        let writer = self.spawn_probe("writer", &["writer", "/shared", &count]);
        result(writer.wait_with_output().unwrap(), "writer");
        result(reader.wait_with_output().unwrap(), "reader")
    }
}

fn result(output: Output, what: &str) -> Value {
    assert!(
        output.status.success(),
        "probe {what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().rfind(|l| l.starts_with('{')).unwrap_or_else(|| panic!("probe {what} printed {text:?}"));
    serde_json::from_str(line).unwrap()
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        let (runtime, global) = self.runtime();
        for id in self.containers.iter().rev() {
            let _ = Command::new(&runtime).args(&global).args(["kill", id, "KILL"]).output();
            let _ = Command::new(&runtime).args(&global).args(["delete", "--force", id]).output();
        }
        // Before the temporary directory is removed.
        self.memory.take();
    }
}

/// The workloads, as they run inside a container. Each prints one JSON line of results.
mod probe {
    use super::*;

    pub fn run(args: &[String]) {
        let (mode, dir, n) = match args {
            [mode, dir, n] => (mode.as_str(), Path::new(dir), n.parse::<usize>().expect("a count")),
            _ => panic!("usage: probe small-files|sequential|writer|reader DIR COUNT"),
        };
        let mut result = match mode {
            "small-files" => small_files(dir, n),
            "sequential" => sequential(dir, n),
            "writer" => writer(dir, n),
            "reader" => reader(dir, n),
            _ => panic!("unknown probe {mode}"),
        };
        result["fstype"] = Value::String(fstype(dir));
        println!("{result}");
    }

    /// The file system type `dir` is mounted with, as this container sees it.
    fn fstype(dir: &Path) -> String {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let line = mounts.lines().rfind(|l| l.split(' ').nth(1) == dir.to_str()).expect("the volume is mounted");
        line.split(' ').nth(2).unwrap_or_default().to_owned()
    }

    fn small_files(dir: &Path, n: usize) -> Value {
        let data = vec![0x5a_u8; 4096];
        let mut back = Vec::with_capacity(4096);
        let start = Instant::now();
        for i in 0..n {
            let path = dir.join(format!("small-{i}"));
            let mut file = File::create(&path).unwrap();
            file.write_all(&data).unwrap();
            file.sync_all().unwrap();
            drop(file);
            back.clear();
            File::open(&path).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "read back what was written");
            std::fs::remove_file(&path).unwrap();
        }
        let seconds = start.elapsed().as_secs_f64();
        json!({"files": n, "seconds": seconds, "files_per_s": n as f64 / seconds})
    }

    fn sequential(dir: &Path, mib: usize) -> Value {
        let path = dir.join("sequential");
        let chunk = vec![0xa5_u8; 1 << 20];
        let start = Instant::now();
        let mut file = File::create(&path).unwrap();
        for _ in 0..mib {
            file.write_all(&chunk).unwrap();
        }
        file.sync_all().unwrap();
        drop(file);
        let write = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut file = File::open(&path).unwrap();
        let mut buf = vec![0_u8; 1 << 20];
        let mut total = 0;
        loop {
            let read = file.read(&mut buf).unwrap();
            if read == 0 {
                break;
            }
            total += read;
        }
        let read = start.elapsed().as_secs_f64();
        assert_eq!(total, mib << 20, "read back the whole file");
        std::fs::remove_file(&path).unwrap();
        json!({"mib": mib, "write_mib_per_s": mib as f64 / write, "read_mib_per_s": mib as f64 / read})
    }

    /// CLOCK_MONOTONIC in nanoseconds: one clock for every process of a sandbox (and of the host under runc),
    /// so the writer's and the reader's readings compare.
    fn now_ns() -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid timespec to write to; CLOCK_MONOTONIC always exists.
        assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// Puts `content` at `dir/name` whole: written under a temporary name, then renamed.
    fn publish(dir: &Path, tmp: &str, name: &str, content: &[u8]) {
        let tmp = dir.join(tmp);
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }

    /// Polls until `dir/name` exists with a full 8-byte content, then removes it.
    fn take(dir: &Path, name: &str) -> [u8; 8] {
        let path = dir.join(name);
        let deadline = Instant::now() + MESSAGE_TIMEOUT;
        loop {
            if let Ok(bytes) = std::fs::read(&path) {
                if let Ok(value) = <[u8; 8]>::try_from(bytes.as_slice()) {
                    std::fs::remove_file(&path).unwrap();
                    return value;
                }
            }
            assert!(Instant::now() < deadline, "{name} did not appear within {MESSAGE_TIMEOUT:?}");
            // Give the CPU to the other side: on a busy machine a spinning reader only delays the writer.
            std::thread::yield_now();
        }
    }

    fn writer(dir: &Path, n: usize) -> Value {
        let start = Instant::now();
        for i in 0..n {
            publish(dir, ".message", &format!("m{i}"), &now_ns().to_le_bytes());
            take(dir, &format!("a{i}"));
        }
        json!({"messages": n, "seconds": start.elapsed().as_secs_f64()})
    }

    fn reader(dir: &Path, n: usize) -> Value {
        let mut latencies = Vec::with_capacity(n);
        for i in 0..n {
            let sent = u64::from_le_bytes(take(dir, &format!("m{i}")));
            latencies.push(now_ns().saturating_sub(sent));
            publish(dir, ".ack", &format!("a{i}"), &[0; 8]);
        }
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        json!({"messages": n, "p50_us": at(0.5), "p99_us": at(0.99), "max_us": at(1.0)})
    }
}
