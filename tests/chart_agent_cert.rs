//! The agent certificate the Helm chart mounts, made by `scripts/agent-cert.sh` with openssl from
//! the operator's cluster CA: an agent serving it is reached by the operator's client
//! certificate under every host name it names, and refused under any other.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use quiver_agent::config::{AgentConfig, DriverKind};
use quiver_operator::agent_client::{AgentAccess, AgentAddress, connect_agent};
use quiver_operator::pki::ClusterPki;
use quiver_rpc::pki::TlsFiles;

/// Whether the operator, with `tls`, gets an answer from the agent at `address` as `host`.
async fn operator_reaches(tls: &TlsFiles, host: &str, address: &str) -> bool {
    let access = AgentAccess::grpc(Some(tls.clone()));
    let address = AgentAddress {
        grpc: address.to_owned(),
        endpoint_id: String::new(),
        iroh: Vec::new(),
        relay: None,
    };
    match connect_agent(&access, host, &address).await {
        Ok(client) => client.health().await.is_ok(),
        Err(e) => {
            eprintln!("{host}: {e}");
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openssl_agent_certificate_from_the_cluster_ca_is_trusted_under_its_names()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The CA as the operator makes it (what the Secret default/quiver-ca holds).
    let pki = ClusterPki::load_or_create(&dir.path().join("ca"))?;
    let operator = pki.operator_client()?;
    let out = dir.path().join("agent-tls");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/agent-cert.sh");
    let made = Command::new("bash")
        .arg(&script)
        .arg(dir.path().join("ca/ca.pem"))
        .arg(dir.path().join("ca/ca-key.pem"))
        .arg(&out)
        .args(["node-a", "node-b.example.internal"])
        .output()?;
    assert!(
        made.status.success(),
        "agent-cert.sh failed (is openssl installed?): {}",
        String::from_utf8_lossy(&made.stderr)
    );

    let data = tempfile::tempdir()?;
    let config = AgentConfig {
        data_dir: data.path().to_path_buf(),
        grpc_listen: "127.0.0.1:0".parse()?,
        iroh_listen: "127.0.0.1:0".parse()?,
        host_name: "node-a".into(),
        driver: DriverKind::Simulated,
        // The file names the chart mounts from the Secret.
        tls: Some(TlsFiles {
            ca: out.join("ca.crt"),
            cert: out.join("tls.crt"),
            key: out.join("tls.key"),
        }),
        ..AgentConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(quiver_agent::runtime::run(config, async {
        let _ = stopped.await;
    }));
    let addr_file = data.path().join(quiver_agent::runtime::GRPC_ADDR_FILE);
    let address = quiver_tests::eventually(Duration::from_secs(10), "agent up", || async {
        Ok(std::fs::read_to_string(&addr_file).ok())
    })
    .await?;
    let address = address.trim();

    assert!(operator_reaches(&operator, "node-a", address).await);
    assert!(operator_reaches(&operator, "node-b.example.internal", address).await);
    assert!(
        !operator_reaches(&operator, "node-c", address).await,
        "a host name the certificate does not name must be refused"
    );
    // A client certificate from another CA is refused by the agent.
    let other = ClusterPki::load_or_create(&dir.path().join("other"))?;
    let stranger = TlsFiles {
        ca: operator.ca.clone(),
        ..other.operator_client()?
    };
    assert!(!operator_reaches(&stranger, "node-a", address).await);

    let _ = stop.send(());
    agent.await??;
    Ok(())
}
