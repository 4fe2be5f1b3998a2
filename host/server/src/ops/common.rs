//! What the operations share: SageMaker's error shapes (validation, in use, internal, not
//! found, a store error as the API says it), reading an input, the naming rule, and the
//! Describe output of a stored definition.

use crate::error::ApiError;
use crate::fleet::assemble::Refused;
use crate::state::arn;
use crate::state::catalog::Record;
use crate::state::store::StoreError;
use axum::http::StatusCode;
use plinth_policy::names;
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) fn validation(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "ValidationException", message)
}

pub(crate) fn in_use(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "ResourceInUse", message)
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalFailure",
        e.to_string(),
    )
}

impl From<Refused> for ApiError {
    fn from(e: Refused) -> Self {
        match e {
            Refused::Limit(m) => ApiError::new(StatusCode::BAD_REQUEST, "ResourceLimitExceeded", m),
            Refused::Store(e) => internal(e),
            e => validation(e.to_string()),
        }
    }
}

/// A control-plane input must be a JSON object.
pub(crate) fn require_object(input: &Value) -> Result<(), ApiError> {
    if input.is_object() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "SerializationException",
            "the request body must be a JSON object",
        ))
    }
}

/// What a service's entry point checks first: the input is a JSON object, `operation` is
/// one of the service's (`operations`), and its members are inside the member table (a
/// member error answered by `refused`, in the service's words).
pub(crate) fn admit<I: Iterator<Item = &'static str>>(
    operation: &str,
    input: &Value,
    operations: fn() -> I,
    refused: fn(String) -> ApiError,
) -> Result<(), ApiError> {
    require_object(input)?;
    if !operations().any(|o| o == operation) {
        return Err(unknown_operation(operation, operations()));
    }
    plinth_policy::members::check_input(operation, input).map_err(|e| refused(e.message))
}

/// An operation the service does not have, with the ones it has.
pub(crate) fn unknown_operation(
    operation: &str,
    supported: impl Iterator<Item = &'static str>,
) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "UnknownOperationException",
        format!(
            "operation {operation:?} is not supported; Plinth supports {}",
            supported.collect::<Vec<_>>().join(", ")
        ),
    )
}

pub(crate) fn parse<T: for<'de> Deserialize<'de>>(input: Value) -> Result<T, ApiError> {
    serde_json::from_value(input).map_err(|e| validation(format!("invalid request: {e}")))
}

pub(crate) fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    if names::is_valid(name) {
        Ok(())
    } else {
        Err(validation(format!(
            "1 validation error detected: Value {name:?} at '{field}' failed to satisfy \
             constraint: {}",
            names::RULE
        )))
    }
}

pub(crate) fn store_error(e: StoreError, kind: &str, name: &str) -> ApiError {
    match e {
        StoreError::Exists(_) => validation(format!(
            "Cannot create already existing {} \"{}\".",
            kind.replace('-', " ").replace("config", "configuration"),
            arn(kind, name)
        )),
        e => internal(e),
    }
}

/// What SageMaker answers for a missing endpoint (boto3's waiters rely on it).
pub(crate) fn endpoint_not_found(name: &str) -> ApiError {
    validation(format!(
        "Could not find endpoint \"{}\".",
        arn("endpoint", name)
    ))
}

pub(crate) fn model_not_found(name: &str) -> ApiError {
    validation(format!("Could not find model \"{}\".", arn("model", name)))
}

/// A Describe output: the stored definition plus `<Field>Name`, `<Field>Arn` and
/// `CreationTime`.
pub(crate) fn described<T: serde::Serialize>(
    record: &Record<T>,
    field: &str,
    kind: &str,
) -> Result<Value, ApiError> {
    let mut output = serde_json::to_value(&record.definition).map_err(internal)?;
    output[format!("{field}Name")] = json!(record.name);
    output[format!("{field}Arn")] = json!(arn(kind, &record.name));
    output["CreationTime"] = json!(record.created);
    Ok(output)
}

pub(crate) fn config_not_found(name: &str) -> ApiError {
    validation(format!(
        "Could not find endpoint configuration \"{}\".",
        arn("endpoint-config", name)
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct EndpointNameInput {
    pub(crate) endpoint_name: String,
}

/// The live endpoint an `{EndpointName}` input names, or its not-found error.
pub(crate) fn named_endpoint(
    endpoints: &crate::fleet::table::EndpointTable,
    input: Value,
) -> Result<std::sync::Arc<crate::fleet::table::EndpointSnapshot>, ApiError> {
    let input: EndpointNameInput = parse(input)?;
    endpoints
        .get(&input.endpoint_name)
        .ok_or_else(|| endpoint_not_found(&input.endpoint_name))
}
