use super::*;
use crate::vm::network::Network;

const LIMITS: Limits = Limits {
    max_cpus: 8,
    max_memory_mib: 16 * 1024,
};

struct Fixture {
    dir: tempfile::TempDir,
    req: proto::PutVmRequest,
}

impl Fixture {
    fn roots(&self) -> ImageRoots {
        ImageRoots::new(vec![self.dir.path().to_path_buf()])
    }

    fn validate(&self) -> Result<(VmMeta, VmSpec)> {
        validate(&self.req, LIMITS, &self.roots())
    }

    fn file(&self, name: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, b"x").expect("write");
        path.display().to_string()
    }
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
        node_selector: Default::default(),
        spec: Some(proto::VmSpec {
            run_strategy: proto::RunStrategy::Always as i32,
            cpus: 1,
            memory_mib: 256,
            kernel: kernel.display().to_string(),
            initrd: initrd.display().to_string(),
            cmdline: "console=ttyS0".into(),
            disks: vec![],
            network: None,
            readiness: Some(proto::Readiness {
                serial_marker: "READY".into(),
                timeout_seconds: 30,
            }),
        }),
    };
    Fixture { dir, req }
}

fn field_of(f: &Fixture) -> String {
    match f.validate() {
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
    let (meta, spec) = f.validate().expect("valid");
    assert_eq!(meta.uid, "vm-1");
    assert_eq!(spec.run_strategy, RunStrategy::Always);
    let readiness = spec.readiness.expect("readiness");
    assert_eq!(readiness.marker, "READY");
    assert_eq!(readiness.timeout, Some(std::time::Duration::from_secs(30)));
    assert_eq!(spec.network, Network::None);
}

#[test]
fn zero_cpus_names_spec_cpus() {
    let mut f = fixture();
    spec_mut(&mut f).cpus = 0;
    assert_eq!(field_of(&f), "spec.cpus");
}

#[test]
fn cpus_above_capacity_are_rejected() {
    let mut f = fixture();
    spec_mut(&mut f).cpus = 9;
    assert_eq!(field_of(&f), "spec.cpus");
}

#[test]
fn absurd_memory_names_spec_memory() {
    let mut f = fixture();
    spec_mut(&mut f).memory_mib = 300 * 1024;
    assert_eq!(field_of(&f), "spec.memoryMiB");
    spec_mut(&mut f).memory_mib = 32 * 1024; // above this host's capacity
    assert_eq!(field_of(&f), "spec.memoryMiB");
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
        validate(&f.req, huge, &f.roots()),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn missing_kernel_file_names_spec_kernel() {
    let mut f = fixture();
    spec_mut(&mut f).kernel = "/nonexistent/vmlinuz".into();
    assert_eq!(field_of(&f), "spec.kernel");
    spec_mut(&mut f).kernel = "relative/vmlinuz".into();
    assert_eq!(field_of(&f), "spec.kernel");
    spec_mut(&mut f).kernel = String::new();
    assert_eq!(field_of(&f), "spec.kernel");
}

#[test]
fn missing_initrd_file_names_spec_initrd() {
    let mut f = fixture();
    spec_mut(&mut f).initrd = "/nonexistent/initrd".into();
    assert_eq!(field_of(&f), "spec.initrd");
}

#[test]
fn empty_initrd_means_none() {
    let mut f = fixture();
    spec_mut(&mut f).initrd = String::new();
    let (_, spec) = f.validate().expect("valid");
    assert_eq!(spec.initrd, None);
}

#[test]
fn bad_cmdlines_name_spec_cmdline() {
    for bad in ["a\nb", "a\0b", "a\rb"] {
        let mut f = fixture();
        spec_mut(&mut f).cmdline = bad.into();
        assert_eq!(field_of(&f), "spec.cmdline");
    }
    let mut f = fixture();
    spec_mut(&mut f).cmdline = "x".repeat(MAX_CMDLINE_BYTES + 1);
    assert_eq!(field_of(&f), "spec.cmdline");
    spec_mut(&mut f).cmdline = "x".repeat(MAX_CMDLINE_BYTES);
    assert!(f.validate().is_ok());
}

#[test]
fn uid_must_be_a_plain_file_name() {
    for bad in ["", "../etc", "a/b", ".hidden", "a b"] {
        let mut f = fixture();
        f.req.uid = bad.into();
        assert_eq!(field_of(&f), "uid");
    }
}

#[test]
fn missing_spec_and_unknown_enums_are_rejected() {
    let mut f = fixture();
    spec_mut(&mut f).run_strategy = 42;
    assert_eq!(field_of(&f), "spec.runStrategy");
    f.req.spec = None;
    assert_eq!(field_of(&f), "spec");
}

fn disk(name: &str, image: String, format: &str) -> proto::Disk {
    proto::Disk {
        name: name.into(),
        image,
        format: format.into(),
        read_only: false,
    }
}

#[test]
fn disks_are_checked_by_index() {
    let mut f = fixture();
    let raw = f.file("data.raw");
    spec_mut(&mut f).disks = vec![
        disk("data", raw.clone(), "raw"),
        disk(
            "logs",
            format!("{}/nonexistent.img", f.dir.path().display()),
            "raw",
        ),
    ];
    assert_eq!(field_of(&f), "spec.disks[1].image");
    spec_mut(&mut f).disks[1] = disk("logs", raw.clone(), "vmdk");
    assert_eq!(field_of(&f), "spec.disks[1].format");
    spec_mut(&mut f).disks[1] = disk("logs", raw.clone(), "");
    assert_eq!(
        field_of(&f),
        "spec.disks[1].format",
        "formats are never guessed"
    );
    spec_mut(&mut f).disks[1] = disk("data", raw.clone(), "raw");
    assert_eq!(field_of(&f), "spec.disks[1].name", "names are unique");
    for bad in [
        "",
        "0data",
        "Data",
        "a_b",
        "a.b",
        "a/b",
        "data-",
        &"a".repeat(64),
    ] {
        spec_mut(&mut f).disks[1] = disk(bad, raw.clone(), "raw");
        assert_eq!(field_of(&f), "spec.disks[1].name", "{bad:?}");
    }
    spec_mut(&mut f).disks[1] = disk("logs", raw, "raw");
    spec_mut(&mut f).disks[1].read_only = true;
    let (_, spec) = f.validate().expect("valid");
    assert_eq!(spec.disks[1].name, "logs");
    assert!(spec.disks[1].read_only && !spec.disks[0].read_only);
}

#[test]
fn a_qcow2_disk_that_is_not_qcow2_is_refused() {
    let mut f = fixture();
    let raw = f.file("data.qcow2");
    spec_mut(&mut f).disks = vec![disk("data", raw, "qcow2")];
    assert_eq!(field_of(&f), "spec.disks[0].image");
}

#[test]
fn paths_outside_the_image_roots_are_refused_naming_the_field() {
    let outside = tempfile::tempdir().expect("tempdir");
    let stray = outside.path().join("vmlinuz");
    std::fs::write(&stray, b"k").expect("write");
    let stray = stray.display().to_string();
    let mut f = fixture();
    spec_mut(&mut f).kernel = stray.clone();
    assert_eq!(field_of(&f), "spec.kernel");
    let mut f = fixture();
    spec_mut(&mut f).initrd = stray.clone();
    assert_eq!(field_of(&f), "spec.initrd");
    let mut f = fixture();
    let inside = f.file("ok.raw");
    spec_mut(&mut f).disks = vec![disk("a", inside, "raw"), disk("b", stray, "raw")];
    assert_eq!(field_of(&f), "spec.disks[1].image");
    let mut f = fixture();
    spec_mut(&mut f).kernel = "/etc/passwd".into();
    match f.validate() {
        Err(Error::InvalidArgument { field, reason }) => {
            assert_eq!(field, "spec.kernel");
            assert!(reason.contains("outside the image roots"), "{reason}");
        }
        other => panic!("/etc/passwd accepted: {other:?}"),
    }
}

#[test]
fn symlinks_escaping_the_roots_are_refused_and_inner_ones_resolved() {
    let mut f = fixture();
    let link = f.dir.path().join("escape");
    std::os::unix::fs::symlink("/etc/passwd", &link).expect("symlink");
    spec_mut(&mut f).kernel = link.display().to_string();
    match f.validate() {
        Err(Error::InvalidArgument { field, reason }) => {
            assert_eq!(field, "spec.kernel");
            assert!(reason.contains("resolves to /etc/passwd"), "{reason}");
        }
        other => panic!("escaping symlink accepted: {other:?}"),
    }
    let dotdot = format!("{}/../../etc/passwd", f.dir.path().display());
    spec_mut(&mut f).kernel = dotdot;
    assert_eq!(field_of(&f), "spec.kernel");
    let target = f.file("real-kernel");
    let inner = f.dir.path().join("kernel-link");
    std::os::unix::fs::symlink(&target, &inner).expect("symlink");
    spec_mut(&mut f).kernel = inner.display().to_string();
    let (_, spec) = f.validate().expect("a link inside the roots is fine");
    assert_eq!(
        spec.kernel,
        std::fs::canonicalize(&target).expect("canonical")
    );
}

#[test]
fn directories_and_devices_are_not_images() {
    let mut f = fixture();
    spec_mut(&mut f).kernel = f.dir.path().display().to_string();
    assert_eq!(field_of(&f), "spec.kernel");
}

#[test]
fn readiness_limits_and_empty_marker() {
    let mut f = fixture();
    spec_mut(&mut f).readiness = Some(proto::Readiness {
        serial_marker: "READY".into(),
        timeout_seconds: MAX_READINESS_TIMEOUT_SECS + 1,
    });
    assert_eq!(field_of(&f), "spec.readiness.timeoutSeconds");
    spec_mut(&mut f).readiness = Some(proto::Readiness {
        serial_marker: "READY".into(),
        timeout_seconds: 0,
    });
    let (_, spec) = f.validate().expect("valid");
    assert_eq!(
        spec.readiness.expect("readiness").timeout,
        None,
        "0 = no timeout"
    );
    spec_mut(&mut f).readiness = Some(proto::Readiness::default());
    let (_, spec) = f.validate().expect("valid");
    assert_eq!(spec.readiness, None);
}

#[test]
fn user_network_with_forwards_is_accepted() {
    let mut f = fixture();
    spec_mut(&mut f).network = Some(proto::Network {
        mode: "user".into(),
        port_forwards: vec![proto::PortForward {
            name: "web".into(),
            protocol: proto::Protocol::Tcp as i32,
            guest_port: 80,
            host_port: 0,
        }],
    });
    let (_, spec) = f.validate().expect("valid");
    assert_eq!(spec.network.forwards()[0].guest_port, 80);
    spec_mut(&mut f).network = Some(proto::Network {
        mode: "bridge".into(),
        port_forwards: vec![],
    });
    assert_eq!(field_of(&f), "spec.network.mode");
}

#[test]
fn strategies_decide_restarts() {
    assert!(RunStrategy::Always.restarts_on_success());
    assert!(RunStrategy::RerunOnFailure.restarts_on_failure());
    assert!(!RunStrategy::RerunOnFailure.restarts_on_success());
    assert!(!RunStrategy::Once.restarts_on_failure());
    assert!(!RunStrategy::Halted.wants_running());
}
