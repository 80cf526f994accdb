use std::path::PathBuf;

use crate::config::ConfigError;
use crate::install::InstallError;

/// Every failure of the hook crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed spec: {0}")]
    Spec(String),
    #[error("--strict: {0}")]
    Strict(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot run {path}: {source}")]
    Exec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Install(#[from] InstallError),
}
