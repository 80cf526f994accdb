//! A pod's hints as runsc sees them: annotations grouped by volume name, each field checked against the runsc
//! in use, and a hint complete only with `type`, `share` and `source`. The webhook (which writes type and
//! share), the node completion (which adds source) and the node check (which reports what runsc loaded) all
//! group and judge hints here, so they cannot disagree on what runsc will accept.

use std::collections::BTreeMap;
use std::fmt;

use crate::key::{parse_hint_key, HintField, KeyError};
use crate::release::RunscRelease;
use crate::values::{parse_options, Directfs, HintType, OptionsError, Share, ValueError};

/// The raw fields found for one volume name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RawHint<'a> {
    fields: BTreeMap<HintField, &'a str>,
}

impl<'a> RawHint<'a> {
    pub fn get(&self, field: HintField) -> Option<&'a str> {
        self.fields.get(&field).copied()
    }

    /// Every field present, in [`HintField`] order.
    pub fn fields(&self) -> impl Iterator<Item = (HintField, &'a str)> + '_ {
        self.fields.iter().map(|(f, v)| (*f, *v))
    }

    pub fn insert(&mut self, field: HintField, value: &'a str) {
        self.fields.insert(field, value);
    }

    pub fn remove(&mut self, field: HintField) -> Option<&'a str> {
        self.fields.remove(&field)
    }

    /// runsc uses a hint only when `type`, `share` and `source` are all present; the 2022 release refuses the
    /// pod otherwise, later ones drop the hint.
    pub fn check_complete(&self) -> Result<(), Incomplete> {
        self.check_present(REQUIRED_FIELDS.into_iter())
    }

    /// What a pod's hint must carry before it reaches a node: every required field but `source`, which only
    /// the node can add.
    pub fn check_complete_but_source(&self) -> Result<(), Incomplete> {
        self.check_present(REQUIRED_FIELDS.into_iter().filter(|f| *f != HintField::Source))
    }

    fn check_present(&self, required: impl Iterator<Item = HintField>) -> Result<(), Incomplete> {
        let missing: Vec<HintField> = required.filter(|f| !self.fields.contains_key(f)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Incomplete(missing))
        }
    }
}

impl<'a> Extend<(HintField, &'a str)> for RawHint<'a> {
    fn extend<I: IntoIterator<Item = (HintField, &'a str)>>(&mut self, fields: I) {
        self.fields.extend(fields);
    }
}

/// The fields without which runsc does not use a hint (the webhook provides all but `source`).
pub const REQUIRED_FIELDS: [HintField; 3] = [HintField::Type, HintField::Share, HintField::Source];

/// The required fields a hint lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Incomplete(pub Vec<HintField>);

impl fmt::Display for Incomplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|field| field.as_str()).collect();
        write!(f, "has no {} (runsc needs type, share and source)", names.join(", "))
    }
}

/// The hint annotations of one spec or pod.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HintGroups<'a> {
    /// Well-formed hint keys, by volume name.
    pub hints: BTreeMap<&'a str, RawHint<'a>>,
    /// Keys under the mount prefix that runsc refuses whatever their value, with the reason.
    pub malformed: Vec<(&'a str, KeyError)>,
}

/// Groups annotations into hints. Keys outside the mount prefix are ignored.
pub fn group_hints<'a>(annotations: impl IntoIterator<Item = (&'a str, &'a str)>) -> HintGroups<'a> {
    let mut groups = HintGroups::default();
    for (key, value) in annotations {
        match parse_hint_key(key) {
            Ok(None) => {}
            Ok(Some(k)) => groups.hints.entry(k.name).or_default().insert(k.field, value),
            Err(e) => groups.malformed.push((key, e)),
        }
    }
    groups
}

/// Why one field's value would make the runsc in use refuse (or, when tolerant, drop) the hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error(transparent)]
    Value(#[from] ValueError),
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error("source `{0}` is not an absolute path")]
    RelativeSource(String),
    #[error("the directfs field needs runsc {needs} or newer, and the oldest runsc in use is {oldest}")]
    DirectfsUnknown { needs: RunscRelease, oldest: RunscRelease },
}

/// Whether `value` is acceptable for `field` on every runsc at least as new as `oldest`.
pub fn check_field(field: HintField, value: &str, oldest: RunscRelease) -> Result<(), FieldError> {
    match field {
        HintField::Type => value.parse::<HintType>().map(drop).map_err(FieldError::from),
        HintField::Share => value.parse::<Share>().map(drop).map_err(FieldError::from),
        HintField::Options => {
            parse_options(value, oldest.supports_valued_options()).map(drop).map_err(FieldError::from)
        }
        HintField::Source if value.starts_with('/') => Ok(()),
        HintField::Source => Err(FieldError::RelativeSource(value.to_owned())),
        HintField::Directfs => {
            // The value is checked first: an unknown value is wrong on every runsc, whatever the release.
            value.parse::<Directfs>()?;
            if oldest.supports_directfs() {
                Ok(())
            } else {
                Err(FieldError::DirectfsUnknown { needs: RunscRelease::DIRECTFS, oldest })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(date: u32) -> RunscRelease {
        RunscRelease::from_date(date).unwrap()
    }

    #[test]
    fn groups_by_name_and_reports_malformed_keys() {
        let annotations = [
            ("dev.gvisor.spec.mount.a.type", "tmpfs"),
            ("dev.gvisor.spec.mount.a.share", "pod"),
            ("dev.gvisor.spec.mount.b.directfs", "off"),
            ("dev.gvisor.spec.mount.x.y.type", "bind"),
            ("example.com/other", "1"),
        ];
        let groups = group_hints(annotations);
        assert_eq!(groups.hints.len(), 2);
        assert_eq!(groups.hints["a"].get(HintField::Type), Some("tmpfs"));
        assert_eq!(groups.hints["b"].get(HintField::Directfs), Some("off"));
        assert_eq!(groups.malformed.len(), 1);
        assert_eq!(groups.malformed[0].0, "dev.gvisor.spec.mount.x.y.type");
    }

    #[test]
    fn complete_means_type_share_and_source() {
        let mut hint = RawHint::default();
        assert_eq!(hint.check_complete(), Err(Incomplete(REQUIRED_FIELDS.to_vec())));
        hint.insert(HintField::Type, "bind");
        assert_eq!(hint.check_complete_but_source(), Err(Incomplete(vec![HintField::Share])));
        hint.insert(HintField::Share, "pod");
        assert_eq!(hint.check_complete_but_source(), Ok(()));
        hint.insert(HintField::Options, "rw");
        let err = hint.check_complete().unwrap_err();
        assert_eq!(err, Incomplete(vec![HintField::Source]));
        assert_eq!(err.to_string(), "has no source (runsc needs type, share and source)");
        hint.insert(HintField::Source, "/x");
        assert_eq!(hint.check_complete(), Ok(()));
    }

    #[test]
    fn fields_follow_the_oldest_runsc() {
        let old = RunscRelease::OLDEST_SUPPORTED;
        assert!(check_field(HintField::Type, "tmpfs", old).is_ok());
        assert!(check_field(HintField::Type, "Tmpfs", old).is_err());
        assert!(check_field(HintField::Share, "shared", old).is_ok());
        assert!(check_field(HintField::Options, "size=1g", old).is_err());
        assert!(check_field(HintField::Options, "size=1g", release(20240501)).is_ok());
        assert!(check_field(HintField::Source, "/var/lib/kubelet/x", old).is_ok());
        assert_eq!(check_field(HintField::Source, "x", old), Err(FieldError::RelativeSource("x".into())));
        // directfs: known from release-20260520 on; any value but default/off is wrong everywhere.
        assert!(matches!(
            check_field(HintField::Directfs, "off", release(20260511)),
            Err(FieldError::DirectfsUnknown { .. })
        ));
        assert!(check_field(HintField::Directfs, "off", RunscRelease::DIRECTFS).is_ok());
        assert!(check_field(HintField::Directfs, "default", release(20260601)).is_ok());
        assert!(matches!(check_field(HintField::Directfs, "on", release(20260601)), Err(FieldError::Value(_))));
        assert!(matches!(check_field(HintField::Directfs, "on", old), Err(FieldError::Value(_))));
    }
}
