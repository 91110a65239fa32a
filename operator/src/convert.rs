//! Every conversion between the CRD types and `quiver.v1`, each once: MicroVM spec → the
//! agent's `PutVmRequest`, the agent's reports (phase, forwarded ports) → MicroVM status, and
//! transports (the agent's report → `Host.status`).
//!
//! They live here rather than in `quiver-rpc` so that the RPC crate stays free of Kubernetes
//! types; conversions between `quiver.v1` and the agent's own types live in the agent.

use kube::ResourceExt;
use quiver_crds::{
    DiskFormat, ForwardedPort, MicroVM, MicroVMPhase, Network, NetworkMode, Protocol, RunStrategy,
    Service, ServiceTransportStatus, Transport, TransportTarget,
};
use quiver_rpc::{ServiceName, TransportMode, proto};

fn transport_from_mode(m: TransportMode) -> Transport {
    match m {
        TransportMode::Grpc => Transport::Grpc,
        TransportMode::Iroh => Transport::Iroh,
        TransportMode::Dual => Transport::Dual,
    }
}

fn service_from_name(s: ServiceName) -> Service {
    match s {
        ServiceName::Health => Service::Health,
        ServiceName::Status => Service::Status,
        ServiceName::Vm => Service::Vm,
        ServiceName::Monitoring => Service::Monitoring,
        ServiceName::Admin => Service::Admin,
        ServiceName::Raft => Service::Raft,
    }
}

/// `Host.status.transports`: per service, what `desired` asks for (the agent's own setting when
/// nothing is asked) and what the agent reported serving. Entries the agent sent that do not
/// parse are skipped.
#[must_use]
pub fn transport_status(
    desired: Option<&TransportTarget>,
    reported: &[proto::ServiceTransport],
) -> Vec<ServiceTransportStatus> {
    reported
        .iter()
        .filter_map(|r| {
            let name: ServiceName = r.service.parse().ok()?;
            let actual = transport_from_mode(TransportMode::from_proto(r.mode)?);
            let service = service_from_name(name);
            let desired = desired.map_or(actual, |t| t.for_service(service));
            Some(ServiceTransportStatus {
                service,
                desired,
                actual: Some(actual),
            })
        })
        .collect()
}

fn run_strategy(s: RunStrategy) -> proto::RunStrategy {
    match s {
        RunStrategy::Always => proto::RunStrategy::Always,
        RunStrategy::Halted => proto::RunStrategy::Halted,
        RunStrategy::RerunOnFailure => proto::RunStrategy::RerunOnFailure,
        RunStrategy::Once => proto::RunStrategy::Once,
    }
}

fn protocol_to_proto(p: Protocol) -> proto::Protocol {
    match p {
        Protocol::Tcp => proto::Protocol::Tcp,
        Protocol::Udp => proto::Protocol::Udp,
    }
}

/// An unknown or unset protocol reads as TCP, the agent's default.
fn protocol_from_proto(raw: i32) -> Protocol {
    match proto::Protocol::try_from(raw) {
        Ok(proto::Protocol::Udp) => Protocol::Udp,
        Ok(proto::Protocol::Tcp | proto::Protocol::Unspecified) | Err(_) => Protocol::Tcp,
    }
}

/// The agent's phase as the MicroVM's; an unknown value reads as Pending.
#[must_use]
pub fn phase_from_proto(raw: i32) -> MicroVMPhase {
    match proto::Phase::try_from(raw).unwrap_or(proto::Phase::Unspecified) {
        proto::Phase::Unspecified | proto::Phase::Pending => MicroVMPhase::Pending,
        proto::Phase::Scheduling => MicroVMPhase::Scheduling,
        proto::Phase::Starting => MicroVMPhase::Starting,
        proto::Phase::Running => MicroVMPhase::Running,
        proto::Phase::Stopping => MicroVMPhase::Stopping,
        proto::Phase::Stopped => MicroVMPhase::Stopped,
        proto::Phase::Failed => MicroVMPhase::Failed,
    }
}

/// A port forward the agent bound, as `status.portForwards` shows it.
#[must_use]
pub fn forwarded_port(f: &proto::ForwardedPort) -> ForwardedPort {
    ForwardedPort {
        name: (!f.name.is_empty()).then(|| f.name.clone()),
        protocol: protocol_from_proto(f.protocol),
        guest_port: f.guest_port,
        host_ip: f.host_ip.clone(),
        host_port: f.host_port,
    }
}

fn network(n: &Network) -> proto::Network {
    proto::Network {
        mode: match n.mode {
            NetworkMode::None => "none",
            NetworkMode::User => "user",
        }
        .to_owned(),
        port_forwards: n
            .port_forwards
            .iter()
            .map(|f| proto::PortForward {
                name: f.name.clone().unwrap_or_default(),
                protocol: protocol_to_proto(f.protocol) as i32,
                guest_port: f.guest_port,
                host_port: f.host_port,
            })
            .collect(),
    }
}

/// An agent's view of the Raft group as `Host.status.raft`; `None` while it has not joined.
#[must_use]
pub fn raft_status(info: &proto::RaftInfo) -> Option<quiver_crds::RaftStatus> {
    use quiver_crds::RaftRole;
    let role = match info.role.as_str() {
        "leader" => RaftRole::Leader,
        "follower" => RaftRole::Follower,
        "candidate" => RaftRole::Candidate,
        "learner" => RaftRole::Learner,
        _ => return None,
    };
    Some(quiver_crds::RaftStatus {
        role,
        term: info.term,
        applied_index: info.applied_index,
        leader: (!info.leader.is_empty()).then(|| info.leader.clone()),
        schedulable: Some(info.schedulable),
    })
}

/// The put that makes `vm`'s host run this generation of it, fenced with `epoch`.
#[must_use]
pub fn put_request(vm: &MicroVM, uid: &str, epoch: u64) -> proto::PutVmRequest {
    let spec = &vm.spec;
    let disks = spec
        .disks
        .iter()
        .map(|d| proto::Disk {
            name: d.name.clone(),
            image: d.image.clone(),
            format: match d.format {
                DiskFormat::Raw => "raw",
                DiskFormat::Qcow2 => "qcow2",
            }
            .to_owned(),
            read_only: d.read_only,
        })
        .collect();
    proto::PutVmRequest {
        uid: uid.to_owned(),
        namespace: vm.namespace().unwrap_or_default(),
        name: vm.name_any(),
        generation: vm.metadata.generation.unwrap_or_default(),
        epoch,
        spec: Some(proto::VmSpec {
            run_strategy: run_strategy(spec.run_strategy) as i32,
            cpus: spec.cpus,
            memory_mib: u64::from(spec.memory_mib),
            kernel: spec.kernel.clone(),
            initrd: spec.initrd.clone().unwrap_or_default(),
            cmdline: spec.cmdline.clone().unwrap_or_default(),
            disks,
            network: Some(network(&spec.network)),
            readiness: spec.readiness.as_ref().map(|r| proto::Readiness {
                serial_marker: r.serial_marker.clone(),
                timeout_seconds: r.timeout_seconds,
            }),
        }),
        node_selector: spec.node_selector.clone().into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_carries_identity_generation_epoch_and_spec() {
        let vm = MicroVM::test("web")
            .cpus(2)
            .halted()
            .with_generation(3)
            .disk("root", "/img/root.qcow2");
        let req = put_request(&vm, "uid-web", 4);
        assert_eq!(
            (req.uid.as_str(), req.name.as_str(), req.namespace.as_str()),
            ("uid-web", "web", "default")
        );
        assert_eq!((req.generation, req.epoch), (3, 4));
        let spec = req.spec.expect("spec");
        assert_eq!(spec.run_strategy, proto::RunStrategy::Halted as i32);
        assert_eq!(spec.cpus, 2);
        assert_eq!(
            (spec.disks[0].name.as_str(), spec.disks[0].format.as_str()),
            ("root", "qcow2")
        );
        assert_eq!(
            spec.readiness.expect("readiness").serial_marker,
            "QUIVER_GUEST_READY"
        );
    }
}
