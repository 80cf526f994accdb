use std::path::{Path, PathBuf};

/// Every failure of the webhook crate. Input errors (`is_bad_input`) map to exit code 2 on the command line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}{location}: {message}")]
    Syntax { origin: String, location: String, message: String },
    #[error("{origin}: document {document}{name}: {message}")]
    Manifest { origin: String, document: usize, name: String, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("server: {0}")]
    Serve(std::io::Error),
    #[error("{0}")]
    Certs(String),
    #[error("settings: {0}")]
    Settings(#[from] crate::settings::SettingsError),
}

impl Error {
    pub(crate) fn yaml(path: &Path, e: &serde_yaml_ng::Error) -> Self {
        Error::syntax(&path.display().to_string(), e.location().map(|l| (l.line(), l.column())), e)
    }

    pub(crate) fn syntax(origin: &str, line_col: Option<(usize, usize)>, message: impl ToString) -> Self {
        let location = line_col.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default();
        Error::Syntax { origin: origin.to_owned(), location, message: message.to_string() }
    }

    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::Read { .. } | Error::Syntax { .. } | Error::Manifest { .. } | Error::Settings(_))
    }
}
