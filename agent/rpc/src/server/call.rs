//! One call on the server: dispatch it, turn its reply into frames, enforce its deadline.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::{ServerStats, Shared};
use crate::dispatch::{CallContext, Dispatch, Reply};
use crate::error::{Code, RpcError};
use crate::frame::{Frame, FrameType, Header};

/// Longest error message sent; gRPC's trailers hold about as much.
const MAX_ERROR_MESSAGE: usize = 8 * 1024;

/// A running call on one stream.
pub(super) type CallFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Queues a frame for the stream's writer. A closed queue means the writer is gone: the reply
/// has nowhere to go, and the call ends with it.
pub(super) async fn send_reply(replies: &mpsc::Sender<Frame>, frame: Frame) -> bool {
    replies.send(frame).await.is_ok()
}

/// Runs the call to its last frame, or to its deadline: then the call is dropped (cancelling
/// whatever it awaited) and the caller gets `DEADLINE_EXCEEDED`.
pub(super) async fn run<D: Dispatch>(
    shared: &Shared<D>,
    header: Header,
    payload: Bytes,
    context: CallContext,
    replies: &mpsc::Sender<Frame>,
    _permit: OwnedSemaphorePermit,
) {
    let replier = Replier {
        header,
        max_payload: shared.config.max_payload,
        replies,
    };
    let work = async {
        let reply = shared
            .dispatch
            .call(header.service, header.method, payload, context)
            .await;
        replier.reply(reply).await;
    };
    let Some(deadline) = context.deadline else {
        work.await;
        return;
    };
    if tokio::time::timeout_at(deadline, work).await.is_err() {
        ServerStats::bump(&shared.stats.deadline_exceeded);
        let after = header.deadline_ms;
        replier
            .error(RpcError::new(
                Code::DeadlineExceeded,
                format!("no reply within the call's deadline of {after} ms"),
            ))
            .await;
    }
}

struct Replier<'a> {
    header: Header,
    max_payload: u32,
    replies: &'a mpsc::Sender<Frame>,
}

impl Replier<'_> {
    async fn reply(&self, reply: Reply) {
        match reply {
            Reply::Unary(Ok(message)) => {
                self.send(FrameType::Response, message).await;
            }
            Reply::Unary(Err(error)) => self.error(error).await,
            Reply::Stream(mut messages) => {
                while let Some(item) = messages.next().await {
                    let sent = match item {
                        Ok(message) => self.send(FrameType::StreamData, message).await,
                        Err(error) => {
                            self.error(error).await;
                            return;
                        }
                    };
                    if !sent {
                        return;
                    }
                }
                self.send(FrameType::StreamEnd, Bytes::new()).await;
            }
        }
    }

    async fn error(&self, mut error: RpcError) {
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
        let frame = Frame::new(self.header.reply(FrameType::Error), error.encode());
        send_reply(self.replies, frame).await;
    }

    /// Sends one reply frame. A message above the maximum payload fails the call instead: the
    /// peer would refuse the frame, and with it the whole stream.
    async fn send(&self, frame_type: FrameType, message: Bytes) -> bool {
        if message.len() > self.max_payload as usize {
            let error = RpcError::new(
                Code::ResourceExhausted,
                format!(
                    "reply of {} bytes exceeds the maximum payload of {} bytes",
                    message.len(),
                    self.max_payload
                ),
            );
            self.error(error).await;
            return false;
        }
        send_reply(
            self.replies,
            Frame::new(self.header.reply(frame_type), message),
        )
        .await
    }
}
