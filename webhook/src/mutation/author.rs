//! The policy for annotations the pod author set under `dev.gvisor.*`.
//!
//! Pod authors are untrusted, and one bad hint stops the whole sandbox on the 2022 runsc. So:
//! - keys on the operator's deny list are removed;
//! - `.source` is the node's alone (it names a host path) and is always removed;
//! - malformed keys (not exactly `<name>.<field>`, unknown fields) are removed;
//! - `type`/`share`/`options` on a volume of this pod are kept when their value is valid (the author's escape
//!   hatch, and what makes a second pass over our own output a no-op), removed when invalid;
//! - hints naming no volume of this pod are removed: no node can resolve them;
//! - `dev.gvisor.empty-dir.<name>.force-shared` is kept and reported.

use std::collections::{BTreeMap, BTreeSet};

use mount_hints::{parse_force_shared_key, parse_hint_key, parse_options, HintField, HintType, Share};

use crate::settings::MutationSettings;

/// The valid hint fields an author set for one volume, with the keys they came from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct AuthorHint<'a> {
    pub hint_type: Option<HintType>,
    pub share: Option<Share>,
    pub options: Option<&'a str>,
    pub keys: Vec<&'a str>,
}

#[derive(Debug, Default)]
pub(crate) struct AuthorAnnotations<'a> {
    /// Keys to remove, each with the reason (for the warning).
    pub removals: Vec<(&'a str, String)>,
    pub hints: BTreeMap<&'a str, AuthorHint<'a>>,
    pub force_shared: BTreeSet<&'a str>,
}

pub(crate) fn review_author_annotations<'a>(
    annotations: &'a BTreeMap<String, String>,
    volumes: &BTreeSet<&str>,
    settings: &MutationSettings,
) -> AuthorAnnotations<'a> {
    let mut out = AuthorAnnotations::default();
    for (key, value) in annotations {
        let key = key.as_str();
        if settings.is_denied(key) {
            out.removals.push((key, "it matches the deny list".to_owned()));
            continue;
        }
        let hint_key = match parse_hint_key(key) {
            Ok(Some(hint_key)) => hint_key,
            Ok(None) => {
                if let Some(name) = parse_force_shared_key(key) {
                    if value == "true" && volumes.contains(name) {
                        out.force_shared.insert(name);
                    }
                }
                continue;
            }
            Err(e) => {
                out.removals.push((key, e.to_string()));
                continue;
            }
        };
        let name = hint_key.name;
        if hint_key.field == HintField::Source {
            out.removals.push((key, "the source of a hint is set by the node, never by the pod".to_owned()));
            continue;
        }
        if !volumes.contains(name) {
            out.removals.push((key, format!("the pod has no volume named {name:?}")));
            continue;
        }
        let hint = out.hints.entry(name).or_default();
        let accepted = match hint_key.field {
            HintField::Type => value.parse().map(|t| hint.hint_type = Some(t)).map_err(|e| e.to_string()),
            HintField::Share => value.parse().map(|s| hint.share = Some(s)).map_err(|e| e.to_string()),
            HintField::Options => parse_options(value, settings.memory_size_option)
                .map(|_| hint.options = Some(value.as_str()))
                .map_err(|e| e.to_string()),
            HintField::Source => unreachable!("handled above"),
        };
        match accepted {
            Ok(()) => hint.keys.push(key),
            Err(reason) => out.removals.push((key, reason)),
        }
    }
    out.hints.retain(|_, hint| !hint.keys.is_empty());
    out
}
