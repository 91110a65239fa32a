//! The operator and an agent run under exactly the Helm chart's RBAC: the real helm installs
//! `charts/quiver` into the dev control plane (ServiceAccounts, ClusterRoles, Roles and their
//! bindings), each gets a token from the TokenRequest API of its ServiceAccount, and
//! `quiver-operator run` (calling agents over Iroh first) and `quiver-agent` use those tokens: the
//! agent admits the operator by the endpoint id the operator publishes. A MicroVM then boots end to end
//! (real QEMU and guest; the simulated driver only without the guest image). Taking one grant out of the operator's ClusterRole makes the operator
//! fail with the 403 Kubernetes would give, naming the verb and the resource.
//!
//! Needs helm (see [`quiver_tests::helm`]): skipped without it unless `QUIVER_REQUIRE_HELM` is
//! set.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use quiver_rpc::TransportMode;
use quiver_tests::cluster::{TestCluster, guest_dir, operator_binary, vm_manifest};
use quiver_tests::helm::{self, Helm};
use quiver_tests::{eventually, repo_root};

const NAMESPACE: &str = "quiver-system";
const WAIT: Duration = Duration::from_secs(60);

/// A MicroVM booting the test guest, or a record on the simulated driver without the image.
fn vm(guest: Option<&Path>, name: &str) -> String {
    match guest {
        Some(guest) => vm_manifest(guest, name, ""),
        None => format!(
            "apiVersion: quiver.dev/v1alpha1\nkind: MicroVM\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  cpus: 1\n  memoryMiB: 128\n  kernel: /var/lib/quiver/guest/vmlinuz\n"
        ),
    }
}

/// A kubeconfig for the control plane that authenticates with the token of ServiceAccount
/// `quiver-system/<account>`.
async fn service_account_kubeconfig(
    cluster: &TestCluster,
    account: &str,
    path: &Path,
) -> anyhow::Result<PathBuf> {
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let answer = accounts
        .create_token_request(account, &PostParams::default(), &TokenRequest::default())
        .await?;
    let token = answer
        .status
        .map(|s| s.token)
        .ok_or_else(|| anyhow::anyhow!("no token for {account}"))?;
    let server = &cluster.control_plane.server;
    let yaml = quiver_apiserver::kubeconfig_yaml(&server.url(), &token, server.ca_pem());
    std::fs::write(path, yaml)?;
    Ok(path.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_and_agent_run_under_the_charts_rbac_and_a_missing_grant_is_a_403()
-> anyhow::Result<()> {
    if !helm::available() {
        return Ok(());
    }
    // A real guest when the image is there (the test command requires it), so the VM runs end
    // to end, QEMU included, under the chart's grants.
    let guest = guest_dir();
    let _qemu = quiver_tests::vm::qemu_lock().await;
    let mut cluster = TestCluster::start_with(0, guest.is_none(), TransportMode::Grpc).await?;
    cluster.stop_operator().await;
    let dir = cluster.state.path().to_owned();
    let k = cluster.kubectl();
    let chart = repo_root().join("charts/quiver");
    Helm::new(&cluster.control_plane.kubeconfig_path(), &dir.join("helm"))
        .run(&[
            "install",
            "quiver",
            &chart.to_string_lossy(),
            "-n",
            NAMESPACE,
            "--create-namespace",
            // The test cluster installed the CRDs already (field manager quiver-dev).
            "--skip-crds",
        ])
        .await?;
    let operator_config = service_account_kubeconfig(
        &cluster,
        "quiver-operator",
        &dir.join("operator.kubeconfig"),
    )
    .await?;
    let agent_config =
        service_account_kubeconfig(&cluster, "quiver-agent", &dir.join("agent.kubeconfig")).await?;

    // The agent registers its Host with its ServiceAccount's token, and forms its Raft group
    // with the ConfigMap in the release namespace, as the chart's agent config says.
    cluster.set_agent_kubeconfig(agent_config);
    let agent_file = dir.join("agent.yaml");
    std::fs::write(&agent_file, format!("raft:\n  namespace: {NAMESPACE}\n"))?;
    let agent_file = agent_file.to_string_lossy().into_owned();
    cluster
        .add_agent_with("agent-0", None, &["--config", &agent_file])
        .await?;

    let log_path = dir.join("operator.log");
    let mut operator = tokio::process::Command::new(operator_binary()?)
        .args([
            "run",
            "--identity",
            "chart-rbac",
            "--metrics-address",
            "127.0.0.1:0",
        ])
        .arg("--pki-dir")
        .arg(dir.join("operator-pki"))
        .arg("--iroh-key")
        .arg(dir.join("operator-iroh.key"))
        // Iroh first: the agent must admit the operator by the endpoint id it publishes.
        .args(["--transport", "dual"])
        .env("KUBECONFIG", &operator_config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log_path)?))
        .kill_on_drop(true)
        .spawn()?;
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    k.apply(&vm(guest.as_deref(), "allowed")).await?;
    let ran = if guest.is_some() {
        k.wait_vm("allowed", "GuestReady", WAIT, |v| v.guest_ready.0 == "True")
            .await
    } else {
        k.wait_vm("allowed", "Running", WAIT, |v| v.phase == "Running")
            .await
    };
    assert!(ran.is_ok(), "{ran:?}\noperator log:\n{}", log());
    assert!(
        !log().contains("forbidden"),
        "no 403 with the chart's grants:\n{}",
        log()
    );
    // The agent, with its ServiceAccount's token, follows the ConfigMap the operator publishes
    // its endpoint id in, and admits that id.
    let agent_log = || std::fs::read_to_string(dir.join("agent-0/agent.log")).unwrap_or_default();
    eventually(WAIT, "the agent admitting the operator's id", || async {
        Ok(agent_log()
            .contains("admitting the operator's endpoint id")
            .then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nagent log:\n{}", agent_log()))?;
    assert!(
        !agent_log().to_lowercase().contains("forbidden"),
        "no 403 for the agent with the chart's grants:\n{}",
        agent_log()
    );

    // Without the grant to write MicroVM status, the operator is refused, in Kubernetes' words.
    let roles: Api<ClusterRole> = Api::all(cluster.client.clone());
    let mut role = roles.get("quiver-operator").await?;
    let rules = role.rules.get_or_insert_with(Vec::new);
    let before = rules.len();
    rules.retain(|r| {
        !r.resources
            .as_ref()
            .is_some_and(|rs| rs.iter().any(|x| x == "microvms/status"))
    });
    assert_eq!(rules.len(), before - 1, "the chart grants microvms/status");
    role.metadata.managed_fields = None;
    roles
        .patch(
            "quiver-operator",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"rules": role.rules})),
        )
        .await?;
    k.apply(&vm(guest.as_deref(), "denied")).await?;
    let wanted = "cannot patch resource \\\"microvms/status\\\" in API group \\\"quiver.dev\\\"";
    let plain = wanted.replace('\\', "");
    eventually(WAIT, "a 403 in the operator's log", || async {
        let text = log();
        Ok((text.contains(wanted) || text.contains(&plain)).then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\noperator log:\n{}", log()))?;
    let refusal = log()
        .lines()
        .find(|l| l.contains("microvms/status"))
        .unwrap_or_default()
        .to_owned();
    println!("the operator's refusal: {refusal}");
    assert!(refusal.contains("forbidden"), "{refusal}");
    let denied = k.vm("denied").await?;
    assert_eq!(denied.phase, "", "no status without the grant: {denied:?}");
    let _ = operator.kill().await;
    cluster.shutdown().await;
    Ok(())
}
