//! Request authentication for the HTTP server: with credentials configured, every
//! control-plane and InvokeEndpoint request must carry a valid AWS Signature Version 4 for
//! one of them (as boto3 signs it), or it is refused with 403 and an AWS error before
//! anything runs. The signature itself is checked by `sigv4`.

use super::body::read_body;
use super::control::CONTROL_BODY_LIMIT;
use super::server::Server;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Middleware: pass a request on only with a valid signature (or when no credentials are
/// configured). The body is read once (within the route's size limit) to check its hash.
pub(crate) async fn require_signature(
    State(server): State<Arc<Server>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(verifier) = &server.verifier else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let limit = if parts.uri.path() == "/" {
        CONTROL_BODY_LIMIT
    } else {
        server.max_payload_bytes
    };
    let content_length = parts.headers.get(axum::http::header::CONTENT_LENGTH);
    let body = match read_body(content_length, body, limit, "").await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if let Err(e) = verifier.verify(
        parts.method.as_str(),
        path_and_query,
        &parts.headers,
        &body,
        std::time::SystemTime::now(),
    ) {
        tracing::warn!(path = %parts.uri.path(), code = e.code(), error = %e, "request refused: bad signature");
        return ApiError::new(StatusCode::FORBIDDEN, e.code(), e.to_string()).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}
