//! gRPC between operator and agents is mutual TLS from the cluster CA: the operator's client
//! certificate gets in, and a foreign client certificate, no certificate, plaintext, a server
//! from another CA and a server not named as the Host are all refused.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use quiver_agent::config::{AgentConfig, DriverKind};
use quiver_operator::agent_client::{AgentAccess, AgentAddress, connect_agent};
use quiver_operator::pki::{ClusterPki, SECRET_NAME, SECRET_NAMESPACE};
use quiver_rpc::pki::TlsFiles;
use quiver_rpc::proto::health_client::HealthClient;
use quiver_rpc::{AgentClient, TransportMode};
use quiver_tests::ControlPlane;
use quiver_tests::cluster::TestCluster;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// A gRPC client of the agent of `host` at `address`, as the operator with `tls` connects.
async fn grpc_to(
    tls: &TlsFiles,
    host: &str,
    address: &str,
) -> quiver_operator::Result<AgentClient> {
    let access = AgentAccess::grpc(Some(tls.clone()));
    let address = AgentAddress {
        grpc: address.to_owned(),
        endpoint_id: String::new(),
        iroh: Vec::new(),
        relay: None,
    };
    connect_agent(&access, host, &address).await
}

/// Whether a connection made by `connect` answers Health.
async fn answers<E: std::fmt::Display>(
    connect: impl Future<Output = Result<AgentClient, E>>,
) -> bool {
    match connect.await {
        Ok(client) => match client.health().await {
            Ok(_) => true,
            Err(e) => {
                eprintln!("health: {e}");
                false
            }
        },
        Err(e) => {
            eprintln!("connect: {e}");
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_cluster_ca_gets_through_in_either_direction() -> anyhow::Result<()> {
    let cluster = TestCluster::start_over(1, TransportMode::Grpc).await?;
    let agent = &cluster.agents[0];
    let address = agent.address();

    // The operator's client certificate: direct calls and the operator's heartbeat both work.
    let client = cluster.agent_client(0).await?;
    assert!(client.list_vms().await?.is_empty());
    cluster.wait_host_ready("agent-0").await?;

    // The CA is in the Secret, and a CA loaded back from it issues certificates agents accept.
    let secret = Api::<Secret>::namespaced(cluster.client.clone(), SECRET_NAMESPACE)
        .get(SECRET_NAME)
        .await?;
    let stored = secret.data.unwrap_or_default();
    let stored_cert = stored
        .get("tls.crt")
        .map(|b| b.0.clone())
        .unwrap_or_default();
    assert_eq!(stored_cert, cluster.pki().ca().cert_pem().as_bytes());
    let reloaded_dir = tempfile::tempdir()?;
    let reloaded = ClusterPki::ensure(&cluster.client, reloaded_dir.path()).await?;
    let reissued = reloaded.operator_client()?;
    assert!(answers(grpc_to(&reissued, "agent-0", &address)).await);

    // A client certificate from another CA (trusting the right one) is refused.
    let other_dir = tempfile::tempdir()?;
    let other = ClusterPki::load_or_create(other_dir.path())?;
    let stranger = TlsFiles {
        ca: cluster.operator_tls.ca.clone(),
        ..other.operator_client()?
    };
    assert!(!answers(grpc_to(&stranger, "agent-0", &address)).await);

    // TLS without a client certificate is refused.
    let ca = std::fs::read(&cluster.operator_tls.ca)?;
    let anonymous = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("agent-0");
    let channel = Endpoint::from_shared(format!("https://{address}"))?
        .tls_config(anonymous)?
        .connect()
        .await;
    let health = match channel {
        Ok(channel) => HealthClient::new(channel)
            .check(quiver_rpc::proto::HealthCheckRequest::default())
            .await
            .is_ok(),
        Err(_) => false,
    };
    assert!(!health, "a client without a certificate must be refused");

    // Plain gRPC is refused.
    assert!(!answers(AgentClient::connect(format!("http://{address}"))).await);

    // The operator checks the agent is the Host it dials.
    let operator_tls = &cluster.operator_tls;
    assert!(!answers(grpc_to(operator_tls, "agent-9", &address)).await);
    // ... and says so in one short line that names the agent and the reason.
    let Err(wrong_name) = grpc_to(operator_tls, "agent-9", &address).await else {
        panic!("an agent not named agent-9 was accepted as agent-9");
    };
    let said = wrong_name.to_string();
    assert!(
        said.contains(&format!("https://{address} refused: TLS: ")) && said.contains("agent-9"),
        "{said}"
    );
    assert!(said.len() < 400 && !said.contains('{'), "{said}");

    // An agent with a certificate from another CA is refused by the operator.
    let foreign_data = tempfile::tempdir()?;
    let config = AgentConfig {
        data_dir: foreign_data.path().to_path_buf(),
        grpc_listen: "127.0.0.1:0".parse()?,
        iroh_listen: "127.0.0.1:0".parse()?,
        host_name: "agent-0".into(),
        driver: DriverKind::Simulated,
        tls: Some(other.agent_server("agent-0")?),
        ..AgentConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let foreign = tokio::spawn(quiver_agent::runtime::run(config, async {
        let _ = stopped.await;
    }));
    let addr_file = foreign_data
        .path()
        .join(quiver_agent::runtime::GRPC_ADDR_FILE);
    let foreign_address =
        quiver_tests::eventually(Duration::from_secs(10), "foreign agent up", || async {
            Ok(std::fs::read_to_string(&addr_file).ok())
        })
        .await?;
    let to_foreign = grpc_to(operator_tls, "agent-0", foreign_address.trim());
    assert!(
        !answers(to_foreign).await,
        "a server from another CA must be refused"
    );
    let _ = stop.send(());
    foreign.await??;

    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_agree_on_one_cluster_ca() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;
    let secrets = Api::<Secret>::namespaced(client.clone(), SECRET_NAMESPACE);
    for round in 0..5 {
        let dirs = (0..4)
            .map(|_| tempfile::tempdir())
            .collect::<Result<Vec<_>, _>>()?;
        // Every replica reads "no Secret" before any creates one: all of them race to create.
        let replicas = dirs.iter().map(|d| ClusterPki::ensure(&client, d.path()));
        let results = futures::future::join_all(replicas).await;
        let stored = secrets.get(SECRET_NAME).await?;
        let stored = stored
            .data
            .and_then(|d| d.get("tls.crt").map(|b| b.0.clone()))
            .unwrap_or_default();
        for (pki, dir) in results.into_iter().zip(&dirs) {
            let pki = pki?;
            assert_eq!(
                pki.ca().cert_pem().as_bytes(),
                stored,
                "round {round}: a replica uses a CA other than the stored one"
            );
            assert_eq!(std::fs::read(dir.path().join("ca.pem"))?, stored);
        }
        secrets.delete(SECRET_NAME, &Default::default()).await?;
    }
    Ok(())
}
