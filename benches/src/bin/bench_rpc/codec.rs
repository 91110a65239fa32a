//! Frame + protobuf serialization of Raft-shaped messages, timed in-process.
//!
//! openraft is not in the workspace yet, so the messages are plain prost messages shaped like
//! openraft 0.9's: a log id is (term, node id, index); a vote request names the candidate and its
//! last log id; an append carries entries of about 100 bytes of payload; a heartbeat is an append
//! with no entries; a snapshot chunk carries its metadata, an offset and the data.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prost::Message;
use quiver_rpc::{Frame, FrameCodec, FrameType, Header, Priority};
use tokio_util::codec::{Decoder as _, Encoder as _};

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

/// One message to time: its name, how it is encoded, and how it is decoded.
pub struct Case {
    pub name: &'static str,
    pub published_ser: Duration,
    pub published_de: Duration,
    encode: Box<dyn Fn() -> Bytes>,
    decode: fn(Bytes) -> anyhow::Result<()>,
    priority: Priority,
}

fn case<M: Message + Default + Clone + 'static>(
    name: &'static str,
    published_ns: (u64, u64),
    priority: Priority,
    message: M,
) -> Case {
    Case {
        name,
        published_ser: Duration::from_nanos(published_ns.0),
        published_de: Duration::from_nanos(published_ns.1),
        encode: Box::new(move || Bytes::from(message.encode_to_vec())),
        decode: |payload| {
            M::decode(payload)?;
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

/// Median time per operation over `batches` batches (each about `batch_time` long).
pub struct Timing {
    pub ser: Duration,
    pub de: Duration,
    pub wire_bytes: usize,
}

/// Serialization: protobuf-encode the message, then frame it into a write buffer.
/// Deserialization: decode the frame from a read buffer, then protobuf-decode its payload.
/// Buffers are filled outside the timed region (as the socket would fill them).
pub fn time(case: &Case, batches: usize, batch_time: Duration) -> anyhow::Result<Timing> {
    let mut codec = FrameCodec::default();
    let encode_one = |codec: &mut FrameCodec, dst: &mut BytesMut| -> anyhow::Result<()> {
        let frame = Frame::new(header(case.priority), (case.encode)());
        codec.encode(frame, dst)?;
        Ok(())
    };
    let mut wire = BytesMut::new();
    encode_one(&mut codec, &mut wire)?;
    let wire = wire.freeze();
    let decode_one = |codec: &mut FrameCodec, src: &mut BytesMut| -> anyhow::Result<()> {
        let frame = codec
            .decode(src)?
            .ok_or_else(|| anyhow::anyhow!("{}: an incomplete frame", case.name))?;
        (case.decode)(frame.payload)
    };
    decode_one(&mut codec, &mut BytesMut::from(&wire[..]))?;

    // Calibrate the batch size on one timed operation of each kind.
    let started = Instant::now();
    encode_one(&mut codec, &mut BytesMut::new())?;
    decode_one(&mut codec, &mut BytesMut::from(&wire[..]))?;
    let one = started.elapsed().max(Duration::from_nanos(50));
    let per_batch = usize::try_from(batch_time.as_nanos() / one.as_nanos())
        .unwrap_or(usize::MAX)
        .clamp(1, 100_000);

    let (mut ser, mut de) = (Vec::new(), Vec::new());
    // The first batch warms caches and the allocator and is not counted.
    for batch in 0..=batches {
        let mut outputs: Vec<BytesMut> = (0..per_batch).map(|_| BytesMut::new()).collect();
        let started = Instant::now();
        for dst in &mut outputs {
            encode_one(&mut codec, dst)?;
        }
        let ser_batch = started.elapsed();
        drop(outputs);
        let mut inputs: Vec<BytesMut> = (0..per_batch).map(|_| BytesMut::from(&wire[..])).collect();
        let started = Instant::now();
        for src in &mut inputs {
            decode_one(&mut codec, src)?;
        }
        let de_batch = started.elapsed();
        if batch > 0 {
            ser.push(ser_batch / per_batch as u32);
            de.push(de_batch / per_batch as u32);
        }
    }
    Ok(Timing {
        ser: median(&mut ser),
        de: median(&mut de),
        wire_bytes: wire.len(),
    })
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}
