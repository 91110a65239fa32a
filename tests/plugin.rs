//! `kubectl-quiver`, the built binary, against the dev control plane with real agents: what
//! it prints, and that each command changes the fields `kubectl` then shows.
//!
//! The VM, host and rollout commands run on agents with the simulated driver (what is under
//! test is the plugin and the control plane); the console boots the test guest in QEMU.

use std::path::Path;
use std::time::Duration;

use quiver_rpc::TransportMode;
use quiver_tests::cluster::{TestCluster, guest_dir};
use quiver_tests::plugin::Plugin;
use quiver_tests::vm::{BOOT, qemu_lock};
use quiver_tests::{Kubectl, eventually};

const WAIT: Duration = Duration::from_secs(60);

fn plugin(cluster: &TestCluster) -> anyhow::Result<Plugin> {
    Plugin::new(cluster.control_plane.kubeconfig_path())
}

async fn field(k: &Kubectl, kind: &str, name: &str, path: &str) -> anyhow::Result<String> {
    k.run(&["get", kind, name, "-o", &format!("jsonpath={{{path}}}")])
        .await
}

/// The row of `name` in a table, split into cells.
fn row_of(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_list_stop_start_and_restart_change_the_run_strategy() -> anyhow::Result<()> {
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let cluster = TestCluster::start_simulated(1).await?;
    let k = cluster.kubectl();
    let p = plugin(&cluster)?;
    cluster.apply_vm(&guest, "demo", "").await?;
    // READY is GuestReady, which follows Running.
    k.wait_vm("demo", "Running and guest ready", WAIT, |v| {
        v.phase == "Running" && v.guest_ready.0 == "True"
    })
    .await?;

    let table = p.run(&["vm", "list"]).await?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "PHASE", "HOST", "READY", "EPOCH", "AGE"]);
    let row = row_of(&table, "demo");
    assert_eq!(row[1..5], ["Running", "agent-0", "True", "1"], "{table}");
    let all = p.run(&["vm", "list", "-A"]).await?;
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(all.contains("default") && all.contains("demo"), "{all}");
    let other = p.run(&["-n", "elsewhere", "vm", "list"]).await?;
    assert_eq!(other.trim(), "No resources found.");

    let out = p.run(&["vm", "stop", "demo"]).await?;
    assert!(out.contains("spec.runStrategy: Halted"), "{out}");
    assert_eq!(
        field(&k, "mvm", "demo", ".spec.runStrategy").await?,
        "Halted"
    );
    k.wait_vm_phase("demo", "Stopped", WAIT).await?;
    let row = row_of(&p.run(&["vm", "list"]).await?, "demo");
    assert_eq!(row[1], "Stopped");

    p.run(&["vm", "start", "demo"]).await?;
    assert_eq!(
        field(&k, "mvm", "demo", ".spec.runStrategy").await?,
        "Always"
    );
    k.wait_vm_phase("demo", "Running", WAIT).await?;

    // Restart passes through Stopped and puts the strategy back.
    let out = p.run(&["vm", "restart", "demo", "--timeout", "60"]).await?;
    assert!(
        out.contains("stopping") && out.contains("starting"),
        "{out}"
    );
    assert_eq!(
        field(&k, "mvm", "demo", ".spec.runStrategy").await?,
        "Always"
    );
    k.wait_vm_phase("demo", "Running", WAIT).await?;
    p.run(&["vm", "stop", "demo"]).await?;
    let err = p.fail(&["vm", "restart", "demo"]).await?;
    assert!(
        err.contains("is Halted") && err.contains("vm start"),
        "{err}"
    );

    // The writes belong to the plugin's own field manager.
    let managed = k
        .run(&["get", "mvm", "demo", "-o", "json", "--show-managed-fields"])
        .await?;
    assert!(
        managed.contains("\"manager\":\"kubectl-quiver\"")
            || managed.contains("\"manager\": \"kubectl-quiver\""),
        "{managed}"
    );
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_list_watch_prints_a_row_for_each_change() -> anyhow::Result<()> {
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let cluster = TestCluster::start_simulated(1).await?;
    let k = cluster.kubectl();
    let p = plugin(&cluster)?;
    let mut watch = p.command(&["vm", "list", "-w"]).spawn()?;
    let stdout = watch.stdout.take().expect("piped");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    cluster.apply_vm(&guest, "watched", "").await?;
    k.wait_vm_phase("watched", "Running", WAIT).await?;
    let seen = tokio::time::timeout(WAIT, async {
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await? {
            let running = line.contains("watched") && line.contains("Running");
            seen.push(line);
            if running {
                return anyhow::Ok(seen);
            }
        }
        anyhow::bail!("watch ended: {seen:?}")
    })
    .await??;
    assert!(seen[0].starts_with("NAME"), "{seen:?}");
    watch.kill().await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_objects_and_kubeconfig_give_one_line_and_exit_1() -> anyhow::Result<()> {
    let cluster = TestCluster::start_simulated(1).await?;
    let p = plugin(&cluster)?;
    for (args, expect) in [
        (
            &["vm", "stop", "nope"][..],
            "MicroVM default/nope not found",
        ),
        (
            &["-n", "other", "vm", "start", "nope"][..],
            "MicroVM other/nope not found",
        ),
        (
            &["vm", "restart", "nope"][..],
            "MicroVM default/nope not found",
        ),
        (&["vm", "console", "nope"][..], "not found"),
        (&["host", "cordon", "nope"][..], "Host nope not found"),
        (
            &["rollout", "pause", "nope"][..],
            "Rollout default/nope not found",
        ),
        (
            &["rollout", "retry", "nope"][..],
            "Rollout default/nope not found",
        ),
        (
            &["rollout", "get", "nope"][..],
            "Rollout default/nope not found",
        ),
    ] {
        let err = p.fail(args).await?;
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let missing = Plugin {
        kubeconfig: "/nonexistent/kubeconfig".into(),
        ..p.clone()
    };
    let err = missing.fail(&["vm", "list"]).await?;
    assert_eq!(
        err.trim(),
        "error: kubeconfig not found: /nonexistent/kubeconfig (set --kubeconfig or KUBECONFIG)"
    );
    let err = p.fail(&["--context", "nosuch", "vm", "list"]).await?;
    assert!(err.contains("nosuch"), "{err}");
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_uncordon_and_drain_set_the_host_fields_and_drain_moves_the_vm() -> anyhow::Result<()>
{
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let cluster = TestCluster::start_simulated(2).await?;
    let k = cluster.kubectl();
    let p = plugin(&cluster)?;
    cluster.wait_host_ready("agent-0").await?;
    cluster.wait_host_ready("agent-1").await?;
    cluster.apply_vm(&guest, "mover", "").await?;
    let first = k.wait_vm_phase("mover", "Running", WAIT).await?.host;
    let other = if first == "agent-0" {
        "agent-1"
    } else {
        "agent-0"
    };

    let table = p.run(&["host", "list"]).await?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "ROLE", "VMS", "SCHEDULING", "AGE"]
    );
    assert_eq!(row_of(&table, &first)[4], "Schedulable", "{table}");

    p.run(&["host", "cordon", &first]).await?;
    assert_eq!(
        field(&k, "qh", &first, ".spec.unschedulable").await?,
        "true"
    );
    assert_eq!(
        row_of(&p.run(&["host", "list"]).await?, &first)[4],
        "Cordoned"
    );
    // The agent's own apply of its spec does not own the field: ours does.
    let managed = k
        .run(&["get", "qh", &first, "-o", "json", "--show-managed-fields"])
        .await?;
    let host: serde_json::Value = serde_json::from_str(&managed)?;
    let owner = host["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["fieldsV1"]["f:spec"].get("f:unschedulable").is_some())
        .and_then(|m| m["manager"].as_str())
        .map(str::to_owned);
    assert_eq!(owner.as_deref(), Some("kubectl-quiver"), "{managed}");

    p.run(&["host", "uncordon", &first]).await?;
    assert_eq!(
        field(&k, "qh", &first, ".spec.unschedulable").await?,
        "false"
    );
    assert_eq!(
        row_of(&p.run(&["host", "list"]).await?, &first)[4],
        "Schedulable"
    );

    let out = p.run(&["host", "drain", &first, "--timeout", "60"]).await?;
    assert!(out.contains(&format!("host {first} drained")), "{out}");
    assert!(
        out.contains("default/mover"),
        "progress names the VM: {out}"
    );
    assert_eq!(field(&k, "qh", &first, ".spec.drain").await?, "true");
    let moved = k.wait_vm_phase("mover", "Running", WAIT).await?;
    assert_eq!(moved.host, other);
    assert_eq!(
        row_of(&p.run(&["host", "list"]).await?, &first)[4],
        "Draining"
    );

    p.run(&["host", "uncordon", &first]).await?;
    assert_eq!(field(&k, "qh", &first, ".spec.drain").await?, "false");
    assert_eq!(
        field(&k, "qh", &first, ".spec.unschedulable").await?,
        "false"
    );
    // --no-wait returns at once, even with a VM still there.
    let out = p.run(&["host", "drain", other, "--no-wait"]).await?;
    assert_eq!(out.trim(), format!("host.quiver.dev/{other} draining"));
    assert_eq!(field(&k, "qh", other, ".spec.drain").await?, "true");
    cluster.shutdown().await;
    Ok(())
}

const ROLLOUT: &str = "apiVersion: quiver.dev/v1alpha1
kind: Rollout
metadata:
  name: to-iroh
  namespace: default
spec:
  target:
    default: iroh
  steps:
  - setWeight: 25
  - pause: {}
  - setWeight: 100
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_commands_write_the_documented_fields() -> anyhow::Result<()> {
    // The operator reaches the agent over both transports: the rollout moves it to Iroh.
    let cluster = TestCluster::start_with(1, true, TransportMode::Dual).await?;
    let k = cluster.kubectl();
    let p = plugin(&cluster)?;
    k.run_with_stdin(&["apply", "-f", "-"], Some(ROLLOUT))
        .await?;
    let spec = |path: &'static str| {
        let k = k.clone();
        async move { field(&k, "qro", "to-iroh", path).await }
    };

    p.run(&["rollout", "pause", "to-iroh"]).await?;
    assert_eq!(spec(".spec.paused").await?, "true");
    p.run(&["rollout", "resume", "to-iroh"]).await?;
    assert_eq!(spec(".spec.paused").await?, "false");

    p.run(&["rollout", "abort", "to-iroh"]).await?;
    assert_eq!(spec(".spec.abort").await?, "true");
    let out = p.run(&["rollout", "retry", "to-iroh"]).await?;
    assert!(out.contains("spec.retry: 1"), "{out}");
    assert_eq!(spec(".spec.retry").await?, "1");
    assert_eq!(spec(".spec.abort").await?, "false");
    p.run(&["rollout", "retry", "to-iroh"]).await?;
    assert_eq!(spec(".spec.retry").await?, "2");

    let out = p.run(&["rollout", "promote", "to-iroh"]).await?;
    assert!(out.contains("spec.promoteStep: 1"), "{out}");
    assert_eq!(spec(".spec.promoteStep").await?, "1");
    p.run(&["rollout", "promote", "to-iroh", "--full"]).await?;
    assert_eq!(spec(".spec.promote").await?, "true");

    // The live view shows what the controller writes: promoted fully, the one host moved.
    let view = eventually(Duration::from_secs(60), "rollout Completed", || async {
        let view = p.run(&["rollout", "get", "to-iroh"]).await?;
        Ok(view.contains("Completed").then_some(view))
    })
    .await?;
    for expect in [
        "Step:         3/3",
        &"#".repeat(30),
        "100%",
        "agent-0",
        "promote",
        "promoteStep=1 (observed 1)",
    ] {
        assert!(view.contains(expect), "{expect}: {view}");
    }
    cluster.shutdown().await;
    Ok(())
}

/// `--pki-dir` for a test cluster: the operator's client certificate is in `<it>/operator/`.
fn pki_dir(cluster: &TestCluster) -> &Path {
    cluster
        .operator_tls
        .ca
        .parent()
        .and_then(Path::parent)
        .expect("pki dir")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_the_guest_and_types_into_it_until_ctrl_close_bracket() -> anyhow::Result<()>
{
    let _serial = qemu_lock().await;
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let mut cluster = TestCluster::start_over(1, quiver_rpc::TransportMode::Grpc).await?;
    let k = cluster.kubectl();
    let p = plugin(&cluster)?;
    cluster.apply_vm(&guest, "con", "").await?;
    k.wait_ready("con", BOOT).await?;
    let pki = pki_dir(&cluster).display().to_string();

    let out = p
        .run(&["vm", "console", "con", "--no-follow", "--pki-dir", &pki])
        .await?;
    assert!(out.contains("QUIVER_GUEST_READY"), "{out}");

    // Following, with stdin a pipe: the console stays open until Ctrl-] arrives.
    let mut cmd = p.command(&["vm", "console", "con", "--pki-dir", &pki]);
    let mut child = cmd.stdin(std::process::Stdio::piped()).spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let mut reader = tokio::io::BufReader::new(stdout);
    let mut seen = String::new();
    tokio::time::timeout(WAIT, async {
        use tokio::io::AsyncBufReadExt as _;
        while !seen.contains("QUIVER_GUEST_READY") {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                anyhow::bail!("console ended early: {seen}");
            }
            seen.push_str(&line);
        }
        anyhow::Ok(())
    })
    .await??;
    // What the pipe carries is typed into the guest's shell, which answers.
    use tokio::io::AsyncWriteExt as _;
    stdin.write_all(b"echo $((6 * 7))-piped\n").await?;
    tokio::time::timeout(WAIT, async {
        use tokio::io::AsyncBufReadExt as _;
        while !seen.contains("\n42-piped") {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                anyhow::bail!("console ended early: {seen}");
            }
            seen.push_str(&line);
        }
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer to the piped command: {seen}"))??;
    assert!(
        child.try_wait()?.is_none(),
        "other input does not end the console"
    );
    stdin.write_all(&[0x1d]).await?;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await??;
    assert!(status.success(), "{status}");

    // On a terminal: raw mode while it runs, typed keys reach the guest (Ctrl-C too, which
    // does not end the console), Ctrl-] ends it, and the terminal is restored.
    tmux_console(&p, &pki).await?;

    let err = p
        .fail(&["vm", "console", "con", "--pki-dir", "/nonexistent"])
        .await?;
    assert!(err.contains("/nonexistent/operator/ca.pem"), "{err}");

    // A dead agent: one line naming the host and its address.
    cluster.kill_agent("agent-0").await?;
    let err = p.fail(&["vm", "console", "con", "--pki-dir", &pki]).await?;
    assert!(
        err.contains("agent of Host agent-0 at 127.0.0.1:") && err.contains("unreachable"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    cluster.restart_agent("agent-0").await?;
    cluster.shutdown().await;
    Ok(())
}

/// Runs `vm console con` in a tmux pane, checks the pane's terminal is raw while it shows the
/// guest's marker, types a command and sees the guest's echo and answer, sends Ctrl-C (to the
/// guest: the console stays), then Ctrl-], and checks that it exits 0 and the terminal is
/// cooked again. Skipped (with a note) when tmux is not installed.
async fn tmux_console(p: &Plugin, pki: &str) -> anyhow::Result<()> {
    // A server of its own per call: the previous call's server may still be exiting, and a
    // new session on its socket then fails with "server exited unexpectedly".
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let socket = format!("quiver-plugin-test-{}-{call}", std::process::id());
    let tmux = |args: &[&str]| {
        let mut cmd = std::process::Command::new("tmux");
        cmd.arg("-L").arg(&socket).args(args);
        cmd.output()
    };
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED the terminal half: tmux is not installed");
        return Ok(());
    }
    let script = format!(
        "{} --kubeconfig {} vm console con --pki-dir {pki}; echo EXIT=$?; sleep 600",
        p.binary.display(),
        p.kubeconfig.display()
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        "console",
        "-x",
        "160",
        "-y",
        "40",
        &script,
    ])?;
    anyhow::ensure!(
        started.status.success(),
        "tmux: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let result = async {
        let pane = || -> anyhow::Result<String> {
            let out = tmux(&["capture-pane", "-p", "-t", "console", "-S", "-200"])?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let tty =
            String::from_utf8(tmux(&["display", "-p", "-t", "console", "#{pane_tty}"])?.stdout)?;
        let stty = || -> anyhow::Result<String> {
            let out = std::process::Command::new("stty")
                .args(["-a", "-F", tty.trim()])
                .output()?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let flags =
            |all: &str| -> Vec<String> { all.split_whitespace().map(str::to_owned).collect() };
        quiver_tests::eventually(WAIT, "the marker in the tmux pane", || async {
            Ok(pane()?.contains("QUIVER_GUEST_READY").then_some(()))
        })
        .await?;
        let raw = flags(&stty()?);
        assert!(
            raw.contains(&"-icanon".to_owned()) && raw.contains(&"-echo".to_owned()),
            "{raw:?}"
        );
        // Typed as a user would: the line, then Enter.
        tmux(&["send-keys", "-t", "console", "-l", "echo $((6 * 7))-typed"])?;
        tmux(&["send-keys", "-t", "console", "Enter"])?;
        quiver_tests::eventually(WAIT, "the echo and the answer in the pane", || async {
            let text = pane()?;
            Ok(
                (text.contains("echo $((6 * 7))-typed") && text.contains("\n42-typed"))
                    .then_some(()),
            )
        })
        .await?;
        tmux(&["send-keys", "-t", "console", "C-c"])?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = pane()?;
        anyhow::ensure!(!text.contains("EXIT="), "Ctrl-C ended the console: {text}");
        tmux(&["send-keys", "-t", "console", "C-]"])?;
        quiver_tests::eventually(
            Duration::from_secs(10),
            "EXIT=0 in the tmux pane",
            || async {
                let text = pane()?;
                anyhow::ensure!(!text.contains("EXIT=1"), "{text}");
                Ok(text.contains("EXIT=0").then_some(()))
            },
        )
        .await?;
        let cooked = flags(&stty()?);
        assert!(
            cooked.contains(&"icanon".to_owned()) && cooked.contains(&"echo".to_owned()),
            "{cooked:?}"
        );
        anyhow::Ok(())
    }
    .await;
    let _ = tmux(&["kill-server"]);
    result
}
