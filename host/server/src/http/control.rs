//! The control plane's awsJson1.1 protocol: `POST /` with `X-Amz-Target: SageMaker.<Op>`
//! and a JSON body, answered with the operation's JSON output or an AWS error. The
//! operations themselves are `ops`.

use super::body::read_body;
use super::server::Server;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

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
    match crate::ops::call(&server.fleet, operation, input).await {
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
