//! A MicroVM as a user sees it through the real kubectl, and waits on what they would wait
//! for: `kubectl.wait_ready("web", BOOT)`, `kubectl.wait_vm_phase("web", "Stopped", t)`.

use std::time::Duration;

use anyhow::Context as _;

use crate::{Kubectl, eventually};

/// How long a TCG guest may take to boot on a loaded 2-core machine.
pub const BOOT: Duration = Duration::from_secs(120);

/// Serializes tests that boot QEMU guests within one test binary: the machine has few cores.
pub async fn qemu_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// One MicroVM's status fields, as `kubectl get mvm <name> -o json` shows them; empty strings
/// for what is not set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmView {
    pub phase: String,
    pub host: String,
    pub message: String,
    /// `(status, reason)` of each condition.
    pub scheduled: (String, String),
    pub ready: (String, String),
    /// What the READY column of `kubectl get mvm` shows.
    pub guest_ready: (String, String),
}

impl VmView {
    fn from_json(vm: &serde_json::Value) -> Self {
        let status = &vm["status"];
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        let condition = |type_: &str| {
            status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == type_)
                .map(|c| (text(&c["status"]), text(&c["reason"])))
                .unwrap_or_default()
        };
        VmView {
            phase: text(&status["phase"]),
            host: text(&status["host"]),
            message: text(&status["message"]),
            scheduled: condition("Scheduled"),
            ready: condition("Ready"),
            guest_ready: condition("GuestReady"),
        }
    }

    /// Running with the guest ready: what `kubectl get mvm` shows as `Running ... True`.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.phase == "Running" && self.guest_ready.0 == "True"
    }
}

impl Kubectl {
    /// `kubectl apply -f -` of `manifest`.
    pub async fn apply(&self, manifest: &str) -> anyhow::Result<()> {
        self.run_with_stdin(&["apply", "-f", "-"], Some(manifest))
            .await
            .map(drop)
    }

    /// The MicroVM `name` in namespace `default`.
    pub async fn vm(&self, name: &str) -> anyhow::Result<VmView> {
        let json = self.run(&["get", "mvm", name, "-o", "json"]).await?;
        let value: serde_json::Value =
            serde_json::from_str(&json).with_context(|| format!("parsing mvm {name}"))?;
        Ok(VmView::from_json(&value))
    }

    /// Waits until `name` satisfies `done`; `what` names the wait in the error.
    pub async fn wait_vm(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&VmView) -> bool,
    ) -> anyhow::Result<VmView> {
        let last = std::sync::Mutex::new(VmView::default());
        let waited = eventually(timeout, &format!("mvm {name} {what}"), || async {
            let view = self.vm(name).await?;
            let mut seen = last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *seen != view {
                eprintln!(
                    "  {name}: {} on {:?}: {}",
                    view.phase, view.host, view.message
                );
                seen.clone_from(&view);
            }
            Ok(done(&view).then_some(view))
        })
        .await;
        let last = last.into_inner().unwrap_or_default();
        waited.with_context(|| format!("last seen: {last:?}"))
    }

    /// Waits until `name` is in `phase`.
    pub async fn wait_vm_phase(
        &self,
        name: &str,
        phase: &str,
        timeout: Duration,
    ) -> anyhow::Result<VmView> {
        self.wait_vm(name, &format!("to be {phase}"), timeout, |v| {
            v.phase == phase
        })
        .await
    }

    /// Waits until `name` runs with its guest ready.
    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> anyhow::Result<VmView> {
        self.wait_vm(
            name,
            "to be Running with GuestReady",
            timeout,
            VmView::is_ready,
        )
        .await
    }

    /// Reasons of the events.k8s.io/v1 Events about `name`, space-separated (filtered on the
    /// client: the dev control plane's field selectors for that API are in flux).
    pub async fn event_reasons(&self, name: &str) -> anyhow::Result<String> {
        let path = format!(
            r#"jsonpath={{range .items[?(@.regarding.name=="{name}")]}}{{.reason}} {{end}}"#
        );
        self.run(&["get", "events.v1.events.k8s.io", "-o", &path])
            .await
    }

    /// The row of `kubectl get mvm` for `name`.
    pub async fn vm_row(&self, name: &str) -> anyhow::Result<String> {
        let table = self.run(&["get", "mvm", "--no-headers"]).await?;
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(str::to_owned)
            .with_context(|| format!("no row for {name} in:\n{table}"))
    }
}
