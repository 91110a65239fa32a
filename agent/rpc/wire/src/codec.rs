//! [`Frame`]s as a `tokio_util` codec: `FramedRead` / `FramedWrite` over QUIC streams.
//!
//! The decoder tells "need more bytes" (`Ok(None)`) from "malformed" (`Err`). It reserves room
//! for a payload only after the header passed every check, the maximum length included, so a
//! peer cannot make it allocate more than `HEADER_LEN + max_payload` per frame.

use bytes::{Buf, BytesMut};
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

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let (header, len) = match self.pending {
            Some(pending) => pending,
            None => {
                let Some(head) = src.get(..HEADER_LEN) else {
                    return Ok(None);
                };
                let mut bytes = [0u8; HEADER_LEN];
                bytes.copy_from_slice(head);
                let (header, len) =
                    Header::parse(&bytes, self.max_payload).map_err(|error| CodecError::Frame {
                        error,
                        request_id: Header::request_id_of(&bytes),
                    })?;
                src.advance(HEADER_LEN);
                // `len <= max_payload <= u32::MAX` fits a usize on every supported target.
                let len = usize::try_from(len).unwrap_or(usize::MAX);
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
