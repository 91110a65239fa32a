//! The VM manager: admits puts and deletes and owns one actor per VM. Its streams (watch,
//! console) live in `vm::streams`, recovery after an agent restart in `vm::recovery`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;

use super::actor::{Actor, Msg, Put};
use super::driver::Driver;
use super::images::ImageRoots;
use super::lifecycle::{Event, Lifecycle};
use super::record::{SpecFile, StateFile};
use super::rundir::RunDir;
use super::shared::{Entry, Settings, Shared};
use super::spec::{self, Limits, VmSpec};
use crate::{Error, Result};
use quiver_rpc::proto;

/// What the manager needs to know about its host.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub data_dir: PathBuf,
    pub host: String,
    pub limits: Limits,
    pub stop_grace: Duration,
    /// The only directories kernels, initrds and disk images may come from.
    pub image_roots: ImageRoots,
    /// Where user-network port forwards listen on the host.
    pub forward_address: IpAddr,
}

#[derive(Clone)]
pub struct VmManager {
    pub(crate) shared: Arc<Shared>,
}

impl VmManager {
    pub fn new(driver: Arc<dyn Driver>, config: ManagerConfig) -> Self {
        let settings = Settings {
            data_dir: config.data_dir,
            host: config.host,
            limits: config.limits,
            stop_grace: config.stop_grace,
            image_roots: config.image_roots,
            forward_address: config.forward_address,
        };
        VmManager {
            shared: Arc::new(Shared::new(driver, settings)),
        }
    }

    pub fn driver_name(&self) -> &'static str {
        self.shared.driver.name()
    }

    pub fn accel(&self) -> &'static str {
        self.shared.driver.accel()
    }

    pub fn host(&self) -> &str {
        &self.shared.host
    }

    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// (VM launches, VM failures) since the agent started.
    pub fn counters(&self) -> (u64, u64) {
        let s = &self.shared;
        (
            s.starts.load(Ordering::Relaxed),
            s.failures.load(Ordering::Relaxed),
        )
    }

    /// Fences this host (its lease lapsed) or lifts the fence: while fenced, no VM launches
    /// and every stop kills QEMU at once.
    pub fn set_fenced(&self, fenced: bool) {
        let was = self.shared.fenced.swap(fenced, Ordering::SeqCst);
        if was != fenced {
            tracing::warn!(fenced, "host fence changed");
        }
    }

    #[must_use]
    pub fn fenced(&self) -> bool {
        self.shared.fenced.load(Ordering::SeqCst)
    }

    /// Checks a put as [`VmManager::put`] would on any host, without applying it: everything
    /// but this host's capacity, which the placement ledger weighs against every host's.
    pub fn validate(&self, req: &proto::PutVmRequest) -> Result<()> {
        let any_host = spec::Limits {
            max_cpus: u32::MAX,
            max_memory_mib: u64::MAX,
        };
        spec::validate(req, any_host, &self.shared.image_roots).map(|_| ())
    }

    /// Validates and applies a put. Returns the status after it was applied and whether
    /// anything changed (the same or an older generation in the same epoch is a no-op).
    pub async fn put(&self, req: &proto::PutVmRequest) -> Result<(proto::VmStatus, bool)> {
        let (meta, spec) = spec::validate(req, self.shared.limits, &self.shared.image_roots)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut vms = self.shared.vms();
            if let Some(entry) = vms.get_mut(&meta.uid) {
                if entry.deleting {
                    return Err(Error::Conflict(format!("vm {} is being deleted", meta.uid)));
                }
                if meta.epoch < entry.meta.epoch {
                    let (uid, got, applied) = (meta.uid, meta.epoch, entry.meta.epoch);
                    return Err(Error::StaleEpoch { uid, got, applied });
                }
                // Same or older generation in the same epoch: a retry or a stale writer; never
                // roll the spec back.
                if meta.generation <= entry.meta.generation && meta.epoch == entry.meta.epoch {
                    return Ok((entry.status.clone(), false));
                }
                let respec = !same_machine(&entry.spec, &spec);
                entry.meta = meta.clone();
                entry.spec = spec.clone();
                let put = Box::new(Put { meta, spec, respec });
                let msg = Msg::Put {
                    put,
                    reply: reply_tx,
                };
                entry.tx.send(msg).map_err(|_| Error::ShuttingDown)?;
            } else {
                let dir = RunDir::new(&self.shared.data_dir, &meta.uid);
                dir.create()?;
                let file = SpecFile {
                    meta: meta.clone(),
                    spec: spec.clone(),
                };
                if let Err(e) = dir.write_json(&dir.spec_file(), &file) {
                    let _ = dir.remove();
                    return Err(e);
                }
                let state = StateFile {
                    lifecycle: Lifecycle::new(spec.run_strategy),
                    ..StateFile::default()
                };
                let (actor, tx) = Actor::new(self.shared.clone(), dir, file, state);
                let status = actor.status();
                let put = Box::new(Put {
                    meta: meta.clone(),
                    spec: spec.clone(),
                    respec: false,
                });
                let msg = Msg::Put {
                    put,
                    reply: reply_tx,
                };
                tx.send(msg).map_err(|_| Error::ShuttingDown)?;
                vms.insert(
                    meta.uid.clone(),
                    Entry {
                        tx,
                        meta,
                        spec,
                        deleting: false,
                        status,
                    },
                );
                tokio::spawn(actor.run());
            }
        }
        let status = reply_rx.await.map_err(|_| Error::ShuttingDown)?;
        Ok((status, true))
    }

    /// Stops and removes a VM; false if the agent did not know it (delete is idempotent).
    pub fn delete(&self, uid: &str) -> Result<bool> {
        spec::validate_uid(uid)?;
        let mut vms = self.shared.vms();
        let Some(entry) = vms.get_mut(uid) else {
            return Ok(false);
        };
        if !entry.deleting {
            entry.deleting = true;
            entry
                .tx
                .send(Msg::Event(Event::Delete))
                .map_err(|_| Error::ShuttingDown)?;
        }
        Ok(true)
    }

    pub fn get(&self, uid: &str) -> Result<proto::VmStatus> {
        spec::validate_uid(uid)?;
        let vms = self.shared.vms();
        vms.get(uid)
            .map(|e| e.status.clone())
            .ok_or_else(|| Error::NotFound { uid: uid.into() })
    }

    pub fn list(&self) -> Vec<proto::VmStatus> {
        self.shared.list()
    }

    /// Resources held by VMs that should be running (what placement must not double-book).
    pub fn allocated(&self) -> (u32, u64) {
        let vms = self.shared.vms();
        vms.values()
            .filter(|e| !e.deleting && e.spec.run_strategy.wants_running())
            .fold((0, 0), |(c, m), e| {
                (
                    c.saturating_add(e.spec.cpus),
                    m.saturating_add(e.spec.memory_mib),
                )
            })
    }
}

/// Whether two specs describe the same machine (a run-strategy change alone needs no new QEMU).
fn same_machine(a: &VmSpec, b: &VmSpec) -> bool {
    VmSpec {
        run_strategy: b.run_strategy,
        ..a.clone()
    } == *b
}
