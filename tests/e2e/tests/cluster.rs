//! The whole path on one machine: kubectl -> kube-apiserver (our webhook, installed from its image and the
//! manifests) -> scheduler -> kubelet -> containerd (CRI, `pod_annotations`) -> gVisor's shim (`binary_name` = our
//! hook, wired by the DaemonSet's `install`) -> runsc. `tests/cluster up` builds it; each test here brings one
//! cluster up for one runsc release, with or without the hook, and tears it down when it ends (pass or fail).
//! What is asserted is what users see through `kubectl`: the mounts inside the sandbox, data shared between
//! containers, what reaches the host.
//!
//! Needs root and everything `tests/cluster up` builds; one cluster at a time (the tests serialise on a lock).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mount_hints_e2e::{is_root, run_ok, run_ok_with_input, wait_until, workspace};

/// One cluster at a time: they share the kubelet root, ports and the node's runsc.toml.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

const STATE: &str = "/var/tmp/mount-hints-cluster";
const KUBELET_ROOT: &str = "/var/lib/kubelet";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runsc {
    R2022,
    R2024,
}

impl Runsc {
    fn arg(self) -> &'static str {
        match self {
            Runsc::R2022 => "2022",
            Runsc::R2024 => "2024",
        }
    }
}

/// A cluster brought up by `tests/cluster up`, torn down by `tests/cluster down` when dropped.
struct Cluster {
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    fn up(runsc: Runsc, with_hook: bool) -> Cluster {
        assert!(is_root(), "the cluster suite needs root");
        let lock = ONE_CLUSTER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut command = Command::new(workspace().join("tests/cluster"));
        command.args(["up", "--runsc", runsc.arg()]);
        if !with_hook {
            command.arg("--without-hook");
        }
        let started = Instant::now();
        let out = command.stdin(Stdio::null()).output().expect("run tests/cluster");
        let cluster = Cluster { _lock: lock };
        assert!(
            out.status.success(),
            "tests/cluster up failed:\n{}\n{}\n(component logs: {STATE}/logs)",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("cluster up (runsc {}, hook: {with_hook}) in {:.1?}", runsc.arg(), started.elapsed());
        cluster
    }

    fn kubectl(&self) -> Command {
        let mut command = Command::new("kubectl");
        command.arg("--kubeconfig").arg(Path::new(STATE).join("kubeconfig"));
        command
    }

    /// kubectl with `args`, which must succeed; its stdout.
    fn run(&self, args: &[&str]) -> String {
        String::from_utf8(run_ok(self.kubectl().args(args)).stdout).unwrap()
    }

    /// kubectl with `args` and `input` on its stdin, which must succeed; its stdout.
    fn run_with_input(&self, args: &[&str], input: &str) -> String {
        String::from_utf8(run_ok_with_input(self.kubectl().args(args), input).stdout).unwrap()
    }

    fn apply(&self, yaml: &str) -> String {
        self.run_with_input(&["apply", "-f", "-"], yaml)
    }

    fn create_dry_run(&self, yaml: &str) -> String {
        self.run_with_input(&["create", "--dry-run=server", "-o", "json", "-f", "-"], yaml)
    }

    /// `sh -c script` in a container of a pod; its stdout.
    fn exec(&self, pod: &str, container: &str, script: &str) -> String {
        self.run(&["exec", pod, "-c", container, "--", "sh", "-c", script])
    }

    /// The one pod of a Deployment, once the rollout is complete.
    fn rolled_out_pod(&self, deployment: &str) -> Pod {
        self.run(&["rollout", "status", &format!("deployment/{deployment}"), "--timeout=120s"]);
        let selector = format!("app={deployment}");
        let mut pod = None;
        // The Deployment is complete, but a just-replaced pod may still be listed while it terminates.
        wait_until("one running pod", Duration::from_secs(60), || {
            let listed = self.run(&[
                "get",
                "pods",
                "-l",
                &selector,
                "-o",
                "jsonpath={range .items[?(@.status.phase==\"Running\")]}{.metadata.name} {.metadata.uid}{\"\\n\"}{end}",
            ]);
            let lines: Vec<&str> = listed.lines().collect();
            if let [line] = lines.as_slice() {
                let (name, uid) = line.split_once(' ').unwrap();
                pod = Some(Pod { name: name.to_owned(), uid: uid.to_owned() });
            }
            pod.is_some()
        });
        pod.unwrap()
    }

    fn delete_deployment(&self, deployment: &str) {
        self.run(&["delete", "deployment", deployment, "--wait=true", "--timeout=120s"]);
        let selector = format!("app={deployment}");
        wait_until("the deployment's pods to be gone", Duration::from_secs(120), || {
            self.run(&["get", "pods", "-l", &selector, "-o", "name"]).trim().is_empty()
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = Command::new(workspace().join("tests/cluster")).arg("down").stdin(Stdio::null()).output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("tests/cluster down failed: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => eprintln!("tests/cluster down: {e}"),
        }
    }
}

struct Pod {
    name: String,
    uid: String,
}

impl Pod {
    fn empty_dir(&self, volume: &str) -> PathBuf {
        Path::new(KUBELET_ROOT).join("pods").join(&self.uid).join("volumes/kubernetes.io~empty-dir").join(volume)
    }
}

/// A one-replica Deployment `name` in `default` whose pods carry `pod_annotations` (a YAML flow mapping's body)
/// and run `pod_spec` (the lines under `spec:`, indented by 6). `sleep` as PID 1 ignores SIGTERM, so the pods
/// get a one-second grace period: deletion stays quick.
fn deployment(name: &str, pod_annotations: &str, pod_spec: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}, annotations: {{{pod_annotations}}}}}
    spec:
      terminationGracePeriodSeconds: 1
{pod_spec}"#
    )
}

/// The workload users run: an init container and two app containers sharing a Memory emptyDir, a disk
/// emptyDir and a Memory emptyDir at /dev/shm.
fn shared_volumes_deployment(name: &str) -> String {
    deployment(
        name,
        "",
        r#"      runtimeClassName: gvisor
      initContainers:
      - name: init
        image: localhost/busybox:test
        imagePullPolicy: Never
        command: ["sh", "-c", "echo from-init > /mem/init && echo from-init > /disk/init && echo from-init > /dev/shm/init"]
        volumeMounts: [{name: mem, mountPath: /mem}, {name: disk, mountPath: /disk}, {name: dshm, mountPath: /dev/shm}]
      containers:
      - name: writer
        image: localhost/busybox:test
        imagePullPolicy: Never
        command: ["sh", "-c", "echo workload-started; exec sleep 2147483647"]
        volumeMounts: [{name: mem, mountPath: /mem}, {name: disk, mountPath: /disk}, {name: dshm, mountPath: /dev/shm}]
      - name: reader
        image: localhost/busybox:test
        imagePullPolicy: Never
        command: ["sleep", "2147483647"]
        volumeMounts: [{name: mem, mountPath: /mem}, {name: disk, mountPath: /disk}, {name: dshm, mountPath: /dev/shm}]
      volumes:
      - {name: mem, emptyDir: {medium: Memory}}
      - {name: disk, emptyDir: {}}
      - {name: dshm, emptyDir: {medium: Memory}}
"#,
    )
}

/// One container sleeping with a disk emptyDir `data` at /data.
fn one_volume_deployment(name: &str, runtime_class: Option<&str>, pod_annotations: &str) -> String {
    let runtime_class = runtime_class.map(|c| format!("      runtimeClassName: {c}\n")).unwrap_or_default();
    let pod_spec = format!(
        r#"{runtime_class}      containers:
      - name: app
        image: localhost/busybox:test
        imagePullPolicy: Never
        command: ["sleep", "2147483647"]
        volumeMounts: [{{name: data, mountPath: /data}}]
      volumes:
      - {{name: data, emptyDir: {{}}}}
"#
    );
    deployment(name, pod_annotations, &pod_spec)
}

/// The `/proc/mounts` line of a mount point inside a container.
fn mount_line<'a>(mounts: &'a str, mount_point: &str) -> &'a str {
    mounts
        .lines()
        .rev() // the last entry for a mount point is the one in effect
        .find(|l| l.split_whitespace().nth(1) == Some(mount_point))
        .unwrap_or_else(|| panic!("no mount at {mount_point} in:\n{mounts}"))
}

fn fs_type<'a>(mounts: &'a str, mount_point: &str) -> &'a str {
    mount_line(mounts, mount_point).split_whitespace().nth(2).unwrap()
}

/// Names in a host directory.
fn host_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn sandbox_processes() -> usize {
    let out = Command::new("pgrep").args(["-f", "/run/containerd/runsc/k8s.io"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn kubelet_pod_mounts(uid: &str) -> Vec<String> {
    let needle = format!("{KUBELET_ROOT}/pods/{uid}");
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|m| m.starts_with(&needle)))
        .map(str::to_owned)
        .collect()
}

/// The full check of the shared-volumes workload, with mount-hints installed (webhook and hook) or with the
/// webhook and gVisor's shim alone, which completes the hints itself on runsc 2024.
fn shared_volumes(runsc: Runsc, with_hook: bool) {
    let cluster = Cluster::up(runsc, with_hook);
    cluster.apply(&shared_volumes_deployment("shared"));
    let pod = cluster.rolled_out_pod("shared");

    // The webhook's hints are on the stored pod, with no source (that is the node's).
    let annotations = cluster.run(&["get", "pod", &pod.name, "-o", "jsonpath={.metadata.annotations}"]);
    for volume in ["mem", "disk", "dshm"] {
        assert!(annotations.contains(&format!("dev.gvisor.spec.mount.{volume}.share\":\"pod\"")), "{annotations}");
    }
    assert!(!annotations.contains(".source"), "a source reached the API: {annotations}");

    let mounts = cluster.exec(&pod.name, "writer", "cat /proc/mounts");
    let half = if with_hook { "with the hook" } else { "with the shim alone" };
    eprintln!("runsc {} {half}, /proc/mounts in the writer:", runsc.arg());
    for point in ["/mem", "/disk", "/dev/shm"] {
        eprintln!("  {}", mount_line(&mounts, point));
    }
    assert_eq!(fs_type(&mounts, "/mem"), "tmpfs", "{mounts}");
    assert_eq!(fs_type(&mounts, "/dev/shm"), "tmpfs", "{mounts}");
    // SPEC: a disk emptyDir is a disk-backed sandbox tmpfs where runsc can do it (2024), else a shared gofer bind.
    match runsc {
        Runsc::R2024 => assert_eq!(fs_type(&mounts, "/disk"), "tmpfs", "{mounts}"),
        Runsc::R2022 => assert_eq!(fs_type(&mounts, "/disk"), "9p", "{mounts}"),
    }

    // One container writes, the other reads at once; the init container's files are there.
    cluster.exec(&pod.name, "writer", "echo w-mem > /mem/w && echo w-disk > /disk/w && echo w-shm > /dev/shm/w");
    let seen = cluster.exec(&pod.name, "reader", "cat /mem/w /disk/w /dev/shm/w /mem/init /disk/init /dev/shm/init");
    assert_eq!(seen, "w-mem\nw-disk\nw-shm\nfrom-init\nfrom-init\nfrom-init\n");

    // The Memory emptyDir's data stays inside the sandbox: its host directory (kubelet's tmpfs) stays empty.
    assert_eq!(host_entries(&pod.empty_dir("mem")), Vec::<String>::new(), "the Memory emptyDir reached the host");
    assert_eq!(host_entries(&pod.empty_dir("dshm")), Vec::<String>::new(), "/dev/shm's emptyDir reached the host");
    let disk = host_entries(&pod.empty_dir("disk"));
    match runsc {
        // Disk-backed: one filestore file, never the files themselves.
        Runsc::R2024 => assert!(
            disk.len() == 1 && disk[0].starts_with(".gvisor.filestore."),
            "the disk emptyDir's host directory holds {disk:?}"
        ),
        Runsc::R2022 => assert_eq!(disk, ["init", "w"], "the gofer bind writes through to the host"),
    }

    // The hook logs where the runtime's caller collects runtime errors, never into the workload's output (nor
    // does the shim).
    let logs = cluster.run(&["logs", &pod.name, "-c", "writer"]);
    assert_eq!(logs, "workload-started\n", "kubectl logs of the workload holds more than its own output");

    // Deleting the pod leaves no sandbox, shim or mount behind.
    cluster.delete_deployment("shared");
    wait_until("the sandbox processes to exit", Duration::from_secs(60), || sandbox_processes() == 0);
    wait_until("kubelet to unmount the pod's volumes", Duration::from_secs(60), || {
        kubelet_pod_mounts(&pod.uid).is_empty()
    });
    let shims = Command::new("pgrep").args(["-f", "containerd-shim-runsc-v1"]).output().unwrap();
    assert!(shims.stdout.is_empty(), "a gVisor shim outlived its pod: {}", String::from_utf8_lossy(&shims.stdout));
}

#[test]
fn shared_volumes_with_mount_hints_on_runsc_2024() {
    shared_volumes(Runsc::R2024, true);
}

#[test]
fn shared_volumes_with_mount_hints_on_runsc_2022() {
    shared_volumes(Runsc::R2022, true);
}

/// The README's "Which half does a cluster need?": on runsc 2024 the webhook and gVisor's shim alone give the
/// same result as with the hook.
#[test]
fn shared_volumes_with_the_shim_alone_on_runsc_2024() {
    shared_volumes(Runsc::R2024, false);
}

/// ...and on runsc 2022 they do not: the shim turns the disk emptyDir's hint into a `tmpfs` that this runsc can
/// only serve from memory while the container mount stays a bind, and runsc fails the container. Memory
/// emptyDirs and /dev/shm work.
#[test]
fn the_shim_alone_on_runsc_2022_fails_a_disk_empty_dir() {
    let cluster = Cluster::up(Runsc::R2022, false);
    cluster.apply(&shared_volumes_deployment("shared"));
    let mut events = String::new();
    wait_until("the container's failure event", Duration::from_secs(90), || {
        events = cluster.run(&[
            "get",
            "events",
            "--field-selector",
            "reason=Failed",
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ]);
        events.contains("gofer mount requires a connection FD")
    });
    assert!(events.contains(r#"mount shared mount "disk" to "/disk""#), "{events}");
    cluster.run(&["delete", "deployment", "shared", "--wait=false"]);

    let memory_only = shared_volumes_deployment("memory")
        .replace(", {name: disk, mountPath: /disk}", "")
        .replace(" && echo from-init > /disk/init", "")
        .replace("      - {name: disk, emptyDir: {}}\n", "");
    assert!(!memory_only.contains("disk"), "{memory_only}");
    cluster.apply(&memory_only);
    let pod = cluster.rolled_out_pod("memory");
    let mounts = cluster.exec(&pod.name, "writer", "cat /proc/mounts");
    assert_eq!(fs_type(&mounts, "/mem"), "tmpfs", "{mounts}");
    assert_eq!(fs_type(&mounts, "/dev/shm"), "tmpfs", "{mounts}");
    cluster.exec(&pod.name, "writer", "echo w-mem > /mem/w && echo w-shm > /dev/shm/w");
    assert_eq!(cluster.exec(&pod.name, "reader", "cat /mem/w /dev/shm/w /mem/init"), "w-mem\nw-shm\nfrom-init\n");
}

/// Pod authors are untrusted: one who names a host path as a hint's source gets a pod that runs, on a volume
/// that is not that path; a runc pod is not touched; a server-side dry run shows the hints and stores nothing.
#[test]
fn authors_cannot_choose_a_host_path_and_other_pods_are_untouched() {
    let cluster = Cluster::up(Runsc::R2024, true);
    let author_hints = "dev.gvisor.spec.mount.data.source: /etc, dev.gvisor.spec.mount.data.type: bind, \
                        dev.gvisor.spec.mount.data.share: container";
    cluster.apply(&one_volume_deployment("sneaky", Some("gvisor"), author_hints));
    cluster.apply(&one_volume_deployment("plain", None, ""));
    let sneaky = cluster.rolled_out_pod("sneaky");
    let annotations = cluster.run(&["get", "pod", &sneaky.name, "-o", "jsonpath={.metadata.annotations}"]);
    assert!(!annotations.contains("/etc"), "the author's source reached the stored pod: {annotations}");
    let listing = cluster.exec(&sneaky.name, "app", "ls -A /data; cat /proc/mounts");
    assert!(!listing.contains("os-release") && !listing.contains("passwd"), "the host's /etc is visible:\n{listing}");
    cluster.exec(&sneaky.name, "app", "echo mine > /data/f && cat /data/f");
    assert!(!Path::new("/etc/f").exists(), "a write reached the host's /etc");

    let plain = cluster.rolled_out_pod("plain");
    let annotations = cluster.run(&["get", "pod", &plain.name, "-o", "jsonpath={.metadata.annotations}"]);
    assert!(!annotations.contains("dev.gvisor"), "a runc pod got hints: {annotations}");
    // runc shows the host directory itself: a write lands in kubelet's emptyDir.
    cluster.exec(&plain.name, "app", "echo plain > /data/f");
    assert_eq!(std::fs::read_to_string(plain.empty_dir("data").join("f")).unwrap(), "plain\n");

    // A server-side dry run shows the hints and stores nothing.
    let dry = cluster.create_dry_run(
        r#"apiVersion: v1
kind: Pod
metadata: {name: dry, namespace: default}
spec:
  runtimeClassName: gvisor
  containers:
  - {name: a, image: localhost/busybox:test, volumeMounts: [{name: scratch, mountPath: /s}]}
  - {name: b, image: localhost/busybox:test, volumeMounts: [{name: scratch, mountPath: /s}]}
  volumes:
  - {name: scratch, emptyDir: {medium: Memory}}
"#,
    );
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    let hints = &dry["metadata"]["annotations"];
    assert_eq!(hints["dev.gvisor.spec.mount.scratch.type"], "tmpfs", "{dry}");
    assert_eq!(hints["dev.gvisor.spec.mount.scratch.share"], "pod", "{dry}");
    let stored = cluster.kubectl().args(["get", "pod", "dry"]).output().unwrap();
    assert!(!stored.status.success(), "the dry-run pod was stored");
    assert!(String::from_utf8_lossy(&stored.stderr).contains("NotFound"), "{stored:?}");
}
