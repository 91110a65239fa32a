//! Every field of `MicroVM.spec` does something: a MicroVM with every field set to a telling
//! value goes through the operator's conversion and the agent's validation to the QEMU command
//! line the agent's driver builds, and each field is checked where it lands (the command line,
//! the agent's record of the VM, or the placement ledger for `nodeSelector`). The list of fields comes
//! from the generated CRD schema, so a new field without a check here fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use kube::CustomResourceExt;
use quiver_agent::config::Accel;
use quiver_agent::vm::RunStrategy as AgentStrategy;
use quiver_agent::vm::images::ImageRoots;
use quiver_agent::vm::network::{Protocol, bind_forwards};
use quiver_agent::vm::qemu::QemuDriver;
use quiver_agent::vm::rundir::RunDir;
use quiver_agent::vm::spec::{DiskFormat, Limits, VmSpec, validate};
use quiver_crds::{
    Disk, DiskFormat as CrdFormat, MicroVM, NetworkMode, PortForward, Protocol as CrdProtocol,
    Readiness, RunStrategy,
};
use quiver_operator::convert::put_request;
use quiver_raft::Command;
use quiver_raft::ledger::{Ledger, place};
use serde_json::Value;

/// Leaf paths under `spec` in the CRD schema (`disks[].name`, `network.mode`, …).
fn spec_leaves(node: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            spec_leaves(child, &path, out);
        }
    } else if let Some(items) = node.get("items") {
        spec_leaves(items, &format!("{prefix}[]"), out);
    } else {
        out.insert(prefix.to_owned());
    }
}

/// What the agent made of the VM: its validated spec and the QEMU arguments.
struct Landed {
    spec: VmSpec,
    args: Vec<String>,
}

impl Landed {
    fn has(&self, pair: [&str; 2]) -> bool {
        self.args
            .windows(2)
            .any(|w| w[0] == pair[0] && w[1] == pair[1])
    }

    fn value_of(&self, flag: &str, containing: &str) -> &str {
        self.args
            .windows(2)
            .find(|w| w[0] == flag && w[1].contains(containing))
            .map(|w| w[1].as_str())
            .unwrap_or_else(|| panic!("no {flag} containing {containing:?} in {:?}", self.args))
    }
}

fn every_field_set(images: &Path) -> MicroVM {
    let path = |name: &str| images.join(name).display().to_string();
    let mut vm = MicroVM::test("all");
    vm.spec.run_strategy = RunStrategy::Once;
    vm.spec.cpus = 3;
    vm.spec.memory_mib = 384;
    vm.spec.kernel = path("vmlinuz");
    vm.spec.initrd = Some(path("initrd.gz"));
    vm.spec.cmdline = Some("console=ttyS0 quiver.fields=1".into());
    vm.spec.disks = vec![
        Disk {
            name: "data".into(),
            image: path("data.qcow2"),
            format: CrdFormat::Qcow2,
            read_only: false,
        },
        Disk {
            name: "seed".into(),
            image: path("seed.raw"),
            format: CrdFormat::Raw,
            read_only: true,
        },
    ];
    vm.spec.network.mode = NetworkMode::User;
    vm.spec.network.port_forwards = vec![PortForward {
        name: Some("dns".into()),
        protocol: CrdProtocol::Udp,
        guest_port: 53,
        host_port: 15_353,
    }];
    vm.spec.node_selector = BTreeMap::from([("zone".into(), "blue".into())]);
    vm.spec.readiness = Some(Readiness {
        serial_marker: "FIELDS_READY".into(),
        timeout_seconds: 42,
    });
    vm
}

fn land(vm: &MicroVM, images: &Path, run: &Path) -> Landed {
    let req = put_request(vm, "uid-all", 1);
    let limits = Limits {
        max_cpus: 8,
        max_memory_mib: 4096,
    };
    let roots = ImageRoots::new(vec![images.to_path_buf()]);
    let (_, spec) = validate(&req, limits, &roots).expect("the agent accepts the VM");
    let forwards = bind_forwards(
        spec.network.forwards(),
        "127.0.0.1".parse().expect("ip"),
        &[],
    )
    .expect("forwards");
    let driver = QemuDriver::new(Accel::Tcg);
    let args = driver.args(&RunDir::new(run, "uid-all"), &spec, &forwards);
    Landed { spec, args }
}

fn canonical(images: &Path, name: &str) -> String {
    std::fs::canonicalize(images.join(name))
        .expect("canonical")
        .display()
        .to_string()
}

#[test]
fn every_spec_field_reaches_the_agent_or_placement() {
    let images = tempfile::tempdir().expect("tempdir");
    let run = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in [
        ("vmlinuz", &b"kernel"[..]),
        ("initrd.gz", b"initrd"),
        ("seed.raw", b"seed"),
    ] {
        std::fs::write(images.path().join(name), bytes).expect("write");
    }
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(images.path().join("data.qcow2"))
        .arg("1M")
        .status()
        .expect("qemu-img (scripts/guest-image.sh installs it)");
    assert!(status.success());
    let vm = every_field_set(images.path());
    let landed = land(&vm, images.path(), run.path());
    let dir = images.path();

    type Check<'a> = Box<dyn Fn(&Landed) + 'a>;
    let checks: Vec<(&str, Check)> = vec![
        (
            "runStrategy",
            Box::new(|l| assert_eq!(l.spec.run_strategy, AgentStrategy::Once)),
        ),
        ("cpus", Box::new(|l| assert!(l.has(["-smp", "3"])))),
        ("memoryMiB", Box::new(|l| assert!(l.has(["-m", "384"])))),
        (
            "kernel",
            Box::new(move |l| assert!(l.has(["-kernel", &canonical(dir, "vmlinuz")]))),
        ),
        (
            "initrd",
            Box::new(move |l| assert!(l.has(["-initrd", &canonical(dir, "initrd.gz")]))),
        ),
        (
            "cmdline",
            Box::new(|l| assert!(l.has(["-append", "console=ttyS0 quiver.fields=1"]))),
        ),
        (
            "disks[].name",
            Box::new(|l| {
                assert!(l.value_of("-drive", "id=data,").starts_with("id=data,"));
                let device = l.value_of("-device", "drive=seed");
                assert_eq!(device, "virtio-blk-device,drive=seed,serial=seed");
            }),
        ),
        (
            "disks[].image",
            Box::new(move |l| {
                // The writable disk's image backs the overlay `qemu-img` makes at launch.
                assert_eq!(
                    l.spec.disks[0].image.display().to_string(),
                    canonical(dir, "data.qcow2")
                );
                let seed = format!("file={},", canonical(dir, "seed.raw"));
                assert!(l.value_of("-drive", "id=seed,").contains(&seed));
            }),
        ),
        (
            "disks[].format",
            Box::new(|l| {
                assert_eq!(
                    l.spec.disks[0].format,
                    DiskFormat::Qcow2,
                    "qemu-img -F qcow2"
                );
                assert!(l.value_of("-drive", "id=seed,").contains("format=raw"));
            }),
        ),
        (
            "disks[].readOnly",
            Box::new(|l| {
                assert!(l.value_of("-drive", "id=seed,").contains("read-only=on"));
                assert!(!l.value_of("-drive", "id=data,").contains("read-only"));
            }),
        ),
        (
            "network.mode",
            Box::new(|l| {
                assert!(
                    l.value_of("-netdev", "user,id=net0")
                        .starts_with("user,id=net0")
                );
                assert!(l.has(["-device", "virtio-net-device,netdev=net0"]));
            }),
        ),
        (
            "network.portForwards[].guestPort",
            Box::new(|l| assert!(l.value_of("-netdev", "hostfwd").contains("-:53"))),
        ),
        (
            "network.portForwards[].hostPort",
            Box::new(|l| assert!(l.value_of("-netdev", "hostfwd").contains(":15353-"))),
        ),
        (
            "network.portForwards[].protocol",
            Box::new(|l| {
                assert!(l.value_of("-netdev", "hostfwd").contains("hostfwd=udp:"));
                assert_eq!(l.spec.network.forwards()[0].protocol, Protocol::Udp);
            }),
        ),
        (
            "network.portForwards[].name",
            Box::new(|l| {
                assert_eq!(
                    l.spec.network.forwards()[0].name,
                    "dns",
                    "reported in status"
                );
            }),
        ),
        (
            "readiness.serialMarker",
            Box::new(|l| {
                assert_eq!(
                    l.spec.readiness.as_ref().expect("readiness").marker,
                    "FIELDS_READY"
                );
            }),
        ),
        (
            "readiness.timeoutSeconds",
            Box::new(|l| {
                let timeout = l.spec.readiness.as_ref().and_then(|r| r.timeout);
                assert_eq!(timeout, Some(Duration::from_secs(42)));
            }),
        ),
        ("nodeSelector", Box::new(|_| {})),
    ];

    let schema = serde_json::to_value(MicroVM::crd()).expect("crd json");
    let spec_schema =
        &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut fields = BTreeSet::new();
    spec_leaves(spec_schema, "", &mut fields);
    let checked: BTreeSet<String> = checks.iter().map(|(f, _)| (*f).to_owned()).collect();
    assert_eq!(
        fields, checked,
        "every spec field needs a check here (and no check may go stale)"
    );
    for (field, check) in &checks {
        eprintln!("checking spec.{field}");
        check(&landed);
    }

    // nodeSelector is the placement ledger's: it decides which host runs the VM at all.
    // Without the selector, red-host (more memory) would win.
    let mut ledger = Ledger::default();
    for (name, zone, memory_mib) in [("red-host", "red", 16384), ("blue-host", "blue", 8192)] {
        ledger.apply(&Command::RegisterHost {
            name: name.into(),
            cpus: 8,
            memory_mib,
            labels: BTreeMap::from([("zone".into(), zone.into())]),
        });
        ledger.apply(&Command::RenewLease {
            host: name.into(),
            now_ms: 0,
            ttl_ms: 6000,
        });
    }
    let desired = quiver_agent::services::desired_vm(&put_request(&vm, "uid-all", 1));
    assert_eq!(place(&ledger, &desired, None).as_deref(), Some("blue-host"));
}
