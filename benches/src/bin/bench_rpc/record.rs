//! The run's results as JSON (`docs/benchmarks/rpc.json`), for tools that compare runs.

use std::time::Duration;

use serde_json::{Value, json};

use crate::IN_FLIGHT;
use crate::report::{Results, machine, ratio, summary};

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

pub fn json(r: &Results) -> Value {
    let codec: Vec<Value> = r
        .codec
        .iter()
        .map(|(case, t)| {
            json!({
                "message": case.name,
                "wire_bytes": t.wire_bytes,
                "json_wire_bytes": t.json_wire_bytes,
                "ser_ns": ns(t.ser),
                "de_ns": ns(t.de),
                "frame_alone_ser_ns": ns(t.frame_ser),
                "frame_alone_de_ns": ns(t.frame_de),
                "postcard_alone_ser_ns": ns(t.alone_ser),
                "postcard_alone_de_ns": ns(t.alone_de),
                "json_ser_ns": ns(t.json_ser),
                "json_de_ns": ns(t.json_de),
                "published_ser_ns": ns(case.published_ser),
                "published_de_ns": ns(case.published_de),
                "speedup_ser": ratio(case.published_ser.as_secs_f64(), t.ser.as_secs_f64()),
                "speedup_de": ratio(case.published_de.as_secs_f64(), t.de.as_secs_f64()),
            })
        })
        .collect();
    let floor = summary(r, "(d)");
    let unary: Vec<Value> = r
        .unaries
        .iter()
        .flat_map(|u| {
            let floor = &floor;
            u.levels.iter().enumerate().map(move |(i, level)| {
                let mut s = level.latencies.clone();
                let p50 = s.percentile(50.0);
                json!({
                    "transport": u.name,
                    "in_flight": IN_FLIGHT[i],
                    "calls": level.latencies.len(),
                    "p50_us": us(p50),
                    "p99_us": us(s.percentile(99.0)),
                    "calls_per_s": level.per_second(),
                    "p50_over_raw_iroh": floor.get(i).map(|f| ratio(p50.as_secs_f64(), f.0)),
                    "rounds": u.rounds.get(i).map(|rounds| rounds
                        .iter()
                        .map(|(p50, per_second)| json!({"p50_us": p50 * 1e6, "calls_per_s": per_second}))
                        .collect::<Vec<_>>()),
                })
            })
        })
        .collect();
    let mut idle = r.idle_heartbeats.clone();
    let priorities: Vec<Value> = r
        .priorities
        .iter()
        .map(|(streams, on, run)| {
            let mut h = run.heartbeats.clone();
            json!({
                "bulk_streams": streams,
                "priorities": on,
                "heartbeats": h.len(),
                "p50_us": us(h.percentile(50.0)),
                "p99_us": us(h.percentile(99.0)),
                "max_us": us(h.percentile(100.0)),
                "bulk_bytes_per_s": run.bulk_per_second,
            })
        })
        .collect();
    let c = &r.connects;
    let (mut first, mut raw, mut re) = (
        c.rpc_first_call.clone(),
        c.raw_connect.clone(),
        c.reconnect.clone(),
    );
    json!({
        "command": "cargo run --release -p quiver-benches --bin bench-rpc",
        "machine": machine(),
        "load_average_before": r.load_before,
        "load_average_after": r.load_after,
        "codec": codec,
        "unary": unary,
        "bulk_bytes_per_s": { "quiver_rpc": r.bulk.0, "raw_iroh": r.bulk.1, "bytes": r.sizes.bulk_bytes },
        "connect_us": {
            "quiver_rpc_first_call_p50": us(first.percentile(50.0)),
            "raw_iroh_connect_p50": us(raw.percentile(50.0)),
            "reconnect_p50": us(re.percentile(50.0)),
            "reconnect_max": us(re.percentile(100.0)),
        },
        "heartbeat_idle_us": { "p50": us(idle.percentile(50.0)), "p99": us(idle.percentile(99.0)) },
        "priorities": priorities,
    })
}
