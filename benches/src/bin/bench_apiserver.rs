//! Dev control plane benchmark: creates/s, 10k-object list latency, watch delivery latency
//! with 10 watchers — each next to a baseline measured in the same run.
//!
//! Run: `cargo run --release -p quiver-benches --bin bench-apiserver` (add `-- --no-write`
//! to leave docs/benchmarks.md alone, `-- --smoke` for a few-second run at tiny sizes that
//! writes nothing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use quiver_apiserver::{Config, DevApiServer};
use quiver_benches::{Samples, docs_path, fmt_duration, write_section};

const IN_FLIGHT: usize = 64;

/// How much to run: the full sizes, or `--smoke` (a few seconds, nothing written).
#[derive(Clone, Copy)]
struct Sizes {
    objects: usize,
    warmup: usize,
    list_runs: usize,
    watchers: usize,
    watched_writes: usize,
}

const FULL: Sizes = Sizes {
    objects: 10_000,
    warmup: 500,
    list_runs: 20,
    watchers: 10,
    watched_writes: 500,
};

const SMOKE: Sizes = Sizes {
    objects: 100,
    warmup: 10,
    list_runs: 2,
    watchers: 2,
    watched_writes: 5,
};

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": {"bench": "yes"}}, "data": {"key": "value"}})).unwrap_or_default()
}

async fn client(server: &DevApiServer) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

/// Creates `n` objects with `IN_FLIGHT` concurrent requests; returns objects per second.
async fn creates(api: &Api<ConfigMap>, prefix: &str, n: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let name = format!("{prefix}-{i}");
            async move {
                api.create(&PostParams::default(), &config_map(&name))
                    .await
                    .map(drop)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// The same number of round trips that do no storage work (`GET /version`).
async fn version_round_trips(client: &kube::Client, n: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|_| {
            let client = client.clone();
            async move { client.apiserver_version().await.map(drop) }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn list_latency(api: &Api<ConfigMap>, runs: usize) -> anyhow::Result<(Samples, usize)> {
    let mut samples = Samples::default();
    let mut count = 0;
    for _ in 0..runs {
        let start = Instant::now();
        count = api.list(&ListParams::default()).await?.items.len();
        samples.push(start.elapsed());
    }
    Ok((samples, count))
}

/// In-process JSON encode + decode of the same list: the floor any list response pays.
fn list_serde_baseline(items: &[ConfigMap], runs: usize) -> anyhow::Result<Samples> {
    let list = serde_json::json!({"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {}, "items": items});
    let mut samples = Samples::default();
    for _ in 0..runs {
        let start = Instant::now();
        let bytes = serde_json::to_vec(&list)?;
        let back: kube::core::ObjectList<ConfigMap> = serde_json::from_slice(&bytes)?;
        std::hint::black_box(back);
        samples.push(start.elapsed());
    }
    Ok(samples)
}

/// Each write's creation time → each watcher's receive time.
async fn watch_latency(
    api: &Api<ConfigMap>,
    watchers: usize,
    writes: usize,
) -> anyhow::Result<(Samples, Samples)> {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let rv = api
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let (api, sent, rv) = (api.clone(), sent.clone(), rv.clone());
        let params = WatchParams::default().labels("bench=watch");
        let mut stream = api.watch(&params, &rv).await?.boxed();
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            while samples.len() < writes {
                match stream.next().await {
                    Some(Ok(WatchEvent::Added(cm))) => {
                        let name = cm.metadata.name.unwrap_or_default();
                        let at = sent.lock().map(|m| m.get(&name).copied()).ok().flatten();
                        if let Some(at) = at {
                            samples.push(at.elapsed());
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            samples
        }));
    }
    let mut write_rtt = Samples::default();
    for i in 0..writes {
        let name = format!("watched-{i}");
        let mut cm = config_map(&name);
        cm.metadata.labels = Some([("bench".to_string(), "watch".to_string())].into());
        let start = Instant::now();
        if let Ok(mut m) = sent.lock() {
            m.insert(name, start);
        }
        api.create(&PostParams::default(), &cm).await?;
        write_rtt.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut delivery = Samples::default();
    for t in tasks {
        let s = tokio::time::timeout(Duration::from_secs(60), t).await??;
        delivery.extend(&s);
    }
    Ok((delivery, write_rtt))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let write = !smoke && !std::env::args().any(|a| a == "--no-write");
    let sizes = if smoke { SMOKE } else { FULL };
    let server = DevApiServer::start(Config::default()).await?;
    let client = client(&server).await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    creates(
        &Api::namespaced(client.clone(), "kube-system"),
        "warmup",
        sizes.warmup,
    )
    .await?;
    let baseline_rps = version_round_trips(&client, sizes.objects).await?;
    let create_rps = creates(&api, "cm", sizes.objects).await?;
    println!("creates: {create_rps:.0}/s (GET /version baseline {baseline_rps:.0}/s)");

    let (mut list, count) = list_latency(&api, sizes.list_runs).await?;
    let items = api.list(&ListParams::default()).await?.items;
    let mut serde = list_serde_baseline(&items, sizes.list_runs)?;
    println!(
        "list of {count}: p50 {} (serde baseline {})",
        fmt_duration(list.percentile(50.0)),
        fmt_duration(serde.percentile(50.0))
    );

    let (mut delivery, mut rtt) = watch_latency(&api, sizes.watchers, sizes.watched_writes).await?;
    println!(
        "watch delivery ({} samples): p50 {} p99 {}",
        delivery.len(),
        fmt_duration(delivery.percentile(50.0)),
        fmt_duration(delivery.percentile(99.0))
    );

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let body = format!(
        "## Dev control plane\n\n\
         Command: `cargo run --release -p quiver-benches --bin bench-apiserver` (in-process server, kube-rs client over HTTPS on loopback, {IN_FLIGHT} requests in flight, 2 cores).\n\n\
         | measure | result | baseline (same run) | ratio | target |\n|---|---|---|---|---|\n\
         | small creates (ConfigMap), {} objects | {create_rps:.0}/s | `GET /version` round trips: {baseline_rps:.0}/s | {:.2}× of baseline throughput | ≥ 5,000/s |\n\
         | list {count} objects, p50 / p99 | {} / {} | JSON encode+decode of the same list in-process: {} | {:.2}× | ≤ 200 ms |\n\
         | watch delivery, {} watchers × {} writes, p50 / p99 | {} / {} | create round trip p50 / p99: {} / {} | {:.2}× (p99) | p99 ≤ 5 ms |\n",
        sizes.objects,
        create_rps / baseline_rps,
        fmt_duration(list.percentile(50.0)),
        fmt_duration(list.percentile(99.0)),
        fmt_duration(serde.percentile(50.0)),
        ratio(list.percentile(50.0), serde.percentile(50.0)),
        sizes.watchers,
        sizes.watched_writes,
        fmt_duration(delivery.percentile(50.0)),
        fmt_duration(delivery.percentile(99.0)),
        fmt_duration(rtt.percentile(50.0)),
        fmt_duration(rtt.percentile(99.0)),
        ratio(delivery.percentile(99.0), rtt.percentile(99.0)),
    );
    println!("{body}");
    if write {
        write_section(&docs_path(), "apiserver", &body)?;
    }
    server.shutdown().await;
    Ok(())
}
