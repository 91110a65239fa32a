//! Per-transport, per-method request/error counts and latency histograms, with a Prometheus
//! text rendering. Hand-written: a handful of series does not need a metrics library.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use quiver_rpc::{Method, Wire, proto};

/// Upper bounds of the latency buckets, in milliseconds (+Inf is implied).
pub const BUCKETS_MS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 500.0, 2500.0,
];

#[derive(Clone, Debug, Default)]
struct MethodStats {
    requests: u64,
    errors: u64,
    /// Non-cumulative counts, one per bucket plus +Inf.
    buckets: [u64; BUCKETS_MS.len() + 1],
    sum_ms: f64,
}

type Key = (&'static str, &'static str, &'static str);

#[derive(Default)]
pub struct Metrics {
    methods: Mutex<BTreeMap<Key, MethodStats>>,
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    /// Records one finished call.
    pub fn observe(&self, wire: Wire, method: Method, elapsed: Duration, ok: bool) {
        let service = method.service().proto_name();
        let service = service.strip_prefix("quiver.v1.").unwrap_or(service);
        let (transport, method) = (wire.as_str(), method.name());
        let ms = elapsed.as_secs_f64() * 1000.0;
        let bucket = BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BUCKETS_MS.len());
        let mut map = self
            .methods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = map.entry((transport, service, method)).or_default();
        s.requests += 1;
        s.errors += u64::from(!ok);
        s.buckets[bucket] += 1;
        s.sum_ms += ms;
    }

    pub fn methods(&self) -> Vec<proto::MethodMetrics> {
        let map = self
            .methods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .map(|((transport, service, method), s)| {
                let mut cumulative = 0;
                let bucket_counts = s
                    .buckets
                    .iter()
                    .map(|c| {
                        cumulative += c;
                        cumulative
                    })
                    .collect();
                proto::MethodMetrics {
                    transport: (*transport).into(),
                    service: (*service).into(),
                    method: (*method).into(),
                    requests: s.requests,
                    errors: s.errors,
                    bucket_upper_ms: BUCKETS_MS.iter().copied().chain([f64::INFINITY]).collect(),
                    bucket_counts,
                    latency_sum_ms: s.sum_ms,
                }
            })
            .collect()
    }
}

/// Renders a snapshot in the Prometheus text exposition format.
pub fn render_prometheus(
    snap: &proto::MetricsSnapshot,
    summary: &proto::ResourceSummary,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE quiver_rpc_requests_total counter");
    for m in &snap.methods {
        let _ = writeln!(
            out,
            "quiver_rpc_requests_total{{{}}} {}",
            labels(m),
            m.requests
        );
    }
    let _ = writeln!(out, "# TYPE quiver_rpc_errors_total counter");
    for m in &snap.methods {
        let _ = writeln!(out, "quiver_rpc_errors_total{{{}}} {}", labels(m), m.errors);
    }
    let _ = writeln!(out, "# TYPE quiver_rpc_latency_seconds histogram");
    for m in &snap.methods {
        for (le, count) in m.bucket_upper_ms.iter().zip(&m.bucket_counts) {
            let le = if le.is_finite() {
                (le / 1000.0).to_string()
            } else {
                "+Inf".into()
            };
            let l = labels(m);
            let _ = writeln!(
                out,
                "quiver_rpc_latency_seconds_bucket{{{l},le=\"{le}\"}} {count}"
            );
        }
        let l = labels(m);
        let _ = writeln!(
            out,
            "quiver_rpc_latency_seconds_sum{{{l}}} {}",
            m.latency_sum_ms / 1000.0
        );
        let _ = writeln!(
            out,
            "quiver_rpc_latency_seconds_count{{{l}}} {}",
            m.requests
        );
    }
    let _ = writeln!(out, "# TYPE quiver_vm_starts_total counter");
    let _ = writeln!(out, "quiver_vm_starts_total {}", snap.vm_starts);
    let _ = writeln!(out, "# TYPE quiver_vm_failures_total counter");
    let _ = writeln!(out, "quiver_vm_failures_total {}", snap.vm_failures);
    render_iroh(&mut out, snap);
    let _ = writeln!(out, "# TYPE quiver_vms gauge");
    for p in &summary.phases {
        let phase = proto::Phase::try_from(p.phase)
            .unwrap_or_default()
            .as_str_name();
        let _ = writeln!(out, "quiver_vms{{phase=\"{phase}\"}} {}", p.count);
    }
    out
}

/// Per Iroh peer: connected (by path), round-trip time, reconnects; and handshake decisions.
fn render_iroh(out: &mut String, snap: &proto::MetricsSnapshot) {
    let _ = writeln!(out, "# TYPE quiver_iroh_peer_connected gauge");
    for p in &snap.iroh_peers {
        let (peer, path) = (&p.endpoint_id, &p.path);
        let up = u8::from(p.connected);
        let _ = writeln!(
            out,
            "quiver_iroh_peer_connected{{peer=\"{peer}\",path=\"{path}\"}} {up}"
        );
    }
    let _ = writeln!(out, "# TYPE quiver_iroh_peer_rtt_seconds gauge");
    for p in snap.iroh_peers.iter().filter(|p| p.connected) {
        let rtt = p.rtt_ms / 1000.0;
        let _ = writeln!(
            out,
            "quiver_iroh_peer_rtt_seconds{{peer=\"{}\"}} {rtt}",
            p.endpoint_id
        );
    }
    let _ = writeln!(out, "# TYPE quiver_iroh_peer_reconnects_total counter");
    for p in &snap.iroh_peers {
        let _ = writeln!(
            out,
            "quiver_iroh_peer_reconnects_total{{peer=\"{}\"}} {}",
            p.endpoint_id, p.reconnects
        );
    }
    let access = snap.iroh_access.unwrap_or_default();
    let _ = writeln!(out, "# TYPE quiver_iroh_handshakes_total counter");
    for (decision, count) in [
        ("accepted", access.accepted),
        ("refused", access.refused),
        ("revoked", access.revoked),
    ] {
        let _ = writeln!(
            out,
            "quiver_iroh_handshakes_total{{decision=\"{decision}\"}} {count}"
        );
    }
}

fn labels(m: &proto::MethodMetrics) -> String {
    format!(
        "transport=\"{}\",service=\"{}\",method=\"{}\"",
        m.transport, m.service, m.method
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_errors() {
        let m = Metrics::new();
        m.observe(Wire::Grpc, Method::PutVm, Duration::from_micros(50), true);
        m.observe(Wire::Grpc, Method::PutVm, Duration::from_millis(3), false);
        m.observe(Wire::Grpc, Method::PutVm, Duration::from_secs(10), true);
        let methods = m.methods();
        assert_eq!(methods.len(), 1);
        let put = &methods[0];
        assert_eq!((put.requests, put.errors), (3, 1));
        assert_eq!(put.bucket_counts.first(), Some(&1));
        assert_eq!(put.bucket_counts.last(), Some(&3));
        assert_eq!(put.bucket_counts.len(), BUCKETS_MS.len() + 1);
        let snap = proto::MetricsSnapshot {
            methods,
            ..Default::default()
        };
        let text = render_prometheus(&snap, &proto::ResourceSummary::default());
        assert!(text.contains(
            "quiver_rpc_errors_total{transport=\"grpc\",service=\"Vm\",method=\"PutVm\"} 1"
        ));
        assert!(text.contains("le=\"+Inf\"} 3"));
    }

    #[test]
    fn iroh_peers_and_handshakes_are_exposed() {
        let snap = proto::MetricsSnapshot {
            iroh_peers: vec![proto::IrohPeer {
                endpoint_id: "ab".into(),
                connected: true,
                path: "direct".into(),
                remote_address: "ip:127.0.0.1:1".into(),
                rtt_ms: 2.0,
                reconnects: 3,
            }],
            iroh_access: Some(proto::IrohAccess {
                accepted: 4,
                refused: 1,
                revoked: 0,
            }),
            ..Default::default()
        };
        let text = render_prometheus(&snap, &proto::ResourceSummary::default());
        for line in [
            "quiver_iroh_peer_connected{peer=\"ab\",path=\"direct\"} 1",
            "quiver_iroh_peer_rtt_seconds{peer=\"ab\"} 0.002",
            "quiver_iroh_peer_reconnects_total{peer=\"ab\"} 3",
            "quiver_iroh_handshakes_total{decision=\"refused\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
