//! Which emptyDirs get a hint, with what values, and why the others do not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use mount_hints::{is_dns1123_label, max_volume_name_len, HintField, HintType, Share};

use crate::pod::{EmptyDirFacts, FactText, PodFacts};
use crate::settings::{MutationSettings, SharePolicy};

/// The hint the webhook itself would write for one emptyDir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedHint {
    pub hint_type: HintType,
    pub share: Share,
    pub options: Option<String>,
}

/// Why an emptyDir gets no hint. Each one becomes a warning naming the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SkipReason {
    HugePages(String),
    UnknownMedium(String),
    NotMounted,
    SubPath { container: String },
    InvalidName,
    KeyTooLong { max: usize },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::HugePages(m) => write!(f, "medium {m} has no sandbox equivalent"),
            SkipReason::UnknownMedium(m) => write!(f, "unknown medium {m:?}"),
            SkipReason::NotMounted => f.write_str("no container mounts it"),
            SkipReason::SubPath { container } => write!(
                f,
                "container {container:?} mounts it with subPath/subPathExpr, which runsc cannot match to a shared mount"
            ),
            SkipReason::InvalidName => f.write_str("the name is not a DNS-1123 label"),
            SkipReason::KeyTooLong { max } => {
                write!(f, "the name is longer than {max} characters, so its hint keys would exceed 63")
            }
        }
    }
}

/// What the pod's volumes say, for the author-annotation policy and the merge.
#[derive(Debug, Default)]
pub(crate) struct VolumePlan<'a> {
    /// Every emptyDir, in spec order, with its planned hint or the reason it has none.
    pub empty_dirs: Vec<(&'a str, Result<PlannedHint, SkipReason>)>,
    /// Every volume name of the pod (any source).
    pub all_volumes: BTreeSet<&'a str>,
    /// The emptyDir volumes (hinted or skipped).
    pub empty_dir_names: BTreeSet<&'a str>,
    /// How many distinct containers mount each volume (any source).
    pub mounted_by: BTreeMap<&'a str, usize>,
    /// Problems that do not prevent the hint (e.g. a sizeLimit that cannot become `size=`).
    pub notes: Vec<String>,
}

pub(crate) fn plan_volumes<'a, S: FactText>(pod: &'a PodFacts<S>, settings: &MutationSettings) -> VolumePlan<'a> {
    let usage = mount_usage(pod);
    let mounted_by = usage.iter().map(|(name, u)| (*name, u.containers.len())).collect();
    let mut plan = VolumePlan { mounted_by, ..VolumePlan::default() };
    for volume in &pod.spec.volumes {
        plan.all_volumes.insert(&*volume.name);
        let Some(empty_dir) = &volume.empty_dir else { continue };
        let name = &*volume.name;
        plan.empty_dir_names.insert(name);
        let planned = plan_empty_dir(name, empty_dir, usage.get(name), settings, &mut plan.notes);
        plan.empty_dirs.push((name, planned));
    }
    plan
}

fn plan_empty_dir<S: FactText>(
    name: &str,
    empty_dir: &EmptyDirFacts<S>,
    usage: Option<&Usage<'_>>,
    settings: &MutationSettings,
    notes: &mut Vec<String>,
) -> Result<PlannedHint, SkipReason> {
    let medium = empty_dir.medium.as_deref().unwrap_or("");
    let hint_type = match medium {
        "" => HintType::Bind,
        "Memory" => HintType::Tmpfs,
        m if m.starts_with("HugePages") => return Err(SkipReason::HugePages(m.to_owned())),
        m => return Err(SkipReason::UnknownMedium(m.to_owned())),
    };
    if !is_dns1123_label(name) {
        return Err(SkipReason::InvalidName);
    }
    let usage = usage.ok_or(SkipReason::NotMounted)?;
    if let Some(container) = usage.sub_path_by {
        return Err(SkipReason::SubPath { container: container.to_owned() });
    }
    let share_max = max_volume_name_len(HintField::Share);
    if name.len() > share_max {
        return Err(SkipReason::KeyTooLong { max: share_max });
    }
    let share = match settings.share_policy {
        SharePolicy::AlwaysPod => Share::Pod,
        SharePolicy::Count => Share::for_containers(usage.containers.len()),
    };
    let options = match (&empty_dir.size_limit, hint_type, settings.emits_size_option()) {
        (Some(limit), HintType::Tmpfs, true) => size_option(name, limit, notes),
        _ => None,
    };
    Ok(PlannedHint { hint_type, share, options })
}

fn size_option(name: &str, limit: &str, notes: &mut Vec<String>) -> Option<String> {
    if name.len() > max_volume_name_len(HintField::Options) {
        notes.push(format!(
            "volume {name:?}: sizeLimit not passed on: an options key for a name this long would exceed 63 characters"
        ));
        return None;
    }
    match quantity_bytes(limit) {
        Some(bytes) if bytes > 0 => Some(format!("size={bytes}")),
        _ => {
            notes.push(format!("volume {name:?}: sizeLimit {limit:?} is not a size in bytes; no size option"));
            None
        }
    }
}

#[derive(Debug, Default)]
struct Usage<'a> {
    containers: BTreeSet<&'a str>,
    sub_path_by: Option<&'a str>,
}

fn mount_usage<S: FactText>(pod: &PodFacts<S>) -> BTreeMap<&str, Usage<'_>> {
    let mut usage: BTreeMap<&str, Usage<'_>> = BTreeMap::new();
    for container in pod.all_containers() {
        for mount in &container.volume_mounts {
            let entry = usage.entry(&*mount.name).or_default();
            entry.containers.insert(&*container.name);
            if mount.uses_sub_path() && entry.sub_path_by.is_none() {
                entry.sub_path_by = Some(&*container.name);
            }
        }
    }
    usage
}

/// A Kubernetes Quantity in bytes, rounded up; `None` for what is not a non-negative byte count.
pub(crate) fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s => {
            let exp: i32 = s.strip_prefix(['e', 'E'])?.parse().ok()?;
            10f64.powi(exp)
        }
    };
    let bytes = (number * multiplier).ceil();
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("1.5Mi"), Some(1_572_864));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("128974848"), Some(128_974_848));
        assert_eq!(quantity_bytes("129e6"), Some(129_000_000));
        assert_eq!(quantity_bytes("100m"), Some(1));
        assert_eq!(quantity_bytes("-1Gi"), None);
        assert_eq!(quantity_bytes("1Qi"), None);
        assert_eq!(quantity_bytes(""), None);
    }
}
