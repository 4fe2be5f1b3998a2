//! [`HandlerError`]: the error a model's handler returns, and so the one every decoder,
//! encoder and negotiation here gives, each variant the status the host answers with. A plain
//! enum: the guest SDK converts it to the WIT contract's `handler-error`, the host reads
//! [`HandlerError::message`].

use std::fmt;

/// A failure the handler saw coming. Plinth answers SageMaker's `ModelError` (HTTP 424) with
/// the `OriginalStatusCode` noted on each variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// The body could not be parsed or has the wrong shape (400).
    BadRequest(String),
    /// The request's `Content-Type` is not one the handler reads (415).
    UnsupportedMediaType(String),
    /// None of the types in `Accept` is one the handler writes (406).
    NotAcceptable(String),
    /// The model failed while loading or predicting (500).
    ModelError(String),
}

impl HandlerError {
    /// A [`HandlerError::BadRequest`].
    pub fn bad_request(message: impl fmt::Display) -> Self {
        Self::BadRequest(message.to_string())
    }

    /// A [`HandlerError::UnsupportedMediaType`].
    pub fn unsupported_media_type(message: impl fmt::Display) -> Self {
        Self::UnsupportedMediaType(message.to_string())
    }

    /// A [`HandlerError::NotAcceptable`].
    pub fn not_acceptable(message: impl fmt::Display) -> Self {
        Self::NotAcceptable(message.to_string())
    }

    /// A [`HandlerError::ModelError`].
    pub fn model_error(message: impl fmt::Display) -> Self {
        Self::ModelError(message.to_string())
    }

    /// The message without the kind.
    #[inline]
    pub fn message(&self) -> &str {
        match self {
            Self::BadRequest(m)
            | Self::UnsupportedMediaType(m)
            | Self::NotAcceptable(m)
            | Self::ModelError(m) => m,
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::BadRequest(_) => "bad request",
            Self::UnsupportedMediaType(_) => "unsupported media type",
            Self::NotAcceptable(_) => "not acceptable",
            Self::ModelError(_) => "model error",
        };
        write!(f, "{kind}: {}", self.message())
    }
}

impl std::error::Error for HandlerError {}
