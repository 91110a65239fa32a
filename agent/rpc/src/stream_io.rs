//! Frames on a QUIC stream, read and written the way both ends of a call need them.
//!
//! Reading takes QUIC's received chunks as they are and hands them to a [`ChunkDecoder`], which
//! takes a frame from a chunk without a copy when the chunk holds it whole. (Writing hands QUIC
//! a frame as one chunk, or its header and a long payload as two, in one call:
//! [`Frame::into_chunks`].)

use bytes::Bytes;
use futures::FutureExt as _;
use iroh::endpoint::{RecvStream, VarInt};

use crate::codec::CodecError;
use crate::frame::Frame;
use quiver_wire::ChunkDecoder;

/// Chunks taken from QUIC per read. More than one, so that a read that takes a stream's last
/// chunk also sees its end (QUIC then answers the next read without taking the connection's
/// lock): a request, its end and the reply's end cost one read each.
const CHUNKS_PER_READ: usize = 4;

/// The frames of one receiving stream.
pub(crate) struct FrameReader {
    recv: RecvStream,
    decoder: ChunkDecoder,
    /// The chunks of the last read; `chunks[next..read]` are not yet in the decoder.
    chunks: [Bytes; CHUNKS_PER_READ],
    next: usize,
    read: usize,
    ended: bool,
}

impl FrameReader {
    pub(crate) fn new(recv: RecvStream, max_payload: u32) -> Self {
        Self {
            recv,
            decoder: ChunkDecoder::new(max_payload),
            chunks: Default::default(),
            next: 0,
            read: 0,
            ended: false,
        }
    }

    /// The next frame; `None` at a clean end of the stream. Cancel-safe: nothing read is lost
    /// when the future is dropped.
    pub(crate) async fn next(&mut self) -> Option<Result<Frame, CodecError>> {
        loop {
            if let Some(frame) = self.decoder.next_frame().transpose() {
                return Some(frame);
            }
            if self.push_read_chunk() {
                continue;
            }
            if self.ended {
                return self.decoder.finish().transpose();
            }
            match self.recv.read_many_chunks(&mut self.chunks).await {
                Ok(Some(read)) => (self.next, self.read) = (0, read),
                Ok(None) => self.ended = true,
                Err(error) => return Some(Err(CodecError::Io(error.into()))),
            }
        }
    }

    /// Hands the decoder the next chunk already read, if there is one.
    fn push_read_chunk(&mut self) -> bool {
        if self.next == self.read {
            return false;
        }
        let chunk = std::mem::take(&mut self.chunks[self.next]);
        self.next += 1;
        self.decoder.push(chunk);
        true
    }

    /// Whether the stream ends after the frames read so far, as far as has arrived: never
    /// waits. (A client finishes a stream right after its request, so the end usually comes
    /// in the request's packet.)
    pub(crate) fn ends_here(&mut self) -> bool {
        if !self.decoder.is_empty() || self.next < self.read {
            return false;
        }
        if self.ended {
            return true;
        }
        match self.recv.read_many_chunks(&mut self.chunks).now_or_never() {
            Some(Ok(None)) => {
                self.ended = true;
                true
            }
            Some(Ok(Some(read))) => {
                (self.next, self.read) = (0, read);
                false
            }
            // A failure shows again at the next read.
            Some(Err(_)) | None => false,
        }
    }

    /// Tells the peer to stop sending: nothing more will be read.
    pub(crate) fn stop(&mut self, code: VarInt) {
        // Already stopped or reset: nothing left to refuse.
        let _ = self.recv.stop(code);
    }
}
