//! Reading a request body within a limit: a larger one is answered 413 before it is read
//! (by its `Content-Length`) or as soon as it passes the limit, with the connection closed.

use crate::error::ApiError;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};

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
