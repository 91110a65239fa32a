use kube::CustomResourceExt;
use quiver_crds::{Host, MicroVM, Rollout, RolloutStep, RunStrategy};
use serde::Serialize;
use serde_json::{Value, json};

use crate::schema_of;
use crate::validator::{eval_rule, validate};

fn errors<K: CustomResourceExt + Serialize>(object: &K) -> Vec<String> {
    validate(
        &schema_of(&K::crd()),
        &serde_json::to_value(object).unwrap(),
    )
}

fn example(name: &str) -> Value {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn assert_rejected(errors: &[String], expected: &str) {
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "expected an error containing {expected:?}, got {errors:?}"
    );
}

#[test]
fn fixtures_are_valid() {
    let vm = MicroVM::test("a")
        .cpus(2)
        .disk("data", "/var/lib/quiver/images/data.qcow2");
    assert_eq!(errors(&vm), Vec::<String>::new());
    assert_eq!(
        errors(&vm.on_host("h1").running().guest_ready()),
        Vec::<String>::new()
    );
    assert_eq!(
        errors(&MicroVM::test("b").halted().failed("boom")),
        Vec::<String>::new()
    );
    assert_eq!(errors(&Rollout::test("r")), Vec::<String>::new());
    let rollout = Rollout::test("r").selecting("zone", "a").paused().at_step(
        2,
        50,
        quiver_crds::RolloutPhase::Paused,
    );
    assert_eq!(errors(&rollout.canaries(&["h1"])), Vec::<String>::new());
    assert_eq!(
        errors(&Host::test("h1").leader().allocated(1, 256, 1)),
        Vec::<String>::new()
    );
}

#[test]
fn demo_microvm_example_is_valid_and_boots_the_test_guest() {
    let value = example("microvm.yaml");
    assert_eq!(
        validate(&schema_of(&MicroVM::crd()), &value),
        Vec::<String>::new()
    );
    let vm: MicroVM = serde_json::from_value(value).unwrap();
    assert_eq!(vm.metadata.name.as_deref(), Some("demo"));
    assert_eq!(vm.spec.kernel, quiver_crds::fixtures::TEST_KERNEL);
    assert_eq!(
        vm.spec.initrd.as_deref(),
        Some(quiver_crds::fixtures::TEST_INITRD)
    );
    assert_eq!(
        vm.spec.cmdline.as_deref(),
        Some(quiver_crds::fixtures::TEST_CMDLINE)
    );
    assert_eq!((vm.spec.cpus, vm.spec.memory_mib), (1, 256));
    assert_eq!(vm.spec.run_strategy, RunStrategy::Always);
    let readiness = vm.spec.readiness.unwrap();
    assert_eq!(
        readiness.serial_marker,
        quiver_crds::microvm::DEFAULT_SERIAL_MARKER
    );
}

#[test]
fn rollout_example_is_valid_and_steps_5_25_50_100() {
    let value = example("rollout.yaml");
    assert_eq!(
        validate(&schema_of(&Rollout::crd()), &value),
        Vec::<String>::new()
    );
    let rollout: Rollout = serde_json::from_value(value).unwrap();
    let weights: Vec<u32> = rollout
        .spec
        .steps
        .iter()
        .filter_map(|s| s.set_weight)
        .collect();
    assert_eq!(weights, [5, 25, 50, 100]);
    assert_eq!(rollout.spec.steps.len(), 7);
    assert!(
        rollout
            .spec
            .steps
            .iter()
            .all(|s| s.set_weight.is_some() != s.pause.is_some())
    );
    assert_eq!(
        rollout.spec.target.as_ref().unwrap().default,
        quiver_crds::Transport::Iroh
    );
}

#[test]
fn relative_kernel_path_is_rejected_naming_the_field() {
    let mut vm = MicroVM::test("a");
    vm.spec.kernel = "vmlinuz".into();
    assert_rejected(&errors(&vm), "spec.kernel must be an absolute path");
    vm.spec.kernel = String::new();
    assert_rejected(&errors(&vm), "spec.kernel: shorter than 1");
}

#[test]
fn relative_initrd_and_disk_paths_are_rejected() {
    let mut vm = MicroVM::test("a").disk("data", "data.qcow2");
    vm.spec.initrd = Some("initrd.gz".into());
    let errors = errors(&vm);
    assert_rejected(&errors, "spec.initrd must be an absolute path");
    assert_rejected(&errors, "spec.disks[].image must be an absolute path");
}

#[test]
fn duplicate_disk_names_are_rejected() {
    let vm = MicroVM::test("a")
        .disk("data", "/images/a.qcow2")
        .disk("data", "/images/b.qcow2");
    assert_rejected(&errors(&vm), "spec.disks names must be unique");
    let vm = MicroVM::test("a")
        .disk("data", "/images/a.qcow2")
        .disk("logs", "/images/b.qcow2");
    assert_eq!(errors(&vm), Vec::<String>::new());
}

#[test]
fn out_of_range_sizes_are_rejected() {
    assert_rejected(
        &errors(&MicroVM::test("a").cpus(0)),
        "spec.cpus: 0 is less than 1",
    );
    assert_rejected(
        &errors(&MicroVM::test("a").cpus(65)),
        "spec.cpus: 65 is greater than 64",
    );
    assert_rejected(
        &errors(&MicroVM::test("a").memory_mib(32)),
        "spec.memoryMiB",
    );
    let bad_name = MicroVM::test("a").disk("Data_1", "/images/a.qcow2");
    assert_rejected(&errors(&bad_name), "spec.disks[0].name");
}

#[test]
fn misspelled_fields_are_not_silently_accepted() {
    let mut value = serde_json::to_value(MicroVM::test("a")).unwrap();
    value["spec"]["memoryMib"] = json!(512);
    assert_rejected(
        &validate(&schema_of(&MicroVM::crd()), &value),
        "spec.memoryMib: unknown field",
    );
}

#[test]
fn a_step_must_set_exactly_one_of_set_weight_or_pause() {
    let message = "each spec.steps entry must set exactly one of setWeight or pause";
    let both = RolloutStep {
        set_weight: Some(5),
        ..RolloutStep::pause_for("30s")
    };
    let neither = RolloutStep {
        set_weight: None,
        pause: None,
    };
    for step in [both, neither] {
        assert_rejected(&errors(&Rollout::test("r").steps(vec![step])), message);
    }
    for step in [
        RolloutStep::weight(5),
        RolloutStep::pause_for("1h30m"),
        RolloutStep::pause_indefinitely(),
    ] {
        assert_eq!(
            errors(&Rollout::test("r").steps(vec![step])),
            Vec::<String>::new()
        );
    }
}

#[test]
fn step_rule_treats_an_empty_pause_object_as_set() {
    let schema = schema_of(&Rollout::crd());
    let steps = &schema["properties"]["spec"]["properties"]["steps"]["items"];
    let expr = steps["x-kubernetes-validations"][0]["rule"]
        .as_str()
        .unwrap();
    assert_eq!(eval_rule(expr, &json!({"pause": {}})), Ok(true));
    assert_eq!(eval_rule(expr, &json!({"setWeight": 5})), Ok(true));
    assert_eq!(eval_rule(expr, &json!({})), Ok(false));
}

#[test]
fn bad_durations_weights_and_empty_step_lists_are_rejected() {
    let r = Rollout::test("r").steps(vec![RolloutStep::pause_for("10 minutes")]);
    assert_rejected(&errors(&r), "spec.steps[0].pause.duration");
    let r = Rollout::test("r").steps(vec![RolloutStep::weight(101)]);
    assert_rejected(
        &errors(&r),
        "spec.steps[0].setWeight: 101 is greater than 100",
    );
    assert_rejected(
        &errors(&Rollout::test("r").steps(vec![])),
        "spec.steps: fewer than 1",
    );
}

#[test]
fn host_endpoint_id_must_look_like_an_iroh_key() {
    let mut host = Host::test("h1");
    host.spec.endpoint_id = "not-a-key".into();
    assert_rejected(&errors(&host), "spec.endpointId");
    host.spec.endpoint_id = "a".repeat(52);
    assert_eq!(errors(&host), Vec::<String>::new());
}

#[test]
fn serde_defaults_match_the_default_impls() {
    let readiness: quiver_crds::Readiness = serde_json::from_value(json!({})).unwrap();
    assert_eq!(readiness, quiver_crds::Readiness::default());
    let analysis: quiver_crds::Analysis = serde_json::from_value(json!({})).unwrap();
    assert_eq!(analysis, quiver_crds::Analysis::default());
    let spec: quiver_crds::MicroVMSpec = serde_json::from_value(json!({"kernel": "/k"})).unwrap();
    assert_eq!(spec, quiver_crds::MicroVMSpec::new("/k"));
}

#[test]
fn disk_names_must_start_with_a_letter_and_formats_are_raw_or_qcow2() {
    let vm = MicroVM::test("a").disk("0data", "/images/a.raw");
    assert_rejected(&errors(&vm), "spec.disks[0].name");
    let mut value = serde_json::to_value(MicroVM::test("a").disk("data", "/images/a.img")).unwrap();
    assert_eq!(value["spec"]["disks"][0]["format"], "raw");
    value["spec"]["disks"][0]["format"] = json!("vmdk");
    assert_rejected(
        &validate(&schema_of(&MicroVM::crd()), &value),
        "spec.disks[0].format",
    );
    let vm = MicroVM::test("a").read_only_disk("seed", "/images/seed.raw");
    assert_eq!(errors(&vm), Vec::<String>::new());
}

#[test]
fn port_forwards_need_user_mode_and_distinct_host_ports_and_names() {
    assert_eq!(
        errors(&MicroVM::test("a").forward(80, 0).forward(22, 0)),
        Vec::<String>::new()
    );
    let mut vm = MicroVM::test("a").forward(80, 8080);
    vm.spec.network.mode = quiver_crds::NetworkMode::None;
    assert_rejected(
        &errors(&vm),
        "spec.network.portForwards needs spec.network.mode: user",
    );
    let clash = MicroVM::test("a").forward(80, 8080).forward(81, 8080);
    assert_rejected(
        &errors(&clash),
        "must not repeat a protocol and non-zero hostPort",
    );
    let mut udp = MicroVM::test("a").forward(53, 5353).forward(53, 5353);
    udp.spec.network.port_forwards[1].protocol = quiver_crds::Protocol::Udp;
    assert_eq!(
        errors(&udp),
        Vec::<String>::new(),
        "TCP and UDP may share a port"
    );
    let mut named = MicroVM::test("a").forward(80, 0).forward(81, 0);
    for f in &mut named.spec.network.port_forwards {
        f.name = Some("web".into());
    }
    assert_rejected(
        &errors(&named),
        "spec.network.portForwards names must be unique",
    );
    let out_of_range = MicroVM::test("a").forward(0, 70_000);
    let errors = errors(&out_of_range);
    assert_rejected(&errors, "spec.network.portForwards[0].guestPort");
    assert_rejected(&errors, "spec.network.portForwards[0].hostPort");
}

#[test]
fn port_forward_rules_work_on_objects_without_defaults_applied() {
    let schema = schema_of(&MicroVM::crd());
    let forwards =
        &schema["properties"]["spec"]["properties"]["network"]["properties"]["portForwards"];
    let unique_ports = forwards["x-kubernetes-validations"][0]["rule"]
        .as_str()
        .unwrap();
    let bare = json!([{"guestPort": 80}, {"guestPort": 81}]);
    assert_eq!(eval_rule(unique_ports, &bare), Ok(true));
    let clash = json!([{"guestPort": 80, "hostPort": 9}, {"guestPort": 81, "hostPort": 9, "protocol": "TCP"}]);
    assert_eq!(eval_rule(unique_ports, &clash), Ok(false));
}

#[test]
fn web_example_forwards_the_guest_http_port() {
    let value = example("microvm-web.yaml");
    assert_eq!(
        validate(&schema_of(&MicroVM::crd()), &value),
        Vec::<String>::new()
    );
    let vm: MicroVM = serde_json::from_value(value).unwrap();
    assert_eq!(vm.spec.network.mode, quiver_crds::NetworkMode::User);
    let forward = &vm.spec.network.port_forwards[0];
    assert_eq!((forward.guest_port, forward.host_port), (80, 0));
    assert_eq!(vm.spec.kernel, quiver_crds::fixtures::TEST_KERNEL);
}
