//! Shared pieces of the end-to-end suites that drive what users install: the images `tests/build-images`
//! writes, a private Podman and a private containerd to load and run them, and the OCI archive format read
//! directly (what a registry would serve), so that an assertion about an image never depends on the tool that
//! built it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where the manifests say the images live; `tests/build-images` tags them the same way.
pub const IMAGE_REPO: &str = "ghcr.io/mount-hints";
/// The two images, by their repository name.
pub const IMAGES: [&str; 2] = ["mount-hints-webhook", "mount-hints-hook"];

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `ghcr.io/mount-hints/<name>:<workspace version>`: the one tag both the build and the manifests use.
pub fn image_ref(name: &str) -> String {
    format!("{IMAGE_REPO}/{name}:{}", env!("CARGO_PKG_VERSION"))
}

/// The OCI archive of an image, as `tests/build-images` wrote it.
pub fn archive(name: &str) -> PathBuf {
    let path = workspace().join("target/images").join(format!("{name}.tar"));
    assert!(path.is_file(), "{} is missing: run tests/build-images first (tests/run does)", path.display());
    path
}

/// The binary that went into the images (the statically linked build), for byte comparisons.
pub fn image_binary(name: &str) -> PathBuf {
    let context = workspace().join("target/images/context");
    let found = ["linux/amd64", "linux/arm64"].iter().map(|p| context.join(p).join(name)).find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("no {name} under {}: run tests/build-images", context.display()))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command to completion, panicking with its output when it fails.
pub fn run_ok(command: &mut Command) -> Output {
    let out = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert_success(&out, &format!("{command:?}"));
    out
}

/// Runs a command with `input` on its stdin to completion, panicking with its output when it fails.
pub fn run_ok_with_input(command: &mut Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, &format!("{command:?}"));
    out
}

/// Panics with a command's output when it failed.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `condition` until it holds, for at most `limit`: a readiness wait with a deadline, never a fixed sleep.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An image read straight from its OCI archive (index -> manifest -> config and layers).
pub struct OciImage {
    pub config: serde_json::Value,
    /// Every path in the image's layers, with its tar type ('-' file, 'd' directory, 'l' link, ...).
    pub entries: BTreeMap<String, char>,
    /// The reference name the archive carries (what `ctr images import` and `podman load` tag it as).
    pub ref_name: String,
}

impl OciImage {
    pub fn read(archive: &Path) -> OciImage {
        let dir = tempfile::tempdir().unwrap();
        run_ok(Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(dir.path()));
        let json = |path: PathBuf| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let blob =
            |digest: &serde_json::Value| dir.path().join("blobs").join(digest.as_str().unwrap().replace(':', "/"));
        let index = json(dir.path().join("index.json"));
        let manifests = index["manifests"].as_array().expect("index.json has manifests");
        assert_eq!(manifests.len(), 1, "one image per archive: {index}");
        let ref_name =
            manifests[0]["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap_or("").to_owned();
        let manifest = json(blob(&manifests[0]["digest"]));
        let config = json(blob(&manifest["config"]["digest"]));
        let mut entries = BTreeMap::new();
        for layer in manifest["layers"].as_array().expect("manifest has layers") {
            // `tar -tv` names the type in the first column; GNU tar detects the compression itself.
            let out = run_ok(Command::new("tar").arg("-tvf").arg(blob(&layer["digest"])));
            for line in String::from_utf8(out.stdout).unwrap().lines() {
                let kind = line.chars().next().unwrap_or('?');
                let name = line.split_whitespace().nth(5).unwrap_or_default();
                entries.insert(name.trim_start_matches("./").trim_end_matches('/').to_owned(), kind);
            }
        }
        entries.remove("");
        OciImage { config, entries, ref_name }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.config["config"]["Labels"][key].as_str()
    }

    /// The regular files of the image.
    pub fn files(&self) -> Vec<&str> {
        self.entries.iter().filter(|(_, kind)| **kind == '-').map(|(name, _)| name.as_str()).collect()
    }
}

/// A Podman with its own storage and configuration in a temporary directory, so tests never touch the
/// machine's images or containers. The settings are the ones this kind of machine needs (REAL-COMPONENTS):
/// explicit ulimits, cgroupfs, file events, and runc (crun fails on hybrid cgroups).
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Podman {
        assert!(Path::new("/usr/bin/podman").exists(), "podman not found: run tests/install-deps (as root)");
        let dir = tempfile::Builder::new().prefix("mount-hints-images.").tempdir().unwrap();
        // Its own tmp_dir too: Podman keeps its liveness and lock files there, and a shared one lets parallel
        // tests trip over each other.
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\ntmp_dir = \"{}\"\n",
            dir.path().join("tmp").display()
        );
        std::fs::write(dir.path().join("containers.conf"), conf).unwrap();
        Podman { dir }
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .arg("--root")
            .arg(self.dir.path().join("storage"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", "vfs"]);
        command
    }

    /// `podman load -i` of an archive; returns the output, which names the loaded reference.
    pub fn load(&self, archive: &Path) -> String {
        let out = run_ok(self.command().arg("load").arg("-i").arg(archive));
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    pub fn image_size(&self, image: &str) -> u64 {
        let out = run_ok(self.command().args(["image", "inspect", "--format", "{{.Size}}", image]));
        String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
    }
}

impl Default for Podman {
    fn default() -> Self {
        Podman::new()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers left by a failed assertion would keep running; the storage (vfs: plain directories) goes
        // with the temporary directory.
        let _ = self.command().args(["rm", "--all", "--force", "--time", "0"]).output();
    }
}

/// A containerd with its own root, state and socket (no CRI plugin: only the image store is needed), stopped
/// when dropped.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Containerd {
    pub fn start() -> Containerd {
        assert!(Path::new("/usr/bin/containerd").exists(), "containerd not found: run tests/install-deps (as root)");
        let dir = tempfile::Builder::new().prefix("mount-hints-containerd.").tempdir().unwrap();
        let p = |rel: &str| dir.path().join(rel).display().to_string();
        let config = format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}\"\n",
            p("root"),
            p("state"),
            p("containerd.sock"),
            p("containerd.sock.ttrpc")
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let containerd = Containerd { dir, child };
        wait_until("containerd's socket", Duration::from_secs(30), || {
            containerd.ctr().arg("version").output().is_ok_and(|o| o.status.success())
        });
        containerd
    }

    /// `ctr` on this containerd, in the namespace the CRI plugin (and so kubelet) uses.
    pub fn ctr(&self) -> Command {
        let mut command = Command::new("ctr");
        command.arg("--address").arg(self.dir.path().join("containerd.sock")).args(["--namespace", "k8s.io"]);
        command
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // SAFETY: kill on our own child's pid; SIGTERM lets containerd unmount its snapshots.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
