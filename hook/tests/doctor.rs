//! `doctor` on node configurations built from the snippets shipped in `manifests/node/`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const HOOK: &str = env!("CARGO_BIN_EXE_mount-hints-hook");

fn snippet(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/node").join(name)).unwrap()
}

struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let node = Node { dir: tempfile::tempdir().unwrap() };
        std::fs::create_dir_all(node.path("crio.conf.d")).unwrap();
        let runsc = node.path("runsc");
        std::fs::write(&runsc, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&runsc, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(node.path("hook.json"), serde_json::json!({"runtime": runsc}).to_string()).unwrap();
        node
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn install_hook(&self) -> PathBuf {
        let hook = self.path("mount-hints-hook");
        std::fs::write(&hook, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        hook
    }
    /// The shipped snippets, with the node's paths in place of the defaults.
    fn containerd(&self, hook: &Path, edit: impl Fn(String) -> String) {
        let runsc_toml = self.path("runsc.toml");
        std::fs::write(
            &runsc_toml,
            snippet("runsc.toml").replace("/usr/local/bin/mount-hints-hook", hook.to_str().unwrap()),
        )
        .unwrap();
        let config =
            snippet("containerd-runsc.toml").replace("/etc/containerd/runsc.toml", runsc_toml.to_str().unwrap());
        std::fs::write(self.path("config.toml"), edit(config)).unwrap();
    }
    fn crio(&self, hook: &Path, edit: impl Fn(String) -> String) {
        let conf = snippet("crio-runsc.conf").replace("/usr/local/bin/mount-hints-hook", hook.to_str().unwrap());
        std::fs::write(self.path("crio.conf.d/50-runsc.conf"), edit(conf)).unwrap();
    }
    fn doctor(&self, hook: &Path) -> (i32, String) {
        let out = Command::new(HOOK)
            .arg("doctor")
            .arg("--containerd-config")
            .arg(self.path("config.toml"))
            .arg("--crio-config")
            .arg(self.path("crio.conf"))
            .arg("--crio-config-dir")
            .arg(self.path("crio.conf.d"))
            .arg("--hook-path")
            .arg(hook)
            .arg("--hook-config")
            .arg(self.path("hook.json"))
            .output()
            .unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[test]
fn the_shipped_containerd_configuration_passes() {
    let node = Node::new();
    let hook = node.install_hook();
    node.containerd(&hook, |c| c);
    let (code, report) = node.doctor(&hook);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("passes dev.gvisor.* pod annotations") && report.contains("runs the hook"), "{report}");
}

#[test]
fn each_missing_piece_of_a_containerd_node_is_reported() {
    let node = Node::new();
    let hook = node.install_hook();
    node.containerd(&hook, |c| {
        c.replace("pod_annotations = [\"dev.gvisor.*\"]", "pod_annotations = [\"io.katacontainers.*\"]")
    });
    let (code, report) = node.doctor(&hook);
    assert_eq!(code, 1);
    assert!(report.contains("missing: containerd handler \"runsc\": pod_annotations"), "{report}");

    node.containerd(&hook, |c| c.replace("runsc", "kata").replace("io.containerd.kata.v1", "io.containerd.kata.v2"));
    let (code, report) = node.doctor(&hook);
    assert_eq!(code, 1);
    assert!(report.contains("no runtime handler uses io.containerd.runsc.v1"), "{report}");

    node.containerd(&hook, |c| c);
    std::fs::write(node.path("runsc.toml"), "binary_name = \"/usr/bin/runsc\"\n").unwrap();
    let (code, report) = node.doctor(&hook);
    assert_eq!(code, 1);
    assert!(report.contains("the shim runs /usr/bin/runsc, not the hook"), "{report}");

    node.containerd(&hook, |c| c);
    let (code, report) = node.doctor(&node.path("not-installed"));
    assert_eq!(code, 1);
    assert!(report.contains("hook not installed"), "{report}");
}

#[test]
fn crio_nodes_are_checked_too() {
    let node = Node::new();
    let hook = node.install_hook();
    node.crio(&hook, |c| c);
    let (code, report) = node.doctor(&hook);
    assert_eq!(code, 0, "{report}");
    node.crio(&hook, |c| c.replace("allowed_annotations = [\"dev.gvisor\"]", "allowed_annotations = []"));
    let (code, report) = node.doctor(&hook);
    assert_eq!(code, 1);
    assert!(report.contains("does not allow \"dev.gvisor\""), "{report}");
    std::fs::remove_file(node.path("crio.conf.d/50-runsc.conf")).unwrap();
    let (code, report) = node.doctor(&hook);
    assert_eq!(code, 1);
    assert!(report.contains("no containerd"), "{report}");
}

#[test]
fn the_runtime_hook_json_names_must_be_a_real_runsc() {
    let node = Node::new();
    let hook = node.install_hook();
    node.containerd(&hook, |c| c);
    let (code, report) = node.doctor(&hook);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains(&format!("the hook runs {}", node.path("runsc").display())), "{report}");
    for (runtime, says) in [(node.path("gone"), "is not an executable file"), (hook.clone(), "is the hook itself")] {
        std::fs::write(node.path("hook.json"), serde_json::json!({"runtime": runtime}).to_string()).unwrap();
        let (code, report) = node.doctor(&hook);
        assert_eq!(code, 1);
        assert!(report.contains(says), "{report}");
    }
    std::fs::write(node.path("hook.json"), "{\"runtme\": \"/usr/bin/runsc\"}").unwrap();
    let (code, report) = node.doctor(&hook);
    assert_eq!(code, 1);
    assert!(report.contains("unknown field"), "{report}");
}
