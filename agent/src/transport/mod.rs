//! The transport adapters: gRPC ([`grpc`], tonic over mutual TLS) and Iroh ([`iroh`],
//! `quiver/rpc/1`). Each decodes a call, checks that its service is served on that transport
//! (`services::ServingModes`), calls the one implementation in `crate::services`, records metrics and encodes
//! the reply or [`crate::Error::to_rpc`]. No behaviour lives here.

pub mod faults;
pub mod grpc;
pub mod iroh;
pub mod timed;

use std::future::Future;

use quiver_rpc::{Method, TraceId};
use tracing::Instrument as _;

/// Serves a call as part of its caller's operation: inside a span holding the `trace_id` (so
/// every log line written for the call carries it) and inside the trace scope (so the calls
/// it makes in turn carry it too). An untraced call runs as it is.
async fn traced<F: Future>(trace_id: Option<TraceId>, method: Method, work: F) -> F::Output {
    let Some(id) = trace_id else {
        return work.await;
    };
    let span = tracing::info_span!("rpc", %method, trace_id = %id);
    quiver_rpc::trace::scope(Some(id), work.instrument(span)).await
}
