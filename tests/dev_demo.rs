//! The README's main command, `quiver-operator dev --demo` (what `scripts/demo.sh` runs after
//! building): the dev control plane, the operator and an agent, the demo VM of
//! `examples/microvm.yaml` applied once its host is Ready, booted to GuestReady, and everything
//! stopped, no QEMU left running. Real QEMU; skipped without the guest image, whose default
//! path the example names.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use quiver_tests::cluster::{agent_binary, guest_dir, operator_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_boots_its_vm_on_a_ready_host_and_leaves_nothing_running() -> anyhow::Result<()> {
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    if guest != Path::new("/var/lib/quiver/guest") {
        eprintln!(
            "SKIPPED: examples/microvm.yaml names /var/lib/quiver/guest, not {}",
            guest.display()
        );
        return Ok(());
    }
    let state = tempfile::tempdir()?;
    let listen = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let run = tokio::process::Command::new(operator_binary()?)
        .arg("dev")
        .arg("--demo")
        .args(["--demo-timeout", "120"])
        .args(["--listen", &listen.to_string()])
        .arg("--kubeconfig")
        .arg(state.path().join("kubeconfig"))
        .arg("--state-dir")
        .arg(state.path())
        .arg("--agent-bin")
        .arg(agent_binary()?)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!(
        "{stdout}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "dev --demo failed:\n{all}");
    for line in [
        "hosts Ready after",
        "applied examples/microvm.yaml",
        "guest ready",
        "no QEMU left running",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{all}");
    }
    // The VM went on a Ready host, so its status never says otherwise.
    assert!(!stdout.contains("is not Ready"), "{all}");
    Ok(())
}
