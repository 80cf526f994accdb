//! The webhook's review decoder and answer over raw request bodies, under the default settings and under the
//! most permissive ones.
//!
//! Beyond "no panic": every reply is JSON; a review reply carries the request's uid; a patch applies cleanly to
//! the object it was computed for, and adds only annotation keys the API server accepts.
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use mount_hints::is_valid_annotation_key;
use mount_hints_webhook::serve::answer_review;
use mount_hints_webhook::{GvisorScope, MutationSettings, SharePolicy};
use serde_json::Value;

#[derive(serde::Deserialize)]
struct UidOnly {
    request: Option<UidRequest>,
}

#[derive(serde::Deserialize)]
struct UidRequest {
    uid: String,
}

static CONFIGURATIONS: LazyLock<[(MutationSettings, GvisorScope, bool); 2]> = LazyLock::new(|| {
    let default = MutationSettings::default();
    let scope = GvisorScope::from_settings(&default);
    let permissive = MutationSettings {
        share_policy: SharePolicy::AlwaysPod,
        memory_size_option: true,
        deny_annotations: Vec::new(),
        ..MutationSettings::default()
    };
    [(default, scope, false), (permissive, GvisorScope::every_pod(), true)]
});

fuzz_target!(|body: &[u8]| {
    // serde skips the fields it ignores without checking their UTF-8 or the range of their numbers, so such a
    // body still gets its review reply; the oracle reads it with bad bytes replaced, and when even that is not
    // a JSON value (a number like 1E444), reads only the uid the way the webhook does.
    let request: Option<Value> = serde_json::from_str(&String::from_utf8_lossy(body)).ok();
    let lenient_uid = || serde_json::from_slice::<UidOnly>(body).ok().and_then(|u| u.request).map(|r| r.uid);
    for (settings, scope, deny_on_error) in CONFIGURATIONS.iter() {
        let reply = answer_review(body, settings, scope, *deny_on_error);
        let out: Value = serde_json::from_slice(&reply.body).expect("every reply is JSON");
        if reply.status != 200 {
            assert!(out["error"].is_string(), "an error reply says why: {out}");
            continue;
        }
        let Some(request) = request.as_ref() else {
            assert_eq!(lenient_uid().as_deref(), Some(reply.uid.as_str()), "the reply carries the request's uid");
            continue;
        };
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(out["response"]["uid"], request["request"]["uid"], "the reply carries the request's uid");
        assert_eq!(out["response"]["uid"].as_str(), Some(reply.uid.as_str()));
        let Some(patch) = out["response"]["patch"].as_str() else { continue };
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD.decode(patch).expect("the patch is base64");
        let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("the patch is a JSON Patch");
        let original = request["request"]["object"].clone();
        let mut object = original.clone();
        json_patch::patch(&mut object, &patch.0).expect("the patch applies to the object it was computed for");
        let keys = |o: &Value| o["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
        let before = keys(&original);
        for key in keys(&object).keys().filter(|k| !before.contains_key(*k)) {
            assert!(is_valid_annotation_key(key), "the patch adds annotation {key:?}, which the API server rejects");
        }
    }
});
