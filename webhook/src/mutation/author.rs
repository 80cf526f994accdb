//! The policy for annotations the pod author set under `dev.gvisor.*`.
//!
//! Pod authors are untrusted, and one bad hint stops the whole sandbox on the 2022 runsc. So:
//! - keys on the operator's deny list are removed;
//! - `.source` is the node's alone (it names a host path) and is always removed;
//! - malformed keys (not exactly `<name>.<field>`, unknown fields) are removed;
//! - `type`/`share`/`options`/`directfs` on a volume of this pod are kept when every runsc from
//!   `minRunscRelease` on accepts their value (the author's escape hatch, and what makes a second pass over
//!   our own output a no-op), removed when not;
//! - on a volume that is not an emptyDir, `type=tmpfs` is removed: it would hide the volume's content;
//! - hints naming no volume of this pod are removed: no node can resolve them;
//! - `dev.gvisor.empty-dir.<name>.force-shared` is kept and read as gVisor's shim reads it; a value that is
//!   not a boolean is reported and counts as absent (the node reads it the same way).

use std::collections::{BTreeMap, BTreeSet};

use mount_hints::{
    check_field, group_hints, parse_force_shared_key, parse_go_bool, Directfs, HintField, HintType, Share,
    TmpfsOverNonEmptyDir,
};

use crate::pod::FactText;
use crate::settings::MutationSettings;

/// The valid hint fields an author set for one volume, with the keys they came from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct AuthorHint<'a> {
    pub hint_type: Option<HintType>,
    pub share: Option<Share>,
    pub options: Option<&'a str>,
    pub directfs: Option<Directfs>,
    pub keys: Vec<&'a str>,
}

#[derive(Debug, Default)]
pub(crate) struct AuthorAnnotations<'a> {
    /// Keys to remove, each with the reason (for the warning), sorted by key.
    pub removals: Vec<(&'a str, String)>,
    pub hints: BTreeMap<&'a str, AuthorHint<'a>>,
    pub force_shared: BTreeSet<&'a str>,
    /// Annotations kept but not acted on, with the reason.
    pub ignored: Vec<String>,
}

/// The pod's volumes as far as the policy cares.
pub(crate) struct PodVolumes<'v, 'a> {
    pub all: &'v BTreeSet<&'a str>,
    pub empty_dirs: &'v BTreeSet<&'a str>,
}

pub(crate) fn review_author_annotations<'a, S: FactText>(
    annotations: &'a BTreeMap<S, S>,
    volumes: &PodVolumes<'_, '_>,
    settings: &MutationSettings,
) -> AuthorAnnotations<'a> {
    let mut out = AuthorAnnotations::default();
    let mut allowed = Vec::new();
    for (key, value) in annotations {
        let (key, value) = (&**key, &**value);
        if settings.is_denied(key) {
            out.removals.push((key, "it matches the deny list".to_owned()));
        } else if let Some(name) = parse_force_shared_key(key) {
            match parse_go_bool(value) {
                Ok(true) if volumes.all.contains(name) => {
                    out.force_shared.insert(name);
                }
                Ok(_) => {}
                Err(e) => out.ignored.push(format!("annotation {key:?}: {e}")),
            }
        } else {
            allowed.push((key, value));
        }
    }
    let groups = group_hints(allowed);
    for (key, e) in groups.malformed {
        out.removals.push((key, e.to_string()));
    }
    let oldest = settings.oldest_runsc();
    for (name, raw) in groups.hints {
        let key_of = |field| annotation_key(annotations, name, field);
        if !volumes.all.contains(name) {
            for (field, _) in raw.fields() {
                let key = key_of(field);
                let reason = if field == HintField::Source {
                    SOURCE_IS_THE_NODES.to_owned()
                } else {
                    format!("the pod has no volume named {name:?}")
                };
                out.removals.push((key, reason));
            }
            continue;
        }
        let mut hint = AuthorHint::default();
        for (field, value) in raw.fields() {
            let key = key_of(field);
            let verdict = match field {
                HintField::Source => Err(SOURCE_IS_THE_NODES.to_owned()),
                _ => check_field(field, value, oldest)
                    .map_err(|e| e.to_string())
                    .and_then(|()| accept(&mut hint, field, value, volumes.empty_dirs.contains(name))),
            };
            match verdict {
                Ok(()) => hint.keys.push(key),
                Err(reason) => out.removals.push((key, reason)),
            }
        }
        if !hint.keys.is_empty() {
            out.hints.insert(name, hint);
        }
    }
    out.removals.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// Records a field [`check_field`] accepted, unless the volume's kind forbids it.
fn accept<'a>(hint: &mut AuthorHint<'a>, field: HintField, value: &'a str, is_empty_dir: bool) -> Result<(), String> {
    let checked = "checked by check_field";
    match field {
        HintField::Type => {
            let hint_type = value.parse().expect(checked);
            if hint_type == HintType::Tmpfs && !is_empty_dir {
                return Err(TmpfsOverNonEmptyDir.to_string());
            }
            hint.hint_type = Some(hint_type);
        }
        HintField::Share => hint.share = Some(value.parse().expect(checked)),
        HintField::Options => hint.options = Some(value),
        HintField::Directfs => hint.directfs = Some(value.parse().expect(checked)),
        HintField::Source => unreachable!("the source is refused before"),
    }
    Ok(())
}

const SOURCE_IS_THE_NODES: &str = "the source of a hint is set by the node, never by the pod";

/// The annotation key (borrowed from the pod) of a grouped field.
fn annotation_key<'a, S: FactText>(annotations: &'a BTreeMap<S, S>, name: &str, field: HintField) -> &'a str {
    let key = mount_hints::hint_key(name, field);
    annotations.get_key_value(key.as_str()).map(|(k, _)| &**k).expect("grouped from these annotations")
}
