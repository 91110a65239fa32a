//! `quiver-operator run` as its own process against an agent, over gRPC and over Iroh:
//! - one trace id from the operator through the agent RPC: the operator (`--log-json`)
//!   reconciles a MicroVM, its JSON log line about the `PutVm` an agent took carries the
//!   reconcile's `trace_id`, and that agent's JSON log line about committing the put carries the
//!   same id;
//! - the agent admits the operator over Iroh by the endpoint id the operator publishes
//!   (ConfigMap `default/quiver-operator`): it is given no `--trust-endpoint-id` for it.
//!
//! Agents on the simulated driver: the operator's calls are the subject.

use std::process::Stdio;
use std::time::Duration;

use quiver_rpc::TransportMode;
use quiver_rpc::identity::load_or_create_key;
use quiver_tests::cluster::{TestCluster, operator_binary};
use quiver_tests::eventually;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The `trace_id` of the span a JSON log line was written in.
fn trace_of(line: &Value) -> Option<&str> {
    line["span"]["trace_id"].as_str()
}

async fn trace_crosses_the_rpc(transport: TransportMode) -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(0, true, transport).await?;
    cluster.stop_operator().await;
    let dir = cluster.state.path().to_owned();
    let operator_key = dir.join("operator-iroh.key");
    let operator_id = load_or_create_key(&operator_key)?.public().to_string();
    // No --trust-endpoint-id for the operator: the agent learns its id from the ConfigMap.
    cluster
        .add_agent_with("agent-0", None, &["--log-json"])
        .await?;
    let log_path = dir.join("operator.log");
    let mut operator = tokio::process::Command::new(operator_binary()?)
        .args(["run", "--log-json", "--identity", "trace-test"])
        .args(["--metrics-address", "127.0.0.1:0"])
        .args(["--transport", transport.as_str()])
        .arg("--pki-dir")
        .arg(dir.join("operator-pki"))
        .arg("--iroh-key")
        .arg(&operator_key)
        .env("KUBECONFIG", cluster.control_plane.kubeconfig_path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log_path)?))
        .kill_on_drop(true)
        .spawn()?;
    let operator_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let agent_log = || std::fs::read_to_string(dir.join("agent-0/agent.log")).unwrap_or_default();

    let k = cluster.kubectl();
    k.apply(
        "apiVersion: quiver.dev/v1alpha1\nkind: MicroVM\nmetadata:\n  name: traced\n  namespace: default\nspec:\n  cpus: 1\n  memoryMiB: 128\n  kernel: /var/lib/quiver/guest/vmlinuz\n",
    )
    .await?;
    let running = k.wait_vm_phase("traced", "Running", WAIT).await;
    anyhow::ensure!(
        running.is_ok(),
        "{running:?}\noperator log:\n{}",
        operator_log()
    );
    let uid = k
        .run(&["get", "mvm", "traced", "-o", "jsonpath={.metadata.uid}"])
        .await?;
    // The operator publishes its id when it calls agents over Iroh.
    if transport != TransportMode::Grpc {
        let published = k
            .run(&[
                "-n",
                "default",
                "get",
                "configmap",
                "quiver-operator",
                "-o",
                "jsonpath={.data.endpointId}",
            ])
            .await?;
        assert_eq!(
            published, operator_id,
            "the operator publishes its endpoint id"
        );
        let admitted = json_lines(&agent_log()).into_iter().any(|line| {
            line["fields"]["endpoint_id"] == operator_id.as_str()
                && line["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("admitting the operator's endpoint id"))
        });
        assert!(
            admitted,
            "the agent admits the published id:\n{}",
            agent_log()
        );
    }

    // The operator's line: the agent took the put, within a reconcile of this VM.
    let taken = eventually(WAIT, "the operator's PutVm line", || async {
        Ok(json_lines(&operator_log()).into_iter().find(|line| {
            line["fields"]["message"] == "PutVm taken" && line["fields"]["uid"] == uid.as_str()
        }))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\noperator log:\n{}", operator_log()))?;
    assert_eq!(taken["span"]["name"], "reconcile", "{taken}");
    // Sent once for its generation, though the VM was reconciled at every status write.
    let puts = json_lines(&operator_log())
        .into_iter()
        .filter(|line| {
            line["fields"]["message"] == "PutVm taken" && line["fields"]["uid"] == uid.as_str()
        })
        .count();
    assert_eq!(puts, 1, "one put per generation:\n{}", operator_log());
    assert_eq!(taken["span"]["object"], "default/traced", "{taken}");
    let trace = trace_of(&taken)
        .filter(|t| t.len() == 32)
        .unwrap_or_else(|| panic!("no 32-digit trace id on {taken}"))
        .to_owned();

    // The agent's line about the same put carries the same id.
    let agent_lines = json_lines(&agent_log());
    let committed = agent_lines.iter().find(|line| {
        line["fields"]["message"] == "put committed to the ledger"
            && line["fields"]["uid"] == uid.as_str()
            && trace_of(line) == Some(trace.as_str())
    });
    assert!(
        committed.is_some(),
        "no agent line of the put with trace id {trace}:\n{}",
        agent_log()
    );
    // Lines of other work do not claim it: the agent's startup lines carry no trace id.
    assert!(
        agent_lines
            .iter()
            .any(|line| line["fields"]["message"].is_string() && trace_of(line).is_none()),
        "{}",
        agent_log()
    );
    let _ = operator.kill().await;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_id_from_the_operator_through_the_agent_over_grpc() -> anyhow::Result<()> {
    trace_crosses_the_rpc(TransportMode::Grpc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_id_from_the_operator_through_the_agent_over_iroh() -> anyhow::Result<()> {
    trace_crosses_the_rpc(TransportMode::Iroh).await
}
