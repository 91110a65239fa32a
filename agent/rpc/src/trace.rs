//! The trace id of the operation a task works for, carried across every RPC it makes.
//!
//! The operator starts one per reconcile ([`scope`] with [`TraceId::random`]); every call made
//! inside the scope carries it (gRPC: metadata [`GRPC_HEADER`]; Iroh: the Request frame's trace
//! id), and the agent serves the call inside a span with the same `trace_id` field, and inside
//! the same scope, so the calls it makes in turn (a proposal forwarded to the Raft leader) carry
//! it too. The JSON logs of both show it on every line written within.

use std::future::Future;

pub use quiver_wire::trace::{BadTraceId, TraceId};

/// The gRPC metadata key of the trace id (32 hex digits).
pub const GRPC_HEADER: &str = "quiver-trace-id";

tokio::task_local! {
    static CURRENT: TraceId;
}

/// A new random trace id.
#[must_use]
pub fn random() -> TraceId {
    TraceId(rand::random())
}

/// The trace id of the running task's operation, if it has one.
#[must_use]
pub fn current() -> Option<TraceId> {
    CURRENT.try_with(|id| *id).ok()
}

/// Runs `work` as part of the operation `id` (`None`: as it is).
pub async fn scope<F: Future>(id: Option<TraceId>, work: F) -> F::Output {
    match id {
        Some(id) => CURRENT.scope(id, work).await,
        None => work.await,
    }
}

/// The trace id of a gRPC request's metadata; a malformed one is ignored (a trace id only
/// ties logs together, so a bad one must not fail the call).
#[must_use]
pub fn from_grpc(metadata: &tonic::metadata::MetadataMap) -> Option<TraceId> {
    metadata.get(GRPC_HEADER)?.to_str().ok()?.parse().ok()
}

/// Adds the running task's trace id, if any, to a gRPC request.
pub fn to_grpc<T>(request: &mut tonic::Request<T>) {
    if let Some(id) = current()
        && let Ok(value) = id.to_string().parse()
    {
        request.metadata_mut().insert(GRPC_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scope_sets_the_current_id_for_its_task_and_grpc_metadata_carries_it() {
        assert_eq!(current(), None);
        let id = random();
        let mut request = tonic::Request::new(());
        scope(Some(id), async { to_grpc(&mut request) }).await;
        assert_eq!(from_grpc(request.metadata()), Some(id));
        assert_eq!(current(), None, "only inside the scope");
        let mut untraced = tonic::Request::new(());
        to_grpc(&mut untraced);
        assert_eq!(from_grpc(untraced.metadata()), None);
        untraced
            .metadata_mut()
            .insert(GRPC_HEADER, "not-hex".parse().expect("ascii"));
        assert_eq!(from_grpc(untraced.metadata()), None);
    }
}
