//! Inputs the fuzz targets (`fuzz/`) turned up, through the public entry points, so each stays answered the way
//! it is now.

use mount_hints_webhook::serve::answer_review;
use mount_hints_webhook::{GvisorScope, MutationSettings};
use serde_json::Value;

/// From the `review` target: a byte that is not UTF-8 inside a field the webhook does not read (here a
/// container's `terminationMessagePath`), in a pod whose object does not decode. The API server never sends
/// one, but the reply must still be an AdmissionReview carrying the request's uid, not a bare 400.
#[test]
fn a_stray_non_utf8_byte_outside_the_uid_still_gets_a_review_with_the_uid() {
    let mut body = br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "uid-7",
        "kind": {"group": "", "version": "v1", "kind": "Pod"}, "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE", "userInfo": {}, "object": {"metadata": {"name": "p"}, "spec": {"runtimeClassName": "gvisor",
        "volumes": "nope", "containers": [{"name": "main", "terminationMessagePath": "/dev/termination-log"}]}}}}"#
        .to_vec();
    let slash = body.windows(4).position(|w| w == b"/ter").expect("the path is in the body");
    body[slash] = 0xaf;
    let settings = MutationSettings::default();
    for deny_on_error in [false, true] {
        let reply = answer_review(&body, &settings, &GvisorScope::from_settings(&settings), deny_on_error);
        assert_eq!(reply.status, 200);
        let out: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(out["response"]["uid"], "uid-7");
        assert_eq!(out["response"]["allowed"], !deny_on_error);
        assert!(out["response"]["status"]["message"].as_str().unwrap().contains("cannot decode"), "{out}");
    }
}

/// From the `review` target: a number no float can hold (`88E444`) in a field the webhook does not read. serde
/// skips it unparsed, so the request is answered as any other, with its uid.
#[test]
fn an_out_of_range_number_in_an_ignored_field_still_gets_a_review_with_the_uid() {
    let body = br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "uid-8",
        "kind": {"group": "", "version": "v1", "kind": "Pod"}, "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE", "userInfo": {}, "object": {"metadata": {"name": "p"}, "spec": {"runtimeClassName": "gvisor",
        "terminationGracePeriodSeconds": 88E444, "containers": [{"name": "main"}]}}}}"#;
    assert!(serde_json::from_slice::<Value>(body).is_err(), "not a JSON value serde_json can hold");
    let settings = MutationSettings::default();
    let reply = answer_review(body, &settings, &GvisorScope::from_settings(&settings), false);
    assert_eq!(reply.status, 200);
    let out: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(out["kind"], "AdmissionReview");
    assert_eq!(out["response"]["uid"], "uid-8");
    assert_eq!(out["response"]["allowed"], true);
}

/// From the `review` target: a Pod object with no `metadata` map (or `metadata: null`). The API server always
/// sends one, but the patch must still apply to the object it was computed for: it creates `/metadata` whole.
#[test]
fn a_pod_without_metadata_gets_a_patch_that_creates_it() {
    let settings = MutationSettings::default();
    for metadata in ["", r#""metadata": null, "#] {
        let object = format!(
            r#"{{{metadata}"spec": {{"runtimeClassName": "gvisor", "volumes": [{{"name": "v", "emptyDir": {{}}}}],
            "containers": [{{"name": "main", "volumeMounts": [{{"name": "v", "mountPath": "/v"}}]}}]}}}}"#
        );
        let body = format!(
            r#"{{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {{"uid": "uid-9",
            "kind": {{"group": "", "version": "v1", "kind": "Pod"}}, "resource": {{"group": "", "version": "v1", "resource": "pods"}},
            "operation": "CREATE", "userInfo": {{}}, "object": {object}}}}}"#
        );
        let reply = answer_review(body.as_bytes(), &settings, &GvisorScope::from_settings(&settings), false);
        assert_eq!(reply.status, 200);
        let out: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(out["response"]["uid"], "uid-9");
        let patch = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            out["response"]["patch"].as_str().expect("a patch"),
        )
        .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut pod: Value = serde_json::from_str(&object).unwrap();
        json_patch::patch(&mut pod, &patch.0).expect("the patch applies to the object it was computed for");
        assert_eq!(pod["metadata"]["annotations"]["dev.gvisor.spec.mount.v.type"], "bind", "{pod}");
        assert_eq!(pod["metadata"]["annotations"]["dev.gvisor.spec.mount.v.share"], "container", "{pod}");
    }
}
