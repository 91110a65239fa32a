//! The VM manager: admits puts and deletes, owns one actor per VM, recovers VMs after an agent
//! restart, and fans status changes out to watchers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::actor::{Actor, Msg, Put};
use super::driver::Driver;
use super::lifecycle::{Event, Lifecycle, Phase};
use super::record::{SpecFile, StateFile, now_ms, status};
use super::rundir::RunDir;
use super::spec::{self, Limits, VmMeta, VmSpec};
use super::{console, process};
use crate::{Error, Result, proto};

/// What the manager needs to know about its host.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub data_dir: PathBuf,
    pub host: String,
    pub limits: Limits,
    pub stop_grace: Duration,
}

pub(crate) struct Entry {
    tx: mpsc::UnboundedSender<Msg>,
    meta: VmMeta,
    spec: VmSpec,
    deleting: bool,
    status: proto::VmStatus,
}

/// State shared between the manager and the per-VM actors.
pub(crate) struct Shared {
    pub driver: Arc<dyn Driver>,
    pub data_dir: PathBuf,
    pub host: String,
    pub limits: Limits,
    pub stop_grace: Duration,
    vms: Mutex<HashMap<String, Entry>>,
    updates: broadcast::Sender<proto::VmStatus>,
    pub starts: AtomicU64,
    pub failures: AtomicU64,
}

impl Shared {
    fn vms(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated: every critical
        // section is a single insert/remove/field write.
        self.vms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn publish(&self, status: proto::VmStatus) {
        if let Some(entry) = self.vms().get_mut(&status.uid) {
            entry.status = status.clone();
        }
        let _ = self.updates.send(status);
    }

    /// Drops a removed VM and tells watchers.
    pub(crate) fn forget(&self, meta: &VmMeta, state: &StateFile) {
        self.vms().remove(&meta.uid);
        let mut last = status(meta, state, &self.host);
        last.deleted = true;
        last.updated_at_ms = now_ms();
        let _ = self.updates.send(last);
    }

    fn list(&self) -> Vec<proto::VmStatus> {
        let mut all: Vec<_> = self.vms().values().map(|e| e.status.clone()).collect();
        all.sort_by(|a, b| a.uid.cmp(&b.uid));
        all
    }
}

#[derive(Clone)]
pub struct VmManager {
    shared: Arc<Shared>,
}

impl VmManager {
    pub fn new(driver: Arc<dyn Driver>, config: ManagerConfig) -> Self {
        let (updates, _) = broadcast::channel(1024);
        let shared = Shared {
            driver,
            data_dir: config.data_dir,
            host: config.host,
            limits: config.limits,
            stop_grace: config.stop_grace,
            vms: Mutex::new(HashMap::new()),
            updates,
            starts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        };
        VmManager {
            shared: Arc::new(shared),
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

    /// Validates and applies a put. Returns the status after it was applied and whether
    /// anything changed (the same or an older generation in the same epoch is a no-op).
    pub async fn put(&self, req: &proto::PutVmRequest) -> Result<(proto::VmStatus, bool)> {
        let (meta, spec) = spec::validate(req, self.shared.limits)?;
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
            .fold((0, 0), |(c, m), e| (c + e.spec.cpus, m + e.spec.memory_mib))
    }

    /// Every VM's current status, then every change. After falling behind, a fresh full list.
    pub fn watch(&self) -> impl Stream<Item = proto::VmStatus> + Send + 'static {
        let mut rx = self.shared.updates.subscribe();
        let initial = self.shared.list();
        let shared = self.shared.clone();
        async_stream::stream! {
            for s in initial {
                yield s;
            }
            loop {
                match rx.recv().await {
                    Ok(s) => yield s,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        for s in shared.list() {
                            yield s;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    }

    /// The VM's console from `offset`; with `follow`, until the VM is removed.
    pub fn console(
        &self,
        uid: &str,
        offset: u64,
        follow: bool,
    ) -> Result<impl Stream<Item = Result<proto::ConsoleChunk>> + Send + 'static> {
        self.get(uid)?;
        let path = RunDir::new(&self.shared.data_dir, uid).console_log();
        let (shared, uid) = (self.shared.clone(), uid.to_owned());
        Ok(async_stream::stream! {
            let mut offset = offset;
            loop {
                match console::read_chunk(&path, offset).await {
                    Ok(data) if !data.is_empty() => {
                        let len = data.len() as u64;
                        yield Ok(proto::ConsoleChunk { offset, data });
                        offset += len;
                    }
                    Ok(_) if follow && shared.vms().contains_key(&uid) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok(_) => break,
                    Err(e) => {
                        yield Err(Error::io(&path, e));
                        break;
                    }
                }
            }
        })
    }

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
        let phase = state.lifecycle.phase;
        let deleting = state.lifecycle.deleting;
        let (meta, spec) = (file.meta.clone(), file.spec.clone());
        let adopted = if phase.has_process() {
            self.shared.driver.adopt(&dir).await
        } else {
            None
        };
        let first = match (adopted, phase) {
            (Some(launched), _) => {
                tracing::info!(uid = %meta.uid, pid = launched.pid, "re-adopted running VM");
                Msg::Up {
                    launched,
                    adopted: true,
                }
            }
            (None, p) if p.has_process() => {
                tracing::warn!(uid = %meta.uid, "VM died while the agent was down");
                Msg::Event(Event::FoundDead)
            }
            (None, Phase::Pending | Phase::Scheduling) => Msg::Event(Event::Apply {
                strategy: spec.run_strategy,
                respec: false,
            }),
            (None, _) if deleting => Msg::Event(Event::Delete),
            (None, _) => Msg::RestartDue { token: 0 },
        };
        let (actor, tx) = Actor::new(self.shared.clone(), dir, file, state);
        let status = actor.status();
        tx.send(first).map_err(|_| Error::ShuttingDown)?;
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

/// Whether two specs describe the same machine (a run-strategy change alone needs no new QEMU).
fn same_machine(a: &VmSpec, b: &VmSpec) -> bool {
    VmSpec {
        run_strategy: b.run_strategy,
        ..a.clone()
    } == *b
}
