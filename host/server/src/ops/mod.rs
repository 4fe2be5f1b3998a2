//! The operations: one module per resource family (models, endpoint configs, endpoints,
//! alarms, experiments, shadow variants), each taking an operation's JSON input and giving
//! its JSON output or an [`ApiError`], plus what they share (errors, names, listing).
//! Definitions are kept by `state`; endpoints are changed through `fleet`.
//!
//! [`call`] is the one entry point: the HTTP control plane, the deployment file and the CLI
//! all go through it.

pub(crate) mod alarms;
pub(crate) mod endpoint_configs;
pub(crate) mod endpoints;
pub(crate) mod experiments;
pub(crate) mod listing;
pub(crate) mod models;
pub(crate) mod shadow_variants;

use crate::error::ApiError;
use crate::fleet::assemble::Refused;
use crate::fleet::Fleet;
use crate::state::arn;
use crate::state::catalog::Record;
use crate::state::store::StoreError;
use axum::http::StatusCode;
use plinth_policy::names;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The operations, for `UnknownOperationException`'s message.
const OPERATIONS: &[&str] = &[
    "CreateModel",
    "DescribeModel",
    "DeleteModel",
    "ListModels",
    "CreateEndpointConfig",
    "DescribeEndpointConfig",
    "DeleteEndpointConfig",
    "ListEndpointConfigs",
    "CreateEndpoint",
    "DescribeEndpoint",
    "UpdateEndpoint",
    "UpdateEndpointWeightsAndCapacities",
    "DeleteEndpoint",
    "ListEndpoints",
    "RecordInferenceOutcomes",
    "DescribeExperiment",
    "CreateAlarm",
    "DescribeAlarm",
    "DeleteAlarm",
    "ListAlarms",
    "ListEndpointEvents",
    "DescribeShadowVariants",
    "PromoteShadowVariant",
];

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

/// Run one operation. Changes are serialized: one at a time, each committed before it
/// answers.
pub(crate) async fn call(
    state: &Arc<Fleet>,
    operation: &str,
    input: Value,
) -> Result<Value, ApiError> {
    if !input.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "SerializationException",
            "the request body must be a JSON object",
        ));
    }
    // SageMaker members Plinth does not implement, unknown keys and numbers out of range are
    // refused by name before anything else reads the input.
    plinth_policy::members::check_input(operation, &input).map_err(|e| validation(e.message))?;
    let read_only = operation.starts_with("Describe") || operation.starts_with("List");
    let _exclusive = if read_only {
        None
    } else {
        Some(state.changes.lock().await)
    };
    match operation {
        "CreateModel" => models::create_model(&state.stored, &state.runtime, input).await,
        "DescribeModel" => models::describe_model(&state.stored, input),
        "DeleteModel" => models::delete_model(&state.stored, &state.endpoints, input),
        "ListModels" => models::list_models(&state.stored, input),
        "CreateEndpointConfig" => endpoint_configs::create_endpoint_config(&state.stored, input),
        "DescribeEndpointConfig" => {
            endpoint_configs::describe_endpoint_config(&state.stored, input)
        }
        "DeleteEndpointConfig" => {
            endpoint_configs::delete_endpoint_config(&state.stored, &state.endpoints, input)
        }
        "ListEndpointConfigs" => endpoint_configs::list_endpoint_configs(&state.stored, input),
        "CreateEndpoint" => endpoints::create_endpoint(state, input),
        "DescribeEndpoint" => endpoints::describe_endpoint(state, input),
        "UpdateEndpoint" => endpoints::update_endpoint(state, input),
        "UpdateEndpointWeightsAndCapacities" => {
            endpoints::update_weights_and_capacities(state, input)
        }
        "DeleteEndpoint" => endpoints::delete_endpoint(state, input),
        "ListEndpoints" => endpoints::list_endpoints(state, input),
        "RecordInferenceOutcomes" => experiments::record_outcomes(state, input),
        "DescribeExperiment" => experiments::describe_experiment(state, input),
        "CreateAlarm" => alarms::create(&state.stored, input),
        "DescribeAlarm" => alarms::describe(&state.stored, &state.endpoints, input),
        "DeleteAlarm" => alarms::delete(&state.stored, &state.endpoints, input),
        "ListAlarms" => alarms::list_alarms(&state.stored, input),
        "ListEndpointEvents" => endpoints::list_endpoint_events(state, input),
        "DescribeShadowVariants" => shadow_variants::describe_shadow_variants(state, input),
        "PromoteShadowVariant" => shadow_variants::promote_shadow_variant(state, input),
        other => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!(
                "operation {other:?} is not supported; Plinth supports {}",
                OPERATIONS.join(", ")
            ),
        )),
    }
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
