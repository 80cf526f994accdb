//! The two images as users get them (`tests/build-images` output): what is inside, that Podman and containerd
//! load them, that the webhook image serves a review over TLS as its non-root user with no shell to be had, that
//! the hook image installs and uninstalls the hook on a throw-away host root, and that the manifests name
//! exactly these images. Needs root, podman and containerd (tests/install-deps).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use mount_hints_e2e::{
    archive, image_binary, image_ref, is_root, run_ok, wait_until, workspace, Containerd, OciImage, Podman, IMAGES,
};

const WEBHOOK: &str = "mount-hints-webhook";
const HOOK: &str = "mount-hints-hook";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn images_carry_only_their_binary_and_the_oci_labels() {
    for name in IMAGES {
        let image = OciImage::read(&archive(name));
        assert_eq!(image.ref_name, image_ref(name), "{name}: the archive's reference");
        let config = &image.config["config"];
        let binary = format!("/usr/local/bin/{name}");
        assert_eq!(config["Entrypoint"], serde_json::json!([binary]), "{name}: the binary is the entrypoint");
        assert_eq!(config["User"], "65532:65532", "{name}: default user and group");
        assert_eq!(image.label("org.opencontainers.image.version"), Some(env!("CARGO_PKG_VERSION")), "{name}");
        assert_eq!(image.label("org.opencontainers.image.licenses"), Some("Apache-2.0"), "{name}");
        assert!(image.label("org.opencontainers.image.source").is_some_and(|s| s.starts_with("https://")), "{name}");

        // Nothing but the binary (and the CA bundle for the webhook's API server connection): no shell, no
        // package manager, no libc — the binaries are static.
        let mut expected = vec![binary.trim_start_matches('/').to_owned()];
        if name == WEBHOOK {
            expected.push("etc/ssl/certs/ca-certificates.crt".to_owned());
        }
        expected.sort();
        assert_eq!(image.files(), expected, "{name}: files in the image");
        assert!(!image.entries.keys().any(|p| p.ends_with("bin/sh")), "{name} has a shell: {:?}", image.entries);
    }
}

#[test]
fn manifests_name_exactly_the_images_built() {
    let root = workspace();
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(root.join("manifests/base")).unwrap().map(|e| e.unwrap().path()).collect();
    files.push(root.join("manifests/node/daemonset.yaml"));
    let mut images: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(file).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(document).unwrap();
            let spec = &value["spec"]["template"]["spec"];
            for list in ["initContainers", "containers"] {
                for container in spec[list].as_array().into_iter().flatten() {
                    let image = container["image"].as_str().unwrap().to_owned();
                    let user =
                        format!("{}/{}/{}", file.file_name().unwrap().to_string_lossy(), list, container["name"]);
                    assert!(
                        container.get("command").is_none(),
                        "{user}: the image's entrypoint runs, no shell command"
                    );
                    images.entry(image).or_default().push(user);
                }
            }
        }
    }
    let built: Vec<String> = IMAGES.iter().map(|n| image_ref(n)).collect();
    assert_eq!(
        images.keys().cloned().collect::<Vec<_>>(),
        {
            let mut b = built.clone();
            b.sort();
            b
        },
        "{images:?}"
    );
    assert!(images[&image_ref(HOOK)].len() >= 2, "the DaemonSet's install and idle containers both use the hook image");
}

#[test]
fn podman_and_containerd_load_the_archives() {
    assert!(is_root(), "the image suite needs root");
    let podman = Podman::new();
    for name in IMAGES {
        let loaded = podman.load(&archive(name));
        assert!(loaded.contains(&image_ref(name)), "podman load named {loaded}");
        let size = podman.image_size(&image_ref(name));
        eprintln!("{name}: {size} bytes ({:.1} MB)", size as f64 / 1e6);
        if name == WEBHOOK {
            assert!(size <= 60_000_000, "the webhook image is {size} bytes, over 60 MB");
        }
    }
    let containerd = Containerd::start();
    for name in IMAGES {
        run_ok(containerd.ctr().args(["images", "import"]).arg(archive(name)));
    }
    let listed = run_ok(containerd.ctr().args(["images", "ls", "-q"]));
    let listed = String::from_utf8(listed.stdout).unwrap();
    for name in IMAGES {
        assert!(listed.lines().any(|l| l == image_ref(name)), "ctr images ls: {listed}");
    }
}

#[test]
fn webhook_image_serves_a_review_over_tls_as_non_root_without_a_shell() {
    assert!(is_root(), "the image suite needs root");
    let podman = Podman::new();
    podman.load(&archive(WEBHOOK));
    let image = image_ref(WEBHOOK);

    // No shell to exec into.
    let out = podman
        .command()
        .args(["run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", &image, "-c", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the webhook image ran /bin/sh");

    // The embedded default: no certificate flags, so an in-memory self-signed certificate for localhost; as in
    // the Deployment, a read-only root and no capabilities.
    let (port, health) = (free_port(), free_port());
    let name = format!("mount-hints-webhook-test-{}", std::process::id());
    run_ok(podman.command().args(["run", "--detach", "--name", &name, "--network", "host", "--read-only"]).args([
        "--cap-drop",
        "ALL",
        &image,
        "serve",
        &format!("--listen=127.0.0.1:{port}"),
        &format!("--health-listen=127.0.0.1:{health}"),
        "--no-cluster",
        "--drain-delay=0s",
    ]));
    let curl = |args: &[&str]| {
        Command::new("curl").args(["-s", "--max-time", "5"]).args(args).stdin(Stdio::null()).output().unwrap()
    };
    let readyz = format!("http://127.0.0.1:{health}/readyz");
    wait_until("the webhook container's /readyz", Duration::from_secs(30), || {
        curl(&["-o", "/dev/null", "-w", "%{http_code}", &readyz]).stdout == b"200"
    });

    // The server process runs as 65532 on the host too (no user namespace).
    let pid = run_ok(podman.command().args(["inspect", "--format", "{{.State.Pid}}", &name]));
    let pid = String::from_utf8(pid.stdout).unwrap().trim().to_owned();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.split_whitespace().skip(1).all(|id| id == "65532"), "{uid_line}");

    let review = workspace().join("webhook/examples/admission-review.json");
    let request: serde_json::Value = serde_json::from_slice(&std::fs::read(&review).unwrap()).unwrap();
    let out = curl(&[
        "-k",
        "--tlsv1.2",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", review.display()),
        &format!("https://127.0.0.1:{port}/mutate"),
    ]);
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    assert_eq!(reply["response"]["uid"], request["request"]["uid"]);
    assert_eq!(reply["response"]["allowed"], true);
    let patch = base64::engine::general_purpose::STANDARD.decode(reply["response"]["patch"].as_str().unwrap()).unwrap();
    let patch = String::from_utf8(patch).unwrap();
    assert!(patch.contains("dev.gvisor.spec.mount.cache.type"), "{patch}");

    // SIGTERM: drains and exits 0.
    run_ok(podman.command().args(["stop", "--time", "30", &name]));
    let code = run_ok(podman.command().args(["inspect", "--format", "{{.State.ExitCode}}", &name]));
    assert_eq!(String::from_utf8(code.stdout).unwrap().trim(), "0");
}

/// Every regular file under `dir`, with its bytes: a host root's state, to compare byte for byte.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.strip_prefix(dir).unwrap().to_owned(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[test]
fn hook_image_installs_and_uninstalls_on_a_throw_away_host_root() {
    assert!(is_root(), "the image suite needs root");
    let podman = Podman::new();
    podman.load(&archive(HOOK));
    let image = image_ref(HOOK);
    let host = tempfile::Builder::new().prefix("mount-hints-host.").tempdir().unwrap();
    let at = |rel: &str| host.path().join(rel);
    std::fs::create_dir_all(at("usr/local/bin")).unwrap();
    std::fs::create_dir_all(at("etc/containerd")).unwrap();
    // The node's real runsc (doctor checks that hook.json names an executable; it is never run here).
    std::fs::create_dir_all(at("usr/local/sbin")).unwrap();
    std::fs::write(at("usr/local/sbin/runsc"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(at("usr/local/sbin/runsc"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // A node as its provisioning left it: containerd with the runsc handler and annotation passthrough, and the
    // gVisor shim's configuration naming the real runsc, with comments and a table of its own.
    std::fs::copy(workspace().join("manifests/node/containerd-runsc.toml"), at("etc/containerd/config.toml")).unwrap();
    let shim_config = "# provisioned by the node image\nbinary_name = \"/usr/local/sbin/runsc\"  # the real one\n\
                       root = \"/run/containerd/runsc\"\n\n[runsc_config]\n  platform = \"systrap\" # fast\n  debug = \"false\"\n";
    std::fs::write(at("etc/containerd/runsc.toml"), shim_config).unwrap();
    let before = snapshot(host.path());

    let hook = |args: &[&str]| {
        let mut command = podman.command();
        command.args(["run", "--rm", "--network", "none", "--user", "0", "-v"]);
        command.arg(format!("{}:/host", host.path().display())).arg(&image).args(args);
        command
    };
    let install = run_ok(&mut hook(&["install", "--host-root", "/host"]));
    eprintln!("install:\n{}", String::from_utf8_lossy(&install.stdout));
    let installed = snapshot(host.path());
    assert_eq!(
        installed[Path::new("usr/local/bin/mount-hints-hook")],
        std::fs::read(image_binary(HOOK)).unwrap(),
        "the installed hook is the image's binary"
    );
    let config: serde_json::Value = serde_json::from_slice(&installed[Path::new("etc/mount-hints/hook.json")]).unwrap();
    assert_eq!(config["runtime"], "/usr/local/sbin/runsc", "hook.json names the runsc the shim used to run");
    let shim_after = String::from_utf8(installed[Path::new("etc/containerd/runsc.toml")].clone()).unwrap();
    assert_eq!(
        shim_after,
        shim_config.replace("\"/usr/local/sbin/runsc\"", "\"/usr/local/bin/mount-hints-hook\""),
        "only binary_name changed, comments and tables kept"
    );
    let names: Vec<String> = installed.keys().map(|p| p.display().to_string()).collect();
    assert!(!names.iter().any(|n| n.contains(".tmp") || n.contains(".new")), "temporary files left: {names:?}");

    let again = run_ok(&mut hook(&["install", "--host-root", "/host"]));
    assert_eq!(
        snapshot(host.path()),
        installed,
        "a second install changes nothing:\n{}",
        String::from_utf8_lossy(&again.stdout)
    );

    let doctor = hook(&["doctor", "--host-root", "/host"]).stdin(Stdio::null()).output().unwrap();
    eprintln!("doctor:\n{}", String::from_utf8_lossy(&doctor.stdout));
    assert!(
        doctor.status.success(),
        "doctor after install: {}{}",
        String::from_utf8_lossy(&doctor.stdout),
        String::from_utf8_lossy(&doctor.stderr)
    );

    let uninstall = run_ok(&mut hook(&["uninstall", "--host-root", "/host"]));
    eprintln!("uninstall:\n{}", String::from_utf8_lossy(&uninstall.stdout));
    let after = snapshot(host.path());
    assert_eq!(
        after[Path::new("etc/containerd/runsc.toml")],
        before[Path::new("etc/containerd/runsc.toml")],
        "uninstall restores the shim configuration byte for byte"
    );
    assert!(
        !after.contains_key(Path::new("usr/local/bin/mount-hints-hook")),
        "the hook binary is removed: {:?}",
        after.keys()
    );
}
