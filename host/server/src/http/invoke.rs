//! The SageMaker runtime API: `POST /endpoints/{EndpointName}/invocations` (InvokeEndpoint).

use super::body::read_body;
use super::server::Server;
use crate::error::ApiError;
use crate::fleet::variant::{record_invocation, record_refusal, LiveVariant};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use plinth_policy::members::{invoke_error, refused_header, InvokeMember};
use plinth_runtime::{Invocation, InvocationOutput, InvokeError};
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
    pub(super) const TARGET_MODEL: HeaderName =
        HeaderName::from_static("x-amzn-sagemaker-target-model");
    pub(super) const TARGET_CONTAINER: HeaderName =
        HeaderName::from_static("x-amzn-sagemaker-target-container-hostname");
    pub(super) const INVOKED_VARIANT: HeaderName =
        HeaderName::from_static("x-amzn-invoked-production-variant");
    pub(super) const ASSIGNMENT_KEY: HeaderName =
        HeaderName::from_static("x-plinth-assignment-key");
    /// Response: the endpoint config of the fleet that served the request.
    pub(super) const ENDPOINT_CONFIG: HeaderName =
        HeaderName::from_static("x-plinth-endpoint-config");
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
    target_model: Option<&'a HeaderValue>,
    target_container: Option<&'a HeaderValue>,
    inference_id: Option<&'a HeaderValue>,
    assignment_key: Option<&'a HeaderValue>,
    /// The first SageMaker header Plinth does not implement
    /// (`X-Amzn-SageMaker-Enable-Explanations`...).
    refused: Option<&'static InvokeMember>,
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
            } else if name == header::TARGET_MODEL {
                &mut found.target_model
            } else if name == header::TARGET_CONTAINER {
                &mut found.target_container
            } else if name == header::INFERENCE_ID {
                &mut found.inference_id
            } else if name == header::ASSIGNMENT_KEY {
                &mut found.assignment_key
            } else {
                if found.refused.is_none() {
                    found.refused = refused_header(name.as_str());
                }
                continue;
            };
            slot.get_or_insert(value);
        }
        found
    }
}

/// A header as text, at most `max` characters of visible ASCII (`shown`: its name in
/// messages).
pub(super) fn text_header<'a>(
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

/// InvokeEndpoint. Every answer, an error too, carries the request's inference id (the
/// client's `X-Amzn-SageMaker-Inference-Id`, or one made here when it sent none or an invalid
/// one), so that a client can match any answer to the server's log lines.
pub(crate) async fn invoke(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let started = std::time::Instant::now();
    // The request taken apart rather than its headers extracted: that would copy them.
    let (parts, body) = request.into_parts();
    let found = InvokeHeaders::of(&parts.headers);
    let given = match text_header(found.inference_id, "InferenceId", 64) {
        Ok(Some("")) => Err(ApiError::validation("InferenceId must not be empty")),
        Ok(id) => Ok(id),
        Err(e) => Err(e),
    };
    let inference_id = match given {
        Ok(Some(id)) => id.to_string(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    let answered = match given {
        Ok(given) => {
            let id = Id {
                id: &inference_id,
                given: given.is_some(),
            };
            serve(&server, &name, body, &found, id, started).await
        }
        Err(e) => Err(e),
    };
    let mut response = answered.unwrap_or_else(IntoResponse::into_response);
    insert(response.headers_mut(), header::INFERENCE_ID, inference_id);
    response
}

/// A request's inference id, and whether the client gave it (data capture records only a
/// given one).
#[derive(Clone, Copy)]
struct Id<'a> {
    id: &'a str,
    given: bool,
}

/// Serve one invocation whose inference id is known.
async fn serve(
    server: &Server,
    name: &str,
    body: axum::body::Body,
    found: &InvokeHeaders<'_>,
    id: Id<'_>,
    started: std::time::Instant,
) -> Result<Response, ApiError> {
    let inference_id = id.id;
    if let Some(member) = found.refused {
        return Err(ApiError::validation(invoke_error(member).message));
    }
    let endpoint = server
        .fleet
        .endpoints
        .get(name)
        .ok_or_else(|| ApiError::endpoint_not_found(name))?;
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
        server.max_payload_bytes,
        " or raise server.max_payload_bytes",
    )
    .await?;

    let content_type = text_header(found.content_type, "ContentType", 1024)?.unwrap_or("");
    let accept = text_header(found.accept, "Accept", 1024)?.unwrap_or("");
    let custom_attributes = text_header(found.custom_attributes, "CustomAttributes", 1024)?;
    let target = text_header(found.target_variant, "TargetVariant", 63)?;
    let target_model = text_header(
        found.target_model,
        "TargetModel",
        plinth_policy::model_cache::MAX_TARGET_MODEL_LEN,
    )?;
    let target_container = text_header(
        found.target_container,
        "TargetContainerHostname",
        plinth_policy::pipeline::MAX_HOSTNAME_LEN,
    )?;
    let targets = Targets {
        model: target_model,
        container: target_container,
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
            server
                .fleet
                .metrics
                .errors_4xx
                .with_label_values(&[endpoint.name.as_str(), ""])
                .inc();
            return Err(ApiError::validation(e.to_string()));
        }
    };
    let (mut variant, mut config_name, mut experiment, mut shadows, mut capture) = (
        routed.variant.clone(),
        HeaderValue::from_str(routed.config_name).ok(),
        routed.experiment.cloned(),
        routed.shadows.to_vec(),
        routed.capture.cloned(),
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
        inference_id: inference_id.to_string(),
        deadline: None,
        custom_attributes: custom_attributes.map(str::to_string),
    });
    let mut result = invoke_on(&variant, &targets, request.clone())
        .instrument(span.clone())
        .await;
    if target.is_none() && matches!(result, Ok(Err(InvokeError::NoInstances(_)))) {
        // The variant was scaled to zero (or its fleet rolled back) after this request read
        // the snapshot: route it again on the current one.
        if let Some(current) = server.fleet.endpoints.get(name) {
            if let Ok(next) = current.route(None, assignment_key) {
                span.record("variant", next.variant.name.as_str());
                variant = next.variant.clone();
                config_name = HeaderValue::from_str(next.config_name).ok();
                experiment = next.experiment.cloned();
                shadows = next.shadows.to_vec();
                capture = next.capture.cloned();
                result = invoke_on(&variant, &targets, request.clone())
                    .instrument(span.clone())
                    .await;
            }
        }
    }
    let _entered = span.enter();
    let result = match result {
        Ok(result) => result,
        Err(refused) => {
            record_refusal(&variant, &refused, started);
            tracing::warn!(
                endpoint = %endpoint.name,
                variant = %variant.name,
                inference_id = %inference_id,
                target_model = ?target_model,
                target_container = ?target_container,
                status = refused.status().as_u16(),
                error = %refused.message(),
                "invocation refused"
            );
            if let Some(experiment) = &experiment {
                server.fleet.experiments.failed(experiment, &variant.name);
            }
            let mut response = refused.into_response();
            let h = response.headers_mut();
            h.insert(header::INVOKED_VARIANT, variant.name_header.clone());
            if let Some(config_name) = config_name {
                h.insert(header::ENDPOINT_CONFIG, config_name);
            }
            return Ok(response);
        }
    };
    let api_error = record_invocation(&variant, &result, started);
    for shadow in &shadows {
        shadow.offer(&request, result.as_ref().ok());
    }
    match result {
        Ok(output) => {
            if let Some(experiment) = &experiment {
                server.fleet.experiments.served(
                    experiment,
                    &variant.name,
                    inference_id,
                    output.model_latency,
                );
            }
            tracing::debug!(
                status = 200,
                model_ms = output.model_latency.as_secs_f64() * 1e3,
                total_ms = started.elapsed().as_secs_f64() * 1e3,
                "invocation served"
            );
            let body = bytes::Bytes::from(output.body);
            if let Some(capture) = &capture {
                let given = id.given.then_some(inference_id);
                capture.offer(
                    &variant.name,
                    &request,
                    given,
                    &output.content_type,
                    &body,
                    started,
                );
            }
            let mut response = (StatusCode::OK, body).into_response();
            let h = response.headers_mut();
            // The runtime validated the content type and custom attributes as visible ASCII.
            insert(h, axum::http::header::CONTENT_TYPE, output.content_type);
            h.insert(header::INVOKED_VARIANT, variant.name_header.clone());
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
                server.fleet.experiments.failed(experiment, &variant.name);
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

/// What a request names within a variant: its model (`TargetModel`) and container
/// (`TargetContainerHostname`).
struct Targets<'a> {
    model: Option<&'a str>,
    container: Option<&'a str>,
}

/// Serve `request` on `variant`: on its pool, on the pool of the model it names
/// (`TargetModel`, for a multi-model variant: loaded first if it is not), or on its
/// pipeline's containers (all in order, or the one `TargetContainerHostname` names). The
/// outer error is the variant's refusal before any model ran.
async fn invoke_on(
    variant: &LiveVariant,
    targets: &Targets<'_>,
    request: Arc<Invocation>,
) -> Result<Result<InvocationOutput, InvokeError>, ApiError> {
    let held = variant
        .serving
        .hold(
            targets.model,
            targets.container,
            &variant.name,
            &variant.model_name,
        )
        .await?;
    Ok(held.invoke(request).await)
}

/// Set a response header; a value that is not a valid header value is left out. An owned
/// `String` becomes the header value without a copy.
fn insert<V: TryInto<HeaderValue>>(headers: &mut HeaderMap, name: HeaderName, value: V) {
    if let Ok(value) = value.try_into() {
        headers.insert(name, value);
    }
}
