//! The Monitoring service: RPC metrics snapshot and a resource summary.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::Result;
use crate::metrics::Metrics;
use crate::vm::VmManager;
use crate::vm::now_ms;
use quiver_rpc::{Allowlist, PeerTable, proto};

/// Where the Iroh side's health comes from: the server's peers and the allowlist's decisions.
#[derive(Clone, Debug, Default)]
pub struct IrohHealth {
    pub peers: PeerTable,
    pub access: Allowlist,
}

impl IrohHealth {
    fn peers(&self) -> Vec<proto::IrohPeer> {
        self.peers
            .snapshot()
            .into_iter()
            .map(|p| proto::IrohPeer {
                endpoint_id: p.peer.to_string(),
                connected: p.connected,
                path: match p.relay {
                    Some(true) => "relay".into(),
                    Some(false) => "direct".into(),
                    None => String::new(),
                },
                remote_address: p.remote_addr.unwrap_or_default(),
                rtt_ms: p.rtt.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
                reconnects: p.connections.saturating_sub(1),
            })
            .collect()
    }

    fn access(&self) -> proto::IrohAccess {
        let counts = self.access.stats();
        proto::IrohAccess {
            accepted: counts.accepted,
            refused: counts.refused,
            revoked: counts.revoked,
        }
    }
}

#[derive(Clone)]
pub struct MonitoringService {
    manager: VmManager,
    metrics: Arc<Metrics>,
    iroh: IrohHealth,
}

impl MonitoringService {
    pub fn new(manager: VmManager, metrics: Arc<Metrics>, iroh: IrohHealth) -> Self {
        MonitoringService {
            manager,
            metrics,
            iroh,
        }
    }

    pub fn get_metrics(&self, _req: &proto::GetMetricsRequest) -> Result<proto::MetricsSnapshot> {
        let (vm_starts, vm_failures) = self.manager.counters();
        Ok(proto::MetricsSnapshot {
            taken_at_ms: now_ms(),
            methods: self.metrics.methods(),
            vms_total: u32::try_from(self.manager.list().len()).unwrap_or(u32::MAX),
            vm_starts,
            vm_failures,
            iroh_peers: self.iroh.peers(),
            iroh_access: Some(self.iroh.access()),
        })
    }

    pub fn get_resource_summary(
        &self,
        _req: &proto::GetResourceSummaryRequest,
    ) -> Result<proto::ResourceSummary> {
        let vms = self.manager.list();
        let mut by_phase: BTreeMap<i32, u32> = BTreeMap::new();
        for vm in &vms {
            *by_phase.entry(vm.phase).or_default() += 1;
        }
        let limits = self.manager.limits();
        let (cpus, memory_mib) = self.manager.allocated();
        Ok(proto::ResourceSummary {
            capacity: Some(proto::Resources {
                cpus: limits.max_cpus,
                memory_mib: limits.max_memory_mib,
            }),
            allocated: Some(proto::Resources { cpus, memory_mib }),
            vms_total: u32::try_from(vms.len()).unwrap_or(u32::MAX),
            phases: by_phase
                .into_iter()
                .map(|(phase, count)| proto::PhaseCount { phase, count })
                .collect(),
        })
    }
}
