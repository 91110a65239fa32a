//! Table tests of the Rollout state machine: every phase against every control field (pause,
//! promote, promoteStep, abort, retry), a spec change and an operator restart, each asserting
//! the documented outcome. A small simulator stands in for the fleet: a host moved by the
//! machine serves its new transports at the next decision.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use quiver_crds::{
    AnalysisRecord, Rollout, RolloutPhase, RolloutSpec, RolloutStatus, RolloutStep, TrafficSample,
    Transport, TransportTarget, Verdict,
};

use super::machine::{Decision, Observed, Setting, Unit, decide, hosts_for, interval_due};

fn grpc() -> Setting {
    Setting::Transport(TransportTarget::all(Transport::Grpc))
}

fn iroh() -> Setting {
    Setting::Transport(TransportTarget::all(Transport::Iroh))
}

/// A host serving gRPC with no `spec.transport`.
fn host(name: &str) -> Unit {
    Unit {
        name: name.to_owned(),
        spec: None,
        serving: Some(grpc()),
        saved: Some(grpc()),
    }
}

struct Sim {
    spec: RolloutSpec,
    generation: i64,
    status: RolloutStatus,
    hosts: Vec<Unit>,
    now: Timestamp,
    /// Verdict of every analysis interval that ends; `None`: no start snapshot (restart).
    verdict: Option<Verdict>,
    last: Option<Decision>,
}

impl Sim {
    /// `hosts` hosts serving gRPC, a rollout to Iroh with `steps` and a 10 s interval.
    fn new(hosts: usize, steps: Vec<RolloutStep>) -> Self {
        let mut spec = Rollout::test("r").steps(steps).spec;
        spec.analysis.interval = "10s".to_owned();
        Sim {
            spec,
            generation: 1,
            status: RolloutStatus::default(),
            hosts: (0..hosts).map(|i| host(&format!("host-{i}"))).collect(),
            now: Timestamp::from_second(1_800_000_000).unwrap(),
            verdict: Some(Verdict::Passed),
            last: None,
        }
    }

    fn weights(hosts: usize, weights: &[u32]) -> Self {
        Sim::new(
            hosts,
            weights.iter().map(|w| RolloutStep::weight(*w)).collect(),
        )
    }

    /// One decision; the hosts it moves serve their new transports afterwards.
    fn decide(&mut self) -> &Decision {
        let measurement = if interval_due(&self.spec, &self.status, self.now) {
            self.verdict.map(|verdict| AnalysisRecord {
                time: Time(self.now),
                verdict,
                message: format!("{verdict:?} by the test"),
                canary: Some(TrafficSample::default()),
                micro_vms: None,
                baseline: None,
            })
        } else {
            None
        };
        let decision = decide(&Observed {
            spec: &self.spec,
            generation: Some(self.generation),
            status: &self.status,
            hosts: &self.hosts,
            measurement,
            now: self.now,
        });
        for m in &decision.moves {
            let unit = self.hosts.iter_mut().find(|h| h.name == m.name).unwrap();
            unit.spec = Some(m.to.clone());
            unit.serving = Some(m.to.clone());
            unit.saved = Some(m.to.clone());
        }
        if let Some(paused) = decision.set_paused {
            self.spec.paused = paused;
        }
        self.status = decision.status.clone();
        self.last = Some(decision);
        self.last.as_ref().unwrap()
    }

    fn wait(&mut self, seconds: u64) {
        self.now += Duration::from_secs(seconds);
    }

    /// Decides, waits out an interval, decides again, up to `turns` times or until `phase`.
    fn until(&mut self, phase: RolloutPhase, turns: usize) {
        for _ in 0..turns {
            self.decide();
            if self.phase() == phase {
                return;
            }
            self.wait(10);
        }
        panic!("never reached {phase:?}: {:#?}", self.status);
    }

    fn phase(&self) -> RolloutPhase {
        self.status.phase.unwrap()
    }

    fn step(&self) -> u32 {
        self.status.current_step_index.unwrap()
    }

    fn on_target(&self) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|h| h.serving.as_ref().is_some_and(|s| s.satisfies(&iroh())))
            .map(|h| h.name.as_str())
            .collect()
    }

    fn reasons(&self) -> Vec<&'static str> {
        self.last
            .as_ref()
            .unwrap()
            .events
            .iter()
            .map(|e| e.reason)
            .collect()
    }

    /// Brings the rollout to step 0's analysis with host-0 moved.
    fn analysing() -> Self {
        let mut sim = Sim::weights(4, &[5, 25, 50, 100]);
        sim.decide();
        sim.decide();
        assert_eq!(sim.phase(), RolloutPhase::Analyzing);
        sim
    }
}

fn previous_of(sim: &Sim, index: usize) -> Setting {
    Setting::Transport(sim.status.previous[index].transport.clone().unwrap())
}

#[test]
fn weights_become_host_counts_rounding_up_with_at_least_one() {
    for (weight, hosts, want) in [
        (5, 4, 1),
        (25, 4, 1),
        (50, 4, 2),
        (100, 4, 4),
        (5, 100, 5),
        (33, 3, 1),
        (34, 3, 2),
        (1, 1, 1),
        (100, 1, 1),
    ] {
        assert_eq!(hosts_for(weight, hosts), want, "{weight}% of {hosts}");
    }
}

#[test]
fn a_rollout_walks_5_25_50_100_keeping_earlier_canaries_and_completes() {
    let mut sim = Sim::weights(8, &[5, 25, 50, 100]);
    let d = sim.decide();
    assert_eq!(d.moves.len(), 1);
    assert_eq!(d.moves[0].name, "host-0");
    assert_eq!(previous_of(&sim, 0), grpc());
    let mut seen = Vec::new();
    for _ in 0..40 {
        sim.decide();
        seen.push((sim.step(), sim.status.canaries.clone()));
        if sim.phase() == RolloutPhase::Completed {
            break;
        }
        sim.wait(10);
    }
    assert_eq!(sim.phase(), RolloutPhase::Completed, "{:#?}", sim.status);
    assert_eq!(sim.on_target().len(), 8);
    assert!(sim.status.previous.is_empty(), "nothing to roll back to");
    assert_eq!(sim.status.current_weight, 100);
    // Canaries only grow, in name order: 1 (5%), 2 (25%), 4 (50%), 8.
    let counts: Vec<usize> = seen.iter().map(|(_, c)| c.len()).collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    for (_, canaries) in &seen {
        let want: Vec<String> = (0..canaries.len()).map(|i| format!("host-{i}")).collect();
        assert_eq!(canaries, &want);
    }
    for want in [1, 2, 4, 8] {
        assert!(
            counts.contains(&want),
            "{want} canaries at some step: {counts:?}"
        );
    }
    let outcomes: Vec<_> = sim
        .status
        .history
        .iter()
        .map(|s| s.outcome.clone())
        .collect();
    assert!(
        outcomes.iter().all(|o| o.as_deref() == Some("Passed")),
        "{outcomes:?}"
    );
    assert_eq!(sim.status.history.len(), 5, "four steps and the final move");
}

#[test]
fn a_host_waits_to_serve_the_target_before_analysis_counts() {
    let mut sim = Sim::weights(4, &[50, 100]);
    let d = decide(&Observed {
        spec: &sim.spec,
        generation: Some(1),
        status: &sim.status,
        hosts: &sim.hosts,
        measurement: None,
        now: sim.now,
    });
    sim.status = d.status;
    // The moves were not applied: the hosts still serve gRPC.
    let d = decide(&Observed {
        spec: &sim.spec,
        generation: Some(1),
        status: &sim.status,
        hosts: &sim.hosts,
        measurement: None,
        now: sim.now,
    });
    assert_eq!(d.status.phase, Some(RolloutPhase::Progressing));
    assert!(
        d.status
            .message
            .as_ref()
            .unwrap()
            .contains("host-0, host-1")
    );
    assert!(!d.start_interval);
    assert_eq!(d.status.current_weight, 0);
    assert_eq!(d.moves.len(), 2, "the moves are asked for again");
}

#[test]
fn failed_analyses_up_to_the_limit_roll_every_canary_back() {
    let mut sim = Sim::weights(4, &[50, 100]);
    sim.verdict = Some(Verdict::Failed);
    sim.decide();
    sim.decide();
    for failures in 1..=2 {
        sim.wait(10);
        sim.decide();
        assert_eq!(sim.status.failures, failures);
        assert_eq!(sim.phase(), RolloutPhase::Analyzing);
        assert!(sim.reasons().contains(&"AnalysisFailed"));
    }
    sim.wait(10);
    let d = sim.decide().clone();
    assert_eq!(sim.phase(), RolloutPhase::RolledBack);
    assert!(sim.reasons().contains(&"RolledBack"));
    assert!(d.events.iter().any(|e| e.warning));
    let message = sim.status.message.clone().unwrap();
    assert!(
        message.contains("3 of 3") && message.contains("Failed by the test"),
        "{message}"
    );
    assert_eq!(d.moves.len(), 2, "both canaries move back");
    assert!(d.moves.iter().all(|m| m.to == grpc() && m.restore));
    assert!(sim.status.canaries.is_empty());
    sim.decide();
    assert!(
        sim.status.previous.is_empty(),
        "restored hosts leave previous"
    );
    assert!(sim.on_target().is_empty());
    assert_eq!(sim.status.current_weight, 0);
    let step = sim.status.history.last().unwrap();
    assert_eq!(step.outcome.as_deref(), Some("Failed"));
    assert_eq!(step.analyses.len(), 3, "each analysis is in the history");
    let analysis = sim
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "AnalysisPassed")
        .unwrap();
    assert_eq!(analysis.status, "False");
}

#[test]
fn inconclusive_analyses_are_measured_again_and_never_counted() {
    let mut sim = Sim::analysing();
    sim.verdict = Some(Verdict::Inconclusive);
    for _ in 0..5 {
        sim.wait(10);
        let d = sim.decide();
        assert!(d.start_interval);
    }
    assert_eq!(sim.phase(), RolloutPhase::Analyzing);
    assert_eq!((sim.step(), sim.status.failures), (0, 0));
}

#[test]
fn an_operator_restart_starts_the_interval_over_without_counting_it() {
    let mut sim = Sim::analysing();
    let started = sim.status.analysis_started_at.clone();
    sim.verdict = None;
    sim.wait(10);
    let d = sim.decide();
    assert!(d.start_interval);
    assert_eq!(sim.phase(), RolloutPhase::Analyzing);
    assert_ne!(sim.status.analysis_started_at, started);
    assert_eq!(sim.status.failures, 0);
    // Nothing moved back or forward: the decision rebuilt from status alone.
    assert!(sim.last.as_ref().unwrap().moves.is_empty());
}

#[test]
fn a_timed_pause_waits_its_duration() {
    let mut sim = Sim::new(
        4,
        vec![RolloutStep::pause_for("1m"), RolloutStep::weight(100)],
    );
    let requeue = sim.decide().requeue;
    assert_eq!(sim.phase(), RolloutPhase::Paused);
    assert_eq!(requeue, Duration::from_secs(60));
    sim.wait(59);
    sim.decide();
    assert_eq!((sim.phase(), sim.step()), (RolloutPhase::Paused, 0));
    sim.wait(1);
    sim.decide();
    assert_eq!(sim.step(), 1);
}

#[test]
fn a_pause_without_duration_sets_spec_paused_and_ends_when_it_is_cleared() {
    let mut sim = Sim::new(
        4,
        vec![RolloutStep::pause_indefinitely(), RolloutStep::weight(100)],
    );
    assert_eq!(sim.decide().set_paused, Some(true));
    assert!(sim.spec.paused);
    sim.wait(3600);
    sim.decide();
    assert_eq!((sim.phase(), sim.step()), (RolloutPhase::Paused, 0));
    sim.spec.paused = false;
    sim.decide();
    assert_eq!(sim.step(), 1);
    assert_ne!(sim.phase(), RolloutPhase::Paused);
}

#[test]
fn spec_paused_holds_every_running_phase_and_resume_continues() {
    // Progressing (before any host moves), Analyzing, a timed pause.
    let setups: [fn() -> Sim; 3] = [
        || Sim::weights(4, &[50, 100]),
        Sim::analysing,
        || {
            let mut sim = Sim::new(
                4,
                vec![RolloutStep::pause_for("1h"), RolloutStep::weight(100)],
            );
            sim.decide();
            sim
        },
    ];
    for setup in setups {
        let mut sim = setup();
        let step = sim.status.current_step_index;
        let canaries = sim.status.canaries.clone();
        sim.spec.paused = true;
        let d = sim.decide().clone();
        assert_eq!(sim.phase(), RolloutPhase::Paused);
        assert!(d.moves.is_empty(), "no host moves while paused");
        assert_eq!(sim.status.canaries, canaries);
        assert!(
            sim.status.analysis_started_at.is_none(),
            "no analysis counts"
        );
        assert_eq!(sim.status.current_step_index, step.or(Some(0)));
        sim.spec.paused = false;
        sim.decide();
        let message = sim.status.message.clone().unwrap();
        assert!(!message.contains("spec.paused"), "resumed: {message}");
    }
}

#[test]
fn promote_moves_every_host_from_any_running_phase() {
    let setups: [fn() -> Sim; 3] = [
        || Sim::weights(4, &[50, 100]),
        Sim::analysing,
        || {
            let mut sim = Sim::new(
                4,
                vec![RolloutStep::pause_indefinitely(), RolloutStep::weight(100)],
            );
            sim.decide();
            sim
        },
    ];
    for setup in setups {
        let mut sim = setup();
        sim.spec.promote = true;
        sim.spec.paused = false;
        sim.decide();
        assert!(
            sim.hosts.iter().all(|h| h.spec == Some(iroh())),
            "every host is asked to move at once: {:#?}",
            sim.hosts
        );
        assert!(sim.reasons().contains(&"Promoted"), "{:?}", sim.reasons());
        sim.decide();
        assert_eq!(sim.phase(), RolloutPhase::Completed, "{:#?}", sim.status);
        assert_eq!(sim.on_target().len(), 4);
        let last = sim.status.history.last().unwrap();
        assert_eq!(last.index as usize, sim.spec.steps.len(), "the final move");
    }
}

#[test]
fn promote_does_not_revive_a_rolled_back_rollout() {
    let mut sim = Sim::analysing();
    sim.verdict = Some(Verdict::Failed);
    sim.until(RolloutPhase::RolledBack, 10);
    sim.spec.promote = true;
    let d = sim.decide().clone();
    assert_eq!(sim.phase(), RolloutPhase::RolledBack);
    assert!(d.moves.is_empty());
}

#[test]
fn promote_step_ends_a_pause_or_an_analysis_but_never_skips_a_host() {
    // An analysis.
    let mut sim = Sim::analysing();
    sim.spec.promote_step = 1;
    sim.decide();
    assert_eq!(sim.step(), 1);
    assert_eq!(sim.status.observed_promote_step, 1);
    assert_eq!(sim.status.history[0].outcome.as_deref(), Some("Promoted"));

    // A pause without duration.
    let mut sim = Sim::new(
        4,
        vec![RolloutStep::pause_indefinitely(), RolloutStep::weight(100)],
    );
    sim.decide();
    sim.spec.promote_step = 1;
    sim.decide();
    assert_eq!(sim.step(), 1);

    // Hosts still moving: the promotion waits for them, then skips the analysis.
    let mut sim = Sim::weights(4, &[50, 100]);
    sim.spec.promote_step = 1;
    let observed = Observed {
        spec: &sim.spec,
        generation: Some(1),
        status: &sim.status,
        hosts: &sim.hosts,
        measurement: None,
        now: sim.now,
    };
    let d = decide(&observed);
    assert_eq!(d.status.current_step_index, Some(0));
    assert_eq!(
        d.status.observed_promote_step, 0,
        "not used while hosts move"
    );
    sim.decide();
    sim.decide();
    assert_eq!(sim.step(), 1, "{:#?}", sim.status);

    // A finished rollout records it and does nothing.
    let mut sim = Sim::weights(2, &[100]);
    sim.until(RolloutPhase::Completed, 10);
    sim.spec.promote_step = 7;
    let d = sim.decide().clone();
    assert_eq!(sim.phase(), RolloutPhase::Completed);
    assert_eq!(sim.status.observed_promote_step, 7);
    assert!(d.moves.is_empty());
}

#[test]
fn abort_moves_canaries_back_from_any_running_phase() {
    let setups: [fn() -> Sim; 3] = [
        || {
            let mut sim = Sim::weights(4, &[50, 100]);
            sim.decide();
            sim
        },
        Sim::analysing,
        || {
            let mut sim = Sim::new(
                4,
                vec![RolloutStep::weight(25), RolloutStep::pause_for("1h")],
            );
            sim.until(RolloutPhase::Paused, 10);
            sim
        },
    ];
    for setup in setups {
        let mut sim = setup();
        assert!(!sim.on_target().is_empty());
        sim.spec.abort = true;
        sim.decide();
        assert_eq!(sim.phase(), RolloutPhase::Aborted);
        assert!(sim.reasons().contains(&"Aborted"));
        sim.decide();
        assert!(sim.on_target().is_empty(), "{:#?}", sim.hosts);
        assert!(sim.status.previous.is_empty());
        assert_eq!(sim.status.current_weight, 0);
    }
}

#[test]
fn abort_leaves_a_completed_rollout_alone() {
    let mut sim = Sim::weights(2, &[100]);
    sim.until(RolloutPhase::Completed, 10);
    sim.spec.abort = true;
    let d = sim.decide().clone();
    assert_eq!(sim.phase(), RolloutPhase::Completed);
    assert!(d.moves.is_empty());
    assert_eq!(sim.on_target().len(), 2);
}

#[test]
fn retry_restarts_a_stopped_rollout_once_abort_is_cleared() {
    let mut sim = Sim::analysing();
    sim.spec.abort = true;
    sim.decide();
    sim.decide();
    sim.spec.retry = 1;
    sim.decide();
    assert_eq!(sim.phase(), RolloutPhase::Aborted, "abort still set wins");
    assert_eq!(sim.status.observed_retry, 1);
    sim.spec.abort = false;
    sim.decide();
    assert_eq!(
        sim.phase(),
        RolloutPhase::Aborted,
        "retry 1 was already acted on"
    );
    sim.spec.retry = 2;
    sim.decide();
    assert_ne!(sim.phase(), RolloutPhase::Aborted);
    assert_eq!(sim.step(), 0);
    assert!(sim.reasons().contains(&"Retried"));
    sim.until(RolloutPhase::Completed, 20);
}

#[test]
fn retry_restarts_rolled_back_and_failed_rollouts_but_not_running_ones() {
    let mut sim = Sim::analysing();
    sim.verdict = Some(Verdict::Failed);
    sim.until(RolloutPhase::RolledBack, 10);
    sim.verdict = Some(Verdict::Passed);
    sim.spec.retry = 1;
    sim.decide();
    assert_eq!((sim.step(), sim.status.failures), (0, 0));
    assert_ne!(sim.phase(), RolloutPhase::RolledBack);

    let mut sim = Sim::analysing();
    sim.spec.retry = 1;
    sim.decide();
    assert_eq!(
        sim.phase(),
        RolloutPhase::Analyzing,
        "a running rollout only records it"
    );
    assert_eq!(sim.status.observed_retry, 1);
    assert!(!sim.reasons().contains(&"Retried"));

    let mut sim = Sim::weights(0, &[50]);
    sim.decide();
    assert_eq!(sim.phase(), RolloutPhase::Failed);
    sim.hosts.push(host("late"));
    sim.spec.retry = 1;
    sim.decide();
    assert_eq!(sim.status.canaries, vec!["late".to_owned()]);
}

#[test]
fn a_selector_matching_no_host_fails_with_a_reason() {
    let mut sim = Sim::weights(0, &[50, 100]);
    let d = sim.decide().clone();
    assert_eq!(sim.phase(), RolloutPhase::Failed);
    assert!(
        sim.status
            .message
            .as_ref()
            .unwrap()
            .contains("hostSelector matches no Host")
    );
    assert!(d.moves.is_empty());
    assert!(d.events.iter().any(|e| e.reason == "Failed" && e.warning));
}

#[test]
fn a_spec_change_restarts_from_the_first_step_and_moves_extra_canaries_back() {
    let mut sim = Sim::weights(4, &[50, 100]);
    sim.decide();
    sim.decide();
    assert_eq!(sim.status.canaries, ["host-0", "host-1"]);
    sim.spec.steps = vec![RolloutStep::weight(25), RolloutStep::weight(100)];
    sim.generation = 2;
    let d = sim.decide().clone();
    assert!(sim.reasons().contains(&"SpecChanged"));
    assert_eq!(sim.step(), 0);
    assert_eq!(sim.status.canaries, ["host-0"]);
    assert_eq!(d.moves.len(), 1);
    assert_eq!(
        (d.moves[0].name.as_str(), &d.moves[0].to),
        ("host-1", &grpc())
    );
    sim.decide();
    let previous: Vec<&str> = sim
        .status
        .previous
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(previous, ["host-0"], "host-1 is back and forgotten");
    assert_eq!(sim.status.observed_generation, Some(2));

    // A new target: the canary moves on, and still remembers what it served first.
    sim.spec.target = Some(TransportTarget::all(Transport::Dual));
    let d = sim.decide().clone();
    assert_eq!(
        d.moves[0].to,
        Setting::Transport(TransportTarget::all(Transport::Dual))
    );
    assert_eq!(previous_of(&sim, 0), grpc());
}

#[test]
fn control_fields_alone_do_not_restart_a_rollout() {
    let mut sim = Sim::analysing();
    sim.spec.retry = 3;
    sim.spec.paused = true;
    sim.generation = 5;
    sim.decide();
    sim.spec.paused = false;
    sim.decide();
    assert!(!sim.reasons().contains(&"SpecChanged"));
    assert_eq!(sim.status.canaries, ["host-0"]);
}

#[test]
fn a_host_that_has_not_reported_what_it_serves_is_waited_for() {
    let mut sim = Sim::weights(2, &[100]);
    sim.hosts[1].serving = None;
    sim.hosts[1].saved = None;
    let d = sim.decide().clone();
    assert_eq!(sim.phase(), RolloutPhase::Progressing);
    assert!(sim.status.message.as_ref().unwrap().contains("host-1"));
    assert_eq!(d.moves.len(), 1, "host-0 moves; host-1 waits");
    sim.hosts[1] = host("host-1");
    sim.until(RolloutPhase::Completed, 10);
}

#[test]
fn a_deleted_host_leaves_the_canaries_and_the_rollout_goes_on() {
    let mut sim = Sim::weights(4, &[50, 100]);
    sim.decide();
    sim.hosts.remove(0);
    sim.decide();
    assert!(!sim.status.canaries.contains(&"host-0".to_owned()));
    assert_eq!(sim.status.selected, 3);
    sim.until(RolloutPhase::Completed, 20);
}

fn template(kernel: &str, cmdline: Option<&str>) -> Setting {
    Setting::Template(quiver_crds::VmTemplate {
        kernel: Some(kernel.to_owned()),
        initrd: None,
        cmdline: cmdline.map(str::to_owned),
    })
}

#[test]
fn a_microvm_rollout_sets_only_the_template_fields_it_names_and_restores_all_of_them() {
    let mut spec = Rollout::test("r").steps(vec![RolloutStep::weight(50)]).spec;
    spec.target = None;
    spec.micro_vms = Some(quiver_crds::MicroVmTarget {
        selector: Default::default(),
        template: quiver_crds::VmTemplate {
            cmdline: Some("new".to_owned()),
            ..Default::default()
        },
    });
    spec.analysis.failure_limit = 1;
    let old = template("/k", None);
    let vm = |name: &str| Unit {
        name: name.to_owned(),
        spec: Some(old.clone()),
        serving: Some(old.clone()),
        saved: Some(old.clone()),
    };
    let mut units = vec![vm("vm-0"), vm("vm-1")];
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let observe = |status: &RolloutStatus, units: &[Unit], measurement, now| {
        decide(&Observed {
            spec: &spec,
            generation: Some(1),
            status,
            hosts: units,
            measurement,
            now,
        })
    };
    let d = observe(&RolloutStatus::default(), &units, None, now);
    assert_eq!(d.moves.len(), 1);
    assert_eq!(
        (d.moves[0].name.as_str(), d.moves[0].restore),
        ("vm-0", false)
    );
    assert_eq!(
        d.status.previous[0].template.as_ref().unwrap().cmdline,
        None,
        "the whole template is saved, an absent cmdline too"
    );
    // The VM's spec now carries the new cmdline, and it restarted on it.
    let new = template("/k", Some("new"));
    units[0].spec = Some(new.clone());
    units[0].serving = Some(new);
    let d = observe(&d.status, &units, None, now);
    assert!(d.moves.is_empty(), "{:?}", d.moves);
    assert_eq!(d.status.phase, Some(RolloutPhase::Analyzing));
    let failed = AnalysisRecord {
        time: Time(now),
        verdict: Verdict::Failed,
        message: "1 of 1 canary VMs not GuestReady: vm-0".to_owned(),
        canary: None,
        micro_vms: Some(quiver_crds::VmHealth {
            canaries: 1,
            guest_ready: 0,
            restarts: 0,
        }),
        baseline: None,
    };
    let later = now + Duration::from_secs(30);
    let d = observe(&d.status, &units, Some(failed), later);
    assert_eq!(d.status.phase, Some(RolloutPhase::RolledBack));
    assert_eq!(d.moves.len(), 1);
    assert_eq!((&d.moves[0].to, d.moves[0].restore), (&old, true));
    assert!(d.status.message.unwrap().contains("not GuestReady"));
}
