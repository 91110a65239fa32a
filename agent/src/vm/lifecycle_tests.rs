use super::*;

use Command::*;

/// A VM in `phase` with `strategy`, as if it had been launched once when it has a process.
pub(super) fn vm(strategy: RunStrategy, phase: Phase) -> Lifecycle {
    let launches = u32::from(phase != Phase::Pending);
    Lifecycle {
        phase,
        strategy,
        launches,
        ..Lifecycle::new(strategy)
    }
}

fn apply(strategy: RunStrategy) -> Event {
    Event::Apply {
        strategy,
        respec: false,
    }
}

pub(super) fn crashed() -> Event {
    Event::Exited {
        clean: false,
        message: "killed".into(),
    }
}

fn powered_off() -> Event {
    Event::Exited {
        clean: true,
        message: String::new(),
    }
}

#[test]
fn new_vm_with_always_starts() {
    let mut l = Lifecycle::new(RunStrategy::Always);
    assert_eq!(l.handle(apply(RunStrategy::Always)), vec![Launch]);
    assert_eq!(l.phase, Phase::Starting);
}

#[test]
fn new_vm_with_halted_is_stopped_without_commands() {
    let mut l = Lifecycle::new(RunStrategy::Halted);
    assert_eq!(l.handle(apply(RunStrategy::Halted)), vec![]);
    assert_eq!(l.phase, Phase::Stopped);
}

#[test]
fn scheduling_only_moves_pending_vms() {
    let mut l = Lifecycle::new(RunStrategy::Always);
    assert_eq!(l.handle(Event::Scheduling), vec![]);
    assert_eq!(l.phase, Phase::Scheduling);
    assert_eq!(l.handle(apply(RunStrategy::Always)), vec![Launch]);
    let mut running = vm(RunStrategy::Always, Phase::Running);
    running.handle(Event::Scheduling);
    assert_eq!(running.phase, Phase::Running);
}

#[test]
fn launched_vm_runs_and_watches_readiness() {
    let mut l = vm(RunStrategy::Always, Phase::Starting);
    l.message = "old failure".into();
    assert_eq!(l.handle(Event::Launched), vec![WatchReadiness]);
    assert_eq!(l.phase, Phase::Running);
    assert!(l.message.is_empty());
}

#[test]
fn launched_event_outside_starting_is_ignored() {
    for phase in [
        Phase::Running,
        Phase::Stopped,
        Phase::Failed,
        Phase::Stopping,
    ] {
        let mut l = vm(RunStrategy::Always, phase);
        assert_eq!(l.handle(Event::Launched), vec![]);
        assert_eq!(l.phase, phase);
    }
}

#[test]
fn launch_failure_is_failed_with_message_and_no_restart_for_once() {
    let mut l = vm(RunStrategy::Once, Phase::Starting);
    let cmds = l.handle(Event::LaunchFailed {
        message: "could not load kernel".into(),
    });
    assert_eq!(cmds, vec![]);
    assert_eq!(l.phase, Phase::Failed);
    assert_eq!(l.message, "could not load kernel");
}

#[test]
fn launch_failures_back_off_for_always() {
    let mut l = vm(RunStrategy::Always, Phase::Starting);
    let fail = || Event::LaunchFailed {
        message: "x".into(),
    };
    assert_eq!(
        l.handle(fail()),
        vec![ScheduleRestart {
            after: Duration::ZERO
        }]
    );
    assert_eq!(l.handle(Event::RestartDue), vec![Launch]);
    assert_eq!(
        l.handle(fail()),
        vec![ScheduleRestart {
            after: Duration::from_secs(1)
        }]
    );
    l.handle(Event::RestartDue);
    assert_eq!(
        l.handle(fail()),
        vec![ScheduleRestart {
            after: Duration::from_secs(2)
        }]
    );
    l.consecutive_failures = 40;
    l.phase = Phase::Starting;
    assert_eq!(
        l.handle(fail()),
        vec![ScheduleRestart { after: MAX_BACKOFF }]
    );
    assert_eq!(l.restarts, 2);
}

#[test]
fn guest_ready_sets_flag_and_resets_backoff() {
    let mut l = vm(RunStrategy::Always, Phase::Running);
    l.consecutive_failures = 3;
    assert_eq!(l.handle(Event::GuestReady), vec![]);
    assert!(l.guest_ready);
    assert_eq!(l.consecutive_failures, 0);
}

#[test]
fn guest_ready_outside_running_is_ignored() {
    let mut l = vm(RunStrategy::Always, Phase::Stopping);
    l.handle(Event::GuestReady);
    assert!(!l.guest_ready);
}

#[test]
fn crash_restarts_always_and_rerun_on_failure() {
    for strategy in [RunStrategy::Always, RunStrategy::RerunOnFailure] {
        let mut l = vm(strategy, Phase::Running);
        l.guest_ready = true;
        assert_eq!(
            l.handle(crashed()),
            vec![ScheduleRestart {
                after: Duration::ZERO
            }]
        );
        assert_eq!(l.phase, Phase::Failed);
        assert!(!l.guest_ready);
        assert_eq!(l.handle(Event::RestartDue), vec![Launch]);
        assert_eq!(l.phase, Phase::Starting);
        assert_eq!(l.restarts, 1);
    }
}

#[test]
fn crash_leaves_once_and_halted_failed() {
    for strategy in [RunStrategy::Once, RunStrategy::Halted] {
        let mut l = vm(strategy, Phase::Running);
        assert_eq!(l.handle(crashed()), vec![]);
        assert_eq!(l.phase, Phase::Failed);
        assert_eq!(l.message, "killed");
        assert_eq!(l.handle(Event::RestartDue), vec![]);
    }
}

#[test]
fn guest_poweroff_restarts_only_always() {
    let mut l = vm(RunStrategy::Always, Phase::Running);
    assert_eq!(
        l.handle(powered_off()),
        vec![ScheduleRestart {
            after: Duration::ZERO
        }]
    );
    assert_eq!(l.phase, Phase::Stopped);
    for strategy in [RunStrategy::RerunOnFailure, RunStrategy::Once] {
        let mut l = vm(strategy, Phase::Running);
        assert_eq!(l.handle(powered_off()), vec![]);
        assert_eq!(l.phase, Phase::Stopped);
    }
}

#[test]
fn once_does_not_start_again_on_reapply() {
    let mut l = vm(RunStrategy::Once, Phase::Stopped);
    assert_eq!(l.handle(apply(RunStrategy::Once)), vec![]);
    assert_eq!(l.phase, Phase::Stopped);
    let respec = Event::Apply {
        strategy: RunStrategy::Once,
        respec: true,
    };
    assert_eq!(l.handle(respec), vec![Launch]);
}

#[test]
fn halting_a_running_vm_stops_it() {
    let mut l = vm(RunStrategy::Always, Phase::Running);
    assert_eq!(l.handle(apply(RunStrategy::Halted)), vec![Shutdown]);
    assert_eq!(l.phase, Phase::Stopping);
    assert_eq!(l.handle(powered_off()), vec![]);
    assert_eq!(l.phase, Phase::Stopped);
}

#[test]
fn stopping_vm_that_crashes_is_stopped_not_failed() {
    let mut l = vm(RunStrategy::Halted, Phase::Stopping);
    assert_eq!(l.handle(crashed()), vec![]);
    assert_eq!(l.phase, Phase::Stopped);
}

#[test]
fn starting_a_stopped_vm_launches_it() {
    for phase in [Phase::Stopped, Phase::Failed] {
        let mut l = vm(RunStrategy::Halted, phase);
        assert_eq!(l.handle(apply(RunStrategy::Always)), vec![Launch]);
        assert_eq!(l.phase, Phase::Starting);
    }
}

#[test]
fn respec_of_running_vm_stops_then_launches() {
    let mut l = vm(RunStrategy::Always, Phase::Running);
    let respec = Event::Apply {
        strategy: RunStrategy::Always,
        respec: true,
    };
    assert_eq!(l.handle(respec), vec![Shutdown]);
    assert!(l.restart_pending);
    assert_eq!(l.handle(powered_off()), vec![Launch]);
    assert_eq!(l.phase, Phase::Starting);
    assert!(!l.restart_pending);
}

#[test]
fn unchanged_apply_of_running_vm_does_nothing() {
    let mut l = vm(RunStrategy::Always, Phase::Running);
    assert_eq!(l.handle(apply(RunStrategy::Always)), vec![]);
    assert_eq!(l.phase, Phase::Running);
}

#[test]
fn apply_while_starting_is_decided_once_launched() {
    let mut l = vm(RunStrategy::Always, Phase::Starting);
    assert_eq!(l.handle(apply(RunStrategy::Halted)), vec![]);
    assert_eq!(l.handle(Event::Launched), vec![WatchReadiness, Shutdown]);
    assert_eq!(l.phase, Phase::Stopping);

    let mut l = vm(RunStrategy::Always, Phase::Starting);
    l.handle(Event::Apply {
        strategy: RunStrategy::Always,
        respec: true,
    });
    assert_eq!(l.handle(Event::Launched), vec![WatchReadiness, Shutdown]);
    assert_eq!(l.handle(powered_off()), vec![Launch]);
}

#[test]
fn apply_while_stopping_records_restart_wish() {
    let mut l = vm(RunStrategy::Always, Phase::Stopping);
    l.handle(Event::Apply {
        strategy: RunStrategy::Always,
        respec: true,
    });
    assert!(l.restart_pending);
    l.handle(apply(RunStrategy::Halted));
    assert!(!l.restart_pending);
    assert_eq!(l.handle(powered_off()), vec![]);
}

#[test]
fn delete_of_running_vm_stops_then_removes() {
    let mut l = vm(RunStrategy::Always, Phase::Running);
    assert_eq!(l.handle(Event::Delete), vec![Shutdown]);
    assert_eq!(l.phase, Phase::Stopping);
    assert_eq!(l.handle(crashed()), vec![Remove]);
}

#[test]
fn delete_without_process_removes_at_once() {
    for phase in [
        Phase::Pending,
        Phase::Scheduling,
        Phase::Stopped,
        Phase::Failed,
    ] {
        let mut l = vm(RunStrategy::Always, phase);
        assert_eq!(l.handle(Event::Delete), vec![Remove]);
    }
}

#[test]
fn delete_while_starting_waits_for_launch_outcome() {
    let mut l = vm(RunStrategy::Always, Phase::Starting);
    assert_eq!(l.handle(Event::Delete), vec![]);
    assert_eq!(l.handle(Event::Launched), vec![WatchReadiness, Shutdown]);
    assert_eq!(l.handle(powered_off()), vec![Remove]);

    let mut l = vm(RunStrategy::Always, Phase::Starting);
    l.handle(Event::Delete);
    assert_eq!(
        l.handle(Event::LaunchFailed {
            message: "x".into()
        }),
        vec![Remove]
    );
}

#[test]
fn delete_while_stopping_removes_on_exit() {
    let mut l = vm(RunStrategy::Halted, Phase::Stopping);
    assert_eq!(l.handle(Event::Delete), vec![]);
    assert_eq!(l.handle(powered_off()), vec![Remove]);
}

#[test]
fn deleting_vm_ignores_applies_and_restarts() {
    let mut l = vm(RunStrategy::Always, Phase::Running);
    l.handle(Event::Delete);
    assert_eq!(l.handle(apply(RunStrategy::Always)), vec![]);
    assert_eq!(l.handle(Event::RestartDue), vec![]);
}

#[test]
fn exit_without_process_is_ignored() {
    for phase in [Phase::Pending, Phase::Stopped, Phase::Failed] {
        let mut l = vm(RunStrategy::Always, phase);
        assert_eq!(l.handle(crashed()), vec![]);
        assert_eq!(l.phase, phase);
    }
}

#[test]
fn restart_due_when_running_is_ignored() {
    let mut l = vm(RunStrategy::Always, Phase::Running);
    assert_eq!(l.handle(Event::RestartDue), vec![]);
}

#[test]
fn restart_due_after_agent_restart_follows_strategy() {
    let mut l = vm(RunStrategy::Once, Phase::Stopped);
    assert_eq!(l.handle(Event::RestartDue), vec![]);
    let mut l = vm(RunStrategy::RerunOnFailure, Phase::Stopped);
    assert_eq!(l.handle(Event::RestartDue), vec![]);
    let mut l = vm(RunStrategy::Always, Phase::Stopped);
    assert_eq!(l.handle(Event::RestartDue), vec![Launch]);
    let mut l = vm(RunStrategy::RerunOnFailure, Phase::Failed);
    assert_eq!(l.handle(Event::RestartDue), vec![Launch]);
}
