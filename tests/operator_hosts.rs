//! Agents register their own Host; the operator heartbeats it.

use std::time::Duration;

use quiver_tests::cluster::TestCluster;
use quiver_tests::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_register_their_host_and_the_operator_marks_it_ready() -> anyhow::Result<()> {
    let cluster = TestCluster::start(1).await?;
    let k = cluster.kubectl();
    let host: serde_json::Value = serde_json::from_str(
        &k.run(&[
            "get",
            "qh",
            "agent-0",
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .await?,
    )?;
    assert_eq!(
        host["spec"]["grpcAddress"],
        cluster.agents[0].address().as_str()
    );
    assert_eq!(host["spec"]["capacity"]["memoryMiB"], 8192);
    let managers: Vec<&str> = host["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["fieldsV1"].get("f:spec").is_some())
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["quiver-agent"], "the agent owns its Host's spec");
    eventually(
        Duration::from_secs(20),
        "Host Ready from the operator's heartbeat",
        || async {
            let ready = k
                .run(&[
                    "get",
                    "qh",
                    "agent-0",
                    "-o",
                    r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
                ])
                .await?;
            Ok((ready == "True").then_some(()))
        },
    )
    .await?;
    cluster.shutdown().await;
    Ok(())
}
