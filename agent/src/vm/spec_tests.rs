use super::*;

const LIMITS: Limits = Limits {
    max_cpus: 8,
    max_memory_mib: 16 * 1024,
};

struct Fixture {
    _dir: tempfile::TempDir,
    req: proto::PutVmRequest,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = dir.path().join("vmlinuz");
    let initrd = dir.path().join("initrd.gz");
    std::fs::write(&kernel, b"k").expect("write kernel");
    std::fs::write(&initrd, b"i").expect("write initrd");
    let req = proto::PutVmRequest {
        uid: "vm-1".into(),
        namespace: "default".into(),
        name: "web".into(),
        generation: 1,
        epoch: 1,
        spec: Some(proto::VmSpec {
            run_strategy: proto::RunStrategy::Always as i32,
            cpus: 1,
            memory_mib: 256,
            kernel: kernel.display().to_string(),
            initrd: initrd.display().to_string(),
            cmdline: "console=ttyS0".into(),
            disks: vec![],
            network: String::new(),
            readiness: Some(proto::Readiness {
                serial_marker: "READY".into(),
            }),
        }),
    };
    Fixture { _dir: dir, req }
}

fn field_of(req: &proto::PutVmRequest) -> String {
    match validate(req, LIMITS) {
        Err(Error::InvalidArgument { field, .. }) => field,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

fn spec_mut(f: &mut Fixture) -> &mut proto::VmSpec {
    f.req.spec.as_mut().expect("fixture has a spec")
}

#[test]
fn valid_request_is_accepted() {
    let f = fixture();
    let (meta, spec) = validate(&f.req, LIMITS).expect("valid");
    assert_eq!(meta.uid, "vm-1");
    assert_eq!(spec.run_strategy, RunStrategy::Always);
    assert_eq!(spec.readiness_marker.as_deref(), Some("READY"));
}

#[test]
fn zero_cpus_names_spec_cpus() {
    let mut f = fixture();
    spec_mut(&mut f).cpus = 0;
    assert_eq!(field_of(&f.req), "spec.cpus");
}

#[test]
fn cpus_above_capacity_are_rejected() {
    let mut f = fixture();
    spec_mut(&mut f).cpus = 9;
    assert_eq!(field_of(&f.req), "spec.cpus");
}

#[test]
fn absurd_memory_names_spec_memory() {
    let mut f = fixture();
    spec_mut(&mut f).memory_mib = 300 * 1024;
    assert_eq!(field_of(&f.req), "spec.memoryMiB");
    spec_mut(&mut f).memory_mib = 32 * 1024; // above this host's capacity
    assert_eq!(field_of(&f.req), "spec.memoryMiB");
}

#[test]
fn memory_is_capped_at_256_gib_even_on_huge_hosts() {
    let mut f = fixture();
    spec_mut(&mut f).memory_mib = MAX_MEMORY_MIB + 1;
    let huge = Limits {
        max_cpus: 8,
        max_memory_mib: u64::MAX,
    };
    assert!(matches!(
        validate(&f.req, huge),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn missing_kernel_file_names_spec_kernel() {
    let mut f = fixture();
    spec_mut(&mut f).kernel = "/nonexistent/vmlinuz".into();
    assert_eq!(field_of(&f.req), "spec.kernel");
    spec_mut(&mut f).kernel = "relative/vmlinuz".into();
    assert_eq!(field_of(&f.req), "spec.kernel");
    spec_mut(&mut f).kernel = String::new();
    assert_eq!(field_of(&f.req), "spec.kernel");
}

#[test]
fn missing_initrd_file_names_spec_initrd() {
    let mut f = fixture();
    spec_mut(&mut f).initrd = "/nonexistent/initrd".into();
    assert_eq!(field_of(&f.req), "spec.initrd");
}

#[test]
fn empty_initrd_means_none() {
    let mut f = fixture();
    spec_mut(&mut f).initrd = String::new();
    let (_, spec) = validate(&f.req, LIMITS).expect("valid");
    assert_eq!(spec.initrd, None);
}

#[test]
fn bad_cmdlines_name_spec_cmdline() {
    for bad in ["a\nb", "a\0b", "a\rb"] {
        let mut f = fixture();
        spec_mut(&mut f).cmdline = bad.into();
        assert_eq!(field_of(&f.req), "spec.cmdline");
    }
    let mut f = fixture();
    spec_mut(&mut f).cmdline = "x".repeat(MAX_CMDLINE_BYTES + 1);
    assert_eq!(field_of(&f.req), "spec.cmdline");
    spec_mut(&mut f).cmdline = "x".repeat(MAX_CMDLINE_BYTES);
    assert!(validate(&f.req, LIMITS).is_ok());
}

#[test]
fn uid_must_be_a_plain_file_name() {
    for bad in ["", "../etc", "a/b", ".hidden", "a b"] {
        let mut f = fixture();
        f.req.uid = bad.into();
        assert_eq!(field_of(&f.req), "uid");
    }
}

#[test]
fn missing_spec_and_unknown_enums_are_rejected() {
    let mut f = fixture();
    spec_mut(&mut f).run_strategy = 42;
    assert_eq!(field_of(&f.req), "spec.runStrategy");
    f.req.spec = None;
    assert_eq!(field_of(&f.req), "spec");
}

#[test]
fn disks_are_checked_by_index() {
    let mut f = fixture();
    let kernel = spec_mut(&mut f).kernel.clone();
    spec_mut(&mut f).disks = vec![
        proto::Disk {
            image: kernel,
            format: "raw".into(),
        },
        proto::Disk {
            image: "/nonexistent.img".into(),
            format: "qcow2".into(),
        },
    ];
    assert_eq!(field_of(&f.req), "spec.disks[1].image");
    spec_mut(&mut f).disks[1].format = "vmdk".into();
    assert_eq!(field_of(&f.req), "spec.disks[1].format");
}

#[test]
fn only_no_network_is_supported() {
    let mut f = fixture();
    spec_mut(&mut f).network = "bridge".into();
    assert_eq!(field_of(&f.req), "spec.network");
}

#[test]
fn strategies_decide_restarts() {
    assert!(RunStrategy::Always.restarts_on_success());
    assert!(RunStrategy::RerunOnFailure.restarts_on_failure());
    assert!(!RunStrategy::RerunOnFailure.restarts_on_success());
    assert!(!RunStrategy::Once.restarts_on_failure());
    assert!(!RunStrategy::Halted.wants_running());
}
