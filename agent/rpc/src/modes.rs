//! Which transport each service is served on: `grpc`, `iroh` or `dual` (both).
//!
//! [`TransportModes`] is plain data: the agent holds the live one (and answers calls that
//! arrive on a transport their service left with `UNIMPLEMENTED`), the operator and the Admin
//! service exchange it as `quiver.v1.ServiceTransport` lists, and flags parse into it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::methods::ServiceName;
use crate::proto;

/// One of the two wires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wire {
    Grpc,
    Iroh,
}

impl Wire {
    /// The label in metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Iroh => "iroh",
        }
    }
}

/// How one service is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportMode {
    Grpc,
    Iroh,
    Dual,
}

impl TransportMode {
    #[must_use]
    pub const fn serves(self, wire: Wire) -> bool {
        matches!(
            (self, wire),
            (Self::Dual, _) | (Self::Grpc, Wire::Grpc) | (Self::Iroh, Wire::Iroh)
        )
    }

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Iroh => "iroh",
            Self::Dual => "dual",
        }
    }

    /// From the proto enum; `UNSPECIFIED` and unknown numbers are `None`.
    #[must_use]
    pub fn from_proto(mode: i32) -> Option<Self> {
        match proto::TransportMode::try_from(mode).ok()? {
            proto::TransportMode::Grpc => Some(Self::Grpc),
            proto::TransportMode::Iroh => Some(Self::Iroh),
            proto::TransportMode::Dual => Some(Self::Dual),
            proto::TransportMode::Unspecified => None,
        }
    }

    #[must_use]
    pub fn to_proto(self) -> proto::TransportMode {
        match self {
            Self::Grpc => proto::TransportMode::Grpc,
            Self::Iroh => proto::TransportMode::Iroh,
            Self::Dual => proto::TransportMode::Dual,
        }
    }
}

impl fmt::Display for TransportMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransportMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "grpc" => Ok(Self::Grpc),
            "iroh" => Ok(Self::Iroh),
            "dual" => Ok(Self::Dual),
            other => Err(format!(
                "unknown transport {other:?} (one of grpc, iroh, dual)"
            )),
        }
    }
}

/// The transport of every service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportModes {
    modes: BTreeMap<ServiceName, TransportMode>,
}

impl TransportModes {
    /// Every service on `mode`.
    #[must_use]
    pub fn all(mode: TransportMode) -> Self {
        Self {
            modes: ServiceName::ALL.into_iter().map(|s| (s, mode)).collect(),
        }
    }

    #[must_use]
    pub fn get(&self, service: ServiceName) -> TransportMode {
        self.modes
            .get(&service)
            .copied()
            .unwrap_or(TransportMode::Grpc)
    }

    pub fn set(&mut self, service: ServiceName, mode: TransportMode) {
        self.modes.insert(service, mode);
    }

    /// Whether any service is served on `wire` (whether its listener is needed).
    #[must_use]
    pub fn uses(&self, wire: Wire) -> bool {
        self.modes.values().any(|m| m.serves(wire))
    }

    pub fn iter(&self) -> impl Iterator<Item = (ServiceName, TransportMode)> + '_ {
        self.modes.iter().map(|(s, m)| (*s, *m))
    }

    #[must_use]
    pub fn to_proto(&self) -> Vec<proto::ServiceTransport> {
        self.iter()
            .map(|(service, mode)| proto::ServiceTransport {
                service: service.as_str().to_owned(),
                mode: mode.to_proto() as i32,
            })
            .collect()
    }

    /// Applies a list of changes; the error names the entry (`services[1].mode: …`). Nothing
    /// is applied unless every entry is valid.
    ///
    /// # Errors
    /// An unknown service name or an unspecified mode.
    pub fn apply(&mut self, changes: &[proto::ServiceTransport]) -> Result<(), String> {
        let mut next = self.clone();
        for (i, change) in changes.iter().enumerate() {
            let service: ServiceName = change
                .service
                .parse()
                .map_err(|e| format!("services[{i}].service: {e}"))?;
            let mode = TransportMode::from_proto(change.mode).ok_or_else(|| {
                format!(
                    "services[{i}].mode: {} is not grpc, iroh or dual",
                    change.mode
                )
            })?;
            next.set(service, mode);
        }
        *self = next;
        Ok(())
    }

    /// Parses a flag value: `dual`, or `dual,vm=iroh,admin=grpc` (a default, then overrides).
    ///
    /// # Errors
    /// Names the part that is wrong.
    pub fn parse_flag(text: &str) -> Result<Self, String> {
        let mut parts = text.split(',').map(str::trim);
        let default = parts.next().unwrap_or_default().parse()?;
        let mut modes = Self::all(default);
        for part in parts {
            let (service, mode) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected service=transport"))?;
            modes.set(service.parse()?, mode.parse()?);
        }
        Ok(modes)
    }
}

impl fmt::Display for TransportModes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.iter().map(|(s, m)| format!("{s}={m}")).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_give_a_default_and_overrides() {
        let modes = TransportModes::parse_flag("dual,vm=iroh").expect("valid");
        assert_eq!(modes.get(ServiceName::Vm), TransportMode::Iroh);
        assert_eq!(modes.get(ServiceName::Health), TransportMode::Dual);
        assert!(modes.uses(Wire::Grpc) && modes.uses(Wire::Iroh));
        assert!(!TransportModes::all(TransportMode::Iroh).uses(Wire::Grpc));
        let err = TransportModes::parse_flag("grpc,vm").unwrap_err();
        assert!(err.contains("service=transport"), "{err}");
        assert!(TransportModes::parse_flag("quic").is_err());
    }

    #[test]
    fn a_bad_change_names_its_entry_and_applies_nothing() {
        let mut modes = TransportModes::all(TransportMode::Grpc);
        let changes = [
            proto::ServiceTransport {
                service: "vm".into(),
                mode: proto::TransportMode::Iroh as i32,
            },
            proto::ServiceTransport {
                service: "admin".into(),
                mode: 0,
            },
        ];
        let err = modes.apply(&changes).unwrap_err();
        assert!(err.starts_with("services[1].mode"), "{err}");
        assert_eq!(modes, TransportModes::all(TransportMode::Grpc));
        modes.apply(&changes[..1]).expect("valid");
        assert_eq!(modes.get(ServiceName::Vm), TransportMode::Iroh);
    }
}
