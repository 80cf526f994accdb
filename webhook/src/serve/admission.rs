//! From request bytes to reply bytes: decode the review envelope, decode the Pod facts only for a Pod CREATE, run
//! the mutation, write the reply. No HTTP here beyond the status code of a reply that cannot be an AdmissionReview.
//!
//! The envelope decoder borrows from the body and skips everything the answer does not need (userInfo,
//! oldObject, options...); the object stays raw until the request is known to be a Pod CREATE. The reply is
//! written once, straight into a buffer of its exact size (see [`super::reply`]).

use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use axum::http::StatusCode;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::metrics::Outcome;
use super::reply::{ReviewReply, Verdict};
use crate::mutation::{mutate, Mutation};
use crate::pod::{FactText, PodFacts, Text};
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
    /// A reply that is not an AdmissionReview (the body was not one): `{"error": message}`.
    pub fn error(status: StatusCode, outcome: Outcome, message: &str) -> Reply {
        let body =
            serde_json::to_vec(&serde_json::json!({ "error": message })).expect("a JSON object always serializes");
        Reply { status, body, outcome, uid: String::new(), patched_hints: 0 }
    }

    fn review(reply: &ReviewReply<'_>, outcome: Outcome, patched_hints: usize) -> Reply {
        Reply { status: StatusCode::OK, body: reply.to_vec(), outcome, uid: reply.uid.to_owned(), patched_hints }
    }
}

/// The AdmissionReview versions the API server may send; the reply always carries the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewVersion {
    V1,
    V1beta1,
}

impl ReviewVersion {
    fn parse(api_version: &str) -> Option<Self> {
        match api_version {
            "admission.k8s.io/v1" => Some(ReviewVersion::V1),
            "admission.k8s.io/v1beta1" => Some(ReviewVersion::V1beta1),
            _ => None,
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            ReviewVersion::V1 => "admission.k8s.io/v1",
            ReviewVersion::V1beta1 => "admission.k8s.io/v1beta1",
        }
    }
}

const NOT_A_REVIEW: &str = "not an admission.k8s.io/v1 AdmissionReview (nor a v1beta1 one)";

/// The review as far as the answer needs it; every other field is skipped unread.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a, S: Deserialize<'de> + Ord + Default"))]
struct ReviewIn<'a, S> {
    #[serde(borrow, default)]
    api_version: Option<Text<'a>>,
    #[serde(borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default = "Option::default")]
    request: Option<RequestIn<'a, S>>,
}

/// The request, read in one pass: when `kind` and `operation` come before `object` (the API server writes them
/// in that order) and make it a Pod CREATE, the object is decoded into [`PodFacts`] where it stands; otherwise it
/// is kept raw and decoded only if needed. `S` is the text the facts hold (borrowed from the body when served).
struct RequestIn<'a, S> {
    uid: Text<'a>,
    kind: KindIn<'a>,
    sub_resource: Option<Text<'a>>,
    operation: Text<'a>,
    object: ObjectIn<'a, S>,
}

enum ObjectIn<'a, S> {
    Absent,
    Raw(&'a RawValue),
    Pod(Box<PodFacts<S>>),
}

impl<S> RequestIn<'_, S> {
    fn is_pod_create(&self) -> bool {
        is_pod_create(&self.kind, &self.operation, self.sub_resource.as_deref())
    }
}

fn is_pod_create(kind: &KindIn<'_>, operation: &str, sub_resource: Option<&str>) -> bool {
    kind.group.is_empty()
        && &*kind.kind == "Pod"
        && operation == "CREATE"
        && sub_resource.unwrap_or_default().is_empty()
}

impl<'de: 'a, 'a, S: Deserialize<'de> + Ord + Default> Deserialize<'de> for RequestIn<'a, S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RequestVisitor<'a, S>(PhantomData<(&'a (), S)>);
        impl<'de: 'a, 'a, S: Deserialize<'de> + Ord + Default> Visitor<'de> for RequestVisitor<'a, S> {
            type Value = RequestIn<'a, S>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an AdmissionRequest")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut uid, mut kind, mut sub_resource, mut operation) = (None, None, None, None);
                let mut object = ObjectIn::Absent;
                while let Some(key) = map.next_key::<Text<'_>>()? {
                    match &*key {
                        "uid" => uid = Some(map.next_value()?),
                        "kind" => kind = Some(map.next_value()?),
                        "subResource" => sub_resource = map.next_value()?,
                        "operation" => operation = Some(map.next_value::<Text<'a>>()?),
                        "object" => {
                            let pod_create = match (&kind, &operation) {
                                (Some(kind), Some(operation)) => {
                                    is_pod_create(kind, operation, sub_resource.as_deref())
                                }
                                _ => false,
                            };
                            object = if pod_create {
                                map.next_value::<Option<PodFacts<S>>>()?
                                    .map_or(ObjectIn::Absent, |p| ObjectIn::Pod(Box::new(p)))
                            } else {
                                map.next_value::<Option<&'a RawValue>>()?.map_or(ObjectIn::Absent, ObjectIn::Raw)
                            };
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(RequestIn {
                    uid: uid.ok_or_else(|| de::Error::missing_field("uid"))?,
                    kind: kind.ok_or_else(|| de::Error::missing_field("kind"))?,
                    sub_resource,
                    operation: operation.ok_or_else(|| de::Error::missing_field("operation"))?,
                    object,
                })
            }
        }
        d.deserialize_map(RequestVisitor(PhantomData))
    }
}

#[derive(Deserialize)]
struct KindIn<'a> {
    #[serde(borrow, default)]
    group: Text<'a>,
    #[serde(borrow)]
    kind: Text<'a>,
}

/// What is left to answer with when the envelope itself does not decode: enough to reply with the uid.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MinimalReview<'a, R> {
    #[serde(borrow, default)]
    api_version: Option<Text<'a>>,
    #[serde(borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(default = "Option::default")]
    request: Option<R>,
}

#[derive(Deserialize)]
struct MinimalRequest<'a> {
    #[serde(borrow, default)]
    uid: Text<'a>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
}

/// The request without its object, for a body whose object is not even text (a byte that is not UTF-8, which
/// a borrowed `RawValue` refuses): serde skips a field it does not read without checking its bytes.
#[derive(Deserialize)]
struct UidOnlyRequest<'a> {
    #[serde(borrow, default)]
    uid: Text<'a>,
}

/// Answers one AdmissionReview body. Every body that names a request uid gets an AdmissionReview reply with
/// that uid, in the request's version; `deny_on_error` decides whether an undecodable object is allowed (the
/// default, matching the `failurePolicy: Ignore` spirit) or denied.
pub fn answer_review(body: &[u8], settings: &MutationSettings, scope: &GvisorScope, deny_on_error: bool) -> Reply {
    answer_review_with(body, |pod: &PodFacts<Text<'_>>| mutate(pod, settings, scope), deny_on_error)
}

/// `S` is the text the decoded facts hold: borrowed [`Text`] when serving; any owned text does for tests.
fn answer_review_with<'a, S: FactText + Default + Deserialize<'a>>(
    body: &'a [u8],
    mutation: impl Fn(&PodFacts<S>) -> Mutation,
    deny_on_error: bool,
) -> Reply {
    // A body that is all UTF-8 (every one the API server sends) is checked once, in bulk, rather than string by
    // string as the parser goes; a stray byte in a field nobody reads must still be skipped unchecked, so the
    // rest go through the byte parser.
    let decoded = match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str::<ReviewIn<'_, S>>(text),
        Err(_) => serde_json::from_slice(body),
    };
    let review = match decoded {
        Ok(review) => review,
        Err(e) => return answer_undecodable(body, &e, deny_on_error),
    };
    let version = match review.api_version.as_deref().map(|v| (v, ReviewVersion::parse(v))) {
        Some((_, Some(version))) => version,
        Some((other, None)) => return bad_request(&format!("{NOT_A_REVIEW}: apiVersion {other:?}")),
        None => return bad_request(&format!("{NOT_A_REVIEW}: no apiVersion")),
    };
    match review.kind.as_deref() {
        Some("AdmissionReview") => {}
        other => return bad_request(&format!("expected kind AdmissionReview, got {:?}", other.unwrap_or(""))),
    }
    let Some(request) = review.request else {
        return bad_request("the AdmissionReview has no request");
    };
    let reply = ReviewReply::new(version, &request.uid);
    if !request.is_pod_create() {
        return Reply::review(&reply, Outcome::skipped, 0);
    }
    let pod = match request.object {
        ObjectIn::Absent => return Reply::review(&reply, Outcome::skipped, 0),
        ObjectIn::Pod(pod) => pod,
        ObjectIn::Raw(object) => match serde_json::from_str(object.get()) {
            Ok(pod) => pod,
            Err(_) => {
                let message = format!("mount-hints cannot decode this request: {}", object_error(object));
                let reply = reply.verdict(Verdict::Invalid { message: &message, allowed: !deny_on_error });
                return Reply::review(&reply, Outcome::decode_error, 0);
            }
        },
    };
    // A panic is a bug, but the API server must still get an answer carrying the uid, not a reset connection.
    let mutation = match catch_unwind(AssertUnwindSafe(|| mutation(&pod))) {
        Ok(mutation) => mutation,
        Err(_) => {
            tracing::error!(uid = %&*request.uid, "the mutation panicked; answering with an error");
            let message = "mount-hints: internal error while mutating this pod";
            let reply = reply.verdict(Verdict::Failed { message, allowed: !deny_on_error });
            return Reply::review(&reply, Outcome::internal_error, 0);
        }
    };
    // The facts can be large (a hostile pod's annotations); the reply does not need them.
    drop(pod);
    if !mutation.in_scope {
        return Reply::review(&reply, Outcome::skipped, 0);
    }
    let hints = mutation.hints.len();
    let outcome = if mutation.patch.0.is_empty() { Outcome::unchanged } else { Outcome::patched };
    Reply::review(&reply.mutation(&mutation), outcome, hints)
}

fn bad_request(message: &str) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, Outcome::bad_request, message)
}

/// The envelope did not decode: answer with the uid when the body still names one, else HTTP 400.
fn answer_undecodable(body: &[u8], error: &serde_json::Error, deny_on_error: bool) -> Reply {
    let minimal = serde_json::from_slice::<MinimalReview<'_, MinimalRequest<'_>>>(body)
        .map(|r| (r.api_version, r.kind, r.request.map(|q| (q.uid, q.object))))
        .or_else(|_| {
            serde_json::from_slice::<MinimalReview<'_, UidOnlyRequest<'_>>>(body)
                .map(|r| (r.api_version, r.kind, r.request.map(|q| (q.uid, None))))
        });
    let Ok((api_version, kind, request)) = minimal else {
        return bad_request(&format!("{NOT_A_REVIEW}: {error}"));
    };
    let version = api_version.as_deref().and_then(ReviewVersion::parse);
    match (version, kind.as_deref(), request) {
        (Some(version), Some("AdmissionReview"), Some((uid, object))) if !uid.is_empty() => {
            // Most often the object is what does not decode: then say where in it.
            let reason = object.and_then(|o| serde_json::from_str::<PodFacts>(o.get()).err().map(|_| object_error(o)));
            let message =
                format!("mount-hints cannot decode this request: {}", reason.unwrap_or_else(|| error.to_string()));
            let reply = ReviewReply::new(version, &uid)
                .verdict(Verdict::Invalid { message: &message, allowed: !deny_on_error });
            Reply::review(&reply, Outcome::decode_error, 0)
        }
        (None, _, _) => {
            bad_request(&format!("{NOT_A_REVIEW}: apiVersion {:?}", api_version.as_deref().unwrap_or_default()))
        }
        _ => bad_request(&format!("{NOT_A_REVIEW}: {error}")),
    }
}

/// Where and why the object does not decode as a Pod, as a path from the request (`request.object.spec...`).
/// Only run on the error path: the first decode does not track paths.
fn object_error(object: &RawValue) -> String {
    let mut deserializer = serde_json::Deserializer::from_str(object.get());
    match serde_path_to_error::deserialize::<_, PodFacts>(&mut deserializer) {
        Ok(_) => "the object is not a Pod".to_owned(),
        Err(e) => format!("request.object.{}: {}", e.path(), e.inner()),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use serde_json::{json, Value};

    fn review_in(api_version: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": api_version, "kind": "AdmissionReview",
            "request": {
                "uid": "uid-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE", "userInfo": {}, "object": object, "oldObject": null,
            }
        }))
        .unwrap()
    }

    fn review(object: Value) -> Vec<u8> {
        review_in("admission.k8s.io/v1", object)
    }

    fn body(reply: &Reply) -> Value {
        serde_json::from_slice(&reply.body).unwrap()
    }

    fn gvisor_pod() -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"runtimeClassName": "gvisor",
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "containers": [{"name": "a", "volumeMounts": [{"name": "scratch", "mountPath": "/s"}]}]}})
    }

    fn answer(body: &[u8]) -> Reply {
        let settings = MutationSettings::default();
        answer_review(body, &settings, &GvisorScope::from_settings(&settings), false)
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

    #[test]
    fn v1beta1_reviews_get_v1beta1_replies_in_every_case() {
        let undecodable_object = json!({"metadata": {"name": "p"}, "spec": {"containers": 7}});
        let mut undecodable_envelope = review_in("admission.k8s.io/v1beta1", gvisor_pod());
        let text = String::from_utf8(undecodable_envelope).unwrap();
        undecodable_envelope = text.replacen("\"operation\":\"CREATE\"", "\"operation\":7", 1).into_bytes();
        let skipped = {
            let mut v: Value = serde_json::from_slice(&review_in("admission.k8s.io/v1beta1", gvisor_pod())).unwrap();
            v["request"]["operation"] = json!("DELETE");
            serde_json::to_vec(&v).unwrap()
        };
        let cases = [
            (review_in("admission.k8s.io/v1beta1", gvisor_pod()), Outcome::patched, true),
            (review_in("admission.k8s.io/v1beta1", json!({"spec": {"containers": []}})), Outcome::skipped, true),
            (review_in("admission.k8s.io/v1beta1", undecodable_object), Outcome::decode_error, true),
            (undecodable_envelope, Outcome::decode_error, true),
            (skipped, Outcome::skipped, true),
        ];
        for (request, outcome, allowed) in cases {
            let reply = answer(&request);
            assert_eq!((reply.status, reply.outcome), (StatusCode::OK, outcome), "{:?}", body(&reply));
            let out = body(&reply);
            assert_eq!(out["apiVersion"], "admission.k8s.io/v1beta1", "{out}");
            assert_eq!(out["kind"], "AdmissionReview");
            assert_eq!(out["response"]["uid"], "uid-1");
            assert_eq!(out["response"]["allowed"], allowed);
        }
        let v1 = body(&answer(&review(gvisor_pod())));
        assert_eq!(v1["apiVersion"], "admission.k8s.io/v1");
    }

    #[test]
    fn other_api_versions_get_http_400() {
        for version in ["admission.k8s.io/v2", "v1", "", "admission.k8s.io/v1beta2"] {
            for object in [gvisor_pod(), json!({"spec": {"containers": 7}})] {
                let reply = answer(&review_in(version, object));
                assert_eq!((reply.status, reply.outcome), (StatusCode::BAD_REQUEST, Outcome::bad_request), "{version}");
                let message = body(&reply)["error"].as_str().unwrap().to_owned();
                assert!(
                    message.contains("nor a v1beta1 one") && message.contains(&format!("{version:?}")),
                    "{message}"
                );
            }
        }
        let mut no_version: Value = serde_json::from_slice(&review(gvisor_pod())).unwrap();
        no_version.as_object_mut().unwrap().remove("apiVersion");
        let reply = answer(&serde_json::to_vec(&no_version).unwrap());
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn an_undecodable_object_is_named_by_its_path() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"runtimeClassName": "gvisor", "containers": [{"name": "a", "volumeMounts": 7}]}});
        let reply = answer(&review(pod));
        assert_eq!(reply.outcome, Outcome::decode_error);
        let message = body(&reply)["response"]["status"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("request.object.spec.containers[0].volumeMounts: invalid type"), "{message}");
    }

    #[test]
    fn the_object_decoded_in_place_or_later_gives_the_same_reply() {
        let bodies: [&[u8]; 4] = [
            include_bytes!("../../examples/admission-review.json"),
            include_bytes!("../../benches/bodies/small.json"),
            include_bytes!("../../benches/bodies/medium.json"),
            include_bytes!("../../benches/bodies/large.json"),
        ];
        for body in bodies {
            // The API server writes kind and operation before the object (decoded in place); a request with the
            // object first takes the raw path.
            let mut review: Value = serde_json::from_slice(body).unwrap();
            let request = review["request"].as_object_mut().unwrap();
            let object = request.shift_remove("object").unwrap();
            let mut reordered = serde_json::Map::new();
            reordered.insert("object".to_owned(), object);
            reordered.extend(std::mem::take(request));
            review["request"] = Value::Object(reordered);
            let in_place = answer(body);
            let later = answer(&serde_json::to_vec(&review).unwrap());
            assert_eq!(in_place.outcome, Outcome::patched);
            assert_eq!((in_place.outcome, &in_place.body), (later.outcome, &later.body));
        }
    }

    /// The facts borrow their text from the body; a string with JSON escapes cannot be borrowed and is decoded
    /// into a copy. Either way the answer must be the one for the same pod written without escapes.
    #[test]
    fn escaped_names_and_annotations_in_the_object_answer_as_unescaped_ones() {
        let plain = json!({"metadata": {"name": "p", "annotations": {
                "note/a\"b": "x\ny", "dev.gvisor.spec.mount.cache.type": "tmpfs", "dev.gvisor.spec.mount.gone.share": "pod"}},
            "spec": {"runtimeClassName": "gvisor",
            "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "cache", "emptyDir": {"medium": "Memory"}}],
            "containers": [
                {"name": "a", "volumeMounts": [{"name": "scratch", "mountPath": "/s"}, {"name": "cache", "mountPath": "/c"}]},
                {"name": "b", "volumeMounts": [{"name": "scratch", "mountPath": "/s", "subPath": ""}]}]}});
        let plain_body = String::from_utf8(review(plain)).unwrap();
        // The same JSON value, with \u escapes in every kind of string the facts keep.
        let escaped_body = plain_body
            .replacen("\"runtimeClassName\":\"gvisor\"", "\"runtimeClassName\":\"g\\u0076isor\"", 1)
            .replacen("\"name\":\"scratch\"", "\"name\":\"scr\\u0061tch\"", 1)
            .replacen("\"name\":\"cache\",\"mountPath\"", "\"name\":\"\\u0063ache\",\"mountPath\"", 1)
            .replacen("\"name\":\"b\"", "\"name\":\"\\u0062\"", 1)
            .replacen("\"medium\":\"Memory\"", "\"medium\":\"Mem\\u006fry\"", 1)
            .replacen("mount.cache.type\":\"tmpfs\"", "mount.c\\u0061che.type\":\"tmp\\u0066s\"", 1)
            .replacen("mount.gone.share", "mount.g\\u006fne.share", 1);
        assert_eq!(escaped_body.matches("\\u00").count(), 8, "{escaped_body}");
        let as_value = |b: &str| serde_json::from_str::<Value>(b).unwrap();
        assert_eq!(as_value(&escaped_body), as_value(&plain_body), "the escapes spell the same review");
        let (plain_reply, escaped_reply) = (answer(plain_body.as_bytes()), answer(escaped_body.as_bytes()));
        assert_eq!(plain_reply.outcome, Outcome::patched);
        assert_eq!((escaped_reply.outcome, &escaped_reply.body), (plain_reply.outcome, &plain_reply.body));
        let out = body(&plain_reply);
        let warnings = out["response"]["warnings"].to_string();
        assert!(warnings.contains("gone") && !warnings.contains("scratch"), "{warnings}");
        assert_eq!(out["response"]["auditAnnotations"]["hints"], "cache=tmpfs/container,scratch=bind/pod");

        // The object as it stands in each body: escaped text is copied, the rest borrowed.
        let object = |b: &str| -> String {
            let start = b.find("\"object\":").unwrap() + "\"object\":".len();
            b[start..b.find(",\"oldObject\"").unwrap()].to_owned()
        };
        let (plain_object, escaped_object) = (object(&plain_body), object(&escaped_body));
        let decoded: PodFacts<Text<'_>> = serde_json::from_str(&escaped_object).unwrap();
        let (scratch, cache) = (&decoded.spec.volumes[0].name, &decoded.spec.volumes[1].name);
        assert!(matches!((&scratch.0, &cache.0), (Cow::Owned(_), Cow::Borrowed(_))), "{scratch:?} {cache:?}");
        assert_eq!((&**scratch, &**cache), ("scratch", "cache"));
        assert_eq!(decoded.spec.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(decoded.spec.volumes[1].empty_dir.as_ref().unwrap().medium.as_deref(), Some("Memory"));
        assert_eq!(decoded.metadata.annotations.as_ref().unwrap().get("note/a\"b").map(|v| &**v), Some("x\ny"));
        let owned = |o: &str| serde_json::from_str::<PodFacts>(o).unwrap();
        assert_eq!(owned(&escaped_object), owned(&plain_object));
    }

    #[test]
    fn escaped_strings_in_the_envelope_are_read_and_written_back() {
        let text = String::from_utf8(review(gvisor_pod())).unwrap().replacen("\"uid-1\"", "\"uid-\\u0031\\n\"", 1);
        let reply = answer(text.as_bytes());
        assert_eq!(body(&reply)["response"]["uid"], "uid-1\n");
        assert_eq!(reply.uid, "uid-1\n");
    }
}
