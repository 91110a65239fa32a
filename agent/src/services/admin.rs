//! The Admin service: the transport each service is served on right now ([`ServingModes`],
//! shared by both adapters), changed by `SetTransports` on a standalone agent. An agent in a
//! Raft group serves what the placement ledger holds for its host instead (from its Host's
//! `spec.transport`, [`crate::cluster`]), and refuses `SetTransports`: one source of truth.
//!
//! Both listeners always run; the mode decides which services answer on each. A call is
//! checked once, when it arrives: a call already running finishes on its transport when its
//! service's mode changes, and later calls on a transport the service left get
//! `UNIMPLEMENTED` ([`Error::NotServed`]), which a dual-transport client answers by using the
//! other transport. So switching drops nothing in flight.

use std::sync::{Arc, RwLock};

use quiver_rpc::{ServiceName, TransportModes, Wire, proto};

use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct ServingModes {
    modes: Arc<RwLock<TransportModes>>,
}

impl ServingModes {
    pub fn new(initial: TransportModes) -> Self {
        ServingModes {
            modes: Arc::new(RwLock::new(initial)),
        }
    }

    /// Ok when `service` answers on `wire` now.
    pub fn check(&self, service: ServiceName, wire: Wire) -> Result<()> {
        let mode = self.current().get(service);
        if mode.serves(wire) {
            Ok(())
        } else {
            Err(Error::NotServed {
                service,
                wire: wire.as_str(),
                mode,
            })
        }
    }

    pub fn current(&self) -> TransportModes {
        self.modes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Serves `next` from now on.
    pub fn replace(&self, next: TransportModes) {
        let mut modes = self
            .modes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *modes != next {
            tracing::info!(from = %modes, to = %next, "transports changed");
            *modes = next;
        }
    }

    /// Applies `changes` (all or none) and returns every service's mode after them.
    pub fn apply(&self, changes: &[proto::ServiceTransport]) -> Result<TransportModes> {
        let mut modes = self
            .modes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = modes.clone();
        modes.apply(changes).map_err(|reason| {
            let (field, reason) = reason.split_once(": ").unwrap_or(("services", &reason));
            Error::invalid(field, reason)
        })?;
        if *modes != before {
            tracing::info!(from = %before, to = %modes, "transports changed");
        }
        Ok(modes.clone())
    }
}

/// `SetTransports` over the live modes.
#[derive(Clone, Debug)]
pub struct AdminService {
    modes: ServingModes,
    /// In a Raft group, where the transports come from instead.
    in_group: bool,
}

impl AdminService {
    pub fn new(modes: ServingModes, in_group: bool) -> Self {
        AdminService { modes, in_group }
    }

    pub fn set_transports(
        &self,
        req: &proto::SetTransportsRequest,
    ) -> Result<proto::SetTransportsResponse> {
        if self.in_group {
            return Err(Error::FailedPrecondition(
                "this agent is in a Raft group: it serves the transports of its Host's \
                 spec.transport, committed to the placement ledger (kubectl patch qh)"
                    .into(),
            ));
        }
        let modes = self.modes.apply(&req.services)?;
        Ok(proto::SetTransportsResponse {
            services: modes.to_proto(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_rpc::TransportMode;

    #[test]
    fn a_service_moved_to_iroh_refuses_grpc_with_unimplemented() {
        let modes = ServingModes::new(TransportModes::all(TransportMode::Grpc));
        modes.check(ServiceName::Vm, Wire::Grpc).expect("served");
        let to_iroh = proto::ServiceTransport {
            service: "vm".into(),
            mode: proto::TransportMode::Iroh as i32,
        };
        let after = modes.apply(&[to_iroh]).expect("valid");
        assert_eq!(after.get(ServiceName::Vm), TransportMode::Iroh);
        let refused = modes.check(ServiceName::Vm, Wire::Grpc).unwrap_err();
        assert_eq!(refused.code(), quiver_rpc::Code::Unimplemented);
        assert_eq!(
            refused.to_string(),
            "vm is served over iroh only on this agent, not over grpc"
        );
        modes
            .check(ServiceName::Health, Wire::Grpc)
            .expect("others keep theirs");
        let bad = proto::ServiceTransport {
            service: "dns".into(),
            mode: 1,
        };
        let err = modes.apply(&[bad]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid argument: services[0].service: unknown service"),
            "{err}"
        );
    }
}
