//! Agent configuration: a YAML file (JSON works too) overlaid by command-line flags.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::vm::images::ImageRoots;
use crate::vm::network::DEFAULT_FORWARD_ADDRESS;
use crate::{Error, Result};
use quiver_rpc::TransportModes;
use quiver_rpc::iroh::EndpointId;
use quiver_rpc::pki::TlsFiles;

/// QEMU accelerator. `auto` = KVM when `/dev/kvm` can be opened read-write, else TCG.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    pub fn resolve(self) -> Accel {
        match self {
            Accel::Auto if kvm_usable() => Accel::Kvm,
            Accel::Auto => Accel::Tcg,
            other => other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Which driver runs VMs. `simulated` runs no processes and is for scale benchmarks only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    #[default]
    Qemu,
    Simulated,
}

/// Delays of the simulated driver, in milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SimulatedConfig {
    pub launch_ms: u64,
    pub ready_ms: u64,
    pub stop_ms: u64,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        SimulatedConfig {
            launch_ms: 50,
            ready_ms: 200,
            stop_ms: 20,
        }
    }
}

/// The Raft group and its leases (the same values on every agent of a fleet). An agent that
/// registers a Host (`kubeconfig`) joins the fleet's group: puts and deletes go to the
/// placement ledger, and this host runs what it assigns.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RaftSettings {
    /// How long one lease renewal lets this host's VMs run.
    pub lease_ttl_ms: u64,
    /// How often the lease is renewed (at most half the ttl).
    pub lease_renew_ms: u64,
    /// What the leader waits beyond the ttl before declaring a host down: clock-rate drift
    /// plus the time a fenced host takes to kill its VMs (at least 500).
    pub lease_margin_ms: u64,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Namespace of the `quiver-raft` ConfigMap that decides which agent bootstraps the group.
    pub namespace: String,
}

impl Default for RaftSettings {
    fn default() -> Self {
        let lease = quiver_raft::lease::LeaseConfig::default();
        let timing = quiver_raft::Timing::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        RaftSettings {
            lease_ttl_ms: ms(lease.ttl),
            lease_renew_ms: ms(lease.renew_every),
            lease_margin_ms: ms(lease.margin),
            heartbeat_ms: ms(timing.heartbeat),
            election_timeout_min_ms: ms(timing.election_min),
            election_timeout_max_ms: ms(timing.election_max),
            namespace: "default".into(),
        }
    }
}

impl RaftSettings {
    pub fn cluster_config(&self) -> crate::cluster::ClusterConfig {
        crate::cluster::ClusterConfig {
            lease: quiver_raft::lease::LeaseConfig {
                ttl: Duration::from_millis(self.lease_ttl_ms),
                renew_every: Duration::from_millis(self.lease_renew_ms),
                margin: Duration::from_millis(self.lease_margin_ms),
            },
            timing: quiver_raft::Timing {
                heartbeat: Duration::from_millis(self.heartbeat_ms),
                election_min: Duration::from_millis(self.election_timeout_min_ms),
                election_max: Duration::from_millis(self.election_timeout_max_ms),
            },
            namespace: self.namespace.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    pub grpc_listen: SocketAddr,
    /// UDP address of the Iroh endpoint (ALPN `quiver/rpc/1`).
    pub iroh_listen: SocketAddr,
    /// Which transport each service is served on: `grpc`, `iroh` or `dual`, optionally followed
    /// by per-service overrides (`grpc,vm=dual`). The Admin service changes it at runtime.
    /// Both listeners always run; the mode decides which services answer on each.
    pub transport: String,
    /// Endpoint ids (64 hex digits) admitted over Iroh besides those of registered Hosts:
    /// the operator's. Every other endpoint id is refused at the handshake.
    pub trusted_endpoint_ids: Vec<String>,
    /// An iroh relay the endpoint homes on (`https://host:port`); registered in the Host
    /// (`spec.irohRelayUrl`) so that peers reach this agent through it where no direct path
    /// works. None by default: peers dial the direct addresses only.
    pub relay_url: Option<String>,
    /// PEM file of the certificates that sign the relay's TLS certificate (default: the web
    /// PKI roots).
    pub relay_ca: Option<PathBuf>,
    /// The address others dial (with `grpc_listen`'s port); see [`crate::advertise`].
    pub advertise_address: Option<std::net::IpAddr>,
    /// Serves `/metrics` (Prometheus text) when set.
    pub metrics_listen: Option<SocketAddr>,
    pub host_name: String,
    pub accel: Accel,
    pub capacity_cpus: u32,
    pub capacity_memory_mib: u64,
    pub driver: DriverKind,
    pub simulated: SimulatedConfig,
    /// How long a guest gets to power off after ACPI powerdown before QEMU is told to quit.
    pub stop_grace_secs: u64,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// mTLS for gRPC (CA that signs clients, server cert and key).
    pub tls: Option<TlsFiles>,
    /// Without `tls`: generate a dev CA and certs under `<data-dir>/tls/` and use them.
    pub dev_tls: bool,
    /// Without `tls` or `dev_tls`: serve plain gRPC. Refused unless `grpc_listen` is loopback.
    pub insecure_plaintext: bool,
    /// Register this agent's `Host` through the Kubernetes API this kubeconfig points at.
    pub kubeconfig: Option<PathBuf>,
    /// Labels of the registered `Host` (placement matches `nodeSelector` against them).
    pub host_labels: std::collections::BTreeMap<String, String>,
    /// The only directories a VM's kernel, initrd and disk images may come from (after
    /// symlinks are resolved). Default: the guest image dir (`$QUIVER_GUEST_DIR` or
    /// `/var/lib/quiver/guest`) and `/var/lib/quiver/images`.
    pub image_roots: Vec<std::path::PathBuf>,
    /// The host address user-network port forwards listen on (IPv4). Default 127.0.0.1: a
    /// forward is reachable from this host only unless the administrator widens it.
    pub port_forward_address: IpAddr,
    pub raft: RaftSettings,
    /// Faults injected into served calls, per transport, to rehearse a rollout's rollback.
    /// None by default.
    pub inject: crate::transport::faults::InjectedFaults,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            data_dir: "/var/lib/quiver/agent".into(),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            iroh_listen: SocketAddr::from(([127, 0, 0, 1], 7444)),
            transport: "grpc".into(),
            trusted_endpoint_ids: Vec::new(),
            relay_url: None,
            relay_ca: None,
            advertise_address: None,
            metrics_listen: None,
            host_name: default_host_name(),
            accel: Accel::Auto,
            capacity_cpus: std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                .unwrap_or(1),
            capacity_memory_mib: host_memory_mib().unwrap_or(1024),
            driver: DriverKind::Qemu,
            simulated: SimulatedConfig::default(),
            stop_grace_secs: 10,
            max_message_bytes: 4 << 20,
            tls: None,
            dev_tls: false,
            insecure_plaintext: false,
            kubeconfig: None,
            host_labels: std::collections::BTreeMap::new(),
            image_roots: ImageRoots::default_roots(),
            port_forward_address: DEFAULT_FORWARD_ADDRESS,
            raft: RaftSettings::default(),
            inject: Default::default(),
        }
    }
}

impl AgentConfig {
    /// Reads the file if given, else defaults.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(AgentConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_yaml_ng::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Refuses a config that would serve gRPC without TLS by accident: plaintext needs
    /// `insecure_plaintext`, and even then only on a loopback address.
    pub fn check_transport(&self) -> Result<()> {
        if self.tls.is_some() || self.dev_tls {
            return Ok(());
        }
        if !self.insecure_plaintext {
            return Err(Error::Config(
                "no gRPC TLS configured: pass --tls-ca/--tls-cert/--tls-key, or --dev-tls, or \
                 --insecure-plaintext (loopback only)"
                    .into(),
            ));
        }
        if !self.grpc_listen.ip().is_loopback() {
            return Err(Error::Config(format!(
                "--insecure-plaintext is allowed on loopback only, not on {}",
                self.grpc_listen
            )));
        }
        Ok(())
    }

    /// The transport of each service, from `transport`.
    pub fn transport_modes(&self) -> Result<TransportModes> {
        TransportModes::parse_flag(&self.transport)
            .map_err(|e| Error::Config(format!("transport {:?}: {e}", self.transport)))
    }

    /// The endpoint ids in `trusted_endpoint_ids`.
    pub fn trusted_ids(&self) -> Result<Vec<EndpointId>> {
        self.trusted_endpoint_ids
            .iter()
            .map(|id| {
                id.parse()
                    .map_err(|e| Error::Config(format!("trusted endpoint id {id:?}: {e}")))
            })
            .collect()
    }

    /// Refuses settings the VM runtime cannot use.
    pub fn check_vm_settings(&self) -> Result<()> {
        if let Some(relative) = self.image_roots.iter().find(|r| !r.is_absolute()) {
            let shown = relative.display();
            return Err(Error::Config(format!(
                "image root {shown} is not an absolute path"
            )));
        }
        if !self.port_forward_address.is_ipv4() {
            return Err(Error::Config(format!(
                "portForwardAddress {} is not IPv4 (QEMU user networking forwards IPv4)",
                self.port_forward_address
            )));
        }
        Ok(())
    }

    pub fn stop_grace(&self) -> Duration {
        Duration::from_secs(self.stop_grace_secs)
    }
}

fn default_host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn host_memory_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_overrides_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.yaml");
        std::fs::write(
            &path,
            "dataDir: /tmp/q\naccel: tcg\ncapacityCpus: 3\nrelayUrl: https://relay:8443\n\
             relayCa: /etc/quiver-relay/ca.pem\n",
        )
        .expect("write");
        let c = AgentConfig::load(Some(&path)).expect("load");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/q"));
        assert_eq!(c.relay_url.as_deref(), Some("https://relay:8443"));
        assert_eq!(
            c.relay_ca.as_deref(),
            Some(Path::new("/etc/quiver-relay/ca.pem"))
        );
        assert_eq!(c.accel, Accel::Tcg);
        assert_eq!(c.capacity_cpus, 3);
        assert_eq!(c.driver, DriverKind::Qemu);
    }

    #[test]
    fn plaintext_needs_the_flag_and_a_loopback_address() {
        let mut c = AgentConfig::default();
        assert!(matches!(c.check_transport(), Err(Error::Config(_))));
        c.insecure_plaintext = true;
        c.check_transport()
            .expect("loopback plaintext with the flag");
        c.grpc_listen = "0.0.0.0:7443".parse().expect("addr");
        assert!(matches!(c.check_transport(), Err(Error::Config(_))));
        c.dev_tls = true;
        c.check_transport().expect("dev TLS on any address");
    }

    #[test]
    fn image_roots_must_be_absolute_and_forwards_ipv4() {
        let mut c = AgentConfig::default();
        assert!(
            c.image_roots
                .contains(&PathBuf::from("/var/lib/quiver/images"))
        );
        c.check_vm_settings().expect("defaults are valid");
        c.image_roots = vec!["images".into()];
        assert!(matches!(c.check_vm_settings(), Err(Error::Config(_))));
        c.image_roots = vec!["/srv/images".into()];
        c.port_forward_address = "::1".parse().expect("ip");
        assert!(matches!(c.check_vm_settings(), Err(Error::Config(_))));
    }

    #[test]
    fn bad_accel_value_is_a_config_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, "accel: warp\n").expect("write");
        assert!(matches!(
            AgentConfig::load(Some(&path)),
            Err(Error::Config(_))
        ));
    }
}
