//! Frames on a QUIC stream, read and written the way both ends of a call need them.
//!
//! Reading takes QUIC's received chunks as they are and hands them to a [`ChunkDecoder`], which
//! takes a frame from a chunk without a copy when the chunk holds it whole. (Writing hands QUIC
//! a frame's header and payload as two chunks in one call: [`Frame::into_chunks`].)

use futures::FutureExt as _;
use iroh::endpoint::{RecvStream, VarInt};

use crate::codec::CodecError;
use crate::frame::Frame;
use quiver_wire::ChunkDecoder;

/// The frames of one receiving stream.
pub(crate) struct FrameReader {
    recv: RecvStream,
    decoder: ChunkDecoder,
    ended: bool,
}

impl FrameReader {
    pub(crate) fn new(recv: RecvStream, max_payload: u32) -> Self {
        Self {
            recv,
            decoder: ChunkDecoder::new(max_payload),
            ended: false,
        }
    }

    /// The next frame; `None` at a clean end of the stream. Cancel-safe: nothing read is lost
    /// when the future is dropped.
    pub(crate) async fn next(&mut self) -> Option<Result<Frame, CodecError>> {
        loop {
            if self.ended {
                return self.decoder.finish().transpose();
            }
            if let Some(frame) = self.decoder.next_frame().transpose() {
                return Some(frame);
            }
            match self.recv.read_chunk(usize::MAX).await {
                Ok(Some(chunk)) => self.decoder.push(chunk),
                Ok(None) => self.ended = true,
                Err(error) => return Some(Err(CodecError::Io(error.into()))),
            }
        }
    }

    /// Whether the stream ends after the frames read so far, as far as has arrived: never
    /// waits. (A client finishes a stream right after its request, so the end usually comes
    /// in the request's packet.)
    pub(crate) fn ends_here(&mut self) -> bool {
        if !self.decoder.is_empty() {
            return false;
        }
        if self.ended {
            return true;
        }
        match self.recv.read_chunk(usize::MAX).now_or_never() {
            Some(Ok(None)) => {
                self.ended = true;
                true
            }
            Some(Ok(Some(chunk))) => {
                self.decoder.push(chunk);
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
