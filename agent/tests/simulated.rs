//! The simulated driver (no processes) through the real binary: labelled as such, same
//! lifecycle and API as QEMU VMs. Also covers fencing epochs and the `/metrics` endpoint.

mod harness;

use futures::StreamExt;
use harness::{Agent, is_running_ready, put_request, spec_mut, wait_for, wait_gone};
use quiver_rpc::ClientError as Error;
use quiver_rpc::proto::RunStrategy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

async fn http_get(addr: &str, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect metrics");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_vms_follow_the_same_lifecycle_and_are_labelled() {
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut agent =
        Agent::start_with(&["--driver", "simulated", "--metrics-listen", &metrics_addr]).await;
    let client = agent.client().await;
    let kernel = agent.image("vmlinuz", b"k");
    let request = |uid: &str, epoch: u64| {
        let mut r = put_request(uid, 1, RunStrategy::Always);
        spec_mut(&mut r).kernel.clone_from(&kernel);
        spec_mut(&mut r).initrd = String::new();
        r.epoch = epoch;
        r
    };

    let status = client.status().await.expect("status");
    assert_eq!(status.driver, "simulated");

    for i in 0..20 {
        client
            .put_vm(request(&format!("sim-{i}"), 1))
            .await
            .expect("put");
    }
    for i in 0..20 {
        wait_for(&agent, &format!("sim-{i}"), "ready", is_running_ready).await;
    }
    let status = client.status().await.expect("status");
    assert_eq!((status.vm_count, status.running_vms), (20, 20));
    let mut watch = Box::pin(client.watch().await.expect("watch"));
    for _ in 0..20 {
        let first = watch.next().await.expect("initial state").expect("status");
        assert!(
            first.uid.starts_with("sim-") && first.guest_ready,
            "{first:?}"
        );
    }
    assert_eq!(status.allocated.map(|a| a.memory_mib), Some(20 * 256));

    // Fencing: a newer epoch is applied, an older one refused.
    let mut newer = request("sim-0", 2);
    newer.generation = 2;
    assert!(client.put_vm(newer).await.expect("newer epoch").changed);
    match client.put_vm(request("sim-0", 1)).await {
        Err(Error::Remote { code, .. }) => assert_eq!(code, quiver_rpc::Code::FailedPrecondition),
        other => panic!("stale epoch accepted: {other:?}"),
    }
    // An older generation in the same epoch is a no-op, not a rollback.
    let stale = client
        .put_vm(request("sim-0", 2))
        .await
        .expect("stale generation");
    assert!(!stale.changed);
    assert_eq!(stale.status.map(|s| s.observed_generation), Some(2));

    let text = http_get(&metrics_addr, "/metrics").await;
    assert!(text.contains("200 OK"), "{text}");
    assert!(
        text.contains(
            r#"quiver_rpc_requests_total{transport="grpc",service="Vm",method="PutVm"} 23"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"quiver_vms{phase="PHASE_RUNNING"} 20"#),
        "{text}"
    );

    for i in 0..20 {
        client.delete_vm(&format!("sim-{i}")).await.expect("delete");
    }
    for i in 0..20 {
        wait_gone(&agent, &format!("sim-{i}")).await;
    }
    // GetVm answers NotFound once the VM left the table the summary counts.
    let summary = client.resource_summary().await.expect("summary");
    assert_eq!(summary.vms_total, 0);

    // A run dir without a spec (a put interrupted by a crash) is cleaned up on restart.
    let junk = agent.run_dir("junk");
    std::fs::create_dir_all(&junk).expect("junk dir");
    agent.kill9();
    agent.restart().await;
    assert!(!junk.exists(), "unusable run dir left behind");
}
