use k8s_openapi::jiff::Timestamp;
use quiver_crds::fixtures::fixture_time;

use super::*;

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(1_767_225_600 + secs).expect("valid time"))
}

fn agent(phase: proto::Phase, guest_ready: bool) -> proto::VmStatus {
    proto::VmStatus {
        uid: "uid-web".into(),
        namespace: "default".into(),
        name: "web".into(),
        observed_generation: 1,
        phase: phase as i32,
        host: "a".into(),
        epoch: 1,
        guest_ready,
        started_at_ms: 1_767_225_600_123,
        guest_ready_at_ms: if guest_ready { 1_767_225_602_999 } else { 0 },
        ..proto::VmStatus::default()
    }
}

fn assigned() -> Assignment {
    Assignment::Assigned {
        host: "a".into(),
        epoch: 1,
    }
}

fn observe(agent: Option<&proto::VmStatus>, now: Time) -> Observation<'_> {
    Observation {
        assignment: assigned(),
        agent,
        host_ready: Some(true),
        now,
    }
}

fn status_of(c: &MicroVMStatus, type_: &str) -> (String, String) {
    let c = c.condition(type_).expect("condition present");
    (c.status.clone(), c.reason.clone())
}

#[test]
fn unschedulable_vm_is_pending_with_scheduled_false_and_the_reason() {
    let vm = MicroVM::test("web").memory_mib(100_000);
    let obs = Observation {
        assignment: Assignment::Unschedulable {
            reason: "InsufficientMemory".into(),
            message: "spec.memoryMiB 100000 is more than any matching host has free".into(),
        },
        agent: None,
        host_ready: None,
        now: at(0),
    };
    let s = desired_status(&vm, &obs);
    assert_eq!(s.phase, Some(MicroVMPhase::Pending));
    assert_eq!(
        status_of(&s, SCHEDULED),
        ("False".into(), "InsufficientMemory".into())
    );
    assert!(
        s.message
            .as_deref()
            .unwrap_or_default()
            .contains("spec.memoryMiB")
    );
    assert_eq!(s.host, None);
}

#[test]
fn running_vm_with_marker_seen_is_ready_on_its_host() {
    let vm = MicroVM::test("web");
    let report = agent(proto::Phase::Running, true);
    let s = desired_status(&vm, &observe(Some(&report), at(5)));
    assert_eq!(s.phase, Some(MicroVMPhase::Running));
    assert_eq!(s.host.as_deref(), Some("a"));
    assert_eq!(s.epoch, 1);
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(status_of(&s, READY).0, "True");
    assert_eq!(
        status_of(&s, GUEST_READY),
        ("True".into(), "MarkerSeen".into())
    );
    assert_eq!(status_of(&s, RESTART_REQUIRED).0, "False");
}

#[test]
fn timestamps_are_truncated_to_seconds() {
    let vm = MicroVM::test("web");
    let report = agent(proto::Phase::Running, true);
    let s = desired_status(&vm, &observe(Some(&report), at(5)));
    assert_eq!(s.started_at, Some(at(0)));
    assert_eq!(s.guest_ready_at, Some(at(2)));
}

#[test]
fn same_observation_later_yields_the_same_status() {
    let mut vm = MicroVM::test("web");
    let report = agent(proto::Phase::Running, true);
    let first = desired_status(&vm, &observe(Some(&report), at(5)));
    vm.status = Some(first.clone());
    let second = desired_status(&vm, &observe(Some(&report), at(500)));
    assert_eq!(first, second);
    assert!(transitions(Some(&first), &second).is_empty());
}

#[test]
fn condition_keeps_its_transition_time_until_its_status_changes() {
    let mut vm = MicroVM::test("web");
    let booting = agent(proto::Phase::Running, false);
    vm.status = Some(desired_status(&vm, &observe(Some(&booting), at(1))));
    let ready = agent(proto::Phase::Running, true);
    let s = desired_status(&vm, &observe(Some(&ready), at(9)));
    let ready_cond = s.condition(READY).expect("Ready");
    let guest = s.condition(GUEST_READY).expect("GuestReady");
    assert_eq!(ready_cond.last_transition_time, at(1));
    assert_eq!(guest.last_transition_time, at(9));
}

#[test]
fn running_without_readiness_check_counts_as_guest_ready() {
    let vm = MicroVM::test("web").without_readiness();
    let report = agent(proto::Phase::Running, false);
    let s = desired_status(&vm, &observe(Some(&report), at(0)));
    assert_eq!(
        status_of(&s, GUEST_READY),
        ("True".into(), "NoReadinessCheck".into())
    );
}

#[test]
fn halted_vm_says_how_to_start_it() {
    let vm = MicroVM::test("web").halted();
    let report = agent(proto::Phase::Stopped, false);
    let s = desired_status(&vm, &observe(Some(&report), at(0)));
    assert_eq!(s.phase, Some(MicroVMPhase::Stopped));
    assert!(
        s.message
            .clone()
            .unwrap_or_default()
            .contains("set it to Always")
    );
    assert_eq!(status_of(&s, READY), ("False".into(), "Stopped".into()));
}

#[test]
fn failed_once_vm_says_it_is_not_restarted_and_why_it_failed() {
    let vm = MicroVM::test("web").run_strategy(RunStrategy::Once);
    let mut report = agent(proto::Phase::Failed, false);
    report.message = "qemu: could not load kernel".into();
    let s = desired_status(&vm, &observe(Some(&report), at(0)));
    let msg = s.message.unwrap_or_default();
    assert!(msg.contains("could not load kernel"), "{msg}");
    assert!(msg.contains("does not restart"), "{msg}");
}

#[test]
fn vm_on_a_host_without_heartbeats_is_not_ready_but_keeps_its_last_phase() {
    let vm = MicroVM::test("web");
    let report = agent(proto::Phase::Running, true);
    let mut obs = observe(Some(&report), at(0));
    obs.host_ready = Some(false);
    let s = desired_status(&vm, &obs);
    assert_eq!(
        status_of(&s, READY),
        ("False".into(), "HostNotReady".into())
    );
    assert_eq!(
        status_of(&s, GUEST_READY),
        ("Unknown".into(), "HostNotReady".into()),
        "the READY column must not keep saying True"
    );
    assert_eq!(s.phase, Some(MicroVMPhase::Running));
    let msg = s.message.clone().unwrap_or_default();
    assert!(msg.contains("kubectl get qh a"), "{msg}");
    assert!(msg.contains("last reported Running"), "{msg}");
    assert!(msg.contains("may still be running"), "{msg}");
    let events = transitions(
        Some(&desired_status(&vm, &observe(Some(&report), at(0)))),
        &s,
    );
    assert!(
        events
            .iter()
            .any(|t| t.reason == "HostNotReady" && t.warning),
        "{events:?}"
    );
}

#[test]
fn assigned_but_not_yet_reported_is_scheduling_on_that_host() {
    let vm = MicroVM::test("web");
    let s = desired_status(&vm, &observe(None, at(0)));
    assert_eq!(s.phase, Some(MicroVMPhase::Scheduling));
    assert_eq!(s.host.as_deref(), Some("a"));
    assert_eq!(status_of(&s, SCHEDULED).0, "True");
    assert_eq!(status_of(&s, RESTART_REQUIRED).0, "False");
}

#[test]
fn running_an_older_generation_requires_a_restart() {
    let vm = MicroVM::test("web").cpus(2).with_generation(2);
    let report = agent(proto::Phase::Running, true);
    let s = desired_status(&vm, &observe(Some(&report), at(0)));
    assert_eq!(
        status_of(&s, RESTART_REQUIRED),
        ("True".into(), "SpecChanged".into())
    );
}

#[test]
fn boot_tells_scheduled_started_and_guest_ready() {
    let vm = MicroVM::test("web");
    let report = agent(proto::Phase::Running, true);
    let s = desired_status(&vm, &observe(Some(&report), fixture_time()));
    let reasons: Vec<_> = transitions(None, &s)
        .into_iter()
        .map(|t| t.reason)
        .collect();
    assert_eq!(reasons, ["Scheduled", "Started", "GuestReady"]);
}

#[test]
fn failure_and_restart_are_warnings() {
    let vm = MicroVM::test("web");
    let running = desired_status(
        &vm,
        &observe(Some(&agent(proto::Phase::Running, true)), at(0)),
    );
    let mut failed = agent(proto::Phase::Failed, false);
    failed.restart_count = 1;
    let s = desired_status(&vm, &observe(Some(&failed), at(1)));
    let events = transitions(Some(&running), &s);
    assert!(events.iter().any(|t| t.warning && t.reason == "Failed"));
    assert!(events.iter().any(|t| t.warning && t.reason == "Restarted"));
}

#[test]
fn readiness_timeout_turns_guest_ready_false_with_its_reason_and_a_warning() {
    let mut vm = MicroVM::test("web");
    let booting = agent(proto::Phase::Running, false);
    vm.status = Some(desired_status(&vm, &observe(Some(&booting), at(1))));
    let mut late = agent(proto::Phase::Running, false);
    late.readiness_timed_out = true;
    late.message = "the readiness marker did not appear within 120s of boot".into();
    let s = desired_status(&vm, &observe(Some(&late), at(130)));
    assert_eq!(s.phase, Some(MicroVMPhase::Running), "the VM keeps running");
    assert_eq!(
        status_of(&s, GUEST_READY),
        ("False".into(), "ReadinessTimeout".into())
    );
    let message = &s.condition(GUEST_READY).expect("GuestReady").message;
    assert!(message.contains("within 120s"), "{message}");
    let events = transitions(vm.status.as_ref(), &s);
    assert!(
        events
            .iter()
            .any(|t| t.warning && t.reason == "ReadinessTimeout"),
        "{events:?}"
    );
}

#[test]
fn forwarded_ports_are_reported_in_status() {
    let vm = MicroVM::test("web").forward(80, 0);
    let mut report = agent(proto::Phase::Running, true);
    report.port_forwards = vec![proto::ForwardedPort {
        name: "http".into(),
        protocol: proto::Protocol::Tcp as i32,
        guest_port: 80,
        host_ip: "127.0.0.1".into(),
        host_port: 41_234,
    }];
    let s = desired_status(&vm, &observe(Some(&report), at(5)));
    assert_eq!(
        s.port_forwards,
        vec![quiver_crds::ForwardedPort {
            name: Some("http".into()),
            protocol: quiver_crds::Protocol::Tcp,
            guest_port: 80,
            host_ip: "127.0.0.1".into(),
            host_port: 41_234,
        }]
    );
    let stopped = agent(proto::Phase::Stopped, false);
    let s = desired_status(&vm, &observe(Some(&stopped), at(6)));
    assert!(s.port_forwards.is_empty());
}
