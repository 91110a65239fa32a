//! Recovery after an agent restart: every run dir becomes an actor again.
//!
//! This module only measures (reads the run dir, asks the driver whether the VM's QEMU is
//! alive) and hands the finding to the VM's lifecycle as [`Event::Recovered`]; what to do
//! about it (watch, stop, fail, restart, remove) is decided by the pure state machine.

use super::actor::{Actor, Msg};
#[cfg(doc)]
use super::lifecycle::Event;
use super::lifecycle::Lifecycle;
use super::manager::VmManager;
use super::process;
use super::record::{SpecFile, StateFile};
use super::rundir::RunDir;
use super::shared::Entry;
use crate::{Error, Result};

impl VmManager {
    /// Loads every VM from the data dir: re-adopts live QEMUs, reports dead ones Failed (and
    /// restarts them per run strategy). Returns how many VMs were found.
    pub async fn recover(&self) -> Result<usize> {
        let vms_dir = self.shared.data_dir.join("vms");
        let entries = match std::fs::read_dir(&vms_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(&vms_dir, e)),
        };
        let mut found = 0;
        for entry in entries.flatten() {
            let dir = RunDir::at(entry.path());
            match self.recover_one(dir.clone()).await {
                Ok(()) => found += 1,
                // A put that crashed before its spec was written; nothing can run from it.
                Err(e) if dir.read_pid().is_none_or(|pid| !process::alive(pid)) => {
                    tracing::warn!(dir = %dir.root().display(), error = %e, "removing unusable run dir");
                    let _ = dir.remove();
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.root().display(), error = %e, "skipping run dir");
                }
            }
        }
        Ok(found)
    }

    async fn recover_one(&self, dir: RunDir) -> Result<()> {
        let file: SpecFile = dir.read_json(&dir.spec_file())?;
        let state: StateFile = dir
            .read_json(&dir.state_file())
            .unwrap_or_else(|_| StateFile {
                lifecycle: Lifecycle::new(file.spec.run_strategy),
                ..StateFile::default()
            });
        let launched = if state.lifecycle.may_have_process() {
            self.shared.driver.adopt(&dir).await
        } else {
            None
        };
        match &launched {
            Some(l) => {
                tracing::info!(uid = %file.meta.uid, pid = l.pid, "found the VM's QEMU alive");
            }
            None if state.lifecycle.may_have_process() => {
                tracing::warn!(uid = %file.meta.uid, "VM died while the agent was down");
            }
            None => {}
        }
        let deleting = state.lifecycle.deleting;
        let (meta, spec) = (file.meta.clone(), file.spec.clone());
        let (actor, tx) = Actor::new(self.shared.clone(), dir, file, state);
        // What the run dir recorded, until the actor has handled `Recovered`: the guest's
        // readiness is then detected again (a dead QEMU's guest is not ready, and even an
        // adopted one's marker is searched anew), so it must not be reported meanwhile.
        let mut status = actor.status();
        status.guest_ready = false;
        tx.send(Msg::Recovered { launched })
            .map_err(|_| Error::ShuttingDown)?;
        let uid = meta.uid.clone();
        self.shared.vms().insert(
            uid,
            Entry {
                tx,
                meta,
                spec,
                deleting,
                status,
            },
        );
        tokio::spawn(actor.run());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::SimulatedConfig;
    use crate::vm::ImageRoots;
    use crate::vm::lifecycle::Phase;
    use crate::vm::manager::ManagerConfig;
    use crate::vm::network::Network;
    use crate::vm::simulated::SimulatedDriver;
    use crate::vm::spec::{Limits, RunStrategy, VmMeta, VmSpec};

    /// A VM whose run dir says it ran with its guest ready, found again after a restart of the
    /// agent: until recovery has looked at its process, it is not reported ready.
    #[tokio::test]
    async fn a_recovered_vm_is_not_reported_ready_before_its_readiness_is_seen_again() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = RunDir::new(data.path(), "vm-1");
        dir.create().expect("run dir");
        let spec = VmSpec {
            run_strategy: RunStrategy::Always,
            cpus: 1,
            memory_mib: 64,
            kernel: "/k".into(),
            initrd: None,
            cmdline: String::new(),
            disks: vec![],
            network: Network::None,
            readiness: None,
        };
        let meta = VmMeta {
            uid: "vm-1".into(),
            namespace: "default".into(),
            name: "vm".into(),
            generation: 1,
            epoch: 1,
        };
        dir.write_json(&dir.spec_file(), &SpecFile { meta, spec })
            .expect("spec");
        let mut state = StateFile {
            lifecycle: Lifecycle::new(RunStrategy::Always),
            ..StateFile::default()
        };
        state.lifecycle.phase = Phase::Running;
        state.lifecycle.guest_ready = true;
        dir.write_json(&dir.state_file(), &state).expect("state");

        let manager = VmManager::new(
            Arc::new(SimulatedDriver::new(SimulatedConfig::default())),
            ManagerConfig {
                data_dir: data.path().to_owned(),
                host: "test-host".into(),
                limits: Limits {
                    max_cpus: 4,
                    max_memory_mib: 4096,
                },
                stop_grace: Duration::from_secs(1),
                image_roots: ImageRoots::new(vec![PathBuf::from("/")]),
                forward_address: std::net::Ipv4Addr::LOCALHOST.into(),
            },
        );
        assert_eq!(manager.recover().await.expect("recover"), 1);
        let status = manager.get("vm-1").expect("recovered");
        assert!(!status.guest_ready, "{status:?}");
    }
}
