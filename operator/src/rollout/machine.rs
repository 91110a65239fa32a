//! The Rollout state machine: one pure function from what is known now to the next status
//! and the hosts to move.
//!
//! A rollout keeps two lists in its status: `canaryHosts`, the hosts it has moved to the
//! target (in name order, so a higher weight keeps the earlier canaries), and `previous`, what
//! each host it touched served before. Every decision is then "desired state": each canary
//! should serve the target, each other host in `previous` should serve its previous transports
//! again (and leaves `previous` once it does). Abort and rollback only clear `canaryHosts`;
//! a restart after an operator restart or leader change recomputes the same moves from the
//! status alone.
//!
//! Step by step: a `setWeight` step grows the canaries to `ceil(weight% × hosts)` (at least
//! one), waits until each serves the target (`Host.status.transports`), then runs analysis
//! intervals until one passes (next step), `failureLimit` fail (RolledBack) or the step is
//! promoted. A `pause` step waits for its duration, or, without one, sets `spec.paused` and
//! waits until it is cleared. After the last step every selected host moves; once all serve
//! the target the rollout is Completed and `previous` is forgotten.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use quiver_crds::{
    AnalysisRecord, Previous, RolloutPhase, RolloutSpec, RolloutStatus, Service, StepRecord,
    TransportTarget, Verdict, VmTemplate,
};
use sha2::{Digest as _, Sha256};

use super::parse_duration;
use crate::status::{Conditions, Transition};

/// Condition types of a Rollout.
pub const PROGRESSING: &str = "Progressing";
pub const ANALYSIS_PASSED: &str = "AnalysisPassed";

/// Steps and analyses kept in `status.history`.
const HISTORY_STEPS: usize = 64;
const HISTORY_ANALYSES: usize = 10;

/// How often a rollout that waits on hosts looks again (Host changes also wake it).
pub const POLL: Duration = Duration::from_secs(1);
/// How often a finished rollout re-asserts its restores.
const IDLE: Duration = Duration::from_secs(30);

/// What a rollout changes on one unit: a host's transports or a VM's template.
#[derive(Clone, Debug, PartialEq)]
pub enum Setting {
    Transport(TransportTarget),
    Template(VmTemplate),
}

impl Setting {
    /// The target of a rollout; `None` if the spec names neither (the schema refuses that).
    #[must_use]
    pub fn target_of(spec: &RolloutSpec) -> Option<Setting> {
        match (&spec.target, &spec.micro_vms) {
            (Some(t), _) => Some(Setting::Transport(t.clone())),
            (None, Some(vms)) => Some(Setting::Template(vms.template.clone())),
            (None, None) => None,
        }
    }

    /// Whether what runs (`self`) gives what `wanted` asks for: the same transport on every
    /// service; the template fields `wanted` sets.
    #[must_use]
    pub fn satisfies(&self, wanted: &Setting) -> bool {
        match (self, wanted) {
            (Setting::Transport(a), Setting::Transport(b)) => same(a, b),
            (Setting::Template(a), Setting::Template(b)) => {
                let field =
                    |have: &Option<String>, want: &Option<String>| want.is_none() || have == want;
                field(&a.kernel, &b.kernel)
                    && field(&a.initrd, &b.initrd)
                    && field(&a.cmdline, &b.cmdline)
            }
            _ => false,
        }
    }

    fn previous(&self, name: &str) -> Previous {
        let (transport, template) = match self {
            Setting::Transport(t) => (Some(t.clone()), None),
            Setting::Template(t) => (None, Some(t.clone())),
        };
        Previous {
            name: name.to_owned(),
            transport,
            template,
        }
    }

    fn of_previous(p: &Previous) -> Option<Setting> {
        match (&p.transport, &p.template) {
            (Some(t), _) => Some(Setting::Transport(t.clone())),
            (None, Some(t)) => Some(Setting::Template(t.clone())),
            (None, None) => None,
        }
    }
}

/// Whether two targets ask for the same transport on every service.
#[must_use]
pub fn same(a: &TransportTarget, b: &TransportTarget) -> bool {
    Service::ALL
        .iter()
        .all(|s| a.for_service(*s) == b.for_service(*s))
}

/// One selected Host (or MicroVM) as the rollout sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    pub name: String,
    /// What its spec asks for now (`Host.spec.transport`; the VM's kernel, initrd, cmdline).
    pub spec: Option<Setting>,
    /// What runs, settled: every service of a host switched (desired = actual); a VM Running
    /// and GuestReady on its current spec. `None` while switching, restarting or booting.
    pub serving: Option<Setting>,
    /// What to restore on rollback if the rollout moves it: what a host serves, a VM's spec.
    pub saved: Option<Setting>,
}

impl Unit {
    fn serves(&self, wanted: &Setting) -> bool {
        self.serving.as_ref().is_some_and(|s| s.satisfies(wanted))
    }

    /// Whether its spec already asks for `wanted` (exactly, when restoring).
    fn asks_for(&self, wanted: &Setting, restore: bool) -> bool {
        match (&self.spec, wanted) {
            (Some(spec @ Setting::Template(_)), _) if !restore => spec.satisfies(wanted),
            (spec, _) => spec.as_ref() == Some(wanted),
        }
    }

    /// Back on `previous`: asked for it and running it.
    fn restored(&self, previous: &Setting) -> bool {
        let runs = match previous {
            Setting::Transport(_) => self.serves(previous),
            Setting::Template(_) => self.serving.as_ref() == Some(previous),
        };
        runs && self.spec.as_ref() == Some(previous)
    }
}

/// Everything [`decide`] reads.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub spec: &'a RolloutSpec,
    pub generation: Option<i64>,
    pub status: &'a RolloutStatus,
    /// The selected Hosts (or MicroVMs), sorted by name.
    pub hosts: &'a [Unit],
    /// The result of the analysis interval that started at `status.analysisStartedAt`, once
    /// it is due; `None` when the executor has no start snapshot (the operator restarted):
    /// the interval then starts over.
    pub measurement: Option<AnalysisRecord>,
    pub now: Timestamp,
}

/// A unit whose spec should change: a host's `spec.transport`, a VM's template fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    pub name: String,
    pub to: Setting,
    /// Back to what it had: unset template fields are removed, not left as they are.
    pub restore: bool,
}

/// What [`decide`] asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: RolloutStatus,
    pub moves: Vec<Move>,
    /// Take the start snapshots of a new analysis interval now.
    pub start_interval: bool,
    /// Set `spec.paused` to this: true when a pause step without a duration begins, false
    /// when such a pause that the controller set ends another way (promotion, restart).
    pub set_paused: Option<bool>,
    pub events: Vec<Transition>,
    /// When to look again at the latest.
    pub requeue: Duration,
}

/// Whether an analysis interval that began at `status.analysisStartedAt` has ended.
#[must_use]
pub fn interval_due(spec: &RolloutSpec, status: &RolloutStatus, now: Timestamp) -> bool {
    let interval = interval(spec);
    status
        .analysis_started_at
        .as_ref()
        .is_some_and(|t| elapsed(&t.0, now) >= interval)
}

fn interval(spec: &RolloutSpec) -> Duration {
    parse_duration(&spec.analysis.interval).unwrap_or(Duration::from_secs(30))
}

fn elapsed(since: &Timestamp, now: Timestamp) -> Duration {
    let d: SignedDuration = now.duration_since(*since);
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// Fingerprint of the fields whose change restarts a rollout.
#[must_use]
pub fn spec_hash(spec: &RolloutSpec) -> String {
    let fields = serde_json::json!([
        spec.host_selector,
        spec.target,
        spec.micro_vms,
        spec.steps,
        spec.analysis
    ]);
    let digest = Sha256::digest(fields.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Number of hosts a weight asks for: `ceil(weight% × hosts)`, at least one, at most all.
#[must_use]
pub fn hosts_for(weight: u32, hosts: usize) -> usize {
    let wanted = (u64::from(weight.min(100)) * hosts as u64).div_ceil(100);
    usize::try_from(wanted)
        .unwrap_or(hosts)
        .clamp(1, hosts.max(1))
}

struct Draft<'a> {
    obs: &'a Observed<'a>,
    /// What the canaries move to.
    target: Setting,
    /// "hosts" or "MicroVMs", for messages.
    units: &'static str,
    st: RolloutStatus,
    start_interval: bool,
    set_paused: Option<bool>,
    events: Vec<Transition>,
    requeue: Duration,
}

/// The next status, host moves and Events.
#[must_use]
pub fn decide(obs: &Observed<'_>) -> Decision {
    let spec = obs.spec;
    let target = Setting::target_of(spec);
    let mut d = Draft {
        obs,
        target: target
            .clone()
            .unwrap_or(Setting::Transport(TransportTarget::all(
                quiver_crds::Transport::Grpc,
            ))),
        units: if spec.micro_vms.is_some() {
            "MicroVMs"
        } else {
            "hosts"
        },
        st: obs.status.clone(),
        start_interval: false,
        set_paused: None,
        events: Vec::new(),
        requeue: POLL,
    };
    let old_phase = d.st.phase;
    let known = |name: &str| obs.hosts.iter().any(|h| h.name == name);
    d.st.canaries.retain(|h| known(h));
    d.st.previous.retain(|p| known(&p.name));
    d.st.selected = u32::try_from(obs.hosts.len()).unwrap_or(u32::MAX);

    let hash = spec_hash(spec);
    if d.st.phase.is_none() {
        d.restart("Started", "rollout started".to_owned());
    } else if d.st.spec_hash.as_deref() != Some(hash.as_str()) {
        d.restart(
            "SpecChanged",
            "spec changed: starting again from the first step".to_owned(),
        );
    }
    if spec.retry != d.st.observed_retry {
        d.st.observed_retry = spec.retry;
        if d.terminal() && d.st.phase != Some(RolloutPhase::Completed) && !spec.abort {
            d.restart(
                "Retried",
                format!(
                    "spec.retry is {}: starting again from the first step",
                    spec.retry
                ),
            );
        }
    }

    if spec.abort {
        if !matches!(
            d.st.phase,
            Some(RolloutPhase::Aborted | RolloutPhase::Completed)
        ) {
            d.end_step("Aborted");
            d.back_out(
                RolloutPhase::Aborted,
                "Aborted",
                format!(
                    "spec.abort is set: every canary of the {} moves back to what it had",
                    d.units
                ),
            );
        }
    } else if !d.terminal() {
        if target.is_none() {
            d.fail("the spec sets neither target nor microVMs".to_owned());
        } else if obs.hosts.is_empty() {
            let selector = if spec.micro_vms.is_some() {
                "spec.microVMs.selector matches no MicroVM in this namespace"
            } else {
                "spec.hostSelector matches no Host"
            };
            d.fail(format!(
                "{selector}: nothing to move (fix the selector, then raise spec.retry)"
            ));
        } else if spec.promote {
            d.promote_fully();
        } else {
            d.run_steps();
        }
    }
    if d.terminal() {
        d.st.observed_promote_step = spec.promote_step;
        d.st.analysis_started_at = None;
        d.requeue = IDLE;
    }

    let moves = d.moves();
    d.st.current_weight = d.weight();
    d.conditions();
    if d.st.phase != old_phase
        && let Some(phase) = d.st.phase
    {
        let warning = matches!(
            phase,
            RolloutPhase::Aborted | RolloutPhase::RolledBack | RolloutPhase::Failed
        );
        d.events.push(Transition {
            warning,
            reason: phase_reason(phase),
            note: d.st.message.clone().unwrap_or_default(),
        });
    }
    d.st.observed_generation = obs.generation;
    Decision {
        status: d.st,
        moves,
        start_interval: d.start_interval,
        set_paused: d.set_paused,
        events: d.events,
        requeue: d.requeue,
    }
}

fn phase_reason(phase: RolloutPhase) -> &'static str {
    match phase {
        RolloutPhase::Pending => "Pending",
        RolloutPhase::Progressing => "Progressing",
        RolloutPhase::Paused => "Paused",
        RolloutPhase::Analyzing => "Analyzing",
        RolloutPhase::Completed => "Completed",
        RolloutPhase::Aborted => "Aborted",
        RolloutPhase::RolledBack => "RolledBack",
        RolloutPhase::Failed => "Failed",
    }
}

impl Draft<'_> {
    fn now(&self) -> Time {
        Time(self.obs.now)
    }

    fn fail(&mut self, message: String) {
        self.end_step("Failed");
        self.st.phase = Some(RolloutPhase::Failed);
        self.st.message = Some(message);
    }

    fn terminal(&self) -> bool {
        matches!(
            self.st.phase,
            Some(
                RolloutPhase::Completed
                    | RolloutPhase::Aborted
                    | RolloutPhase::RolledBack
                    | RolloutPhase::Failed
            )
        )
    }

    fn note(&mut self, warning: bool, reason: &'static str, note: String) {
        self.events.push(Transition {
            warning,
            reason,
            note,
        });
    }

    /// From the first step, with no canaries and no failures; hosts moved before are still in
    /// `previous`, so those the new steps do not take move back.
    fn restart(&mut self, reason: &'static str, message: String) {
        if self.st.phase.is_some() {
            self.end_step("Restarted");
        }
        self.st.phase = Some(RolloutPhase::Progressing);
        self.st.current_step_index = Some(0);
        self.st.canaries.clear();
        self.st.failures = 0;
        self.st.analysis_started_at = None;
        self.release_pause();
        self.st.spec_hash = Some(spec_hash(self.obs.spec));
        self.st.history.clear();
        self.st.message = Some(message.clone());
        self.begin_step(0);
        self.note(false, reason, message);
    }

    fn step_index(&self) -> usize {
        self.st.current_step_index.unwrap_or(0) as usize
    }

    fn begin_step(&mut self, index: usize) {
        self.st.current_step_index = Some(u32::try_from(index).unwrap_or(u32::MAX));
        self.st.step_started_at = Some(self.now());
        self.st.failures = 0;
        self.st.analysis_started_at = None;
        let weight = match self.obs.spec.steps.get(index) {
            None => 100,
            Some(step) => step.set_weight.unwrap_or(self.st.current_weight),
        };
        self.st.history.push(StepRecord {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            weight,
            started_at: self.now(),
            finished_at: None,
            outcome: None,
            analyses: Vec::new(),
        });
        if self.st.history.len() > HISTORY_STEPS {
            self.st.history.remove(0);
        }
    }

    /// Closes the running step's history record with `outcome`.
    fn end_step(&mut self, outcome: &str) {
        let now = self.now();
        if let Some(record) = self.st.history.last_mut()
            && record.finished_at.is_none()
        {
            record.finished_at = Some(now);
            record.outcome = Some(outcome.to_owned());
        }
    }

    fn advance(&mut self, outcome: &str) {
        self.end_step(outcome);
        let next = self.step_index() + 1;
        self.begin_step(next);
        let what = match self.obs.spec.steps.get(next) {
            Some(step) => match (step.set_weight, &step.pause) {
                (Some(w), _) => format!("step {next}: setWeight {w}"),
                (None, Some(p)) => match &p.duration {
                    Some(d) => format!("step {next}: pause {d}"),
                    None => format!("step {next}: pause until spec.paused is cleared"),
                },
                (None, None) => format!("step {next}"),
            },
            None => format!("every selected one of the {} moves", self.units),
        };
        self.note(false, "StepStarted", what);
    }

    /// Moves every canary back: `canaryHosts` empties, `previous` drives the moves.
    fn back_out(&mut self, phase: RolloutPhase, reason: &'static str, message: String) {
        self.st.phase = Some(phase);
        self.st.canaries.clear();
        self.st.analysis_started_at = None;
        self.release_pause();
        self.st.message = Some(message.clone());
        self.note(true, reason, message);
    }

    fn promote_fully(&mut self) {
        self.release_pause();
        let steps = self.obs.spec.steps.len();
        if self.step_index() < steps {
            self.end_step("Promoted");
            self.begin_step(steps);
            self.note(
                false,
                "Promoted",
                format!(
                    "spec.promote is set: every selected one of the {} moves now",
                    self.units
                ),
            );
        }
        self.final_step();
    }

    fn promote_step_pending(&self) -> bool {
        self.obs.spec.promote_step != self.st.observed_promote_step
    }

    fn consume_promote_step(&mut self) {
        self.st.observed_promote_step = self.obs.spec.promote_step;
    }

    /// Runs steps until one has to wait. Each iteration either waits (returns) or advances,
    /// so the loop ends within `steps + 1` turns.
    fn run_steps(&mut self) {
        let spec = self.obs.spec;
        for _ in 0..=spec.steps.len() {
            let index = self.step_index();
            let Some(step) = spec.steps.get(index) else {
                self.final_step();
                return;
            };
            if spec.paused && self.st.paused_at_step != Some(u32::try_from(index).unwrap_or(0)) {
                self.hold("spec.paused is set: no host moves and no analysis counts".to_owned());
                return;
            }
            let done = match (step.set_weight, &step.pause) {
                (Some(weight), _) => self.weight_step(weight),
                (None, pause) => {
                    self.pause_step(index, pause.as_ref().and_then(|p| p.duration.as_deref()))
                }
            };
            match done {
                Some(outcome) => self.advance(outcome),
                None => return,
            }
        }
    }

    /// Clears `spec.paused` if a pause step of this controller set it.
    fn release_pause(&mut self) {
        if self.st.paused_at_step.take().is_some() && self.obs.spec.paused {
            self.set_paused = Some(false);
        }
    }

    fn hold(&mut self, message: String) {
        self.st.phase = Some(RolloutPhase::Paused);
        self.st.analysis_started_at = None;
        self.st.message = Some(message);
    }

    /// `Some(outcome)` when the step is over.
    fn pause_step(&mut self, index: usize, duration: Option<&str>) -> Option<&'static str> {
        let index32 = u32::try_from(index).unwrap_or(u32::MAX);
        if self.promote_step_pending() {
            self.consume_promote_step();
            self.release_pause();
            return Some("Promoted");
        }
        let Some(duration) = duration else {
            if self.st.paused_at_step == Some(index32) {
                if self.obs.spec.paused {
                    self.hold(format!(
                        "step {index}: paused until spec.paused is cleared (or spec.promoteStep \
                         is raised)"
                    ));
                    return None;
                }
                self.st.paused_at_step = None;
                return Some("Resumed");
            }
            self.st.paused_at_step = Some(index32);
            self.set_paused = Some(true);
            self.hold(format!(
                "step {index}: paused until spec.paused is cleared (or spec.promoteStep is \
                 raised)"
            ));
            return None;
        };
        let wait = parse_duration(duration).unwrap_or(Duration::ZERO);
        let started = self
            .st
            .step_started_at
            .as_ref()
            .map_or(self.obs.now, |t| t.0);
        let gone = elapsed(&started, self.obs.now);
        if gone >= wait {
            return Some("Passed");
        }
        self.requeue = wait - gone;
        self.hold(format!("step {index}: pause {duration}"));
        None
    }

    /// `Some(outcome)` when the step is over.
    fn weight_step(&mut self, weight: u32) -> Option<&'static str> {
        let wanted = hosts_for(weight, self.obs.hosts.len());
        if !self.grow_canaries(wanted) {
            return None;
        }
        if let Some(waiting) = self.not_yet_serving() {
            self.st.phase = Some(RolloutPhase::Progressing);
            self.st.analysis_started_at = None;
            self.st.message = Some(format!(
                "setWeight {weight}: waiting for {waiting} to take the target"
            ));
            return None;
        }
        if self.promote_step_pending() {
            self.consume_promote_step();
            return Some("Promoted");
        }
        self.st.phase = Some(RolloutPhase::Analyzing);
        let interval = interval(self.obs.spec);
        if self.st.analysis_started_at.is_none() {
            self.start_interval(format!(
                "setWeight {weight}: {} of {} {} on the target; analysing",
                self.st.canaries.len(),
                self.obs.hosts.len(),
                self.units
            ));
            return None;
        }
        if !interval_due(self.obs.spec, &self.st, self.obs.now) {
            let started = self
                .st
                .analysis_started_at
                .as_ref()
                .map_or(self.obs.now, |t| t.0);
            self.requeue = interval
                .saturating_sub(elapsed(&started, self.obs.now))
                .max(POLL / 10);
            return None;
        }
        let Some(record) = self.obs.measurement.clone() else {
            self.start_interval("analysis interval started again (no start snapshot)".to_owned());
            return None;
        };
        let verdict = record.verdict;
        let message = record.message.clone();
        self.record_analysis(record);
        match verdict {
            Verdict::Passed => {
                self.st.message = Some(format!("setWeight {weight}: analysis passed"));
                Some("Passed")
            }
            Verdict::Inconclusive => {
                self.start_interval(format!("setWeight {weight}: inconclusive ({message})"));
                None
            }
            Verdict::Failed => {
                self.st.failures += 1;
                let limit = self.obs.spec.analysis.failure_limit;
                if self.st.failures >= limit {
                    self.end_step("Failed");
                    self.back_out(
                        RolloutPhase::RolledBack,
                        "RolledBack",
                        format!(
                            "analysis failed {} of {limit} times (analysis.failureLimit) at \
                             setWeight {weight}; every canary host moves back. Last: {message}",
                            self.st.failures
                        ),
                    );
                    return None;
                }
                let note = format!(
                    "setWeight {weight}: analysis failed ({} of {limit}): {message}",
                    self.st.failures
                );
                self.note(true, "AnalysisFailed", note.clone());
                self.start_interval(note);
                None
            }
        }
    }

    fn start_interval(&mut self, message: String) {
        self.st.phase = Some(RolloutPhase::Analyzing);
        self.st.analysis_started_at = Some(self.now());
        self.start_interval = true;
        self.st.message = Some(message);
        self.requeue = interval(self.obs.spec);
    }

    fn record_analysis(&mut self, record: AnalysisRecord) {
        if let Some(step) = self.st.history.last_mut() {
            step.analyses.push(record);
            if step.analyses.len() > HISTORY_ANALYSES {
                step.analyses.remove(0);
            }
        }
    }

    /// After the last step (or on promote): every selected host moves; Completed once all
    /// serve the target.
    fn final_step(&mut self) {
        let all = self.obs.hosts.len();
        if !self.grow_canaries(all) {
            return;
        }
        if let Some(waiting) = self.not_yet_serving() {
            self.st.phase = Some(RolloutPhase::Progressing);
            self.st.message = Some(format!(
                "every selected one moves: waiting for {waiting} to take the target"
            ));
            return;
        }
        self.end_step("Passed");
        self.st.phase = Some(RolloutPhase::Completed);
        self.st.previous.clear();
        self.st.message = Some(format!(
            "all {all} selected {} are on the target",
            self.units
        ));
    }

    /// Adds hosts in name order until there are `wanted` canaries, saving what each served.
    /// False (and a message) while the next host has not reported what it serves.
    fn grow_canaries(&mut self, wanted: usize) -> bool {
        for host in self.obs.hosts {
            if self.st.canaries.len() >= wanted {
                break;
            }
            if self.st.canaries.contains(&host.name) {
                continue;
            }
            if !self.st.previous.iter().any(|p| p.name == host.name) {
                let Some(saved) = host.saved.clone() else {
                    self.st.phase = Some(RolloutPhase::Progressing);
                    self.st.message = Some(format!(
                        "waiting for {} to report what it runs (a host's agent may be down or \
                         switching)",
                        host.name
                    ));
                    return false;
                };
                self.st.previous.push(saved.previous(&host.name));
            }
            self.st.canaries.push(host.name.clone());
        }
        true
    }

    /// The canaries that do not serve the target yet, comma-separated; `None` when all do.
    fn not_yet_serving(&self) -> Option<String> {
        let target = &self.target;
        let waiting: Vec<&str> = self
            .obs
            .hosts
            .iter()
            .filter(|h| self.st.canaries.contains(&h.name) && !h.serves(target))
            .map(|h| h.name.as_str())
            .collect();
        (!waiting.is_empty()).then(|| waiting.join(", "))
    }

    /// Canaries to the target; other hosts in `previous` back to what they served (they leave
    /// `previous` once they serve it again). Only hosts whose `spec.transport` differs move.
    fn moves(&mut self) -> Vec<Move> {
        let mut moves = Vec::new();
        let mut restored = Vec::new();
        for unit in self.obs.hosts {
            let (wanted, restore) = if self.st.canaries.contains(&unit.name) {
                (self.target.clone(), false)
            } else if let Some(p) = self.st.previous.iter().find(|p| p.name == unit.name) {
                let Some(previous) = Setting::of_previous(p) else {
                    continue;
                };
                if unit.restored(&previous) {
                    restored.push(unit.name.clone());
                }
                (previous, true)
            } else {
                continue;
            };
            if !unit.asks_for(&wanted, restore) {
                moves.push(Move {
                    name: unit.name.clone(),
                    to: wanted,
                    restore,
                });
            }
        }
        self.st.previous.retain(|p| !restored.contains(&p.name));
        moves
    }

    /// Percent of the selected hosts that serve the target and are canaries.
    fn weight(&self) -> u32 {
        let hosts = self.obs.hosts.len();
        if hosts == 0 {
            return 0;
        }
        let target = &self.target;
        let serving = self
            .obs
            .hosts
            .iter()
            .filter(|h| self.st.canaries.contains(&h.name) && h.serves(target))
            .count();
        u32::try_from(serving * 100 / hosts).unwrap_or(100)
    }

    fn conditions(&mut self) {
        let now = self.now();
        let old = self.obs.status.conditions.clone();
        let mut conds = Conditions {
            old: &old,
            new: Vec::new(),
            now: &now,
        };
        let phase = self.st.phase.map_or("Pending", phase_reason);
        let message = self.st.message.clone().unwrap_or_default();
        if self.terminal() {
            conds.set(PROGRESSING, "False", phase, &message);
        } else {
            conds.set(PROGRESSING, "True", phase, &message);
        }
        let last = self
            .st
            .history
            .iter()
            .rev()
            .find_map(|s| s.analyses.last())
            .map(|a| (a.verdict, a.message.clone()));
        match last {
            Some((Verdict::Passed, m)) => conds.set(ANALYSIS_PASSED, "True", "Passed", &m),
            Some((Verdict::Failed, m)) => conds.set(ANALYSIS_PASSED, "False", "Failed", &m),
            Some((Verdict::Inconclusive, m)) => {
                conds.set(ANALYSIS_PASSED, "Unknown", "Inconclusive", &m);
            }
            None => conds.set(ANALYSIS_PASSED, "Unknown", "NotMeasured", "no analysis yet"),
        }
        self.st.conditions = conds.new;
    }
}
