//! What a call to an agent can fail with, whatever the transport: the caller decides from
//! the variant (retry elsewhere, report the refusal, fix the credentials) and never parses a
//! transport's error text.

use std::error::Error as StdError;

use crate::pki::PkiError;

/// `Result` with [`ClientError`] as the default error.
pub type ClientResult<T, E = ClientError> = std::result::Result<T, E>;

/// A failed call, as a client sees it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The agent could not be reached: connect failed, the connection dropped, or the agent
    /// answered that it is unavailable. Another agent (or a retry) may succeed. The message
    /// is one line: the endpoint and the root cause.
    #[error("unreachable: {0}")]
    Unreachable(String),

    /// The agent answered and refused the call; `code` is the gRPC code's name
    /// (`InvalidArgument`, `FailedPrecondition`, …).
    #[error("{code}: {message}")]
    Remote { code: String, message: String },

    /// The peer was refused: a TLS failure this client sees (e.g. a server certificate it does
    /// not trust), or an authentication refusal. Retrying with the same credentials fails.
    /// (Under TLS 1.3 an agent refuses a client certificate after the client's half of the
    /// handshake; the client then sees only a closed connection: `Unreachable`.)
    #[error("refused: {0}")]
    Refused(String),

    /// This client's own TLS material could not be read.
    #[error("client credentials: {0}")]
    Credentials(#[source] PkiError),
}

impl ClientError {
    /// A short, stable label for metrics.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            ClientError::Unreachable(_) => "unreachable",
            ClientError::Remote { .. } => "remote",
            ClientError::Refused(_) => "refused",
            ClientError::Credentials(_) => "credentials",
        }
    }

    /// Maps a gRPC status from a call to `endpoint`. A status the client made itself from a
    /// local failure (it carries that error as its source: the connection closed or could
    /// not be made, the call never got an answer) is [`ClientError::Unreachable`], or
    /// [`ClientError::Refused`] when a TLS error is in that chain. Of the statuses the agent
    /// sent, `UNAVAILABLE` is `Unreachable`, `UNAUTHENTICATED` and `PERMISSION_DENIED` are
    /// `Refused`, and any other code is [`ClientError::Remote`].
    #[must_use]
    pub fn from_status(endpoint: &str, status: &tonic::Status) -> Self {
        if let Some(tls) = tls_failure(status) {
            return ClientError::Refused(format!("{endpoint}: TLS: {tls}"));
        }
        if let Some(local) = std::error::Error::source(status) {
            return ClientError::Unreachable(format!("{endpoint}: {}", root_cause(local)));
        }
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::Unavailable => ClientError::Unreachable(format!("{endpoint}: {message}")),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                ClientError::Refused(format!("{endpoint}: {message}"))
            }
            code => ClientError::Remote {
                code: format!("{code:?}"),
                message,
            },
        }
    }

    /// Maps a failure to connect to `endpoint`: a TLS failure is [`ClientError::Refused`],
    /// anything else [`ClientError::Unreachable`]; either says the endpoint and the root
    /// cause in one short line (`https://10.0.0.2:7443: Connection refused (os error 111)`).
    #[must_use]
    pub fn from_connect(endpoint: &str, error: &tonic::transport::Error) -> Self {
        match tls_failure(error) {
            Some(tls) => ClientError::Refused(format!("{endpoint}: TLS: {tls}")),
            None => ClientError::Unreachable(format!("{endpoint}: {}", root_cause(error))),
        }
    }
}

/// The TLS error in `error`'s source chain, if any (rustls errors come wrapped in
/// `io::Error`s by the TLS stream).
fn tls_failure(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls.to_string());
        }
        next = e.source();
    }
    None
}

/// The innermost error's text: the one that says what happened (`Connection refused`),
/// without the layers above it (`transport error`, `client error (Connect)`, …).
fn root_cause(error: &(dyn StdError + 'static)) -> String {
    let mut last = error;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_the_domain_error() {
        let unavailable =
            ClientError::from_status("http://a:1", &tonic::Status::unavailable("shutting down"));
        assert!(
            matches!(unavailable, ClientError::Unreachable(m) if m == "http://a:1: shutting down")
        );
        let invalid =
            ClientError::from_status("http://a:1", &tonic::Status::invalid_argument("cpus: 0"));
        assert!(matches!(
            invalid,
            ClientError::Remote { ref code, ref message }
                if code == "InvalidArgument" && message == "cpus: 0"
        ));
        let denied =
            ClientError::from_status("http://a:1", &tonic::Status::permission_denied("no"));
        assert_eq!(denied.metric_label(), "refused");
    }

    #[test]
    fn a_status_made_from_a_local_failure_is_unreachable_with_its_root_cause() {
        let closed = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "connection closed");
        let status = tonic::Status::from_error(Box::new(closed));
        assert!(matches!(
            ClientError::from_status("http://a:1", &status),
            ClientError::Unreachable(m) if m == "http://a:1: connection closed"
        ));
    }

    #[test]
    fn a_tls_error_under_a_status_is_a_refusal() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        let status = tonic::Status::from_error(Box::new(io));
        assert!(matches!(
            ClientError::from_status("http://a:1", &status),
            ClientError::Refused(m) if m.contains("CertificateRequired")
        ));
    }
}
