//! Lifecycle rules for what happens around a boot rather than in it: re-adoption after an
//! agent restart (`Event::Recovered`) and the readiness timeout.

use super::tests::{crashed, vm};
use super::*;

use Command::*;

fn recovered(alive: bool) -> Event {
    Event::Recovered { alive }
}

#[test]
fn recovery_probes_only_vms_that_may_have_a_process() {
    for (phase, probe) in [
        (Phase::Pending, false),
        (Phase::Starting, true),
        (Phase::Running, true),
        (Phase::Stopping, true),
        (Phase::Stopped, false),
        (Phase::Failed, false),
    ] {
        assert_eq!(
            vm(RunStrategy::Always, phase).may_have_process(),
            probe,
            "{phase:?}"
        );
    }
}

#[test]
fn recovered_live_vm_is_running_and_watched() {
    let mut l = vm(RunStrategy::Always, Phase::Running);
    l.guest_ready = true;
    l.readiness_timed_out = true;
    assert_eq!(l.handle(recovered(true)), vec![WatchReadiness]);
    assert_eq!(l.phase, Phase::Running);
    assert!(!l.guest_ready, "readiness is re-detected from the console");
    assert!(!l.readiness_timed_out, "the timeout is measured again");
    assert_eq!(l.restarts, 0);
}

#[test]
fn recovered_live_vm_that_was_starting_is_running() {
    let mut l = vm(RunStrategy::Always, Phase::Starting);
    assert_eq!(l.handle(recovered(true)), vec![WatchReadiness]);
    assert_eq!(l.phase, Phase::Running);
}

#[test]
fn recovered_live_vm_that_should_be_gone_is_stopped() {
    let mut l = vm(RunStrategy::Always, Phase::Stopping);
    l.deleting = true;
    assert_eq!(l.handle(recovered(true)), vec![WatchReadiness, Shutdown]);
    let mut l = vm(RunStrategy::Halted, Phase::Running);
    assert_eq!(l.handle(recovered(true)), vec![WatchReadiness, Shutdown]);
}

#[test]
fn recovered_dead_vm_fails_and_restarts_per_strategy() {
    let mut l = vm(RunStrategy::RerunOnFailure, Phase::Running);
    assert_eq!(
        l.handle(recovered(false)),
        vec![ScheduleRestart {
            after: Duration::ZERO
        }]
    );
    assert_eq!(l.phase, Phase::Failed);
    assert!(l.message.contains("agent was not running"));
    let mut l = vm(RunStrategy::Once, Phase::Running);
    assert_eq!(l.handle(recovered(false)), vec![]);
    assert_eq!(l.phase, Phase::Failed);
    let mut l = vm(RunStrategy::Always, Phase::Starting);
    l.deleting = true;
    assert_eq!(l.handle(recovered(false)), vec![Remove]);
}

#[test]
fn recovered_dead_vm_that_was_stopping_is_stopped() {
    let mut l = vm(RunStrategy::Halted, Phase::Stopping);
    assert_eq!(l.handle(recovered(false)), vec![]);
    assert_eq!(l.phase, Phase::Stopped);
    let mut l = vm(RunStrategy::Always, Phase::Stopping);
    l.restart_pending = true;
    assert_eq!(
        l.handle(recovered(false)),
        vec![Launch],
        "a respec restart resumes"
    );
}

#[test]
fn recovered_vm_without_a_process_follows_its_state() {
    let mut l = vm(RunStrategy::Always, Phase::Stopped);
    l.deleting = true;
    assert_eq!(l.handle(recovered(false)), vec![Remove]);
    let mut l = Lifecycle::new(RunStrategy::Always);
    l.deleting = true;
    assert_eq!(
        l.handle(recovered(false)),
        vec![Remove],
        "a pending delete finishes"
    );
    let mut l = Lifecycle::new(RunStrategy::Always);
    assert_eq!(
        l.handle(recovered(false)),
        vec![Launch],
        "a put cut short starts"
    );
    let mut l = Lifecycle::new(RunStrategy::Halted);
    assert_eq!(l.handle(recovered(false)), vec![]);
    assert_eq!(l.phase, Phase::Stopped);
    let mut l = vm(RunStrategy::Always, Phase::Stopped);
    assert_eq!(
        l.handle(recovered(false)),
        vec![Launch],
        "a due restart runs"
    );
    assert_eq!(l.restarts, 1);
    let mut l = vm(RunStrategy::Once, Phase::Stopped);
    assert_eq!(l.handle(recovered(false)), vec![]);
    let mut l = vm(RunStrategy::RerunOnFailure, Phase::Failed);
    assert_eq!(l.handle(recovered(false)), vec![Launch]);
}

#[test]
fn readiness_timeout_is_reported_and_cleared_by_a_late_marker() {
    let mut l = vm(RunStrategy::Always, Phase::Running);
    let after = Duration::from_secs(5);
    assert_eq!(l.handle(Event::ReadinessTimedOut { after }), vec![]);
    assert!(l.readiness_timed_out);
    assert_eq!(l.phase, Phase::Running, "the VM keeps running");
    assert!(l.message.contains("within 5s"), "{}", l.message);
    l.handle(Event::GuestReady);
    assert!(l.guest_ready && !l.readiness_timed_out);
    assert!(l.message.is_empty());
}

#[test]
fn readiness_timeout_after_ready_or_outside_running_is_ignored() {
    let after = Duration::from_secs(1);
    let mut l = vm(RunStrategy::Always, Phase::Running);
    l.handle(Event::GuestReady);
    l.handle(Event::ReadinessTimedOut { after });
    assert!(!l.readiness_timed_out);
    for phase in [
        Phase::Starting,
        Phase::Stopping,
        Phase::Stopped,
        Phase::Failed,
    ] {
        let mut l = vm(RunStrategy::Always, phase);
        l.handle(Event::ReadinessTimedOut { after });
        assert!(!l.readiness_timed_out, "{phase:?}");
    }
}

#[test]
fn readiness_timeout_is_reset_by_a_new_boot() {
    let mut l = vm(RunStrategy::Always, Phase::Running);
    l.handle(Event::ReadinessTimedOut {
        after: Duration::from_secs(1),
    });
    assert_eq!(
        l.handle(crashed()),
        vec![ScheduleRestart {
            after: Duration::ZERO
        }]
    );
    assert!(!l.readiness_timed_out);
    l.readiness_timed_out = true;
    assert_eq!(l.handle(Event::RestartDue), vec![Launch]);
    assert!(!l.readiness_timed_out);
}
