//! The router: which path goes where, signatures required on the control plane and
//! InvokeEndpoint when credentials are configured; `/ping` and `/metrics` (Prometheus text,
//! per-variant gauges read from the live table); a deadline on every request body
//! (`body.rs`).
//!
//! Without credentials (loopback only), every path but `/ping` requires a `Host` naming
//! loopback (`localhost`, `127.0.0.1`, `[::1]`, any port) and answers anything else 403:
//! a web page whose name was rebound to 127.0.0.1 (DNS rebinding) sends its own name as
//! `Host`, so it reaches neither the control plane, nor invocations, nor `/metrics`.
//! `/ping` stays open, as SageMaker's container contract has it (it reveals nothing). A
//! request without `Host` is let through: browsers always send one.

use super::server::Server;
use super::{auth, body, control, invoke, invoke_async};
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// The router. The control plane and InvokeEndpoint require a signature when credentials
/// are configured (without them, the check is not in the path at all); `/ping` and
/// `/metrics` do not. Without credentials, every path but `/ping` requires a loopback
/// `Host` (see the module header).
pub fn app(server: Arc<Server>) -> Router {
    let mut signed = Router::new()
        .route("/", post(control::control))
        .route("/endpoints/{name}/invocations", post(invoke::invoke))
        .route(
            "/endpoints/{name}/async-invocations",
            post(invoke_async::invoke_async),
        );
    let mut guarded = Router::new().route("/metrics", get(metrics));
    if server.verifier.is_some() {
        signed = signed.route_layer(axum::middleware::from_fn_with_state(
            server.clone(),
            auth::require_signature,
        ));
        guarded = guarded.merge(signed);
    } else {
        guarded = guarded
            .merge(signed)
            .route_layer(axum::middleware::from_fn(require_loopback_host));
    }
    let body_read_timeout = server.body_read_timeout;
    Router::new()
        .route("/ping", get(ping))
        .merge(guarded)
        .with_state(server)
        .layer(axum::middleware::map_request(move |request: Request| {
            let deadline = body_read_timeout;
            async move { request.map(|b| body::with_deadline(b, deadline)) }
        }))
}

/// Middleware: pass a request on only if its `Host` (when it has one) names loopback.
async fn require_loopback_host(request: Request, next: Next) -> Response {
    let host = request.headers().get(axum::http::header::HOST);
    if let Some(host) = host.filter(|h| !h.to_str().is_ok_and(is_loopback_host)) {
        let shown = String::from_utf8_lossy(host.as_bytes()).into_owned();
        tracing::warn!(host = %shown, path = %request.uri().path(), "request refused: Host is not loopback");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            format!(
                "Host {shown:?} is not loopback: without credentials this server answers only \
                 requests addressed to localhost, 127.0.0.1 or [::1] (this blocks DNS \
                 rebinding); use one of those names, or start it with --credentials"
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Whether a `Host` value is `localhost`, `127.0.0.1` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((name, "")) => return name == "::1",
            Some((name, port)) => {
                return name == "::1" && port.strip_prefix(':').is_some_and(is_port)
            }
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1"
}

/// Whether `s` is a port number.
fn is_port(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u16>().is_ok()
}

/// Prometheus text exposition. Per-variant gauges are read from the live table.
async fn metrics(State(server): State<Arc<Server>>) -> Response {
    let m = &server.fleet.metrics;
    m.reset_gauges();
    for endpoint in server.fleet.endpoints.all().values() {
        if crate::fleet::async_jobs::config_of(&server.fleet, &endpoint.config_name).is_some() {
            if let Some(backlog) = crate::fleet::async_jobs::backlog(&server.fleet, &endpoint.name)
            {
                use plinth_policy::async_inference::BacklogMetric as B;
                for (gauge, metric) in [
                    (&m.backlog, B::Size),
                    (&m.backlog_per_instance, B::SizePerInstance),
                    (&m.oldest_request_age, B::AgeOfOldestRequest),
                    (&m.backlog_without_capacity, B::HasBacklogWithoutCapacity),
                ] {
                    gauge
                        .with_label_values(&[endpoint.name.as_str()])
                        .set(metric.value(&backlog));
                }
            }
        }
        if let Some(new) = &endpoint.new_fleet {
            m.new_fleet_share
                .with_label_values(&[endpoint.name.as_str()])
                .set(new.share);
        }
        // Both fleets of a deployment, and shadows: a variant name in two fleets sums.
        let shadows = endpoint.shadows.iter().map(|s| &s.live);
        for live in endpoint.serving().map(|v| &v.live).chain(shadows) {
            let labels = [endpoint.name.as_str(), live.name.as_str()];
            let stats = live.serving.stats();
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
            if let Some((in_flight, _)) = live.serving.single().and_then(|p| p.elastic_stats()) {
                m.serverless_concurrency
                    .with_label_values(&labels)
                    .add(in_flight as i64);
            }
            if let crate::fleet::variant::Serving::Multi(cache) = &live.serving {
                let (count, bytes) = cache.usage();
                m.loaded_models.with_label_values(&labels).add(count as i64);
                m.model_cache_bytes
                    .with_label_values(&labels)
                    .add(bytes as i64);
                for (model, hits) in cache.hottest(crate::metrics::HOTTEST_MODELS) {
                    m.model_invocations
                        .with_label_values(&[labels[0], labels[1], model.as_str()])
                        .add(hits as i64);
                }
            }
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], m.render()).into_response()
}

/// Health check, as SageMaker's container contract: 200 with an empty body.
async fn ping() -> StatusCode {
    StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LocalHost:8080",
            "127.0.0.1",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:65535",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "127.0.0.2",
            "0.0.0.0:8080",
            "[::2]:80",
            "[::1]x",
            "localhost:",
            "localhost:99999",
            "::1",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
