//! The pair on real gVisor. Pods are laid out the way a node lays them out (a kubelet tree, a sandbox bundle
//! and application bundles carrying the annotations containerd or CRI-O set, `/dev/shm` binds included); the
//! pod annotations come from the webhook's mutation of the Pod manifest; every bundle is created through
//! `mount-hints-hook wrap` in front of runsc (`--network=none --platform=ptrace`). What happened is checked
//! inside the sandbox (`/proc/mounts`, files written by one container and read by another) and on the host.
//!
//! Both runsc releases run: Debian's 20221219 (strict) and bookworm-backports' 20240729, installed by
//! `tests/install-deps`. Needs root. A missing runsc is a failure, not a skip.

mod fixtures;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use fixtures::{cri_annotations, webhook_annotations, Runtime, TmpfsMount, SANDBOX_ID, UID};
use serde_json::{json, Value};

const HOOK: &str = env!("CARGO_BIN_EXE_mount-hints-hook");
const POD: &str = include_str!("e2e/pod.yaml");
const HOSTILE_POD: &str = include_str!("e2e/hostile-pod.yaml");

struct Runsc {
    label: &'static str,
    path: PathBuf,
}

/// One pod at a time: a 2-core machine runs ptrace sandboxes slowly enough as it is.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn runsc_versions() -> Vec<Runsc> {
    let new_dir =
        std::env::var("MOUNT_HINTS_RUNSC_NEW_DIR").unwrap_or_else(|_| "/var/cache/mount-hints/runsc-backports".into());
    let versions = vec![
        Runsc { label: "2022", path: "/usr/bin/runsc".into() },
        Runsc { label: "2024", path: Path::new(&new_dir).join("usr/bin/runsc") },
    ];
    for v in &versions {
        assert!(
            v.path.exists(),
            "runsc {} not found at {}: run tests/install-deps (as root)",
            v.label,
            v.path.display()
        );
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the runsc suite needs root");
    versions
}

/// One pod on one runsc: its node-side files, its runsc state, its containers, the tmpfs of its Memory
/// emptyDirs. Dropping it removes them all, whatever an assertion did in between.
struct Pod {
    dir: tempfile::TempDir,
    runsc: PathBuf,
    runtime: Runtime,
    annotations: BTreeMap<String, String>,
    containers: Vec<String>,
    memory_volumes: Vec<TmpfsMount>,
}

impl Pod {
    fn new(runsc: &Runsc, runtime: Runtime, annotations: BTreeMap<String, String>) -> Pod {
        let dir = tempfile::Builder::new().prefix("mount-hints-e2e.").tempdir().unwrap();
        let pod = Pod {
            dir,
            runsc: runsc.path.clone(),
            runtime,
            annotations,
            containers: Vec::new(),
            memory_volumes: Vec::new(),
        };
        fixtures::busybox_rootfs(
            &pod.rootfs(),
            &["proc", "sys", "dev", "tmp", "shared", "scratch", "config", "logs", "data"],
        );
        std::fs::create_dir_all(pod.shm_dir()).unwrap();
        std::fs::create_dir_all(pod.state()).unwrap();
        std::fs::create_dir_all(pod.logs()).unwrap();
        pod
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn rootfs(&self) -> PathBuf {
        self.path("rootfs")
    }
    fn state(&self) -> PathBuf {
        self.path("runsc-state")
    }
    fn logs(&self) -> PathBuf {
        self.path("runsc-logs")
    }
    fn kubelet_root(&self) -> PathBuf {
        self.path("var/lib/kubelet")
    }
    fn shm_dir(&self) -> PathBuf {
        let rel = fixtures::shm_source(self.runtime);
        self.path(rel.trim_start_matches('/'))
    }

    /// `pods/<uid>/volumes/<plugin>/<name>`, created like kubelet would.
    fn volume(&self, plugin: &str, name: &str) -> PathBuf {
        let path = self.kubelet_root().join("pods").join(UID).join("volumes").join(plugin).join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// A `medium: Memory` emptyDir: kubelet mounts a tmpfs on its directory.
    fn memory_volume(&mut self, name: &str) -> PathBuf {
        let mount = TmpfsMount::new(&self.volume("kubernetes.io~empty-dir", name));
        let path = mount.path().to_owned();
        self.memory_volumes.push(mount);
        path
    }

    fn sub_path(&self, volume: &str, container: &str) -> PathBuf {
        let path =
            self.kubelet_root().join("pods").join(UID).join("volume-subpaths").join(volume).join(container).join("0");
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// A bundle the way the runtime writes it: runsc's base spec, the runtime's annotations and mounts, the
    /// pod annotations (containerd's `pod_annotations` / CRI-O's allowed annotations pass them to every spec).
    fn bundle(&self, id: &str, sandbox: bool, args: &[&str], volume_mounts: Vec<Value>) -> PathBuf {
        let mut annotations: serde_json::Map<String, Value> =
            cri_annotations(self.runtime, sandbox).into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        for (k, v) in &self.annotations {
            annotations.insert(k.clone(), Value::String(v.clone()));
        }
        let shm_host = self.shm_dir();
        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc"}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}),
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
            json!({"destination": "/dev/shm", "type": "bind", "source": shm_host, "options": ["rbind", "rprivate", "rw"]}),
        ];
        mounts.extend(volume_mounts);
        fixtures::write_bundle(&self.path(&format!("bundles/{id}")), &self.rootfs(), args, mounts, annotations)
    }

    fn global_args(&self) -> Vec<String> {
        vec![
            format!("--root={}", self.state().display()),
            "--network=none".into(),
            "--platform=ptrace".into(),
            "--debug".into(),
            format!("--debug-log={}/", self.logs().display()),
        ]
    }

    /// `runsc create` (through the hook unless `direct`), then `start`. runsc hands its stdio to the
    /// container, so it gets files, never pipes.
    fn run_container(&mut self, id: &str, bundle: &Path, direct: bool) -> Result<(), String> {
        let mut create = if direct {
            Command::new(&self.runsc)
        } else {
            let mut c = Command::new(HOOK);
            c.arg("wrap").arg("--runtime").arg(&self.runsc).arg("--kubelet-root").arg(self.kubelet_root()).arg("--");
            c
        };
        create.args(self.global_args()).args(["create", "--bundle"]).arg(bundle).arg(id);
        let created = fixtures::run_to_files(&mut create, self.dir.path(), id);
        self.containers.push(id.to_owned());
        created.map_err(|e| format!("create {id} failed: {e}\n{}", self.boot_log()))?;
        let mut start = Command::new(&self.runsc);
        start.args(self.global_args()).args(["start", id]);
        fixtures::run_to_files(&mut start, self.dir.path(), &format!("{id}.start"))
            .map_err(|e| format!("start {id} failed: {e}"))
    }

    /// For commands that leave no process behind (exec, kill, delete), so their output can be piped.
    fn runsc(&self, args: &[&str]) -> Output {
        Command::new(&self.runsc).args(self.global_args()).args(args).stdin(Stdio::null()).output().unwrap()
    }

    fn exec(&self, id: &str, script: &str) -> String {
        let out = self.runsc(&["exec", id, "/bin/sh", "-c", script]);
        assert!(out.status.success(), "exec in {id} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The /proc/mounts line for `mount_point` inside container `id`.
    fn mount_line(&self, id: &str, mount_point: &str) -> String {
        let mounts = self.exec(id, "cat /proc/mounts");
        mounts
            .lines()
            .rfind(|l| l.split(' ').nth(1) == Some(mount_point))
            .unwrap_or_else(|| panic!("{mount_point} not mounted in {id}:\n{mounts}"))
            .to_owned()
    }

    fn boot_log(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.logs()).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().contains("boot") {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text.lines()
            .filter(|l| l.contains("annotation") || l.contains("rror") || l.contains("hint"))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        for id in self.containers.iter().rev() {
            let _ = self.runsc(&["kill", id, "KILL"]);
            let _ = self.runsc(&["delete", "--force", id]);
        }
        // Before the temporary directory is removed.
        self.memory_volumes.clear();
    }
}

fn fstype(line: &str) -> &str {
    line.split(' ').nth(2).unwrap_or_default()
}

/// The two-container pod of `tests/e2e/pod.yaml`, started through the hook.
fn start_pod(runsc: &Runsc, runtime: Runtime) -> (Pod, BTreeMap<&'static str, PathBuf>) {
    let mut pod = Pod::new(runsc, runtime, webhook_annotations(POD));
    let mut host = BTreeMap::new();
    host.insert("shared", pod.memory_volume("shared"));
    host.insert("scratch", pod.volume("kubernetes.io~empty-dir", "scratch"));
    host.insert("work", pod.volume("kubernetes.io~empty-dir", "work"));
    host.insert("config", pod.volume("kubernetes.io~configmap", "config"));
    host.insert("logs", pod.sub_path("work", "writer"));
    std::fs::write(host["config"].join("app.conf"), "from-configmap\n").unwrap();
    let bind = |dest: &str, src: &Path, ro: bool| json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate", if ro { "ro" } else { "rw" }]});
    let sandbox = pod.bundle(SANDBOX_ID, true, &["/bin/sleep", "3600"], vec![]);
    pod.run_container(SANDBOX_ID, &sandbox, false).unwrap_or_else(|e| panic!("{} {runtime:?}: {e}", runsc.label));
    let writer = pod.bundle(
        "writer",
        false,
        &["/bin/sleep", "3600"],
        vec![
            bind("/shared", &host["shared"], false),
            bind("/scratch", &host["scratch"], false),
            bind("/config", &host["config"], true),
            bind("/logs", &host["logs"], false),
        ],
    );
    pod.run_container("writer", &writer, false).unwrap_or_else(|e| panic!("{} {runtime:?}: {e}", runsc.label));
    let reader = pod.bundle("reader", false, &["/bin/sleep", "3600"], vec![bind("/shared", &host["shared"], true)]);
    pod.run_container("reader", &reader, false).unwrap_or_else(|e| panic!("{} {runtime:?}: {e}", runsc.label));
    (pod, host)
}

#[test]
fn pod_volumes_become_shared_sandbox_tmpfs_on_both_runsc_releases_and_runtimes() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for runsc in runsc_versions() {
        for runtime in [Runtime::Containerd, Runtime::CriO] {
            let what = format!("runsc {} {runtime:?}", runsc.label);
            let (pod, host) = start_pod(&runsc, runtime);

            // Memory emptyDir mounted by two containers: one sandbox tmpfs, the same bytes in both.
            pod.exec("writer", "echo hello-from-writer > /shared/msg");
            assert_eq!(pod.exec("reader", "cat /shared/msg"), "hello-from-writer\n", "{what}");
            for id in ["writer", "reader"] {
                let line = pod.mount_line(id, "/shared");
                assert_eq!(fstype(&line), "tmpfs", "{what}: /shared in {id}: {line}");
                eprintln!("{what}: {id} /shared: {line}");
            }
            assert_eq!(
                std::fs::read_dir(&host["shared"]).unwrap().count(),
                0,
                "{what}: the host directory stays empty"
            );

            // Disk emptyDir used by one container.
            pod.exec("writer", "echo on-disk > /scratch/file");
            assert_eq!(pod.exec("writer", "cat /scratch/file"), "on-disk\n");
            let line = pod.mount_line("writer", "/scratch");
            eprintln!("{what}: writer /scratch: {line}");
            let host_files = file_names(&host["scratch"]);
            if runsc.label == "2024" {
                assert_eq!(fstype(&line), "tmpfs", "{what}: disk-backed sandbox tmpfs: {line}");
                assert!(host_files.iter().any(|f| f.starts_with(".gvisor.filestore.")), "{what}: {host_files:?}");
            } else {
                assert_ne!(fstype(&line), "tmpfs", "{what}: the 2022 runsc keeps a bind: {line}");
                assert_eq!(host_files, ["file"], "{what}: writes reach the host through the bind");
            }

            // /dev/shm: one tmpfs for the pod.
            pod.exec("writer", "echo shm-data > /dev/shm/segment");
            assert_eq!(pod.exec("reader", "cat /dev/shm/segment"), "shm-data\n", "{what}");
            for id in ["writer", "reader"] {
                let line = pod.mount_line(id, "/dev/shm");
                assert_eq!(fstype(&line), "tmpfs", "{what}: /dev/shm in {id}: {line}");
                eprintln!("{what}: {id} /dev/shm: {line}");
            }

            // subPath and configMap volumes stay plain binds and still work.
            assert_eq!(pod.exec("writer", "cat /config/app.conf"), "from-configmap\n");
            assert_ne!(fstype(&pod.mount_line("writer", "/config")), "tmpfs");
            pod.exec("writer", "echo log-line > /logs/app.log");
            assert_eq!(
                std::fs::read_to_string(host["logs"].join("app.log")).unwrap(),
                "log-line\n",
                "{what}: subPath writes reach the host"
            );
            let logs = pod.mount_line("writer", "/logs");
            assert_ne!(fstype(&logs), "tmpfs", "{what}: {logs}");
            eprintln!("{what}: writer /config: {}", pod.mount_line("writer", "/config"));
            eprintln!("{what}: writer /logs: {logs}");
        }
    }
}

#[test]
fn hostile_author_annotations_still_boot_under_the_strict_runsc_and_mount_no_host_path() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runsc = runsc_versions().remove(0);
    let annotations = webhook_annotations(HOSTILE_POD);
    let mut pod = Pod::new(&runsc, Runtime::Containerd, annotations);
    // The host path the author pointed the hint at, with something to find if it were ever mounted.
    let secret = pod.path("host-secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("marker"), "host data").unwrap();
    pod.annotations.insert("dev.gvisor.spec.mount.data.source".into(), secret.to_string_lossy().into_owned());
    let data = pod.memory_volume("data");
    let sandbox = pod.bundle(SANDBOX_ID, true, &["/bin/sleep", "3600"], vec![]);
    pod.run_container(SANDBOX_ID, &sandbox, false).expect("the strict runsc boots the hostile pod");
    let app = pod.bundle(
        "app",
        false,
        &["/bin/sleep", "3600"],
        vec![json!({"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rw"]})],
    );
    pod.run_container("app", &app, false).unwrap();
    assert_eq!(fstype(&pod.mount_line("app", "/data")), "tmpfs");
    let listing = pod.exec("app", "ls -a /data; cat /proc/mounts");
    assert!(!listing.contains("marker") && !listing.contains("host-secret"), "{listing}");
}

#[test]
fn without_the_hook_the_strict_runsc_refuses_the_webhook_output() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runsc = runsc_versions().remove(0);
    let mut pod = Pod::new(&runsc, Runtime::Containerd, webhook_annotations(POD));
    pod.memory_volume("shared");
    pod.volume("kubernetes.io~empty-dir", "scratch");
    let sandbox = pod.bundle(SANDBOX_ID, true, &["/bin/sleep", "3600"], vec![]);
    let error =
        pod.run_container(SANDBOX_ID, &sandbox, true).expect_err("runsc 2022 must refuse hints without a source");
    // The cause is only in the boot log; stderr just says the sandbox never came up.
    // runsc reports whichever hint its map iteration meets first: either of the pod's two emptyDirs.
    let refused = ["shared", "scratch"]
        .iter()
        .any(|name| error.contains(&format!("creating pod mount hints: source field for \"{name}\" has not been set")));
    assert!(refused, "{error}");
    eprintln!(
        "control case (no hook, runsc 2022): {}",
        error.lines().find(|l| l.contains("FATAL")).unwrap_or_default()
    );
}

/// The pod of `tests/e2e/pod.yaml` with the hints as gVisor's shim leaves them when it runs before the hook (the
/// hook is the shim's `binary_name`): every hinted emptyDir has its `source`, and the disk emptyDir `scratch`
/// has become a disk-backed `tmpfs` shared by the pod while its container mounts stay binds (the Memory
/// emptyDir's mounts are tmpfs, as the shim makes them). Two containers mount both emptyDirs. Returns the pod,
/// its volume directories and how starting its containers went.
fn start_shim_completed_pod(runsc: &Runsc, direct: bool) -> (Pod, BTreeMap<&'static str, PathBuf>, Result<(), String>) {
    let mut pod = Pod::new(runsc, Runtime::Containerd, webhook_annotations(POD));
    let mut host = BTreeMap::new();
    host.insert("shared", pod.memory_volume("shared"));
    host.insert("scratch", pod.volume("kubernetes.io~empty-dir", "scratch"));
    for (name, dir) in &host {
        pod.annotations.insert(format!("dev.gvisor.spec.mount.{name}.source"), dir.to_string_lossy().into_owned());
    }
    pod.annotations.insert("dev.gvisor.spec.mount.scratch.type".into(), "tmpfs".into());
    pod.annotations.insert("dev.gvisor.spec.mount.scratch.share".into(), "pod".into());
    let bind = |dest: &str, src: &Path| json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate", "rw"]});
    let memory =
        json!({"destination": "/shared", "type": "tmpfs", "source": host["shared"], "options": ["rprivate", "rw"]});
    let mounts = vec![memory, bind("/scratch", &host["scratch"])];
    let sandbox = pod.bundle(SANDBOX_ID, true, &["/bin/sleep", "3600"], vec![]);
    let mut started = pod.run_container(SANDBOX_ID, &sandbox, direct);
    for id in ["writer", "reader"] {
        if started.is_ok() {
            let bundle = pod.bundle(id, false, &["/bin/sleep", "3600"], mounts.clone());
            started = pod.run_container(id, &bundle, direct);
        }
    }
    (pod, host, started)
}

/// The hint annotations of the sandbox spec as runsc read them.
fn sandbox_hint(pod: &Pod, name: &str) -> (String, String) {
    let spec: Value =
        serde_json::from_slice(&std::fs::read(pod.path(&format!("bundles/{SANDBOX_ID}/config.json"))).unwrap())
            .unwrap();
    let field = |f: &str| spec["annotations"][format!("dev.gvisor.spec.mount.{name}.{f}")].as_str().unwrap().to_owned();
    (field("type"), field("share"))
}

/// Seen on a cluster: behind gVisor's shim, which had already rewritten a disk emptyDir's hint to a disk-backed
/// `tmpfs`, the hook took the `tmpfs` for a Memory medium and kept it, and the 2022 runsc failed the container
/// (`gofer mount requires a connection FD`). The hook reads the medium on the node: on the 2022 runsc the disk
/// emptyDir is a shared bind, on the 2024 one a disk-backed sandbox tmpfs; the Memory one a tmpfs on both.
#[test]
fn a_disk_empty_dir_the_shim_completed_to_tmpfs_works_on_both_runsc_releases() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let releases = runsc_versions();

    // Control: what the 2022 runsc makes of the shim's hints as they are (the pod is gone before the next).
    let (_, _, started) = start_shim_completed_pod(&releases[0], true);
    let error = started.expect_err("runsc 2022 cannot back a tmpfs with disk");
    assert!(
        error.contains("mount shared mount \"scratch\" to \"/scratch\": gofer mount requires a connection FD"),
        "{error}"
    );
    eprintln!("control case (shim's hints, no hook, runsc 2022): {}", error.lines().next().unwrap_or_default());

    for runsc in &releases {
        let what = format!("runsc {}", runsc.label);
        let (pod, host, started) = start_shim_completed_pod(runsc, false);
        started.unwrap_or_else(|e| panic!("{what}: {e}"));

        pod.exec("writer", "echo from-writer > /scratch/file");
        assert_eq!(pod.exec("reader", "cat /scratch/file"), "from-writer\n", "{what}: one volume for the pod");
        let line = pod.mount_line("writer", "/scratch");
        eprintln!("{what}: writer /scratch: {line}");
        let host_files = file_names(&host["scratch"]);
        if runsc.label == "2024" {
            assert_eq!(sandbox_hint(&pod, "scratch"), ("tmpfs".into(), "pod".into()), "{what}");
            assert_eq!(fstype(&line), "tmpfs", "{what}: disk-backed sandbox tmpfs: {line}");
            assert!(host_files.iter().any(|f| f.starts_with(".gvisor.filestore.")), "{what}: {host_files:?}");
        } else {
            assert_eq!(sandbox_hint(&pod, "scratch"), ("bind".into(), "shared".into()), "{what}");
            assert_ne!(fstype(&line), "tmpfs", "{what}: the 2022 runsc keeps a bind: {line}");
            assert_eq!(host_files, ["file"], "{what}: writes reach the host through the bind");
        }

        assert_eq!(sandbox_hint(&pod, "shared"), ("tmpfs".into(), "pod".into()), "{what}");
        pod.exec("writer", "echo in-memory > /shared/msg");
        assert_eq!(pod.exec("reader", "cat /shared/msg"), "in-memory\n", "{what}");
        for id in ["writer", "reader"] {
            let line = pod.mount_line(id, "/shared");
            assert_eq!(fstype(&line), "tmpfs", "{what}: /shared in {id}: {line}");
        }
        assert_eq!(std::fs::read_dir(&host["shared"]).unwrap().count(), 0, "{what}: the host tmpfs stays empty");
    }
}

/// The names in a host directory (a volume's directory, seen from outside the sandbox).
fn file_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}
