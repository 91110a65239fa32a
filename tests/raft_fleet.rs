//! Agents in one Raft group that owns placement, driven through the agents' own API (as the
//! operator drives it): a VM put through any agent runs where the leader placed it; when the
//! agent of its host is killed, the VM runs on another host under a higher epoch, and, with
//! real QEMU, the orphaned QEMU (it outlives its agent) is killed by the lease watchdog before
//! the new copy is spawned. A restarted agent whose VM moved away runs nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use quiver_crds::MicroVM;
use quiver_rpc::proto;
use quiver_tests::cluster::{TestCluster, guest_dir};
use quiver_tests::eventually;
use quiver_tests::procs::{alive, started_ms, uptime_ms, watch_last_alive};

const FORMED: Duration = Duration::from_secs(60);
/// Lease ttl (4 s) + margin (2 s) + an election + a boot, with room for a loaded machine.
const FAILOVER: Duration = Duration::from_secs(60);

/// A put of the test guest with 256 MiB (hosts offer 8 GiB each).
fn put(name: &str) -> proto::PutVmRequest {
    let vm = MicroVM::test(name).memory_mib(256);
    let uid = vm.metadata.uid.clone().expect("uid");
    quiver_operator::convert::put_request(&vm, &uid, 0)
}

/// Each live agent's status, by host name.
async fn statuses(cluster: &TestCluster) -> BTreeMap<String, proto::AgentStatus> {
    let mut all = BTreeMap::new();
    for agent in &cluster.agents {
        let Ok(client) = agent.client().await else {
            continue;
        };
        if let Ok(status) = client.status().await {
            all.insert(agent.options.name.clone(), status);
        }
    }
    all
}

/// Waits until the `hosts` agree on one leader, vote or follow it, and hold their leases.
async fn wait_formed(cluster: &TestCluster, hosts: &[&str]) -> anyhow::Result<String> {
    eventually(FORMED, "a formed Raft group", || async {
        let all = statuses(cluster).await;
        let raft: Vec<&proto::RaftInfo> = hosts
            .iter()
            .filter_map(|h| all.get(*h)?.raft.as_ref())
            .collect();
        let leader = raft.first().map(|r| r.leader.clone()).unwrap_or_default();
        let formed = raft.len() == hosts.len()
            && !leader.is_empty()
            && raft.iter().all(|r| {
                r.leader == leader && r.lease_valid && (r.role == "leader" || r.role == "follower")
            });
        Ok(formed.then_some(leader))
    })
    .await
}

/// The hosts of a three-agent fleet.
const THREE: [&str; 3] = ["agent-0", "agent-1", "agent-2"];

/// Three agents in one formed group (real QEMU unless `simulated`), and its leader.
async fn formed_fleet(simulated: bool) -> anyhow::Result<(TestCluster, String)> {
    let cluster = TestCluster::start_fleet(3, simulated).await?;
    let leader = wait_formed(&cluster, &THREE).await?;
    Ok((cluster, leader))
}

/// Where `uid` runs: (host, status) for every live agent reporting it Running.
async fn running(cluster: &TestCluster, uid: &str) -> Vec<(String, proto::VmStatus)> {
    let mut found = Vec::new();
    for agent in &cluster.agents {
        let Ok(client) = agent.client().await else {
            continue;
        };
        let Ok(vms) = client.list_vms().await else {
            continue;
        };
        for vm in vms {
            if vm.uid == uid && vm.phase == proto::Phase::Running as i32 {
                found.push((agent.options.name.clone(), vm));
            }
        }
    }
    found
}

async fn wait_running_once(
    cluster: &TestCluster,
    uid: &str,
    not_on: Option<&str>,
) -> anyhow::Result<(String, proto::VmStatus)> {
    let what = format!("{uid} running on exactly one host");
    eventually(FAILOVER, &what, || async {
        let copies = running(cluster, uid).await;
        anyhow::ensure!(copies.len() <= 1, "two running copies: {copies:?}");
        let found = copies
            .into_iter()
            .next()
            .filter(|(h, _)| Some(h.as_str()) != not_on);
        if found.is_none() {
            anyhow::bail!(
                "not running; agents report {:?}",
                reports(cluster, uid).await
            );
        }
        Ok(found)
    })
    .await
}

/// Every live agent's report of `uid`, whatever its phase (for failure messages).
async fn reports(cluster: &TestCluster, uid: &str) -> Vec<(String, i32, u64, String)> {
    let mut found = Vec::new();
    for agent in &cluster.agents {
        let Ok(client) = agent.client().await else {
            continue;
        };
        if let Ok(vm) = client.get_vm(uid).await {
            found.push((agent.options.name.clone(), vm.phase, vm.epoch, vm.message));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_vm_moves_under_a_higher_epoch_and_its_restarted_agent_runs_nothing()
-> anyhow::Result<()> {
    if guest_dir().is_none() {
        return Ok(());
    }
    let (mut cluster, _) = formed_fleet(true).await?;

    // Put through whichever agent: the leader places it.
    let req = put("moves");
    let uid = req.uid.clone();
    let reply = cluster.agent_client(2).await?.put_vm(req).await?;
    let placed = reply.status.context("status")?;
    assert_eq!(placed.epoch, 1, "{placed:?}");
    let (host, first) = wait_running_once(&cluster, &uid, None).await?;
    assert_eq!((host.as_str(), first.epoch), (placed.host.as_str(), 1));

    cluster.kill_agent(&host).await?;
    let killed = std::time::Instant::now();
    let (moved_to, second) = wait_running_once(&cluster, &uid, Some(&host)).await?;
    eprintln!("failover {host} -> {moved_to} in {:?}", killed.elapsed());
    assert_eq!(second.epoch, 2, "moved under a higher epoch: {second:?}");

    // The old host comes back: its lease lapsed, the VM is elsewhere, it runs nothing.
    cluster.restart_agent(&host).await?;
    wait_formed(&cluster, &THREE).await?;
    let back = cluster
        .agents
        .iter()
        .find(|a| a.options.name == host)
        .context("agent")?;
    eventually(
        Duration::from_secs(30),
        "the restarted host empty",
        || async {
            let vms = back.client().await?.list_vms().await?;
            Ok(vms.is_empty().then_some(()))
        },
    )
    .await?;
    let copies = running(&cluster, &uid).await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        (copies[0].0.as_str(), copies[0].1.epoch),
        (moved_to.as_str(), 2)
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orphaned_qemu_of_a_killed_agent_dies_before_the_new_copy_is_spawned()
-> anyhow::Result<()> {
    if guest_dir().is_none() {
        return Ok(());
    }
    let _qemu = quiver_tests::vm::qemu_lock().await;
    let (mut cluster, _) = formed_fleet(false).await?;
    let req = put("orphan");
    let uid = req.uid.clone();
    cluster.agent_client(0).await?.put_vm(req).await?;
    let (host, first) = wait_running_once(&cluster, &uid, None).await?;
    let orphan = first.pid;
    assert!(orphan > 0, "{first:?}");

    cluster.kill_agent(&host).await?;
    assert!(
        std::path::Path::new(&format!("/proc/{orphan}")).exists(),
        "the QEMU outlives its agent"
    );
    // Watch the orphan die (the watchdog kills it at the lease deadline).
    let died_at = eventually(FAILOVER, "the orphaned QEMU killed", || async {
        Ok((!alive(orphan)).then(uptime_ms))
    })
    .await?;
    let (moved_to, second) = wait_running_once(&cluster, &uid, Some(&host)).await?;
    assert_eq!(second.epoch, 2);
    let spawned_at = started_ms(second.pid).context("the new QEMU's start time")?;
    eprintln!(
        "orphan on {host} dead at {died_at} ms; new copy on {moved_to} spawned at {spawned_at} ms"
    );
    assert!(
        died_at <= spawned_at,
        "the old copy died at {died_at} ms, after the new one was spawned at {spawned_at} ms"
    );
    cluster.shutdown().await;
    Ok(())
}

/// `spec.drain` on a live host (real QEMU): the VM moves to another host under the next
/// epoch, and its QEMU on the drained host had exited before the new one was spawned (the
/// new copy waits for the old host's release). The drained host runs nothing afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_hosts_vm_stops_there_before_it_starts_elsewhere() -> anyhow::Result<()> {
    if guest_dir().is_none() {
        return Ok(());
    }
    let _qemu = quiver_tests::vm::qemu_lock().await;
    let (cluster, _) = formed_fleet(false).await?;
    let req = put("drained");
    let uid = req.uid.clone();
    cluster.agent_client(1).await?.put_vm(req).await?;
    let (host, first) = wait_running_once(&cluster, &uid, None).await?;
    let old = first.pid;
    let last_alive = watch_last_alive(old, FAILOVER);

    let patch = r#"{"spec":{"drain":true}}"#;
    cluster
        .kubectl()
        .run(&["patch", "qh", &host, "--type", "merge", "-p", patch])
        .await?;
    let (moved_to, second) = wait_running_once(&cluster, &uid, Some(&host)).await?;
    assert_eq!(second.epoch, 2, "{second:?}");
    let last_alive = last_alive
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))?;
    anyhow::ensure!(!alive(old), "the drained host's QEMU still runs");
    let spawned_at = started_ms(second.pid).context("the new QEMU's start time")?;
    eprintln!(
        "old copy on {host} last alive at {last_alive} ms; new copy on {moved_to} spawned at {spawned_at} ms"
    );
    // Start times count in 10 ms clock ticks: allow one.
    assert!(
        last_alive <= spawned_at + 10,
        "the old copy still ran at {last_alive} ms, after the new one was spawned at {spawned_at} ms"
    );
    let index = THREE
        .iter()
        .position(|h| *h == host)
        .context("host index")?;
    let left = cluster.agent_client(index).await?.list_vms().await?;
    assert!(left.is_empty(), "the drained host still has {left:?}");
    cluster.shutdown().await;
    Ok(())
}

/// The user's view (simulated driver: no QEMU, the placement path only): a MicroVM applied
/// with kubectl runs where the group placed it; when its host's agent is killed, its status
/// shows another host, a higher epoch and Running, with no action from anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_microvm_fails_over_by_itself_when_its_host_dies() -> anyhow::Result<()> {
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let mut cluster = TestCluster::start_simulated(3).await?;
    wait_formed(&cluster, &THREE).await?;
    cluster.apply_vm(&guest, "ha", "").await?;
    let k = cluster.kubectl();
    let host_epoch = "jsonpath={.status.phase} {.status.host} {.status.epoch}";
    let first = eventually(FAILOVER, "ha Running", || async {
        let row = k.run(&["get", "mvm", "ha", "-o", host_epoch]).await?;
        Ok(row.starts_with("Running ").then_some(row))
    })
    .await?;
    let host = first.split(' ').nth(1).context("host")?.to_owned();
    assert!(first.ends_with(" 1"), "{first}");
    cluster.kill_agent(&host).await?;
    let moved = eventually(FAILOVER, "ha Running elsewhere", || async {
        let row = k.run(&["get", "mvm", "ha", "-o", host_epoch]).await?;
        let elsewhere = row.starts_with("Running ") && !row.contains(&format!(" {host} "));
        Ok(elsewhere.then_some(row))
    })
    .await?;
    assert!(moved.ends_with(" 2"), "moved under epoch 2: {moved}");
    // A VM no host fits says which filter stopped it.
    cluster
        .apply_vm(&guest, "nowhere", "  nodeSelector:\n    zone: nowhere\n")
        .await?;
    let why = eventually(FAILOVER, "nowhere's placement verdict", || async {
        let message = k
            .run(&["get", "mvm", "nowhere", "-o", "jsonpath={.status.message}"])
            .await?;
        Ok(message.contains("zone=nowhere").then_some(message))
    })
    .await?;
    assert!(why.contains("spec.nodeSelector"), "{why}");
    k.run(&["delete", "mvm", "ha", "nowhere", "--wait=true"])
        .await?;
    cluster.shutdown().await;
    Ok(())
}

/// Every agent killed at once and started again: the group re-forms from disk within the
/// lease, the ledger is what it was, and no guest was restarted (same QEMU, same epoch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_agent_recovers_the_ledger_and_disturbs_no_guest() -> anyhow::Result<()> {
    if guest_dir().is_none() {
        return Ok(());
    }
    let _qemu = quiver_tests::vm::qemu_lock().await;
    let (mut cluster, _) = formed_fleet(false).await?;
    let reqs = [put("keep-a"), put("keep-b")];
    for req in &reqs {
        cluster.agent_client(1).await?.put_vm(req.clone()).await?;
    }
    let mut before = BTreeMap::new();
    for req in &reqs {
        let (host, status) = wait_running_once(&cluster, &req.uid, None).await?;
        before.insert(req.uid.clone(), (host, status.epoch, status.pid));
    }
    for agent in &mut cluster.agents {
        agent.kill().await;
    }
    let restarts = cluster.agents.iter_mut().map(|a| a.restart());
    for restarted in futures::future::join_all(restarts).await {
        restarted?;
    }
    wait_formed(&cluster, &THREE).await?;
    for (uid, was) in &before {
        let (host, status) = wait_running_once(&cluster, uid, None).await?;
        let now = (host, status.epoch, status.pid);
        if &now != was {
            let words = ["lease", "renew", "leader", "down", "elect", "vote", "fenc"];
            anyhow::bail!(
                "{uid} was restarted or moved: {was:?} -> {now:?}\nagent logs:{}",
                cluster.agent_log_lines(&words, 60)
            );
        }
    }
    cluster.shutdown().await;
    Ok(())
}

/// The leader is killed while VMs are being created through another agent: every put that
/// was acknowledged runs afterwards, exactly once (simulated driver: placement only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_creates_loses_no_acknowledged_put() -> anyhow::Result<()> {
    if guest_dir().is_none() {
        return Ok(());
    }
    let (mut cluster, leader) = formed_fleet(true).await?;
    let writer = THREE
        .iter()
        .copied()
        .find(|n| *n != leader)
        .context("a follower")?;
    let index = THREE.iter().position(|n| *n == writer).context("index")?;
    let client = cluster.agent_client(index).await?;
    let puts = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0..30 {
            let req = put(&format!("burst-{i}"));
            if client.put_vm(req.clone()).await.is_ok() {
                acknowledged.push(req.uid);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        acknowledged
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill_agent(&leader).await?;
    let acknowledged = puts.await?;
    assert!(
        acknowledged.len() >= 15,
        "most puts are taken: {acknowledged:?}"
    );
    for uid in &acknowledged {
        wait_running_once(&cluster, uid, Some(&leader)).await?;
    }
    cluster.shutdown().await;
    Ok(())
}

/// A Raft database that is not one (overwritten) or was cut short: the agent refuses to start
/// and says which file, instead of serving a ledger it does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_corrupt_or_truncated_raft_database_refuses_to_start() -> anyhow::Result<()>
{
    let mut cluster = TestCluster::start_fleet(1, true).await?;
    wait_formed(&cluster, &["agent-0"]).await?;
    let db = cluster.agents[0].options.data_dir.join("raft.redb");
    let good = std::fs::read(&db)?;
    cluster.agents[0].stop().await;
    for (what, bytes) in [
        ("overwritten", b"not a database at all".repeat(100)),
        ("truncated", good[..good.len() / 2].to_vec()),
    ] {
        std::fs::write(&db, &bytes)?;
        let err = cluster.restart_agent("agent-0").await.expect_err(what);
        let log = std::fs::read_to_string(cluster.agents[0].options.data_dir.join("agent.log"))?;
        assert!(
            log.contains("Raft database") && log.contains("raft.redb"),
            "{what}: {err:#}\n{log}"
        );
    }
    Ok(())
}

/// Waits until the live `hosts` (all but `skip`) have one leader and `voters` voters, and
/// returns each host's role; more than five voters at any time fails.
async fn settled_roles(
    cluster: &TestCluster,
    hosts: &[String],
    voters: usize,
    skip: Option<&str>,
) -> anyhow::Result<BTreeMap<String, String>> {
    eventually(FORMED, &format!("{voters} voters"), || async {
        let all = statuses(cluster).await;
        let roles: BTreeMap<String, String> = hosts
            .iter()
            .filter(|h| Some(h.as_str()) != skip)
            .filter_map(|h| Some((h.clone(), all.get(h)?.raft.as_ref()?.role.clone())))
            .collect();
        let voting = roles
            .values()
            .filter(|r| *r == "leader" || *r == "follower")
            .count();
        let leaders = roles.values().filter(|r| *r == "leader").count();
        anyhow::ensure!(voting <= 5, "more than five voters: {roles:?}");
        let live = hosts.len() - usize::from(skip.is_some());
        Ok((roles.len() == live && leaders == 1 && voting == voters).then_some(roles))
    })
    .await
}

/// Six agents: five vote and one learns. When a voter's agent is killed, the leader declares
/// its host down and promotes the learner, so five live agents vote again (simulated driver).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_voter_of_six_is_replaced_by_the_learner() -> anyhow::Result<()> {
    if guest_dir().is_none() {
        return Ok(());
    }
    let mut cluster = TestCluster::start_fleet(6, true).await?;
    let hosts: Vec<String> = (0..6).map(|i| format!("agent-{i}")).collect();
    let before = settled_roles(&cluster, &hosts, 5, None).await?;
    let role_of = |roles: &BTreeMap<String, String>, role: &str| {
        roles
            .iter()
            .find(|(_, r)| *r == role)
            .map(|(h, _)| h.clone())
    };
    let learner = role_of(&before, "learner").context("a learner")?;
    let victim = role_of(&before, "follower").context("a follower")?;
    cluster.kill_agent(&victim).await?;
    let after = settled_roles(&cluster, &hosts, 5, Some(&victim)).await?;
    assert_eq!(
        after.get(&learner).map(String::as_str),
        Some("follower"),
        "the learner was promoted: {after:?}"
    );
    cluster.shutdown().await;
    Ok(())
}
