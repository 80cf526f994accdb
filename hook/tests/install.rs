//! `install` and `uninstall` on throw-away host roots, as the DaemonSet's init container runs them, and
//! `doctor --host-root` on the result.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HOOK: &str = env!("CARGO_BIN_EXE_mount-hints-hook");

/// A shim configuration with comments, odd spacing and other tables: everything but binary_name must survive.
const RUNSC_TOML: &str = r#"# gVisor shim configuration, provisioned by the node image.
# binary_name is the runsc the shim runs.
binary_name   =   "/opt/gvisor/bin/runsc"   # pinned release
root = "/run/containerd/runsc"

[runsc_config]
  platform = "systrap"   # not ptrace
  debug-log = "/var/log/runsc/%ID%/"

[other.table]
keep = [1, 2, 3]
"#;

fn snippet(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/node").join(name)).unwrap()
}

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    /// A containerd node with the shipped runtime handler and the given runsc.toml (none for `None`).
    fn new(runsc_toml: Option<&str>) -> Host {
        let host = Host { dir: tempfile::tempdir().unwrap() };
        host.write("etc/containerd/config.toml", &snippet("containerd-runsc.toml"));
        if let Some(text) = runsc_toml {
            host.write("etc/containerd/runsc.toml", text);
        }
        for runsc in ["opt/gvisor/bin/runsc", "usr/bin/runsc"] {
            host.write(runsc, "#!/bin/sh\n");
            std::fs::set_permissions(host.path(runsc), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        host
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn write(&self, rel: &str, text: &str) {
        std::fs::create_dir_all(self.path(rel).parent().unwrap()).unwrap();
        std::fs::write(self.path(rel), text).unwrap();
    }
    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }
    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(HOOK).args(args).arg("--host-root").arg(self.dir.path()).output().unwrap();
        assert!(out.stderr.is_empty() || !out.status.success(), "{}", text(&out.stderr));
        out
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }
    fn doctor(&self) -> (i32, String) {
        let out = self.run(&["doctor"]);
        (out.status.code().unwrap(), text(&out.stdout))
    }
    /// Every file under the root with its mode and bytes.
    fn snapshot(&self) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
        fn walk(dir: &Path, base: &Path, into: &mut BTreeMap<PathBuf, (u32, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    walk(&path, base, into);
                } else {
                    let rel = path.strip_prefix(base).unwrap().to_owned();
                    into.insert(rel, (meta.permissions().mode() & 0o7777, std::fs::read(&path).unwrap()));
                }
            }
        }
        let mut files = BTreeMap::new();
        walk(self.dir.path(), self.dir.path(), &mut files);
        files
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn hook_json(host: &Host) -> serde_json::Value {
    serde_json::from_str(&host.read("etc/mount-hints/hook.json")).unwrap()
}

#[test]
fn install_wires_the_shim_and_uninstall_restores_every_byte() {
    let host = Host::new(Some(RUNSC_TOML));
    let before = host.snapshot();
    let (code, report) = host.doctor();
    assert_eq!(code, 1, "not wired yet: {report}");
    assert!(report.contains("the shim runs /opt/gvisor/bin/runsc, not the hook"), "{report}");

    let printed = host.ok(&["install"]);
    assert!(
        printed.contains("binary_name \"/opt/gvisor/bin/runsc\" -> \"/usr/local/bin/mount-hints-hook\""),
        "{printed}"
    );
    assert!(printed.contains("/usr/local/bin/mount-hints-hook: installed"), "{printed}");
    assert_eq!(
        host.read("etc/containerd/runsc.toml"),
        RUNSC_TOML.replace("\"/opt/gvisor/bin/runsc\"", "\"/usr/local/bin/mount-hints-hook\""),
        "only the value changed"
    );
    let installed = host.path("usr/local/bin/mount-hints-hook");
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(HOOK).unwrap());
    assert_eq!(std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(hook_json(&host)["runtime"], "/opt/gvisor/bin/runsc", "the runsc the shim ran");
    let (code, report) = host.doctor();
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("runs the hook (/usr/local/bin/mount-hints-hook)"), "{report}");
    assert!(report.contains("the hook runs /opt/gvisor/bin/runsc"), "{report}");

    // A second install changes nothing, byte for byte, and says so; the runsc it names is still the old one.
    let installed_state = host.snapshot();
    let printed = host.ok(&["install"]);
    assert_eq!(host.snapshot(), installed_state);
    assert!(printed.contains("already runs the hook") && printed.contains("unchanged"), "{printed}");

    let printed = host.ok(&["uninstall"]);
    assert!(printed.contains("restored as it was before install"), "{printed}");
    assert_eq!(host.snapshot(), before, "every file as before, nothing left behind");
}

#[test]
fn without_binary_name_the_key_is_added_and_removed_again() {
    let text = "root = \"/run/containerd/runsc\"\n\n[runsc_config]\n  platform = \"systrap\"\n";
    let host = Host::new(Some(text));
    let before = host.snapshot();
    host.ok(&["install"]);
    let wired: toml::Table = host.read("etc/containerd/runsc.toml").parse().unwrap();
    assert_eq!(wired["binary_name"].as_str(), Some("/usr/local/bin/mount-hints-hook"));
    assert_eq!(hook_json(&host)["runtime"], "/usr/bin/runsc", "the default when the shim named none");
    assert_eq!(host.doctor().0, 0);
    host.ok(&["uninstall"]);
    assert_eq!(host.snapshot(), before);
}

#[test]
fn edits_made_after_install_survive_uninstall() {
    let host = Host::new(Some(RUNSC_TOML));
    host.ok(&["install"]);
    let edited = host.read("etc/containerd/runsc.toml") + "\n[added.later]\nx = 1\n";
    host.write("etc/containerd/runsc.toml", &edited);
    let printed = host.ok(&["uninstall"]);
    assert!(printed.contains("edited since install"), "{printed}");
    assert_eq!(host.read("etc/containerd/runsc.toml"), RUNSC_TOML.to_owned() + "\n[added.later]\nx = 1\n");
}

#[test]
fn other_shim_paths_and_nodes_without_a_shim() {
    // --runsc-toml names a file inside the host root.
    let host = Host::new(None);
    host.write("etc/gvisor/shim.toml", RUNSC_TOML);
    let printed = host.ok(&["install", "--runsc-toml", "/etc/gvisor/shim.toml"]);
    assert!(printed.contains("/etc/gvisor/shim.toml: binary_name"), "{printed}");
    assert!(host.read("etc/gvisor/shim.toml").contains("binary_name   =   \"/usr/local/bin/mount-hints-hook\""));
    host.ok(&["uninstall"]);
    assert_eq!(host.read("etc/gvisor/shim.toml"), RUNSC_TOML);

    // A named file that is missing, or outside the root, is an error that changes nothing.
    let before = host.snapshot();
    for bad in ["/etc/gvisor/none.toml", "/etc/../../escape.toml", "relative.toml"] {
        let out = host.run(&["install", "--runsc-toml", bad]);
        assert!(!out.status.success(), "{bad}");
        assert_eq!(host.snapshot(), before, "{bad}");
    }

    // No shim configuration (a CRI-O node): the binary and hook.json, with a runtime hook.json already had.
    host.write(
        "etc/mount-hints/hook.json",
        "{\"runtime\": \"/usr/local/bin/runsc\", \"kubeletRoot\": \"/data/kubelet\"}",
    );
    let printed = host.ok(&["install"]);
    assert!(printed.contains("/etc/containerd/runsc.toml: not found"), "{printed}");
    let config = hook_json(&host);
    assert_eq!(
        (config["runtime"].as_str(), config["kubeletRoot"].as_str()),
        (Some("/usr/local/bin/runsc"), Some("/data/kubelet"))
    );
    host.ok(&["uninstall"]);
    assert_eq!(
        host.read("etc/mount-hints/hook.json"),
        "{\"runtime\": \"/usr/local/bin/runsc\", \"kubeletRoot\": \"/data/kubelet\"}"
    );
    assert!(!host.path("usr/local/bin/mount-hints-hook").exists());
}

#[test]
fn doctor_reports_what_the_installer_leaves_to_the_operator() {
    let host = Host::new(Some(RUNSC_TOML));
    let config = snippet("containerd-runsc.toml").replace("pod_annotations = [\"dev.gvisor.*\"]\n", "");
    host.write("etc/containerd/config.toml", &config);
    host.ok(&["install"]);
    assert_eq!(std::fs::read_to_string(host.path("etc/containerd/config.toml")).unwrap(), config, "never touched");
    let (code, report) = host.doctor();
    assert_eq!(code, 1);
    assert!(report.contains("does not pass dev.gvisor.* (add \"dev.gvisor.*\")"), "{report}");
    assert!(report.contains("ok:      containerd handler \"runsc\" runs the hook"), "{report}");
}
