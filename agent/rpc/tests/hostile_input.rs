//! The decoder under hostile input, from a seeded generator: random bytes, valid streams with
//! bytes flipped, and every way of cutting a stream into reads. It never panics, never holds
//! more than a bounded buffer, and decodes valid streams exactly however they are cut, whether
//! from a byte buffer ([`FrameCodec`]) or from shared chunks ([`ChunkDecoder`]).
//!
//! A failure prints its seed; `QUIVER_FUZZ_SEED=<seed>` replays it and `QUIVER_FUZZ_CASES=<n>`
//! runs more cases (default 3000 per test).

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use quiver_rpc::{
    ChunkDecoder, CodecError, Frame, FrameCodec, FrameType, HEADER_LEN, Header, Priority,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::codec::{Decoder as _, FramedRead};

/// Small, so that claimed lengths far above it are common in random input.
const MAX_PAYLOAD: u32 = 4096;

fn cases() -> u64 {
    std::env::var("QUIVER_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000)
}

/// Runs `case` once per seed; a panic names the seed that caused it.
fn for_each_seed(test: &str, case: impl Fn(&mut StdRng)) {
    let seeds: Vec<u64> = match std::env::var("QUIVER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (0..cases()).collect(),
    };
    for seed in seeds {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            case(&mut StdRng::seed_from_u64(seed));
        }));
        if let Err(panic) = outcome {
            eprintln!("{test}: failed with QUIVER_FUZZ_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}

fn random_frame(rng: &mut StdRng) -> Frame {
    let frame_type = [
        FrameType::Request,
        FrameType::Response,
        FrameType::Error,
        FrameType::StreamData,
        FrameType::StreamEnd,
        FrameType::Heartbeat,
    ][rng.random_range(0..6)];
    let priority = [
        Priority::Election,
        Priority::Heartbeat,
        Priority::LogAppend,
        Priority::Snapshot,
        Priority::Normal,
    ][rng.random_range(0..5)];
    let heartbeat = frame_type == FrameType::Heartbeat;
    let header = Header {
        frame_type,
        priority,
        service: if heartbeat { 0 } else { rng.random() },
        method: if heartbeat { 0 } else { rng.random() },
        request_id: rng.random(),
        deadline_ms: if frame_type == FrameType::Request {
            rng.random()
        } else {
            0
        },
    };
    let len = if rng.random_bool(0.1) {
        MAX_PAYLOAD as usize
    } else {
        rng.random_range(0..64)
    };
    let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    Frame::new(header, payload)
}

/// Feeds `input` in random-sized reads; returns the frames, and the error that ended decoding.
/// Asserts the buffer stays bounded after every read.
fn decode_in_reads(rng: &mut StdRng, input: &[u8]) -> (Vec<Frame>, Option<CodecError>) {
    let mut codec = FrameCodec::new(MAX_PAYLOAD);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = input;
    let largest_read = 2 * (HEADER_LEN + MAX_PAYLOAD as usize);
    while !rest.is_empty() {
        let take = rng.random_range(1..=rest.len().min(largest_read));
        buf.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
        // What a reader holds is one unfinished frame plus what one read brought beyond it,
        // with slack for BytesMut's growth policy: a constant, whatever length a header claims.
        let bound = 4 * (HEADER_LEN + MAX_PAYLOAD as usize + largest_read);
        assert!(
            buf.capacity() <= bound,
            "buffer grew to {} bytes (bound {bound})",
            buf.capacity()
        );
    }
    (frames, None)
}

/// Flips one to three random bits of `wire` (not empty).
fn flip_bits(rng: &mut StdRng, wire: &mut [u8]) {
    for _ in 0..rng.random_range(1..4) {
        let at = rng.random_range(0..wire.len());
        wire[at] ^= 1 << rng.random_range(0..8);
    }
}

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut wire = Vec::new();
    for frame in frames {
        frame
            .encode(&mut wire, MAX_PAYLOAD)
            .expect("generated frames are valid");
    }
    wire
}

#[test]
fn valid_streams_decode_the_same_however_they_are_cut() {
    for_each_seed("valid_streams", |rng| {
        let frames: Vec<Frame> = (0..rng.random_range(1..8))
            .map(|_| random_frame(rng))
            .collect();
        let (decoded, error) = decode_in_reads(rng, &encode_all(&frames));
        assert!(error.is_none(), "valid stream refused: {error:?}");
        assert_eq!(decoded, frames);
    });
}

#[test]
fn random_bytes_are_frames_errors_or_need_more_never_a_panic() {
    for_each_seed("random_bytes", |rng| {
        let len = rng.random_range(0..3 * HEADER_LEN + 64);
        let mut input: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Random headers are mostly wrong in their first byte; make a valid version common.
        if rng.random_bool(0.7) && !input.is_empty() {
            input[0] = 1;
        }
        let (frames, _error) = decode_in_reads(rng, &input);
        for frame in frames {
            assert!(frame.payload.len() <= MAX_PAYLOAD as usize);
        }
    });
}

#[test]
fn flipped_bytes_in_valid_streams_never_panic_or_overrun() {
    for_each_seed("flipped_bytes", |rng| {
        let frames: Vec<Frame> = (0..rng.random_range(1..5))
            .map(|_| random_frame(rng))
            .collect();
        let mut wire = encode_all(&frames);
        flip_bits(rng, &mut wire);
        let (decoded, _error) = decode_in_reads(rng, &wire);
        // Whatever decodes re-encodes to a valid frame: the decoder admits nothing the encoder refuses.
        for frame in decoded {
            frame
                .encode(&mut Vec::new(), MAX_PAYLOAD)
                .expect("decoded frames are valid");
        }
    });
}

#[test]
fn a_claimed_length_above_the_maximum_is_refused_before_its_payload_arrives() {
    let mut head = vec![1, 1, 2, 4, 0, 3, 0, 1];
    head.extend_from_slice(&1u64.to_be_bytes());
    head.extend_from_slice(&u32::MAX.to_be_bytes());
    head.extend_from_slice(&0u32.to_be_bytes());
    let mut buf = BytesMut::from(&head[..]);
    let error = FrameCodec::new(MAX_PAYLOAD)
        .decode(&mut buf)
        .expect_err("refused");
    assert!(error.to_string().contains("payload length"), "{error}");
    assert!(
        buf.capacity() < 1024,
        "nothing reserved for the claimed payload"
    );
}

#[tokio::test]
async fn framed_read_over_a_byte_stream_yields_frames_then_the_error() {
    let mut rng = StdRng::seed_from_u64(7);
    let frames: Vec<Frame> = (0..20).map(|_| random_frame(&mut rng)).collect();
    let mut wire = encode_all(&frames);
    wire.extend_from_slice(&[9; HEADER_LEN]); // a header with version 9
    let (mut writer, reader) = tokio::io::duplex(64);
    let writing = tokio::spawn(async move {
        tokio::io::AsyncWriteExt::write_all(&mut writer, &wire)
            .await
            .expect("write");
    });
    let mut read = FramedRead::new(reader, FrameCodec::new(MAX_PAYLOAD));
    for expected in &frames {
        let frame = read.next().await.expect("a frame").expect("valid");
        assert_eq!(&frame, expected);
    }
    let error = read
        .next()
        .await
        .expect("an item")
        .expect_err("version 9 is malformed");
    assert!(matches!(error, CodecError::Frame { .. }), "{error}");
    writing.await.expect("writer");
}

/// Takes frames from `next` into `frames` until it needs more bytes (`Ok`) or fails (the error).
fn take_frames(
    frames: &mut Vec<Frame>,
    mut next: impl FnMut() -> Result<Option<Frame>, CodecError>,
) -> Result<(), String> {
    while let Some(frame) = next().map_err(|error| error.to_string())? {
        frames.push(frame);
    }
    Ok(())
}

/// Every frame, then the error if one ended the stream, reading `input` in one buffer.
fn decode_whole(input: &[u8]) -> (Vec<Frame>, Option<String>) {
    let mut codec = FrameCodec::new(MAX_PAYLOAD);
    let mut buf = BytesMut::from(input);
    let mut frames = Vec::new();
    let end = take_frames(&mut frames, || codec.decode_eof(&mut buf));
    (frames, end.err())
}

/// The same through [`ChunkDecoder`], `input` cut into random chunks; asserts its buffer stays
/// bounded after every chunk.
fn decode_chunks(rng: &mut StdRng, input: &[u8]) -> (Vec<Frame>, Option<String>) {
    let input = Bytes::copy_from_slice(input);
    let mut decoder = ChunkDecoder::new(MAX_PAYLOAD);
    let mut frames = Vec::new();
    let mut at = 0;
    let largest_chunk = 2 * (HEADER_LEN + MAX_PAYLOAD as usize);
    while at < input.len() {
        let take = rng.random_range(1..=(input.len() - at).min(largest_chunk));
        decoder.push(input.slice(at..at + take));
        at += take;
        if let Err(error) = take_frames(&mut frames, || decoder.next_frame()) {
            return (frames, Some(error));
        }
        let bound = 4 * (HEADER_LEN + MAX_PAYLOAD as usize);
        assert!(
            decoder.capacity() <= bound,
            "assembly buffer grew to {} bytes (bound {bound})",
            decoder.capacity()
        );
    }
    let end = take_frames(&mut frames, || decoder.finish());
    (frames, end.err())
}

#[test]
fn chunked_decoding_agrees_with_the_buffered_decoder() {
    for_each_seed("chunked", |rng| {
        let frames: Vec<Frame> = (0..rng.random_range(0..6))
            .map(|_| random_frame(rng))
            .collect();
        let mut input = encode_all(&frames);
        match rng.random_range(0..4) {
            // Valid, as generated.
            0 => {}
            // Cut short.
            1 if !input.is_empty() => input.truncate(rng.random_range(0..input.len())),
            // Bytes flipped.
            2 if !input.is_empty() => flip_bits(rng, &mut input),
            // Random bytes after the frames, often a valid version.
            _ => {
                let tail: Vec<u8> = (0..rng.random_range(1..3 * HEADER_LEN))
                    .map(|i| if i == 0 { 1 } else { rng.random() })
                    .collect();
                input.extend(tail);
            }
        }
        assert_eq!(decode_chunks(rng, &input), decode_whole(&input));
    });
}
