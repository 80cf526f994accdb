//! Which container a spec describes, and which pod it belongs to, from the annotations containerd and CRI-O
//! put on every spec they hand to the runtime.

use std::collections::BTreeMap;
use std::fmt;

/// containerd's container-type annotation; CRI-O's is [`CRIO_CONTAINER_TYPE`]. Values: `sandbox`, `container`.
pub const CONTAINERD_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
pub const CONTAINERD_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
pub const CONTAINERD_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const CONTAINERD_SANDBOX_LOG_DIR: &str = "io.kubernetes.cri.sandbox-log-directory";
pub const CRIO_POD_UID: &str = "io.kubernetes.pod.uid";
pub const CRIO_SANDBOX_ID: &str = "io.kubernetes.cri-o.SandboxID";
pub const CRIO_LOG_PATH: &str = "io.kubernetes.cri-o.LogPath";

/// runsc reads mount hints from the root container of a sandbox only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// The pod's sandbox (pause) container: its spec carries the hints runsc uses.
    Sandbox,
    /// An application container joining a sandbox.
    Container,
    /// No CRI annotation: a lone container (Podman, `runsc run`), both root and application.
    Root,
}

impl ContainerKind {
    pub fn of(annotations: &BTreeMap<String, String>) -> ContainerKind {
        let kind = annotations.get(CONTAINERD_CONTAINER_TYPE).or_else(|| annotations.get(CRIO_CONTAINER_TYPE));
        match kind.map(String::as_str) {
            Some("sandbox") => ContainerKind::Sandbox,
            Some("container") => ContainerKind::Container,
            _ => ContainerKind::Root,
        }
    }

    /// Whether runsc reads hints from this spec.
    pub fn carries_hints(self) -> bool {
        matches!(self, ContainerKind::Sandbox | ContainerKind::Root)
    }

    /// Whether this spec has the pod's volume mounts.
    pub fn has_volume_mounts(self) -> bool {
        matches!(self, ContainerKind::Container | ContainerKind::Root)
    }
}

/// A pod UID, checked to be a UUID before it is ever joined into a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodUid(String);

impl PodUid {
    pub fn parse(s: &str) -> Option<PodUid> {
        let groups: Vec<&str> = s.split('-').collect();
        let lengths = [8, 4, 4, 4, 12];
        let ok = groups.len() == lengths.len()
            && groups.iter().zip(lengths).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
        ok.then(|| PodUid(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// From the annotations, in order of trust: containerd's sandbox-uid (containerd >= 1.6.11), CRI-O's pod
    /// uid, then the last `_` field of the pod log directory (`/var/log/pods/<ns>_<name>_<uid>`, or a bare
    /// `<uid>` in the legacy layout) from containerd's or CRI-O's log annotation.
    pub fn of(annotations: &BTreeMap<String, String>) -> Option<PodUid> {
        let direct = [CONTAINERD_SANDBOX_UID, CRIO_POD_UID].into_iter().filter_map(|k| annotations.get(k));
        let from_log_dir = annotations.get(CONTAINERD_SANDBOX_LOG_DIR).and_then(|d| uid_from_log_dir(d));
        // CRI-O's LogPath is a file inside the pod log directory (<dir>/<container>.log or <dir>/<c>/<n>.log).
        let from_log_path = annotations.get(CRIO_LOG_PATH).and_then(|p| {
            let path = std::path::Path::new(p);
            path.ancestors().skip(1).find_map(|dir| uid_from_log_dir(dir.to_str()?))
        });
        direct.filter_map(|s| PodUid::parse(s)).next().or(from_log_dir).or(from_log_path)
    }
}

fn uid_from_log_dir(dir: &str) -> Option<PodUid> {
    let base = dir.trim_end_matches('/').rsplit('/').next()?;
    let fields: Vec<&str> = base.split('_').collect();
    match fields.len() {
        1 | 3 => PodUid::parse(fields[fields.len() - 1]),
        _ => None,
    }
}

impl fmt::Display for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "2b6a6c1e-6f1d-4b8e-9d35-6a4a7f0c0001";

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn kinds() {
        assert_eq!(ContainerKind::of(&annotations(&[(CONTAINERD_CONTAINER_TYPE, "sandbox")])), ContainerKind::Sandbox);
        assert_eq!(ContainerKind::of(&annotations(&[(CRIO_CONTAINER_TYPE, "container")])), ContainerKind::Container);
        assert_eq!(ContainerKind::of(&annotations(&[])), ContainerKind::Root);
    }

    #[test]
    fn pod_uid_sources_in_order() {
        assert_eq!(PodUid::of(&annotations(&[(CONTAINERD_SANDBOX_UID, UID)])).unwrap().as_str(), UID);
        assert_eq!(PodUid::of(&annotations(&[(CRIO_POD_UID, UID)])).unwrap().as_str(), UID);
        let log_dir = format!("/var/log/pods/default_web-0_{UID}");
        assert_eq!(PodUid::of(&annotations(&[(CONTAINERD_SANDBOX_LOG_DIR, &log_dir)])).unwrap().as_str(), UID);
        let legacy = format!("/var/log/pods/{UID}/");
        assert_eq!(PodUid::of(&annotations(&[(CONTAINERD_SANDBOX_LOG_DIR, &legacy)])).unwrap().as_str(), UID);
        let crio_log = format!("/var/log/pods/default_web-0_{UID}/app/0.log");
        assert_eq!(PodUid::of(&annotations(&[(CRIO_LOG_PATH, &crio_log)])).unwrap().as_str(), UID);
        // A bad direct value falls through to the next source.
        let both = annotations(&[(CONTAINERD_SANDBOX_UID, "../../etc"), (CONTAINERD_SANDBOX_LOG_DIR, &log_dir)]);
        assert_eq!(PodUid::of(&both).unwrap().as_str(), UID);
    }

    #[test]
    fn only_uuids_are_uids() {
        for bad in ["", "..", "a/b", "2b6a6c1e-6f1d-4b8e-9d35-6a4a7f0c000", "2b6a6c1e_6f1d-4b8e-9d35-6a4a7f0c0001", "*"]
        {
            assert!(PodUid::parse(bad).is_none(), "{bad}");
        }
        assert!(PodUid::of(&annotations(&[(CONTAINERD_SANDBOX_LOG_DIR, "/var/log/pods/a_b_c_d")])).is_none());
    }
}
