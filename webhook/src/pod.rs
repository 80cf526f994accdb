//! The part of a Pod the mutation reads, and nothing more.
//!
//! Decoding a whole `k8s_openapi` Pod is most of a webhook's cost (about 0.9 ms for a 100 KB review, against
//! 0.2 ms for these fields; see DESIGN.md's performance notes), so the server decodes this view straight from
//! the request bytes. `From<&Pod>` gives the same view from the typed object; a property test keeps the two
//! paths equal.
//!
//! The facts are generic over the text they hold: `PodFacts` (owned `String`s) for callers that keep them, and
//! `PodFacts<Text<'a>>` for the server, which borrows every name, medium and annotation from the request body
//! (a string with JSON escapes is the only one copied).

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod, Volume, VolumeMount};
use serde::de::Visitor;
use serde::{Deserialize, Deserializer};

/// What the facts' text can be: anything that reads as a `str` and orders as one (map keys).
pub trait FactText: Deref<Target = str> + Borrow<str> + Ord + fmt::Debug {}

impl<T: Deref<Target = str> + Borrow<str> + Ord + fmt::Debug> FactText for T {}

/// A JSON string borrowed from the input when it has no escapes, else decoded into an owned copy.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(TextVisitor(std::marker::PhantomData))
    }
}

impl Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Text<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "S: Deserialize<'de> + Ord + Default"))]
pub struct PodFacts<S = String> {
    #[serde(default, deserialize_with = "present_metadata")]
    pub metadata: PodMetaFacts<S>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub spec: PodSpecFacts<S>,
}

/// The metadata fields the mutation reads (labels, owner references, managed fields... are skipped unread).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "S: Deserialize<'de> + Ord + Default"))]
pub struct PodMetaFacts<S = String> {
    pub name: Option<S>,
    pub generate_name: Option<S>,
    pub namespace: Option<S>,
    /// `None` when the object has no annotations map at all: the patch must then create it.
    pub annotations: Option<BTreeMap<S, S>>,
    /// Whether the object has a `metadata` map at all (the API server always sends one; another client may
    /// not): without it the patch must create `/metadata` itself, or it would not apply.
    #[serde(skip)]
    pub present: bool,
}

/// `metadata` as a map marks it present; `null` is as good as absent (a patch cannot add under it).
fn present_metadata<'de, D, S>(deserializer: D) -> Result<PodMetaFacts<S>, D::Error>
where
    D: Deserializer<'de>,
    S: Deserialize<'de> + Ord + Default,
{
    Ok(Option::<PodMetaFacts<S>>::deserialize(deserializer)?
        .map(|meta| PodMetaFacts { present: true, ..meta })
        .unwrap_or_default())
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "S: Deserialize<'de> + Default"))]
pub struct PodSpecFacts<S = String> {
    pub runtime_class_name: Option<S>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub volumes: Vec<VolumeFacts<S>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub init_containers: Vec<ContainerFacts<S>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub containers: Vec<ContainerFacts<S>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub ephemeral_containers: Vec<ContainerFacts<S>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "S: Deserialize<'de>"))]
pub struct VolumeFacts<S = String> {
    pub name: S,
    /// Present for an emptyDir volume; every other volume source is never hinted.
    pub empty_dir: Option<EmptyDirFacts<S>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "S: Deserialize<'de>"))]
pub struct EmptyDirFacts<S = String> {
    pub medium: Option<S>,
    /// Owned: a YAML manifest may carry a number here, which has no text to borrow.
    #[serde(default, deserialize_with = "quantity_text")]
    pub size_limit: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "S: Deserialize<'de>"))]
pub struct ContainerFacts<S = String> {
    pub name: S,
    #[serde(default, deserialize_with = "null_as_default")]
    pub volume_mounts: Vec<MountFacts<S>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "S: Deserialize<'de>"))]
pub struct MountFacts<S = String> {
    pub name: S,
    pub sub_path: Option<S>,
    pub sub_path_expr: Option<S>,
}

impl<S: FactText> MountFacts<S> {
    /// Kubernetes treats an empty subPath as none.
    pub fn uses_sub_path(&self) -> bool {
        self.sub_path.as_deref().is_some_and(|s| !s.is_empty())
            || self.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty())
    }
}

impl<S: FactText> PodFacts<S> {
    /// Every container of the pod, in the order Kubernetes starts them: init (including restartable sidecars),
    /// regular, ephemeral.
    pub fn all_containers(&self) -> impl Iterator<Item = &ContainerFacts<S>> {
        let s = &self.spec;
        s.init_containers.iter().chain(&s.containers).chain(&s.ephemeral_containers)
    }

    /// `namespace/name` (or `generateName*`) for messages.
    pub fn display_name(&self) -> String {
        let m = &self.metadata;
        let name = match (m.name.as_deref(), m.generate_name.as_deref()) {
            (Some(n), _) if !n.is_empty() => n.to_owned(),
            (_, Some(g)) if !g.is_empty() => format!("{g}*"),
            _ => "<unnamed>".to_owned(),
        };
        match m.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
            _ => name,
        }
    }
}

impl From<&Pod> for PodFacts<String> {
    fn from(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        let containers = |list: Option<&Vec<Container>>| {
            list.into_iter().flatten().map(|c| ContainerFacts::new(&c.name, c.volume_mounts.as_deref())).collect()
        };
        let ephemeral = |list: Option<&Vec<EphemeralContainer>>| {
            list.into_iter().flatten().map(|c| ContainerFacts::new(&c.name, c.volume_mounts.as_deref())).collect()
        };
        PodFacts {
            metadata: PodMetaFacts {
                name: pod.metadata.name.clone(),
                generate_name: pod.metadata.generate_name.clone(),
                namespace: pod.metadata.namespace.clone(),
                annotations: pod.metadata.annotations.clone(),
                // A typed Pod always has its metadata (k8s-openapi fills in a default when it was absent).
                present: true,
            },
            spec: PodSpecFacts {
                runtime_class_name: spec.and_then(|s| s.runtime_class_name.clone()),
                volumes: spec.into_iter().flat_map(|s| &s.volumes).flatten().map(VolumeFacts::from).collect(),
                init_containers: containers(spec.and_then(|s| s.init_containers.as_ref())),
                containers: containers(spec.map(|s| &s.containers)),
                ephemeral_containers: ephemeral(spec.and_then(|s| s.ephemeral_containers.as_ref())),
            },
        }
    }
}

impl ContainerFacts<String> {
    fn new(name: &str, mounts: Option<&[VolumeMount]>) -> Self {
        ContainerFacts {
            name: name.to_owned(),
            volume_mounts: mounts
                .unwrap_or_default()
                .iter()
                .map(|m| MountFacts {
                    name: m.name.clone(),
                    sub_path: m.sub_path.clone(),
                    sub_path_expr: m.sub_path_expr.clone(),
                })
                .collect(),
        }
    }
}

impl From<&Volume> for VolumeFacts<String> {
    fn from(v: &Volume) -> Self {
        VolumeFacts {
            name: v.name.clone(),
            empty_dir: v.empty_dir.as_ref().map(|e| EmptyDirFacts {
                medium: e.medium.clone(),
                size_limit: e.size_limit.as_ref().map(|q| q.0.clone()),
            }),
        }
    }
}

fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A Quantity is a string on the wire, but a YAML manifest may carry a bare number (`sizeLimit: 1000`).
fn quantity_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Str(String),
        Int(i64),
        Float(f64),
    }
    Ok(Option::<Text>::deserialize(d)?.map(|t| match t {
        Text::Str(s) => s,
        Text::Int(i) => i.to_string(),
        Text::Float(f) => f.to_string(),
    }))
}
