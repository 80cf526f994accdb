//! The node DaemonSet, loaded as the real Kubernetes type: it runs this crate's modes from this version's
//! image, mounts every host directory `install` writes, and needs no shell.

use std::path::Path;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Container;
use mount_hints_hook::config::{DEFAULT_CONFIG, HOOK_PATH};
use mount_hints_hook::install::{DEFAULT_RUNSC_TOML, STATE};

fn daemonset() -> DaemonSet {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/node/daemonset.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs = mount_hints_webhook::preview::parse_documents(&text, "daemonset.yaml").unwrap();
    let doc = docs.into_iter().find(|d| d["kind"] == "DaemonSet").expect("a DaemonSet");
    serde_json::from_value(doc).unwrap()
}

fn args(c: &Container) -> Vec<&str> {
    c.args.iter().flatten().map(String::as_str).collect()
}

#[test]
fn the_daemonset_installs_with_the_hook_image_and_no_shell() {
    let ds = daemonset();
    let pod = ds.spec.unwrap().template.spec.unwrap();
    let image = format!("ghcr.io/mount-hints/mount-hints-hook:{}", env!("CARGO_PKG_VERSION"));
    let init = &pod.init_containers.as_ref().unwrap()[0];
    let main = &pod.containers[0];
    assert_eq!(args(init), ["install", "--host-root", "/host"]);
    assert_eq!(args(main), ["idle"]);
    for c in [init, main] {
        assert_eq!(c.image.as_deref(), Some(image.as_str()), "{}", c.name);
        assert!(c.command.is_none(), "{}: the image's entrypoint is the hook", c.name);
    }
    assert_eq!(init.security_context.as_ref().unwrap().run_as_user, Some(0));
    let main_security = main.security_context.as_ref().unwrap();
    assert_eq!((main_security.run_as_non_root, main_security.read_only_root_filesystem), (Some(true), Some(true)));

    // Every directory install writes into is a host directory mounted under /host.
    let mounts: Vec<&str> = init.volume_mounts.iter().flatten().map(|m| m.mount_path.as_str()).collect();
    for written in [HOOK_PATH, DEFAULT_CONFIG, STATE, DEFAULT_RUNSC_TOML] {
        let dir = Path::new(written).parent().unwrap();
        let mount = Path::new("/host").join(dir.strip_prefix("/").unwrap());
        assert!(mounts.contains(&mount.to_str().unwrap()), "{} not mounted", mount.display());
        let volume = init.volume_mounts.iter().flatten().find(|m| Path::new(&m.mount_path) == mount).unwrap();
        let host_path = pod.volumes.iter().flatten().find(|v| v.name == volume.name).unwrap();
        assert_eq!(host_path.host_path.as_ref().unwrap().path, dir.to_str().unwrap());
    }
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/node/daemonset.yaml"))
        .unwrap();
    assert!(!text.contains("/bin/sh") && !text.contains("pause:"), "no shell, no third-party image");
}
