//! Faults an agent injects into the unary calls it serves, per transport
//! (`--inject-latency-ms`, `--inject-errors-per-mille`), to rehearse a rollout's health gate
//! and its automatic rollback on a real fleet. Off by default. The Admin service is exempt,
//! so a rollback can always move the host back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quiver_rpc::{Method, ServiceName, Wire};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What is injected into the calls served on one transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WireFaults {
    /// Added to every call before it is served.
    pub latency_ms: u64,
    /// Calls per thousand answered with an Unavailable error instead of being served, spread
    /// evenly (not at random).
    pub errors_per_mille: u32,
}

/// Injected faults per transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InjectedFaults {
    pub grpc: WireFaults,
    pub iroh: WireFaults,
}

impl InjectedFaults {
    fn on(&self, wire: Wire) -> WireFaults {
        match wire {
            Wire::Grpc => self.grpc,
            Wire::Iroh => self.iroh,
        }
    }
}

/// The injector the transport adapters consult before serving a call.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    config: InjectedFaults,
    calls: Arc<AtomicU64>,
}

impl Faults {
    pub fn new(config: InjectedFaults) -> Self {
        Faults {
            config,
            calls: Arc::default(),
        }
    }

    /// Delays the call and may refuse it, as configured for `wire`.
    pub async fn apply(&self, wire: Wire, method: Method) -> Result<()> {
        let faults = self.config.on(wire);
        if method.service() == ServiceName::Admin || faults == WireFaults::default() {
            return Ok(());
        }
        if faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
        }
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        if fails(call, faults.errors_per_mille) {
            return Err(Error::Injected(wire.as_str()));
        }
        Ok(())
    }
}

/// Whether call number `n` is one of the `per_mille` in every thousand that fail: the failures
/// are spread evenly, so any 1000 consecutive calls hold exactly `per_mille` of them.
fn fails(n: u64, per_mille: u32) -> bool {
    let rate = u64::from(per_mille.min(1000));
    (n + 1) * rate / 1000 > n * rate / 1000
}

/// `WIRE=N` (`iroh=40`) of the `--inject-*` flags.
///
/// # Errors
/// No `=`, a transport other than grpc or iroh, or N not a number.
pub fn parse_wire_value(text: &str) -> std::result::Result<(Wire, u64), String> {
    let (wire, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not WIRE=N (for example iroh=40)"))?;
    let wire = match wire {
        "grpc" => Wire::Grpc,
        "iroh" => Wire::Iroh,
        other => return Err(format!("unknown transport {other:?}: grpc or iroh")),
    };
    let value = value
        .parse()
        .map_err(|e| format!("{value:?} in {text:?}: {e}"))?;
    Ok((wire, value))
}

impl InjectedFaults {
    /// Mutable faults of `wire`, for the flags.
    pub fn wire_mut(&mut self, wire: Wire) -> &mut WireFaults {
        match wire {
            Wire::Grpc => &mut self.grpc,
            Wire::Iroh => &mut self.iroh,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_exactly_the_rate_in_every_thousand_calls() {
        for per_mille in [0, 1, 7, 100, 333, 999, 1000] {
            for start in [0, 12_345] {
                let failed = (start..start + 1000)
                    .filter(|n| fails(*n, per_mille))
                    .count();
                assert_eq!(failed, per_mille as usize, "rate {per_mille} from {start}");
            }
        }
    }

    #[test]
    fn a_rate_above_a_thousand_fails_everything() {
        assert!((0..100).all(|n| fails(n, 5000)));
    }

    #[tokio::test(start_paused = true)]
    async fn latency_and_errors_apply_to_their_transport_only_and_never_to_admin() {
        let faults = Faults::new(InjectedFaults {
            iroh: WireFaults {
                latency_ms: 40,
                errors_per_mille: 1000,
            },
            ..InjectedFaults::default()
        });
        let started = tokio::time::Instant::now();
        assert!(faults.apply(Wire::Grpc, Method::GetStatus).await.is_ok());
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(
            faults
                .apply(Wire::Iroh, Method::SetTransports)
                .await
                .is_ok()
        );
        let refused = faults.apply(Wire::Iroh, Method::GetStatus).await;
        assert!(
            matches!(refused, Err(Error::Injected("iroh"))),
            "{refused:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_millis(40));
    }

    #[test]
    fn flag_values_name_their_transport() {
        assert_eq!(parse_wire_value("iroh=40"), Ok((Wire::Iroh, 40)));
        assert!(
            parse_wire_value("quic=4")
                .unwrap_err()
                .contains("unknown transport")
        );
        assert!(parse_wire_value("grpc").unwrap_err().contains("WIRE=N"));
        assert!(parse_wire_value("grpc=x").is_err());
    }
}
