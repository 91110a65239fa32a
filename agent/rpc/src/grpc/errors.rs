//! gRPC failures as the one [`ClientError`] of every transport: the only place that reads a
//! `tonic::Status` or a tonic transport error.

use std::error::Error as StdError;

use crate::error::{ClientError, Code};

/// Maps a gRPC status from a call to `endpoint`. A status the client made itself from a
/// local failure (it carries that error as its source: the connection closed or could
/// not be made, the call never got an answer) is [`ClientError::Unreachable`], or
/// [`ClientError::Refused`] when a TLS error is in that chain. Of the statuses the agent
/// sent, `UNAVAILABLE` is `Unreachable`, `UNAUTHENTICATED` and `PERMISSION_DENIED` are
/// `Refused`, and any other code is [`ClientError::Remote`] (a `DEADLINE_EXCEEDED` is
/// [`ClientError::DeadlineExceeded`], as over Iroh).
#[must_use]
pub fn from_status(endpoint: &str, status: &tonic::Status) -> ClientError {
    let peer = endpoint.to_owned();
    if let Some(tls) = tls_failure(status) {
        return ClientError::Refused {
            peer,
            reason: format!("TLS: {tls}"),
        };
    }
    if let Some(local) = std::error::Error::source(status) {
        return ClientError::Unreachable {
            peer,
            source: root_cause(local).into(),
        };
    }
    let message = status.message().to_owned();
    match status.code() {
        tonic::Code::Unavailable => ClientError::Unreachable {
            peer,
            source: message.into(),
        },
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => ClientError::Refused {
            peer,
            reason: message,
        },
        tonic::Code::DeadlineExceeded => ClientError::DeadlineExceeded,
        code => ClientError::Remote {
            code: Code::from_u32(u32::try_from(code as i32).unwrap_or(u32::MAX)),
            message,
        },
    }
}

/// Maps a failure to connect to `endpoint`: a TLS failure is [`ClientError::Refused`],
/// anything else [`ClientError::Unreachable`] with the root cause (`Connection refused (os
/// error 111)`), without the layers above it.
#[must_use]
pub fn from_connect(endpoint: &str, error: &tonic::transport::Error) -> ClientError {
    let peer = endpoint.to_owned();
    match tls_failure(error) {
        Some(tls) => ClientError::Refused {
            peer,
            reason: format!("TLS: {tls}"),
        },
        None => ClientError::Unreachable {
            peer,
            source: root_cause(error).into(),
        },
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
        let unavailable = from_status("http://a:1", &tonic::Status::unavailable("shutting down"));
        assert_eq!(
            unavailable.to_string(),
            "http://a:1 is unreachable: shutting down"
        );
        let invalid = from_status("http://a:1", &tonic::Status::invalid_argument("cpus: 0"));
        assert!(matches!(
            invalid,
            ClientError::Remote { code: Code::InvalidArgument, ref message } if message == "cpus: 0"
        ));
        let denied = from_status("http://a:1", &tonic::Status::permission_denied("no"));
        assert_eq!(denied.metric_label(), "refused");
    }

    #[test]
    fn a_status_made_from_a_local_failure_is_unreachable_with_its_root_cause() {
        let closed = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "connection closed");
        let status = tonic::Status::from_error(Box::new(closed));
        let error = from_status("http://a:1", &status);
        assert!(
            matches!(error, ClientError::Unreachable { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "http://a:1 is unreachable: connection closed"
        );
    }

    #[test]
    fn a_tls_error_under_a_status_is_a_refusal() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        let status = tonic::Status::from_error(Box::new(io));
        assert!(matches!(
            from_status("http://a:1", &status),
            ClientError::Refused { reason, .. } if reason.contains("CertificateRequired")
        ));
    }
}
