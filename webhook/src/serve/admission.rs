//! From request bytes to reply bytes: decode the AdmissionReview with kube's types, run the mutation, answer.
//! No HTTP here beyond the status code of a reply that cannot be an AdmissionReview.

use std::panic::{catch_unwind, AssertUnwindSafe};

use axum::http::StatusCode;
use base64::Engine;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::metrics::Outcome;
use crate::mutation::{mutate, Mutation};
use crate::pod::PodFacts;
use crate::settings::{GvisorScope, MutationSettings};

/// What to send back.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub outcome: Outcome,
    /// The request uid, for the log line; empty when the body had none.
    pub uid: String,
    pub patched_hints: usize,
}

impl Reply {
    pub fn error(status: StatusCode, outcome: Outcome, message: &str) -> Reply {
        let body = serde_json::to_vec(&json!({ "error": message })).expect("a JSON object always serializes");
        Reply { status, body, outcome, uid: String::new(), patched_hints: 0 }
    }
}

/// The fields needed to answer a review whose object does not decode.
#[derive(Deserialize)]
struct Envelope {
    kind: String,
    request: Option<EnvelopeRequest>,
}

#[derive(Deserialize)]
struct EnvelopeRequest {
    uid: String,
}

/// Answers one AdmissionReview body. Every body that names a request uid gets an AdmissionReview reply with
/// that uid; `deny_on_error` decides whether an undecodable object is allowed (the default, matching the
/// `failurePolicy: Ignore` spirit) or denied.
pub fn answer_review(body: &[u8], settings: &MutationSettings, scope: &GvisorScope, deny_on_error: bool) -> Reply {
    answer_review_with(body, |pod| mutate(pod, settings, scope), deny_on_error)
}

fn answer_review_with(body: &[u8], mutation: impl Fn(&PodFacts) -> Mutation, deny_on_error: bool) -> Reply {
    match serde_json::from_slice::<AdmissionReview<PodFacts>>(body) {
        Ok(review) if review.types.kind == "AdmissionReview" => match review.try_into() {
            Ok(request) => answer_request(&request, mutation, deny_on_error),
            Err(_) => Reply::error(StatusCode::BAD_REQUEST, Outcome::bad_request, "the AdmissionReview has no request"),
        },
        Ok(review) => Reply::error(
            StatusCode::BAD_REQUEST,
            Outcome::bad_request,
            &format!("expected kind AdmissionReview, got {:?}", review.types.kind),
        ),
        Err(decode_error) => match serde_json::from_slice::<Envelope>(body) {
            Ok(Envelope { kind, request: Some(EnvelopeRequest { uid }) })
                if kind == "AdmissionReview" && !uid.is_empty() =>
            {
                let message = format!("mount-hints cannot decode this request: {decode_error}");
                let mut response = AdmissionResponse::invalid(&message);
                response.uid = uid;
                response.allowed = !deny_on_error;
                review_reply(response, Outcome::decode_error, 0)
            }
            _ => Reply::error(
                StatusCode::BAD_REQUEST,
                Outcome::bad_request,
                &format!("not an admission.k8s.io/v1 AdmissionReview: {decode_error}"),
            ),
        },
    }
}

fn answer_request(
    request: &AdmissionRequest<PodFacts>,
    mutation: impl Fn(&PodFacts) -> Mutation,
    deny_on_error: bool,
) -> Reply {
    let response = AdmissionResponse::from(request);
    let is_pod_create = request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.operation == Operation::Create
        && request.sub_resource.as_deref().unwrap_or_default().is_empty();
    let Some(pod) = request.object.as_ref().filter(|_| is_pod_create) else {
        return review_reply(response, Outcome::skipped, 0);
    };
    // A panic is a bug, but the API server must still get an answer carrying the uid, not a reset connection.
    let mutation = match catch_unwind(AssertUnwindSafe(|| mutation(pod))) {
        Ok(mutation) => mutation,
        Err(_) => {
            tracing::error!(uid = %request.uid, "the mutation panicked; answering with an error");
            let mut response = response;
            response.result.message = "mount-hints: internal error while mutating this pod".to_owned();
            if deny_on_error {
                response = response.deny("mount-hints: internal error while mutating this pod");
            }
            return review_reply(response, Outcome::internal_error, 0);
        }
    };
    if !mutation.in_scope {
        return review_reply(response, Outcome::skipped, 0);
    }
    let mut response = response;
    if !mutation.warnings.is_empty() {
        response.warnings = Some(mutation.warnings.iter().map(|w| format!("mount-hints: {w}")).collect());
    }
    response.audit_annotations = mutation.audit.clone().into_iter().collect();
    let hints = mutation.hints.len();
    if mutation.patch.0.is_empty() {
        return review_reply(response, Outcome::unchanged, hints);
    }
    match response.with_patch(mutation.patch) {
        Ok(response) => review_reply(response, Outcome::patched, hints),
        Err(e) => {
            let response = AdmissionResponse::from(request);
            tracing::error!(uid = %request.uid, error = %e, "cannot serialize the patch");
            review_reply(response, Outcome::internal_error, 0)
        }
    }
}

fn review_reply(response: AdmissionResponse, outcome: Outcome, patched_hints: usize) -> Reply {
    let review = response.into_review();
    let response = review.response.as_ref().expect("into_review sets the response");
    // kube serializes `patch` (a Vec<u8>) as an array of numbers; the API documents base64, which is what Go's
    // []byte is on the wire and a quarter of the size. Same fields otherwise.
    let patch = response.patch.as_ref().map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    let out = ReviewOut {
        api_version: &review.types.api_version,
        kind: &review.types.kind,
        response: ResponseOut {
            uid: &response.uid,
            allowed: response.allowed,
            status: &response.result,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            audit_annotations: &response.audit_annotations,
            warnings: response.warnings.as_deref(),
        },
    };
    let body = serde_json::to_vec(&out).expect("an AdmissionReview always serializes");
    Reply { status: StatusCode::OK, body, outcome, uid: response.uid.clone(), patched_hints }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'a str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    status: &'a kube::core::Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "std::collections::HashMap::is_empty")]
    audit_annotations: &'a std::collections::HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a [String]>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn review(object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "uid-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE", "userInfo": {}, "object": object, "oldObject": null,
            }
        }))
        .unwrap()
    }

    fn body(reply: &Reply) -> Value {
        serde_json::from_slice(&reply.body).unwrap()
    }

    #[test]
    fn a_panicking_mutation_still_gets_an_answer_with_the_uid() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        let boom = |_: &PodFacts| -> Mutation { panic!("bug") };
        let reply = answer_review_with(&review(pod.clone()), boom, false);
        assert_eq!((reply.status, reply.outcome), (StatusCode::OK, Outcome::internal_error));
        let out = body(&reply);
        assert_eq!(out["response"]["uid"], "uid-1");
        assert_eq!(out["response"]["allowed"], true);
        let denied = body(&answer_review_with(&review(pod), boom, true));
        assert_eq!(denied["response"]["allowed"], false);
        assert!(denied["response"]["status"]["message"].as_str().unwrap().contains("internal error"));
    }
}
