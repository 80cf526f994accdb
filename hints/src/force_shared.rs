//! `dev.gvisor.empty-dir.<NAME>.force-shared`: the author's opt-out from a sandbox-internal tmpfs. gVisor's shim
//! reads the value with Go's `strconv.ParseBool`, so both halves of mount-hints read it exactly that way, here.

/// The value of a force-shared annotation is not one of the spellings Go's `strconv.ParseBool` accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "force-shared value `{0}` is not a boolean (Go's strconv.ParseBool accepts 1, t, T, TRUE, true, True, \
     0, f, F, FALSE, false, False); ignored"
)]
pub struct ForceSharedError(pub String);

/// Go's `strconv.ParseBool`: exactly these twelve spellings, nothing else (no trimming, no `yes`).
pub fn parse_go_bool(value: &str) -> Result<bool, ForceSharedError> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(ForceSharedError(value.to_owned())),
    }
}

/// Whether the annotations force-share volume `name`: `Ok(false)` when the annotation is absent, `Err` (to be
/// reported, then treated as absent) when its value is not a boolean.
pub fn force_shared<'a, F>(lookup: F, name: &str) -> Result<bool, ForceSharedError>
where
    F: FnOnce(&str) -> Option<&'a str>,
{
    match lookup(&crate::force_shared_key(name)) {
        None => Ok(false),
        Some(value) => parse_go_bool(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_go_parse_bool_reads() {
        for yes in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(yes), Ok(true), "{yes}");
        }
        for no in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(no), Ok(false), "{no}");
        }
        for bad in ["", "yes", "on", "tRUE", " true", "true ", "2", "y", "N"] {
            assert!(parse_go_bool(bad).is_err(), "{bad:?}");
        }
        assert!(parse_go_bool("yes").unwrap_err().to_string().contains("`yes`"));
    }

    #[test]
    fn looks_up_the_volume_key() {
        let annotations = std::collections::BTreeMap::from([
            ("dev.gvisor.empty-dir.a.force-shared".to_owned(), "T".to_owned()),
            ("dev.gvisor.empty-dir.b.force-shared".to_owned(), "yes".to_owned()),
        ]);
        let lookup = |key: &str| annotations.get(key).map(String::as_str);
        assert_eq!(force_shared(lookup, "a"), Ok(true));
        assert!(force_shared(lookup, "b").is_err());
        assert_eq!(force_shared(lookup, "c"), Ok(false));
    }
}
