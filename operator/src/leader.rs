//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas never
//! reconcile at the same time.
//!
//! [`decide`] is the whole policy, pure; [`Elector`] executes it with resourceVersion-guarded
//! writes (create, or replace carrying the resourceVersion it read: a concurrent writer gets a
//! 409 and loses). A leader stops leading when it could not renew for `lease_duration` minus
//! a safety margin, before anyone else may take the lease.
//!
//! Expiry is judged on the candidate's own clock only, as client-go does: the Lease's
//! `renewTime` is another machine's wall clock, so comparing it with ours lets clock skew
//! steal a live lease. A candidate instead remembers when it *observed* the holder or
//! `renewTime` change ([`Observer`]) and considers the lease expired once its monotonic
//! clock is past that moment plus `leaseDurationSeconds`. The written `renewTime` only
//! serves to change the record at every renewal.

use std::time::Duration;

use futures::FutureExt as _;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

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

/// Remembers, on the local monotonic clock, when the lease record last changed.
#[derive(Clone, Debug, Default)]
pub struct Observer {
    last: Option<(LeaseView, Instant)>,
}

impl Observer {
    /// Records what the lease says at `now` and returns since when it has said so.
    pub fn observe(&mut self, lease: &LeaseView, now: Instant) -> Instant {
        match &self.last {
            Some((seen, since)) if seen == lease => *since,
            _ => {
                self.last = Some((lease.clone(), now));
                now
            }
        }
    }
}

/// What to do about `lease` (`None`: it does not exist), which has been unchanged since
/// `unchanged_since` on our clock, at `now` on that same clock.
#[must_use]
pub fn decide(
    lease: Option<&LeaseView>,
    me: &str,
    unchanged_since: Instant,
    now: Instant,
) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    match &lease.holder {
        Some(h) if h == me => Decision::Renew,
        Some(h) if unchanged_since + lease.duration >= now && lease.renewed.is_some() => {
            Decision::Follow { holder: h.clone() }
        }
        _ => Decision::Acquire,
    }
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
    observer: Observer,
}

impl Elector {
    #[must_use]
    pub fn new(client: Client, config: ElectionConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observer: Observer::default(),
        }
    }

    /// One round: read, decide, write. Returns whether we hold the lease now.
    pub async fn try_lead(&mut self) -> Result<bool> {
        let current = self.api.get_opt(&self.config.name).await?;
        let observed = Instant::now();
        let record = current.as_ref().map(view);
        let since = record
            .as_ref()
            .map_or(observed, |r| self.observer.observe(r, observed));
        let me = self.config.identity.as_str();
        let decision = decide(record.as_ref(), me, since, observed);
        let now = Timestamp::now();
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
    pub async fn run(mut self, leading: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
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

    fn held_by(holder: &str, renewed_secs: i64) -> LeaseView {
        LeaseView {
            holder: Some(holder.to_owned()),
            renewed: Some(Timestamp::from_second(1_767_225_600 + renewed_secs).expect("valid")),
            duration: Duration::from_secs(15),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn missing_lease_is_created() {
        let t0 = Instant::now();
        assert_eq!(decide(None, "a", t0, t0), Decision::Create);
    }

    #[test]
    fn own_lease_is_renewed_even_when_late() {
        let t0 = Instant::now();
        let lease = held_by("a", 0);
        assert_eq!(
            decide(Some(&lease), "a", t0, t0 + secs(100)),
            Decision::Renew
        );
    }

    #[test]
    fn lease_unchanged_for_its_duration_on_our_clock_is_acquired() {
        let t0 = Instant::now();
        let lease = held_by("b", 0);
        let follow = Decision::Follow { holder: "b".into() };
        assert_eq!(decide(Some(&lease), "a", t0, t0 + secs(15)), follow);
        assert_eq!(
            decide(Some(&lease), "a", t0, t0 + secs(16)),
            Decision::Acquire
        );
    }

    #[test]
    fn skewed_renew_time_far_in_the_past_does_not_let_a_candidate_steal_a_live_lease() {
        // The holder's clock is a day behind ours, but it renews every 5 s.
        let mut observer = Observer::default();
        let t0 = Instant::now();
        let day = 86_400;
        for step in 0..10u64 {
            let now = t0 + secs(step * 5);
            let renewed = held_by("b", -day + i64::try_from(step * 5).expect("small"));
            let since = observer.observe(&renewed, now);
            assert_eq!(since, now, "every renewal is a change of the record");
            assert_eq!(
                decide(Some(&renewed), "a", since, now + secs(3)),
                Decision::Follow { holder: "b".into() },
                "renewal {step}"
            );
        }
        // The holder stops renewing: after leaseDuration on our clock, not before, it is free.
        let last = held_by("b", -day + 45);
        let since = observer.observe(&last, t0 + secs(50));
        assert_eq!(since, t0 + secs(45));
        assert!(matches!(
            decide(Some(&last), "a", since, t0 + secs(59)),
            Decision::Follow { .. }
        ));
        assert_eq!(
            decide(Some(&last), "a", since, t0 + secs(61)),
            Decision::Acquire
        );
    }

    #[test]
    fn renew_time_in_the_future_does_not_keep_a_dead_holder_forever() {
        let mut observer = Observer::default();
        let t0 = Instant::now();
        let ahead = held_by("b", 86_400);
        let since = observer.observe(&ahead, t0);
        assert_eq!(observer.observe(&ahead, t0 + secs(10)), since);
        assert_eq!(
            decide(Some(&ahead), "a", since, t0 + secs(16)),
            Decision::Acquire
        );
    }

    #[test]
    fn released_lease_is_acquired_at_once() {
        let t0 = Instant::now();
        let mut lease = held_by("b", 0);
        lease.holder = None;
        assert_eq!(decide(Some(&lease), "a", t0, t0), Decision::Acquire);
    }

    #[test]
    fn lease_never_renewed_counts_as_expired() {
        let t0 = Instant::now();
        let mut lease = held_by("b", 0);
        lease.renewed = None;
        assert_eq!(decide(Some(&lease), "a", t0, t0), Decision::Acquire);
    }
}
