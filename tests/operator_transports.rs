//! Transports on a live cluster: `Host.spec.transport` (a `kubectl patch`) moves an agent's
//! services between gRPC and Iroh while VMs keep being served, and `Host.status.transports`
//! shows desired and actual; Iroh admits the agents of registered Hosts only, so deleting a
//! Host cuts its agent off from the others.

use std::time::Duration;

use quiver_rpc::iroh::SecretKey;
use quiver_rpc::{AgentClient, ClientConfig, ClientError, EndpointOptions, IrohRoute, RpcClient};
use quiver_rpc::{TransportMode, identity};
use quiver_tests::cluster::TestCluster;
use quiver_tests::eventually;

const WAIT: Duration = Duration::from_secs(30);

fn simulated_vm(name: &str) -> String {
    format!(
        "apiVersion: quiver.dev/v1alpha1\nkind: MicroVM\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  cpus: 1\n  memoryMiB: 128\n  kernel: /var/lib/quiver/guest/vmlinuz\n"
    )
}

/// `status.transports` of `host` as `service=desired/actual` words, sorted.
async fn transports(cluster: &TestCluster, host: &str) -> anyhow::Result<String> {
    let jsonpath = "{range .status.transports[*]}{.service}={.desired}/{.actual} {end}";
    let out = cluster
        .kubectl()
        .run(&["get", "qh", host, "-o", &format!("jsonpath={jsonpath}")])
        .await?;
    let mut words: Vec<&str> = out.split_whitespace().collect();
    words.sort_unstable();
    Ok(words.join(" "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_transport_patch_moves_its_services_without_dropping_vms() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(1, true, TransportMode::Dual).await?;
    cluster.wait_host_ready("agent-0").await?;
    let all_dual = "admin=dual/dual health=dual/dual monitoring=dual/dual raft=dual/dual \
                    status=dual/dual vm=dual/dual";
    eventually(WAIT, "status.transports", || async {
        Ok((transports(&cluster, "agent-0").await? == all_dual).then_some(()))
    })
    .await?;

    // The operator prefers Iroh; moving the Vm service to gRPC only sends it there. Raft
    // moves to Iroh (a group of one: only its mode changes).
    let patch = r#"{"spec":{"transport":{"default":"dual","vm":"grpc","raft":"iroh"}}}"#;
    let k = cluster.kubectl();
    k.run(&["patch", "qh", "agent-0", "--type", "merge", "-p", patch])
        .await?;
    let moved = "admin=dual/dual health=dual/dual monitoring=dual/dual raft=iroh/iroh \
                 status=dual/dual vm=grpc/grpc";
    eventually(WAIT, "vm moved to gRPC", || async {
        Ok((transports(&cluster, "agent-0").await? == moved).then_some(()))
    })
    .await?;
    k.apply(&simulated_vm("after-switch")).await?;
    k.wait_vm("after-switch", "Running", WAIT, |v| v.phase == "Running")
        .await?;

    // The agent counted the put over gRPC, and the Iroh attempts it refused.
    let metrics = cluster.agent_client(0).await?.metrics().await?;
    let puts = |transport: &str| {
        metrics
            .methods
            .iter()
            .find(|m| m.method == "PutVm" && m.transport == transport)
            .map(|m| (m.requests, m.errors))
    };
    let (grpc_puts, grpc_errors) = puts("grpc").expect("PutVm over gRPC");
    assert!(grpc_puts >= 1 && grpc_errors == 0, "{metrics:?}");
    let (iroh_puts, iroh_errors) = puts("iroh").expect("refused PutVm over Iroh");
    assert_eq!(iroh_puts, iroh_errors, "every Iroh put was refused");

    // Unsetting the field returns the agent to its own setting (`--transport dual` here):
    // the ledger's entry for the host is emptied.
    k.run(&[
        "patch",
        "qh",
        "agent-0",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/transport"}]"#,
    ])
    .await?;
    eventually(WAIT, "back to the agent's own transports", || async {
        Ok((transports(&cluster, "agent-0").await? == all_dual).then_some(()))
    })
    .await?;
    cluster.shutdown().await;
    Ok(())
}

/// An Iroh client using `key`, to the agent at `route`'s address.
async fn client_with(key: SecretKey, agent: &quiver_operator::agents::AgentProcess) -> AgentClient {
    let endpoint = EndpointOptions::new(key)
        .bind_addr("127.0.0.1:0".parse().expect("addr"))
        .bind()
        .await
        .expect("endpoint");
    let address = agent.agent_address();
    let id = address.endpoint_id.parse().expect("endpoint id");
    let addr = address.iroh.iter().filter_map(|a| a.parse().ok()).fold(
        quiver_rpc::iroh::EndpointAddr::new(id),
        quiver_rpc::iroh::EndpointAddr::with_ip_addr,
    );
    AgentClient::iroh(IrohRoute::new(
        RpcClient::new(endpoint, ClientConfig::default()),
        addr,
    ))
    .with_deadline(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_hosts_agent_is_refused_by_the_other_agents() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(2, true, TransportMode::Iroh).await?;
    let agent_1_key =
        identity::load_or_create_key(&cluster.agents[1].options.data_dir.join(identity::KEY_FILE))?;

    // agent-1's identity is admitted by agent-0 because its Host is registered.
    eventually(WAIT, "agent-0 admits agent-1", || async {
        let as_agent_1 = client_with(agent_1_key.clone(), &cluster.agents[0]).await;
        Ok(as_agent_1.health().await.ok().map(drop))
    })
    .await?;
    let stranger = client_with(SecretKey::generate(), &cluster.agents[0]).await;
    assert!(matches!(
        stranger.health().await,
        Err(ClientError::Refused { .. })
    ));

    cluster.kubectl().run(&["delete", "qh", "agent-1"]).await?;
    let refused = eventually(WAIT, "agent-0 refuses agent-1", || async {
        let as_agent_1 = client_with(agent_1_key.clone(), &cluster.agents[0]).await;
        Ok(match as_agent_1.health().await {
            Err(e @ ClientError::Refused { .. }) => Some(e),
            _ => None,
        })
    })
    .await?;
    assert!(refused.to_string().contains("allowlist"), "{refused}");
    // The operator is still admitted (trusted by flag, not by a Host).
    cluster.agent_client(0).await?.health().await?;
    cluster.shutdown().await;
    Ok(())
}
