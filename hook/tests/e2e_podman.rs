//! Podman with runsc and the hook in its `precreate` stage: a single container whose hinted volume becomes a
//! sandbox tmpfs. Podman gives pod annotations to application containers only, so this shows the lone-container
//! path; pod-level sharing is the runsc suite's job. Needs root, podman and Debian's runsc.

mod fixtures;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fixtures::{TmpfsMount, UID};

const HOOK: &str = env!("CARGO_BIN_EXE_mount-hints-hook");

struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        assert!(Path::new("/usr/bin/podman").exists(), "podman not found: run tests/install-deps (as root)");
        assert!(Path::new("/usr/bin/runsc").exists(), "runsc not found: run tests/install-deps (as root)");
        let dir = tempfile::Builder::new().prefix("mount-hints-podman.").tempdir().unwrap();
        let podman = Podman { dir };
        fixtures::busybox_rootfs(&podman.path("rootfs"), &["cache"]);
        for hooks in ["hooks", "no-hooks"] {
            std::fs::create_dir_all(podman.path(hooks)).unwrap();
        }
        // The hooks.d entry an operator installs: precreate, only for containers that carry mount hints.
        let hook = serde_json::json!({
            "version": "1.0.0",
            "hook": {"path": HOOK, "args": ["mount-hints-hook", "precreate", "--kubelet-root", podman.kubelet_root()]},
            "when": {"annotations": {"^dev\\.gvisor\\.spec\\.mount\\..*": ".*"}},
            "stages": ["precreate"],
        });
        std::fs::write(podman.path("hooks/mount-hints.json"), hook.to_string()).unwrap();
        podman
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn kubelet_root(&self) -> PathBuf {
        self.path("var/lib/kubelet")
    }

    fn containers_conf(&self, hooks: &str) -> PathBuf {
        let conf = self.path(&format!("containers-{hooks}.conf"));
        let text = format!(
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nhooks_dir = [\"{}\"]\n\
             [engine.runtimes]\nrunsc = [\"/usr/bin/runsc\"]\n",
            self.path(hooks).display()
        );
        std::fs::write(&conf, text).unwrap();
        conf
    }

    fn run(&self, hooks: &str, volume: &Path, script: &str) -> Output {
        Command::new("podman")
            .env("CONTAINERS_CONF", self.containers_conf(hooks))
            .arg("--root")
            .arg(self.path("storage"))
            .arg("--runroot")
            .arg(self.path("run"))
            .args(["--storage-driver", "vfs", "run", "--rm", "--network", "none", "--runtime", "runsc"])
            .args(["--runtime-flag", "network=none", "--runtime-flag", "platform=ptrace"])
            .args(["--annotation", &format!("io.kubernetes.pod.uid={UID}")])
            .args(["--annotation", "dev.gvisor.spec.mount.cache.type=tmpfs"])
            .args(["--annotation", "dev.gvisor.spec.mount.cache.share=container"])
            .arg("-v")
            .arg(format!("{}:/cache", volume.display()))
            .arg("--rootfs")
            .arg(self.path("rootfs"))
            .args(["/bin/sh", "-c", script])
            .output()
            .unwrap()
    }
}

#[test]
fn podman_precreate_hook_turns_the_hinted_volume_into_a_sandbox_tmpfs() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the podman suite needs root");
    let podman = Podman::new();
    // A `medium: Memory` emptyDir: kubelet mounts a tmpfs on its directory (unmounted when the test ends).
    let memory =
        TmpfsMount::new(&podman.kubelet_root().join("pods").join(UID).join("volumes/kubernetes.io~empty-dir/cache"));
    let volume = memory.path();

    let out =
        podman.run("hooks", volume, "echo inside > /cache/file && cat /cache/file && grep ' /cache ' /proc/mounts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "podman run failed: {}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.contains(" /cache ")).unwrap_or_default();
    eprintln!("podman + precreate hook, runsc 2022: {line}");
    assert!(stdout.starts_with("inside\n"), "{stdout}");
    assert_eq!(line.split(' ').nth(2), Some("tmpfs"), "{stdout}");
    assert_eq!(std::fs::read_dir(volume).unwrap().count(), 0, "the write stayed in the sandbox");

    // Control: the same container without the hook is refused by the strict runsc (hint without a source).
    let out = podman.run("no-hooks", volume, "true");
    assert!(!out.status.success(), "runsc 2022 accepted an incomplete hint");
}
