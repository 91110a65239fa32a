//! The last resort: a handler that panics answers `500` with a Kubernetes `Status` and logs
//! the panic, instead of resetting the client's stream. Request bodies are checked before
//! use, so nothing a client sends should reach this; the tests assert that it never does.

use std::any::Any;

use axum::response::Response;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;

type PanicHandler = fn(Box<dyn Any + Send + 'static>) -> Response;

/// The layer that wraps every request handler.
pub fn catch_panics() -> CatchPanicLayer<PanicHandler> {
    CatchPanicLayer::custom(answer_panic as PanicHandler)
}

// The signature is what `CatchPanicLayer` calls; the panic payload is only read.
#[allow(clippy::needless_pass_by_value)]
fn answer_panic(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    tracing::error!(panic = what, "a request handler panicked; answered 500");
    super::status_response(&ApiError::internal(format!(
        "the server failed to handle the request: {what}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_500_status() {
        let resp = answer_panic(Box::new("boom"));
        assert_eq!(resp.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            resp.headers().get(http::header::CONTENT_TYPE),
            Some(&http::HeaderValue::from_static("application/json"))
        );
    }
}
