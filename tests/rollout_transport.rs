//! Transport rollouts end to end on the dev control plane: six agents in one Raft group booting
//! real QEMU guests (TCG), the operator's Rollout controller moving them with `Rollout` objects
//! applied by kubectl.
//!
//! - Pool `a` (four hosts) goes gRPC → Iroh through 5 / 25 / 50 / 100 % with timed pauses and
//!   one manual promotion (`spec.promoteStep`) after an operator restart; VMs keep running, one
//!   applied mid-rollout starts, Raft keeps its leader, and every host ends on Iroh.
//! - Pool `b` (two hosts) has a canary made slow on Iroh (`--inject-latency-ms iroh=60`):
//!   the analysis fails, the rollout rolls the canary back to gRPC by itself, and status and
//!   Events carry the reason and the numbers.

use std::time::Duration;

use kube::Api;
use quiver_crds::{Host, Rollout, RolloutPhase, Service, Transport, Verdict};
use quiver_rpc::TransportMode;
use quiver_tests::cluster::{TestCluster, guest_dir};
use quiver_tests::eventually;
use quiver_tests::vm::{BOOT, qemu_lock};

const WAIT: Duration = Duration::from_secs(60);

/// Whether `host` serves every service over `transport`, as its status says.
async fn serves(hosts: &Api<Host>, host: &str, transport: Transport) -> anyhow::Result<bool> {
    let host = hosts.get(host).await?;
    let reported = host.status.map(|s| s.transports).unwrap_or_default();
    Ok(Service::ALL.iter().all(|s| {
        reported
            .iter()
            .any(|t| t.service == *s && t.actual == Some(transport))
    }))
}

async fn rollout(api: &Api<Rollout>, name: &str) -> anyhow::Result<Rollout> {
    Ok(api.get(name).await?)
}

fn phase(r: &Rollout) -> Option<RolloutPhase> {
    r.status.as_ref().and_then(|s| s.phase)
}

/// Waits until rollout `name` satisfies `done`; the error shows its last status.
async fn wait_rollout(
    api: &Api<Rollout>,
    name: &str,
    what: &str,
    done: impl Fn(&Rollout) -> bool,
) -> anyhow::Result<Rollout> {
    let waited = eventually(WAIT, &format!("{name} {what}"), || async {
        let r = rollout(api, name).await?;
        Ok(done(&r).then_some(r))
    })
    .await;
    match waited {
        Ok(r) => Ok(r),
        Err(e) => {
            let last = rollout(api, name).await?;
            anyhow::bail!("{e}; last status: {:#?}", last.status)
        }
    }
}

async fn events(cluster: &TestCluster, name: &str) -> anyhow::Result<String> {
    cluster
        .kubectl()
        .run(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "jsonpath={range .items[*]}{.type} {.reason}: {.message}{\"\\n\"}{end}",
        ])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_move_hosts_to_iroh_step_by_step_and_roll_back_slow_canaries() -> anyhow::Result<()>
{
    // The operator reaches agents over both transports, as a fleet mid-rollout needs.
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let _qemu = qemu_lock().await;
    let mut cluster = TestCluster::start_with(0, false, TransportMode::Dual).await?;
    cluster.stop_operator().await;
    cluster
        .add_agent_with(
            "agent-0",
            None,
            &["--host-label", "pool=b", "--inject-latency-ms", "iroh=60"],
        )
        .await?;
    for i in 1..=4 {
        cluster
            .add_agent_with(&format!("agent-{i}"), None, &["--host-label", "pool=a"])
            .await?;
    }
    cluster
        .add_agent_with("agent-5", None, &["--host-label", "pool=b"])
        .await?;
    cluster.start_operator();
    let k = cluster.kubectl();
    let hosts: Api<Host> = Api::all(cluster.client.clone());

    // Bad rollouts are refused by the schema, naming the field.
    let bad = |steps: &str, target: &str| {
        format!(
            "apiVersion: quiver.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: bad\n  namespace: default\nspec:\n  target:\n    {target}\n  steps:\n{steps}"
        )
    };
    for (steps, target, field) in [
        (
            "  - setWeight: 50\n  - pause: {}\n  - setWeight: 25\n",
            "default: iroh",
            "spec.steps",
        ),
        (
            "  - setWeight: 150\n",
            "default: iroh",
            "spec.steps[0].setWeight",
        ),
        ("  - {}\n", "default: iroh", "spec.steps[0]"),
        (
            "  - setWeight: 50\n",
            "default: iroh\n    quic: iroh",
            "spec.target.quic",
        ),
    ] {
        let err = k
            .fail(&["apply", "-f", "-"], Some(&bad(steps, target)))
            .await?;
        assert!(err.contains(field), "{field}: {err}");
    }
    let rollouts: Api<Rollout> = Api::namespaced(cluster.client.clone(), "default");

    // Every host starts on gRPC.
    for i in 0..6 {
        k.run(&[
            "patch",
            "qh",
            &format!("agent-{i}"),
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"transport":{"default":"grpc"}}}"#,
        ])
        .await?;
    }
    eventually(WAIT, "every host on gRPC", || async {
        for i in 0..6 {
            if !serves(&hosts, &format!("agent-{i}"), Transport::Grpc).await? {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await?;
    cluster.apply_vm(&guest, "before", "").await?;
    k.wait_vm(
        "before",
        "GuestReady",
        BOOT,
        quiver_tests::vm::VmView::is_ready,
    )
    .await?;

    // Pool b: the canary is slow on Iroh, so the rollout rolls back by itself. Its gate has an
    // absolute limit too (maxP99LatencyMs: 50 against the injected 60 ms): judged only against
    // the baseline, whose p99 includes Raft appends waiting for fsync, a slow disk can hide the
    // slow canary (it once did in the rollout benchmark's smoke run).
    k.apply(
        "apiVersion: quiver.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: slow-canary\n  namespace: default\nspec:\n  hostSelector:\n    matchLabels:\n      pool: b\n  target:\n    default: iroh\n  steps:\n  - setWeight: 50\n  - setWeight: 100\n  analysis:\n    interval: 3s\n    minRequests: 5\n    p99LatencyFloorMs: 50\n    maxP99LatencyMs: 50\n    failureLimit: 2\n",
    )
    .await?;
    let rolled_back = wait_rollout(&rollouts, "slow-canary", "RolledBack", |r| {
        phase(r) == Some(RolloutPhase::RolledBack)
    })
    .await?;
    let status = rolled_back.status.unwrap();
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.contains("2 of 2") && message.contains("p99"),
        "the reason and numbers: {message}"
    );
    let analyses = &status.history.last().unwrap().analyses;
    let failed = analyses
        .iter()
        .filter(|a| a.verdict == Verdict::Failed)
        .count();
    assert_eq!(failed, 2, "{analyses:#?}");
    let last = analyses.last().unwrap();
    let canary_p99 = last.canary.as_ref().unwrap().p99_ms.unwrap();
    assert!(canary_p99 > 50.0, "{last:#?}");
    assert!(
        last.baseline.as_ref().is_some_and(|b| b.requests > 0),
        "the baseline was measured next to the canary: {last:#?}"
    );
    eventually(WAIT, "agent-0 back on gRPC", || async {
        Ok(serves(&hosts, "agent-0", Transport::Grpc)
            .await?
            .then_some(()))
    })
    .await?;
    assert!(
        serves(&hosts, "agent-5", Transport::Grpc).await?,
        "the baseline never moved"
    );
    let seen = events(&cluster, "slow-canary").await?;
    assert!(
        seen.contains("Warning AnalysisFailed") && seen.contains("Warning RolledBack"),
        "{seen}"
    );

    // Pool a: 5 → pause → 25 → pause until promoted → 50 → pause → 100.
    k.apply(
        "apiVersion: quiver.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: to-iroh\n  namespace: default\nspec:\n  hostSelector:\n    matchLabels:\n      pool: a\n  target:\n    default: iroh\n  steps:\n  - setWeight: 5\n  - pause: {duration: 2s}\n  - setWeight: 25\n  - pause: {}\n  - setWeight: 50\n  - pause: {duration: 2s}\n  - setWeight: 100\n  analysis:\n    interval: 2s\n    minRequests: 5\n    p99LatencyFloorMs: 50\n",
    )
    .await?;
    let paused = eventually(WAIT, "to-iroh paused at step 3", || async {
        let r = rollout(&rollouts, "to-iroh").await?;
        let at = r.status.as_ref().and_then(|s| s.current_step_index);
        Ok(
            (phase(&r) == Some(RolloutPhase::Paused) && at == Some(3) && r.spec.paused)
                .then_some(r),
        )
    })
    .await?;
    assert_eq!(paused.status.unwrap().canaries, ["agent-1"]);
    assert!(serves(&hosts, "agent-1", Transport::Iroh).await?);
    assert!(serves(&hosts, "agent-2", Transport::Grpc).await?);
    // The operator restarts mid-rollout: everything the rollout needs is in its status.
    cluster.stop_operator().await;
    cluster.start_operator();
    // A VM applied mid-rollout starts; the one from before still runs.
    cluster.apply_vm(&guest, "during", "").await?;
    k.wait_vm(
        "during",
        "GuestReady",
        BOOT,
        quiver_tests::vm::VmView::is_ready,
    )
    .await?;

    // The manual promotion: spec.promoteStep (what `kubectl quiver rollout promote` raises).
    k.run(&[
        "patch",
        "qro",
        "to-iroh",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"promoteStep":1}}"#,
    ])
    .await?;
    let done = wait_rollout(&rollouts, "to-iroh", "Completed", |r| {
        phase(r) == Some(RolloutPhase::Completed)
    })
    .await?;
    let status = done.status.unwrap();
    assert_eq!(status.current_weight, 100);
    assert_eq!(status.observed_promote_step, 1);
    let outcomes: Vec<(u32, Option<String>)> = status
        .history
        .iter()
        .map(|s| (s.index, s.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|(_, o)| o.as_deref() == Some("Promoted"))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        status
            .history
            .iter()
            .any(|s| s.analyses.iter().any(|a| a.verdict == Verdict::Passed)),
        "weights passed an analysis"
    );
    for i in 1..=4 {
        assert!(
            serves(&hosts, &format!("agent-{i}"), Transport::Iroh).await?,
            "agent-{i}"
        );
    }
    for vm in ["before", "during"] {
        k.wait_vm(vm, "GuestReady", BOOT, quiver_tests::vm::VmView::is_ready)
            .await?;
    }
    // Raft kept working: a VM applied now is placed and runs, and every host knows a leader.
    cluster.apply_vm(&guest, "after", "").await?;
    k.wait_vm(
        "after",
        "GuestReady",
        BOOT,
        quiver_tests::vm::VmView::is_ready,
    )
    .await?;
    for host in hosts.list(&Default::default()).await? {
        let raft = host.status.and_then(|s| s.raft);
        assert!(raft.and_then(|r| r.leader).is_some(), "a leader is known");
    }
    let seen = events(&cluster, "to-iroh").await?;
    assert!(
        seen.contains("Normal StepStarted") && seen.contains("Normal Completed"),
        "{seen}"
    );
    cluster.shutdown().await;
    Ok(())
}
