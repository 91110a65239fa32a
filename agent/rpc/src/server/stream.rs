//! One QUIC bi-stream on the server: read frames, run the calls they start, write the replies.
//!
//! Reading and writing run side by side in the stream's task: calls queue their reply frames
//! on a bounded channel that the writer drains, so a slow reader on the other side slows the
//! calls on this stream and nothing else.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{SinkExt as _, StreamExt as _};
use iroh::EndpointId;
use iroh::endpoint::{RecvStream, SendStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::call::{self, CallFuture};
use super::{STOP_MALFORMED, STOP_SHUTDOWN, ServerStats, Shared};
use crate::codec::{CodecError, FrameCodec};
use crate::dispatch::{CallContext, Dispatch};
use crate::error::{Code, RpcError};
use crate::frame::{Frame, FrameError, FrameType, Header, Priority};

pub(super) async fn serve<D: Dispatch>(
    shared: Arc<Shared<D>>,
    peer: EndpointId,
    calls: Arc<Semaphore>,
    send: SendStream,
    recv: RecvStream,
) {
    let (replies, queue) = mpsc::channel(shared.config.reply_buffer.max(1));
    // Set when the writer fails (the peer stopped reading or left): nothing more to do here.
    let writer_gone = CancellationToken::new();
    let reader = Reader {
        shared: &shared,
        peer,
        calls,
        zero_rtt: recv.is_0rtt(),
        replies,
    };
    tokio::join!(
        reader.run(recv, &writer_gone),
        write(&shared, send, queue, &writer_gone),
    );
}

struct Reader<'a, D> {
    shared: &'a Shared<D>,
    peer: EndpointId,
    calls: Arc<Semaphore>,
    zero_rtt: bool,
    replies: mpsc::Sender<Frame>,
}

/// What a frame read from the stream leads to.
enum Next<'a> {
    /// A call, running until it has answered.
    Call(CallFuture<'a>),
    /// A reply of one frame, sent at once (a heartbeat echo, a refused call).
    Reply(Frame),
    /// A reply of one frame, after which the stream is read no more (a malformed frame).
    Last(Frame),
}

impl<D: Dispatch> Reader<'_, D> {
    /// Reads frames and drives the calls they start. One-frame replies go straight to the reply
    /// queue; when it is full, reading pauses until the writer makes room, so a peer that sends
    /// without reading cannot make the server hold more than the queue and one frame.
    async fn run(self, recv: RecvStream, writer_gone: &CancellationToken) {
        let shared = self.shared;
        let mut frames = FramedRead::new(recv, FrameCodec::new(shared.config.max_payload));
        let mut running: FuturesUnordered<CallFuture<'_>> = FuturesUnordered::new();
        let mut waiting: Option<Frame> = None;
        let mut reading = true;
        while reading || waiting.is_some() || !running.is_empty() {
            tokio::select! {
                () = writer_gone.cancelled() => return,
                () = shared.abort.cancelled() => return,
                () = shared.shutdown.cancelled(), if reading => {
                    reading = false;
                    // Already stopped or reset: nothing left to refuse.
                    let _ = frames.get_mut().stop(STOP_SHUTDOWN);
                }
                Some(()) = running.next(), if !running.is_empty() => {}
                room = self.replies.reserve(), if waiting.is_some() => {
                    let (Ok(room), Some(frame)) = (room, waiting.take()) else { return };
                    room.send(frame);
                }
                item = frames.next(), if reading && waiting.is_none() => {
                    let next = match item {
                        Some(Ok(frame)) => self.start(frame),
                        Some(Err(CodecError::Frame { error, request_id })) => {
                            self.malformed(&error, request_id)
                        }
                        // Reset by the peer, the connection is gone, or the stream ended
                        // inside a frame.
                        Some(Err(CodecError::Io(_))) | None => {
                            reading = false;
                            continue;
                        }
                    };
                    let reply = match next {
                        Some(Next::Call(call)) => {
                            running.push(call);
                            continue;
                        }
                        Some(Next::Reply(frame)) => Some(frame),
                        Some(Next::Last(frame)) => {
                            reading = false;
                            let _ = frames.get_mut().stop(STOP_MALFORMED);
                            Some(frame)
                        }
                        None => {
                            reading = false;
                            let _ = frames.get_mut().stop(STOP_MALFORMED);
                            None
                        }
                    };
                    match reply.map(|frame| self.replies.try_send(frame)) {
                        Some(Err(mpsc::error::TrySendError::Full(frame))) => waiting = Some(frame),
                        Some(Err(mpsc::error::TrySendError::Closed(_))) => return,
                        Some(Ok(())) | None => {}
                    }
                }
            }
        }
    }

    /// The answer to a malformed frame: an Error frame if its request is known.
    fn malformed(&self, error: &FrameError, request_id: Option<u64>) -> Option<Next<'_>> {
        ServerStats::bump(&self.shared.stats.malformed);
        tracing::debug!(peer = %self.peer, ?request_id, "malformed frame: {error}");
        let code = match error {
            FrameError::TooLarge { .. } => Code::ResourceExhausted,
            _ => Code::InvalidArgument,
        };
        let error = RpcError::new(code, error.to_string());
        request_id.map(|id| Next::Last(error_frame(id, &error)))
    }

    /// What a well-formed frame from a client leads to.
    fn start(&self, frame: Frame) -> Option<Next<'_>> {
        let Frame { header, payload } = frame;
        let shared = self.shared;
        Some(match header.frame_type {
            FrameType::Heartbeat => {
                ServerStats::bump(&shared.stats.heartbeats);
                Next::Reply(Frame::new(header.reply(FrameType::Heartbeat), payload))
            }
            FrameType::Request => self.request(header, payload),
            other => {
                ServerStats::bump(&shared.stats.malformed);
                let error = RpcError::new(
                    Code::InvalidArgument,
                    format!("type: a client sends Request and Heartbeat frames, not {other:?}"),
                );
                Next::Last(error_frame(header.request_id, &error))
            }
        })
    }

    fn request(&self, header: Header, payload: Bytes) -> Next<'_> {
        let shared = self.shared;
        let (service, method) = (header.service, header.method);
        let refuse = |error: RpcError| {
            Next::Reply(Frame::new(header.reply(FrameType::Error), error.encode()))
        };
        if self.zero_rtt && shared.dispatch.changes_state(service, method) {
            ServerStats::bump(&shared.stats.refused_0rtt);
            return refuse(RpcError::new(
                Code::FailedPrecondition,
                "a state-changing call is not accepted in 0-RTT data: retry once the handshake is complete",
            ));
        }
        let Ok(permit) = Arc::clone(&self.calls).try_acquire_owned() else {
            ServerStats::bump(&shared.stats.overloaded);
            return refuse(RpcError::new(
                Code::ResourceExhausted,
                format!(
                    "{} calls already running on this connection",
                    shared.config.max_calls
                ),
            ));
        };
        ServerStats::bump(&shared.stats.calls);
        let context = CallContext {
            peer: self.peer,
            deadline: header.deadline().map(|after| Instant::now() + after),
            zero_rtt: self.zero_rtt,
            priority: header.priority,
        };
        Next::Call(Box::pin(call::run(
            shared,
            header,
            payload,
            context,
            &self.replies,
            permit,
        )))
    }
}

/// Drains reply frames into the stream, then finishes it and waits until the peer has them.
async fn write<D>(
    shared: &Shared<D>,
    send: SendStream,
    mut queue: mpsc::Receiver<Frame>,
    writer_gone: &CancellationToken,
) {
    let mut out = FramedWrite::new(send, FrameCodec::new(shared.config.max_payload));
    let mut priority = None;
    while let Some(frame) = queue.recv().await {
        if shared.config.priorities {
            // A stream carries one priority: the most urgent of the calls it answers.
            let wanted = frame.header.priority.quic_priority();
            if priority.is_none_or(|current| wanted > current) {
                priority = Some(wanted);
                let _ = out.get_ref().set_priority(wanted);
            }
        }
        if let Err(error) = out.send(frame).await {
            tracing::debug!("reply not written: {error}");
            writer_gone.cancel();
            return;
        }
    }
    let mut send = out.into_inner();
    if send.finish().is_ok() {
        // QUIC delivers it from here; a graceful shutdown waits for the acknowledgement.
        shared.unacked.keep(send);
    }
}

pub(super) fn error_frame(request_id: u64, error: &RpcError) -> Frame {
    let header = Header {
        frame_type: FrameType::Error,
        priority: Priority::Normal,
        service: 0,
        method: 0,
        request_id,
        deadline_ms: 0,
    };
    Frame::new(header, error.encode())
}
