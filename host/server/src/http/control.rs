//! The control plane's awsJson1.1 protocol: `POST /` with `X-Amz-Target:
//! SageMaker.<Op>` (SageMaker's operations and Plinth's) or
//! `AnyScaleFrontendService.<Op>` (Application Auto Scaling's) and a JSON body, answered
//! with the operation's JSON output or an AWS error; CloudWatch's calls on the same path
//! (its target prefix, or a form body) are handed to `cloudwatch`. The operations
//! themselves are `ops`.

use super::body::read_body;
use super::server::Server;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// `X-Amz-Target`'s prefix for Application Auto Scaling's operations.
pub(crate) const AUTOSCALING_PREFIX: &str = "AnyScaleFrontendService.";

/// The largest control-plane request body.
pub(crate) const CONTROL_BODY_LIMIT: usize = 1 << 20;

/// `POST /`: a control-plane operation named by `X-Amz-Target`.
pub(crate) async fn control(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|c| {
            c.as_bytes()
                .starts_with(b"application/x-www-form-urlencoded")
        });
    let cloudwatch = target.strip_prefix(super::cloudwatch::TARGET_PREFIX);
    let (autoscaling, operation) = if let Some(operation) = target.strip_prefix("SageMaker.") {
        (false, operation)
    } else if let Some(operation) = target.strip_prefix(AUTOSCALING_PREFIX) {
        (true, operation)
    } else if cloudwatch.is_some() || (target.is_empty() && form) {
        (false, "")
    } else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!(
                "X-Amz-Target {target:?} is neither a SageMaker operation (SageMaker.<Operation>), \
                 an Application Auto Scaling one ({AUTOSCALING_PREFIX}<Operation>) nor a \
                 CloudWatch one ({}<Operation>, or a form body with Action)",
                super::cloudwatch::TARGET_PREFIX
            ),
        )
        .into_response();
    };
    let content_length = headers.get(axum::http::header::CONTENT_LENGTH);
    let body = match read_body(content_length, body, CONTROL_BODY_LIMIT, "").await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    if let Some(operation) = cloudwatch {
        return super::cloudwatch::json(&server, operation, &body).await;
    }
    if target.is_empty() && form {
        return super::cloudwatch::query(&server, &body).await;
    }
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
    let result = if autoscaling {
        crate::ops::autoscaling::call(&server.fleet, operation, input).await
    } else {
        crate::ops::call(&server.fleet, operation, input).await
    };
    match result {
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
