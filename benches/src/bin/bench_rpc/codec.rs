//! The Raft service's codec, timed in-process: openraft's messages as the agents send them
//! (`quiver_raft::wire`, postcard) in a `quiver/rpc/1` frame, next to postcard alone (the floor)
//! and JSON (the encoding the Raft service used before, measured in the same run).
//!
//! The messages: a vote request; a heartbeat (an append with no entries); appends of 1 and 100
//! entries, each a ledger `PutVm` of about 100 bytes; a 1 MiB snapshot chunk.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, SnapshotMeta, StoredMembership, Vote,
};
use quiver_raft::ledger::DesiredVm;
use quiver_raft::{Batch, Command, TypeConfig, wire};
use quiver_rpc::{
    ChunkDecoder, DEFAULT_MAX_PAYLOAD, Frame, FrameChunks, FrameType, HEADER_LEN, Header, Priority,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Sizes;

fn log_id(index: u64) -> Option<LogId<u64>> {
    Some(LogId::new(CommittedLeaderId::new(7, 3), index))
}

/// A ledger entry of about 100 bytes: a put with a 60-byte request.
fn entry(index: u64) -> Entry<TypeConfig> {
    let vm = DesiredVm {
        uid: format!("vm-{index:06}"),
        generation: 1,
        cpus: 1,
        memory_mib: 256,
        node_selector: BTreeMap::new(),
        request: vec![0x5a; 60],
    };
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(7, 3), index),
        payload: EntryPayload::Normal(Batch(vec![Command::PutVm(vm)])),
    }
}

fn append(entries: u64) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(7, 3),
        prev_log_id: log_id(1_000),
        entries: (0..entries).map(|i| entry(1_001 + i)).collect(),
        leader_commit: log_id(1_000),
    }
}

type Op = Box<dyn Fn() -> anyhow::Result<Vec<u8>>>;
type EncodeInto = Box<dyn Fn(&mut Vec<u8>) -> anyhow::Result<()>>;
type DecodeOp = Box<dyn Fn(&[u8]) -> anyhow::Result<()>>;

/// One message to time: its name, how it is encoded and decoded, in postcard and in JSON.
pub struct Case {
    pub name: &'static str,
    pub published_ser: Duration,
    pub published_de: Duration,
    /// Encodes into a new buffer, as a caller building a frame does.
    encode: Op,
    /// Encodes into the end of a buffer the caller reuses (postcard alone).
    encode_into: EncodeInto,
    decode: DecodeOp,
    encode_json: Op,
    decode_json: DecodeOp,
    priority: Priority,
}

fn case<M: Serialize + DeserializeOwned + Clone + 'static>(
    name: &'static str,
    published_ns: (u64, u64),
    priority: Priority,
    message: M,
) -> Case {
    let (reused, json) = (message.clone(), message.clone());
    Case {
        name,
        published_ser: Duration::from_nanos(published_ns.0),
        published_de: Duration::from_nanos(published_ns.1),
        encode: Box::new(move || Ok(wire::encode(&message)?)),
        encode_into: Box::new(move |dst| {
            let buffer = std::mem::take(dst);
            *dst = postcard::to_extend(&reused, buffer)?;
            Ok(())
        }),
        decode: Box::new(|payload| {
            black_box(wire::decode::<M>(payload)?);
            Ok(())
        }),
        encode_json: Box::new(move || Ok(serde_json::to_vec(&json)?)),
        decode_json: Box::new(|payload| {
            black_box(serde_json::from_slice::<M>(payload)?);
            Ok(())
        }),
        priority,
    }
}

/// A snapshot chunk, which the agents send as [`wire::SnapshotChunk`] (the data as one byte
/// string) and read with [`wire::decode_snapshot_chunk`]; JSON as before, through openraft's type.
fn snapshot_case(published_ns: (u64, u64), chunk: InstallSnapshotRequest<TypeConfig>) -> Case {
    let (reused, json) = (chunk.clone(), chunk.clone());
    Case {
        name: "snapshot chunk, 1 MiB",
        published_ser: Duration::from_nanos(published_ns.0),
        published_de: Duration::from_nanos(published_ns.1),
        encode: Box::new(move || Ok(wire::encode(&wire::SnapshotChunk::from(&chunk))?)),
        // Through `io::Write`, which takes the data as one slice (`to_extend` takes it a byte
        // at a time).
        encode_into: Box::new(move |dst| {
            postcard::to_io(&wire::SnapshotChunk::from(&reused), &mut *dst)?;
            Ok(())
        }),
        decode: Box::new(|payload| {
            black_box(wire::decode_snapshot_chunk(payload)?);
            Ok(())
        }),
        encode_json: Box::new(move || Ok(serde_json::to_vec(&json)?)),
        decode_json: Box::new(|payload| {
            black_box(serde_json::from_slice::<InstallSnapshotRequest<TypeConfig>>(payload)?);
            Ok(())
        }),
        priority: Priority::Snapshot,
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
            VoteRequest::new(Vote::new(8, 2), log_id(1_000)),
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
        snapshot_case(
            (83_900, 186_700),
            InstallSnapshotRequest::<TypeConfig> {
                vote: Vote::new_committed(7, 3),
                meta: SnapshotMeta {
                    last_log_id: log_id(1_000),
                    last_membership: StoredMembership::default(),
                    snapshot_id: "7-3-1000".to_owned(),
                },
                offset: 0,
                data: vec![0x5a; 1 << 20],
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
    /// Frame + postcard, as the transport does it.
    pub ser: Duration,
    pub de: Duration,
    /// The frame alone: the same path around a payload already encoded (ser: the header and
    /// the chunks made; de: the chunks through `ChunkDecoder`, the payload not decoded). The
    /// transport's share of `ser` and `de`.
    pub frame_ser: Duration,
    pub frame_de: Duration,
    /// Postcard alone, into a reused buffer / from a slice: the floor of this encoding.
    pub alone_ser: Duration,
    pub alone_de: Duration,
    /// Frame + JSON, the Raft service's earlier encoding.
    pub json_ser: Duration,
    pub json_de: Duration,
    pub wire_bytes: usize,
    pub json_wire_bytes: usize,
}

/// Times every case.
pub fn all(sizes: Sizes) -> anyhow::Result<Vec<(Case, Timing)>> {
    let mut rows = Vec::new();
    for case in cases() {
        let timing = time(&case, sizes.codec_batches, sizes.codec_batch_time)?;
        println!(
            "codec {}: ser {:?} de {:?} (frame alone {:?} / {:?}; postcard alone {:?} / {:?}; JSON {:?} / {:?})",
            case.name,
            timing.ser,
            timing.de,
            timing.frame_ser,
            timing.frame_de,
            timing.alone_ser,
            timing.alone_de,
            timing.json_ser,
            timing.json_de
        );
        rows.push((case, timing));
    }
    Ok(rows)
}

/// One copy of 1 MiB into a new buffer (allocation included), median over the batches.
pub fn copy_floor(sizes: Sizes) -> anyhow::Result<Duration> {
    let data = vec![0x5a_u8; 1 << 20];
    let started = Instant::now();
    black_box(data.clone());
    let per_batch = calls_per_batch(sizes.codec_batch_time, started.elapsed());
    median_of(
        sizes.codec_batches,
        per_batch,
        || {},
        || {
            black_box(data.clone());
            Ok(())
        },
    )
}

/// Calls per batch for an operation that took `one` once: enough to fill `batch_time`, within
/// bounds (a clock's resolution below 50 ns; at most 100 000 calls).
fn calls_per_batch(batch_time: Duration, one: Duration) -> usize {
    let one = one.max(Duration::from_nanos(50));
    usize::try_from(batch_time.as_nanos() / one.as_nanos())
        .unwrap_or(usize::MAX)
        .clamp(1, 100_000)
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

/// Frame + encoding, timed both ways.
struct Framed {
    ser: Duration,
    de: Duration,
    wire: Bytes,
}

/// The most stream data one QUIC packet carries on loopback here (its 1200-byte minimum less
/// headers, rounded down): a frame longer than this arrives in several chunks.
pub const CHUNK: usize = 1100;

/// Serialization: encode the message and frame it as a writer sends it (`Frame::into_chunks`:
/// one chunk, header and payload, up to `COALESCE_MAX` bytes of payload; above, the header and
/// the payload not copied). Deserialization: the frame's wire bytes
/// as QUIC delivers them, in chunks of [`CHUNK`] bytes (split off the clock, as the socket
/// would), through the readers' [`ChunkDecoder`], then its payload decoded: a frame that fits a
/// chunk is taken without a copy, a longer one is assembled. Every result is dropped inside the
/// timed region.
fn framed(
    case: &Case,
    encode: &dyn Fn() -> anyhow::Result<Bytes>,
    decode: &dyn Fn(&[u8]) -> anyhow::Result<()>,
    batches: usize,
    batch_time: Duration,
) -> anyhow::Result<Framed> {
    let encode_one = || -> anyhow::Result<FrameChunks> {
        let frame = Frame::new(header(case.priority), encode()?);
        Ok(frame.into_chunks(DEFAULT_MAX_PAYLOAD)?)
    };
    let wire: Bytes = encode_one()?.as_mut_slice().concat().into();
    let chunks: Vec<Bytes> = (0..wire.len())
        .step_by(CHUNK)
        .map(|at| wire.slice(at..(at + CHUNK).min(wire.len())))
        .collect();
    // Takes one frame's chunks from the end of `inputs` (where they lie in reverse order), so
    // that no container of them is freed inside the timing.
    let decode_one = |inputs: &mut Vec<Bytes>| -> anyhow::Result<()> {
        let mut decoder = ChunkDecoder::new(DEFAULT_MAX_PAYLOAD);
        while let Some(chunk) = inputs.pop() {
            decoder.push(chunk);
            if let Some(frame) = decoder.next_frame()? {
                return decode(&frame.payload);
            }
        }
        anyhow::bail!("{}: an incomplete frame", case.name)
    };
    let inputs_for = |frames: usize| -> Vec<Bytes> {
        let mut inputs = Vec::with_capacity(frames * chunks.len());
        for _ in 0..frames {
            inputs.extend(chunks.iter().rev().cloned());
        }
        inputs
    };
    decode_one(&mut inputs_for(1))?;

    // Calibrate the batch size on one operation of each kind.
    let started = Instant::now();
    black_box(encode_one()?);
    decode_one(&mut inputs_for(1))?;
    let per_batch = calls_per_batch(batch_time, started.elapsed());

    let ser = median_of(
        batches,
        per_batch,
        || {},
        || {
            black_box(encode_one()?);
            Ok(())
        },
    )?;
    let inputs = std::cell::RefCell::new(Vec::new());
    let de = median_of(
        batches,
        per_batch,
        || *inputs.borrow_mut() = inputs_for(per_batch),
        || decode_one(&mut inputs.borrow_mut()),
    )?;
    Ok(Framed { ser, de, wire })
}

/// Times one case: frame + postcard, the frame alone, postcard alone, frame + JSON.
pub fn time(case: &Case, batches: usize, batch_time: Duration) -> anyhow::Result<Timing> {
    let postcard = framed(
        case,
        &|| Ok((case.encode)()?.into()),
        &case.decode,
        batches,
        batch_time,
    )?;
    let payload = postcard.wire.slice(HEADER_LEN..);
    // The same frames around the payload already encoded (shared, not copied), not decoded.
    let frame_alone = framed(
        case,
        &|| Ok(payload.clone()),
        &|_| Ok(()),
        batches,
        batch_time,
    )?;
    let json = framed(
        case,
        &|| Ok((case.encode_json)()?.into()),
        &case.decode_json,
        batches,
        batch_time,
    )?;
    let started = Instant::now();
    (case.decode)(&payload)?;
    let per_batch = calls_per_batch(batch_time, started.elapsed());
    let mut reused = Vec::with_capacity(payload.len());
    let alone_ser = median_of(
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
    let alone_de = median_of(batches, per_batch, || {}, || (case.decode)(&payload))?;
    Ok(Timing {
        ser: postcard.ser,
        de: postcard.de,
        frame_ser: frame_alone.ser,
        frame_de: frame_alone.de,
        alone_ser,
        alone_de,
        json_ser: json.ser,
        json_de: json.de,
        wire_bytes: postcard.wire.len(),
        json_wire_bytes: json.wire.len(),
    })
}
