//! One call from the client: a request frame on a fresh stream, then its reply frames.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt as _, Stream};
use iroh::endpoint::{Connection, ReadError, WriteError};
use iroh::{EndpointAddr, EndpointId};
use tokio::time::Instant;

use super::{Peer, RpcClient, connection_error};
use crate::codec::CodecError;
use crate::error::{ClientError, RpcError};
use crate::frame::{Frame, FrameType, Header, Priority};
use crate::stream_io::FrameReader;

/// A call's stream, once its request is sent.
struct Call {
    client: RpcClient,
    peer: EndpointId,
    /// The client's state for `peer`.
    link: Arc<Peer>,
    conn: Connection,
    frames: FrameReader,
    request_id: u64,
}

impl RpcClient {
    /// Calls a unary method: one request, one reply.
    ///
    /// # Errors
    /// Every failure, local or remote, as a [`ClientError`].
    pub async fn unary(
        &self,
        peer: &EndpointAddr,
        service: u16,
        method: u16,
        payload: Bytes,
        priority: Priority,
        deadline: Option<Duration>,
    ) -> Result<Bytes, ClientError> {
        let header = self.request_header(service, method, priority, deadline);
        let call = async {
            let mut call = self.start(peer, Frame::new(header, payload)).await?;
            let frame = call.next_frame().await?;
            call.read_end_if_here();
            call.link.healthy();
            match frame.header.frame_type {
                FrameType::Response => Ok(frame.payload),
                FrameType::Error => Err(call.remote_error(&frame.payload)),
                other => Err(call.protocol(format!("a unary call answered by a {other:?} frame"))),
            }
        };
        within(deadline.map(|d| Instant::now() + d), call).await
    }

    /// Calls a server-streaming method. The deadline covers the whole stream.
    ///
    /// # Errors
    /// Failures before the first message; later ones come from [`ServerStream::message`].
    pub async fn server_stream(
        &self,
        peer: &EndpointAddr,
        service: u16,
        method: u16,
        payload: Bytes,
        priority: Priority,
        deadline: Option<Duration>,
    ) -> Result<ServerStream, ClientError> {
        let header = self.request_header(service, method, priority, deadline);
        let deadline = deadline.map(|d| Instant::now() + d);
        let call = within(deadline, self.start(peer, Frame::new(header, payload))).await?;
        Ok(ServerStream {
            call,
            deadline,
            done: false,
        })
    }

    /// Sends a Heartbeat at heartbeat priority and waits for its echo: the RPC layer's round
    /// trip to the peer.
    ///
    /// # Errors
    /// No echo within `timeout`, or any other failure, as a [`ClientError`].
    pub async fn heartbeat(
        &self,
        peer: &EndpointAddr,
        timeout: Duration,
    ) -> Result<Duration, ClientError> {
        let request_id = self.request_id();
        let header = Header {
            frame_type: FrameType::Heartbeat,
            priority: Priority::Heartbeat,
            service: 0,
            method: 0,
            request_id,
            deadline_ms: 0,
        };
        let nonce = Bytes::copy_from_slice(&request_id.to_be_bytes());
        let started = Instant::now();
        let round_trip = async {
            let mut call = self.start(peer, Frame::new(header, nonce.clone())).await?;
            let echo = call.next_frame().await?;
            call.read_end_if_here();
            if echo.header.frame_type != FrameType::Heartbeat || echo.payload != nonce {
                return Err(call.protocol(format!("heartbeat answered by {echo}")));
            }
            call.link.healthy();
            Ok(started.elapsed())
        };
        within(Some(started + timeout), round_trip).await
    }

    fn request_header(
        &self,
        service: u16,
        method: u16,
        priority: Priority,
        deadline: Option<Duration>,
    ) -> Header {
        Header {
            frame_type: FrameType::Request,
            priority,
            service,
            method,
            request_id: self.request_id(),
            // Whole milliseconds, rounded up so that a sub-millisecond deadline is not "none".
            deadline_ms: deadline.map_or(0, |d| {
                u32::try_from(d.as_micros().div_ceil(1000))
                    .unwrap_or(u32::MAX)
                    .max(1)
            }),
        }
    }

    /// Opens a stream on the peer's connection and sends `frame` on it.
    async fn start(&self, addr: &EndpointAddr, frame: Frame) -> Result<Call, ClientError> {
        let max_payload = self.inner.config.max_payload;
        let (header, request_id) = (frame.header, frame.header.request_id);
        // Before dialing: a request the peer would refuse is not sent.
        let mut chunks = frame
            .into_chunks(max_payload)
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        let (link, conn, mut send, recv) = self.open_stream(addr).await?;
        let peer = addr.id;
        // Normal maps to QUIC's default, which a new stream has already.
        if self.inner.config.priorities && header.priority != Priority::Normal {
            // Only fails on a closed stream, which the write below reports.
            let _ = send.set_priority(header.priority.quic_priority());
        }
        let call = Call {
            client: self.clone(),
            peer,
            link,
            conn,
            frames: FrameReader::new(recv, max_payload),
            request_id,
        };
        // A server that stops reading (it found the request malformed, or it is shutting down)
        // still answers on the other half: only a lost connection ends the call here.
        if let Err(WriteError::ConnectionLost(error)) =
            send.write_all_chunks(chunks.as_mut_slice()).await
        {
            return Err(call.failed(connection_error(peer, error)));
        }
        let _ = send.finish();
        Ok(call)
    }
}

impl Call {
    /// Reads the end of the stream if it has already arrived (the server finishes the stream
    /// with its last frame, so it usually has): QUIC tells the server to stop sending on a
    /// stream dropped before its end was read, which costs a frame and a wake-up per call.
    /// Never waits; anything but the end is left unread, as before.
    fn read_end_if_here(&mut self) {
        let _ = self.frames.next().now_or_never();
    }

    /// The next frame of this call's reply.
    async fn next_frame(&mut self) -> Result<Frame, ClientError> {
        let error = match self.frames.next().await {
            Some(Ok(frame)) if frame.header.request_id == self.request_id => return Ok(frame),
            Some(Ok(frame)) => self.protocol(format!(
                "reply for request {} on the stream of request {}",
                frame.header.request_id, self.request_id
            )),
            Some(Err(CodecError::Frame { error, .. })) => self.protocol(error.to_string()),
            Some(Err(CodecError::Io(error))) => self.io_error(error),
            None => ClientError::Unreachable {
                peer: self.peer.to_string(),
                source: "the stream ended before the reply".into(),
            },
        };
        Err(self.failed(error))
    }

    fn failed(&self, error: ClientError) -> ClientError {
        self.client.broken(&self.link, &self.conn, &error);
        error
    }

    fn io_error(&self, error: std::io::Error) -> ClientError {
        let lost = error.get_ref().and_then(|e| {
            e.downcast_ref::<ReadError>()
                .and_then(|e| match e {
                    ReadError::ConnectionLost(lost) => Some(lost.clone()),
                    _ => None,
                })
                .or_else(|| match e.downcast_ref::<WriteError>() {
                    Some(WriteError::ConnectionLost(lost)) => Some(lost.clone()),
                    _ => None,
                })
        });
        match lost.or_else(|| self.conn.close_reason()) {
            Some(closed) => connection_error(self.peer, closed),
            None => ClientError::Unreachable {
                peer: self.peer.to_string(),
                source: Box::new(error),
            },
        }
    }

    fn remote_error(&self, payload: &[u8]) -> ClientError {
        match RpcError::decode(payload) {
            Ok(error) => error.into(),
            Err(error) => self.protocol(format!("Error frame payload: {error}")),
        }
    }

    fn protocol(&self, detail: String) -> ClientError {
        ClientError::Protocol {
            peer: self.peer.to_string(),
            detail,
        }
    }
}

/// The messages of a server-streaming call.
pub struct ServerStream {
    call: Call,
    deadline: Option<Instant>,
    done: bool,
}

impl std::fmt::Debug for ServerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStream")
            .field("peer", &self.call.peer)
            .field("request_id", &self.call.request_id)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ServerStream {
    /// The next message; `None` once the server ended the stream.
    ///
    /// # Errors
    /// The server ended the stream with an error, or the call failed.
    pub async fn message(&mut self) -> Result<Option<Bytes>, ClientError> {
        if self.done {
            return Ok(None);
        }
        let frame = within(self.deadline, self.call.next_frame()).await;
        let frame = frame.inspect_err(|_| self.done = true)?;
        match frame.header.frame_type {
            FrameType::StreamData => Ok(Some(frame.payload)),
            FrameType::StreamEnd => {
                self.done = true;
                self.call.link.healthy();
                self.call.read_end_if_here();
                Ok(None)
            }
            FrameType::Error => {
                self.done = true;
                Err(self.call.remote_error(&frame.payload))
            }
            other => {
                self.done = true;
                Err(self
                    .call
                    .protocol(format!("a server stream answered by a {other:?} frame")))
            }
        }
    }

    /// The messages as a [`Stream`], ending after the first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, ClientError>> + Send {
        futures::stream::unfold(self, |mut stream| async move {
            match stream.message().await {
                Ok(Some(message)) => Some((Ok(message), stream)),
                Ok(None) => None,
                Err(error) => Some((Err(error), stream)),
            }
        })
    }
}

/// Runs `work` until `deadline`, if there is one.
async fn within<T>(
    deadline: Option<Instant>,
    work: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, work)
            .await
            .unwrap_or(Err(ClientError::DeadlineExceeded)),
        None => work.await,
    }
}
