//! The crate's one error type.

use std::path::PathBuf;

use quiver_rpc::{Code, RpcError, ServiceName, TransportMode};

/// `Result` with the agent's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong inside the agent. [`Error::code`] is its status code on either
/// transport; the adapters (`transport::grpc`, `transport::iroh`) only wrap it.
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

    /// The request conflicts with the VM's current state (e.g. put while deleting).
    #[error("conflict: {0}")]
    Conflict(String),

    /// The request does not apply in this agent's state (e.g. `SetTransports` in a Raft
    /// group, whose transports come from the ledger).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),

    /// QEMU (or `qemu-img`) could not start the VM; carries its stderr.
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

    /// The Raft group could not commit the request (no leader, no quorum); retry later.
    #[error("placement unavailable: {0}")]
    Unavailable(String),

    /// The Raft service's own refusal (a malformed message; no Raft group on this agent).
    #[error("raft: {}", .0.message)]
    Raft(RpcError),

    /// A fault injected on purpose (`--inject-errors-per-mille`), to rehearse a rollback.
    #[error(
        "injected fault: this agent fails a share of its {0} calls on purpose (--inject-errors-per-mille)"
    )]
    Injected(&'static str),

    /// The service is not served on the transport the call came in on (its mode changed, or
    /// it was configured so); a dual-transport client then uses the other one.
    #[error("{service} is served over {mode} only on this agent, not over {wire}")]
    NotServed {
        service: ServiceName,
        wire: &'static str,
        mode: TransportMode,
    },
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::NotFound { .. } => "not_found",
            Error::StaleEpoch { .. } => "stale_epoch",
            Error::Conflict(_) => "conflict",
            Error::FailedPrecondition(_) => "failed_precondition",
            Error::Launch { .. } => "launch",
            Error::Qmp(_) => "qmp",
            Error::Io { .. } => "io",
            Error::Json { .. } => "json",
            Error::Config(_) => "config",
            Error::Transport(_) => "transport",
            Error::Pki(_) => "pki",
            Error::ShuttingDown => "shutting_down",
            Error::Unavailable(_) => "unavailable",
            Error::NotServed { .. } => "not_served",
            Error::Raft(_) => "raft",
            Error::Injected(_) => "injected",
        }
    }

    /// The status code callers see, on gRPC and Iroh alike.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound { .. } => Code::NotFound,
            Error::StaleEpoch { .. } | Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Conflict(_) => Code::Aborted,
            Error::ShuttingDown | Error::Unavailable(_) | Error::Injected(_) => Code::Unavailable,
            Error::NotServed { .. } => Code::Unimplemented,
            Error::Raft(e) => e.code,
            _ => Code::Internal,
        }
    }

    /// The error as a call's reply: its code and a message of bounded length. Messages may
    /// quote the request (a path, a uid), and gRPC sends them in an HTTP/2 header, which a
    /// peer refuses above its header-size limit (16 KiB by default, percent-encoded): an
    /// unbounded echo would turn a clean refusal into a reset stream.
    pub fn to_rpc(&self) -> RpcError {
        RpcError::new(self.code(), bounded(self.to_string()))
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

/// Longest error message sent to a caller, in characters.
pub const MAX_MESSAGE_CHARS: usize = 1024;

fn bounded(msg: String) -> String {
    match msg.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}… ({} bytes cut)", &msg[..cut], msg.len() - cut),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_quoting_huge_input_are_cut_on_a_char_boundary() {
        let uid = "é".repeat(100_000);
        let reply = Error::NotFound { uid }.to_rpc();
        assert_eq!(reply.code, Code::NotFound);
        assert!(reply.message.chars().count() < MAX_MESSAGE_CHARS + 40);
        assert!(reply.message.ends_with("bytes cut)"));
        let short = Error::invalid("spec.cpus", "must be at least 1").to_rpc();
        assert_eq!(
            short.message,
            "invalid argument: spec.cpus: must be at least 1"
        );
    }
}
