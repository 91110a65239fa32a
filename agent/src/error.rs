//! The crate's one error type.

use std::path::PathBuf;

/// `Result` with the agent's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong inside the agent. Transports map it to their own status codes
/// at the edge (see `grpc::status_from`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request field is invalid; the message starts with the field's name.
    #[error("invalid argument: {field}: {reason}")]
    InvalidArgument { field: String, reason: String },

    #[error("vm {uid} not found")]
    NotFound { uid: String },

    /// The request carries an epoch older than one already applied (fencing).
    #[error("stale epoch for vm {uid}: got {got}, applied {applied}")]
    StaleEpoch { uid: String, got: u64, applied: u64 },

    /// QEMU (or `qemu-img`) could not start the VM; carries its stderr.
    /// The request conflicts with the VM's current state (e.g. put while deleting).
    #[error("conflict: {0}")]
    Conflict(String),

    #[error("launch failed: {message}")]
    Launch { message: String },

    #[error("qmp: {0}")]
    Qmp(String),

    #[error("io error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("json error on {path}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("config: {0}")]
    Config(String),

    #[error("transport: {0}")]
    Transport(String),

    /// The TLS material could not be made or read.
    #[error("TLS: {0}")]
    Pki(#[from] quiver_rpc::pki::PkiError),

    #[error("agent is shutting down")]
    ShuttingDown,
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::NotFound { .. } => "not_found",
            Error::StaleEpoch { .. } => "stale_epoch",
            Error::Conflict(_) => "conflict",
            Error::Launch { .. } => "launch",
            Error::Qmp(_) => "qmp",
            Error::Io { .. } => "io",
            Error::Json { .. } => "json",
            Error::Config(_) => "config",
            Error::Transport(_) => "transport",
            Error::Pki(_) => "pki",
            Error::ShuttingDown => "shutting_down",
        }
    }

    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
