//! [`StorageError`]: what went wrong, where, and the store's own error code when it gave one
//! (an operator looks up `NoSuchBucket`, not a status line).

use crate::Location;
use std::fmt;

/// The kind of a storage failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such object, bucket or file.
    NotFound,
    /// The credentials are refused or lack the permission.
    AccessDenied,
    /// Fewer bytes arrived than the store announced.
    Truncated,
    /// Larger than allowed.
    TooLarge,
    /// The object was replaced after its entity tag was read.
    Changed,
    /// Not a regular file.
    NotAFile,
    /// Anything else (network, local disk, a store error without a code).
    Other,
}

/// A failed read or write of a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageError {
    /// The location, as text.
    pub location: String,
    /// The kind.
    pub kind: ErrorKind,
    /// The store's error code (`NoSuchKey`, `NoSuchBucket`, `AccessDenied`,
    /// `InvalidAccessKeyId`, `SignatureDoesNotMatch`...), when it gave one.
    pub code: Option<String>,
    /// What happened.
    pub message: String,
}

impl StorageError {
    pub(crate) fn new(location: &Location, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            location: location.to_string(),
            kind,
            code: None,
            message: message.into(),
        }
    }

    pub(crate) fn io(location: &Location, e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::AccessDenied,
            _ => ErrorKind::Other,
        };
        // An upload's writer reports the store's error as an io::Error around it.
        let text = error_chain(&e);
        let code = s3_code(&text);
        Self {
            location: location.to_string(),
            kind: code.as_deref().map_or(kind, kind_of_code),
            code,
            message: text,
        }
    }

    /// An `object_store` error, with the S3 error code found in the response body it carries.
    pub(crate) fn from_store(location: &str, e: object_store::Error) -> Self {
        let text = error_chain(&e);
        let code = s3_code(&text);
        let kind = match (&code, &e) {
            (Some(code), _) => kind_of_code(code),
            (None, object_store::Error::NotFound { .. }) => ErrorKind::NotFound,
            (None, object_store::Error::Precondition { .. }) => ErrorKind::Changed,
            (None, object_store::Error::PermissionDenied { .. })
            | (None, object_store::Error::Unauthenticated { .. }) => ErrorKind::AccessDenied,
            (None, _) => ErrorKind::Other,
        };
        Self {
            location: location.to_owned(),
            kind,
            code,
            message: short(&text),
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.location)?;
        if let Some(code) = &self.code {
            write!(f, "{code}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for StorageError {}

fn kind_of_code(code: &str) -> ErrorKind {
    match code {
        "NoSuchKey" | "NoSuchBucket" | "NotFound" => ErrorKind::NotFound,
        "AccessDenied"
        | "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "InvalidToken"
        | "AllAccessDisabled" => ErrorKind::AccessDenied,
        "PreconditionFailed" => ErrorKind::Changed,
        _ => ErrorKind::Other,
    }
}

/// An error and its sources, as one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The `<Code>` of an S3 error response found in `text`.
fn s3_code(text: &str) -> Option<String> {
    let start = text.find("<Code>")? + "<Code>".len();
    let end = start + text[start..].find("</Code>")?;
    let code = &text[start..end];
    (!code.is_empty() && code.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| code.to_owned())
}

/// The store's `<Message>` when its answer had one (with the code, that is what there is to
/// say), else the whole text.
fn short(text: &str) -> String {
    let message = text.find("<Message>").and_then(|start| {
        let start = start + "<Message>".len();
        text[start..]
            .find("</Message>")
            .map(|end| &text[start..start + end])
    });
    match message {
        Some(message) if !message.is_empty() => message.to_owned(),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_s3_code_and_message_come_out_of_the_body() {
        let text = "Error performing GET http://h/b/k in 2ms - Server returned non-2xx status \
                    code: 404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code>\
                    <Message>The specified bucket does not exist</Message></Error>";
        assert_eq!(s3_code(text).as_deref(), Some("NoSuchBucket"));
        assert_eq!(kind_of_code("NoSuchBucket"), ErrorKind::NotFound);
        assert_eq!(
            kind_of_code("SignatureDoesNotMatch"),
            ErrorKind::AccessDenied
        );
        assert_eq!(short(text), "The specified bucket does not exist");
        assert_eq!(short("connection refused"), "connection refused");
        assert_eq!(s3_code("no body"), None);
        assert_eq!(s3_code("<Code></Code>"), None);
    }
}
