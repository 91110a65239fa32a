//! One frame of `quiver/rpc/1`: a 24-byte header, then `payload length` bytes of payload.
//!
//! ```text
//! off size field
//! 0   1    version = 1
//! 1   1    flags      (bit0 end-of-stream; others 0)
//! 2   1    type       1 Request 2 Response 3 Error 4 StreamData 5 StreamEnd 6 Heartbeat
//! 3   1    priority   0 Election 1 Heartbeat 2 LogAppend 3 Snapshot 4 Normal
//! 4   2    service id (u16 BE)
//! 6   2    method id  (u16 BE)
//! 8   8    request id (u64 BE), unique per connection
//! 16  4    payload length (u32 BE), <= configured max (default 16 MiB)
//! 20  4    deadline in ms (u32 BE), 0 = none
//! ```
//!
//! Parsing is check-then-read: [`Header::parse`] validates all 24 bytes, the payload length
//! against the maximum included, so a reader never allocates for a frame it will refuse.

use std::fmt;
use std::time::Duration;

use bytes::{BufMut, Bytes};

/// Size of the fixed header.
pub const HEADER_LEN: usize = 24;
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Largest payload accepted unless configured otherwise (16 MiB).
pub const DEFAULT_MAX_PAYLOAD: u32 = 16 * 1024 * 1024;

const FLAG_END_OF_STREAM: u8 = 0x01;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// A call: service, method, deadline and the request message.
    Request = 1,
    /// The one reply of a unary call.
    Response = 2,
    /// A failed call: the payload is a `quiver.v1.RpcError` (status code and message).
    Error = 3,
    /// One message of a server stream.
    StreamData = 4,
    /// The end of a server stream (empty payload or a trailer message).
    StreamEnd = 5,
    /// RPC-level liveness probe, echoed by the server.
    Heartbeat = 6,
}

impl FrameType {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Request,
            2 => Self::Response,
            3 => Self::Error,
            4 => Self::StreamData,
            5 => Self::StreamEnd,
            6 => Self::Heartbeat,
            _ => return None,
        })
    }

    /// Whether frames of this type end their request in their direction: every type but
    /// [`FrameType::StreamData`] does (requests stream in neither direction from the client).
    #[must_use]
    pub const fn ends_stream(self) -> bool {
        !matches!(self, Self::StreamData)
    }
}

/// Scheduling class: lower values are more urgent, so elections overtake snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Priority {
    Election = 0,
    Heartbeat = 1,
    LogAppend = 2,
    Snapshot = 3,
    Normal = 4,
}

impl Priority {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Election,
            1 => Self::Heartbeat,
            2 => Self::LogAppend,
            3 => Self::Snapshot,
            4 => Self::Normal,
            _ => return None,
        })
    }

    /// The QUIC stream priority for this class. QUIC sends higher values first, so the most
    /// urgent class gets the highest: Election 4 … Normal 0. Set it on the request stream and
    /// on the reply: it orders only the sending side's buffered data.
    #[must_use]
    pub const fn quic_priority(self) -> i32 {
        Priority::Normal as i32 - self as i32
    }
}

/// A malformed frame. Each variant names the header field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("version: {0} is not supported (this peer speaks version {VERSION})")]
    Version(u8),
    #[error("flags: reserved bits set ({0:#04x}; only bit0, end-of-stream, is defined)")]
    ReservedFlags(u8),
    #[error("type: {0} is not a frame type (1..=6)")]
    Type(u8),
    #[error("priority: {0} is not a priority (0..=4)")]
    Priority(u8),
    #[error("payload length: {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: u64, max: u32 },
    #[error("flags: end-of-stream must be {expected} on a {frame_type:?} frame")]
    EndOfStream {
        frame_type: FrameType,
        expected: bool,
    },
    #[error("deadline: only a Request carries one ({frame_type:?} has {deadline_ms} ms)")]
    Deadline {
        frame_type: FrameType,
        deadline_ms: u32,
    },
    #[error("service/method: a Heartbeat names none (got {service}/{method})")]
    HeartbeatTarget { service: u16, method: u16 },
}

impl FrameError {
    /// A short, stable label for metrics.
    #[must_use]
    pub const fn metric_label(&self) -> &'static str {
        match self {
            Self::Version(_) => "version",
            Self::ReservedFlags(_) | Self::EndOfStream { .. } => "flags",
            Self::Type(_) => "type",
            Self::Priority(_) => "priority",
            Self::TooLarge { .. } => "too_large",
            Self::Deadline { .. } => "deadline",
            Self::HeartbeatTarget { .. } => "heartbeat_target",
        }
    }
}

/// Everything in the header but the payload length, which the payload itself gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    pub frame_type: FrameType,
    pub priority: Priority,
    pub service: u16,
    pub method: u16,
    pub request_id: u64,
    /// Milliseconds the caller will wait, counted from receipt (peers share no clock); 0 = none.
    pub deadline_ms: u32,
}

impl Header {
    /// Parses and checks a whole header. Returns it with the payload length that follows.
    ///
    /// # Errors
    /// A [`FrameError`] naming the first field that breaks the protocol, the payload length
    /// above `max_payload` included.
    pub fn parse(bytes: &[u8; HEADER_LEN], max_payload: u32) -> Result<(Self, u32), FrameError> {
        let [version, flags, type_byte, priority_byte, ..] = *bytes;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        if flags & !FLAG_END_OF_STREAM != 0 {
            return Err(FrameError::ReservedFlags(flags));
        }
        let frame_type = FrameType::from_byte(type_byte).ok_or(FrameError::Type(type_byte))?;
        let priority =
            Priority::from_byte(priority_byte).ok_or(FrameError::Priority(priority_byte))?;
        let len = be_u32(bytes, 16);
        if len > max_payload {
            return Err(FrameError::TooLarge {
                len: u64::from(len),
                max: max_payload,
            });
        }
        let header = Self {
            frame_type,
            priority,
            service: be_u16(bytes, 4),
            method: be_u16(bytes, 6),
            request_id: be_u64(bytes, 8),
            deadline_ms: be_u32(bytes, 20),
        };
        header.check(flags & FLAG_END_OF_STREAM != 0)?;
        Ok((header, len))
    }

    /// The request id of a header in this version's layout, even one that fails [`Header::parse`]:
    /// what an Error frame answering a malformed frame refers to. `None` for another version.
    #[must_use]
    pub fn request_id_of(bytes: &[u8; HEADER_LEN]) -> Option<u64> {
        (bytes[0] == VERSION).then(|| be_u64(bytes, 8))
    }

    /// The rules between fields: end-of-stream follows the type, only requests have deadlines,
    /// heartbeats name no method.
    fn check(&self, end_of_stream: bool) -> Result<(), FrameError> {
        let frame_type = self.frame_type;
        if end_of_stream != frame_type.ends_stream() {
            return Err(FrameError::EndOfStream {
                frame_type,
                expected: frame_type.ends_stream(),
            });
        }
        if self.deadline_ms != 0 && frame_type != FrameType::Request {
            return Err(FrameError::Deadline {
                frame_type,
                deadline_ms: self.deadline_ms,
            });
        }
        if frame_type == FrameType::Heartbeat && (self.service, self.method) != (0, 0) {
            return Err(FrameError::HeartbeatTarget {
                service: self.service,
                method: self.method,
            });
        }
        Ok(())
    }

    /// The deadline as a duration, if the caller set one.
    #[must_use]
    pub fn deadline(&self) -> Option<Duration> {
        (self.deadline_ms != 0).then(|| Duration::from_millis(u64::from(self.deadline_ms)))
    }

    /// A reply header to this one: same request id, service, method and priority.
    #[must_use]
    pub const fn reply(&self, frame_type: FrameType) -> Self {
        Self {
            frame_type,
            deadline_ms: 0,
            ..*self
        }
    }
}

/// A header and its payload (a protobuf message of `quiver.v1`, not decoded here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub payload: Bytes,
}

impl Frame {
    #[must_use]
    pub fn new(header: Header, payload: impl Into<Bytes>) -> Self {
        Self {
            header,
            payload: payload.into(),
        }
    }

    /// Header and payload length on the wire.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Appends the frame to `dst`.
    ///
    /// # Errors
    /// As [`Frame::encode_header`].
    pub fn encode(&self, dst: &mut impl BufMut, max_payload: u32) -> Result<(), FrameError> {
        dst.put_slice(&self.encode_header(max_payload)?);
        dst.put_slice(&self.payload);
        Ok(())
    }

    /// The frame's header on the wire, for a writer that sends the payload as it is.
    ///
    /// # Errors
    /// The frame would not parse on the other side: payload above `max_payload`, or fields that
    /// break the rules between them ([`Header::parse`] is the one definition of both).
    pub fn encode_header(&self, max_payload: u32) -> Result<[u8; HEADER_LEN], FrameError> {
        let len = u32::try_from(self.payload.len())
            .ok()
            .filter(|len| *len <= max_payload)
            .ok_or(FrameError::TooLarge {
                len: self.payload.len() as u64,
                max: max_payload,
            })?;
        let header = &self.header;
        header.check(header.frame_type.ends_stream())?;
        let flags = if header.frame_type.ends_stream() {
            FLAG_END_OF_STREAM
        } else {
            0
        };
        let mut bytes = [0u8; HEADER_LEN];
        bytes[..4].copy_from_slice(&[
            VERSION,
            flags,
            header.frame_type as u8,
            header.priority as u8,
        ]);
        bytes[4..6].copy_from_slice(&header.service.to_be_bytes());
        bytes[6..8].copy_from_slice(&header.method.to_be_bytes());
        bytes[8..16].copy_from_slice(&header.request_id.to_be_bytes());
        bytes[16..20].copy_from_slice(&len.to_be_bytes());
        bytes[20..24].copy_from_slice(&header.deadline_ms.to_be_bytes());
        Ok(bytes)
    }

    /// The frame as the chunks a writer hands QUIC in one call. A payload of at most
    /// [`COALESCE_MAX`] bytes is copied behind its header into one chunk; a longer one goes as
    /// it is, not copied, after a chunk of its header.
    ///
    /// # Errors
    /// As [`Self::encode_header`].
    pub fn into_chunks(self, max_payload: u32) -> Result<FrameChunks, FrameError> {
        let header = self.encode_header(max_payload)?;
        if self.payload.len() <= COALESCE_MAX {
            let mut whole = Vec::with_capacity(HEADER_LEN + self.payload.len());
            whole.extend_from_slice(&header);
            whole.extend_from_slice(&self.payload);
            return Ok(FrameChunks {
                chunks: [whole.into(), Bytes::new()],
                count: 1,
            });
        }
        Ok(FrameChunks {
            chunks: [Bytes::copy_from_slice(&header), self.payload],
            count: 2,
        })
    }
}

/// The largest payload [`Frame::into_chunks`] copies behind its header. Handing QUIC one chunk
/// rather than two costs a copy of the payload and saves QUIC's work on a second chunk, which
/// for small frames is worth more than the copy (`bench-rpc`'s unary echo, its commit message
/// and `docs/benchmarks.md`). Above this, the payload (a snapshot chunk, a bulk message) is not
/// copied.
pub const COALESCE_MAX: usize = 4096;

/// A frame's bytes on the wire as one or two chunks ([`Frame::into_chunks`]).
#[derive(Debug)]
pub struct FrameChunks {
    chunks: [Bytes; 2],
    count: usize,
}

impl FrameChunks {
    /// The chunks, in order, for `SendStream::write_all_chunks`.
    pub fn as_mut_slice(&mut self) -> &mut [Bytes] {
        &mut self.chunks[..self.count]
    }
}

impl fmt::Display for Frame {
    /// One line per frame, as the test vectors in `docs/protocol.md` write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        write!(
            f,
            "{:?} priority={:?} service={} method={} id={} deadline={}ms payload={}B",
            h.frame_type,
            h.priority,
            h.service,
            h.method,
            h.request_id,
            h.deadline_ms,
            self.payload.len()
        )
    }
}

fn be_u16(bytes: &[u8; HEADER_LEN], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn be_u64(bytes: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

fn be_u32(bytes: &[u8; HEADER_LEN], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(frame_type: FrameType) -> Header {
        Header {
            frame_type,
            priority: Priority::Normal,
            service: 3,
            method: 1,
            request_id: 0x0102_0304_0506_0708,
            deadline_ms: 0,
        }
    }

    #[test]
    fn chunks_are_the_encoded_frame_one_chunk_when_small_the_payload_shared_when_long() {
        for len in [0, 1, COALESCE_MAX, COALESCE_MAX + 1, 1 << 20] {
            let payload = Bytes::from(vec![0x5a; len]);
            let frame = Frame::new(header(FrameType::Response), payload.clone());
            let mut wire = Vec::new();
            frame
                .encode(&mut wire, DEFAULT_MAX_PAYLOAD)
                .expect("encode");
            let mut chunks = frame.into_chunks(DEFAULT_MAX_PAYLOAD).expect("chunks");
            let chunks = chunks.as_mut_slice();
            assert_eq!(chunks.concat(), wire, "{len} bytes");
            if len <= COALESCE_MAX {
                assert_eq!(chunks.len(), 1, "{len} bytes");
            } else {
                assert_eq!(chunks.len(), 2, "{len} bytes");
                assert_eq!(chunks[1].as_ptr(), payload.as_ptr(), "{len} bytes: copied");
            }
        }
        let too_long = Frame::new(header(FrameType::Response), vec![0; 10]);
        assert!(too_long.into_chunks(9).is_err());
    }

    #[test]
    fn encoded_header_reads_back_field_by_field() {
        let frame = Frame::new(
            Header {
                deadline_ms: 250,
                ..header(FrameType::Request)
            },
            "hi",
        );
        let mut wire = Vec::new();
        frame
            .encode(&mut wire, DEFAULT_MAX_PAYLOAD)
            .expect("encode");
        assert_eq!(wire.len(), frame.encoded_len());
        assert_eq!(&wire[..4], &[1, 1, 1, 4]);
        assert_eq!(&wire[4..8], &[0, 3, 0, 1]);
        assert_eq!(&wire[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&wire[16..20], &[0, 0, 0, 2]);
        assert_eq!(&wire[20..24], &[0, 0, 0, 250]);
        let head: [u8; HEADER_LEN] = wire[..HEADER_LEN].try_into().expect("24 bytes");
        assert_eq!(
            Header::parse(&head, DEFAULT_MAX_PAYLOAD),
            Ok((frame.header, 2))
        );
    }

    #[test]
    fn payload_over_the_maximum_is_refused_from_the_header_alone() {
        let mut head = [0u8; HEADER_LEN];
        head[..4].copy_from_slice(&[1, 1, 2, 4]);
        head[16..20].copy_from_slice(&1025u32.to_be_bytes());
        assert_eq!(
            Header::parse(&head, 1024),
            Err(FrameError::TooLarge {
                len: 1025,
                max: 1024
            })
        );
    }

    #[test]
    fn encoder_refuses_what_the_decoder_would_refuse() {
        let big = Frame::new(header(FrameType::Response), vec![0u8; 11]);
        assert_eq!(
            big.encode(&mut Vec::new(), 10),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
        let response_with_deadline = Frame::new(
            Header {
                deadline_ms: 5,
                ..header(FrameType::Response)
            },
            Bytes::new(),
        );
        assert!(matches!(
            response_with_deadline.encode(&mut Vec::new(), 10),
            Err(FrameError::Deadline { .. })
        ));
    }

    #[test]
    fn urgent_classes_get_higher_quic_priorities() {
        let order = [
            Priority::Election,
            Priority::Heartbeat,
            Priority::LogAppend,
            Priority::Snapshot,
            Priority::Normal,
        ];
        let quic: Vec<i32> = order.iter().map(|p| p.quic_priority()).collect();
        assert_eq!(quic, vec![4, 3, 2, 1, 0]);
    }

    #[test]
    fn reply_keeps_the_call_and_drops_the_deadline() {
        let request = Header {
            deadline_ms: 100,
            ..header(FrameType::Request)
        };
        let reply = request.reply(FrameType::Error);
        assert_eq!(reply.request_id, request.request_id);
        assert_eq!((reply.service, reply.method), (3, 1));
        assert_eq!(reply.deadline_ms, 0);
        assert_eq!(reply.frame_type, FrameType::Error);
    }
}
