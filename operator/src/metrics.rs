//! The operator's Prometheus metrics (prometheus-client) and its HTTP endpoint: `/metrics`
//! (OpenMetrics text) and `/healthz`.
//!
//! - `quiver_reconcile_total{controller, result}` and `quiver_reconcile_duration_seconds{controller}`:
//!   every reconcile of the MicroVM and Host controllers; `result` is `ok` or the error kind
//!   ([`crate::Error::metric_label`]).
//! - `quiver_operator_leading`: 1 while this replica holds the lease and runs the controllers.
//! - `quiver_microvms{phase}` and `quiver_hosts{ready}`: counted from the controllers' caches at
//!   each scrape, while leading.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use quiver_crds::condition::READY;
use quiver_crds::{Host, MicroVM};

type Labels = Vec<(&'static str, String)>;

/// Everything the operator exports; one per process, shared by reconciles and the endpoint.
pub struct OperatorMetrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
    leading: Gauge,
    caches: Arc<Caches>,
}

impl fmt::Debug for OperatorMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorMetrics").finish_non_exhaustive()
    }
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<Labels, Counter>::default();
        registry.register(
            "quiver_reconcile",
            "Reconciles, by controller and result (ok or the error kind)",
            reconciles.clone(),
        );
        let durations = Family::<Labels, Histogram>::new_with_constructor(|| {
            // 1 ms to about 16 s.
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register(
            "quiver_reconcile_duration_seconds",
            "Time of one reconcile, by controller",
            durations.clone(),
        );
        let leading = Gauge::default();
        registry.register(
            "quiver_operator_leading",
            "1 while this replica holds the lease and runs the controllers",
            leading.clone(),
        );
        let caches = Arc::new(Caches::default());
        registry.register_collector(Box::new(caches.clone()));
        Self {
            registry,
            reconciles,
            durations,
            leading,
            caches,
        }
    }
}

impl OperatorMetrics {
    /// Records one reconcile of `controller` that took `elapsed` and ended in `result`
    /// (`ok` or an error kind).
    pub fn reconciled(&self, controller: &'static str, elapsed: Duration, result: &'static str) {
        let by_result = vec![
            ("controller", controller.to_owned()),
            ("result", result.to_owned()),
        ];
        self.reconciles.get_or_create(&by_result).inc();
        let by_controller = vec![("controller", controller.to_owned())];
        self.durations
            .get_or_create(&by_controller)
            .observe(elapsed.as_secs_f64());
    }

    /// The controllers started (with their caches) or stopped (`None`).
    pub fn leading(&self, caches: Option<(Store<MicroVM>, Store<Host>)>) {
        self.leading.set(i64::from(caches.is_some()));
        *self
            .caches
            .stores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = caches;
    }

    /// The OpenMetrics text of everything above.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts from the controllers' caches, taken at scrape time.
#[derive(Default)]
struct Caches {
    stores: Mutex<Option<(Store<MicroVM>, Store<Host>)>>,
}

impl fmt::Debug for Caches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

impl Collector for Caches {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let stores = self
            .stores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some((vms, hosts)) = stores else {
            return Ok(());
        };
        let mut phases = std::collections::BTreeMap::<String, u64>::new();
        for vm in vms.state() {
            let phase = vm
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .map_or_else(|| "Unknown".to_owned(), |p| format!("{p:?}"));
            *phases.entry(phase).or_default() += 1;
        }
        let mut metric = encoder.encode_descriptor(
            "quiver_microvms",
            "MicroVMs by status.phase",
            None,
            MetricType::Gauge,
        )?;
        for (phase, count) in &phases {
            metric
                .encode_family(&[("phase", phase.as_str())])?
                .encode_gauge(count)?;
        }
        let mut ready = std::collections::BTreeMap::<&str, u64>::new();
        for host in hosts.state() {
            let status = host
                .status
                .as_ref()
                .and_then(|s| s.condition(READY))
                .map_or(
                    "Unknown",
                    |c| if c.status == "True" { "true" } else { "false" },
                );
            *ready.entry(status).or_default() += 1;
        }
        let mut metric = encoder.encode_descriptor(
            "quiver_hosts",
            "Hosts by their Ready condition",
            None,
            MetricType::Gauge,
        )?;
        for (status, count) in &ready {
            metric
                .encode_family(&[("ready", *status)])?
                .encode_gauge(count)?;
        }
        Ok(())
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `/metrics` and `/healthz` on `listener` until the process ends.
pub async fn serve(metrics: Arc<OperatorMetrics>, listener: tokio::net::TcpListener) {
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let body = metrics.render();
                async move { ([(CONTENT_TYPE, OPENMETRICS)], body) }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics server stopped");
    }
}

/// Binds `address` for [`serve`].
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(address: SocketAddr) -> crate::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| crate::Error::io(format!("metrics address {address}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_and_timed_per_controller() {
        let m = OperatorMetrics::default();
        m.reconciled("microvm", Duration::from_millis(3), "ok");
        m.reconciled("microvm", Duration::from_millis(3), "ok");
        m.reconciled("host", Duration::from_secs(1), "unreachable");
        let text = m.render();
        for line in [
            "quiver_reconcile_total{controller=\"microvm\",result=\"ok\"} 2",
            "quiver_reconcile_total{controller=\"host\",result=\"unreachable\"} 1",
            "quiver_reconcile_duration_seconds_count{controller=\"microvm\"} 2",
            "quiver_operator_leading 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
