//! The Vm service: put / delete / get / list / watch / console.
//!
//! A standalone agent applies puts and deletes to its own VM manager. In a Raft group, puts
//! and deletes go to the placement ledger (validated here first, so a bad spec is refused to
//! its sender, then committed through the leader); each agent runs what the ledger assigns it
//! ([`crate::cluster::follow`]). Reads are always about this host's VMs.

use futures::Stream;
use prost::Message as _;
use quiver_raft::ledger::DesiredVm;

use crate::Result;
use crate::cluster::Cluster;
use crate::vm::VmManager;
use quiver_rpc::proto;

/// A put as the placement ledger holds it: what placement reads (cpus, memory, node
/// selector) and the whole request, which the host it lands on runs.
pub fn desired_vm(req: &proto::PutVmRequest) -> DesiredVm {
    let spec = req.spec.as_ref();
    DesiredVm {
        uid: req.uid.clone(),
        generation: req.generation,
        cpus: spec.map_or(0, |s| s.cpus),
        memory_mib: spec.map_or(0, |s| s.memory_mib),
        node_selector: req.node_selector.clone().into_iter().collect(),
        request: req.encode_to_vec(),
    }
}

#[derive(Clone)]
pub struct VmService {
    manager: VmManager,
    cluster: Option<Cluster>,
}

impl VmService {
    pub fn new(manager: VmManager, cluster: Option<Cluster>) -> Self {
        VmService { manager, cluster }
    }

    pub async fn put_vm(&self, req: &proto::PutVmRequest) -> Result<proto::PutVmResponse> {
        let (uid, generation) = (&req.uid, req.generation);
        let Some(cluster) = &self.cluster else {
            let (status, changed) = self.manager.put(req).await?;
            tracing::info!(%uid, generation, changed, "put applied");
            return Ok(proto::PutVmResponse {
                status: Some(status),
                changed,
            });
        };
        self.manager.validate(req)?;
        let outcome = cluster.put(desired_vm(req)).await?;
        // What this command placed; this agent's own ledger may not have applied it yet.
        let placed = outcome
            .moved
            .iter()
            .find(|(uid, _)| *uid == req.uid)
            .map(|(_, a)| a.clone());
        let host = placed.as_ref().map(|a| a.as_ref().map(|a| a.host.as_str()));
        tracing::info!(%uid, generation, note = ?outcome.note, ?host, "put committed to the ledger");
        Ok(proto::PutVmResponse {
            status: Some(self.placed(cluster, req, placed)),
            changed: outcome.note.is_none(),
        })
    }

    /// The VM as the ledger places it: this host's own status when it runs here, else a
    /// Scheduling status naming the host and epoch (Pending while no host fits).
    fn placed(
        &self,
        cluster: &Cluster,
        req: &proto::PutVmRequest,
        placed: Option<Option<quiver_raft::ledger::Assignment>>,
    ) -> proto::VmStatus {
        let assignment = placed.unwrap_or_else(|| cluster.assignment(&req.uid));
        if let Some(a) = &assignment
            && a.host == cluster.host()
            && let Ok(status) = self.manager.get(&req.uid)
            && status.epoch == a.epoch
        {
            return status;
        }
        let (phase, reason, message) = if assignment.is_some() {
            let placed = "placed by the Raft leader".to_owned();
            (proto::Phase::Scheduling, String::new(), placed)
        } else {
            let unplaced = cluster.unplaced(&req.uid);
            let (reason, message) = unplaced
                .map(|u| (u.reason.to_owned(), u.message))
                .unwrap_or_default();
            (proto::Phase::Pending, reason, message)
        };
        proto::VmStatus {
            uid: req.uid.clone(),
            namespace: req.namespace.clone(),
            name: req.name.clone(),
            phase: phase as i32,
            host: assignment
                .as_ref()
                .map(|a| a.host.clone())
                .unwrap_or_default(),
            epoch: assignment.map_or(0, |a| a.epoch),
            reason,
            message,
            run_strategy: req.spec.as_ref().map_or(0, |s| s.run_strategy),
            ..proto::VmStatus::default()
        }
    }

    /// Standalone: stops and removes the VM here. In a group: removes it from the ledger
    /// (its host then stops it); `existed` says whether this host still has a copy, so a
    /// caller asking every agent is done once all answer false.
    pub async fn delete_vm(&self, req: &proto::DeleteVmRequest) -> Result<proto::DeleteVmResponse> {
        if let Some(cluster) = &self.cluster {
            crate::vm::spec::validate_uid(&req.uid)?;
            if cluster.knows(&req.uid) {
                let uid = req.uid.clone();
                cluster
                    .propose(quiver_raft::Command::DeleteVm { uid })
                    .await?;
                tracing::info!(uid = %req.uid, "delete committed to the ledger");
            }
            return Ok(proto::DeleteVmResponse {
                existed: self.manager.get(&req.uid).is_ok(),
            });
        }
        let existed = self.manager.delete(&req.uid)?;
        tracing::info!(uid = %req.uid, existed, "delete applied");
        Ok(proto::DeleteVmResponse { existed })
    }

    pub fn get_vm(&self, req: &proto::GetVmRequest) -> Result<proto::VmStatus> {
        self.manager.get(&req.uid)
    }

    pub fn list_vms(&self, _req: &proto::ListVmsRequest) -> Result<proto::ListVmsResponse> {
        Ok(proto::ListVmsResponse {
            vms: self.manager.list(),
        })
    }

    pub fn watch_vm_status(
        &self,
        _req: &proto::WatchVmStatusRequest,
    ) -> Result<impl Stream<Item = proto::VmStatus> + Send + use<>> {
        Ok(self.manager.watch())
    }

    pub fn stream_console(
        &self,
        req: &proto::StreamConsoleRequest,
    ) -> Result<impl Stream<Item = Result<proto::ConsoleChunk>> + Send + use<>> {
        self.manager.console(&req.uid, req.offset, req.follow)
    }

    /// Types the bytes into the VM's serial console, on this host (the VM's host: consoles
    /// are not forwarded).
    pub async fn write_console(
        &self,
        req: &proto::WriteConsoleRequest,
    ) -> Result<proto::WriteConsoleResponse> {
        self.manager.write_console(&req.uid, &req.data).await?;
        Ok(proto::WriteConsoleResponse {})
    }
}
