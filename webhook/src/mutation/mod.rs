//! The Pod mutation: a pure function from (pod, settings, scope) to a JSON Patch, warnings and an audit summary.
//! It knows nothing about HTTP or files; `serve` and `preview` are shells around it.

mod author;
mod patch;
mod volumes;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use json_patch::Patch;
use mount_hints::{hint_key, is_valid_annotation_key, Directfs, HintField, HintType, RawHint, Share};

pub use patch::prefixed_patch_json;

use crate::pod::{FactText, PodFacts};
use crate::settings::{GvisorScope, MutationSettings};
use author::{review_author_annotations, AuthorHint, PodVolumes};
use volumes::{plan_volumes, PlannedHint};

/// Audit-annotation keys (the API server prefixes them with the webhook's name).
pub const AUDIT_HINTS: &str = "hints";
pub const AUDIT_REMOVED: &str = "removed-annotations";
pub const AUDIT_FORCE_SHARED: &str = "force-shared";

/// The complete hint the pod ends up with for one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyDirHint {
    pub volume: String,
    pub hint_type: HintType,
    pub share: Share,
    pub options: Option<String>,
    /// The author's per-mount directfs choice, kept only when every runsc in use knows the field.
    pub directfs: Option<Directfs>,
    /// At least one field came from the pod author and was kept.
    pub from_author: bool,
    /// The author asked for `dev.gvisor.empty-dir.<volume>.force-shared`: the node turns it into bind/shared.
    pub force_shared: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mutation {
    /// Applies to the pod object it was computed from; empty when nothing changes.
    pub patch: Patch,
    pub warnings: Vec<String>,
    pub audit: BTreeMap<String, String>,
    /// The hints of the mutated pod, sorted by volume name.
    pub hints: Vec<EmptyDirHint>,
    /// False when the pod is not a gVisor pod: it is left alone entirely.
    pub in_scope: bool,
}

pub fn mutate<S: FactText>(pod: &PodFacts<S>, settings: &MutationSettings, scope: &GvisorScope) -> Mutation {
    if !scope.contains(pod.spec.runtime_class_name.as_deref()) {
        return Mutation::default();
    }
    let empty = BTreeMap::new();
    let original = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let plan = plan_volumes(pod, settings);
    let volumes = PodVolumes { all: &plan.all_volumes, empty_dirs: &plan.empty_dir_names };
    let author = review_author_annotations(original, &volumes, settings);

    let mut warnings = Vec::new();
    // The pod's own annotations stay borrowed; only the hint keys the webhook adds are new strings.
    let mut desired: Desired<'_> = original.iter().map(|(k, v)| (Cow::Borrowed(&**k), Cow::Borrowed(&**v))).collect();
    for (key, reason) in &author.removals {
        desired.remove(*key);
        warnings.push(format!("annotation {key:?} removed: {reason}"));
    }
    let mut planned: BTreeMap<&str, &PlannedHint> = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    for (name, verdict) in &plan.empty_dirs {
        match verdict {
            Ok(hint) => {
                planned.insert(*name, hint);
            }
            Err(reason) => {
                skipped.insert(*name, reason);
                warnings.push(format!("volume {name:?} not hinted: {reason}"));
            }
        }
    }
    warnings.extend(plan.notes.iter().cloned());
    warnings.extend(author.ignored.iter().cloned());

    let names: BTreeSet<&str> = planned.keys().chain(author.hints.keys()).copied().collect();
    let no_author_hint = AuthorHint::default();
    let mut hints = Vec::new();
    for name in names {
        let from_author = author.hints.get(name).unwrap_or(&no_author_hint);
        let ours = planned.get(name).copied();
        let mounted_by = plan.mounted_by.get(name).copied().unwrap_or(0);
        match merge_hint(name, ours, from_author, mounted_by) {
            Ok((mut hint, widened, keys)) => {
                warnings.extend(widened);
                hint.force_shared = author.force_shared.contains(name);
                desired.insert(Cow::Owned(keys.hint_type), Cow::Borrowed(hint.hint_type.as_str()));
                desired.insert(Cow::Owned(keys.share), Cow::Borrowed(hint.share.as_str()));
                if let (Some(key), Some(options)) = (keys.options, &hint.options) {
                    desired.insert(Cow::Owned(key), Cow::Owned(options.clone()));
                }
                hints.push(hint);
            }
            Err(reason) => {
                for key in &from_author.keys {
                    desired.remove(*key);
                }
                warnings.push(format!("author hint for volume {name:?} removed: {reason}"));
            }
        }
    }

    let patch = patch::annotation_patch(pod.metadata.present, pod.metadata.annotations.as_ref(), &desired);
    let audit = audit_summary(&hints, &author.removals);
    Mutation { patch, warnings, audit, hints, in_scope: true }
}

/// The annotations the pod should end up with.
type Desired<'a> = BTreeMap<Cow<'a, str>, Cow<'a, str>>;

/// The annotation keys a merged hint writes (built once: they are checked, then inserted).
struct HintKeys {
    hint_type: String,
    share: String,
    options: Option<String>,
}

/// The author's valid fields win (escape hatch, and idempotence over our own output); ours fill the gaps. A
/// share never narrows: one (the author's, or an earlier pass's) narrower than the `mounted_by` containers
/// need is widened, with the warning returned beside the hint. A hint runsc would refuse (missing type or
/// share) or one whose keys the API server would refuse is dropped.
fn merge_hint(
    name: &str,
    ours: Option<&PlannedHint>,
    author: &AuthorHint<'_>,
    mounted_by: usize,
) -> Result<(EmptyDirHint, Option<String>, HintKeys), String> {
    let hint_type = author.hint_type.or(ours.map(|h| h.hint_type));
    let share = author.share.or(ours.map(|h| h.share));
    let options = author.options.map(str::to_owned).or_else(|| ours.and_then(|h| h.options.clone()));
    let mut raw = RawHint::default();
    raw.extend(hint_type.map(|t| (HintField::Type, t.as_str())));
    raw.extend(share.map(|s| (HintField::Share, s.as_str())));
    if let Err(e) = raw.check_complete_but_source() {
        return Err(format!("it {e}, and the webhook has no value to add for this volume"));
    }
    let (Some(hint_type), Some(share)) = (hint_type, share) else { unreachable!("checked complete") };
    let widened_share = share.widened_to(Share::for_containers(mounted_by));
    let widened = (widened_share != share).then(|| {
        format!("share of volume {name:?} widened from {share} to {widened_share}: {mounted_by} containers mount it")
    });
    let keys = HintKeys {
        hint_type: hint_key(name, HintField::Type),
        share: hint_key(name, HintField::Share),
        options: options.is_some().then(|| hint_key(name, HintField::Options)),
    };
    let directfs_key = author.directfs.map(|_| hint_key(name, HintField::Directfs));
    let checked = [
        (HintField::Type, Some(&keys.hint_type)),
        (HintField::Share, Some(&keys.share)),
        (HintField::Options, keys.options.as_ref()),
        (HintField::Directfs, directfs_key.as_ref()),
    ];
    if let Some((field, _)) = checked.iter().find(|(_, key)| key.is_some_and(|k| !is_valid_annotation_key(k))) {
        return Err(format!("its {field} key would exceed the 63-character annotation limit"));
    }
    let hint = EmptyDirHint {
        volume: name.to_owned(),
        hint_type,
        share: widened_share,
        options,
        directfs: author.directfs,
        from_author: !author.keys.is_empty(),
        force_shared: false,
    };
    Ok((hint, widened, keys))
}

fn audit_summary(hints: &[EmptyDirHint], removals: &[(&str, String)]) -> BTreeMap<String, String> {
    let mut audit = BTreeMap::new();
    let mut described = String::new();
    for (i, h) in hints.iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        write!(described, "{comma}{}={}/{}", h.volume, h.hint_type, h.share).expect("writing to a String");
        if let Some(o) = &h.options {
            described.push('/');
            described.push_str(o);
        }
        if let Some(d) = h.directfs {
            described.push_str("/directfs=");
            described.push_str(d.as_str());
        }
    }
    if !hints.is_empty() {
        audit.insert(AUDIT_HINTS.to_owned(), described);
    }
    let join = |items: &mut dyn Iterator<Item = &str>| {
        let mut joined = String::new();
        for (i, item) in items.enumerate() {
            joined.push_str(if i == 0 { "" } else { "," });
            joined.push_str(item);
        }
        joined
    };
    if hints.iter().any(|h| h.force_shared) {
        let forced = join(&mut hints.iter().filter(|h| h.force_shared).map(|h| h.volume.as_str()));
        audit.insert(AUDIT_FORCE_SHARED.to_owned(), forced);
    }
    if !removals.is_empty() {
        audit.insert(AUDIT_REMOVED.to_owned(), join(&mut removals.iter().map(|(k, _)| *k)));
    }
    audit
}

#[cfg(test)]
mod tests;
