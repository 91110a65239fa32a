//! End-to-end: the real `quiver-agent` binary boots real guests under TCG, driven over gRPC.
//!
//! Needs the guest image from `scripts/guest-image.sh` (`QUIVER_GUEST_DIR`, default
//! `/var/lib/quiver/guest`). Without it the tests print SKIPPED, unless `QUIVER_REQUIRE_GUEST`
//! is set, in which case they fail.

mod harness;

use futures::StreamExt;
use harness::{
    Agent, MARKER, guest, is_running_ready, phase, put_request, spec_mut, wait_for, wait_gone,
};
use quiver_agent::vm::process;
use quiver_rpc::ClientError as Error;
use quiver_rpc::Code;
use quiver_rpc::proto::{self, Phase, RunStrategy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_boots_to_guest_ready_then_stops_and_is_deleted_without_traces() {
    if guest().is_none() {
        return;
    }
    let agent = Agent::start().await;
    let client = agent.client().await;
    let req = put_request("boot", 1, RunStrategy::Always);

    let put = client.put_vm(req.clone()).await.expect("put");
    assert!(put.changed);
    let ready = wait_for(&agent, "boot", "running and guest-ready", is_running_ready).await;
    assert!(ready.pid > 0 && process::alive(ready.pid));
    assert!(ready.guest_ready_at_ms >= ready.started_at_ms && ready.started_at_ms > 0);
    assert_eq!(
        (ready.host.as_str(), ready.observed_generation),
        ("test-host", 1)
    );

    let again = client.put_vm(req.clone()).await.expect("duplicate put");
    assert!(!again.changed, "same uid + generation must be a no-op");
    assert_eq!(again.status.map(|s| s.pid), Some(ready.pid));

    let mut console = Box::pin(client.console("boot", 0, false).await.expect("console"));
    let mut text = Vec::new();
    while let Some(chunk) = console.next().await {
        text.extend(chunk.expect("chunk").data);
    }
    assert!(String::from_utf8_lossy(&text).contains(MARKER));

    let status = client.status().await.expect("status");
    assert_eq!(
        (
            status.driver.as_str(),
            status.accel.as_str(),
            status.vm_count
        ),
        ("qemu", "tcg", 1)
    );

    let mut halt = req.clone();
    halt.generation = 2;
    spec_mut(&mut halt).run_strategy = RunStrategy::Halted as i32;
    client.put_vm(halt).await.expect("halt");
    let stopped = wait_for(&agent, "boot", "stopped", |s| phase(s) == Phase::Stopped).await;
    assert_eq!(stopped.pid, 0);
    assert!(process::wait_gone(ready.pid, std::time::Duration::from_secs(5)).await);

    assert!(client.delete_vm("boot").await.expect("delete"));
    wait_gone(&agent, "boot").await;
    assert!(!agent.run_dir("boot").exists(), "run dir left behind");
    assert!(agent.live_qemus().is_empty());
    assert!(
        !client.delete_vm("boot").await.expect("second delete"),
        "delete is idempotent"
    );

    let metrics = client.metrics().await.expect("metrics");
    let put_calls = metrics
        .methods
        .iter()
        .find(|m| m.method == "PutVm")
        .expect("PutVm metrics");
    assert_eq!(
        (put_calls.transport.as_str(), put_calls.requests),
        ("grpc", 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_vm_kills_qemu_and_removes_files() {
    if guest().is_none() {
        return;
    }
    let agent = Agent::start().await;
    let client = agent.client().await;
    client
        .put_vm(put_request("del", 1, RunStrategy::Always))
        .await
        .expect("put");
    let running = wait_for(&agent, "del", "running", is_running_ready).await;
    client.delete_vm("del").await.expect("delete");
    wait_gone(&agent, "del").await;
    assert!(!process::alive(running.pid));
    assert!(!agent.run_dir("del").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_restarts_and_readopts_the_running_vm() {
    if guest().is_none() {
        return;
    }
    let mut agent = Agent::start().await;
    let client = agent.client().await;
    client
        .put_vm(put_request("adopt", 1, RunStrategy::Always))
        .await
        .expect("put");
    let before = wait_for(&agent, "adopt", "running", is_running_ready).await;

    agent.kill9(); // returns once the agent process has been reaped
    assert!(
        process::alive(before.pid),
        "QEMU must survive the agent's death"
    );

    agent.restart().await;
    let after = wait_for(&agent, "adopt", "re-adopted", is_running_ready).await;
    assert_eq!(after.pid, before.pid, "same QEMU, not a new one");
    assert_eq!(after.restart_count, 0);
    assert_eq!(after.started_at_ms, before.started_at_ms);

    let client = agent.client().await;
    client.delete_vm("adopt").await.expect("delete");
    wait_gone(&agent, "adopt").await;
    assert!(!process::alive(before.pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_agent_with_open_streams_exits_promptly_and_leaves_vms_running() {
    if guest().is_none() {
        return;
    }
    let mut agent = Agent::start().await;
    let client = agent.client().await;
    client
        .put_vm(put_request("keep", 1, RunStrategy::Always))
        .await
        .expect("put");
    let before = wait_for(&agent, "keep", "running", is_running_ready).await;
    let _watch = client.watch().await.expect("watch");
    let _console = client.console("keep", 0, true).await.expect("console");

    let took = agent.terminate();
    assert!(
        took < std::time::Duration::from_secs(10),
        "agent took {took:?} to stop"
    );
    assert!(
        process::alive(before.pid),
        "stopping the agent must not stop VMs"
    );

    agent.restart().await;
    let after = wait_for(&agent, "keep", "re-adopted", is_running_ready).await;
    assert_eq!(after.pid, before.pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_killed_behind_the_agents_back_fails_and_restarts_per_strategy() {
    if guest().is_none() {
        return;
    }
    let agent = Agent::start().await;
    let client = agent.client().await;
    client
        .put_vm(put_request("rerun", 1, RunStrategy::RerunOnFailure))
        .await
        .expect("put");
    client
        .put_vm(put_request("once", 1, RunStrategy::Once))
        .await
        .expect("put");
    let rerun = wait_for(&agent, "rerun", "running", is_running_ready).await;
    let once = wait_for(&agent, "once", "running", is_running_ready).await;

    // The watch is known to be subscribed once it has listed the VMs.
    let mut watch = Box::pin(client.watch().await.expect("watch"));
    for _ in 0..2 {
        watch.next().await.expect("initial state").expect("status");
    }
    process::sigkill(rerun.pid);
    process::sigkill(once.pid);

    // Until `rerun` runs again, which takes a whole boot: far longer than the zero-delay
    // restart a first failure gets, so a wrongly restarted `once` would show up meanwhile.
    let (mut seen_rerun, mut seen_once) = (Vec::new(), Vec::new());
    let collect = async {
        while let Some(Ok(s)) = watch.next().await {
            let back = s.uid == "rerun" && is_running_ready(&s) && s.pid != rerun.pid;
            match s.uid.as_str() {
                "rerun" => seen_rerun.push(s),
                "once" => seen_once.push(s),
                _ => {}
            }
            if back {
                return;
            }
        }
    };
    tokio::time::timeout(harness::BOOT_TIMEOUT, collect)
        .await
        .expect("rerun came back");
    assert!(
        seen_rerun.iter().any(|s| phase(s) == Phase::Failed),
        "Failed not reported: {seen_rerun:?}"
    );
    assert_eq!(seen_rerun.last().map(|s| s.restart_count), Some(1));

    let failed = wait_for(&agent, "once", "failed", |s| phase(s) == Phase::Failed).await;
    assert!(
        failed.message.contains("QEMU exited"),
        "message: {}",
        failed.message
    );
    let after_failure = seen_once
        .iter()
        .skip_while(|s| phase(s) != Phase::Failed)
        .collect::<Vec<_>>();
    assert!(
        after_failure
            .iter()
            .all(|s| phase(s) == Phase::Failed && s.restart_count == 0),
        "Once must not be restarted: {seen_once:?}"
    );
    let still = client.get_vm("once").await.expect("get");
    assert_eq!(phase(&still), Phase::Failed, "Once must not be restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_that_died_while_the_agent_was_down_are_failed_and_restarted_per_strategy() {
    if guest().is_none() {
        return;
    }
    let mut agent = Agent::start().await;
    let client = agent.client().await;
    client
        .put_vm(put_request("always", 1, RunStrategy::Always))
        .await
        .expect("put");
    client
        .put_vm(put_request("once", 1, RunStrategy::Once))
        .await
        .expect("put");
    let always = wait_for(&agent, "always", "running", is_running_ready).await;
    let once = wait_for(&agent, "once", "running", is_running_ready).await;

    agent.kill9();
    process::sigkill(always.pid);
    process::sigkill(once.pid);
    assert!(process::wait_gone(always.pid, std::time::Duration::from_secs(5)).await);
    agent.restart().await;

    let failed = wait_for(&agent, "once", "failed", |s| phase(s) == Phase::Failed).await;
    assert!(
        failed.message.contains("agent was not running"),
        "message: {}",
        failed.message
    );
    let back = wait_for(&agent, "always", "restarted", |s| {
        is_running_ready(s) && s.pid != always.pid
    })
    .await;
    assert_eq!(back.restart_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_that_cannot_start_reports_failed_with_its_stderr() {
    if guest().is_none() {
        return;
    }
    let agent = Agent::start().await;
    let client = agent.client().await;
    let bogus = agent.image("not-a-kernel", b"this is not a kernel");
    let mut req = put_request("bogus", 1, RunStrategy::Once);
    spec_mut(&mut req).kernel = bogus;
    client
        .put_vm(req)
        .await
        .expect("put is accepted: the file exists");
    let failed = wait_for(&agent, "bogus", "failed", |s| phase(s) == Phase::Failed).await;
    // QEMU's own words, e.g. "qemu: linux kernel too old to load a ram disk".
    assert!(
        failed.message.contains("kernel"),
        "stderr missing: {}",
        failed.message
    );
    assert!(agent.live_qemus().is_empty());
    client.delete_vm("bogus").await.expect("delete");
    wait_gone(&agent, "bogus").await;
    assert!(!agent.run_dir("bogus").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_rejected_naming_the_field_and_leave_nothing_behind() {
    let agent = Agent::start().await;
    let client = agent.client().await;
    let kernel = agent.image("vmlinuz", b"k");
    let valid = || {
        let mut req = put_request("bad", 1, RunStrategy::Always);
        spec_mut(&mut req).kernel.clone_from(&kernel);
        spec_mut(&mut req).initrd = String::new();
        req
    };
    type Mutate = fn(&mut proto::PutVmRequest);
    let cases: [(&str, Mutate); 7] = [
        ("spec.cpus", |r| spec_mut(r).cpus = 0),
        ("spec.memoryMiB", |r| spec_mut(r).memory_mib = 512 * 1024),
        ("spec.memoryMiB", |r| spec_mut(r).memory_mib = 8192),
        ("spec.kernel", |r| {
            spec_mut(r).kernel = "/nonexistent/vmlinuz".into();
        }),
        ("spec.initrd", |r| {
            spec_mut(r).initrd = "/nonexistent/initrd".into();
        }),
        ("spec.cmdline", |r| {
            spec_mut(r).cmdline = "console=ttyS0\ninit=/bin/sh".into();
        }),
        ("spec.cmdline", |r| spec_mut(r).cmdline = "x".repeat(4097)),
    ];
    for (field, mutate) in cases {
        let mut req = valid();
        mutate(&mut req);
        match client.put_vm(req).await {
            Err(Error::Remote { code, message }) => {
                assert_eq!(code, Code::InvalidArgument, "{field}: {message}");
                assert!(message.contains(field), "{message} does not name {field}");
            }
            other => panic!("{field}: expected InvalidArgument, got {other:?}"),
        }
    }
    assert!(client.list_vms().await.expect("list").is_empty());
    let vms_dir = agent.data_dir().join("vms");
    let leftovers = std::fs::read_dir(&vms_dir)
        .map(Iterator::count)
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "rejected puts left files behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_poweroff_stops_a_once_vm_and_restarts_an_always_vm() {
    if guest().is_none() {
        return;
    }
    let agent = Agent::start().await;
    let client = agent.client().await;
    let oneshot = |uid: &str, strategy| {
        let mut req = put_request(uid, 1, strategy);
        spec_mut(&mut req).cmdline.push_str(" quiver.oneshot");
        req
    };
    client
        .put_vm(oneshot("once", RunStrategy::Once))
        .await
        .expect("put");
    client
        .put_vm(oneshot("always", RunStrategy::Always))
        .await
        .expect("put");

    let stopped = wait_for(&agent, "once", "stopped", |s| phase(s) == Phase::Stopped).await;
    assert_eq!(stopped.restart_count, 0);
    assert!(!stopped.message.contains("agent was not running"));
    let again = wait_for(&agent, "always", "restarted", |s| s.restart_count >= 2).await;
    assert_ne!(
        phase(&again),
        Phase::Failed,
        "a guest poweroff is not a failure: {again:?}"
    );
    client.delete_vm("always").await.expect("delete");
    wait_gone(&agent, "always").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresponsive_leftover_qemu_is_killed_before_the_vm_is_restarted() {
    if guest().is_none() {
        return;
    }
    let mut agent = Agent::start().await;
    let client = agent.client().await;
    client
        .put_vm(put_request("stuck", 1, RunStrategy::Always))
        .await
        .expect("put");
    let before = wait_for(&agent, "stuck", "running", is_running_ready).await;
    agent.kill9();
    process::sigkill(before.pid);
    assert!(process::wait_gone(before.pid, std::time::Duration::from_secs(5)).await);

    // A process that looks like this VM's QEMU (its command line names the QMP socket) but
    // never answers QMP, as after an agent crash in the middle of a launch.
    let qmp = agent.run_dir("stuck").join("qmp.sock");
    let mut impostor = std::process::Command::new("sh")
        .arg("-c")
        // A loop of short sleeps: nothing outlives the shell by more than a second.
        .arg("while :; do sleep 1; done")
        .arg(&qmp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn impostor");
    std::fs::write(
        agent.run_dir("stuck").join("qemu.pid"),
        impostor.id().to_string(),
    )
    .expect("pid file");

    agent.restart().await;
    let back = wait_for(&agent, "stuck", "restarted", is_running_ready).await;
    let impostor_exit = impostor.try_wait().expect("try_wait");
    assert!(
        impostor_exit.is_some(),
        "unresponsive leftover (pid {}) was not killed; the VM is back as {back:?}\n{}",
        impostor.id(),
        agent.log()
    );
    assert_ne!(back.pid, impostor.id());
}
