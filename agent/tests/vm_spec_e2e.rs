//! End-to-end: the spec fields beyond booting (image roots, disks, readiness timeout, user
//! networking) reach QEMU as documented, through the real `quiver-agent` binary.
//!
//! The guest tests need the image from `scripts/guest-image.sh` and print SKIPPED without it
//! (fail when `QUIVER_REQUIRE_GUEST` is set). The image-root tests need no guest.

mod harness;

use std::time::{Duration, Instant};

use harness::{Agent, guest, is_running_ready, phase, put_request, spec_mut, wait_for, wait_gone};
use quiver_agent::vm::qmp::QmpClient;
use quiver_rpc::ClientError as Error;
use quiver_rpc::Code;
use quiver_rpc::proto::{self, Phase, RunStrategy};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn disk(name: &str, image: &str, format: &str, read_only: bool) -> proto::Disk {
    proto::Disk {
        name: name.into(),
        image: image.into(),
        format: format.into(),
        read_only,
    }
}

fn qemu_img(args: &[&str]) {
    let status = std::process::Command::new("qemu-img")
        .args(args)
        .status()
        .expect("qemu-img (scripts/guest-image.sh installs it)");
    assert!(status.success(), "qemu-img {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_outside_the_roots_or_behind_escaping_symlinks_are_refused_naming_the_field() {
    let agent = Agent::start().await;
    let client = agent.client().await;
    let kernel = agent.image("vmlinuz", b"k");
    let data = agent.image("data.raw", &[0; 4096]);
    // Things a guest must never get: host files, the agent's own files, another VM's disk.
    let escape = agent.images_dir().join("escape");
    std::os::unix::fs::symlink("/etc/passwd", &escape).expect("symlink");
    let sneaky_dir = agent.images_dir().join("sneaky");
    std::os::unix::fs::symlink(agent.data_dir(), &sneaky_dir).expect("dir symlink");
    let backed = agent.images_dir().join("backed.qcow2");
    let backed_path = backed.display().to_string();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        "/etc/passwd",
        &backed_path,
    ]);

    type Mutate<'a> = Box<dyn Fn(&mut proto::VmSpec) + 'a>;
    let cases: Vec<(&str, Mutate)> = vec![
        ("spec.kernel", Box::new(|s| s.kernel = "/etc/passwd".into())),
        (
            "spec.kernel",
            Box::new(|s| s.kernel = escape.display().to_string()),
        ),
        (
            "spec.initrd",
            Box::new(|s| s.initrd = format!("{}/agent.yaml", sneaky_dir.display())),
        ),
        (
            "spec.initrd",
            Box::new(|s| s.initrd = format!("{}/../agent.yaml", agent.images_dir().display())),
        ),
        (
            "spec.disks[1].image",
            Box::new(|s| {
                s.disks = vec![
                    disk("data", &data, "raw", false),
                    disk("shadow", "/etc/shadow", "raw", true),
                ];
            }),
        ),
        (
            "spec.disks[0].image",
            Box::new(|s| s.disks = vec![disk("data", &backed_path, "qcow2", false)]),
        ),
    ];
    for (field, mutate) in &cases {
        let mut req = put_request("escape", 1, RunStrategy::Always);
        spec_mut(&mut req).kernel.clone_from(&kernel);
        mutate(spec_mut(&mut req));
        match client.put_vm(req).await {
            Err(Error::Remote { code, message }) => {
                assert_eq!(code, Code::InvalidArgument, "{field}: {message}");
                assert!(message.contains(field), "{message} does not name {field}");
                assert!(message.contains("outside the image roots"), "{message}");
            }
            other => panic!("{field}: expected InvalidArgument, got {other:?}"),
        }
    }
    assert!(client.list_vms().await.expect("list").is_empty());
    let run_dirs = std::fs::read_dir(agent.data_dir().join("vms")).map_or(0, Iterator::count);
    assert_eq!(run_dirs, 0, "refused puts left files behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_given_on_the_command_line_replace_the_defaults() {
    let only = tempfile::tempdir().expect("tempdir");
    let root = only.path().display().to_string();
    let agent = Agent::start_with(&["--image-root", &root]).await;
    let client = agent.client().await;
    // The harness's usual root is not one now.
    let mut req = put_request("roots", 1, RunStrategy::Halted);
    spec_mut(&mut req).kernel = agent.image("vmlinuz", b"k");
    spec_mut(&mut req).initrd = String::new();
    let refused = client.put_vm(req.clone()).await;
    assert!(
        matches!(&refused, Err(Error::Remote { code, .. }) if *code == Code::InvalidArgument),
        "{refused:?}"
    );
    let kernel = only.path().join("vmlinuz");
    std::fs::write(&kernel, b"k").expect("kernel");
    spec_mut(&mut req).kernel = kernel.display().to_string();
    let put = client
        .put_vm(req)
        .await
        .expect("a kernel in the given root");
    assert_eq!(put.status.map(|s| phase(&s)), Some(Phase::Stopped));
}

async fn query_block(agent: &Agent, uid: &str) -> Vec<Value> {
    let mut qmp = QmpClient::connect(&agent.run_dir(uid).join("qmp.sock"))
        .await
        .expect("qmp");
    let reply = qmp.execute("query-block", None).await.expect("query-block");
    reply.as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disks_are_named_drives_and_read_only_ones_are_read_only_without_overlay() {
    if guest().is_none() {
        return;
    }
    let agent = Agent::start().await;
    let client = agent.client().await;
    let data = agent.image("data.raw", &[0; 1 << 20]);
    let seed = agent.image("seed.raw", &[7; 1 << 20]);
    let mut req = put_request("disks", 1, RunStrategy::Always);
    // The guest prints, before its marker, one line per disk: its serial (the drive's name),
    // the kernel's read-only flag and whether writing its first sector worked.
    spec_mut(&mut req).cmdline.push_str(" quiver.probe_disks");
    spec_mut(&mut req).disks = vec![
        disk("data", &data, "raw", false),
        disk("seed", &seed, "raw", true),
    ];
    client.put_vm(req).await.expect("put");
    wait_for(&agent, "disks", "running", is_running_ready).await;

    let console =
        std::fs::read_to_string(agent.run_dir("disks").join("console.log")).expect("console log");
    let probe = |serial: &str| {
        console
            .lines()
            .find(|l| l.starts_with("QUIVER_DISK") && l.contains(&format!("serial={serial} ")))
            .unwrap_or_else(|| panic!("no probe line for {serial} in:\n{console}"))
            .to_owned()
    };
    assert!(
        probe("data").ends_with("ro=0 write=ok"),
        "{}",
        probe("data")
    );
    assert!(
        probe("seed").ends_with("ro=1 write=refused"),
        "the guest could write its read-only disk: {}",
        probe("seed")
    );

    let overlay = agent.run_dir("disks").join("disk-data.qcow2");
    let header = std::fs::read(&overlay).expect("writable disk has an overlay");
    assert_eq!(&header[..4], b"QFI\xfb", "overlay is qcow2");
    assert!(!agent.run_dir("disks").join("disk-seed.qcow2").exists());

    let blocks = query_block(&agent, "disks").await;
    let drive = |name: &str| {
        blocks
            .iter()
            .find(|b| b["device"] == name)
            .unwrap_or_else(|| panic!("no drive named {name} in {blocks:?}"))
            .clone()
    };
    let (data_drive, seed_drive) = (drive("data"), drive("seed"));
    assert_eq!(data_drive["inserted"]["ro"], false);
    assert_eq!(data_drive["inserted"]["drv"], "qcow2");
    assert_eq!(seed_drive["inserted"]["ro"], true, "{seed_drive}");
    assert_eq!(seed_drive["inserted"]["drv"], "raw");
    assert_eq!(seed_drive["inserted"]["file"], seed.as_str());

    client.delete_vm("disks").await.expect("delete");
    wait_gone(&agent, "disks").await;
    assert!(!overlay.exists());
    assert_eq!(std::fs::read(&data).expect("base").len(), 1 << 20);
    assert!(std::fs::read(&seed).expect("seed").iter().all(|b| *b == 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_that_never_comes_reports_the_readiness_timeout() {
    if guest().is_none() {
        return;
    }
    let agent = Agent::start().await;
    let client = agent.client().await;
    let mut req = put_request("late", 1, RunStrategy::Always);
    spec_mut(&mut req).readiness = Some(proto::Readiness {
        serial_marker: "A_MARKER_THIS_GUEST_NEVER_PRINTS".into(),
        timeout_seconds: 2,
    });
    client.put_vm(req).await.expect("put");
    let timed_out = wait_for(&agent, "late", "readiness timed out", |s| {
        s.readiness_timed_out
    })
    .await;
    assert_eq!(phase(&timed_out), Phase::Running, "the VM keeps running");
    assert!(!timed_out.guest_ready);
    assert!(
        timed_out.message.contains("within 2s"),
        "message: {}",
        timed_out.message
    );
    client.delete_vm("late").await.expect("delete");
    wait_gone(&agent, "late").await;
}

/// `GET /` on 127.0.0.1:`port`; the response, or the error of this attempt.
async fn http_get(port: u32) -> std::io::Result<String> {
    let port = u16::try_from(port).map_err(std::io::Error::other)?;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: guest\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(std::io::Error::other)??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The guest's page through `port`, retried until it answers (the guest may start its server
/// after printing the marker).
async fn answer_through(agent: &Agent, port: u32) -> String {
    let deadline = Instant::now() + harness::BOOT_TIMEOUT;
    loop {
        match http_get(port).await {
            Ok(text) if text.contains("QUIVER_GUEST_HTTP") => return text,
            other => assert!(
                Instant::now() < deadline,
                "no answer through port {port}: {other:?}\n{}",
                agent.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_http_server_answers_through_a_user_network_port_forward() {
    if guest().is_none() {
        return;
    }
    let mut agent = Agent::start().await;
    let client = agent.client().await;
    let mut req = put_request("web", 1, RunStrategy::Always);
    spec_mut(&mut req).network = Some(proto::Network {
        mode: "user".into(),
        port_forwards: vec![proto::PortForward {
            name: "http".into(),
            protocol: proto::Protocol::Tcp as i32,
            guest_port: 80,
            host_port: 0,
        }],
    });
    client.put_vm(req).await.expect("put");
    let running = wait_for(&agent, "web", "running", is_running_ready).await;
    let forward = running
        .port_forwards
        .first()
        .expect("forward reported")
        .clone();
    assert_eq!(
        (
            forward.name.as_str(),
            forward.guest_port,
            forward.host_ip.as_str()
        ),
        ("http", 80, "127.0.0.1")
    );
    assert_ne!(forward.host_port, 0, "the agent picked a port");

    let body = answer_through(&agent, forward.host_port).await;
    assert!(body.starts_with("HTTP/1."), "{body}");

    // A restarted agent re-adopts the VM and still reports the port QEMU listens on.
    agent.kill9();
    agent.restart().await;
    let adopted = wait_for(&agent, "web", "re-adopted", is_running_ready).await;
    assert_eq!(
        (adopted.pid, adopted.port_forwards.clone()),
        (running.pid, vec![forward.clone()])
    );
    answer_through(&agent, forward.host_port).await;

    let client = agent.client().await;
    client.delete_vm("web").await.expect("delete");
    wait_gone(&agent, "web").await;
    let gone = http_get(forward.host_port).await;
    assert!(gone.is_err(), "the forward outlived its VM: {gone:?}");
}
