//! The Monitoring service: RPC metrics snapshot and a resource summary.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::Result;
use crate::metrics::Metrics;
use crate::vm::VmManager;
use crate::vm::now_ms;
use quiver_rpc::proto;

#[derive(Clone)]
pub struct MonitoringService {
    manager: VmManager,
    metrics: Arc<Metrics>,
}

impl MonitoringService {
    pub fn new(manager: VmManager, metrics: Arc<Metrics>) -> Self {
        MonitoringService { manager, metrics }
    }

    pub fn get_metrics(&self, _req: &proto::GetMetricsRequest) -> Result<proto::MetricsSnapshot> {
        let (vm_starts, vm_failures) = self.manager.counters();
        Ok(proto::MetricsSnapshot {
            taken_at_ms: now_ms(),
            methods: self.metrics.methods(),
            vms_total: u32::try_from(self.manager.list().len()).unwrap_or(u32::MAX),
            vm_starts,
            vm_failures,
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
