//! The plugin's one error type: each variant prints as one line that names the object or file.

use std::path::PathBuf;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig not found: {0} (set --kubeconfig or KUBECONFIG)")]
    NoKubeconfig(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Invalid(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An API error about `what` (for example `MicroVM default/demo`): 404 becomes
    /// [`Error::NotFound`] naming it.
    pub fn api(what: impl Into<String>, source: kube::Error) -> Self {
        let what = what.into();
        match &source {
            kube::Error::Api(status) if status.code == 404 => Error::NotFound(what),
            _ => Error::Api { what, source },
        }
    }

    /// A short label for the kind of failure.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kubeconfig { .. } | Error::NoKubeconfig(_) => "kubeconfig",
            Error::NotFound(_) => "not_found",
            Error::Api { .. } => "api",
            Error::Unreachable(_) => "unreachable",
            Error::Invalid(_) => "invalid",
            Error::Timeout(_) => "timeout",
            Error::Io { .. } => "io",
        }
    }
}
