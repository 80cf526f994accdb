//! `preview`: the mutation applied offline to manifests, so an operator can see what the webhook would do to a
//! Pod, a workload's pod template, or a pod template nested in a custom resource, before installing anything.
//! Manifests are read as kubectl reads them (see [`yaml`]), and the API server's defaulting that changes the
//! answer is applied first: a volume with no source is an emptyDir.

pub mod yaml;

use json_patch::jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    batch::v1::{CronJob, Job},
    core::v1::{Pod, ReplicationController},
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::mutation::{mutate, prefixed_patch_json};
use crate::pod::{EmptyDirFacts, PodFacts};
use crate::settings::{GvisorScope, MutationSettings};
use crate::Error;

/// One input document after the mutation.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewedDocument {
    /// 1-based position in the input stream.
    pub index: usize,
    pub kind: String,
    pub name: Option<String>,
    pub generate_name: Option<String>,
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

/// Reads a YAML stream (or one JSON document) as kubectl does; syntax errors carry the line.
pub fn parse_documents(text: &str, origin: &str) -> Result<Vec<Value>, Error> {
    yaml::read_documents(text, origin)
}

/// The documents as one YAML stream, quoted for YAML 1.1 readers.
pub fn yaml_stream(previewed: &[PreviewedDocument]) -> Result<String, Error> {
    let mut out = String::new();
    for (i, document) in previewed.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&yaml::write_document(&document.object)?);
    }
    Ok(out)
}

/// The patches as one JSON value: the bare patch for a single document; for several, an array with one entry
/// per document (`document`, `kind`, `name` or `generateName`, `patch`), so that `jq` reads it.
pub fn patch_report(previewed: &[PreviewedDocument]) -> Value {
    if let [one] = previewed {
        return one.patch.clone();
    }
    let entries = previewed.iter().map(|d| {
        let mut entry = json!({"document": d.index, "kind": d.kind});
        match (&d.name, &d.generate_name) {
            (Some(name), _) => entry["name"] = json!(name),
            (None, Some(generate_name)) => entry["generateName"] = json!(generate_name),
            (None, None) => {}
        }
        entry["patch"] = d.patch.clone();
        entry
    });
    Value::Array(entries.collect())
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
            let text = |path: &str| object.pointer(path).and_then(Value::as_str).filter(|s| !s.is_empty());
            let (name, generate_name) =
                (text("/metadata/name").map(str::to_owned), text("/metadata/generateName").map(str::to_owned));
            let mut previewed = PreviewedDocument {
                index: i + 1,
                kind: text("/kind").unwrap_or_default().to_owned(),
                name,
                generate_name,
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

    /// `Kind/name`, `Kind/generateName*`, or `Kind/#<document>` for an object without either.
    fn label(&self, object: &Value) -> String {
        let text = |path: &str| object.pointer(path).and_then(Value::as_str).unwrap_or_default();
        let kind = text("/kind");
        match (text("/metadata/name"), text("/metadata/generateName")) {
            ("", "") => format!("{kind}/#{}", self.document),
            ("", generate_name) => format!("{kind}/{generate_name}*"),
            (name, _) => format!("{kind}/{name}"),
        }
    }

    fn preview_object(&self, out: &mut PreviewedDocument, at: PointerBuf) -> Result<(), Error> {
        let object = out.object.pointer(at.as_str()).expect("callers pass a path that exists");
        let kind = object.pointer("/kind").and_then(Value::as_str).unwrap_or_default().to_owned();
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let label = self.label(object);
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
            return self.preview_nested_templates(out, &at, &label);
        };
        self.check_typed(&kind, object).map_err(|message| self.error(&label, message))?;
        let template_at = at.concat(&PointerBuf::from_tokens(template_path.iter().copied()));
        if out.object.pointer(template_at.as_str()).is_none_or(|t| !t.is_object()) {
            return Err(self.error(&label, format!("no pod template at {template_at}")));
        }
        self.preview_template(out, &template_at, &label)
    }

    /// A kind we do not know: every nested object shaped like a pod template (`spec.containers` a list) is
    /// previewed like a workload's, with a note naming where it is. The in-cluster webhook sees the Pods these
    /// become; the preview shows what they will get.
    fn preview_nested_templates(&self, out: &mut PreviewedDocument, at: &PointerBuf, label: &str) -> Result<(), Error> {
        let object = out.object.pointer(at.as_str()).expect("callers pass a path that exists");
        let mut found = Vec::new();
        find_pod_templates(object, &mut Vec::new(), &mut found);
        if found.is_empty() {
            out.notes.push(format!("{label}: no Pod, workload or nested pod template; unchanged"));
            return Ok(());
        }
        for tokens in found {
            let template_at = at.concat(&PointerBuf::from_tokens(tokens.iter().map(String::as_str)));
            let template = out.object.pointer(template_at.as_str()).expect("found above");
            if let Err(e) = serde_path_to_error::deserialize::<_, PodTemplateSpec>(template) {
                out.notes
                    .push(format!("{label}: {template_at} looks like a pod template but is not one ({e}); unchanged"));
                continue;
            }
            out.notes.push(format!("{label}: previewing the pod template at {template_at}"));
            self.preview_template(out, &template_at, &format!("{label} {template_at}"))?;
        }
        Ok(())
    }

    /// Mutates the pod (template) at `template_at`, after the API server's defaulting.
    fn preview_template(
        &self,
        out: &mut PreviewedDocument,
        template_at: &PointerBuf,
        label: &str,
    ) -> Result<(), Error> {
        let template = out.object.pointer_mut(template_at.as_str()).expect("callers checked the template");
        let mut facts: PodFacts = serde_json::from_value(template.clone()).map_err(|e| self.error(label, e))?;
        for name in default_sourceless_volumes(template, &mut facts) {
            out.notes.push(format!(
                "{label}: volume {name:?} has no source; the API server makes it an emptyDir, and so does the preview"
            ));
        }
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
            ops.push(json!({"op": "add", "path": format!("{template_at}/metadata"), "value": {}}));
        }
        json_patch::patch(template, &mutation.patch.0)
            .map_err(|e| self.error(label, format!("internal error: the patch did not apply: {e}")))?;
        if let Value::Array(patch_ops) = prefixed_patch_json(&mutation.patch, template_at) {
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

/// Paths (as pointer tokens, relative to `value`) of the objects under `value` that look like pod templates: a
/// `spec` whose `containers` is a list. The root itself is not one (its metadata is the custom resource's),
/// and nothing inside a found template is searched again. Depth is bounded by the reader's nesting limit.
fn find_pod_templates(value: &Value, path: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
    let is_template = |v: &Value| v.pointer("/spec/containers").is_some_and(Value::is_array);
    match value {
        Value::Object(map) => {
            if !path.is_empty() && is_template(value) {
                found.push(path.clone());
                return;
            }
            for (key, child) in map {
                path.push(key.clone());
                find_pod_templates(child, path, found);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push(i.to_string());
                find_pod_templates(child, path, found);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The API server's defaulting of a volume without a source (only `name`, or every source null, such as
/// `emptyDir: null`): it becomes `emptyDir: {}`. Applied to the facts the mutation reads, not to the output
/// object, which stays as the author wrote it. Returns the names of the volumes defaulted.
fn default_sourceless_volumes(template: &Value, facts: &mut PodFacts) -> Vec<String> {
    let volumes = template.pointer("/spec/volumes").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut defaulted = Vec::new();
    for (volume, facts) in volumes.iter().zip(facts.spec.volumes.iter_mut()) {
        let Some(fields) = volume.as_object() else { continue };
        let sourceless = fields.iter().all(|(key, value)| key == "name" || value.is_null());
        if sourceless && facts.empty_dir.is_none() {
            facts.empty_dir = Some(EmptyDirFacts::default());
            defaulted.push(facts.name.clone());
        }
    }
    defaulted
}
