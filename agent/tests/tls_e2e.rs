//! mTLS on the agent's gRPC endpoint (`--dev-tls`): only clients with a certificate from the
//! cluster CA get in; without TLS flags the agent does not serve plain gRPC by accident.

mod harness;

use harness::Agent;
use quiver_rpc::AgentClient;
use quiver_rpc::ClientError as Error;
use quiver_rpc::pki::{DEV_SERVER_NAME, TlsFiles, ensure_dev_pki};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_tls_admits_clients_of_the_cluster_ca_only() {
    let agent = Agent::start_with(&["--dev-tls"]).await;
    let https = agent.endpoint.replace("http://", "https://");
    let pki = agent.data_dir().join("tls");

    let client = AgentClient::connect_tls(&https, &TlsFiles::dev_client(&pki), DEV_SERVER_NAME)
        .await
        .expect("mTLS connect");
    client.health().await.expect("health over mTLS");
    assert!(client.list_vms().await.expect("list").is_empty());

    let plain = match AgentClient::connect(agent.endpoint.clone()).await {
        Ok(c) => c.health().await.map(drop),
        Err(e) => Err(e),
    };
    assert!(plain.is_err(), "plain gRPC must be refused");

    let other = tempfile::tempdir().expect("tempdir");
    ensure_dev_pki(other.path(), &[]).expect("other CA");
    // Trusts the agent's CA but presents a client certificate from another CA.
    let stranger = TlsFiles {
        ca: pki.join("ca.pem"),
        ..TlsFiles::dev_client(other.path())
    };
    let refused = match AgentClient::connect_tls(&https, &stranger, DEV_SERVER_NAME).await {
        Ok(c) => c.health().await.map(drop),
        Err(e) => Err(e),
    };
    // TLS 1.3: the agent refuses the certificate after the client's side of the handshake is
    // done, and the client's HTTP/2 layer then reports only a closed connection.
    assert!(
        matches!(
            &refused,
            Err(Error::Refused { .. } | Error::Unreachable { .. })
        ),
        "foreign client certificate must be refused, got {refused:?}"
    );
    assert!(
        refused.is_err_and(|e| e.to_string().contains(&https)),
        "the error names the agent"
    );

    // Presents a valid client certificate but trusts another CA: this client refuses the agent.
    let distrusting = TlsFiles {
        ca: other.path().join("ca.pem"),
        ..TlsFiles::dev_client(&pki)
    };
    let refused = AgentClient::connect_tls(&https, &distrusting, DEV_SERVER_NAME).await;
    assert!(
        matches!(&refused, Err(Error::Refused { reason, .. }) if reason.contains("certificate") && reason.len() < 200),
        "an untrusted server certificate must be a short refusal, got {:?}",
        refused.err()
    );
}

/// Runs `quiver-agent` with `args` on a fresh data dir; it must exit with an error naming `why`.
fn refuses_to_start(args: &[&str], why: &str) {
    let data = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quiver-agent"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["--driver", "simulated"])
        .args(args)
        .output()
        .expect("run quiver-agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{args:?} must not start; stderr: {stderr}"
    );
    assert!(
        stderr.contains(why),
        "{args:?}: expected {why:?} in: {stderr}"
    );
}

#[test]
fn without_tls_flags_the_agent_refuses_to_serve_plaintext() {
    refuses_to_start(&["--grpc-listen", "127.0.0.1:0"], "no gRPC TLS configured");
    refuses_to_start(
        &["--grpc-listen", "0.0.0.0:0", "--insecure-plaintext"],
        "loopback only",
    );
}
