//! Name rules: Kubernetes volume names (DNS-1123 labels) and annotation keys (apimachinery `IsQualifiedName`).
//!
//! A volume name reaches a filesystem path on the node (`pods/<uid>/volumes/*/<NAME>`), so the node hook must
//! validate it before use; the webhook must never emit a key the API server rejects, because that rejects the
//! whole Pod after mutation.

use crate::key::{HintField, MOUNT_PREFIX};

/// Longest name part of an annotation key (the part after an optional `prefix/`).
pub const ANNOTATION_NAME_MAX: usize = 63;
const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("volume name is empty")]
    Empty,
    #[error("volume name `{0}` is longer than 63 characters")]
    TooLong(String),
    #[error("volume name `{0}` is not a DNS-1123 label (lower-case letters, digits and `-`, starting and ending alphanumeric)")]
    NotDns1123Label(String),
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters: what Kubernetes requires of a volume name, and what
/// makes it safe as one path component and one hint-key part (no `/`, `.`, `*`, `..`).
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= DNS1123_LABEL_MAX
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub fn validate_volume_name(s: &str) -> Result<&str, NameError> {
    if s.is_empty() {
        Err(NameError::Empty)
    } else if s.len() > DNS1123_LABEL_MAX {
        Err(NameError::TooLong(s.to_owned()))
    } else if !is_dns1123_label(s) {
        Err(NameError::NotDns1123Label(s.to_owned()))
    } else {
        Ok(s)
    }
}

/// The longest volume name whose `field` key still fits the 63-character annotation name limit.
pub fn max_volume_name_len(field: HintField) -> usize {
    ANNOTATION_NAME_MAX - MOUNT_PREFIX.len() - 1 - field.as_str().len()
}

/// apimachinery's `IsQualifiedName`, as the API server applies it to annotation keys: an optional DNS-1123
/// subdomain prefix and `/`, then a name of at most 63 characters matching
/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
pub fn is_valid_annotation_key(key: &str) -> bool {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns1123_subdomain(prefix) {
                return false;
            }
            name
        }
        None => key,
    };
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= ANNOTATION_NAME_MAX
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= DNS1123_SUBDOMAIN_MAX && s.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::hint_key;

    #[test]
    fn dns1123_labels() {
        for ok in ["a", "scratch", "cache-1", "0", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a/b", "..", "*", "a_b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        assert_eq!(validate_volume_name("../etc"), Err(NameError::NotDns1123Label("../etc".into())));
    }

    #[test]
    fn name_limits_match_the_spec() {
        assert_eq!(max_volume_name_len(HintField::Type), 36);
        assert_eq!(max_volume_name_len(HintField::Share), 35);
        assert_eq!(max_volume_name_len(HintField::Options), 33);
        for field in HintField::ALL {
            let n = max_volume_name_len(field);
            assert!(is_valid_annotation_key(&hint_key(&"v".repeat(n), field)));
            assert!(!is_valid_annotation_key(&hint_key(&"v".repeat(n + 1), field)));
        }
    }

    #[test]
    fn annotation_keys() {
        assert!(is_valid_annotation_key("dev.gvisor.spec.mount.a.type"));
        assert!(is_valid_annotation_key("example.com/some_Key.1"));
        assert!(!is_valid_annotation_key("example.com/"));
        assert!(!is_valid_annotation_key("/x"));
        assert!(!is_valid_annotation_key("Example.com/x"));
        assert!(!is_valid_annotation_key("x."));
        assert!(!is_valid_annotation_key("a/b/c"));
    }
}
