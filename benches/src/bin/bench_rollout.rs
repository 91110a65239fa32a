//! Rollout benchmark: how fast the Rollout controller acts once it has decided. Six agents in
//! one Raft group on the simulated driver (no guest boots), the operator in-process over both
//! transports. Times, polled through the API every 10 ms:
//! - a step's gate passing (`status.currentStepIndex` moves on) → every host of the new step
//!   serving the target (`Host.status.transports`), over rollouts gRPC → Iroh and back in
//!   steps 25/50/75/100 of four hosts;
//! - the failure decision (phase RolledBack) → the canary serving gRPC again, for a canary made
//!   slow on Iroh (`--inject-latency-ms iroh=60`);
//!
//! next to the baseline of the same run: a host moved by hand (`Host.spec.transport` patched
//! directly) until it serves the new mode.
//!
//! Run: `cargo build --release -p quiver-agent && cargo run --release -p quiver-benches --bin
//! bench-rollout` (`-- --smoke`: one trial each, writes nothing; `-- --no-write`).

use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use quiver_benches::{Samples, docs_path, fmt_duration, write_section};
use quiver_crds::{Host, Rollout, RolloutPhase, Service, Transport};
use quiver_rpc::TransportMode;
use quiver_tests::cluster::TestCluster;

const TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(10);

async fn serves(hosts: &Api<Host>, host: &str, transport: Transport) -> anyhow::Result<bool> {
    let host = hosts.get(host).await?;
    let reported = host.status.map(|s| s.transports).unwrap_or_default();
    Ok(Service::ALL.iter().all(|s| {
        reported
            .iter()
            .any(|t| t.service == *s && t.actual == Some(transport))
    }))
}

async fn all_serve(hosts: &Api<Host>, names: &[String], t: Transport) -> anyhow::Result<bool> {
    for name in names {
        if !serves(hosts, name, t).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn wait_for<T>(
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// A Rollout of `pool` to `to`; `analysis` is appended to its analysis block.
fn manifest(name: &str, pool: &str, to: &str, steps: &[u32], analysis: &str) -> String {
    let steps: String = steps
        .iter()
        .map(|w| format!("  - setWeight: {w}\n"))
        .collect();
    format!(
        "apiVersion: quiver.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: {name}\n  namespace: default\n\
         spec:\n  hostSelector:\n    matchLabels:\n      pool: {pool}\n  target:\n    default: {to}\n  steps:\n{steps}\
         \x20 analysis:\n    interval: 1s\n    minRequests: 1\n    p99LatencyFloorMs: 50\n{analysis}"
    )
}

/// One rollout of pool a to `to`: for each gate passed, the time until the new step's hosts
/// serve `to`.
async fn rollout_steps(
    cluster: &TestCluster,
    name: &str,
    to: Transport,
    samples: &mut Samples,
) -> anyhow::Result<()> {
    let hosts: Api<Host> = Api::all(cluster.client.clone());
    let rollouts: Api<Rollout> = Api::namespaced(cluster.client.clone(), "default");
    let word = if to == Transport::Iroh {
        "iroh"
    } else {
        "grpc"
    };
    cluster
        .kubectl()
        .apply(&manifest(
            name,
            "a",
            word,
            &[25, 50, 75, 100],
            "    failureLimit: 3\n",
        ))
        .await?;
    let mut step = 0;
    loop {
        let (index, phase) = wait_for("the next step", async || {
            let r = rollouts.get(name).await?;
            let s = r.status.unwrap_or_default();
            let index = s.current_step_index.unwrap_or(0);
            let done = s.phase == Some(RolloutPhase::Completed);
            anyhow::ensure!(
                !matches!(
                    s.phase,
                    Some(RolloutPhase::RolledBack | RolloutPhase::Failed)
                ),
                "{name}: {:?}: {:?}",
                s.phase,
                s.message
            );
            Ok((index > step || done).then_some((index, s.phase)))
        })
        .await?;
        if phase == Some(RolloutPhase::Completed) {
            break;
        }
        let passed = Instant::now();
        step = index;
        let canaries = wait_for("the step's hosts serving", async || {
            let r = rollouts.get(name).await?;
            let canaries = r.status.unwrap_or_default().canaries;
            Ok(all_serve(&hosts, &canaries, to).await?.then_some(canaries))
        })
        .await?;
        let took = passed.elapsed();
        println!(
            "{name}: step {index} ({} hosts) serving after {took:?}",
            canaries.len()
        );
        samples.push(took);
    }
    rollouts.delete(name, &DeleteParams::default()).await?;
    Ok(())
}

/// One rollback of pool b's slow canary: RolledBack → the canary serving gRPC again. The gate
/// is absolute (`maxP99LatencyMs: 50` against the canary's injected 60 ms): compared with the
/// baseline alone, a slow disk raising the baseline's p99 (Raft appends wait for fsync) once
/// let the slow canary pass.
async fn rollback(cluster: &TestCluster, name: &str) -> anyhow::Result<Duration> {
    let hosts: Api<Host> = Api::all(cluster.client.clone());
    let rollouts: Api<Rollout> = Api::namespaced(cluster.client.clone(), "default");
    cluster
        .kubectl()
        .apply(&manifest(
            name,
            "b",
            "iroh",
            &[50, 100],
            "    failureLimit: 1\n    maxP99LatencyMs: 50\n",
        ))
        .await?;
    wait_for("RolledBack", async || {
        let r = rollouts.get(name).await?;
        let phase = r.status.unwrap_or_default().phase;
        anyhow::ensure!(phase != Some(RolloutPhase::Completed), "{name} passed");
        Ok((phase == Some(RolloutPhase::RolledBack)).then_some(()))
    })
    .await?;
    let decided = Instant::now();
    wait_for("the canary back on gRPC", async || {
        Ok(serves(&hosts, "agent-0", Transport::Grpc)
            .await?
            .then_some(()))
    })
    .await?;
    let took = decided.elapsed();
    println!("{name}: rolled back after {took:?}");
    rollouts.delete(name, &DeleteParams::default()).await?;
    Ok(took)
}

/// The baseline: `host`'s `spec.transport` patched by hand, until it serves `to`.
async fn by_hand(cluster: &TestCluster, host: &str, to: Transport) -> anyhow::Result<Duration> {
    let hosts: Api<Host> = Api::all(cluster.client.clone());
    let patch = serde_json::json!({"spec": {"transport": {"default": to}}});
    let started = Instant::now();
    hosts
        .patch(host, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_for("the host serving", async || {
        Ok(serves(&hosts, host, to).await?.then_some(()))
    })
    .await?;
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let write = !smoke && !std::env::args().any(|a| a == "--no-write");
    let trials = if smoke { 1 } else { 5 };
    let mut cluster = TestCluster::start_with(0, true, TransportMode::Dual).await?;
    cluster.stop_operator().await;
    let slow = ["--host-label", "pool=b", "--inject-latency-ms", "iroh=60"];
    cluster.add_agent_with("agent-0", None, &slow).await?;
    for i in 1..=4 {
        let name = format!("agent-{i}");
        cluster
            .add_agent_with(&name, None, &["--host-label", "pool=a"])
            .await?;
    }
    cluster
        .add_agent_with("agent-5", None, &["--host-label", "pool=b"])
        .await?;
    cluster.start_operator();
    let (mut baseline, mut steps, mut rollbacks) =
        (Samples::default(), Samples::default(), Samples::default());
    for i in 0..6 {
        by_hand(&cluster, &format!("agent-{i}"), Transport::Grpc).await?;
    }
    for i in 0..trials {
        baseline.push(by_hand(&cluster, "agent-5", Transport::Iroh).await?);
        baseline.push(by_hand(&cluster, "agent-5", Transport::Grpc).await?);
        rollout_steps(&cluster, &format!("up-{i}"), Transport::Iroh, &mut steps).await?;
        rollout_steps(&cluster, &format!("down-{i}"), Transport::Grpc, &mut steps).await?;
        rollbacks.push(rollback(&cluster, &format!("slow-{i}")).await?);
    }
    cluster.shutdown().await;
    let floor = baseline.percentile(50.0);
    let row = |label: &str, s: &mut Samples| {
        format!(
            "| {label} | {} | {} | {} | {} | {:.2}× |",
            s.len(),
            fmt_duration(s.percentile(50.0)),
            fmt_duration(s.percentile(0.0)),
            fmt_duration(s.percentile(100.0)),
            s.percentile(50.0).as_secs_f64() / floor.as_secs_f64().max(1e-9),
        )
    };
    let release = if cfg!(debug_assertions) {
        ""
    } else {
        "--release "
    };
    let body = format!(
        "## Rollouts: from a decision to the hosts serving it\n\n\
         Command: `cargo build {release}-p quiver-agent && cargo run {release}-p quiver-benches --bin bench-rollout` \
         (dev control plane and operator in-process, six `quiver-agent` processes in one Raft group on loopback on the \
         **simulated driver**, 2 cores; {trials} trials). Times are taken by polling the API every 10 ms, so each \
         includes up to one poll, and starts at the status write announcing the step, which follows the \
         controller's writes of the hosts' `spec.transport` by a few ms. Analysis: 1 s intervals, \
         `p99LatencyFloorMs: 50` (with the default 5 ms, p99 noise of 10 → 25 ms between histogram buckets on the \
         loaded machine once failed a gate three times and rolled a healthy step back; the bench times the moves, \
         not the gate); the slow canary's rollout adds `maxP99LatencyMs: 50`, so that its failure does not \
         depend on the baseline's p99 (on a slow disk Raft appends raised it enough once to let the canary pass). \
         A host serves a mode once its Host status says so: the agents' Raft leader has committed \
         the Host's `spec.transport` to the ledger, the agent has switched to it, and the operator's \
         Host controller has written what the agent reports.\n\n\
         | from | to | samples | p50 | min | max | p50 ÷ by hand |\n|---|---|---|---|---|---|---|\n\
         | a step's gate passing (steps 25/50/75/100 of four hosts, gRPC ↔ Iroh) {}\n\
         | the failure decision (RolledBack) {}\n\
         | `Host.spec.transport` patched by hand (baseline) {}\n\n\
         Targets: gate pass → the step's hosts serving ≤ 1 s; failure decision → canaries rolled back ≤ 2 s. What would \
         change it: the Host controller's heartbeat (2 s) bounds how late a switch shows when a wake-up is missed; \
         agents on other machines add their round trips.\n",
        row("every host of the step serving the target", &mut steps),
        row("the canary serving gRPC again", &mut rollbacks),
        row("the host serving the new mode", &mut baseline),
    );
    println!("{body}");
    if write {
        write_section(&docs_path(), "rollout", &body)?;
    }
    Ok(())
}
