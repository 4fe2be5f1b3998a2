//! The SageMaker runtime API: `POST /endpoints/{EndpointName}/invocations` and `GET /ping`.

use crate::endpoints::EndpointTable;
use crate::error::ApiError;
use crate::metrics::Metrics;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use plinth_runtime::{Invocation, InvokeError};
use std::sync::Arc;
use tracing::Instrument;

/// Headers of InvokeEndpoint (names as HTTP/1 sends them, lower case).
mod header {
    use axum::http::HeaderName;

    pub(super) const CUSTOM_ATTRIBUTES: HeaderName =
        HeaderName::from_static("x-amzn-sagemaker-custom-attributes");
    pub(super) const INFERENCE_ID: HeaderName =
        HeaderName::from_static("x-amzn-sagemaker-inference-id");
    pub(super) const TARGET_VARIANT: HeaderName =
        HeaderName::from_static("x-amzn-sagemaker-target-variant");
    pub(super) const INVOKED_VARIANT: HeaderName =
        HeaderName::from_static("x-amzn-invoked-production-variant");
    pub(super) const ASSIGNMENT_KEY: HeaderName =
        HeaderName::from_static("x-plinth-assignment-key");
    /// Response: the endpoint config of the fleet that served the request.
    pub(super) const ENDPOINT_CONFIG: HeaderName =
        HeaderName::from_static("x-plinth-endpoint-config");
}

/// The largest control-plane request body.
pub(crate) const CONTROL_BODY_LIMIT: usize = 1 << 20;

/// Shared state of the HTTP server.
pub(crate) struct AppState {
    pub(crate) runtime: Arc<plinth_runtime::Runtime>,
    /// Models and endpoint configs, as committed to `store`.
    pub(crate) catalog: std::sync::Mutex<crate::catalog::Catalog>,
    pub(crate) store: crate::store::Store,
    /// Where `.tar.gz` model artifacts are unpacked.
    pub(crate) artifacts: std::path::PathBuf,
    pub(crate) endpoints: EndpointTable,
    pub(crate) max_payload_bytes: usize,
    /// Instances all endpoints together may ask for (`ResourceLimitExceeded` beyond).
    pub(crate) max_instances: usize,
    /// Experiments and the inference ledger.
    pub(crate) experiments: crate::experiments::Experiments,
    /// `None`: unauthenticated (loopback only).
    pub(crate) verifier: Option<crate::sigv4::Verifier>,
    pub(crate) metrics: Metrics,
    /// Control-plane changes happen one at a time.
    pub(crate) updates: tokio::sync::Mutex<()>,
}

/// The router; `state` holds the endpoint table. The control plane and InvokeEndpoint
/// require a signature when credentials are configured (without them, the check is not in
/// the path at all); `/ping` and `/metrics` do not.
pub(crate) fn app(state: Arc<AppState>) -> Router {
    let mut signed = Router::new()
        .route("/", post(control))
        .route("/endpoints/{name}/invocations", post(invoke));
    if state.verifier.is_some() {
        signed = signed.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_signature,
        ));
    }
    Router::new()
        .route("/ping", get(ping))
        .route("/metrics", get(metrics))
        .merge(signed)
        .with_state(state)
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

/// `POST /`: a control-plane operation named by `X-Amz-Target`.
async fn control(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(operation) = target.strip_prefix("SageMaker.") else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("X-Amz-Target {target:?} is not a SageMaker operation"),
        )
        .into_response();
    };
    let content_length = headers.get(axum::http::header::CONTENT_LENGTH);
    let body = match read_body(content_length, body, CONTROL_BODY_LIMIT, "").await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let input: serde_json::Value = if body.is_empty() {
        serde_json::json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "SerializationException",
                    format!("the request body is not valid JSON: {e}"),
                )
                .into_response()
            }
        }
    };
    match crate::control::call(&state, operation, input).await {
        Ok(output) => (
            [("content-type", "application/x-amz-json-1.1")],
            axum::Json(output),
        )
            .into_response(),
        Err(e) => {
            tracing::info!(operation, error = %e.message(), "control-plane call refused");
            e.into_response()
        }
    }
}

/// Prometheus text exposition. Per-variant gauges are read from the live table.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.metrics;
    m.reset_gauges();
    for endpoint in state.endpoints.all().values() {
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

/// The request headers InvokeEndpoint reads, found in one pass over the request's headers:
/// a lookup by name hashes the name, and most of these names are over 25 bytes long. As with
/// a lookup, the first of repeated headers counts.
#[derive(Default)]
struct InvokeHeaders<'a> {
    content_length: Option<&'a HeaderValue>,
    content_type: Option<&'a HeaderValue>,
    accept: Option<&'a HeaderValue>,
    custom_attributes: Option<&'a HeaderValue>,
    target_variant: Option<&'a HeaderValue>,
    inference_id: Option<&'a HeaderValue>,
    assignment_key: Option<&'a HeaderValue>,
}

impl<'a> InvokeHeaders<'a> {
    fn of(headers: &'a HeaderMap) -> Self {
        use axum::http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
        let mut found = Self::default();
        for (name, value) in headers {
            let slot = if name == CONTENT_LENGTH {
                &mut found.content_length
            } else if name == CONTENT_TYPE {
                &mut found.content_type
            } else if name == ACCEPT {
                &mut found.accept
            } else if name == header::CUSTOM_ATTRIBUTES {
                &mut found.custom_attributes
            } else if name == header::TARGET_VARIANT {
                &mut found.target_variant
            } else if name == header::INFERENCE_ID {
                &mut found.inference_id
            } else if name == header::ASSIGNMENT_KEY {
                &mut found.assignment_key
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        found
    }
}

/// A header as text, at most `max` characters of visible ASCII (`shown`: its name in
/// messages).
fn text_header<'a>(
    value: Option<&'a HeaderValue>,
    shown: &str,
    max: usize,
) -> Result<Option<&'a str>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::validation(format!("{shown} must be ASCII text")))?;
    if text.len() > max {
        return Err(ApiError::validation(format!(
            "{shown} is {} characters long; the limit is {max}",
            text.len()
        )));
    }
    Ok(Some(text))
}

async fn invoke(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    // The request taken apart rather than its headers extracted: that would copy them.
    let (parts, body) = request.into_parts();
    let found = InvokeHeaders::of(&parts.headers);
    let endpoint = state
        .endpoints
        .get(&name)
        .ok_or_else(|| ApiError::endpoint_not_found(&name))?;
    if endpoint.variants.is_empty() {
        return Err(ApiError::validation(format!(
            "Endpoint {name} is {}, not InService; it cannot be invoked{}",
            endpoint.status.as_str(),
            endpoint
                .failure_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )));
    }
    let body = read_body(
        found.content_length,
        body,
        state.max_payload_bytes,
        " or raise server.max_payload_bytes",
    )
    .await?;

    let content_type = text_header(found.content_type, "ContentType", 1024)?.unwrap_or("");
    let accept = text_header(found.accept, "Accept", 1024)?.unwrap_or("");
    let custom_attributes = text_header(found.custom_attributes, "CustomAttributes", 1024)?;
    let target = text_header(found.target_variant, "TargetVariant", 63)?;
    let inference_id = match text_header(found.inference_id, "InferenceId", 64)? {
        Some("") => return Err(ApiError::validation("InferenceId must not be empty")),
        Some(id) => id.to_string(),
        None => uuid::Uuid::new_v4().to_string(),
    };

    let assignment_key = match text_header(found.assignment_key, "AssignmentKey", 256)? {
        Some(key) => Some(key),
        None => endpoint
            .experiment
            .as_ref()
            .and_then(|e| e.assignment_key(custom_attributes)),
    };
    let routed = match endpoint.route(target, assignment_key) {
        Ok(routed) => routed,
        Err(e) => {
            state
                .metrics
                .errors_4xx
                .with_label_values(&[endpoint.name.as_str(), ""])
                .inc();
            return Err(ApiError::validation(e.to_string()));
        }
    };
    let (mut variant, mut config_name, mut experiment, mut shadows) = (
        routed.variant.clone(),
        HeaderValue::from_str(routed.config_name).ok(),
        routed.experiment.cloned(),
        routed.shadows.to_vec(),
    );
    // A span costs about 1.5 µs a request, a tenth of a small model's whole request: it is
    // made at DEBUG. At the default level each log line of a request carries its endpoint,
    // variant and inference id as fields instead (guest output: `stdio::GuestOutput`).
    let span = tracing::debug_span!(
        "invoke",
        endpoint = %endpoint.name,
        variant = %variant.name,
        inference_id = %inference_id,
    );
    let request = Arc::new(Invocation {
        body,
        content_type: content_type.to_string(),
        accept: accept.to_string(),
        inference_id: inference_id.clone(),
        custom_attributes: custom_attributes.map(str::to_string),
    });
    let mut result = variant
        .pool
        .invoke(request.clone())
        .instrument(span.clone())
        .await;
    if target.is_none() && matches!(result, Err(InvokeError::NoInstances(_))) {
        // The variant was scaled to zero (or its fleet rolled back) after this request read
        // the snapshot: route it again on the current one.
        if let Some(current) = state.endpoints.get(&name) {
            if let Ok(next) = current.route(None, assignment_key) {
                span.record("variant", next.variant.name.as_str());
                variant = next.variant.clone();
                config_name = HeaderValue::from_str(next.config_name).ok();
                experiment = next.experiment.cloned();
                shadows = next.shadows.to_vec();
                result = variant
                    .pool
                    .invoke(request.clone())
                    .instrument(span.clone())
                    .await;
            }
        }
    }
    let _entered = span.enter();
    let api_error = record_invocation(&variant, &result, started);
    for shadow in &shadows {
        shadow.offer(&request, result.as_ref().ok());
    }
    match result {
        Ok(output) => {
            if let Some(experiment) = &experiment {
                state.experiments.served(
                    experiment,
                    &variant.name,
                    &inference_id,
                    output.model_latency,
                );
            }
            tracing::debug!(
                status = 200,
                model_ms = output.model_latency.as_secs_f64() * 1e3,
                total_ms = started.elapsed().as_secs_f64() * 1e3,
                "invocation served"
            );
            let mut response = (StatusCode::OK, output.body).into_response();
            let h = response.headers_mut();
            // The runtime validated the content type and custom attributes as visible ASCII.
            insert(h, axum::http::header::CONTENT_TYPE, output.content_type);
            h.insert(header::INVOKED_VARIANT, variant.name_header.clone());
            insert(h, header::INFERENCE_ID, inference_id);
            if let Some(config_name) = config_name {
                h.insert(header::ENDPOINT_CONFIG, config_name);
            }
            if let Some(attributes) = &output.custom_attributes {
                insert(h, header::CUSTOM_ATTRIBUTES, attributes);
            }
            Ok(response)
        }
        Err(_) => {
            if let Some(experiment) = &experiment {
                state.experiments.failed(experiment, &variant.name);
            }
            let api_error = api_error.expect("a failed invocation has an error");
            tracing::warn!(
                endpoint = %endpoint.name,
                variant = %variant.name,
                inference_id = %inference_id,
                status = api_error.status().as_u16(),
                error = %api_error.message(),
                "invocation failed"
            );
            let mut response = api_error.into_response();
            let h = response.headers_mut();
            h.insert(header::INVOKED_VARIANT, variant.name_header.clone());
            if let Some(config_name) = config_name {
                h.insert(header::ENDPOINT_CONFIG, config_name);
            }
            Ok(response)
        }
    }
}

/// Count one invocation of `variant` in its metrics and its alarm window (`started`: when
/// the request arrived); for a failure, the error to answer with.
pub(crate) fn record_invocation(
    variant: &crate::endpoints::LiveVariant,
    result: &Result<plinth_runtime::InvocationOutput, InvokeError>,
    started: std::time::Instant,
) -> Option<ApiError> {
    use plinth_policy::alarm::{second_of, Outcome, Sample};
    let now = std::time::Instant::now();
    let (total, second) = (now.saturating_duration_since(started), second_of(now));
    let m = &variant.metrics;
    m.invocations.inc();
    let instances = variant.pool.instances().max(1);
    m.invocations_per_instance.inc_by(1.0 / instances as f64);
    match result {
        Ok(output) => {
            let overhead = total.saturating_sub(output.model_latency);
            m.model_latency.observe(output.model_latency.as_secs_f64());
            m.overhead_latency.observe(overhead.as_secs_f64());
            variant.recent.record_at(
                second,
                &Sample {
                    outcome: Outcome::Success,
                    model_error: false,
                    model_latency: Some(output.model_latency),
                    overhead_latency: overhead,
                },
            );
            None
        }
        Err(error) => {
            let api_error = ApiError::from_invoke(error, &variant.name);
            if matches!(error, InvokeError::Throttled { .. }) {
                m.throttled.inc();
            }
            let model_error = error.original_status().is_some();
            if model_error {
                m.model_errors.inc();
            }
            let server_side = api_error.status().is_server_error()
                || matches!(error.original_status(), Some(0) | Some(500..));
            if server_side {
                m.errors_5xx.inc();
            } else {
                m.errors_4xx.inc();
            }
            variant.recent.record_at(
                second,
                &Sample {
                    outcome: if server_side {
                        Outcome::ServerError
                    } else {
                        Outcome::ClientError
                    },
                    model_error,
                    model_latency: None,
                    overhead_latency: total,
                },
            );
            Some(api_error)
        }
    }
}

/// Set a response header; a value that is not a valid header value is left out. An owned
/// `String` becomes the header value without a copy.
fn insert<V: TryInto<HeaderValue>>(headers: &mut HeaderMap, name: HeaderName, value: V) {
    if let Ok(value) = value.try_into() {
        headers.insert(name, value);
    }
}
