//! The wire: the router, the SageMaker runtime API (InvokeEndpoint), the control plane's
//! awsJson1.1 protocol, SigV4 authentication, `/ping` and `/metrics`. Requests are taken
//! apart here and handed to the operations (`ops`) or to the live fleet (`fleet`); nothing
//! below this layer knows about HTTP requests.

pub(crate) mod auth;
pub(crate) mod control;
pub(crate) mod invoke;

use crate::error::ApiError;
use crate::fleet::Fleet;
use crate::sigv4::Verifier;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// What the HTTP layer holds: the fleet it serves and controls, and its own limits.
pub struct Server {
    pub(crate) fleet: Arc<Fleet>,
    /// The largest InvokeEndpoint body (`server.max_payload_bytes`).
    pub(crate) max_payload_bytes: usize,
    /// `None`: unauthenticated (loopback only).
    pub(crate) verifier: Option<Verifier>,
}

impl Server {
    /// The HTTP layer over `fleet`.
    pub(crate) fn new(
        fleet: Arc<Fleet>,
        max_payload_bytes: usize,
        verifier: Option<Verifier>,
    ) -> Self {
        Self {
            fleet,
            max_payload_bytes,
            verifier,
        }
    }
}

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

/// Read a request body of at most `limit` bytes; a larger one is a 413 `ValidationError`
/// (`what` names the limit in the message).
pub(crate) async fn read_body(
    content_length: Option<&HeaderValue>,
    body: Body,
    limit: usize,
    what: &str,
) -> Result<axum::body::Bytes, ApiError> {
    let too_big = |size: String| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ValidationError",
            format!(
                "Request body of {size} bytes exceeds the limit of {limit} bytes; send a smaller \
                 payload{what}"
            ),
        )
    };
    let declared = content_length
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(declared) = declared.filter(|d| *d > limit) {
        return Err(too_big(declared.to_string()).closing());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_big(format!("more than {limit}")).closing())
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
