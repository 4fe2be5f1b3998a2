//! The one API error type: SageMaker's error codes, statuses and body shapes, so that boto3
//! raises the modelled exception with its extra fields.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use plinth_runtime::InvokeError;
use serde_json::{json, Map, Value};

use crate::state::ACCOUNT_ID;

/// An error answered to a client.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Map<String, Value>,
    /// Answer with `Connection: close` (the request body was not read).
    close: bool,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
            close: false,
        }
    }

    /// Close the connection after this answer: the request body was left unread, so the
    /// connection cannot carry another request.
    pub(crate) fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// `ValidationError` (400): the request is wrong.
    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }

    /// The endpoint does not exist.
    pub(crate) fn endpoint_not_found(name: &str) -> Self {
        Self::validation(format!(
            "Endpoint {name} of account {ACCOUNT_ID} not found."
        ))
    }

    /// Map a failed invocation onto SageMaker's runtime errors.
    pub(crate) fn from_invoke(error: &InvokeError, variant: &str) -> Self {
        match error {
            // A pipeline's container: SageMaker names the container that failed.
            InvokeError::InContainer { hostname, error } => Self::from_invoke(error, hostname),
            InvokeError::Throttled { .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "ThrottlingException",
                format!("Variant {variant} is at capacity: {error}. Retry with backoff."),
            ),
            InvokeError::Unavailable(_) | InvokeError::NoInstances(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                error.to_string(),
            ),
            _ => {
                let original = error.original_status().unwrap_or(500);
                let original_message = error.to_string();
                let message = match error {
                    InvokeError::Timeout(after) => format!(
                        "Received server error (0) from {variant} with message \"Your invocation timed out \
                         after {after:?} while waiting for a response from the model.\""
                    ),
                    _ => {
                        let class = if original < 500 { "client" } else { "server" };
                        format!(
                            "Received {class} error ({original}) from {variant} with message \"{original_message}\"."
                        )
                    }
                };
                let mut e = Self::new(StatusCode::FAILED_DEPENDENCY, "ModelError", message);
                e.extra.insert("OriginalStatusCode".into(), json!(original));
                e.extra
                    .insert("OriginalMessage".into(), json!(original_message));
                e.extra.insert(
                    "ErrorCode".into(),
                    json!(if original < 500 && original != 0 {
                        "CLIENT_ERROR_FROM_MODEL"
                    } else {
                        "INTERNAL_FAILURE_FROM_MODEL"
                    }),
                );
                e
            }
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.extra;
        body.insert("__type".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        let mut response = (self.status, axum::Json(Value::Object(body))).into_response();
        let headers = response.headers_mut();
        headers.insert("x-amzn-ErrorType", HeaderValue::from_static(self.code));
        if self.close {
            headers.insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
        }
        response
    }
}
