//! The VM lifecycle as a pure state machine: `(state, event) -> commands`, no I/O.
//!
//! The per-VM actor (`vm::actor`) feeds it events (API puts and deletes, QEMU launched / exited,
//! readiness seen or timed out, timers, what recovery found after an agent restart) and executes
//! the returned [`Command`]s through a driver. Every rule about run strategies, restarts,
//! re-adoption, stops and deletes lives here and is unit-tested without processes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::spec::RunStrategy;

/// `MicroVM.status.phase` (see DESIGN.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    #[default]
    Pending,
    Scheduling,
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

impl Phase {
    /// Whether a QEMU process may exist in this phase.
    pub fn has_process(self) -> bool {
        matches!(self, Phase::Starting | Phase::Running | Phase::Stopping)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The cluster layer is placing the VM (Pending → Scheduling).
    Scheduling,
    /// A new spec was applied; `respec` = it differs in a way that needs a fresh QEMU.
    Apply {
        strategy: RunStrategy,
        respec: bool,
    },
    /// QEMU is up and answers QMP.
    Launched,
    /// QEMU (or the overlay setup) failed before it was up; `message` carries its stderr.
    LaunchFailed {
        message: String,
    },
    /// The readiness marker appeared on the serial console.
    GuestReady,
    /// The readiness marker had not appeared `after` the boot started (the VM keeps running;
    /// a marker seen later still makes it ready).
    ReadinessTimedOut {
        after: Duration,
    },
    /// QEMU is gone. `clean` = the guest powered off by itself.
    Exited {
        clean: bool,
        message: String,
    },
    /// On agent start, once per VM found in the data dir. `alive` = its QEMU was found running
    /// and answering QMP (probed only when [`Lifecycle::may_have_process`]).
    Recovered {
        alive: bool,
    },
    /// A restart scheduled by [`Command::ScheduleRestart`] is due.
    RestartDue,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Prepare disks and start QEMU; answer with `Launched` or `LaunchFailed`, later `Exited`.
    Launch,
    /// Watch the serial console for the readiness marker; answer with `GuestReady`.
    WatchReadiness,
    /// Stop QEMU: ACPI powerdown, then QMP `quit`, then SIGKILL; answer with `Exited`.
    Shutdown,
    /// Send `RestartDue` after the delay.
    ScheduleRestart { after: Duration },
    /// Delete the VM's files and forget it. Only issued when no process exists.
    Remove,
}

/// The engine's state for one VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub phase: Phase,
    pub strategy: RunStrategy,
    pub guest_ready: bool,
    pub deleting: bool,
    /// The readiness marker did not come within the spec's timeout in this boot.
    #[serde(default)]
    pub readiness_timed_out: bool,
    /// Start again once the current QEMU is gone (the spec changed while it ran).
    pub restart_pending: bool,
    /// Launches so far; `Once` never launches a second time for the same spec.
    pub launches: u32,
    pub restarts: u32,
    /// Failures since the guest was last ready; drives the restart backoff.
    pub consecutive_failures: u32,
    pub message: String,
}

const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Lifecycle {
    pub fn new(strategy: RunStrategy) -> Self {
        Lifecycle {
            strategy,
            ..Lifecycle::default()
        }
    }

    /// Whether a QEMU may exist for this VM, so recovery should look for one.
    pub fn may_have_process(&self) -> bool {
        self.phase.has_process()
    }

    /// Whether the VM should be running now.
    pub fn desired_running(&self) -> bool {
        !self.deleting && self.strategy.wants_running()
    }

    /// Applies one event and returns what must be done.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        match event {
            Event::Scheduling => self.on_scheduling(),
            Event::Apply { strategy, respec } => self.on_apply(strategy, respec),
            Event::Launched => self.on_launched(),
            Event::LaunchFailed { message } => self.on_failure(message),
            Event::GuestReady => self.on_guest_ready(),
            Event::ReadinessTimedOut { after } => self.on_readiness_timeout(after),
            Event::Exited { clean, message } => self.on_exited(clean, message),
            Event::Recovered { alive } => self.on_recovered(alive),
            Event::RestartDue => self.on_restart_due(),
            Event::Delete => self.on_delete(),
        }
    }

    fn on_scheduling(&mut self) -> Vec<Command> {
        if self.phase == Phase::Pending {
            self.phase = Phase::Scheduling;
        }
        vec![]
    }

    fn on_apply(&mut self, strategy: RunStrategy, respec: bool) -> Vec<Command> {
        self.strategy = strategy;
        if self.deleting {
            return vec![];
        }
        if respec {
            self.launches = 0;
        }
        match self.phase {
            Phase::Pending | Phase::Scheduling | Phase::Stopped | Phase::Failed => {
                if self.may_launch() {
                    return self.launch();
                }
                if matches!(self.phase, Phase::Pending | Phase::Scheduling) {
                    self.phase = Phase::Stopped;
                }
                vec![]
            }
            // Decided once QEMU is up (see `on_launched`).
            Phase::Starting => {
                self.restart_pending = respec;
                vec![]
            }
            Phase::Running if !self.desired_running() => self.stop(),
            Phase::Running if respec => {
                self.restart_pending = true;
                self.stop()
            }
            Phase::Running => vec![],
            Phase::Stopping => {
                self.restart_pending = (self.restart_pending || respec) && self.desired_running();
                vec![]
            }
        }
    }

    fn on_launched(&mut self) -> Vec<Command> {
        if self.phase != Phase::Starting {
            return vec![];
        }
        self.phase = Phase::Running;
        self.message.clear();
        let mut commands = vec![Command::WatchReadiness];
        if !self.desired_running() || self.restart_pending {
            commands.extend(self.stop());
        }
        commands
    }

    fn on_guest_ready(&mut self) -> Vec<Command> {
        if self.phase == Phase::Running {
            self.guest_ready = true;
            self.consecutive_failures = 0;
            if std::mem::take(&mut self.readiness_timed_out) {
                self.message.clear();
            }
        }
        vec![]
    }

    fn on_readiness_timeout(&mut self, after: Duration) -> Vec<Command> {
        if self.phase == Phase::Running && !self.guest_ready {
            self.readiness_timed_out = true;
            self.message = format!(
                "the readiness marker did not appear within {}s of boot",
                after.as_secs()
            );
        }
        vec![]
    }

    fn on_exited(&mut self, clean: bool, message: String) -> Vec<Command> {
        if !self.phase.has_process() {
            return vec![];
        }
        self.guest_ready = false;
        self.readiness_timed_out = false;
        if self.deleting {
            self.phase = Phase::Stopped;
            return vec![Command::Remove];
        }
        if self.phase == Phase::Stopping {
            self.phase = Phase::Stopped;
            if std::mem::take(&mut self.restart_pending) && self.desired_running() {
                self.launches = 0;
                return self.launch();
            }
            return vec![];
        }
        if clean {
            self.phase = Phase::Stopped;
            self.message = message;
            if self.strategy.restarts_on_success() && self.desired_running() {
                return vec![Command::ScheduleRestart {
                    after: Duration::ZERO,
                }];
            }
            return vec![];
        }
        self.on_failure(message)
    }

    fn on_failure(&mut self, message: String) -> Vec<Command> {
        if !self.phase.has_process() {
            return vec![];
        }
        self.phase = Phase::Failed;
        self.guest_ready = false;
        self.readiness_timed_out = false;
        self.message = message;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if self.deleting {
            return vec![Command::Remove];
        }
        self.restart_pending = false;
        if self.strategy.restarts_on_failure() && self.desired_running() {
            return vec![Command::ScheduleRestart {
                after: self.backoff(),
            }];
        }
        vec![]
    }

    /// Re-adoption is decided here, not by the caller: a live QEMU is watched again (and stopped
    /// if the VM should not run), a dead one is a failure (or the end of a stop), a VM that
    /// never got a QEMU is started, and a restart that fell due while the agent was away runs.
    fn on_recovered(&mut self, alive: bool) -> Vec<Command> {
        if alive {
            return self.on_adopted();
        }
        match self.phase {
            p if p.has_process() => self.on_found_dead(),
            _ if self.deleting => vec![Command::Remove],
            Phase::Pending | Phase::Scheduling => self.on_apply(self.strategy, false),
            Phase::Stopped | Phase::Failed => self.on_restart_due(),
            Phase::Starting | Phase::Running | Phase::Stopping => vec![],
        }
    }

    fn on_adopted(&mut self) -> Vec<Command> {
        self.phase = Phase::Running;
        self.guest_ready = false;
        self.readiness_timed_out = false;
        let mut commands = vec![Command::WatchReadiness];
        if !self.desired_running() || self.restart_pending {
            commands.extend(self.stop());
        }
        commands
    }

    fn on_found_dead(&mut self) -> Vec<Command> {
        let message = "QEMU exited while the agent was not running".to_owned();
        if self.phase == Phase::Stopping {
            self.on_exited(false, message)
        } else {
            self.on_failure(message)
        }
    }

    /// Also reached through [`Event::Recovered`] for VMs that were Stopped or Failed, so a
    /// restart that was due while the agent was away still happens.
    fn on_restart_due(&mut self) -> Vec<Command> {
        let allowed = match self.phase {
            Phase::Failed => self.strategy.restarts_on_failure(),
            Phase::Stopped => self.strategy.restarts_on_success(),
            _ => false,
        };
        if allowed && self.desired_running() {
            self.restarts = self.restarts.saturating_add(1);
            self.launches = 0;
            return self.launch();
        }
        vec![]
    }

    fn on_delete(&mut self) -> Vec<Command> {
        self.deleting = true;
        self.restart_pending = false;
        match self.phase {
            Phase::Running => self.stop(),
            // Starting: stopped once launched; Stopping: removed once exited.
            Phase::Starting | Phase::Stopping => vec![],
            Phase::Pending | Phase::Scheduling | Phase::Stopped | Phase::Failed => {
                vec![Command::Remove]
            }
        }
    }

    fn may_launch(&self) -> bool {
        self.desired_running() && !(self.strategy == RunStrategy::Once && self.launches > 0)
    }

    fn launch(&mut self) -> Vec<Command> {
        self.phase = Phase::Starting;
        self.guest_ready = false;
        self.readiness_timed_out = false;
        self.launches = self.launches.saturating_add(1);
        vec![Command::Launch]
    }

    fn stop(&mut self) -> Vec<Command> {
        self.phase = Phase::Stopping;
        vec![Command::Shutdown]
    }

    /// 0 s for the first failure (a one-off crash restarts at once), then 1, 2, 4 … 60 s.
    fn backoff(&self) -> Duration {
        match self.consecutive_failures {
            0 | 1 => Duration::ZERO,
            n => Duration::from_secs(1u64 << (n - 2).min(6)).min(MAX_BACKOFF),
        }
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "lifecycle_recovery_tests.rs"]
mod recovery_tests;
