//! Frame + protobuf serialization of Raft-shaped messages, timed in-process.
//!
//! openraft is not in the workspace yet, so the messages are plain prost messages shaped like
//! openraft 0.9's: a log id is (term, node id, index); a vote request names the candidate and its
//! last log id; an append carries entries of about 100 bytes of payload; a heartbeat is an append
//! with no entries; a snapshot chunk carries its metadata, an offset and the data.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prost::Message;
use quiver_rpc::{Frame, FrameCodec, FrameType, HEADER_LEN, Header, Priority};
use tokio_util::codec::{Decoder as _, Encoder as _};

use crate::Sizes;

#[derive(Clone, PartialEq, Message)]
pub struct LogId {
    #[prost(uint64, tag = "1")]
    pub term: u64,
    #[prost(uint64, tag = "2")]
    pub node_id: u64,
    #[prost(uint64, tag = "3")]
    pub index: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct VoteRequest {
    #[prost(uint64, tag = "1")]
    pub term: u64,
    #[prost(uint64, tag = "2")]
    pub candidate: u64,
    #[prost(message, optional, tag = "3")]
    pub last_log_id: Option<LogId>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Entry {
    #[prost(message, optional, tag = "1")]
    pub log_id: Option<LogId>,
    #[prost(bytes = "bytes", tag = "2")]
    pub payload: Bytes,
}

#[derive(Clone, PartialEq, Message)]
pub struct AppendEntries {
    #[prost(uint64, tag = "1")]
    pub term: u64,
    #[prost(uint64, tag = "2")]
    pub leader: u64,
    #[prost(message, optional, tag = "3")]
    pub prev_log_id: Option<LogId>,
    #[prost(message, repeated, tag = "4")]
    pub entries: Vec<Entry>,
    #[prost(message, optional, tag = "5")]
    pub leader_commit: Option<LogId>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SnapshotChunk {
    #[prost(uint64, tag = "1")]
    pub term: u64,
    #[prost(uint64, tag = "2")]
    pub leader: u64,
    #[prost(message, optional, tag = "3")]
    pub last_log_id: Option<LogId>,
    #[prost(string, tag = "4")]
    pub snapshot_id: String,
    #[prost(uint64, tag = "5")]
    pub offset: u64,
    #[prost(bytes = "bytes", tag = "6")]
    pub data: Bytes,
    #[prost(bool, tag = "7")]
    pub done: bool,
}

fn log_id(index: u64) -> Option<LogId> {
    Some(LogId {
        term: 7,
        node_id: 3,
        index,
    })
}

fn append(entries: u64) -> AppendEntries {
    AppendEntries {
        term: 7,
        leader: 3,
        prev_log_id: log_id(1_000),
        entries: (0..entries)
            .map(|i| Entry {
                log_id: log_id(1_001 + i),
                payload: Bytes::from(vec![0x5a; 100]),
            })
            .collect(),
        leader_commit: log_id(1_000),
    }
}

type EncodeInto = Box<dyn Fn(&mut BytesMut) -> anyhow::Result<()>>;

/// One message to time: its name, how it is encoded, and how it is decoded.
pub struct Case {
    pub name: &'static str,
    pub published_ser: Duration,
    pub published_de: Duration,
    /// Protobuf-encodes into a new buffer, as a caller building a frame does.
    encode: Box<dyn Fn() -> Bytes>,
    /// Protobuf-encodes into the end of a buffer the caller reuses.
    encode_into: EncodeInto,
    decode: fn(Bytes) -> anyhow::Result<()>,
    priority: Priority,
}

fn case<M: Message + Default + Clone + 'static>(
    name: &'static str,
    published_ns: (u64, u64),
    priority: Priority,
    message: M,
) -> Case {
    let reused = message.clone();
    Case {
        name,
        published_ser: Duration::from_nanos(published_ns.0),
        published_de: Duration::from_nanos(published_ns.1),
        encode: Box::new(move || Bytes::from(message.encode_to_vec())),
        encode_into: Box::new(move |dst| Ok(reused.encode(dst)?)),
        decode: |payload| {
            black_box(M::decode(payload)?);
            Ok(())
        },
        priority,
    }
}

/// The messages of the published table, with its figures (ser, de in ns).
pub fn cases() -> Vec<Case> {
    vec![
        case("heartbeat", (382, 208), Priority::Heartbeat, append(0)),
        case(
            "vote",
            (408, 238),
            Priority::Election,
            VoteRequest {
                term: 8,
                candidate: 2,
                last_log_id: log_id(1_000),
            },
        ),
        case(
            "append, 1 entry",
            (929, 627),
            Priority::LogAppend,
            append(1),
        ),
        case(
            "append, 100 entries",
            (73_900, 80_800),
            Priority::LogAppend,
            append(100),
        ),
        case(
            "snapshot chunk, 1 MiB",
            (83_900, 186_700),
            Priority::Snapshot,
            SnapshotChunk {
                term: 7,
                leader: 3,
                last_log_id: log_id(1_000),
                snapshot_id: "7-3-1000".to_owned(),
                offset: 0,
                data: Bytes::from(vec![0x5a; 1 << 20]),
                done: false,
            },
        ),
    ]
}

fn header(priority: Priority) -> Header {
    Header {
        frame_type: FrameType::Request,
        priority,
        service: 9,
        method: 1,
        request_id: 42,
        deadline_ms: 5_000,
    }
}

/// Median times per operation over the batches.
pub struct Timing {
    /// Frame + protobuf, as the transport does it.
    pub ser: Duration,
    pub de: Duration,
    /// Protobuf alone with no allocation on the encoding side: the floor of any protobuf codec.
    pub prost_ser: Duration,
    pub prost_de: Duration,
    pub wire_bytes: usize,
}

/// Times every case.
pub fn all(sizes: Sizes) -> anyhow::Result<Vec<(Case, Timing)>> {
    let mut rows = Vec::new();
    for case in cases() {
        let timing = time(&case, sizes.codec_batches, sizes.codec_batch_time)?;
        println!(
            "codec {}: ser {:?} de {:?} (protobuf alone {:?} / {:?})",
            case.name, timing.ser, timing.de, timing.prost_ser, timing.prost_de
        );
        rows.push((case, timing));
    }
    Ok(rows)
}

/// Median time of one `op` over `batches` batches of `per_batch` calls, after one uncounted
/// batch that warms caches and the allocator. `prepare` runs before each batch, off the clock.
fn median_of(
    batches: usize,
    per_batch: usize,
    mut prepare: impl FnMut(),
    mut op: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(batches);
    for batch in 0..=batches {
        prepare();
        let started = Instant::now();
        for _ in 0..per_batch {
            op()?;
        }
        if batch > 0 {
            times.push(started.elapsed() / u32::try_from(per_batch)?);
        }
    }
    times.sort_unstable();
    Ok(times.get(times.len() / 2).copied().unwrap_or_default())
}

/// Serialization: protobuf-encode the message, then frame it into a new write buffer (the
/// client's path: one buffer per request). Deserialization: decode the frame from a read buffer
/// and protobuf-decode its payload; the read buffers are filled outside the timed region (as
/// the socket would fill them). Every result is dropped inside the timed region.
pub fn time(case: &Case, batches: usize, batch_time: Duration) -> anyhow::Result<Timing> {
    let mut codec = FrameCodec::default();
    let mut encode_one = |dst: &mut BytesMut| -> anyhow::Result<()> {
        let frame = Frame::new(header(case.priority), (case.encode)());
        codec.encode(frame, dst)?;
        Ok(())
    };
    let mut wire = BytesMut::new();
    encode_one(&mut wire)?;
    let wire = wire.freeze();
    let payload = wire.slice(HEADER_LEN..);
    let mut decoder = FrameCodec::default();
    let mut decode_one = |src: &mut BytesMut| -> anyhow::Result<()> {
        let frame = decoder
            .decode(src)?
            .ok_or_else(|| anyhow::anyhow!("{}: an incomplete frame", case.name))?;
        (case.decode)(frame.payload)
    };
    decode_one(&mut BytesMut::from(&wire[..]))?;

    // Calibrate the batch size on one operation of each kind.
    let started = Instant::now();
    encode_one(&mut BytesMut::new())?;
    decode_one(&mut BytesMut::from(&wire[..]))?;
    let one = started.elapsed().max(Duration::from_nanos(50));
    let per_batch = usize::try_from(batch_time.as_nanos() / one.as_nanos())
        .unwrap_or(usize::MAX)
        .clamp(1, 100_000);

    let ser = median_of(
        batches,
        per_batch,
        || {},
        || {
            let mut dst = BytesMut::new();
            encode_one(&mut dst)?;
            black_box(dst);
            Ok(())
        },
    )?;
    let inputs = std::cell::RefCell::new(Vec::new());
    let de = median_of(
        batches,
        per_batch,
        || *inputs.borrow_mut() = (0..per_batch).map(|_| BytesMut::from(&wire[..])).collect(),
        || {
            let mut src = inputs.borrow_mut().pop().unwrap_or_default();
            decode_one(&mut src)
        },
    )?;
    let mut reused = BytesMut::with_capacity(wire.len());
    let prost_ser = median_of(
        batches,
        per_batch,
        || {},
        || {
            reused.clear();
            (case.encode_into)(&mut reused)?;
            black_box(&reused);
            Ok(())
        },
    )?;
    let prost_de = median_of(batches, per_batch, || {}, || (case.decode)(payload.clone()))?;
    Ok(Timing {
        ser,
        de,
        prost_ser,
        prost_de,
        wire_bytes: wire.len(),
    })
}
