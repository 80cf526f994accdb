//! The key grammar: `dev.gvisor.spec.mount.<NAME>.<FIELD>` and `dev.gvisor.empty-dir.<NAME>.force-shared`.

use std::fmt;

/// Every annotation gVisor interprets starts with this.
pub const GVISOR_PREFIX: &str = "dev.gvisor.";
/// Prefix of the pod-level mount hints runsc reads.
pub const MOUNT_PREFIX: &str = "dev.gvisor.spec.mount.";
/// Prefix of per-emptyDir settings read by newer gVisor (and by our node hook).
pub const EMPTY_DIR_PREFIX: &str = "dev.gvisor.empty-dir.";
/// Field of the emptyDir opt-out: processes outside the sandbox must see the volume.
pub const FORCE_SHARED_SUFFIX: &str = "force-shared";

/// The fields runsc knows. Anything else under [`MOUNT_PREFIX`] is fatal for the 2022 runsc, and so is
/// `directfs` for every runsc older than [`crate::RunscRelease::DIRECTFS`]: whether a field may be written is
/// [`crate::check_field`]'s call, not the key grammar's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HintField {
    Type,
    Share,
    Options,
    Source,
    /// Per-mount directfs opt-out (`default` or `off`), gVisor commit 7dce1df4.
    Directfs,
}

impl HintField {
    pub const ALL: [HintField; 5] =
        [HintField::Type, HintField::Share, HintField::Options, HintField::Source, HintField::Directfs];

    pub fn as_str(self) -> &'static str {
        match self {
            HintField::Type => "type",
            HintField::Share => "share",
            HintField::Options => "options",
            HintField::Source => "source",
            HintField::Directfs => "directfs",
        }
    }

    pub fn parse(s: &str) -> Option<HintField> {
        HintField::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

impl fmt::Display for HintField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A well-formed hint key, borrowed from the annotation it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintKey<'a> {
    pub name: &'a str,
    pub field: HintField,
}

/// Why a key under [`MOUNT_PREFIX`] is not a usable hint key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// runsc splits the remainder on `.` and refuses the pod unless there are exactly two parts.
    #[error("`{key}` does not split into exactly <name>.<field> after `{MOUNT_PREFIX}` (runsc refuses the pod)")]
    WrongPartCount { key: String },
    #[error("`{key}` has an empty volume name (runsc refuses the pod)")]
    EmptyName { key: String },
    #[error("`{key}` has unknown field `{field}`; runsc knows type, share, options, source and directfs")]
    UnknownField { key: String, field: String },
}

/// Builds `dev.gvisor.spec.mount.<name>.<field>`. The caller is responsible for `name` being a volume name
/// (see [`crate::validate_volume_name`]); a name with a dot would produce a key runsc refuses.
pub fn hint_key(name: &str, field: HintField) -> String {
    let mut key = String::with_capacity(MOUNT_PREFIX.len() + name.len() + 1 + field.as_str().len());
    key.push_str(MOUNT_PREFIX);
    key.push_str(name);
    key.push('.');
    key.push_str(field.as_str());
    key
}

/// Parses an annotation key. `Ok(None)`: not a mount hint at all (a different prefix). `Err`: under the mount
/// prefix but unusable, with the reason runsc would give.
pub fn parse_hint_key(key: &str) -> Result<Option<HintKey<'_>>, KeyError> {
    let Some(rest) = key.strip_prefix(MOUNT_PREFIX) else {
        return Ok(None);
    };
    let mut parts = rest.split('.');
    let (Some(name), Some(field), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(KeyError::WrongPartCount { key: key.to_owned() });
    };
    if name.is_empty() {
        return Err(KeyError::EmptyName { key: key.to_owned() });
    }
    match HintField::parse(field) {
        Some(field) => Ok(Some(HintKey { name, field })),
        None => Err(KeyError::UnknownField { key: key.to_owned(), field: field.to_owned() }),
    }
}

/// Builds `dev.gvisor.empty-dir.<name>.force-shared`.
pub fn force_shared_key(name: &str) -> String {
    format!("{EMPTY_DIR_PREFIX}{name}.{FORCE_SHARED_SUFFIX}")
}

/// The volume name of a `dev.gvisor.empty-dir.<name>.force-shared` key, if `key` is one.
pub fn parse_force_shared_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(EMPTY_DIR_PREFIX)?;
    let name = rest.strip_suffix(FORCE_SHARED_SUFFIX)?.strip_suffix('.')?;
    (!name.is_empty() && !name.contains('.')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn builds_and_parses_every_field() {
        for field in HintField::ALL {
            let key = hint_key("scratch", field);
            assert_eq!(parse_hint_key(&key), Ok(Some(HintKey { name: "scratch", field })));
        }
        assert_eq!(hint_key("a", HintField::Type), "dev.gvisor.spec.mount.a.type");
    }

    #[test]
    fn refuses_what_runsc_refuses() {
        assert!(matches!(parse_hint_key("dev.gvisor.spec.mount.a.b.type"), Err(KeyError::WrongPartCount { .. })));
        assert!(matches!(parse_hint_key("dev.gvisor.spec.mount.a"), Err(KeyError::WrongPartCount { .. })));
        assert!(matches!(parse_hint_key("dev.gvisor.spec.mount..type"), Err(KeyError::EmptyName { .. })));
        assert_eq!(
            parse_hint_key("dev.gvisor.spec.mount.a.directfs"),
            Ok(Some(HintKey { name: "a", field: HintField::Directfs }))
        );
        assert!(matches!(
            parse_hint_key("dev.gvisor.spec.mount.a.Type"),
            Err(KeyError::UnknownField { field, .. }) if field == "Type"
        ));
        assert_eq!(parse_hint_key("dev.gvisor.spec.rootfs.type"), Ok(None));
        assert_eq!(parse_hint_key("example.com/x"), Ok(None));
    }

    #[test]
    fn force_shared_keys() {
        assert_eq!(parse_force_shared_key(&force_shared_key("cache")), Some("cache"));
        assert_eq!(parse_force_shared_key("dev.gvisor.empty-dir.a.b.force-shared"), None);
        assert_eq!(parse_force_shared_key("dev.gvisor.empty-dir..force-shared"), None);
        assert_eq!(parse_force_shared_key("dev.gvisor.empty-dir.cacheforce-shared"), None);
    }

    proptest! {
        #[test]
        fn round_trips_any_dotless_name(name in "[a-z0-9-]{1,63}", i in 0usize..5) {
            let field = HintField::ALL[i];
            let key = hint_key(&name, field);
            prop_assert_eq!(parse_hint_key(&key), Ok(Some(HintKey { name: &name, field })));
        }
    }
}
