//! Frames from a stream received as chunks of shared memory (QUIC's `read_chunk`).
//!
//! A chunk that begins with a whole frame gives it without a copy: its payload shares the
//! chunk's memory (the usual case: a request or a reply fits one packet). Only a frame split
//! across chunks is assembled in a buffer, through [`FrameCodec`], which bounds it. Pure: the
//! caller reads the chunks and hands them over.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder as _;

use crate::codec::{CodecError, FrameCodec};
use crate::frame::Frame;

/// The frames of one stream, from its chunks in order.
#[derive(Debug)]
pub struct ChunkDecoder {
    codec: FrameCodec,
    /// What is left of the last chunk after the frames taken from it without a copy.
    rest: Bytes,
    /// A frame split across chunks, being assembled. Empty whenever `rest` is not.
    partial: BytesMut,
}

impl ChunkDecoder {
    #[must_use]
    pub fn new(max_payload: u32) -> Self {
        Self {
            codec: FrameCodec::new(max_payload),
            rest: Bytes::new(),
            partial: BytesMut::new(),
        }
    }

    /// Hands over the stream's next chunk. Call it only once [`Self::next_frame`] has answered
    /// "need more" (`Ok(None)`): before, the chunk would jump ahead of frames not yet taken.
    pub fn push(&mut self, chunk: Bytes) {
        debug_assert!(
            self.rest.is_empty(),
            "a chunk pushed before the last was read"
        );
        self.rest = chunk;
    }

    /// The next whole frame from the chunks pushed so far; `Ok(None)` when it needs more bytes.
    ///
    /// # Errors
    /// A malformed frame, as [`FrameCodec`] reports it: the stream is not to be read further.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, CodecError> {
        if !self.rest.is_empty() {
            // A chunk begins a frame only when no frame is half assembled.
            if self.partial.is_empty()
                && let Some(frame) = self.codec.decode_chunk(&mut self.rest)?
            {
                return Ok(Some(frame));
            }
            self.partial.extend_from_slice(&self.rest);
            self.rest = Bytes::new();
        }
        self.codec.decode(&mut self.partial)
    }

    /// The stream ended: the last frame, if one is whole, or an error if it ended inside one.
    ///
    /// # Errors
    /// A malformed frame, or the stream ended inside a frame.
    pub fn finish(&mut self) -> Result<Option<Frame>, CodecError> {
        if let Some(frame) = self.next_frame()? {
            return Ok(Some(frame));
        }
        self.codec.decode_eof(&mut self.partial)
    }

    /// Whether no byte of the stream is held: every frame pushed has been taken whole.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty() && self.partial.is_empty() && !self.codec.is_pending()
    }

    /// The bytes held for a frame not yet whole.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.rest.len() + self.partial.len()
    }

    /// The capacity of the assembly buffer, which [`FrameCodec`] bounds.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.partial.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{DEFAULT_MAX_PAYLOAD, FrameType, Header, Priority};

    fn frame(payload: &'static [u8]) -> Frame {
        let header = Header {
            frame_type: FrameType::Response,
            priority: Priority::Normal,
            service: 3,
            method: 1,
            request_id: 7,
            deadline_ms: 0,
        };
        Frame::new(header, payload)
    }

    fn wire(frames: &[Frame]) -> Bytes {
        let mut wire = Vec::new();
        for frame in frames {
            frame.encode(&mut wire, DEFAULT_MAX_PAYLOAD).expect("valid");
        }
        wire.into()
    }

    #[test]
    fn a_whole_frame_in_a_chunk_shares_its_memory() {
        let chunk = wire(&[frame(b"abc"), frame(b"de")]);
        let mut decoder = ChunkDecoder::new(DEFAULT_MAX_PAYLOAD);
        decoder.push(chunk.clone());
        let first = decoder.next_frame().expect("valid").expect("whole");
        assert_eq!(first, frame(b"abc"));
        let at = chunk.as_ptr().wrapping_add(24);
        assert_eq!(first.payload.as_ptr(), at, "the payload was copied");
        assert_eq!(decoder.next_frame().expect("valid"), Some(frame(b"de")));
        assert_eq!(decoder.next_frame().expect("valid"), None);
        assert!(decoder.is_empty());
    }

    #[test]
    fn a_frame_split_across_chunks_is_assembled() {
        let bytes = wire(&[frame(b"hello")]);
        for cut in 1..bytes.len() {
            let mut decoder = ChunkDecoder::new(DEFAULT_MAX_PAYLOAD);
            decoder.push(bytes.slice(..cut));
            assert_eq!(decoder.next_frame().expect("valid"), None, "cut at {cut}");
            assert!(!decoder.is_empty());
            decoder.push(bytes.slice(cut..));
            assert_eq!(decoder.next_frame().expect("valid"), Some(frame(b"hello")));
            assert!(decoder.is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_an_error() {
        let bytes = wire(&[frame(b"hello")]);
        let mut decoder = ChunkDecoder::new(DEFAULT_MAX_PAYLOAD);
        decoder.push(bytes.slice(..26));
        assert_eq!(decoder.next_frame().expect("valid"), None);
        let error = decoder.finish().expect_err("cut short");
        assert!(
            error.to_string().contains("26 of at least 29 bytes"),
            "{error}"
        );
    }

    #[test]
    fn a_malformed_header_is_an_error_with_its_request_id() {
        let mut bytes = wire(&[frame(b"x")]).to_vec();
        bytes[2] = 99; // the frame type
        let mut decoder = ChunkDecoder::new(DEFAULT_MAX_PAYLOAD);
        decoder.push(bytes.into());
        match decoder.next_frame() {
            Err(CodecError::Frame { request_id, .. }) => assert_eq!(request_id, Some(7)),
            other => panic!("{other:?}"),
        }
    }
}
