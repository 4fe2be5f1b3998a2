//! The SageMaker runtime API's InvokeEndpointAsync: `POST /endpoints/{EndpointName}/
//! async-invocations`. The request names its input (`X-Amzn-SageMaker-InputLocation`: an
//! `s3://` object, or a file under the artifact roots); the job is committed to the queue and
//! answered 202 with its inference id and where its output and failure will appear. The
//! queue runner (`fleet::async_jobs`) does the work.

use super::invoke::text_header;
use super::server::Server;
use crate::error::ApiError;
use crate::ops::endpoint_configs::output_directory;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use plinth_policy::async_inference::{
    failure_location, output_location, seconds, INVOCATION_TIMEOUT_SECONDS, MAX_INFERENCE_ID_LEN,
    TTL_SECONDS,
};
use serde_json::json;
use std::sync::Arc;

/// InvokeEndpointAsync's members Plinth does not implement yet, by header.
const REFUSED: [(&str, &str); 2] = [
    (
        "x-amzn-sagemaker-s3outputpathextension",
        "S3OutputPathExtension",
    ),
    ("x-amzn-sagemaker-filename", "Filename"),
];

/// InvokeEndpointAsync.
pub(crate) async fn invoke_async(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    match accept(&server, &name, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn accept(
    server: &Server,
    name: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let header = |name: &str| headers.get(name);
    for (h, member) in REFUSED {
        if header(h).is_some() {
            return Err(ApiError::validation(format!(
                "{member} is not supported by Plinth; leave it out (results go to \
                 <S3OutputPath>/<InferenceId>.out)"
            )));
        }
    }
    let inline = axum::body::to_bytes(body, 1)
        .await
        .map_or(true, |b| !b.is_empty());
    if inline {
        return Err(ApiError::validation(
            "Body (an inline input) is not supported by Plinth; put the input in storage and \
             give InputLocation",
        ));
    }
    let input = text_header(
        header("x-amzn-sagemaker-inputlocation"),
        "InputLocation",
        1024,
    )?
    .ok_or_else(|| ApiError::validation("InputLocation is required"))?;
    let content_type = text_header(header("x-amzn-sagemaker-content-type"), "ContentType", 1024)?;
    let accept = text_header(header("x-amzn-sagemaker-accept"), "Accept", 1024)?;
    let custom_attributes = text_header(
        header("x-amzn-sagemaker-custom-attributes"),
        "CustomAttributes",
        1024,
    )?;
    let given_id = text_header(
        header("x-amzn-sagemaker-inference-id"),
        "InferenceId",
        MAX_INFERENCE_ID_LEN,
    )?;
    if given_id.is_some_and(|id| id.is_empty() || id.contains('/')) {
        return Err(ApiError::validation(
            "InferenceId must be 1-64 visible characters, without '/'",
        ));
    }
    let ttl = seconds(
        "RequestTTLSeconds",
        text_header(
            header("x-amzn-sagemaker-requestttlseconds"),
            "RequestTTLSeconds",
            32,
        )?,
        TTL_SECONDS,
    )
    .map_err(|e| ApiError::validation(e.0))?;
    let timeout = seconds(
        "InvocationTimeoutSeconds",
        text_header(
            header("x-amzn-sagemaker-invocationtimeoutseconds"),
            "InvocationTimeoutSeconds",
            32,
        )?,
        INVOCATION_TIMEOUT_SECONDS,
    )
    .map_err(|e| ApiError::validation(e.0))?;

    let fleet = &server.fleet;
    let endpoint = fleet
        .endpoints
        .get(name)
        .ok_or_else(|| ApiError::endpoint_not_found(name))?;
    if endpoint.variants.is_empty() {
        return Err(ApiError::validation(format!(
            "Endpoint {name} is {}, not InService; it cannot be invoked",
            endpoint.status.as_str()
        )));
    }
    let config =
        crate::fleet::async_jobs::config_of(fleet, &endpoint.config_name).ok_or_else(|| {
            ApiError::validation(format!(
                "Endpoint {name} is not an asynchronous endpoint: its endpoint config \
                 {} has no AsyncInferenceConfig",
                endpoint.config_name
            ))
        })?;
    let input = if input.starts_with("s3://") {
        input.to_string()
    } else {
        // Opened to look at (not read): where it really is, and what it is.
        let (file, path) = fleet
            .stored
            .roots
            .open("InputLocation", input, false)
            .map_err(ApiError::validation)?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(ApiError::validation(format!(
                "InputLocation {input:?} is not a file"
            )));
        }
        path
    };
    if input.starts_with("s3://") {
        plinth_storage::Location::parse(&input)
            .map_err(|e| ApiError::validation(format!("InputLocation {input:?}: {e}")))?;
    }
    let output_path = config
        .output_config
        .s3_output_path
        .as_deref()
        .unwrap_or_default();
    // Checked at CreateEndpointConfig; a local directory gone since is refused here.
    output_directory(&fleet.stored, "S3OutputPath", output_path)?;
    // The objects are named by a fresh id, as SageMaker names them: the client's InferenceId
    // is for tracking and need not be unique.
    let object = uuid::Uuid::new_v4().to_string();
    let id = given_id.map_or_else(|| object.clone(), str::to_string);
    let output = output_location(output_path, &object);
    let failure = failure_location(
        output_path,
        config.output_config.s3_failure_path.as_deref(),
        &object,
    );
    let job = json!({
        "InferenceId": id,
        "InputLocation": input,
        "OutputLocation": output,
        "FailureLocation": failure,
        "ContentType": content_type.unwrap_or_default(),
        "Accept": accept.unwrap_or_default(),
        "CustomAttributes": custom_attributes,
        "RequestTTLSeconds": ttl,
        "InvocationTimeoutSeconds": timeout,
        "EndpointConfigName": endpoint.config_name,
        // Where its end is notified, as configured when it was accepted.
        "Notification": config.output_config.notification_config,
    });
    let write = crate::state::queue::QueueWrite::Insert {
        endpoint: name.to_owned(),
        id: object.clone(),
        accepted: crate::state::now(),
        job,
    };
    crate::fleet::async_jobs::commit(fleet, write, None)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure",
                e.to_string(),
            )
        })?;
    fleet.async_jobs.wake();
    tracing::debug!(endpoint = %name, inference_id = %id, "asynchronous request queued");
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "InferenceId": id })),
    )
        .into_response();
    let h = response.headers_mut();
    for (name, value) in [
        ("x-amzn-sagemaker-outputlocation", &output),
        ("x-amzn-sagemaker-failurelocation", &failure),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            h.insert(name, value);
        }
    }
    Ok(response)
}
