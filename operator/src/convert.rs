//! MicroVM spec → the agent's `PutVmRequest`.

use kube::ResourceExt;
use quiver_agent::proto;
use quiver_crds::{DiskFormat, MicroVM, Network, NetworkMode, Protocol, RunStrategy};

fn run_strategy(s: RunStrategy) -> proto::RunStrategy {
    match s {
        RunStrategy::Always => proto::RunStrategy::Always,
        RunStrategy::Halted => proto::RunStrategy::Halted,
        RunStrategy::RerunOnFailure => proto::RunStrategy::RerunOnFailure,
        RunStrategy::Once => proto::RunStrategy::Once,
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
                protocol: match f.protocol {
                    Protocol::Tcp => proto::Protocol::Tcp,
                    Protocol::Udp => proto::Protocol::Udp,
                } as i32,
                guest_port: f.guest_port,
                host_port: f.host_port,
            })
            .collect(),
    }
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
