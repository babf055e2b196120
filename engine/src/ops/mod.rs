//! Operations surface: the metrics registry and its Prometheus rendering
//! ([`metrics`]), the HTTP endpoint for `/metrics`, `/healthz` and
//! `/readyz` on a glommio executor ([`http`]), queue-length alerts
//! ([`alerts`]), the admin socket ([`admin`]) and its CLI `tern ctl`
//! ([`ctl`]). docs/OPERATIONS.md is the operator's guide to all of it.

pub mod admin;
pub mod alerts;
pub mod ctl;
pub mod http;
pub mod metrics;

pub use admin::{AdminHandler, AdminServer};
pub use alerts::{AlertEvent, AlertRules, AlertWatcher, Alerts, QueueKind};
pub use ctl::{run_ctl, CtlArgs};
pub use http::{serve, OpsState};
pub use metrics::{render_prometheus, Metrics, ShardGauges, ShardMetrics};
