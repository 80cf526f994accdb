//! The AdmissionReview reply, written once into a buffer of exactly its size: the same writer runs twice, first
//! counting bytes, then writing them. The patch is serialized once and base64-encoded in one call into the reply
//! (serializing it twice, to count and then to write through a streaming encoder, cost more than the copy), and
//! what the API server would drop anyway is capped here: it keeps only a few KB of warnings, and audit annotations
//! end up in every audit event. The mutation's full lists stay available to `preview`.

use std::fmt::{self, Display, Write as _};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;

use super::admission::ReviewVersion;
use crate::mutation::Mutation;

/// Warnings sent with one reply; the rest are summarised in one more line.
pub const MAX_WARNINGS: usize = 16;
/// Longest audit annotation value, in bytes; a longer list is cut at an item boundary and summarised.
pub const MAX_AUDIT_VALUE: usize = 2048;

/// Why a review is answered without a mutation.
#[derive(Debug, Clone, Copy)]
pub enum Verdict<'a> {
    /// The request could not be decoded.
    Invalid { message: &'a str, allowed: bool },
    /// The mutation failed (a bug).
    Failed { message: &'a str, allowed: bool },
}

/// One AdmissionReview reply, borrowing everything it says.
#[derive(Debug, Clone, Copy)]
pub struct ReviewReply<'a> {
    version: ReviewVersion,
    pub uid: &'a str,
    verdict: Option<Verdict<'a>>,
    mutation: Option<&'a Mutation>,
}

impl<'a> ReviewReply<'a> {
    /// Allowed, unchanged.
    pub fn new(version: ReviewVersion, uid: &'a str) -> Self {
        ReviewReply { version, uid, verdict: None, mutation: None }
    }

    pub fn verdict(self, verdict: Verdict<'a>) -> Self {
        ReviewReply { verdict: Some(verdict), ..self }
    }

    /// Allowed, with the mutation's patch, warnings and audit annotations.
    pub fn mutation(self, mutation: &'a Mutation) -> Self {
        ReviewReply { mutation: Some(mutation), ..self }
    }

    pub fn to_vec(self) -> Vec<u8> {
        let patch = self.mutation.map(|m| &m.patch).filter(|p| !p.0.is_empty());
        let patch_json = patch.map(|p| serde_json::to_vec(p).expect("a JSON Patch always serializes"));
        let patch_json = patch_json.as_deref();
        let mut size = Measure(0);
        self.write(&mut size, patch_json);
        let mut out = Vec::with_capacity(size.0);
        self.write(&mut out, patch_json);
        debug_assert_eq!(out.len(), size.0, "the measured size is the written size");
        out
    }

    fn write(&self, out: &mut impl Sink, patch_json: Option<&[u8]>) {
        out.raw("{\"apiVersion\":\"");
        out.raw(self.version.api_version());
        out.raw("\",\"kind\":\"AdmissionReview\",\"response\":{\"uid\":");
        out.string(self.uid);
        let allowed = match self.verdict {
            Some(Verdict::Invalid { allowed, .. } | Verdict::Failed { allowed, .. }) => allowed,
            None => true,
        };
        out.raw(if allowed { ",\"allowed\":true" } else { ",\"allowed\":false" });
        if let Some(verdict) = self.verdict {
            let (message, reason) = match verdict {
                Verdict::Invalid { message, .. } => (message, "InvalidRequest"),
                Verdict::Failed { message, .. } => (message, "InternalError"),
            };
            out.raw(",\"status\":{\"status\":\"Failure\",\"message\":");
            out.string(message);
            out.raw(",\"reason\":\"");
            out.raw(reason);
            out.raw("\"}");
        }
        let Some(mutation) = self.mutation else {
            out.raw("}}");
            return;
        };
        if let Some(json) = patch_json {
            out.raw(",\"patchType\":\"JSONPatch\",\"patch\":\"");
            out.base64(json);
            out.raw("\"");
        }
        if !mutation.audit.is_empty() {
            out.raw(",\"auditAnnotations\":{");
            for (i, (key, value)) in mutation.audit.iter().enumerate() {
                out.raw(if i == 0 { "" } else { "," });
                out.string(key);
                out.raw(":");
                out.display(&CappedList(value));
            }
            out.raw("}");
        }
        if !mutation.warnings.is_empty() {
            out.raw(",\"warnings\":[");
            for (i, warning) in mutation.warnings.iter().take(MAX_WARNINGS).enumerate() {
                out.raw(if i == 0 { "" } else { "," });
                out.display(&format_args!("mount-hints: {warning}"));
            }
            let more = mutation.warnings.len().saturating_sub(MAX_WARNINGS);
            if more > 0 {
                out.raw(",");
                out.display(&format_args!("mount-hints: ... and {more} more warnings"));
            }
            out.raw("]");
        }
        out.raw("}}");
    }
}

/// A comma-separated audit value, cut at an item boundary when it is over [`MAX_AUDIT_VALUE`].
struct CappedList<'a>(&'a str);

impl Display for CappedList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = self.0;
        if list.len() <= MAX_AUDIT_VALUE {
            return f.write_str(list);
        }
        // Room for the summary; the cut is at a comma when there is one, else at a character boundary.
        let mut limit = MAX_AUDIT_VALUE - 32;
        while !list.is_char_boundary(limit) {
            limit -= 1;
        }
        let cut = list[..limit].rfind(',').unwrap_or(limit);
        let rest = &list[cut..];
        let more = rest.matches(',').count() + usize::from(!rest.starts_with(','));
        write!(f, "{},... and {more} more", &list[..cut])
    }
}

/// Where the reply goes: a byte count, or the buffer.
trait Sink {
    /// JSON text that needs no escaping.
    fn raw(&mut self, s: &str);
    /// A JSON string.
    fn string(&mut self, s: &str);
    /// A JSON string holding `value`'s text, escaped as it is written (no intermediate String).
    fn display(&mut self, value: &dyn Display);
    /// `bytes`, base64-encoded, without quotes.
    fn base64(&mut self, bytes: &[u8]);
}

struct Measure(usize);

impl Sink for Measure {
    fn raw(&mut self, s: &str) {
        self.0 += s.len();
    }
    fn string(&mut self, s: &str) {
        self.0 += 2 + escaped_len(s);
    }
    fn display(&mut self, value: &dyn Display) {
        struct Count(usize);
        impl fmt::Write for Count {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0 += escaped_len(s);
                Ok(())
            }
        }
        let mut count = Count(2);
        write!(count, "{value}").expect("counting cannot fail");
        self.0 += count.0;
    }
    fn base64(&mut self, bytes: &[u8]) {
        self.0 += base64_len(bytes);
    }
}

impl Sink for Vec<u8> {
    fn raw(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
    fn string(&mut self, s: &str) {
        serde_json::to_writer(&mut *self, s).expect("writing to a Vec cannot fail");
    }
    fn display(&mut self, value: &dyn Display) {
        struct AsString<'a>(&'a dyn Display);
        impl Serialize for AsString<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self.0)
            }
        }
        serde_json::to_writer(&mut *self, &AsString(value)).expect("writing to a Vec cannot fail");
    }
    fn base64(&mut self, bytes: &[u8]) {
        let start = self.len();
        self.resize(start + base64_len(bytes), 0);
        let written = STANDARD.encode_slice(bytes, &mut self[start..]).expect("the space was sized for it");
        debug_assert_eq!(start + written, self.len());
    }
}

/// The length of `bytes` in padded base64.
fn base64_len(bytes: &[u8]) -> usize {
    bytes.len().div_ceil(3) * 4
}

/// The length of `s` inside a JSON string as serde_json escapes it: `"` and `\` take two bytes, control
/// characters two (`\n`, `\t`, `\r`, `\b`, `\f`) or six (`\u00XX`), everything else (UTF-8 included) itself.
fn escaped_len(s: &str) -> usize {
    s.len()
        + s.bytes()
            .map(|b| match b {
                b'"' | b'\\' | b'\n' | b'\t' | b'\r' | 0x08 | 0x0c => 1,
                0..0x20 => 5,
                _ => 0,
            })
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use base64::Engine;
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{Patch, PatchOperation, RemoveOperation};
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn removal(key: &str) -> PatchOperation {
        PatchOperation::Remove(RemoveOperation { path: PointerBuf::from_tokens(["metadata", "annotations", key]) })
    }

    fn hostile_mutation(n: usize) -> Mutation {
        let keys: Vec<String> = (0..n).map(|i| format!("dev.gvisor.spec.mount.n{i}.type")).collect();
        Mutation {
            patch: Patch(keys.iter().map(|k| removal(k)).collect()),
            warnings: keys.iter().map(|k| format!("annotation {k:?} removed: the pod has no volume")).collect(),
            audit: BTreeMap::from([("removed-annotations".to_owned(), keys.join(","))]),
            hints: vec![],
            in_scope: true,
        }
    }

    #[test]
    fn warnings_and_audit_values_are_capped_with_a_summary_and_the_patch_is_whole() {
        let mutation = hostile_mutation(60_000);
        let bytes = ReviewReply::new(ReviewVersion::V1, "u").mutation(&mutation).to_vec();
        assert_eq!(bytes.capacity(), bytes.len());
        let reply: Value = serde_json::from_slice(&bytes).unwrap();
        let warnings = reply["response"]["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), MAX_WARNINGS + 1);
        assert_eq!(
            warnings[0],
            "mount-hints: annotation \"dev.gvisor.spec.mount.n0.type\" removed: the pod has no volume"
        );
        assert_eq!(warnings[MAX_WARNINGS], format!("mount-hints: ... and {} more warnings", 60_000 - MAX_WARNINGS));
        let removed = reply["response"]["auditAnnotations"]["removed-annotations"].as_str().unwrap();
        assert!(removed.len() <= MAX_AUDIT_VALUE, "{}", removed.len());
        let (kept, summary) = removed.rsplit_once(",... and ").unwrap();
        let kept = kept.split(',').count();
        assert_eq!(summary, format!("{} more", 60_000 - kept));
        assert!(kept > 40, "{kept}");
        let patch = STANDARD.decode(reply["response"]["patch"].as_str().unwrap()).unwrap();
        let patch: Patch = serde_json::from_slice(&patch).unwrap();
        assert_eq!(patch, mutation.patch, "the patch is never capped");
    }

    #[test]
    fn a_list_cut_inside_its_only_item_counts_it() {
        let long = "x".repeat(MAX_AUDIT_VALUE + 10);
        let text = CappedList(&format!("{long},b")).to_string();
        assert!(text.ends_with(",... and 2 more") && text.len() <= MAX_AUDIT_VALUE, "{text}");
        assert_eq!(CappedList("a,b").to_string(), "a,b");
    }

    #[test]
    fn status_replies_are_exact_json() {
        for verdict in [
            Verdict::Invalid { message: "bad \"pod\"\n", allowed: true },
            Verdict::Failed { message: "boom", allowed: false },
        ] {
            let bytes = ReviewReply::new(ReviewVersion::V1beta1, "u\u{1}").verdict(verdict).to_vec();
            assert_eq!(bytes.capacity(), bytes.len());
            let reply: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(reply["apiVersion"], "admission.k8s.io/v1beta1");
            assert_eq!(reply["response"]["uid"], "u\u{1}");
            assert_eq!(reply["response"]["status"]["status"], "Failure");
        }
    }

    proptest! {
        #[test]
        fn escaped_len_matches_serde_json(s in ".*", t in "[\\x00-\\x7f]*") {
            for s in [&s, &t] {
                prop_assert_eq!(escaped_len(s) + 2, serde_json::to_string(s).unwrap().len());
            }
        }

        #[test]
        fn every_reply_is_exactly_its_measured_size(
            uid in ".*",
            warnings in prop::collection::vec(".*", 0..40),
            audit in prop::collection::btree_map("[a-z-]{1,20}", "[^,]{0,200}(,[^,]{0,90}){0,40}", 0..4),
            keys in prop::collection::vec(".{0,30}", 0..20),
        ) {
            let mutation = Mutation {
                patch: Patch(keys.iter().map(|k| removal(k)).collect()),
                warnings,
                audit,
                hints: vec![],
                in_scope: true,
            };
            let bytes = ReviewReply::new(ReviewVersion::V1, &uid).mutation(&mutation).to_vec();
            prop_assert_eq!(bytes.capacity(), bytes.len());
            let reply: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(reply["response"]["uid"].as_str(), Some(uid.as_str()));
            match reply["response"]["patch"].as_str() {
                Some(encoded) => {
                    let patch: Patch = serde_json::from_slice(&STANDARD.decode(encoded).unwrap()).unwrap();
                    prop_assert_eq!(&patch, &mutation.patch);
                }
                None => prop_assert!(mutation.patch.0.is_empty()),
            }
            for (key, value) in &mutation.audit {
                let written = reply["response"]["auditAnnotations"][key].as_str().unwrap();
                if value.len() <= MAX_AUDIT_VALUE {
                    prop_assert_eq!(written, value.as_str());
                } else {
                    prop_assert!(written.len() <= MAX_AUDIT_VALUE);
                }
            }
        }
    }
}
