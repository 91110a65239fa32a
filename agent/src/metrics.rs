//! Per-transport, per-method request/error counts and latency histograms (the Monitoring
//! service reports them), and `/metrics`: one scrape of those, the VM phases and the Raft view,
//! encoded by prometheus-client as a collector over the snapshot (no second set of counters).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet, text};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use quiver_rpc::{Method, Wire, proto};

/// Upper bounds of the latency buckets, in milliseconds (+Inf is implied).
pub const BUCKETS_MS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 500.0, 2500.0,
];

#[derive(Clone, Debug, Default)]
struct MethodStats {
    requests: u64,
    errors: u64,
    /// Calls refused because the service is not served on that transport (counted in
    /// `requests` and `errors` too, not in the histogram).
    refused: u64,
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
        let ms = elapsed.as_secs_f64() * 1000.0;
        let bucket = BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BUCKETS_MS.len());
        self.update(wire, method, |s| {
            s.requests += 1;
            s.errors += u64::from(!ok);
            s.buckets[bucket] += 1;
            s.sum_ms += ms;
        });
    }

    /// Records a call refused because its service is not served on `wire`: a client that
    /// tries one transport and falls back to the other, not a failure of the agent.
    pub fn refused(&self, wire: Wire, method: Method) {
        self.update(wire, method, |s| {
            s.requests += 1;
            s.errors += 1;
            s.refused += 1;
        });
    }

    fn update(&self, wire: Wire, method: Method, change: impl FnOnce(&mut MethodStats)) {
        let service = method.service().proto_name();
        let service = service.strip_prefix("quiver.v1.").unwrap_or(service);
        let (transport, method) = (wire.as_str(), method.name());
        let mut map = self
            .methods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(map.entry((transport, service, method)).or_default());
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
                    refused: s.refused,
                    bucket_upper_ms: BUCKETS_MS.iter().copied().chain([f64::INFINITY]).collect(),
                    bucket_counts,
                    latency_sum_ms: s.sum_ms,
                }
            })
            .collect()
    }
}

/// What one scrape shows: the Monitoring snapshot, the VM phase counts and the Raft view.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub snapshot: proto::MetricsSnapshot,
    pub summary: proto::ResourceSummary,
    pub raft: Option<proto::RaftInfo>,
}

/// Renders a scrape in the OpenMetrics text format (prometheus-client's encoder).
#[must_use]
pub fn render_prometheus(scrape: Scrape) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = text::encode(&mut out, &registry);
    out
}

/// Labels of one RPC method's series.
fn method_labels(m: &proto::MethodMetrics) -> [(&'static str, String); 3] {
    [
        ("transport", m.transport.clone()),
        ("service", m.service.clone()),
        ("method", m.method.clone()),
    ]
}

/// One family: its descriptor, then one sample per item.
fn family<T>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    items: &[T],
    mut sample: impl FnMut(&mut MetricEncoder<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for item in items {
        sample(&mut metric, item)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        let snap = &self.snapshot;
        let methods = &snap.methods;
        family(
            &mut e,
            "quiver_rpc_requests",
            "RPC calls served, by transport, service and method",
            MetricType::Counter,
            methods,
            |m, x| {
                m.encode_family(&method_labels(x))?
                    .encode_counter::<NoLabelSet, _, u64>(&x.requests, None)
            },
        )?;
        family(
            &mut e,
            "quiver_rpc_errors",
            "RPC calls answered with an error",
            MetricType::Counter,
            methods,
            |m, x| {
                m.encode_family(&method_labels(x))?
                    .encode_counter::<NoLabelSet, _, u64>(&x.errors, None)
            },
        )?;
        family(
            &mut e,
            "quiver_rpc_latency_seconds",
            "RPC handling time",
            MetricType::Histogram,
            methods,
            |m, x| {
                // The snapshot's counts are cumulative; the encoder wants each bucket's own.
                let mut below = 0;
                let buckets: Vec<(f64, u64)> = x
                    .bucket_upper_ms
                    .iter()
                    .zip(&x.bucket_counts)
                    .map(|(le, cumulative)| {
                        let own = cumulative.saturating_sub(below);
                        below = *cumulative;
                        (le / 1000.0, own)
                    })
                    .collect();
                m.encode_family(&method_labels(x))?
                    .encode_histogram::<NoLabelSet>(
                        x.latency_sum_ms / 1000.0,
                        x.requests,
                        &buckets,
                        None,
                    )
            },
        )?;
        family(
            &mut e,
            "quiver_vm_starts",
            "VM starts (QEMU spawned)",
            MetricType::Counter,
            &[snap.vm_starts],
            |m, v| m.encode_counter::<NoLabelSet, _, u64>(v, None),
        )?;
        family(
            &mut e,
            "quiver_vm_failures",
            "VMs that failed",
            MetricType::Counter,
            &[snap.vm_failures],
            |m, v| m.encode_counter::<NoLabelSet, _, u64>(v, None),
        )?;
        family(
            &mut e,
            "quiver_vms",
            "VMs on this host by phase",
            MetricType::Gauge,
            &self.summary.phases,
            |m, p| {
                let phase = proto::Phase::try_from(p.phase)
                    .unwrap_or_default()
                    .as_str_name();
                m.encode_family(&[("phase", phase)])?.encode_gauge(&p.count)
            },
        )?;
        self.encode_iroh(&mut e)?;
        self.encode_raft(&mut e)
    }
}

impl Scrape {
    /// Per Iroh peer: connected (by path), round-trip time, reconnects; handshake decisions.
    fn encode_iroh(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let peers = &self.snapshot.iroh_peers;
        family(
            e,
            "quiver_iroh_peer_connected",
            "1 while connected to the peer, by path",
            MetricType::Gauge,
            peers,
            |m, p| {
                let labels = [("peer", p.endpoint_id.clone()), ("path", p.path.clone())];
                m.encode_family(&labels)?
                    .encode_gauge(&u64::from(p.connected))
            },
        )?;
        let connected: Vec<&proto::IrohPeer> = peers.iter().filter(|p| p.connected).collect();
        family(
            e,
            "quiver_iroh_peer_rtt_seconds",
            "Round-trip time to the peer",
            MetricType::Gauge,
            &connected,
            |m, p| {
                m.encode_family(&[("peer", p.endpoint_id.clone())])?
                    .encode_gauge(&(p.rtt_ms / 1000.0))
            },
        )?;
        family(
            e,
            "quiver_iroh_peer_reconnects",
            "Reconnects to the peer",
            MetricType::Counter,
            peers,
            |m, p| {
                m.encode_family(&[("peer", p.endpoint_id.clone())])?
                    .encode_counter::<NoLabelSet, _, u64>(&p.reconnects, None)
            },
        )?;
        let access = self.snapshot.iroh_access.unwrap_or_default();
        let decisions = [
            ("accepted", access.accepted),
            ("refused", access.refused),
            ("revoked", access.revoked),
        ];
        family(
            e,
            "quiver_iroh_handshakes",
            "Iroh handshakes by the access decision",
            MetricType::Counter,
            &decisions,
            |m, (decision, count)| {
                m.encode_family(&[("decision", *decision)])?
                    .encode_counter::<NoLabelSet, _, u64>(count, None)
            },
        )
    }

    /// This node in the Raft group (nothing on a standalone agent).
    fn encode_raft(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let raft: Vec<&proto::RaftInfo> = self.raft.iter().collect();
        family(
            e,
            "quiver_raft_term",
            "Current Raft term",
            MetricType::Gauge,
            &raft,
            |m, r| m.encode_gauge(&r.term),
        )?;
        family(
            e,
            "quiver_raft_applied_index",
            "Last log index applied to the ledger",
            MetricType::Gauge,
            &raft,
            |m, r| m.encode_gauge(&r.applied_index),
        )?;
        family(
            e,
            "quiver_raft_role",
            "1 for this node's role (leader, follower, learner, candidate, joining)",
            MetricType::Gauge,
            &raft,
            |m, r| {
                m.encode_family(&[("role", r.role.clone())])?
                    .encode_gauge(&1_u64)
            },
        )?;
        family(
            e,
            "quiver_raft_lease_valid",
            "1 while this host's lease holds",
            MetricType::Gauge,
            &raft,
            |m, r| m.encode_gauge(&u64::from(r.lease_valid)),
        )
    }
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
        let text = render_prometheus(Scrape {
            snapshot: snap,
            ..Scrape::default()
        });
        let labels = "transport=\"grpc\",service=\"Vm\",method=\"PutVm\"";
        for line in [
            format!("quiver_rpc_errors_total{{{labels}}} 1"),
            format!("quiver_rpc_latency_seconds_bucket{{le=\"0.0001\",{labels}}} 1"),
            format!("quiver_rpc_latency_seconds_bucket{{le=\"+Inf\",{labels}}} 3"),
            format!("quiver_rpc_latency_seconds_count{{{labels}}} 3"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
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
        let text = render_prometheus(Scrape {
            snapshot: snap,
            raft: Some(proto::RaftInfo {
                role: "leader".into(),
                term: 7,
                ..Default::default()
            }),
            ..Scrape::default()
        });
        for line in [
            "quiver_raft_term 7",
            "quiver_raft_role{role=\"leader\"} 1",
            "quiver_iroh_peer_connected{peer=\"ab\",path=\"direct\"} 1",
            "quiver_iroh_peer_rtt_seconds{peer=\"ab\"} 0.002",
            "quiver_iroh_peer_reconnects_total{peer=\"ab\"} 3",
            "quiver_iroh_handshakes_total{decision=\"refused\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
