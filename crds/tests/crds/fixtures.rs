use std::fmt::Debug;

use quiver_crds::condition::{GUEST_READY, READY, SCHEDULED};
use quiver_crds::fixtures::test_endpoint_id;
use quiver_crds::{Host, MicroVM, MicroVMPhase, RaftRole, Rollout, RunStrategy, VM_FINALIZER};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trips<T: Serialize + DeserializeOwned + PartialEq + Debug>(object: &T) {
    let json = serde_json::to_string(object).unwrap();
    assert_eq!(
        &serde_json::from_str::<T>(&json).unwrap(),
        object,
        "JSON: {json}"
    );
    let yaml = serde_yaml_ng::to_string(object).unwrap();
    assert_eq!(
        &serde_yaml_ng::from_str::<T>(&yaml).unwrap(),
        object,
        "YAML: {yaml}"
    );
}

#[test]
fn fixtures_survive_json_and_yaml_round_trips() {
    round_trips(&MicroVM::test("a"));
    round_trips(
        &MicroVM::test("a")
            .cpus(4)
            .disk("d", "/d.img")
            .node_selector("zone", "a"),
    );
    round_trips(
        &MicroVM::test("a")
            .on_host("h")
            .epoch(3)
            .running()
            .guest_ready()
            .deleting(),
    );
    round_trips(
        &Rollout::test("r")
            .selecting("zone", "a")
            .aborted()
            .retried(),
    );
    round_trips(&Rollout::test("r").at_step(1, 25, quiver_crds::RolloutPhase::Analyzing));
    round_trips(
        &Host::test("h")
            .with_label("zone", "a")
            .leader()
            .allocated(2, 512, 2),
    );
}

#[test]
fn unset_options_are_left_out_of_the_json() {
    let json = serde_json::to_value(MicroVM::test("a").without_readiness()).unwrap();
    let spec = json["spec"].as_object().unwrap();
    for absent in ["disks", "nodeSelector", "readiness"] {
        assert!(
            !spec.contains_key(absent),
            "{absent} should be omitted: {json}"
        );
    }
    assert!(json.get("status").is_none());
}

#[test]
fn microvm_builders_describe_a_vm_that_boots_and_becomes_ready() {
    let vm = MicroVM::test("web").on_host("h1").running().guest_ready();
    assert_eq!(vm.metadata.namespace.as_deref(), Some("default"));
    let status = vm.status.unwrap();
    assert_eq!(status.phase, Some(MicroVMPhase::Running));
    assert_eq!(status.host.as_deref(), Some("h1"));
    assert_eq!(status.epoch, 1);
    for type_ in [SCHEDULED, READY, GUEST_READY] {
        assert_eq!(
            status.condition(type_).map(|c| c.status.as_str()),
            Some("True"),
            "{type_}"
        );
    }
}

#[test]
fn halted_and_deleting_vms() {
    let vm = MicroVM::test("a").halted().deleting();
    assert_eq!(vm.spec.run_strategy, RunStrategy::Halted);
    assert!(vm.metadata.deletion_timestamp.is_some());
    assert_eq!(vm.metadata.finalizers, Some(vec![VM_FINALIZER.to_owned()]));
    let twice = MicroVM::test("a").with_finalizer().with_finalizer();
    assert_eq!(twice.metadata.finalizers.unwrap().len(), 1);
}

#[test]
fn host_builders_report_role_and_readiness() {
    let host = Host::test("h1").leader();
    let status = host.status.unwrap();
    assert_eq!(status.raft.as_ref().map(|r| r.role), Some(RaftRole::Leader));
    assert_eq!(status.raft.as_ref().unwrap().leader.as_deref(), Some("h1"));
    assert_eq!(status.condition(READY).unwrap().status, "True");
    let down = Host::test("h2").ready().not_ready();
    assert_eq!(
        down.status.unwrap().condition(READY).unwrap().status,
        "False"
    );
}

#[test]
fn test_endpoint_ids_are_stable_distinct_and_hex() {
    assert_eq!(test_endpoint_id("a"), test_endpoint_id("a"));
    assert_ne!(test_endpoint_id("a"), test_endpoint_id("aa"));
    let id = test_endpoint_id("host-1");
    assert_eq!(id.len(), 64);
    assert!(
        id.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
}
