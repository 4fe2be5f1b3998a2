//! [`HandlerError`]: the error a model's handler returns, and so the one every decoder,
//! encoder and negotiation here gives, each variant the status the host answers with. A plain
//! enum: the guest SDK converts it to the WIT contract's `handler-error`, the host reads
//! [`HandlerError::message`].

use std::fmt;

/// A failure the handler saw coming. Plinth answers SageMaker's `ModelError` (HTTP 424) with
/// the `OriginalStatusCode` noted on each variant.
///
/// # Examples
///
/// ```
/// use plinth_codec::{decode, HandlerError, CSV};
///
/// let e = decode(b"1,x", CSV).unwrap_err();
/// assert!(matches!(e, HandlerError::BadRequest(_)));
/// assert_eq!(e.to_string(), "bad request: CSV line 1, column 2: 'x' is not a number");
/// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use plinth_codec::{decode_csv, HandlerError};
    ///
    /// let t = decode_csv(b"5.1,3.5,1.4\n").unwrap();
    /// let e = HandlerError::bad_request(format!("expected 4 features, got {}", t.row_len()));
    /// assert_eq!(e.message(), "expected 4 features, got 3");
    /// ```
    pub fn bad_request(message: impl fmt::Display) -> Self {
        Self::BadRequest(message.to_string())
    }

    /// A [`HandlerError::UnsupportedMediaType`].
    ///
    /// # Examples
    ///
    /// ```
    /// use plinth_codec::HandlerError;
    ///
    /// let e = HandlerError::unsupported_media_type("send text/csv");
    /// assert_eq!(e, HandlerError::UnsupportedMediaType("send text/csv".into()));
    /// ```
    pub fn unsupported_media_type(message: impl fmt::Display) -> Self {
        Self::UnsupportedMediaType(message.to_string())
    }

    /// A [`HandlerError::NotAcceptable`].
    ///
    /// # Examples
    ///
    /// ```
    /// use plinth_codec::HandlerError;
    ///
    /// let e = HandlerError::not_acceptable("this model writes: application/json");
    /// assert_eq!(e.to_string(), "not acceptable: this model writes: application/json");
    /// ```
    pub fn not_acceptable(message: impl fmt::Display) -> Self {
        Self::NotAcceptable(message.to_string())
    }

    /// A [`HandlerError::ModelError`].
    ///
    /// # Examples
    ///
    /// ```
    /// use plinth_codec::HandlerError;
    ///
    /// let weights = std::fs::read("/opt/ml/model/no-such-file.bin")
    ///     .map_err(|e| HandlerError::model_error(format!("cannot read the weights: {e}")));
    /// assert!(matches!(weights, Err(HandlerError::ModelError(_))));
    /// ```
    pub fn model_error(message: impl fmt::Display) -> Self {
        Self::ModelError(message.to_string())
    }

    /// The message without the kind.
    ///
    /// # Examples
    ///
    /// ```
    /// use plinth_codec::HandlerError;
    ///
    /// let e = HandlerError::bad_request("the request body is empty");
    /// assert_eq!(e.message(), "the request body is empty");
    /// assert_eq!(e.to_string(), "bad request: the request body is empty");
    /// ```
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
