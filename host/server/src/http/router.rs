//! The router: which path goes where, signatures required on the control plane and
//! InvokeEndpoint when credentials are configured; `/ping` and `/metrics` (Prometheus text,
//! per-variant gauges read from the live table).

use super::server::Server;
use super::{auth, control, invoke};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// The router. The control plane and InvokeEndpoint require a signature when credentials
/// are configured (without them, the check is not in the path at all); `/ping` and
/// `/metrics` do not.
pub fn app(server: Arc<Server>) -> Router {
    let mut signed = Router::new()
        .route("/", post(control::control))
        .route("/endpoints/{name}/invocations", post(invoke::invoke));
    if server.verifier.is_some() {
        signed = signed.route_layer(axum::middleware::from_fn_with_state(
            server.clone(),
            auth::require_signature,
        ));
    }
    Router::new()
        .route("/ping", get(ping))
        .route("/metrics", get(metrics))
        .merge(signed)
        .with_state(server)
}

/// Prometheus text exposition. Per-variant gauges are read from the live table.
async fn metrics(State(server): State<Arc<Server>>) -> Response {
    let m = &server.fleet.metrics;
    m.reset_gauges();
    for endpoint in server.fleet.endpoints.all().values() {
        if let Some(new) = &endpoint.new_fleet {
            m.new_fleet_share
                .with_label_values(&[endpoint.name.as_str()])
                .set(new.share);
        }
        // Both fleets of a deployment, and shadows: a variant name in two fleets sums.
        let shadows = endpoint.shadows.iter().map(|s| &s.live);
        for live in endpoint.serving().map(|v| &v.live).chain(shadows) {
            let labels = [endpoint.name.as_str(), live.name.as_str()];
            let stats = live.pool.stats();
            for (gauge, value) in [
                (&m.instances, stats.instances),
                (&m.instances_busy, stats.busy),
                (&m.queue_depth, stats.queued),
                (&m.instances_replaced, stats.replaced),
                (&m.batches, stats.batches),
                (&m.batched_requests, stats.batched_requests),
                (&m.log_lines_dropped, stats.log_lines_dropped as usize),
                (&m.log_bytes_dropped, stats.log_bytes_dropped as usize),
            ] {
                gauge.with_label_values(&labels).add(value as i64);
            }
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], m.render()).into_response()
}

/// Health check, as SageMaker's container contract: 200 with an empty body.
async fn ping() -> StatusCode {
    StatusCode::OK
}
