//! `bench-rpc`: the `quiver/rpc/1` transport against its baselines, in one run.
//!
//! Measures the Raft codec (frame + postcard, against JSON), unary round trips at 1/16/64 calls
//! in flight over this protocol on Iroh, tonic with mutual TLS, irpc-iroh, a raw Iroh bi-stream
//! echo and raw TCP (and tonic over `tonic-iroh-transport`, a crate of its own, when
//! `benches/run.sh` built it: see `tonic_iroh`), bulk throughput, connect and reconnect times,
//! and heartbeat latency under bulk load with QUIC priorities on and off. Rewrites the `rpc`
//! section of `docs/benchmarks.md` and `docs/benchmarks/rpc.json`; `--smoke` runs every part at
//! a tiny size and writes nothing (it keeps the harness from rotting in CI), `--no-write` runs
//! in full and writes nothing.

mod codec;
mod grpc;
mod links;
mod load;
mod over_iroh;
mod over_irpc;
mod priority;
mod record;
mod report;
mod tcp;
mod tonic_iroh;
mod unary;

use std::time::Duration;

use quiver_benches::{docs_path, json_path, write_json, write_section};

/// How much of everything to run.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub codec_batches: usize,
    pub codec_batch_time: Duration,
    /// Calls per in-flight level (1, 16 and 64 in flight), over all rounds.
    pub calls: [usize; 3],
    /// Rounds per level; each round runs every transport once.
    pub rounds: usize,
    /// Uncounted calls before each round of each transport.
    pub warmup: usize,
    pub bulk_bytes: u64,
    pub bulk_runs: usize,
    pub connects: usize,
    pub reconnects: usize,
    pub idle_heartbeats: usize,
}

const FULL: Sizes = Sizes {
    codec_batches: 31,
    codec_batch_time: Duration::from_millis(5),
    calls: [6_000, 24_000, 48_000],
    rounds: 5,
    warmup: 200,
    bulk_bytes: 256 << 20,
    bulk_runs: 3,
    connects: 20,
    reconnects: 5,
    idle_heartbeats: 500,
};

const SMOKE: Sizes = Sizes {
    codec_batches: 2,
    codec_batch_time: Duration::from_millis(1),
    calls: [20, 64, 128],
    rounds: 1,
    warmup: 2,
    bulk_bytes: 4 << 20,
    bulk_runs: 1,
    connects: 2,
    reconnects: 1,
    idle_heartbeats: 5,
};

pub const IN_FLIGHT: [usize; 3] = [1, 16, 64];
pub const REQUEST_BYTES: usize = 64;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let write = !smoke && !std::env::args().any(|a| a == "--no-write");
    let sizes = if smoke { SMOKE } else { FULL };
    let load_before = report::load_average();

    let codec = codec::all(sizes)?;
    let copy_mib = codec::copy_floor(sizes)?;
    println!("copy of 1 MiB: {copy_mib:?}");
    let unaries = unary::all(sizes).await?;
    let bulk = links::bulk(sizes).await?;
    println!("bulk: (a) {:.0} B/s, (d) {:.0} B/s", bulk.0, bulk.1);
    let connects = links::connects(sizes).await?;
    let idle_heartbeats = priority::idle(true, sizes.idle_heartbeats).await?;
    let priorities = priority::all(sizes.bulk_bytes).await?;

    let results = report::Results {
        smoke,
        sizes,
        codec,
        copy_mib,
        unaries,
        bulk,
        connects,
        idle_heartbeats,
        priorities,
        load_before,
        load_after: report::load_average(),
    };
    let body = report::render(&results);
    println!("{body}");
    if write {
        write_section(&docs_path(), "rpc", &body)?;
        write_json(&json_path("rpc"), &record::json(&results))?;
    }
    Ok(())
}
