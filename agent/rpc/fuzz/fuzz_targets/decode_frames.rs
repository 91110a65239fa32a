//! Arbitrary bytes, cut into arbitrary reads, through [`FrameCodec`]'s decoder.
//!
//! An input is 4 bytes of options, the read sizes, then the stream, so that seeds are easy to
//! write by hand (`corpus/decode_frames` holds the test vectors of `docs/protocol.md`):
//! - byte 0, bit 0: before each decode, leave room for one whole frame in the buffer; the decoder
//!   must then never grow it, which bounds what it reserves to `24 + max payload` exactly.
//!   Otherwise its reservations do allocate, and the capacity is held to a looser bound that
//!   allows for `BytesMut`'s amortised growth.
//! - byte 0, bit 1: read through [`ChunkDecoder`] instead, each read handed over as a chunk of
//!   shared memory (as QUIC's `read_chunk` gives them), which takes a frame that a chunk holds
//!   whole without a copy and assembles the others.
//! - bytes 1..3: the maximum payload (u16 BE). Small limits reach the paths around the limit
//!   (a claimed length just above or at it) in short inputs; the default (16 MiB) would only add
//!   16 MiB allocations that cost ten times the executions per second.
//! - byte 3: how many read sizes follow (mod 8), each a u16 BE (0 reads 1 byte); reads cycle
//!   through them. None: the whole stream in one read.
//!
//! Each decode must agree with a one-shot reading of the stream at the same offset
//! ([`expected`]): a frame, "need more bytes" or the same error, never a panic. A frame
//! re-encodes to exactly the bytes it came from; after "need more" the buffer holds less than
//! one whole frame; at the end of the stream, a frame cut short is an error and nothing else is.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use quiver_wire::{ChunkDecoder, CodecError, Frame, FrameCodec, FrameError, HEADER_LEN, Header};
use tokio_util::codec::Decoder as _;

fuzz_target!(|data: &[u8]| {
    if let Some(input) = Input::parse(data) {
        if input.chunks {
            run_chunks(&input);
        } else {
            run(&input);
        }
    }
});

struct Input<'a> {
    keep_room: bool,
    chunks: bool,
    max_payload: u32,
    reads: Vec<usize>,
    stream: &'a [u8],
}

impl<'a> Input<'a> {
    fn parse(data: &'a [u8]) -> Option<Self> {
        let (&[options, max_hi, max_lo, count], rest) = data.split_first_chunk::<4>()?;
        let (sizes, stream) = rest.split_at_checked(2 * usize::from(count % 8))?;
        let max_payload = u32::from(u16::from_be_bytes([max_hi, max_lo]));
        let reads = sizes
            .chunks_exact(2)
            .map(|size| usize::from(u16::from_be_bytes([size[0], size[1]])).max(1))
            .collect();
        Some(Self {
            keep_room: options & 1 != 0,
            chunks: options & 2 != 0,
            max_payload,
            reads,
            stream,
        })
    }
}

/// What one call of the decoder gave.
#[derive(Debug, PartialEq)]
enum Outcome {
    Frame(Frame),
    NeedMore,
    Malformed {
        error: FrameError,
        request_id: Option<u64>,
    },
}

/// What decoding must give when `available` is everything received after the last frame: the
/// stateless reading of the same bytes, which the decoder's state across reads must not change.
fn expected(available: &[u8], max_payload: u32) -> Outcome {
    let Some(head) = available.first_chunk::<HEADER_LEN>() else {
        return Outcome::NeedMore;
    };
    match Header::parse(head, max_payload) {
        Err(error) => Outcome::Malformed {
            error,
            request_id: Header::request_id_of(head),
        },
        Ok((header, len)) => match available[HEADER_LEN..].get(..len as usize) {
            Some(payload) => Outcome::Frame(Frame::new(header, payload.to_vec())),
            None => Outcome::NeedMore,
        },
    }
}

fn run(input: &Input<'_>) {
    let max = input.max_payload;
    let stream = input.stream;
    let mut codec = FrameCodec::new(max);
    let mut buf = BytesMut::new();
    // `stream[..fed]` has been given to the decoder, `stream[..at]` came out as frames.
    let (mut fed, mut at) = (0, 0);
    let mut reads = input.reads.iter().cycle();
    while fed < stream.len() {
        let read = reads.next().copied().unwrap_or(stream.len());
        let end = fed.saturating_add(read).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        loop {
            let outcome = decode(&mut codec, &mut buf, input);
            assert_eq!(
                outcome,
                expected(&stream[at..fed], max),
                "decoding at byte {at} with {fed} bytes read"
            );
            match outcome {
                Outcome::Frame(frame) => {
                    assert!(frame.payload.len() <= max as usize);
                    let mut wire = Vec::new();
                    frame
                        .encode(&mut wire, max)
                        .expect("a decoded frame encodes");
                    assert_eq!(
                        wire,
                        stream[at..at + wire.len()],
                        "re-encoded frame differs"
                    );
                    at += wire.len();
                }
                Outcome::NeedMore => break,
                // A reader stops at a malformed frame (the server stops the stream).
                Outcome::Malformed { .. } => return,
            }
        }
        // Less than one whole frame is held: a header not yet complete, or the payload of a
        // header already taken out of the buffer and checked.
        let unread = fed - at;
        let held = if unread >= HEADER_LEN {
            unread - HEADER_LEN
        } else {
            unread
        };
        assert_eq!(buf.len(), held, "bytes held after \"need more\"");
        assert!(
            held < HEADER_LEN.max(max as usize),
            "a whole frame left undecoded"
        );
    }
    match codec.decode_eof(&mut buf) {
        Ok(None) => assert_eq!(at, fed, "the stream ended inside a frame without an error"),
        Err(CodecError::Io(error)) => {
            assert!(at < fed, "an error at a clean end of stream: {error}");
        }
        other => panic!("at the end of the stream, after \"need more\": {other:?}"),
    }
}

fn decode(codec: &mut FrameCodec, buf: &mut BytesMut, input: &Input<'_>) -> Outcome {
    let frame = HEADER_LEN + input.max_payload as usize;
    if input.keep_room {
        buf.reserve(frame);
    }
    let before = buf.capacity();
    let result = codec.decode(buf);
    if input.keep_room {
        assert!(
            buf.capacity() <= before,
            "the decoder grew a buffer that had room for a whole frame ({before} -> {} bytes)",
            buf.capacity()
        );
    } else {
        // BytesMut grows like Vec (at least doubling, from up to 64 KiB once shared), so the
        // bound is twice the most it may be asked to hold: the stream plus one whole frame.
        let bound = 2 * (input.stream.len() + frame + (64 << 10));
        assert!(
            buf.capacity() <= bound,
            "buffer capacity {} above {bound} bytes",
            buf.capacity()
        );
    }
    match result {
        Ok(Some(frame)) => Outcome::Frame(frame),
        Ok(None) => Outcome::NeedMore,
        Err(CodecError::Frame { error, request_id }) => Outcome::Malformed { error, request_id },
        Err(CodecError::Io(error)) => panic!("decode failed on I/O without I/O: {error}"),
    }
}

/// [`run`] through [`ChunkDecoder`]: the same outcomes at the same offsets, and never more held
/// than what was handed over and not yet taken as frames.
fn run_chunks(input: &Input<'_>) {
    let max = input.max_payload;
    let stream = Bytes::copy_from_slice(input.stream);
    let mut decoder = ChunkDecoder::new(max);
    let (mut fed, mut at) = (0, 0);
    let mut reads = input.reads.iter().cycle();
    while fed < stream.len() {
        let read = reads.next().copied().unwrap_or(stream.len());
        let end = fed.saturating_add(read).min(stream.len());
        decoder.push(stream.slice(fed..end));
        fed = end;
        loop {
            let outcome = match decoder.next_frame() {
                Ok(Some(frame)) => Outcome::Frame(frame),
                Ok(None) => Outcome::NeedMore,
                Err(CodecError::Frame { error, request_id }) => {
                    Outcome::Malformed { error, request_id }
                }
                Err(CodecError::Io(error)) => panic!("decode failed on I/O without I/O: {error}"),
            };
            assert_eq!(
                outcome,
                expected(&stream[at..fed], max),
                "decoding chunks at byte {at} with {fed} bytes handed over"
            );
            match outcome {
                Outcome::Frame(frame) => at += HEADER_LEN + frame.payload.len(),
                Outcome::NeedMore => break,
                Outcome::Malformed { .. } => return,
            }
        }
        assert!(
            decoder.buffered() <= fed - at,
            "{} bytes held, {} handed over and not taken",
            decoder.buffered(),
            fed - at
        );
        // What is assembled is one frame at most: its header checked, its payload bounded.
        let bound = 2 * (HEADER_LEN + max as usize + (64 << 10));
        assert!(
            decoder.capacity() <= bound,
            "assembly buffer capacity {} above {bound} bytes",
            decoder.capacity()
        );
    }
    match decoder.finish() {
        Ok(None) => assert_eq!(at, fed, "the stream ended inside a frame without an error"),
        Err(CodecError::Io(error)) => {
            assert!(at < fed, "an error at a clean end of stream: {error}");
        }
        other => panic!("at the end of the stream, after \"need more\": {other:?}"),
    }
}
