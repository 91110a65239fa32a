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
        let status = actor.status();
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
