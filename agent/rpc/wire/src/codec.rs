//! [`Frame`]s as a `tokio_util` codec over byte buffers. The RPC layer's readers go through
//! [`crate::ChunkDecoder`]: it takes a frame that one QUIC chunk holds whole without a copy, and
//! assembles the others with this codec.
//!
//! The decoder tells "need more bytes" (`Ok(None)`) from "malformed" (`Err`). It reserves room
//! for a payload only after the header passed every check, the maximum length included, so a
//! peer cannot make it allocate more than `HEADER_LEN + max_payload` per frame.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{DEFAULT_MAX_PAYLOAD, Frame, FrameError, HEADER_LEN, Header};

/// Reads and writes frames with a payload limit.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_payload: u32,
    /// The header of a frame whose payload has not fully arrived: parsed and checked once.
    pending: Option<(Header, usize)>,
}

impl FrameCodec {
    #[must_use]
    pub const fn new(max_payload: u32) -> Self {
        Self {
            max_payload,
            pending: None,
        }
    }

    #[must_use]
    pub const fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// Whether a frame's header has been taken and its payload is still awaited.
    #[must_use]
    pub const fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes a whole frame from the front of `chunk` without copying it: its payload shares
    /// `chunk`'s memory. `Ok(None)`, with `chunk` untouched, when `chunk` does not begin with a
    /// whole frame or a frame is already half read: then the bytes go through
    /// [`Decoder::decode`] as usual. The checks are the same.
    ///
    /// # Errors
    /// A malformed header, as [`Decoder::decode`] reports it.
    pub fn decode_chunk(&mut self, chunk: &mut Bytes) -> Result<Option<Frame>, CodecError> {
        if self.pending.is_some() {
            return Ok(None);
        }
        let Some(head) = chunk.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let (header, len) = parse(head, self.max_payload)?;
        let end = HEADER_LEN + len;
        if chunk.len() < end {
            return Ok(None);
        }
        let payload = chunk.slice(HEADER_LEN..end);
        chunk.advance(end);
        Ok(Some(Frame { header, payload }))
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PAYLOAD)
    }
}

/// A codec failure: the stream broke, or the peer sent a malformed frame.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A malformed frame. `request_id` is the id its header carries when the header is of a
    /// version this peer reads (whatever else is wrong with it), so that the call it belongs to
    /// can be failed with an Error frame; `None` when even the layout is unknown.
    #[error("frame: {error}")]
    Frame {
        #[source]
        error: FrameError,
        request_id: Option<u64>,
    },
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
}

impl From<FrameError> for CodecError {
    fn from(error: FrameError) -> Self {
        Self::Frame {
            error,
            request_id: None,
        }
    }
}

/// [`Header::parse`], its payload length as a `usize`, and the request id of a malformed one.
fn parse(head: &[u8; HEADER_LEN], max_payload: u32) -> Result<(Header, usize), CodecError> {
    let (header, len) = Header::parse(head, max_payload).map_err(|error| CodecError::Frame {
        error,
        request_id: Header::request_id_of(head),
    })?;
    // `len <= max_payload <= u32::MAX` fits a usize on every supported target.
    Ok((header, usize::try_from(len).unwrap_or(usize::MAX)))
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let (header, len) = match self.pending {
            Some(pending) => pending,
            None => {
                let Some(head) = src.first_chunk::<HEADER_LEN>() else {
                    return Ok(None);
                };
                let (header, len) = parse(head, self.max_payload)?;
                src.advance(HEADER_LEN);
                (header, len)
            }
        };
        if src.len() < len {
            self.pending = Some((header, len));
            src.reserve(len - src.len());
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(Frame {
            header,
            payload: src.split_to(len).freeze(),
        }))
    }

    /// The end of the stream. A frame cut short is an error however much of it arrived, a
    /// header alone included: `Decoder`'s default looks only at the buffer, which a header
    /// already taken out leaves empty, and would call that a clean end.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        let (have, need) = match self.pending {
            Some((_, len)) => (HEADER_LEN + src.len(), HEADER_LEN + len),
            None if src.is_empty() => return Ok(None),
            None => (src.len(), HEADER_LEN),
        };
        Err(CodecError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the stream ended inside a frame ({have} of at least {need} bytes)"),
        )))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        <Self as Encoder<&Frame>>::encode(self, &frame, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.reserve(frame.encoded_len());
        frame
            .encode(dst, self.max_payload)
            .map_err(|error| CodecError::Frame {
                error,
                request_id: Some(frame.header.request_id),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameType, Priority};

    fn response(payload: &'static [u8]) -> Vec<u8> {
        let header = Header {
            frame_type: FrameType::Response,
            priority: Priority::Normal,
            service: 3,
            method: 1,
            request_id: 1,
            deadline_ms: 0,
        };
        let mut wire = Vec::new();
        Frame::new(header, payload)
            .encode(&mut wire, DEFAULT_MAX_PAYLOAD)
            .expect("valid frame");
        wire
    }

    fn decode_to_eof(wire: &[u8]) -> (Vec<Frame>, Result<(), CodecError>) {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(wire);
        let mut frames = Vec::new();
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return (frames, Ok(())),
                Err(error) => return (frames, Err(error)),
            }
        }
    }

    #[test]
    fn a_stream_of_whole_frames_ends_cleanly() {
        let mut wire = response(b"ab");
        wire.extend(response(b""));
        let (frames, end) = decode_to_eof(&wire);
        assert_eq!(frames.len(), 2);
        assert!(end.is_ok(), "{end:?}");
    }

    #[test]
    fn a_stream_ending_inside_a_header_is_an_error() {
        let wire = response(b"ab");
        let (frames, end) = decode_to_eof(&wire[..10]);
        assert!(frames.is_empty());
        let error = end.expect_err("cut inside the header");
        assert!(
            error.to_string().contains("10 of at least 24 bytes"),
            "{error}"
        );
    }

    #[test]
    fn a_stream_ending_right_after_a_header_is_an_error_not_a_clean_end() {
        let wire = response(b"abc");
        let (frames, end) = decode_to_eof(&wire[..HEADER_LEN]);
        assert!(frames.is_empty());
        let error = end.expect_err("the payload never came");
        assert!(
            error.to_string().contains("24 of at least 27 bytes"),
            "{error}"
        );
    }
}
