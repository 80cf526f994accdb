//! `preview`: the mutation applied offline to manifests, so an operator can see what the webhook would do to a
//! Pod or a workload's pod template before installing anything.

use json_patch::jsonptr::PointerBuf;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    batch::v1::{CronJob, Job},
    core::v1::{Pod, ReplicationController},
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::mutation::{mutate, prefixed_patch_json};
use crate::pod::PodFacts;
use crate::settings::{GvisorScope, MutationSettings};
use crate::Error;

/// One input document after the mutation.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewedDocument {
    /// The document with every pod (template) in it mutated.
    pub object: Value,
    /// The JSON Patch against the input document (paths from its root).
    pub patch: Value,
    /// `Kind/name: message` for every warning the mutation gave.
    pub warnings: Vec<String>,
    /// Why a document was left alone (not a workload, not a gVisor pod).
    pub notes: Vec<String>,
    /// `Kind/name: key=value` for the audit annotations the server would attach.
    pub audit: Vec<String>,
}

/// Where the pod template sits in each kind we mutate.
fn pod_template_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" => {
            &["spec", "template"]
        }
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    })
}

/// Reads a YAML stream (or one JSON document) into documents; syntax errors carry the line.
pub fn parse_documents(text: &str, origin: &str) -> Result<Vec<Value>, Error> {
    if text.trim_start().starts_with('{') {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::syntax(origin, Some((e.line(), e.column())), e))?;
        return Ok(vec![value]);
    }
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(document)
            .map_err(|e| Error::syntax(origin, e.location().map(|l| (l.line(), l.column())), &e))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

pub fn preview_documents(
    documents: Vec<Value>,
    origin: &str,
    settings: &MutationSettings,
    scope: &GvisorScope,
) -> Result<Vec<PreviewedDocument>, Error> {
    documents
        .into_iter()
        .enumerate()
        .map(|(i, object)| {
            let mut previewed = PreviewedDocument {
                object,
                patch: Value::Array(Vec::new()),
                warnings: Vec::new(),
                notes: Vec::new(),
                audit: Vec::new(),
            };
            let ctx = Context { origin, document: i + 1, settings, scope };
            ctx.preview_object(&mut previewed, PointerBuf::new())?;
            Ok(previewed)
        })
        .collect()
}

struct Context<'a> {
    origin: &'a str,
    document: usize,
    settings: &'a MutationSettings,
    scope: &'a GvisorScope,
}

impl Context<'_> {
    fn error(&self, name: &str, message: impl ToString) -> Error {
        let name = if name.is_empty() { String::new() } else { format!(" ({name})") };
        Error::Manifest { origin: self.origin.to_owned(), document: self.document, name, message: message.to_string() }
    }

    fn preview_object(&self, out: &mut PreviewedDocument, at: PointerBuf) -> Result<(), Error> {
        let object = out.object.pointer(at.as_str()).expect("callers pass a path that exists");
        let text = |path: &str| object.pointer(path).and_then(Value::as_str).unwrap_or_default().to_owned();
        let (kind, name) = (text("/kind"), text("/metadata/name"));
        let label = format!("{kind}/{name}");
        if kind.is_empty() {
            return Err(self.error(&name, "the object has no `kind`"));
        }
        if kind == "List" {
            let count = object.get("items").and_then(Value::as_array).map_or(0, Vec::len);
            for i in 0..count {
                self.preview_object(out, at.concat(&PointerBuf::from_tokens(["items", &i.to_string()])))?;
            }
            return Ok(());
        }
        let Some(template_path) = pod_template_path(&kind) else {
            out.notes.push(format!("{label}: not a Pod or a workload with a pod template; unchanged"));
            return Ok(());
        };
        self.check_typed(&kind, object).map_err(|message| self.error(&label, message))?;
        let template_at = at.concat(&PointerBuf::from_tokens(template_path.iter().copied()));
        let template = out
            .object
            .pointer_mut(template_at.as_str())
            .filter(|t| t.is_object())
            .ok_or_else(|| self.error(&label, format!("no pod template at {template_at}")))?;
        let facts: PodFacts = serde_json::from_value(template.clone()).map_err(|e| self.error(&label, e))?;
        let mutation = mutate(&facts, self.settings, self.scope);
        if !mutation.in_scope {
            out.notes.push(format!(
                "{label}: runtimeClassName {:?} is not a gVisor runtime class; unchanged",
                facts.spec.runtime_class_name.as_deref().unwrap_or("")
            ));
            return Ok(());
        }
        out.warnings.extend(mutation.warnings.iter().map(|w| format!("{label}: {w}")));
        out.audit.extend(mutation.audit.iter().map(|(k, v)| format!("{label}: {k}={v}")));
        if mutation.patch.0.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::new();
        let metadata_missing = template.get("metadata").is_none_or(Value::is_null);
        if metadata_missing {
            template["metadata"] = Value::Object(Default::default());
            ops.push(serde_json::json!({"op": "add", "path": format!("{template_at}/metadata"), "value": {}}));
        }
        json_patch::patch(template, &mutation.patch.0)
            .map_err(|e| self.error(&label, format!("internal error: the patch did not apply: {e}")))?;
        if let Value::Array(patch_ops) = prefixed_patch_json(&mutation.patch, &template_at) {
            ops.extend(patch_ops);
        }
        if let Value::Array(all) = &mut out.patch {
            all.extend(ops);
        }
        Ok(())
    }

    /// Decodes the object as its Kubernetes type, so a malformed manifest fails here with the field path
    /// instead of being half-understood.
    fn check_typed(&self, kind: &str, object: &Value) -> Result<(), String> {
        fn check<T: DeserializeOwned>(object: &Value) -> Result<(), String> {
            serde_path_to_error::deserialize::<_, T>(object).map(drop).map_err(|e| {
                let path = e.path().to_string();
                if path == "." {
                    e.inner().to_string()
                } else {
                    format!("{path}: {}", e.inner())
                }
            })
        }
        match kind {
            "Pod" => check::<Pod>(object),
            "Deployment" => check::<Deployment>(object),
            "StatefulSet" => check::<StatefulSet>(object),
            "DaemonSet" => check::<DaemonSet>(object),
            "ReplicaSet" => check::<ReplicaSet>(object),
            "ReplicationController" => check::<ReplicationController>(object),
            "Job" => check::<Job>(object),
            "CronJob" => check::<CronJob>(object),
            _ => Ok(()),
        }
    }
}
