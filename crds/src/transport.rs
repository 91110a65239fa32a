//! The agent's RPC services and the transports each one can be served on.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How an agent serves one RPC service: `grpc` (tonic over mutual TLS), `iroh` (QUIC, ALPN
/// `quiver/rpc/1`) or `dual` (both listeners; clients prefer Iroh and fall back to gRPC).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    // Serve over gRPC only.
    Grpc,
    // Serve over Iroh only.
    Iroh,
    // Serve over both.
    Dual,
}

/// One of the agent's RPC services (the `quiver.v1` protobuf package).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    // Liveness probe.
    Health,
    // Host and cluster status.
    Status,
    // VM put/delete/get/list/watch and the console stream.
    Vm,
    // Metrics snapshots and resource summaries.
    Monitoring,
    // Raft vote, append and snapshot traffic between agents.
    Raft,
    // Transport configuration.
    Admin,
}

impl Service {
    /// Every service, in a stable order.
    pub const ALL: [Service; 6] = [
        Service::Health,
        Service::Status,
        Service::Vm,
        Service::Monitoring,
        Service::Raft,
        Service::Admin,
    ];

    /// The lowercase name used in manifests and metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Health => "health",
            Service::Status => "status",
            Service::Vm => "vm",
            Service::Monitoring => "monitoring",
            Service::Raft => "raft",
            Service::Admin => "admin",
        }
    }
}

/// The transport each RPC service should run on. `default` applies to every service that is not
/// listed by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransportTarget {
    /// Transport (`grpc`, `iroh` or `dual`) for every service not listed below. Required.
    pub default: Transport,
    /// Transport for the Health service (liveness probes). Unset: `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Transport>,
    /// Transport for the Status service (host and cluster status). Unset: `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Transport>,
    /// Transport for the Vm service (VM commands and console streams). Unset: `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<Transport>,
    /// Transport for the Monitoring service (metrics snapshots). Unset: `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Transport>,
    /// Transport for the Raft service (votes, log appends, snapshots between agents). Unset:
    /// `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft: Option<Transport>,
    /// Transport for the Admin service (transport configuration). Unset: `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Transport>,
}

impl TransportTarget {
    /// Every service on the same transport.
    #[must_use]
    pub fn all(transport: Transport) -> Self {
        Self {
            default: transport,
            health: None,
            status: None,
            vm: None,
            monitoring: None,
            raft: None,
            admin: None,
        }
    }

    /// The transport this target asks for on `service`, after applying `default`.
    #[must_use]
    pub fn for_service(&self, service: Service) -> Transport {
        let listed = match service {
            Service::Health => self.health,
            Service::Status => self.status,
            Service::Vm => self.vm,
            Service::Monitoring => self.monitoring,
            Service::Raft => self.raft,
            Service::Admin => self.admin,
        };
        listed.unwrap_or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_services_follow_the_default() {
        let target = TransportTarget {
            raft: Some(Transport::Grpc),
            ..TransportTarget::all(Transport::Iroh)
        };
        assert_eq!(target.for_service(Service::Raft), Transport::Grpc);
        assert_eq!(target.for_service(Service::Vm), Transport::Iroh);
    }

    #[test]
    fn service_names_match_their_serde_names() {
        for service in Service::ALL {
            let json = serde_json::to_value(service).unwrap();
            assert_eq!(json, service.as_str());
        }
    }
}
