//! The `rpc` section of `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::time::Duration;

use quiver_benches::{Samples, fmt_duration};

use crate::codec::{CHUNK, Case, Timing};
use crate::links::Connects;
use crate::priority::PriorityRun;
use crate::unary::Unary;
use crate::{IN_FLIGHT, REQUEST_BYTES, Sizes};

pub struct Results {
    /// A smoke run: tiny sizes, figures that mean nothing.
    pub smoke: bool,
    pub sizes: Sizes,
    pub codec: Vec<(Case, Timing)>,
    /// One copy of 1 MiB into a new buffer: the floor of any codec that copies the data.
    pub copy_mib: Duration,
    /// (a) to (e), in this order.
    pub unaries: Vec<Unary>,
    /// Bytes per second: (a), (d).
    pub bulk: (f64, f64),
    pub connects: Connects,
    pub idle_heartbeats: Samples,
    pub priorities: Vec<(u32, bool, PriorityRun)>,
    pub load_before: String,
    pub load_after: String,
}

/// The 1-, 5- and 15-minute load averages, as the kernel reports them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {kernel}")
}

fn ns(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    }
}

pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

fn mb(bytes_per_second: f64) -> String {
    format!("{:.0} MB/s", bytes_per_second / 1e6)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

/// p50 and calls/s of one transport at each in-flight level, by its tag ("(a)" ...).
pub fn summary(r: &Results, tag: &str) -> Vec<(f64, f64)> {
    r.unaries
        .iter()
        .find(|u| u.name.starts_with(tag))
        .map(|u| {
            u.levels
                .iter()
                .map(|l| {
                    let mut s = l.latencies.clone();
                    (s.percentile(50.0).as_secs_f64(), l.per_second())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The lowest and highest round-by-round ratio `pick(this) / pick(other)` at one level.
fn round_range(
    r: &Results,
    this: &str,
    other: &str,
    level: usize,
    pick: fn((f64, f64)) -> f64,
) -> (f64, f64) {
    let rounds = |tag: &str| {
        r.unaries
            .iter()
            .find(|u| u.name.starts_with(tag))
            .and_then(|u| u.rounds.get(level))
            .cloned()
            .unwrap_or_default()
    };
    let (a, b) = (rounds(this), rounds(other));
    a.iter()
        .zip(&b)
        .map(|(x, y)| ratio(pick(*x), pick(*y)))
        .fold((f64::NAN, f64::NAN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

pub fn render(r: &Results) -> String {
    let mut out = String::new();
    header(&mut out, r);
    codec(&mut out, r);
    unary(&mut out, r);
    links(&mut out, r);
    priorities(&mut out, r);
    out
}

fn header(out: &mut String, r: &Results) {
    if r.smoke {
        out.push_str("**Smoke run: every part at a tiny size; the figures mean nothing.**\n\n");
    }
    let _ = write!(
        out,
        "## RPC transport: `quiver/rpc/1` over Iroh\n\n\
         Command: `bash benches/run.sh rpc` (it builds `benches/tonic-iroh` for (f) and runs \
         `bench-rpc`; `cargo run --release -p quiver-benches --bin bench-rpc` alone leaves (f) \
         out); \
         `-- --smoke` runs every part at a tiny size and writes nothing. JSON beside this file: \
         `docs/benchmarks/rpc.json`. One process: servers and clients share the machine over \
         loopback. Machine: {}. Load average before / after the run: {} / {}. Iroh 1.4 (QUIC by \
         noq), relays off, direct loopback addresses; tonic 0.14 with rustls (ring).\n\n\
         What would change the results: more cores (here client, server, QUIC drivers and TLS \
         share 2, so at 16 and 64 in flight every transport is CPU-bound and the ratios are ratios \
         of CPU cost per call); a real network (loopback has no loss and ~10 µs of latency, so \
         the per-call CPU cost dominates; over a LAN or WAN the round trip does); other load on \
         the machine (the load averages above).\n\n",
        machine(),
        r.load_before,
        r.load_after
    );
}

fn codec(out: &mut String, r: &Results) {
    let _ = write!(
        out,
        "### Codec: the Raft service's messages, framed\n\n\
         The messages are openraft 0.9's, as the agents exchange them: a vote request, a \
         heartbeat (an append with no entries), appends of 1 and 100 entries (each a ledger \
         `PutVm` of about 100 bytes) and a 1 MiB snapshot chunk. Serialize = encode the message \
         (`quiver_raft::wire`: postcard) and frame it as a writer sends it (one chunk of header and \
         payload up to 4 KiB of payload; above, a 24-byte header and the payload, not copied); deserialize = the frame's wire bytes in chunks of {CHUNK} bytes, \
         as QUIC delivers them, through the readers' `ChunkDecoder`, and the message from its \
         payload (a frame that fits one chunk is taken without a copy, a longer one is \
         assembled). \"Frame alone\" = the same, around the payload already encoded, which is \
         not decoded. \"Postcard alone\" = encode into a reused buffer / decode from \
         a slice, no frame: the floor of this encoding. \"JSON\" = the same frame with the \
         encoding the Raft service used before postcard, measured in the same run. Median of \
         batches, one thread; results dropped inside the timing. The \"published\" columns are \
         the figures published for the original Iroh design, **not measured here** (another \
         machine, another serializer); the speed-up and the target compare against them.\n\n\
         | message | wire bytes (JSON) | ser | de | frame alone ser / de | postcard alone ser / de | JSON ser / de | published ser / de | speed-up ser / de | target ≥ 10× |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (case, t) in &r.codec {
        let (sx, dx) = (
            ratio(case.published_ser.as_secs_f64(), t.ser.as_secs_f64()),
            ratio(case.published_de.as_secs_f64(), t.de.as_secs_f64()),
        );
        let _ = writeln!(
            out,
            "| {} | {} ({}) | {} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {sx:.1}× / {dx:.1}× | {} |",
            case.name,
            t.wire_bytes,
            t.json_wire_bytes,
            ns(t.ser),
            ns(t.de),
            ns(t.frame_ser),
            ns(t.frame_de),
            ns(t.alone_ser),
            ns(t.alone_de),
            ns(t.json_ser),
            ns(t.json_de),
            ns(case.published_ser),
            ns(case.published_de),
            verdict(sx >= 10.0 && dx >= 10.0)
        );
    }
    let frame_of = |name: &str| {
        r.codec
            .iter()
            .find(|(case, _)| case.name == name)
            .map_or_else(
                || "not measured".to_owned(),
                |(_, t)| format!("{} / {}", ns(t.frame_ser), ns(t.frame_de)),
            )
    };
    let _ = writeln!(
        out,
        "\nWhere the codec time goes. \"Frame alone\" is the transport's share, measured in the \
         same run: the same frame around the payload already encoded (ser: the header written \
         and checked, the chunks made; de: the chunks through `ChunkDecoder`, the payload \
         not decoded). For a heartbeat it takes {} and for a vote {}, against 10× the published \
         figures, 38 ns / 21 ns and 41 ns / 24 ns: framing alone, before any message is encoded \
         or decoded, is about the whole budget that target leaves. Serializing a message adds \
         postcard and its `Vec`; deserializing builds openraft's owned types (an entry's strings \
         and vectors are allocated; a VM's encoded request is read as one byte string, not a \
         byte at a time). A snapshot chunk's data also goes as one byte string \
         (`quiver_raft::wire::SnapshotChunk`; the same bytes as openraft's `Vec<u8>`), so its \
         serialization copies the data once (into postcard's buffer) and its deserialization \
         twice (the frame assembled from about a thousand chunks, then the data into openraft's \
         `Vec<u8>`). One copy of 1 MiB into a new buffer takes {} here, in the same run, and \
         the frame alone {}: 10× the published figures (8.4 µs / 18.7 µs) leaves less than one \
         copy to serialize, which openraft 0.9's `Vec<u8>` needs, and less than gathering the \
         frame from QUIC's chunks to deserialize.",
        frame_of("heartbeat"),
        frame_of("vote"),
        quiver_benches::fmt_duration(r.copy_mib),
        frame_of("snapshot chunk, 1 MiB")
    );
}

fn unary(out: &mut String, r: &Results) {
    let _ = write!(
        out,
        "\n### Unary echo, {REQUEST_BYTES}-byte request\n\n\
         Calls per level: {:?} over {} interleaved rounds (each round runs every transport once at \
         that level, starting one transport further on than the round before; {} uncounted \
         warm-up calls per round). (a) and (d) use one QUIC connection and \
         one bi-stream per call; (c) its own QUIC connection from the same endpoint; (b) one \
         HTTP/2 connection; (e) one TCP connection per call in flight (TCP has no streams). \
         (a)'s calls carry no deadline, like the baselines'. (d) sends a length and the bytes, and \
         the server echoes them as soon as they are in: the least work any request/response \
         protocol on one QUIC stream per call can do, which is what bounds calls/s at 16 and 64 \
         in flight, where the cores are busy. At 1 in flight the cores are mostly idle and a \
         round trip is mostly threads waking up, which depends on where tokio runs each task: \
         there (d) is no floor, its rounds and (a)'s vary widely, and (a) can come out ahead.\n\n\
         | transport | in flight | p50 | p99 | calls/s | p50 ÷ (d) | calls/s ÷ (d) |\n\
         |---|---|---|---|---|---|---|\n",
        r.sizes.calls, r.sizes.rounds, r.sizes.warmup
    );
    let floor = summary(r, "(d)");
    for unary in &r.unaries {
        for (i, level) in unary.levels.iter().enumerate() {
            let mut s = level.latencies.clone();
            let (p50, p99) = (s.percentile(50.0), s.percentile(99.0));
            let (f50, fps) = floor.get(i).copied().unwrap_or((f64::NAN, f64::NAN));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} | {:.2}× | {:.2}× |",
                unary.name,
                IN_FLIGHT[i],
                fmt_duration(p50),
                fmt_duration(p99),
                level.per_second(),
                ratio(p50.as_secs_f64(), f50),
                ratio(level.per_second(), fps)
            );
        }
    }
    tonic_iroh(out, r);
    out.push_str(
        "\n(c) is `irpc-iroh` with a server that answers each request in its own task.\n\n\
         Targets for (a). \"No slower\" compares p50 and calls/s. The verdict is on all rounds \
         pooled; \"rounds\" gives the lowest and highest of the same ratio taken round by round \
         (same round, same level): where that range straddles the target, the verdict is within \
         this run's own noise.\n\n\
         | target | in flight | value | rounds | verdict |\n|---|---|---|---|---|\n",
    );
    let nan = (f64::NAN, f64::NAN);
    let a = summary(r, "(a)");
    for (i, n) in IN_FLIGHT.iter().enumerate() {
        let (a50, aps) = a.get(i).copied().unwrap_or(nan);
        let (f50, _) = floor.get(i).copied().unwrap_or(nan);
        let x = ratio(a50, f50);
        let (lo, hi) = round_range(r, "(a)", "(d)", i, |(p50, _)| p50);
        let _ = writeln!(
            out,
            "| p50 ≤ 1.2× (d) | {n} | {x:.2}× | {lo:.2}–{hi:.2}× | {} |",
            verdict(x <= 1.2)
        );
        for tag in ["(b)", "(c)"] {
            let (o50, ops) = summary(r, tag).get(i).copied().unwrap_or(nan);
            let (l50, h50) = round_range(r, "(a)", tag, i, |(p50, _)| p50);
            let (lps, hps) = round_range(r, "(a)", tag, i, |(_, ps)| ps);
            let _ = writeln!(
                out,
                "| no slower than {tag}: p50 / calls/s | {n} | {:.2}× / {:.2}× of {tag} | {l50:.2}–{h50:.2}× / {lps:.2}–{hps:.2}× | {} |",
                ratio(a50, o50),
                ratio(aps, ops),
                verdict(a50 <= o50 && aps >= ops)
            );
        }
    }
    out.push_str(
        "\nWhat (a) does per call beyond the floor (d): the 24-byte header and its checks on both \
         sides; on the client, the peer's shared connection (cloned under a per-peer lock; one \
         that closed is noticed when it refuses the call's stream) and backoff bookkeeping on each reply; on the server, the stream \
         and call limits (semaphores), the dispatch through the `Dispatch` trait, a look at \
         whether the stream ends after its first request (a stream that carries more, a batch, \
         gets a reader and a writer joined by a bounded reply queue, so that a peer that stops \
         reading cannot make the server buffer without bound), and the finished reply stream \
         kept in a list that a graceful shutdown (or a live transport switch) waits on, so that \
         none loses a reply. Frames are taken from QUIC's received chunks without a copy and \
         written as one chunk, header and payload together, up to 4 KiB of payload (the copy costs \
         less than QUIC's work on a second chunk), above that as two, the payload not copied. (c) and (d) write their \
         reply, finish the stream and are done. At 1 in flight this is a few µs on a round trip \
         of tens of µs; at 16 and 64 in flight the machine is CPU-bound and every µs of CPU per \
         call shows in the ratios. Earlier versions of (a), same command: with a reader, a \
         writer and a reply queue on every stream and a frame buffer per request and per reply \
         (commit 92e6a9c), 1.22× of (d) and 0.92× of (c)'s calls/s at 16 in flight; before \
         that, with each stream's task waiting for its reply's acknowledgement, 1.40–1.46× of \
         (d) in three runs.\n",
    );
}

/// (f) and (f0), or why they are missing.
fn tonic_iroh(out: &mut String, r: &Results) {
    let f = summary(r, "(f)");
    if f.is_empty() {
        let _ = writeln!(
            out,
            "| (f) tonic over `tonic-iroh-transport` 0.9 | — | not measured: `{}` was not set \
             (`bash benches/run.sh rpc` builds `benches/tonic-iroh` and sets it) | | | | |",
            crate::tonic_iroh::BIN_VAR
        );
        return;
    }
    let a = summary(r, "(a)");
    let versus: Vec<String> = IN_FLIGHT
        .iter()
        .zip(a.iter().zip(&f))
        .map(|(n, ((a50, aps), (f50, fps)))| {
            format!(
                "{n} in flight {:.2}× / {:.2}×",
                ratio(*a50, *f50),
                ratio(*aps, *fps)
            )
        })
        .collect();
    let _ = write!(
        out,
        "\n(f) and (f0) run in a child process, `bench-tonic-iroh` (`benches/tonic-iroh`, a crate \
         with its own lockfile: `tonic-iroh-transport` 0.9 needs iroh 0.98, which cannot share \
         this workspace's lockfile with iroh 1.4), driven a run at a time in the same rounds as \
         the others; its server and client share that process, on loopback. (f) is tonic's \
         generated client on one `tonic-iroh-transport` channel (HTTP/2 over QUIC); (f0) is \
         (d)'s raw echo on iroh 0.98, which tells the version of iroh apart from the transport. \
         (a)'s p50 / calls/s ÷ (f)'s: {}.\n",
        versus.join(", ")
    );
}

fn links(out: &mut String, r: &Results) {
    let (rpc, raw) = r.bulk;
    let _ = write!(
        out,
        "\n### Bulk and connections\n\n\
         | measure | (a) quiver/rpc/1 | (d) raw Iroh | (a) ÷ (d) |\n|---|---|---|---|\n\
         | {} MiB server stream (256 KiB messages; median of {} runs) | {} | {} | {:.2}× |\n",
        r.sizes.bulk_bytes >> 20,
        r.sizes.bulk_runs,
        mb(rpc),
        mb(raw),
        ratio(rpc, raw)
    );
    let mut c = (
        r.connects.rpc_first_call.clone(),
        r.connects.raw_connect.clone(),
        r.connects.reconnect.clone(),
    );
    let _ = write!(
        out,
        "| connect, p50 / max of {n}: (a) fresh client's first call (dial, handshake, call); (d) bare QUIC connect | {} / {} | {} / {} | {:.2}× |\n\
         | reconnect after the server restarts (same key and port): restarted server bound → first answered call, p50 / max of {m} | {} / {} | | |\n",
        fmt_duration(c.0.percentile(50.0)),
        fmt_duration(c.0.percentile(100.0)),
        fmt_duration(c.1.percentile(50.0)),
        fmt_duration(c.1.percentile(100.0)),
        ratio(
            c.0.percentile(50.0).as_secs_f64(),
            c.1.percentile(50.0).as_secs_f64()
        ),
        fmt_duration(c.2.percentile(50.0)),
        fmt_duration(c.2.percentile(100.0)),
        n = r.sizes.connects,
        m = r.sizes.reconnects,
    );
}

fn priorities(out: &mut String, r: &Results) {
    let mut idle = r.idle_heartbeats.clone();
    let _ = write!(
        out,
        "\n### Priorities: heartbeats while snapshot streams fill the connection\n\n\
         {} MiB in total over 1 or 4 server streams at Snapshot priority (256 KiB messages); \
         heartbeats back to back on the same connection from the moment every bulk stream has \
         delivered data until the last ends. \"on\": QUIC stream priorities from the frame priority \
         on both sides (`ClientConfig.priorities`, `ServerConfig.priorities`); \"off\": every stream \
         at the same QUIC priority. Idle heartbeat round trip: p50 {} / p99 {} ({} samples).\n\n\
         | bulk streams | priorities | heartbeats | p50 | p99 | max | p99 ÷ idle p99 | bulk throughput |\n\
         |---|---|---|---|---|---|---|---|\n",
        r.sizes.bulk_bytes >> 20,
        fmt_duration(idle.percentile(50.0)),
        fmt_duration(idle.percentile(99.0)),
        idle.len()
    );
    let idle99 = idle.percentile(99.0).as_secs_f64();
    for (streams, on, run) in &r.priorities {
        let mut h = run.heartbeats.clone();
        let _ = writeln!(
            out,
            "| {streams} | {} | {} | {} | {} | {} | {:.1}× | {} |",
            if *on { "on" } else { "off" },
            h.len(),
            fmt_duration(h.percentile(50.0)),
            fmt_duration(h.percentile(99.0)),
            fmt_duration(h.percentile(100.0)),
            ratio(h.percentile(99.0).as_secs_f64(), idle99),
            mb(run.bulk_per_second)
        );
    }
    let p99 = |streams: u32, on: bool| {
        r.priorities
            .iter()
            .find(|(s, o, _)| (*s, *o) == (streams, on))
            .map_or(f64::NAN, |(_, _, run)| {
                run.heartbeats.clone().percentile(99.0).as_secs_f64()
            })
    };
    let _ = write!(
        out,
        "\nIn this run, heartbeat p99 with priorities on ÷ off: {:.2}× under 1 bulk stream, \
         {:.2}× under 4 (below 1: priorities helped). ",
        ratio(p99(1, true), p99(1, false)),
        ratio(p99(4, true), p99(4, false))
    );
    out.push_str(
        "The server runs on a tokio runtime of its own (as in another process; the two share the \
         2 cores). A QUIC stream priority orders only what one side has buffered and not yet sent: \
         the heartbeat's request and reply overtake snapshot data still queued at the sender, but \
         not data already sent, which the receiver works through in arrival order. Flow control \
         bounds that backlog by the stream receive window (noq's default 1.25 MB) per bulk stream, \
         so it grows with the number of bulk streams; and the bulk streams keep both cores busy, \
         so a heartbeat also waits for a core, which no stream priority changes. Smaller receive \
         windows for snapshot streams would shorten the wait at some cost in bulk throughput. \
         The agents' own snapshots load a connection less than these streams: openraft sends a \
         snapshot as calls of one chunk each (2 MiB here), the next after the last one's reply, \
         so at most one chunk is ahead of a heartbeat.\n",
    );
}
