//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas never
//! reconcile at the same time.
//!
//! [`decide`] is the whole policy, pure; [`Elector`] executes it with resourceVersion-guarded
//! writes (create, or replace carrying the resourceVersion it read: a concurrent writer gets a
//! 409 and loses). A leader stops leading when it could not renew for `lease_duration` minus
//! a safety margin, before anyone else may take the lease.

use std::time::Duration;

use futures::FutureExt as _;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::Result;

/// What the lease says, as far as the decision goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub renewed: Option<Timestamp>,
    pub duration: Duration,
}

/// What a candidate should do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No lease exists: create it, holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Free or expired: take it over.
    Acquire,
    /// Someone else holds a live lease.
    Follow { holder: String },
}

#[must_use]
pub fn decide(lease: Option<&LeaseView>, me: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    match &lease.holder {
        Some(h) if h == me => Decision::Renew,
        Some(h) if !expired(lease, now) => Decision::Follow { holder: h.clone() },
        _ => Decision::Acquire,
    }
}

fn expired(lease: &LeaseView, now: Timestamp) -> bool {
    let Some(renewed) = lease.renewed else {
        return true;
    };
    let duration = SignedDuration::try_from(lease.duration).unwrap_or(SignedDuration::MAX);
    renewed.checked_add(duration).is_ok_and(|until| until < now)
}

fn view(lease: &Lease) -> LeaseView {
    let spec = lease.spec.clone().unwrap_or_default();
    let secs = spec.lease_duration_seconds.unwrap_or(15);
    LeaseView {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        renewed: spec.renew_time.map(|t| t.0),
        duration: Duration::from_secs(u64::try_from(secs).unwrap_or(15)),
    }
}

/// Election settings.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
}

impl ElectionConfig {
    fn renew_every(&self) -> Duration {
        self.lease_duration / 3
    }
}

pub struct Elector {
    api: Api<Lease>,
    config: ElectionConfig,
}

impl Elector {
    #[must_use]
    pub fn new(client: Client, config: ElectionConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// One round: read, decide, write. Returns whether we hold the lease now.
    pub async fn try_lead(&self) -> Result<bool> {
        let current = self.api.get_opt(&self.config.name).await?;
        let now = Timestamp::now();
        let me = self.config.identity.as_str();
        let decision = decide(current.as_ref().map(view).as_ref(), me, now);
        let secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let written = match (decision, current) {
            (Decision::Follow { .. }, _) => return Ok(false),
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(me.to_owned()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if decision == Decision::Acquire {
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.holder_identity = Some(me.to_owned());
                spec.lease_duration_seconds = Some(secs);
                spec.renew_time = Some(MicroTime(now));
                // Carries the resourceVersion we read: a concurrent writer makes this a 409.
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
            (_, None) => return Ok(false),
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Campaigns until `stop` turns true, publishing whether we lead on `leading`; releases
    /// the lease on the way out if we hold it.
    pub async fn run(self, leading: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let margin = self.config.renew_every();
        let mut last_renew: Option<tokio::time::Instant> = None;
        loop {
            match self.try_lead().await {
                Ok(true) => last_renew = Some(tokio::time::Instant::now()),
                Ok(false) => last_renew = None,
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
            let valid =
                last_renew.is_some_and(|t| t.elapsed() + margin < self.config.lease_duration);
            leading.send_if_modified(|l| std::mem::replace(l, valid) != valid);
            tokio::select! {
                () = tokio::time::sleep(self.config.renew_every()) => {}
                _ = stop.wait_for(|s| *s).map(|r| r.is_ok()) => break,
            }
        }
        if *leading.borrow() {
            leading.send_replace(false);
            if let Err(e) = self.release().await {
                tracing::warn!(error = %e, "could not release the lease");
            }
        }
    }

    /// Gives the lease up so that another replica takes over at once.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + secs).expect("valid")
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseView {
        LeaseView {
            holder: Some(holder.to_owned()),
            renewed: Some(t(renewed)),
            duration: Duration::from_secs(15),
        }
    }

    #[test]
    fn missing_lease_is_created() {
        assert_eq!(decide(None, "a", t(0)), Decision::Create);
    }

    #[test]
    fn own_lease_is_renewed_even_when_late() {
        assert_eq!(decide(Some(&held_by("a", 0)), "a", t(100)), Decision::Renew);
    }

    #[test]
    fn live_lease_of_another_replica_is_followed() {
        assert_eq!(
            decide(Some(&held_by("b", 0)), "a", t(15)),
            Decision::Follow { holder: "b".into() }
        );
    }

    #[test]
    fn expired_lease_of_another_replica_is_acquired() {
        assert_eq!(
            decide(Some(&held_by("b", 0)), "a", t(16)),
            Decision::Acquire
        );
    }

    #[test]
    fn released_lease_is_acquired_at_once() {
        let mut lease = held_by("b", 0);
        lease.holder = None;
        assert_eq!(decide(Some(&lease), "a", t(1)), Decision::Acquire);
    }

    #[test]
    fn lease_never_renewed_counts_as_expired() {
        let mut lease = held_by("b", 0);
        lease.renewed = None;
        assert_eq!(decide(Some(&lease), "a", t(0)), Decision::Acquire);
    }
}
