//! Leader election against the dev control plane: two operator replicas, one leader; and a
//! holder whose clock lags keeps its lease for as long as it renews.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_clock_lags_an_hour_keeps_its_lease_while_it_renews() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;
    quiver_operator::dev::install_crds(&client).await?;
    let leases = kube::Api::<Lease>::namespaced(client.clone(), "default");
    let lagging_clock = Timestamp::now() - SignedDuration::from_hours(1);
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("quiver-operator".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("lagging".into()),
            lease_duration_seconds: Some(2),
            renew_time: Some(MicroTime(lagging_clock)),
            ..LeaseSpec::default()
        }),
    };
    leases.create(&PostParams::default(), &lease).await?;
    // The holder renews twice per lease duration, stamping its own (lagging) clock.
    let renewer = leases.clone();
    let renewing = tokio::spawn(async move {
        for i in 1_i64.. {
            if let Ok(mut lease) = renewer.get("quiver-operator").await {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                let stamp = lagging_clock + SignedDuration::from_millis(500 * i);
                spec.renew_time = Some(MicroTime(stamp));
                let _ = renewer
                    .replace("quiver-operator", &PostParams::default(), &lease)
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut config = OperatorConfig::new("candidate");
    config.election.lease_duration = Duration::from_secs(2);
    let candidate = Operator::spawn(client.clone(), config);
    let watch_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < watch_until {
        assert!(
            !candidate.is_leading(),
            "the candidate took a live lease because its renewTime reads an hour old"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    renewing.abort();
    eventually(
        Duration::from_secs(20),
        "the candidate to lead once renewals stop",
        || async { Ok(candidate.is_leading().then_some(())) },
    )
    .await?;
    let holder = leases.get("quiver-operator").await?;
    assert_eq!(
        holder.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("candidate")
    );
    candidate.shutdown().await;
    Ok(())
}
