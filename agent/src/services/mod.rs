//! The agent's RPC services, each implemented once as plain Rust over the `quiver.v1` message
//! types. The transport adapters (`crate::transport`: gRPC and Iroh) translate at the edge and
//! never add behaviour.

mod admin;
mod monitoring;
mod vm;

use std::sync::Arc;

use bytes::Bytes;
use quiver_raft::service::RaftService;

pub use admin::{AdminService, ServingModes};
pub use monitoring::{IrohHealth, MonitoringService};
pub use vm::{VmService, desired_vm};

use crate::metrics::Metrics;
use crate::transport::faults::Faults;
use crate::vm::VmManager;
use crate::{Error, Result};
use quiver_rpc::{Code, Method, RpcError, ServiceName, proto};

/// Static facts about this agent, reported by the Status service.
#[derive(Clone, Debug)]
pub struct AgentInfo {
    pub host_name: String,
    pub grpc_endpoint: String,
    /// The Iroh endpoint id (64 hex digits) and the socket addresses it is bound to.
    pub endpoint_id: String,
    pub iroh_addresses: Vec<String>,
    pub version: String,
    pub started_at_ms: i64,
}

/// All services, built once and shared by every transport.
#[derive(Clone)]
pub struct Services {
    pub health: HealthService,
    pub status: StatusService,
    pub vm: VmService,
    pub monitoring: MonitoringService,
    pub admin: AdminService,
    /// The Raft service, when this agent is in a Raft group (it registers a Host).
    pub raft: Option<RaftService>,
    pub metrics: Arc<Metrics>,
    /// Which transport each service answers on (read by the adapters, set by Admin).
    pub modes: ServingModes,
    /// Faults injected into served calls (none unless configured).
    pub faults: Faults,
}

impl Services {
    pub fn new(
        manager: VmManager,
        info: AgentInfo,
        metrics: Arc<Metrics>,
        modes: ServingModes,
        iroh: IrohHealth,
        cluster: Option<crate::cluster::Cluster>,
        raft: Option<RaftService>,
    ) -> Self {
        let in_group = cluster.is_some();
        Services {
            health: HealthService,
            status: StatusService {
                manager: manager.clone(),
                info,
                modes: modes.clone(),
                cluster: cluster.clone(),
            },
            vm: VmService::new(manager.clone(), cluster),
            monitoring: MonitoringService::new(manager, metrics.clone(), iroh),
            admin: AdminService::new(modes.clone(), in_group),
            raft,
            metrics,
            modes,
            faults: Faults::default(),
        }
    }
}

impl Services {
    /// One call of the Raft service (openraft's JSON in and out), whichever transport it came
    /// in on; `caller` is the node id the transport authenticated, if it names one.
    pub async fn raft(&self, method: Method, json: &[u8], caller: Option<u64>) -> Result<Bytes> {
        let Some(raft) = &self.raft else {
            return Err(Error::Raft(RpcError::new(
                Code::Unimplemented,
                "this agent is not in a Raft group (started without --kubeconfig)",
            )));
        };
        raft.handle(method, json, caller).await.map_err(Error::Raft)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct HealthService;

impl HealthService {
    pub fn check(&self, req: &proto::HealthCheckRequest) -> Result<proto::HealthCheckResponse> {
        let known = ServiceName::ALL
            .iter()
            .any(|s| s.proto_name() == req.service);
        if !req.service.is_empty() && !known {
            return Err(Error::invalid(
                "service",
                format!("unknown service {:?}", req.service),
            ));
        }
        let status = proto::health_check_response::ServingStatus::Serving as i32;
        Ok(proto::HealthCheckResponse { status })
    }
}

#[derive(Clone)]
pub struct StatusService {
    manager: VmManager,
    info: AgentInfo,
    modes: ServingModes,
    cluster: Option<crate::cluster::Cluster>,
}

impl StatusService {
    pub fn get_status(&self, _req: &proto::GetStatusRequest) -> Result<proto::AgentStatus> {
        let vms = self.manager.list();
        let running = vms
            .iter()
            .filter(|v| v.phase == proto::Phase::Running as i32)
            .count();
        let limits = self.manager.limits();
        let (cpus, memory_mib) = self.manager.allocated();
        Ok(proto::AgentStatus {
            host_name: self.info.host_name.clone(),
            grpc_endpoint: self.info.grpc_endpoint.clone(),
            version: self.info.version.clone(),
            driver: self.manager.driver_name().into(),
            accel: self.manager.accel().into(),
            vm_count: u32::try_from(vms.len()).unwrap_or(u32::MAX),
            running_vms: u32::try_from(running).unwrap_or(u32::MAX),
            capacity: Some(proto::Resources {
                cpus: limits.max_cpus,
                memory_mib: limits.max_memory_mib,
            }),
            allocated: Some(proto::Resources { cpus, memory_mib }),
            started_at_ms: self.info.started_at_ms,
            endpoint_id: self.info.endpoint_id.clone(),
            iroh_addresses: self.info.iroh_addresses.clone(),
            transports: self.modes.current().to_proto(),
            raft: self.cluster.as_ref().map(crate::cluster::Cluster::info),
        })
    }
}
