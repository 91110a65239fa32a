//! One call on the server: dispatch it, turn its reply into frames, enforce its deadline.

use std::future::Future;

use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::{ServerStats, Shared};
use crate::dispatch::{CallContext, Dispatch, Reply};
use crate::error::{Code, RpcError};
use crate::frame::{Frame, FrameType, Header};

/// Longest error message sent; gRPC's trailers hold about as much.
const MAX_ERROR_MESSAGE: usize = 8 * 1024;

/// A request let in: it runs once a stream's task has a place for it.
pub(super) struct Admitted {
    pub(super) header: Header,
    pub(super) payload: Bytes,
    pub(super) context: CallContext,
    /// Its place among the connection's running calls, held until it ends.
    pub(super) permit: OwnedSemaphorePermit,
}

/// Where a call's reply frames go.
pub(super) trait ReplySink: Send {
    /// Sends one frame; `false` when it cannot go anywhere (the writer or the peer is gone),
    /// which ends the call.
    fn send(&mut self, frame: Frame) -> impl Future<Output = bool> + Send;
}

/// The queue of a stream whose calls run side by side: its writer drains it. A closed queue
/// means the writer is gone.
impl ReplySink for &mpsc::Sender<Frame> {
    async fn send(&mut self, frame: Frame) -> bool {
        mpsc::Sender::send(self, frame).await.is_ok()
    }
}

/// Runs the call to its last frame, or to its deadline: then the call is dropped (cancelling
/// whatever it awaited) and the caller gets `DEADLINE_EXCEEDED`.
pub(super) async fn run<D: Dispatch>(shared: &Shared<D>, call: Admitted, sink: impl ReplySink) {
    let Admitted {
        header,
        payload,
        context,
        permit: _permit,
    } = call;
    let mut replier = Replier {
        header,
        max_payload: shared.config.max_payload,
        sink,
    };
    // The call is built in each branch rather than bound once: a future moved into an await
    // keeps its first place too, and this one lives in every stream's task.
    let Some(deadline) = context.deadline else {
        replier.answer(shared, payload, context).await;
        return;
    };
    let answered = tokio::time::timeout_at(deadline, replier.answer(shared, payload, context));
    if answered.await.is_err() {
        ServerStats::bump(&shared.stats.deadline_exceeded);
        let after = header.deadline_ms;
        let error = RpcError::new(
            Code::DeadlineExceeded,
            format!("no reply within the call's deadline of {after} ms"),
        );
        let frame = replier.error_frame(error);
        replier.sink.send(frame).await;
    }
}

struct Replier<S> {
    header: Header,
    max_payload: u32,
    sink: S,
}

impl<S: ReplySink> Replier<S> {
    async fn answer<D: Dispatch>(
        &mut self,
        shared: &Shared<D>,
        payload: Bytes,
        context: CallContext,
    ) {
        let (service, method) = (self.header.service, self.header.method);
        let reply = shared
            .dispatch
            .call(service, method, payload, context)
            .await;
        match reply {
            Reply::Unary(result) => {
                let frame = self.frame(FrameType::Response, result);
                self.sink.send(frame).await;
            }
            Reply::Stream(mut messages) => {
                while let Some(item) = messages.next().await {
                    let frame = self.frame(FrameType::StreamData, item);
                    let failed = frame.header.frame_type == FrameType::Error;
                    if !self.sink.send(frame).await || failed {
                        return;
                    }
                }
                let end = Frame::new(self.header.reply(FrameType::StreamEnd), Bytes::new());
                self.sink.send(end).await;
            }
        }
    }

    /// The frame of one message, or of its error: an Error frame for an error, and for a
    /// message above the maximum payload (the peer would refuse the frame, and with it the
    /// whole stream).
    fn frame(&self, frame_type: FrameType, item: Result<Bytes, RpcError>) -> Frame {
        match item {
            Ok(message) if message.len() <= self.max_payload as usize => {
                Frame::new(self.header.reply(frame_type), message)
            }
            Ok(message) => self.error_frame(RpcError::new(
                Code::ResourceExhausted,
                format!(
                    "reply of {} bytes exceeds the maximum payload of {} bytes",
                    message.len(),
                    self.max_payload
                ),
            )),
            Err(error) => self.error_frame(error),
        }
    }

    fn error_frame(&self, mut error: RpcError) -> Frame {
        // A message too long for a frame would cost the caller its answer: cut it instead.
        let room = (self.max_payload as usize)
            .saturating_sub(16)
            .min(MAX_ERROR_MESSAGE);
        if error.message.len() > room {
            let mut end = room;
            while !error.message.is_char_boundary(end) {
                end -= 1;
            }
            error.message.truncate(end);
        }
        Frame::new(self.header.reply(FrameType::Error), error.encode())
    }
}
