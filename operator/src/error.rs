//! The operator's one error type.

/// Everything a controller, the leader elector or the dev cluster can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),

    /// No agent of the cluster could be reached (every endpoint was tried).
    #[error("agent cluster unreachable: {0}")]
    Unreachable(String),

    /// An agent refused a request (bad spec, stale epoch...).
    #[error("agent refused the request: {0}")]
    Agent(#[source] quiver_rpc::ClientError),

    /// `host`'s agent refused a VM itself (a bad spec): final until the spec changes.
    #[error("host {host} refused the VM: {source}")]
    Rejected {
        host: String,
        #[source]
        source: quiver_rpc::ClientError,
    },

    /// The VM is still known to an agent; cleanup waits for it to be gone.
    #[error("vm {uid} is still being removed by its host")]
    StillRemoving { uid: String },

    /// An object lacks a field the API server always sets (name, uid, namespace).
    #[error("object is missing {0}")]
    MissingField(&'static str),

    /// Serializing a patch or manifest failed.
    #[error("serialization: {0}")]
    Serialize(#[source] serde_json::Error),

    /// A local file or process operation failed (dev cluster).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// The cluster CA could not be made, loaded or used to issue a certificate.
    #[error("cluster PKI: {0}")]
    Pki(#[source] quiver_rpc::pki::PkiError),

    /// The Secret holding the cluster CA exists but is not usable (it is never overwritten).
    #[error("cluster CA Secret: {0}")]
    CaSecret(String),

    /// A child process or the demo did not reach the expected state.
    #[error("{0}")]
    Dev(String),
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable label for metrics and logs.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Unreachable(_) => "unreachable",
            Error::Agent(_) => "agent",
            Error::Rejected { .. } => "rejected",
            Error::StillRemoving { .. } => "still_removing",
            Error::MissingField(_) => "missing_field",
            Error::Serialize(_) => "serialize",
            Error::Io { .. } => "io",
            Error::Pki(_) | Error::CaSecret(_) => "pki",
            Error::Dev(_) => "dev",
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

/// An agent that cannot be reached and one whose TLS handshake fails are alike to a
/// controller: neither takes requests, so both are `Unreachable` (the message tells which).
impl From<quiver_rpc::ClientError> for Error {
    fn from(e: quiver_rpc::ClientError) -> Self {
        use quiver_rpc::ClientError;
        match e {
            unreachable @ (ClientError::Unreachable { .. }
            | ClientError::Refused { .. }
            | ClientError::DeadlineExceeded) => Error::Unreachable(unreachable.to_string()),
            ClientError::Credentials(pki) => Error::Pki(pki),
            other => Error::Agent(other),
        }
    }
}
