//! Leader election against the dev control plane: two operator replicas, one leader.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use quiver_operator::operator::{Operator, OperatorConfig};
use quiver_tests::{ControlPlane, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_lead_at_once_and_the_second_takes_over_on_release() -> anyhow::Result<()>
{
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;
    quiver_operator::dev::install_crds(&client).await?;
    let a = Operator::spawn(client.clone(), OperatorConfig::new("replica-a"));
    eventually(Duration::from_secs(10), "replica-a to lead", || async {
        Ok(a.is_leading().then_some(()))
    })
    .await?;
    let b = Operator::spawn(client.clone(), OperatorConfig::new("replica-b"));
    for _ in 0..30 {
        assert!(!(a.is_leading() && b.is_leading()), "both replicas lead");
        assert!(!b.is_leading(), "replica-b took a live lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let holder = kube::Api::<Lease>::namespaced(client.clone(), "default")
        .get("quiver-operator")
        .await?;
    assert_eq!(
        holder.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("replica-a")
    );

    a.shutdown().await;
    eventually(
        Duration::from_secs(15),
        "replica-b to lead after release",
        || async { Ok(b.is_leading().then_some(())) },
    )
    .await?;
    let out = cp
        .kubectl()
        .run(&[
            "get",
            "lease",
            "quiver-operator",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .await?;
    assert_eq!(out, "replica-b");
    b.shutdown().await;
    Ok(())
}
