//! The Grafana dashboard (`charts/quiver/dashboards/quiver.json`) asks only for metrics the code
//! exports: every `quiver_*` series in every panel's query must appear in a scrape of the agent
//! (`quiver_agent::metrics::render_prometheus`) or of the operator (`OperatorMetrics`, served
//! here by its real `/metrics` endpoint), each filled with one of everything it reports.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use quiver_agent::metrics::{Metrics, Scrape, render_prometheus};
use quiver_crds::{Host, MicroVM};
use quiver_operator::metrics::OperatorMetrics;
use quiver_rpc::{Method, Wire, proto};

/// Sample names in an OpenMetrics text (`name{labels} value` or `name value`).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn agent_scrape() -> String {
    let metrics = Metrics::new();
    metrics.observe(Wire::Iroh, Method::PutVm, Duration::from_millis(2), false);
    let snapshot = proto::MetricsSnapshot {
        methods: metrics.methods(),
        vm_starts: 1,
        vm_failures: 1,
        iroh_peers: vec![proto::IrohPeer {
            endpoint_id: "ab".into(),
            connected: true,
            path: "direct".into(),
            rtt_ms: 1.0,
            reconnects: 1,
            ..Default::default()
        }],
        iroh_access: Some(proto::IrohAccess::default()),
        ..Default::default()
    };
    let summary = proto::ResourceSummary {
        phases: vec![proto::PhaseCount {
            phase: proto::Phase::Running as i32,
            count: 1,
        }],
        ..Default::default()
    };
    let raft = Some(proto::RaftInfo {
        role: "leader".into(),
        ..Default::default()
    });
    render_prometheus(Scrape {
        snapshot,
        summary,
        raft,
    })
}

/// The operator's endpoint, with a reconcile of each kind and one MicroVM and Host cached.
async fn operator_scrape() -> anyhow::Result<String> {
    let metrics = Arc::new(OperatorMetrics::default());
    metrics.reconciled("microvm", Duration::from_millis(5), "ok");
    let (vms, mut vm_writer) = reflector::store::<MicroVM>();
    vm_writer.apply_watcher_event(&Event::Apply(MicroVM::test("a")));
    let (hosts, mut host_writer) = reflector::store::<Host>();
    host_writer.apply_watcher_event(&Event::Apply(Host::test("h")));
    metrics.leading(Some((vms, hosts)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(quiver_operator::metrics::serve(metrics, listener));
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await?;
    let mut response = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response).await?;
    anyhow::ensure!(response.starts_with("HTTP/1.1 200"), "{response}");
    anyhow::ensure!(
        response.contains("application/openmetrics-text"),
        "{response}"
    );
    Ok(response)
}

/// Every `quiver_…` identifier in the dashboard's queries.
fn dashboard_series() -> anyhow::Result<Vec<(String, String)>> {
    let path = quiver_tests::repo_root().join("charts/quiver/dashboards/quiver.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(!panels.is_empty(), "no panels in {}", path.display());
    let mut series = Vec::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            let mut rest = expr;
            while let Some(at) = rest.find("quiver_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                series.push((title.clone(), name));
            }
        }
    }
    Ok(series)
}

#[tokio::test]
async fn every_dashboard_query_names_an_exported_metric() -> anyhow::Result<()> {
    let mut exported = sample_names(&agent_scrape());
    exported.extend(sample_names(&operator_scrape().await?));
    for family in [
        "quiver_microvms",
        "quiver_hosts",
        "quiver_raft_role",
        "quiver_rpc_latency_seconds_bucket",
    ] {
        assert!(
            exported.contains(family),
            "{family} not exported: {exported:?}"
        );
    }
    let series = dashboard_series()?;
    assert!(series.len() >= 10, "{series:?}");
    let unknown: Vec<&(String, String)> = series
        .iter()
        .filter(|(_, name)| !exported.contains(name))
        .collect();
    assert!(
        unknown.is_empty(),
        "dashboard panels ask for series no code exports: {unknown:?}\nexported: {exported:?}"
    );
    Ok(())
}
