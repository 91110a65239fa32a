//! MicroVM rollouts end to end on the dev control plane, on the **simulated driver** (no guest
//! boots; placement, restarts and readiness go through the real operator and agents): a
//! Rollout with `spec.microVMs` moves eight VMs to a new kernel command line in steps 25/50/100,
//! each canary restarted on it; a second one, whose command line keeps the simulated guest
//! from ever becoming ready, fails its analysis and restores the old command line on its
//! canaries by itself.

use std::time::Duration;

use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams};
use quiver_crds::condition::GUEST_READY;
use quiver_crds::{MicroVM, MicroVMPhase, Rollout, RolloutPhase, RunStrategy};
use quiver_tests::cluster::TestCluster;
use quiver_tests::eventually;

const WAIT: Duration = Duration::from_secs(90);
const VMS: usize = 8;

fn vm(name: &str) -> String {
    format!(
        "apiVersion: quiver.dev/v1alpha1\nkind: MicroVM\nmetadata:\n  name: {name}\n  namespace: default\n  \
         labels:\n    app: web\nspec:\n  cpus: 1\n  memoryMiB: 128\n  kernel: /var/lib/quiver/guest/vmlinuz\n  \
         cmdline: console=ttyS0 v1\n  readiness:\n    serialMarker: READY\n"
    )
}

fn rollout(name: &str, cmdline: &str, steps: &[u32]) -> String {
    let steps: String = steps
        .iter()
        .map(|w| format!("  - setWeight: {w}\n"))
        .collect();
    format!(
        "apiVersion: quiver.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  \
         microVMs:\n    selector:\n      matchLabels:\n        app: web\n    template:\n      cmdline: {cmdline}\n  \
         steps:\n{steps}  analysis:\n    interval: 2s\n    failureLimit: 1\n"
    )
}

/// The VM runs `cmdline`: restarted on it (current generation, no restart pending or under
/// way), Running and GuestReady.
fn runs(vm: &MicroVM, cmdline: &str) -> bool {
    let status = vm.status.clone().unwrap_or_default();
    vm.spec.cmdline.as_deref() == Some(cmdline)
        && vm.spec.run_strategy == RunStrategy::Always
        && !vm.annotations().contains_key("quiver.dev/rollout-restart")
        && status.observed_generation == vm.metadata.generation
        && status.phase == Some(MicroVMPhase::Running)
        && status
            .condition(GUEST_READY)
            .is_some_and(|c| c.status == "True")
}

async fn wait_phase(
    rollouts: &Api<Rollout>,
    name: &str,
    phase: RolloutPhase,
) -> anyhow::Result<Rollout> {
    let waited = eventually(WAIT, &format!("{name} {phase:?}"), || async {
        let r = rollouts.get(name).await?;
        let now = r.status.as_ref().and_then(|s| s.phase);
        Ok((now == Some(phase)).then_some(r))
    })
    .await;
    match waited {
        Ok(r) => Ok(r),
        Err(e) => anyhow::bail!("{e}; last status: {:#?}", rollouts.get(name).await?.status),
    }
}

async fn generations(
    vms: &Api<MicroVM>,
) -> anyhow::Result<std::collections::BTreeMap<String, i64>> {
    let list = vms.list(&Default::default()).await?;
    Ok(list
        .items
        .iter()
        .map(|v| (v.name_any(), v.metadata.generation.unwrap_or_default()))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microvm_rollouts_restart_canaries_on_a_new_cmdline_and_roll_back_unready_ones()
-> anyhow::Result<()> {
    let cluster = TestCluster::start_simulated(2).await?;
    let k = cluster.kubectl();
    let vms: Api<MicroVM> = Api::namespaced(cluster.client.clone(), "default");
    let rollouts: Api<Rollout> = Api::namespaced(cluster.client.clone(), "default");
    for i in 0..VMS {
        k.apply(&vm(&format!("web-{i}"))).await?;
    }
    let all_run = |cmdline: &'static str| {
        let vms = vms.clone();
        async move {
            eventually(WAIT, &format!("every VM on {cmdline:?}"), || async {
                let list = vms.list(&Default::default()).await?;
                Ok(
                    (list.items.len() == VMS && list.items.iter().all(|v| runs(v, cmdline)))
                        .then_some(()),
                )
            })
            .await
        }
    };
    all_run("console=ttyS0 v1").await?;

    k.apply(&rollout("cmdline-v2", "console=ttyS0 v2", &[25, 50, 100]))
        .await?;
    let done = wait_phase(&rollouts, "cmdline-v2", RolloutPhase::Completed).await?;
    let status = done.status.unwrap();
    assert_eq!(status.canaries.len(), VMS);
    let passed = status
        .history
        .iter()
        .flat_map(|s| &s.analyses)
        .filter(|a| {
            a.micro_vms
                .as_ref()
                .is_some_and(|h| h.guest_ready == h.canaries)
        })
        .count();
    assert!(
        passed >= 3,
        "each weight passed its readiness analysis: {status:#?}"
    );
    all_run("console=ttyS0 v2").await?;
    rollouts
        .delete("cmdline-v2", &DeleteParams::default())
        .await?;
    let before_broken = generations(&vms).await?;

    // A command line the guest never becomes ready on: the canaries (25% of 8: web-0 and
    // web-1) fail the analysis and get v2 back.
    k.apply(&rollout(
        "cmdline-broken",
        "console=ttyS0 v3 quiver.simulated.ready=never",
        &[25, 100],
    ))
    .await?;
    let rolled_back = wait_phase(&rollouts, "cmdline-broken", RolloutPhase::RolledBack).await?;
    let status = rolled_back.status.unwrap();
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("not GuestReady") && message.contains("web-0"),
        "{message}"
    );
    all_run("console=ttyS0 v2").await?;
    let seen = k
        .run(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=cmdline-broken",
            "-o",
            "jsonpath={range .items[*]}{.type} {.reason}{\"\\n\"}{end}",
        ])
        .await?;
    assert!(seen.contains("Warning RolledBack"), "{seen}");
    // Only the two canaries were touched by the broken rollout.
    let after = generations(&vms).await?;
    for (name, generation) in &before_broken {
        let canary = name == "web-0" || name == "web-1";
        assert_eq!(
            after[name] != *generation,
            canary,
            "{name}: generation {generation} → {}",
            after[name]
        );
    }
    cluster.shutdown().await;
    Ok(())
}
