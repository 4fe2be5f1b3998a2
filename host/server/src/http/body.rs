//! Request bodies: read within a size limit (a larger one is answered 413 before it is read,
//! by its `Content-Length`, or as soon as it passes the limit, with the connection closed)
//! and within a time limit ([`with_deadline`]: the router gives every request body a
//! deadline; one that has not arrived by then is answered 408, with the connection closed).

use crate::error::ApiError;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, StatusCode};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Read a request body of at most `limit` bytes; a larger one is a 413 `ValidationError`
/// (`what` names the limit in the message), one that passed its deadline a 408
/// `RequestTimeout`.
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
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let late = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .find_map(|e| e.downcast_ref::<BodyTimeout>());
        match late {
            Some(late) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                late.to_string(),
            )
            .closing(),
            None => too_big(format!("more than {limit}")).closing(),
        }
    })
}

/// `body`, failing with [`BodyTimeout`] if it has not been read to its end within `limit`.
pub(crate) fn with_deadline(body: Body, limit: Duration) -> Body {
    Body::new(Deadline {
        inner: body,
        sleep: Box::pin(tokio::time::sleep(limit)),
        limit,
    })
}

/// A request body that did not arrive within the body-read timeout.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body did not arrive within {} s (the server's body-read timeout); send it \
     faster, or raise --body-read-timeout",
    .0.as_secs_f64()
)]
pub(crate) struct BodyTimeout(Duration);

/// A body with a deadline for its last frame.
struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(self.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
