//! Which runtime class names mean gVisor: the configured names, plus every RuntimeClass whose handler is a
//! configured handler, kept current by a kube reflector when the server has cluster credentials.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, Config};
use tokio::sync::watch;

use super::metrics::Metrics;
use crate::settings::{GvisorScope, MutationSettings};

/// How the server reaches the API server, if at all.
#[derive(Debug, Clone)]
pub enum ClusterAccess {
    /// In-cluster service account, or `KUBECONFIG` / `~/.kube/config`.
    Infer,
    Kubeconfig(PathBuf),
    /// Use the configured runtime class names only.
    Disabled,
}

/// The scope for a set of RuntimeClasses: configured names plus classes with a configured handler.
pub fn scope_for<'a>(settings: &MutationSettings, classes: impl IntoIterator<Item = &'a RuntimeClass>) -> GvisorScope {
    let by_handler = classes
        .into_iter()
        .filter(|rc| settings.runtime_handlers.contains(&rc.handler))
        .filter_map(|rc| rc.metadata.name.clone());
    GvisorScope::new(settings.runtime_class_names.iter().cloned().chain(by_handler))
}

async fn client(access: &ClusterAccess) -> Result<Option<Client>, String> {
    let config = match access {
        ClusterAccess::Disabled => return Ok(None),
        ClusterAccess::Infer => Config::infer().await.map_err(|e| e.to_string())?,
        ClusterAccess::Kubeconfig(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
            Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.map_err(|e| e.to_string())?
        }
    };
    Client::try_from(config).map(Some).map_err(|e| e.to_string())
}

/// Keeps `scope` current from a RuntimeClass watch until `stop`. Without credentials it says so and leaves the
/// scope at the configured names.
pub async fn watch_runtime_classes(
    access: ClusterAccess,
    settings: MutationSettings,
    scope: Arc<ArcSwap<GvisorScope>>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let names: Vec<&String> = settings.runtime_class_names.iter().collect();
    let client = match client(&access).await {
        Ok(Some(client)) => client,
        Ok(None) => {
            tracing::info!(runtime_classes = ?names, "RuntimeClass watch disabled; gVisor pods are recognised by runtimeClassName only");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, runtime_classes = ?names,
                "no Kubernetes credentials; gVisor pods are recognised by runtimeClassName only");
            return;
        }
    };
    let (reader, writer) = reflector::store();
    let stream =
        reflector(writer, watcher(Api::<RuntimeClass>::all(client), watcher::Config::default()).default_backoff());
    futures::pin_mut!(stream);
    tracing::info!(handlers = ?settings.runtime_handlers, "watching RuntimeClasses");
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = stop.changed() => return,
        };
        match event {
            None => return,
            Some(Err(e)) => tracing::warn!(error = %e, "RuntimeClass watch error; retrying"),
            Some(Ok(_)) => {
                let classes = reader.state();
                let next = scope_for(&settings, classes.iter().map(|rc| rc.as_ref()));
                if **scope.load() != next {
                    tracing::info!(runtime_classes = ?next.runtime_classes(), "gVisor runtime classes changed");
                    metrics.gvisor_runtime_classes.set(next.runtime_classes().len() as i64);
                    scope.store(Arc::new(next));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn class(name: &str, handler: &str) -> RuntimeClass {
        RuntimeClass {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            handler: handler.into(),
            ..Default::default()
        }
    }

    #[test]
    fn classes_with_a_configured_handler_join_the_scope() {
        let settings = MutationSettings::default();
        let classes = [class("sandboxed", "runsc"), class("kata", "kata-qemu"), class("gvisor-debug", "runsc")];
        let scope = scope_for(&settings, &classes);
        assert!(scope.contains(Some("gvisor")), "configured names stay");
        assert!(scope.contains(Some("sandboxed")) && scope.contains(Some("gvisor-debug")));
        assert!(!scope.contains(Some("kata")));
    }
}
