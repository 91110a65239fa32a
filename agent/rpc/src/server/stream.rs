//! One QUIC bi-stream on the server: read frames, run the calls they start, write the replies.
//!
//! Most streams carry one request and end with it. Such a call runs in the stream's task and
//! writes its reply frames itself. A stream that carries more (a batch) runs its calls side by
//! side: they queue their reply frames on a bounded channel that a writer drains, so a slow
//! reader on the other side slows the calls on this stream and nothing else.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use iroh::EndpointId;
use iroh::endpoint::{RecvStream, SendStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::call::{self, Admitted, ReplySink};
use super::{STOP_MALFORMED, STOP_SHUTDOWN, ServerConfig, ServerStats, Shared};
use crate::codec::CodecError;
use crate::dispatch::{CallContext, Dispatch};
use crate::error::{Code, RpcError};
use crate::frame::{Frame, FrameError, FrameType, Header, Priority};
use crate::stream_io::FrameReader;

pub(super) async fn serve<D: Dispatch>(
    shared: Arc<Shared<D>>,
    peer: EndpointId,
    calls: Arc<Semaphore>,
    send: SendStream,
    recv: RecvStream,
) {
    let gate = Gate {
        shared: &shared,
        peer,
        calls,
        zero_rtt: recv.is_0rtt(),
    };
    let mut frames = FrameReader::new(recv, shared.config.max_payload);
    let writer = ReplyWriter::new(&shared.config, send);
    // Biased, the frame first: it has usually arrived with the stream, and then the tokens'
    // futures are never polled (polling one registers it with its token, under a lock that
    // every stream of the server shares).
    let first = tokio::select! {
        biased;
        first = frames.next() => first,
        () = shared.abort.cancelled() => return,
        () = shared.shutdown.cancelled() => {
            frames.stop(STOP_SHUTDOWN);
            writer.finish(&shared);
            return;
        }
    };
    match first {
        Some(Ok(frame)) if frames.ends_here() => one_call(&gate, frame, writer).await,
        // Boxed: the stream's task, allocated for every stream, stays the size of one call.
        first => {
            let batch = Box::pin(batch(&gate, frames, first, writer));
            batch.await;
        }
    }
}

/// A stream of several requests, or of one whose end has not arrived yet.
async fn batch<D: Dispatch>(
    gate: &Gate<'_, D>,
    frames: FrameReader,
    first: Option<Result<Frame, CodecError>>,
    writer: ReplyWriter,
) {
    let (replies, queue) = mpsc::channel(gate.shared.config.reply_buffer.max(1));
    // Set when the writer fails (the peer stopped reading or left): nothing more to do.
    let writer_gone = CancellationToken::new();
    let batch = Batch { gate, replies };
    tokio::join!(
        batch.run(frames, first, &writer_gone),
        write(gate.shared, writer, queue, &writer_gone),
    );
}

/// A stream of one request: the call runs here and writes its own replies.
async fn one_call<D: Dispatch>(gate: &Gate<'_, D>, frame: Frame, mut writer: ReplyWriter) {
    let shared = gate.shared;
    match gate.admit(frame) {
        Next::Call(call) => {
            // Biased, as above: most calls answer in their first poll.
            tokio::select! {
                biased;
                () = call::run(shared, call, &mut writer) => {}
                () = shared.abort.cancelled() => return,
            }
        }
        Next::Reply(frame) | Next::Last(frame) => {
            if !(&mut writer).send(frame).await {
                return;
            }
        }
        // Only a malformed frame stops a stream, and this one was read whole.
        Next::Stop => {}
    }
    writer.finish(shared);
}

/// What decides, for each frame a client sends, whether and how it is served.
struct Gate<'a, D> {
    shared: &'a Shared<D>,
    peer: EndpointId,
    calls: Arc<Semaphore>,
    zero_rtt: bool,
}

/// What a frame read from the stream leads to.
enum Next {
    /// A call to run until it has answered.
    Call(Admitted),
    /// A reply of one frame, sent at once (a heartbeat echo, a refused call).
    Reply(Frame),
    /// A reply of one frame, after which the stream is read no more (a malformed frame).
    Last(Frame),
    /// The stream is read no more, with nothing to answer (a frame too malformed to tell
    /// which request it belongs to).
    Stop,
}

impl<D: Dispatch> Gate<'_, D> {
    /// What a well-formed frame from a client leads to.
    fn admit(&self, frame: Frame) -> Next {
        let Frame { header, payload } = frame;
        let shared = self.shared;
        match header.frame_type {
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
        }
    }

    fn request(&self, header: Header, payload: Bytes) -> Next {
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
        Next::Call(Admitted {
            header,
            payload,
            context,
            permit,
        })
    }

    /// The answer to a malformed frame: an Error frame if its request is known.
    fn malformed(&self, error: &FrameError, request_id: Option<u64>) -> Next {
        ServerStats::bump(&self.shared.stats.malformed);
        tracing::debug!(peer = %self.peer, ?request_id, "malformed frame: {error}");
        let code = match error {
            FrameError::TooLarge { .. } => Code::ResourceExhausted,
            _ => Code::InvalidArgument,
        };
        let error = RpcError::new(code, error.to_string());
        request_id.map_or(Next::Stop, |id| Next::Last(error_frame(id, &error)))
    }
}

/// The calls of a stream that carries several.
struct Batch<'a, 'g, D> {
    gate: &'g Gate<'a, D>,
    replies: mpsc::Sender<Frame>,
}

impl<D: Dispatch> Batch<'_, '_, D> {
    /// Reads frames and drives the calls they start, beginning with `first`, read already.
    /// One-frame replies go straight to the reply queue; when it is full, reading pauses until
    /// the writer makes room, so a peer that sends without reading cannot make the server hold
    /// more than the queue and one frame.
    async fn run(
        self,
        mut frames: FrameReader,
        first: Option<Result<Frame, CodecError>>,
        writer_gone: &CancellationToken,
    ) {
        let shared = self.gate.shared;
        let mut running = FuturesUnordered::new();
        let mut waiting: Option<Frame> = None;
        let mut reading = true;
        let mut read = Some(first);
        // Made once: each `cancelled()` future registers with its token when first polled.
        let (writer_gone, abort, shutdown) = (
            writer_gone.cancelled(),
            shared.abort.cancelled(),
            shared.shutdown.cancelled(),
        );
        tokio::pin!(writer_gone, abort, shutdown);
        while reading || waiting.is_some() || !running.is_empty() || read.is_some() {
            if let Some(item) = read.take() {
                let reply = match self.next(item) {
                    Some(Next::Call(call)) => {
                        running.push(call::run(shared, call, &self.replies));
                        continue;
                    }
                    Some(Next::Reply(frame)) => Some(frame),
                    Some(Next::Last(frame)) => {
                        reading = false;
                        frames.stop(STOP_MALFORMED);
                        Some(frame)
                    }
                    Some(Next::Stop) => {
                        reading = false;
                        frames.stop(STOP_MALFORMED);
                        None
                    }
                    None => {
                        reading = false;
                        None
                    }
                };
                match reply.map(|frame| self.replies.try_send(frame)) {
                    Some(Err(mpsc::error::TrySendError::Full(frame))) => waiting = Some(frame),
                    Some(Err(mpsc::error::TrySendError::Closed(_))) => return,
                    Some(Ok(())) | None => {}
                }
                continue;
            }
            tokio::select! {
                () = &mut writer_gone => return,
                () = &mut abort => return,
                () = &mut shutdown, if reading => {
                    reading = false;
                    frames.stop(STOP_SHUTDOWN);
                }
                Some(()) = running.next(), if !running.is_empty() => {}
                room = self.replies.reserve(), if waiting.is_some() => {
                    let (Ok(room), Some(frame)) = (room, waiting.take()) else { return };
                    room.send(frame);
                }
                item = frames.next(), if reading && waiting.is_none() => read = Some(item),
            }
        }
    }

    /// What an item read from the stream leads to; `None` when there is nothing more to read
    /// (the stream ended or broke).
    fn next(&self, item: Option<Result<Frame, CodecError>>) -> Option<Next> {
        match item {
            Some(Ok(frame)) => Some(self.gate.admit(frame)),
            Some(Err(CodecError::Frame { error, request_id })) => {
                Some(self.gate.malformed(&error, request_id))
            }
            // Reset by the peer, the connection is gone, or the stream ended inside a frame.
            Some(Err(CodecError::Io(_))) | None => None,
        }
    }
}

/// Drains reply frames into the stream, then finishes it.
async fn write<D>(
    shared: &Shared<D>,
    mut writer: ReplyWriter,
    mut queue: mpsc::Receiver<Frame>,
    writer_gone: &CancellationToken,
) {
    while let Some(frame) = queue.recv().await {
        if !(&mut writer).send(frame).await {
            writer_gone.cancel();
            return;
        }
    }
    writer.finish(shared);
}

/// The sending half of a stream, at the priority of the most urgent call it answers.
struct ReplyWriter {
    send: SendStream,
    /// The stream's QUIC priority: 0, QUIC's default, until a call asks for more.
    priority: i32,
    priorities: bool,
    max_payload: u32,
}

impl ReplyWriter {
    fn new(config: &ServerConfig, send: SendStream) -> Self {
        Self {
            send,
            priority: 0,
            priorities: config.priorities,
            max_payload: config.max_payload,
        }
    }

    /// Ends the stream: QUIC delivers it from here, and a graceful shutdown waits for the
    /// acknowledgement.
    fn finish<D>(mut self, shared: &Shared<D>) {
        if self.send.finish().is_ok() {
            shared.unacked.keep(self.send);
        }
    }
}

impl ReplySink for &mut ReplyWriter {
    async fn send(&mut self, frame: Frame) -> bool {
        if self.priorities {
            let wanted = frame.header.priority.quic_priority();
            if wanted > self.priority {
                self.priority = wanted;
                let _ = self.send.set_priority(wanted);
            }
        }
        let written = match frame.into_chunks(self.max_payload) {
            Ok(mut chunks) => self
                .send
                .write_all_chunks(chunks.as_mut_slice())
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        written
            .inspect_err(|error| tracing::debug!("reply not written: {error}"))
            .is_ok()
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
