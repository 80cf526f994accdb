//! `preview` over arbitrary manifest text (YAML streams or JSON), as `mount-hints-webhook preview` reads a file.
//!
//! Beyond "no panic": each document's patch, applied to the document as read, gives the mutated document that
//! preview prints, so what an operator previews is what the server would send.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mount_hints_webhook::preview::{parse_documents, preview_documents};
use mount_hints_webhook::{GvisorScope, MutationSettings};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(documents) = parse_documents(text, "fuzz.yaml") else { return };
    let settings = MutationSettings::default();
    let Ok(previewed) = preview_documents(documents.clone(), "fuzz.yaml", &settings, &GvisorScope::every_pod()) else {
        return;
    };
    assert_eq!(previewed.len(), documents.len());
    for (mut document, previewed) in documents.into_iter().zip(previewed) {
        let patch: json_patch::Patch = serde_json::from_value(previewed.patch).expect("the patch is a JSON Patch");
        json_patch::patch(&mut document, &patch.0).expect("the patch applies to the document as read");
        assert_eq!(document, previewed.object, "patch and mutated document disagree");
    }
});
