//! What the manager and the per-VM actors share: the VM table, the host's settings and the
//! status broadcast.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::actor::Msg;
use super::driver::Driver;
use super::images::ImageRoots;
use super::record::{StateFile, now_ms, status};
use super::spec::{Limits, VmMeta, VmSpec};
use quiver_rpc::proto;

/// One known VM: how to reach its actor, what was last accepted for it and its last status.
pub(crate) struct Entry {
    pub tx: mpsc::UnboundedSender<Msg>,
    pub meta: VmMeta,
    pub spec: VmSpec,
    pub deleting: bool,
    pub status: proto::VmStatus,
}

/// State shared between the manager and the per-VM actors.
pub(crate) struct Shared {
    pub driver: Arc<dyn Driver>,
    pub data_dir: PathBuf,
    pub host: String,
    pub limits: Limits,
    pub stop_grace: Duration,
    pub image_roots: ImageRoots,
    pub forward_address: IpAddr,
    vms: Mutex<HashMap<String, Entry>>,
    updates: broadcast::Sender<proto::VmStatus>,
    pub starts: AtomicU64,
    pub failures: AtomicU64,
    /// The host's lease lapsed: nothing may launch, and stops are kills (no ACPI grace).
    pub fenced: AtomicBool,
}

/// The host-level settings [`Shared`] is built from.
pub(crate) struct Settings {
    pub data_dir: PathBuf,
    pub host: String,
    pub limits: Limits,
    pub stop_grace: Duration,
    pub image_roots: ImageRoots,
    pub forward_address: IpAddr,
}

impl Shared {
    pub(crate) fn new(driver: Arc<dyn Driver>, s: Settings) -> Self {
        let (updates, _) = broadcast::channel(1024);
        Shared {
            driver,
            data_dir: s.data_dir,
            host: s.host,
            limits: s.limits,
            stop_grace: s.stop_grace,
            image_roots: s.image_roots,
            forward_address: s.forward_address,
            vms: Mutex::new(HashMap::new()),
            updates,
            starts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
        }
    }

    pub(crate) fn vms(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
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
        last.updated_at_ms = now_ms().max(state.updated_at_ms + 1);
        let _ = self.updates.send(last);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<proto::VmStatus> {
        self.updates.subscribe()
    }

    pub(crate) fn list(&self) -> Vec<proto::VmStatus> {
        let mut all: Vec<_> = self.vms().values().map(|e| e.status.clone()).collect();
        all.sort_by(|a, b| a.uid.cmp(&b.uid));
        all
    }
}
