//! The agent's RPC services, each implemented once as plain Rust over the `quiver.v1` message
//! types. Transport adapters (gRPC in `crate::grpc`, Iroh later) translate at the edge and
//! never add behaviour.

mod monitoring;
mod vm;

use std::sync::Arc;

pub use monitoring::MonitoringService;
pub use vm::VmService;

use crate::metrics::Metrics;
use crate::vm::VmManager;
use crate::{Error, Result};
use quiver_rpc::proto;

/// Static facts about this agent, reported by the Status service.
#[derive(Clone, Debug)]
pub struct AgentInfo {
    pub host_name: String,
    pub grpc_endpoint: String,
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
    pub metrics: Arc<Metrics>,
}

impl Services {
    pub fn new(manager: VmManager, info: AgentInfo, metrics: Arc<Metrics>) -> Self {
        Services {
            health: HealthService,
            status: StatusService {
                manager: manager.clone(),
                info,
            },
            vm: VmService::new(manager.clone()),
            monitoring: MonitoringService::new(manager, metrics.clone()),
            metrics,
        }
    }
}

const SERVICE_NAMES: [&str; 4] = [
    "quiver.v1.Health",
    "quiver.v1.Status",
    "quiver.v1.Vm",
    "quiver.v1.Monitoring",
];

#[derive(Clone, Copy, Debug)]
pub struct HealthService;

impl HealthService {
    pub fn check(&self, req: &proto::HealthCheckRequest) -> Result<proto::HealthCheckResponse> {
        if !req.service.is_empty() && !SERVICE_NAMES.contains(&req.service.as_str()) {
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
        })
    }
}
