//! The `quiver.v1` methods and their numbers on the wire: one table that the Iroh server
//! dispatches on, the clients address calls with, and gRPC paths are derived from.
//!
//! Numbers are part of the protocol (`docs/protocol.md`): a method keeps its ids forever, and a
//! removed method's ids are never reused.

use std::fmt;
use std::str::FromStr;

/// The services of `quiver.v1`, as configured per transport (`grpc`, `iroh`, `dual`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    Health,
    Status,
    Vm,
    Monitoring,
    Admin,
    /// Between agents of one Raft group (openraft's messages as JSON).
    Raft,
}

impl ServiceName {
    pub const ALL: [Self; 6] = [
        Self::Health,
        Self::Status,
        Self::Vm,
        Self::Monitoring,
        Self::Admin,
        Self::Raft,
    ];

    /// The service id in a frame header.
    #[must_use]
    pub const fn id(self) -> u16 {
        match self {
            Self::Health => 1,
            Self::Status => 2,
            Self::Vm => 3,
            Self::Monitoring => 4,
            Self::Admin => 5,
            Self::Raft => 6,
        }
    }

    /// The lowercase name used in configuration, manifests and metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::Status => "status",
            Self::Vm => "vm",
            Self::Monitoring => "monitoring",
            Self::Admin => "admin",
            Self::Raft => "raft",
        }
    }

    /// The protobuf service name (`quiver.v1.Vm`), as gRPC paths and health checks spell it.
    #[must_use]
    pub const fn proto_name(self) -> &'static str {
        match self {
            Self::Health => "quiver.v1.Health",
            Self::Status => "quiver.v1.Status",
            Self::Vm => "quiver.v1.Vm",
            Self::Monitoring => "quiver.v1.Monitoring",
            Self::Admin => "quiver.v1.Admin",
            Self::Raft => "quiver.v1.Raft",
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|service| service.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown service {s:?} (one of {})", known.join(", "))
            })
    }
}

/// One `quiver.v1` method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    HealthCheck,
    GetStatus,
    PutVm,
    DeleteVm,
    GetVm,
    ListVms,
    WatchVmStatus,
    StreamConsole,
    WriteConsole,
    GetMetrics,
    GetResourceSummary,
    SetTransports,
    RaftVote,
    RaftAppendEntries,
    RaftInstallSnapshot,
    RaftPropose,
}

impl Method {
    pub const ALL: [Self; 16] = [
        Self::HealthCheck,
        Self::GetStatus,
        Self::PutVm,
        Self::DeleteVm,
        Self::GetVm,
        Self::ListVms,
        Self::WatchVmStatus,
        Self::StreamConsole,
        Self::WriteConsole,
        Self::GetMetrics,
        Self::GetResourceSummary,
        Self::SetTransports,
        Self::RaftVote,
        Self::RaftAppendEntries,
        Self::RaftInstallSnapshot,
        Self::RaftPropose,
    ];

    #[must_use]
    pub const fn service(self) -> ServiceName {
        match self {
            Self::HealthCheck => ServiceName::Health,
            Self::GetStatus => ServiceName::Status,
            Self::PutVm
            | Self::DeleteVm
            | Self::GetVm
            | Self::ListVms
            | Self::WatchVmStatus
            | Self::StreamConsole
            | Self::WriteConsole => ServiceName::Vm,
            Self::GetMetrics | Self::GetResourceSummary => ServiceName::Monitoring,
            Self::SetTransports => ServiceName::Admin,
            Self::RaftVote
            | Self::RaftAppendEntries
            | Self::RaftInstallSnapshot
            | Self::RaftPropose => ServiceName::Raft,
        }
    }

    /// The method id in a frame header (unique within its service).
    #[must_use]
    pub const fn id(self) -> u16 {
        match self {
            Self::HealthCheck
            | Self::GetStatus
            | Self::PutVm
            | Self::GetMetrics
            | Self::SetTransports
            | Self::RaftVote => 1,
            Self::DeleteVm | Self::GetResourceSummary | Self::RaftAppendEntries => 2,
            Self::GetVm | Self::RaftInstallSnapshot => 3,
            Self::ListVms | Self::RaftPropose => 4,
            Self::WatchVmStatus => 5,
            Self::StreamConsole => 6,
            Self::WriteConsole => 7,
        }
    }

    /// The method for a frame's (service id, method id).
    #[must_use]
    pub fn from_ids(service: u16, method: u16) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.service().id() == service && m.id() == method)
    }

    /// The protobuf method name, as gRPC paths and metrics spell it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::HealthCheck => "Check",
            Self::GetStatus => "GetStatus",
            Self::PutVm => "PutVm",
            Self::DeleteVm => "DeleteVm",
            Self::GetVm => "GetVm",
            Self::ListVms => "ListVms",
            Self::WatchVmStatus => "WatchVmStatus",
            Self::StreamConsole => "StreamConsole",
            Self::WriteConsole => "WriteConsole",
            Self::GetMetrics => "GetMetrics",
            Self::GetResourceSummary => "GetResourceSummary",
            Self::SetTransports => "SetTransports",
            Self::RaftVote => "Vote",
            Self::RaftAppendEntries => "AppendEntries",
            Self::RaftInstallSnapshot => "InstallSnapshot",
            Self::RaftPropose => "Propose",
        }
    }

    /// The gRPC path, `/quiver.v1.Vm/PutVm`.
    #[must_use]
    pub fn grpc_path(self) -> String {
        format!("/{}/{}", self.service().proto_name(), self.name())
    }

    /// Whether the method changes state: refused over 0-RTT, whose data can be replayed.
    /// Every Raft message does (a vote, the log, the snapshot, a proposal).
    #[must_use]
    pub const fn changes_state(self) -> bool {
        matches!(
            self,
            Self::PutVm
                | Self::DeleteVm
                | Self::WriteConsole
                | Self::SetTransports
                | Self::RaftVote
                | Self::RaftAppendEntries
                | Self::RaftInstallSnapshot
                | Self::RaftPropose
        )
    }

    /// Whether running the call twice changes nothing more than running it once: true for
    /// every method but `WriteConsole`, whose bytes would be typed twice. A client retries a
    /// call whose connection broke (it may have run) only if it is idempotent.
    #[must_use]
    pub const fn idempotent(self) -> bool {
        !matches!(self, Self::WriteConsole)
    }

    /// Whether the reply is a server stream.
    #[must_use]
    pub const fn streams(self) -> bool {
        matches!(self, Self::WatchVmStatus | Self::StreamConsole)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service().proto_name(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_method_has_unique_ids_that_map_back_to_it() {
        let mut seen = HashSet::new();
        for method in Method::ALL {
            let ids = (method.service().id(), method.id());
            assert!(seen.insert(ids), "{method} reuses {ids:?}");
            assert_eq!(Method::from_ids(ids.0, ids.1), Some(method));
        }
        assert_eq!(Method::from_ids(0, 0), None, "service 0 is the heartbeat's");
        assert_eq!(Method::from_ids(3, 99), None);
    }

    #[test]
    fn service_names_parse_back_and_unknown_ones_list_the_known() {
        for service in ServiceName::ALL {
            assert_eq!(service.as_str().parse(), Ok(service));
        }
        let err = "dns".parse::<ServiceName>().unwrap_err();
        assert!(
            err.contains("health, status, vm, monitoring, admin, raft"),
            "{err}"
        );
    }

    #[test]
    fn only_reads_may_run_from_0rtt_data() {
        let writes: Vec<Method> = Method::ALL
            .into_iter()
            .filter(|m| m.changes_state())
            .collect();
        assert_eq!(
            writes,
            [
                Method::PutVm,
                Method::DeleteVm,
                Method::WriteConsole,
                Method::SetTransports,
                Method::RaftVote,
                Method::RaftAppendEntries,
                Method::RaftInstallSnapshot,
                Method::RaftPropose,
            ]
        );
    }

    #[test]
    fn grpc_paths_follow_the_proto() {
        assert_eq!(Method::PutVm.grpc_path(), "/quiver.v1.Vm/PutVm");
        assert_eq!(Method::HealthCheck.grpc_path(), "/quiver.v1.Health/Check");
        assert_eq!(
            Method::RaftAppendEntries.grpc_path(),
            "/quiver.v1.Raft/AppendEntries"
        );
        assert_eq!(Method::from_ids(6, 1), Some(Method::RaftVote));
    }
}
