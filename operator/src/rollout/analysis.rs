//! The analysis gate: what the canary and baseline hosts served between two Monitoring
//! snapshots, judged against `spec.analysis`.
//!
//! Counters are the agents' own (`MetricsSnapshot.methods`, cumulative since the agent
//! started); an interval is the difference of two snapshots, and a counter that went down
//! (the agent restarted) counts from zero. Monitoring calls are left out (the analysis makes
//! them), and so are calls refused because a service is not served on the transport they came
//! in on (a client falling back to the other transport, not a fault of the host).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use quiver_crds::{Analysis, AnalysisRecord, TrafficSample, Verdict};
use quiver_rpc::proto::{MethodMetrics, MetricsSnapshot};

const MONITORING: &str = "Monitoring";
const RAFT: &str = "Raft";
const RAFT_APPEND: &str = "AppendEntries";

/// One host's snapshots at the start and the end of an interval.
#[derive(Clone, Copy, Debug)]
pub struct Interval<'a> {
    pub start: &'a MetricsSnapshot,
    pub end: &'a MetricsSnapshot,
}

/// Cumulative latency histogram: count per upper bound (ms, `f64` bits; +Inf last).
#[derive(Clone, Debug, Default)]
struct Histogram(BTreeMap<u64, u64>);

impl Histogram {
    fn add(&mut self, bounds: &[f64], counts: &[u64]) {
        for (bound, count) in bounds.iter().zip(counts) {
            // An agent's numbers are input: a NaN or negative bound is skipped, not sorted.
            if bound.is_nan() || *bound < 0.0 {
                continue;
            }
            // Latency bounds are positive, so their bit patterns sort like the numbers.
            let total = self.0.entry(bound.to_bits()).or_default();
            *total = total.saturating_add(*count);
        }
    }

    /// Upper bound of the bucket holding the 99th percentile; a p99 past the last finite
    /// bound reports that bound (the histogram cannot say more).
    fn p99(&self) -> Option<f64> {
        let total = *self.0.values().next_back()?;
        if total == 0 {
            return None;
        }
        let rank = total - total / 100;
        let finite = self
            .0
            .keys()
            .map(|b| f64::from_bits(*b))
            .filter(|b| b.is_finite())
            .fold(0.0, f64::max);
        self.0
            .iter()
            .find(|(_, count)| **count >= rank)
            .map(|(bound, _)| f64::from_bits(*bound))
            .map(|b| if b.is_finite() { b } else { finite })
    }
}

/// What a group of hosts served in an interval.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    hosts: u32,
    requests: u64,
    errors: u64,
    latency: Histogram,
    raft_append: Histogram,
}

impl Traffic {
    /// Sums the intervals of every host of a group.
    #[must_use]
    pub fn of(intervals: &[Interval<'_>]) -> Self {
        let mut traffic = Traffic {
            hosts: u32::try_from(intervals.len()).unwrap_or(u32::MAX),
            ..Traffic::default()
        };
        for interval in intervals {
            for end in &interval.end.methods {
                if end.service == MONITORING {
                    continue;
                }
                let start = interval.start.methods.iter().find(|s| {
                    s.transport == end.transport
                        && s.service == end.service
                        && s.method == end.method
                });
                let delta = difference(start, end);
                traffic.requests = traffic
                    .requests
                    .saturating_add(delta.requests.saturating_sub(delta.refused));
                traffic.errors = traffic
                    .errors
                    .saturating_add(delta.errors.saturating_sub(delta.refused));
                traffic
                    .latency
                    .add(&delta.bucket_upper_ms, &delta.bucket_counts);
                if end.service == RAFT && end.method == RAFT_APPEND {
                    traffic
                        .raft_append
                        .add(&delta.bucket_upper_ms, &delta.bucket_counts);
                }
            }
        }
        traffic
    }

    /// The numbers `status.history` shows.
    #[must_use]
    pub fn sample(&self) -> TrafficSample {
        TrafficSample {
            hosts: self.hosts,
            requests: self.requests,
            errors: self.errors,
            p99_ms: self.latency.p99(),
            raft_append_p99_ms: self.raft_append.p99(),
        }
    }
}

/// `end - start` for one method; a counter that went down restarted, so `end` is the delta.
fn difference(start: Option<&MethodMetrics>, end: &MethodMetrics) -> MethodMetrics {
    let Some(start) =
        start.filter(|s| s.requests <= end.requests && s.bucket_upper_ms == end.bucket_upper_ms)
    else {
        return end.clone();
    };
    MethodMetrics {
        requests: end.requests - start.requests,
        errors: end.errors.saturating_sub(start.errors),
        refused: end.refused.saturating_sub(start.refused),
        bucket_counts: end
            .bucket_counts
            .iter()
            .zip(&start.bucket_counts)
            .map(|(e, s)| e.saturating_sub(*s))
            .collect(),
        ..end.clone()
    }
}

/// Judges the canaries' traffic (and the baseline's, when some hosts are not moved) against
/// the thresholds. `unanswered` names canary hosts whose metrics could not be read: each is a
/// failure (a canary that cannot be measured is not healthy).
#[must_use]
pub fn judge(
    analysis: &Analysis,
    canary: &Traffic,
    baseline: Option<&Traffic>,
    unanswered: &[String],
    time: &Time,
) -> AnalysisRecord {
    let canary_sample = canary.sample();
    let baseline_sample = baseline.map(Traffic::sample);
    let record = |verdict, message: String| AnalysisRecord {
        time: time.clone(),
        verdict,
        message,
        canary: Some(canary_sample.clone()),
        micro_vms: None,
        baseline: baseline_sample.clone(),
    };
    let mut missed = Vec::new();
    if !unanswered.is_empty() {
        missed.push(format!(
            "canary hosts {} did not answer GetMetrics",
            unanswered.join(", ")
        ));
    }
    let min = u64::from(analysis.min_requests);
    if missed.is_empty() && canary.requests < min {
        return record(
            Verdict::Inconclusive,
            format!(
                "the canary hosts served {} requests, fewer than analysis.minRequests ({min})",
                canary.requests
            ),
        );
    }
    let per_mille = canary.errors.saturating_mul(1000) / canary.requests.max(1);
    if per_mille > u64::from(analysis.max_error_rate_per_mille) {
        missed.push(format!(
            "canary error rate {per_mille}‰ ({} of {}) is above analysis.maxErrorRatePerMille ({})",
            canary.errors, canary.requests, analysis.max_error_rate_per_mille
        ));
    }
    let canary_p99 = canary_sample.p99_ms;
    if let (Some(p99), Some(limit)) = (canary_p99, analysis.max_p99_latency_ms)
        && p99 > f64::from(limit)
    {
        missed.push(format!(
            "canary p99 {p99} ms is above analysis.maxP99LatencyMs ({limit})"
        ));
    }
    let mut note = String::new();
    match (baseline, baseline_sample.as_ref()) {
        (Some(base), Some(sample)) if base.requests >= min => {
            if let (Some(p99), Some(base_p99)) = (canary_p99, sample.p99_ms) {
                let pct = analysis.max_p99_latency_percent_of_baseline;
                let limit = base_p99 * f64::from(pct) / 100.0;
                if p99 > limit && p99 > f64::from(analysis.p99_latency_floor_ms) {
                    missed.push(format!(
                        "canary p99 {p99} ms is above {pct}% of the baseline's {base_p99} ms \
                         (analysis.maxP99LatencyPercentOfBaseline)"
                    ));
                }
            }
        }
        (Some(base), _) => {
            note = format!(
                "; no latency comparison: the baseline served {} requests, fewer than \
                 analysis.minRequests",
                base.requests
            );
        }
        (None, _) => note = "; no baseline: every selected host is moved".to_owned(),
    }
    if let Some(p99) = canary_sample.raft_append_p99_ms
        && p99 > f64::from(analysis.max_raft_append_p99_ms)
    {
        missed.push(format!(
            "canary Raft append p99 {p99} ms is above analysis.maxRaftAppendP99Ms ({})",
            analysis.max_raft_append_p99_ms
        ));
    }
    if missed.is_empty() {
        record(Verdict::Passed, format!("every threshold met{note}"))
    } else {
        record(Verdict::Failed, missed.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 4] = [1.0, 5.0, 50.0, f64::INFINITY];

    /// A method with `requests` calls, `errors` of them failed, all in the bucket `bucket`.
    fn method(
        service: &str,
        name: &str,
        requests: u64,
        errors: u64,
        bucket: usize,
    ) -> MethodMetrics {
        MethodMetrics {
            transport: "iroh".into(),
            service: service.into(),
            method: name.into(),
            requests,
            errors,
            refused: 0,
            bucket_upper_ms: BOUNDS.to_vec(),
            bucket_counts: (0..BOUNDS.len())
                .map(|i| if i >= bucket { requests } else { 0 })
                .collect(),
            latency_sum_ms: 0.0,
        }
    }

    fn snapshot(methods: Vec<MethodMetrics>) -> MetricsSnapshot {
        MetricsSnapshot {
            methods,
            ..MetricsSnapshot::default()
        }
    }

    fn time() -> Time {
        crate::status::now()
    }

    #[test]
    fn an_interval_is_the_difference_of_two_snapshots_without_monitoring_or_refusals() {
        let start = snapshot(vec![method("Vm", "PutVm", 10, 1, 0)]);
        let mut put = method("Vm", "PutVm", 110, 6, 0);
        put.refused = 4;
        put.bucket_counts = vec![106, 106, 106, 106];
        let end = snapshot(vec![put, method("Monitoring", "GetMetrics", 500, 0, 2)]);
        let traffic = Traffic::of(&[Interval {
            start: &start,
            end: &end,
        }]);
        let sample = traffic.sample();
        assert_eq!((sample.requests, sample.errors), (96, 1));
        assert_eq!(sample.p99_ms, Some(1.0));
    }

    #[test]
    fn a_restarted_agent_counts_from_zero() {
        let start = snapshot(vec![method("Vm", "PutVm", 1000, 0, 0)]);
        let end = snapshot(vec![method("Vm", "PutVm", 30, 0, 0)]);
        let traffic = Traffic::of(&[Interval {
            start: &start,
            end: &end,
        }]);
        assert_eq!(traffic.sample().requests, 30);
    }

    #[test]
    fn p99_is_the_bucket_holding_the_99th_percentile() {
        let mut h = Histogram::default();
        h.add(&BOUNDS, &[98, 99, 100, 100]);
        assert_eq!(h.p99(), Some(5.0));
        let mut slow = Histogram::default();
        slow.add(&BOUNDS, &[0, 0, 0, 10]);
        assert_eq!(
            slow.p99(),
            Some(50.0),
            "past the last bound: the last finite bound"
        );
        assert_eq!(Histogram::default().p99(), None);
    }

    fn traffic(methods: Vec<MethodMetrics>) -> Traffic {
        let empty = snapshot(Vec::new());
        let end = snapshot(methods);
        Traffic::of(&[Interval {
            start: &empty,
            end: &end,
        }])
    }

    #[test]
    fn too_few_canary_requests_are_inconclusive_not_a_pass() {
        let record = judge(
            &Analysis::default(),
            &traffic(vec![method("Vm", "GetVm", 5, 0, 0)]),
            Some(&traffic(vec![method("Vm", "GetVm", 500, 0, 0)])),
            &[],
            &time(),
        );
        assert_eq!(record.verdict, Verdict::Inconclusive, "{record:?}");
        assert!(record.message.contains("minRequests"), "{}", record.message);
    }

    #[test]
    fn each_threshold_fails_with_its_field_and_numbers() {
        let baseline = traffic(vec![method("Vm", "GetVm", 500, 0, 0)]);
        let cases = [
            (
                method("Vm", "GetVm", 100, 2, 0),
                "maxErrorRatePerMille",
                "20‰",
            ),
            (
                method("Vm", "GetVm", 100, 0, 2),
                "maxP99LatencyPercentOfBaseline",
                "50 ms",
            ),
            (
                method("Raft", "AppendEntries", 100, 0, 3),
                "maxRaftAppendP99Ms",
                "Raft append",
            ),
        ];
        let analysis = Analysis {
            max_raft_append_p99_ms: 40,
            ..Analysis::default()
        };
        for (canary, field, number) in cases {
            let record = judge(
                &analysis,
                &traffic(vec![canary]),
                Some(&baseline),
                &[],
                &time(),
            );
            assert_eq!(record.verdict, Verdict::Failed, "{field}: {record:?}");
            assert!(record.message.contains(field), "{}", record.message);
            assert!(record.message.contains(number), "{}", record.message);
        }
    }

    #[test]
    fn an_absolute_latency_limit_applies_without_a_baseline() {
        let analysis = Analysis {
            max_p99_latency_ms: Some(10),
            ..Analysis::default()
        };
        let slow = traffic(vec![method("Vm", "GetVm", 100, 0, 2)]);
        let record = judge(&analysis, &slow, None, &[], &time());
        assert_eq!(record.verdict, Verdict::Failed);
        assert!(
            record.message.contains("maxP99LatencyMs"),
            "{}",
            record.message
        );
        let record = judge(&Analysis::default(), &slow, None, &[], &time());
        assert_eq!(record.verdict, Verdict::Passed, "{record:?}");
        assert!(record.message.contains("no baseline"), "{}", record.message);
    }

    #[test]
    fn latency_under_the_floor_never_fails_the_relative_rule() {
        let baseline = traffic(vec![method("Vm", "GetVm", 500, 0, 0)]);
        let canary = traffic(vec![method("Vm", "GetVm", 100, 0, 1)]);
        let record = judge(&Analysis::default(), &canary, Some(&baseline), &[], &time());
        assert_eq!(
            record.verdict,
            Verdict::Passed,
            "5 ms is at the floor: {record:?}"
        );
    }

    #[test]
    fn a_canary_that_does_not_answer_fails() {
        let record = judge(
            &Analysis::default(),
            &Traffic::default(),
            None,
            &["host-a".to_owned()],
            &time(),
        );
        assert_eq!(record.verdict, Verdict::Failed);
        assert!(record.message.contains("host-a"), "{}", record.message);
    }
}
