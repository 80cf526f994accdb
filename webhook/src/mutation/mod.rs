//! The Pod mutation: a pure function from (pod, settings, scope) to a JSON Patch, warnings and an audit summary.
//! It knows nothing about HTTP or files; `serve` and `preview` are shells around it.

mod author;
mod patch;
mod volumes;

use std::collections::{BTreeMap, BTreeSet};

use json_patch::Patch;
use mount_hints::{hint_key, is_valid_annotation_key, HintField, HintType, Share};

pub use patch::prefixed_patch_json;

use crate::pod::PodFacts;
use crate::settings::{GvisorScope, MutationSettings};
use author::{review_author_annotations, AuthorHint};
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

pub fn mutate(pod: &PodFacts, settings: &MutationSettings, scope: &GvisorScope) -> Mutation {
    if !scope.contains(pod.spec.runtime_class_name.as_deref()) {
        return Mutation::default();
    }
    let empty = BTreeMap::new();
    let original = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let plan = plan_volumes(pod, settings);
    let author = review_author_annotations(original, &plan.all_volumes, settings);

    let mut warnings = Vec::new();
    let mut desired = original.clone();
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

    let names: BTreeSet<&str> = planned.keys().chain(author.hints.keys()).copied().collect();
    let no_author_hint = AuthorHint::default();
    let mut hints = Vec::new();
    for name in names {
        let from_author = author.hints.get(name).unwrap_or(&no_author_hint);
        let ours = planned.get(name).copied();
        match merge_hint(name, ours, from_author) {
            Ok(mut hint) => {
                hint.force_shared = author.force_shared.contains(name);
                desired.insert(hint_key(name, HintField::Type), hint.hint_type.as_str().to_owned());
                desired.insert(hint_key(name, HintField::Share), hint.share.as_str().to_owned());
                if let Some(options) = &hint.options {
                    desired.insert(hint_key(name, HintField::Options), options.clone());
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

    let patch = patch::annotation_patch(pod.metadata.annotations.as_ref(), &desired);
    let audit = audit_summary(&hints, &author.removals);
    Mutation { patch, warnings, audit, hints, in_scope: true }
}

/// The author's valid fields win (escape hatch, and idempotence over our own output); ours fill the gaps. A
/// hint runsc would refuse (missing type or share) or one whose keys the API server would refuse is dropped.
fn merge_hint(name: &str, ours: Option<&PlannedHint>, author: &AuthorHint<'_>) -> Result<EmptyDirHint, String> {
    let hint_type = author.hint_type.or(ours.map(|h| h.hint_type));
    let share = author.share.or(ours.map(|h| h.share));
    let options = author.options.map(str::to_owned).or_else(|| ours.and_then(|h| h.options.clone()));
    let (Some(hint_type), Some(share)) = (hint_type, share) else {
        return Err("a hint needs both type and share, and the webhook has no value to add for this volume".into());
    };
    let fields: &[HintField] = if options.is_some() {
        &[HintField::Type, HintField::Share, HintField::Options]
    } else {
        &[HintField::Type, HintField::Share]
    };
    if let Some(field) = fields.iter().find(|f| !is_valid_annotation_key(&hint_key(name, **f))) {
        return Err(format!("its {field} key would exceed the 63-character annotation limit"));
    }
    let from_author = !author.keys.is_empty();
    Ok(EmptyDirHint { volume: name.to_owned(), hint_type, share, options, from_author, force_shared: false })
}

fn audit_summary(hints: &[EmptyDirHint], removals: &[(&str, String)]) -> BTreeMap<String, String> {
    let mut audit = BTreeMap::new();
    let describe = |h: &EmptyDirHint| {
        let mut s = format!("{}={}/{}", h.volume, h.hint_type, h.share);
        if let Some(o) = &h.options {
            s.push('/');
            s.push_str(o);
        }
        s
    };
    let join = |items: Vec<String>| items.join(",");
    if !hints.is_empty() {
        audit.insert(AUDIT_HINTS.to_owned(), join(hints.iter().map(describe).collect()));
    }
    let forced: Vec<String> = hints.iter().filter(|h| h.force_shared).map(|h| h.volume.clone()).collect();
    if !forced.is_empty() {
        audit.insert(AUDIT_FORCE_SHARED.to_owned(), join(forced));
    }
    if !removals.is_empty() {
        audit.insert(AUDIT_REMOVED.to_owned(), join(removals.iter().map(|(k, _)| (*k).to_owned()).collect()));
    }
    audit
}

#[cfg(test)]
mod tests;
