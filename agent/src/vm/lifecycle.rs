//! The VM lifecycle as a pure state machine: `(state, event) -> commands`, no I/O.
//!
//! The manager (`vm::manager`) feeds it events (API puts and deletes, QEMU launched / exited,
//! readiness seen, timers) and executes the returned [`Command`]s through a driver. Every rule
//! about run strategies, restarts, stops and deletes lives here and is unit-tested without
//! processes.

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
    /// QEMU is gone. `clean` = the guest powered off by itself.
    Exited {
        clean: bool,
        message: String,
    },
    /// On agent start: the VM's QEMU is alive and answers QMP.
    Adopted,
    /// On agent start: the VM should have had a QEMU, but it died while the agent was away.
    FoundDead,
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
            Event::Exited { clean, message } => self.on_exited(clean, message),
            Event::Adopted => self.on_adopted(),
            Event::FoundDead => self.on_found_dead(),
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
        }
        vec![]
    }

    fn on_exited(&mut self, clean: bool, message: String) -> Vec<Command> {
        if !self.phase.has_process() {
            return vec![];
        }
        self.guest_ready = false;
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

    fn on_adopted(&mut self) -> Vec<Command> {
        self.phase = Phase::Running;
        self.guest_ready = false;
        let mut commands = vec![Command::WatchReadiness];
        if !self.desired_running() || self.restart_pending {
            commands.extend(self.stop());
        }
        commands
    }

    fn on_found_dead(&mut self) -> Vec<Command> {
        let message = "QEMU exited while the agent was not running".to_owned();
        match self.phase {
            Phase::Stopping => self.on_exited(false, message),
            Phase::Starting | Phase::Running => self.on_failure(message),
            _ if self.deleting => vec![Command::Remove],
            _ => vec![],
        }
    }

    /// Also sent by the manager after an agent restart for VMs that were Stopped or Failed, so
    /// a restart that was due while the agent was away still happens.
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
