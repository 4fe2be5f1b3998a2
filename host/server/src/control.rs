//! The control plane, as SageMaker's awsJson1_1 protocol: `POST /` with
//! `X-Amz-Target: SageMaker.<Operation>`. Models, endpoint configs and endpoints: Create,
//! Describe, Delete and List each, plus UpdateEndpoint and
//! UpdateEndpointWeightsAndCapacities. This module owns the wire shapes and checks;
//! `catalog` holds definitions, `deploy` changes endpoints, `store` makes it all durable.
//!
//! [`call`] is the one entry point: the HTTP route, the deployment file and the CLI all go
//! through it.

use crate::api::AppState;
use crate::catalog::{ConfigDefinition, ModelDefinition, Record};
use crate::deploy::{self, Refused};
use crate::endpoints::{now, EndpointSnapshot, EndpointStatus, VariantState};
use crate::error::{ApiError, ACCOUNT_ID};
use crate::store::{Kind, StoreError};
use axum::http::StatusCode;
use plinth_policy::capacity::Change;
use plinth_policy::config::check_variants;
use plinth_policy::names;
use plinth_policy::rollout::DeploymentConfig;
use serde::Deserialize;
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::sync::Arc;

/// The region named in ARNs.
const REGION: &str = "us-east-1";

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

/// SageMaker's ARN for a resource (`kind` is `model`, `endpoint-config` or `endpoint`).
pub(crate) fn arn(kind: &str, name: &str) -> String {
    format!(
        "arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:{kind}/{}",
        name.to_lowercase()
    )
}

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
    state: &Arc<AppState>,
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
    let read_only = operation.starts_with("Describe") || operation.starts_with("List");
    let _exclusive = if read_only {
        None
    } else {
        Some(state.updates.lock().await)
    };
    match operation {
        "CreateModel" => create_model(state, input).await,
        "DescribeModel" => describe_model(state, input),
        "DeleteModel" => delete_model(state, input),
        "ListModels" => list_models(state, input),
        "CreateEndpointConfig" => create_endpoint_config(state, input),
        "DescribeEndpointConfig" => describe_endpoint_config(state, input),
        "DeleteEndpointConfig" => delete_endpoint_config(state, input),
        "ListEndpointConfigs" => list_endpoint_configs(state, input),
        "CreateEndpoint" => create_endpoint(state, input),
        "DescribeEndpoint" => describe_endpoint(state, input),
        "UpdateEndpoint" => update_endpoint(state, input),
        "UpdateEndpointWeightsAndCapacities" => update_weights_and_capacities(state, input),
        "DeleteEndpoint" => delete_endpoint(state, input),
        "ListEndpoints" => list_endpoints(state, input),
        "RecordInferenceOutcomes" => record_outcomes(state, input),
        "DescribeExperiment" => describe_experiment(state, input),
        "CreateAlarm" => crate::alarms::create(state, input),
        "DescribeAlarm" => crate::alarms::describe(state, input),
        "DeleteAlarm" => crate::alarms::delete(state, input),
        "ListAlarms" => crate::alarms::list_alarms(state, input),
        "ListEndpointEvents" => list_endpoint_events(state, input),
        "DescribeShadowVariants" => describe_shadow_variants(state, input),
        "PromoteShadowVariant" => promote_shadow_variant(state, input),
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

pub(crate) fn lock(state: &AppState) -> std::sync::MutexGuard<'_, crate::catalog::Catalog> {
    state.catalog.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn stored(e: StoreError, kind: &str, name: &str) -> ApiError {
    match e {
        StoreError::Exists(_) => validation(format!(
            "Cannot create already existing {} \"{}\".",
            kind.replace('-', " ").replace("config", "configuration"),
            arn(kind, name)
        )),
        e => internal(e),
    }
}

// ---- Models ----

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateModelInput {
    model_name: String,
    primary_container: Option<Value>,
    containers: Option<Value>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

async fn create_model(state: &Arc<AppState>, input: Value) -> Result<Value, ApiError> {
    let input: CreateModelInput = parse(input)?;
    let name = input.model_name;
    check_name("modelName", &name)?;
    if input.containers.is_some() {
        return Err(validation(
            "Containers (multi-container models) are not supported yet; give PrimaryContainer",
        ));
    }
    let Some(container) = input.primary_container else {
        return Err(validation("PrimaryContainer is required"));
    };
    let mut fields = input.rest;
    fields.insert("PrimaryContainer".into(), container);
    let definition: ModelDefinition = parse(Value::Object(fields))?;
    check_model(&definition)?;
    state
        .runtime
        .backend_for(definition.plinth_backend)
        .map_err(|e| validation(format!("PlinthBackend {}: {e}", definition.plinth_backend)))?;
    if lock(state).model_named(&name).is_some() {
        return Err(stored(StoreError::Exists(name.clone()), "model", &name));
    }
    // Unpack the artifact now, so that a bad one is reported here and not at deploy time.
    if let Some(url) = definition.primary_container.model_data_url.clone() {
        let cache = state.artifacts.clone();
        tokio::task::spawn_blocking(move || crate::artifacts::resolve(&cache, &url))
            .await
            .map_err(internal)?
            .map_err(validation)?;
    }
    let record = Record {
        name: name.clone(),
        created: now(),
        definition,
    };
    state
        .store
        .insert(Kind::Model, &record.stored())
        .map_err(|e| stored(e, "model", &name))?;
    lock(state).models.insert(name.clone(), record);
    tracing::info!(model = %name, "model created");
    Ok(json!({ "ModelArn": arn("model", &name) }))
}

fn check_model(d: &ModelDefinition) -> Result<(), ApiError> {
    let c = &d.primary_container;
    let component = crate::artifacts::local_path("Image", &c.image).map_err(validation)?;
    if !component.is_file() {
        return Err(validation(format!(
            "Image {:?}: no component file there",
            c.image
        )));
    }
    if c.environment.len() > 100 {
        return Err(validation(format!(
            "Environment has {} entries; the limit is 100",
            c.environment.len()
        )));
    }
    for (key, value) in &c.environment {
        let valid_key = key.len() <= 1024
            && key
                .chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
            && key
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !valid_key {
            return Err(validation(format!(
                "Environment key {key:?} must match [a-zA-Z_][a-zA-Z0-9_]* (at most 1024 characters)"
            )));
        }
        if value.len() > 1024 {
            return Err(validation(format!(
                "Environment value of {key} is {} bytes; the limit is 1024",
                value.len()
            )));
        }
    }
    let limits = &d.plinth_limits;
    if !(1..=4096).contains(&limits.memory_size_in_mb) {
        return Err(validation(
            "PlinthLimits.MemorySizeInMB must be between 1 and 4096",
        ));
    }
    if !(1..=3600).contains(&limits.invocation_timeout_in_seconds) {
        return Err(validation(
            "PlinthLimits.InvocationTimeoutInSeconds must be between 1 and 3600",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModelNameInput {
    model_name: String,
}

/// What SageMaker answers for a missing endpoint (boto3's waiters rely on it).
fn endpoint_not_found(name: &str) -> ApiError {
    validation(format!(
        "Could not find endpoint \"{}\".",
        arn("endpoint", name)
    ))
}

fn model_not_found(name: &str) -> ApiError {
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

fn describe_model(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: ModelNameInput = parse(input)?;
    let catalog = lock(state);
    let record = catalog
        .models
        .get(&input.model_name)
        .ok_or_else(|| model_not_found(&input.model_name))?;
    described(record, "Model", "model")
}

fn delete_model(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: ModelNameInput = parse(input)?;
    let name = input.model_name;
    let mut catalog = lock(state);
    if !catalog.models.contains_key(&name) {
        return Err(model_not_found(&name));
    }
    for endpoint in state.endpoints.all().values() {
        for config in endpoint_configs_of(endpoint) {
            let uses = catalog.configs.get(config).is_some_and(|c| {
                c.definition
                    .production_variants
                    .iter()
                    .chain(&c.definition.shadow_production_variants)
                    .any(|v| v.model_name == name)
            });
            if uses {
                return Err(in_use(format!(
                    "Cannot delete model \"{}\": endpoint {} uses it through endpoint \
                     configuration {config}, and Plinth needs it to restore the endpoint. \
                     Update or delete the endpoint first.",
                    arn("model", &name),
                    endpoint.name
                )));
            }
        }
    }
    state.store.delete(Kind::Model, &name).map_err(internal)?;
    catalog.models.remove(&name);
    tracing::info!(model = %name, "model deleted");
    Ok(json!({}))
}

fn list_models(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let items = lock(state)
        .models
        .values()
        .map(|m| Listed {
            name: m.name.clone(),
            created: m.created,
            modified: m.created,
            status: "",
            summary: json!({
                "ModelName": m.name,
                "ModelArn": arn("model", &m.name),
                "CreationTime": m.created,
            }),
        })
        .collect();
    list(items, parse(input)?, &["Name", "CreationTime"], "Models")
}

// ---- Endpoint configs ----

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEndpointConfigInput {
    endpoint_config_name: String,
    #[serde(flatten)]
    definition: ConfigDefinition,
}

fn create_endpoint_config(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: CreateEndpointConfigInput = parse(input)?;
    let name = input.endpoint_config_name;
    check_name("endpointConfigName", &name)?;
    let mut catalog = lock(state);
    if catalog.config_named(&name).is_some() {
        return Err(stored(
            StoreError::Exists(name.clone()),
            "endpoint-config",
            &name,
        ));
    }
    let definition = &input.definition;
    for v in definition
        .production_variants
        .iter()
        .chain(&definition.shadow_production_variants)
    {
        if !catalog.models.contains_key(&v.model_name) {
            return Err(validation(format!(
                "Could not find model \"{}\".",
                arn("model", &v.model_name)
            )));
        }
    }
    if let Some(experiment) = &input.definition.plinth_experiment {
        let names: Vec<&str> = input
            .definition
            .production_variants
            .iter()
            .map(|v| v.variant_name.as_str())
            .collect();
        experiment.check(&names).map_err(validation)?;
    }
    let record = Record {
        name: name.clone(),
        created: now(),
        definition: input.definition,
    };
    catalog.configs.insert(name.clone(), record.clone());
    let checked = catalog
        .unresolved(&name)
        .map(|u| u.variants_unchecked())
        .map_err(validation)
        .and_then(|variants| {
            check_variants(&name, &variants).map_err(|p| {
                let at = p
                    .index
                    .map(|j| format!("ProductionVariants[{j}]: "))
                    .unwrap_or_else(|| "ProductionVariants: ".into());
                validation(format!("{at}{}", p.message))
            })
        })
        .and_then(|()| check_shadows(&catalog, &name))
        .and_then(|()| {
            state
                .store
                .insert(Kind::EndpointConfig, &record.stored())
                .map_err(|e| stored(e, "endpoint-config", &name))
        });
    if let Err(e) = checked {
        catalog.configs.remove(&name);
        return Err(e);
    }
    tracing::info!(endpoint_config = %name, "endpoint config created");
    Ok(json!({ "EndpointConfigArn": arn("endpoint-config", &name) }))
}

/// `ShadowProductionVariants`: valid variants (1-10), names distinct from the production
/// variants', a sampling percentage in 0-100 only there.
fn check_shadows(catalog: &crate::catalog::Catalog, name: &str) -> Result<(), ApiError> {
    let definition = &catalog.configs[name].definition;
    if let Some(j) = definition
        .production_variants
        .iter()
        .position(|v| v.plinth_sampling_percentage.is_some())
    {
        return Err(validation(format!(
            "ProductionVariants[{j}]: PlinthSamplingPercentage applies only to \
             ShadowProductionVariants"
        )));
    }
    let shadows = &definition.shadow_production_variants;
    if shadows.is_empty() {
        return Ok(());
    }
    let unresolved = catalog.unresolved(name).map_err(validation)?;
    check_variants(name, &unresolved.shadows_unchecked()).map_err(|p| {
        let at = p
            .index
            .map(|j| format!("ShadowProductionVariants[{j}]: "))
            .unwrap_or_else(|| "ShadowProductionVariants: ".into());
        validation(format!("{at}{}", p.message))
    })?;
    for (j, v) in shadows.iter().enumerate() {
        if definition
            .production_variants
            .iter()
            .any(|p| p.variant_name.eq_ignore_ascii_case(&v.variant_name))
        {
            return Err(validation(format!(
                "ShadowProductionVariants[{j}]: variant {:?} is also a production variant; \
                 variant names must be unique within an endpoint config",
                v.variant_name
            )));
        }
        if let Some(p) = v.plinth_sampling_percentage {
            if !(0.0..=100.0).contains(&p) {
                return Err(validation(format!(
                    "ShadowProductionVariants[{j}]: PlinthSamplingPercentage {p} is out of \
                     range; use 0-100"
                )));
            }
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointConfigNameInput {
    endpoint_config_name: String,
}

fn config_not_found(name: &str) -> ApiError {
    validation(format!(
        "Could not find endpoint configuration \"{}\".",
        arn("endpoint-config", name)
    ))
}

fn describe_endpoint_config(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: EndpointConfigNameInput = parse(input)?;
    let catalog = lock(state);
    let record = catalog
        .configs
        .get(&input.endpoint_config_name)
        .ok_or_else(|| config_not_found(&input.endpoint_config_name))?;
    described(record, "EndpointConfig", "endpoint-config")
}

/// The configs an endpoint needs: the one it serves and the one it is moving to.
fn endpoint_configs_of(endpoint: &EndpointSnapshot) -> impl Iterator<Item = &str> {
    std::iter::once(endpoint.config_name.as_str()).chain(endpoint.pending_config.as_deref())
}

fn delete_endpoint_config(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: EndpointConfigNameInput = parse(input)?;
    let name = input.endpoint_config_name;
    let mut catalog = lock(state);
    if !catalog.configs.contains_key(&name) {
        return Err(config_not_found(&name));
    }
    if let Some(endpoint) = state
        .endpoints
        .all()
        .values()
        .find(|e| endpoint_configs_of(e).any(|c| c == name))
    {
        return Err(in_use(format!(
            "Cannot delete endpoint configuration \"{}\": endpoint {} uses it, and Plinth needs \
             it to restore the endpoint. Update or delete the endpoint first.",
            arn("endpoint-config", &name),
            endpoint.name
        )));
    }
    state
        .store
        .delete(Kind::EndpointConfig, &name)
        .map_err(internal)?;
    catalog.configs.remove(&name);
    tracing::info!(endpoint_config = %name, "endpoint config deleted");
    Ok(json!({}))
}

fn list_endpoint_configs(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let items = lock(state)
        .configs
        .values()
        .map(|c| Listed {
            name: c.name.clone(),
            created: c.created,
            modified: c.created,
            status: "",
            summary: json!({
                "EndpointConfigName": c.name,
                "EndpointConfigArn": arn("endpoint-config", &c.name),
                "CreationTime": c.created,
            }),
        })
        .collect();
    list(
        items,
        parse(input)?,
        &["Name", "CreationTime"],
        "EndpointConfigs",
    )
}

// ---- Endpoints ----

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointNameInput {
    endpoint_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEndpointInput {
    endpoint_name: String,
    endpoint_config_name: String,
    deployment_config: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)] // accepted as SageMaker does; Plinth keeps no tags
    tags: Option<Value>,
}

/// A `DeploymentConfig` as its own error messages see it.
fn deployment_config(value: Option<Value>) -> Result<Option<DeploymentConfig>, ApiError> {
    value
        .map(|v| {
            serde_json::from_value(v)
                .map_err(|e| validation(format!("invalid DeploymentConfig: {e}")))
        })
        .transpose()
}

fn create_endpoint(state: &Arc<AppState>, input: Value) -> Result<Value, ApiError> {
    let input: CreateEndpointInput = parse(input)?;
    check_name("endpointName", &input.endpoint_name)?;
    let deployment = deployment_config(input.deployment_config)?;
    deploy::create_endpoint(
        state,
        &input.endpoint_name,
        &input.endpoint_config_name,
        deployment,
    )?;
    Ok(json!({ "EndpointArn": arn("endpoint", &input.endpoint_name) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateEndpointInput {
    endpoint_name: String,
    endpoint_config_name: String,
    deployment_config: Option<Value>,
    #[serde(default)]
    retain_deployment_config: bool,
    #[serde(default)]
    retain_all_variant_properties: bool,
}

fn update_endpoint(state: &Arc<AppState>, input: Value) -> Result<Value, ApiError> {
    let input: UpdateEndpointInput = parse(input)?;
    if input.retain_all_variant_properties {
        return Err(validation(
            "RetainAllVariantProperties is not supported: the new endpoint config's weights \
             and instance counts apply",
        ));
    }
    let deployment = deployment_config(input.deployment_config)?;
    deploy::update_endpoint(
        state,
        &input.endpoint_name,
        &input.endpoint_config_name,
        deployment,
        input.retain_deployment_config,
    )?;
    Ok(json!({ "EndpointArn": arn("endpoint", &input.endpoint_name) }))
}

fn delete_endpoint(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: EndpointNameInput = parse(input)?;
    deploy::delete_endpoint(state, &input.endpoint_name)?;
    Ok(json!({}))
}

fn describe_endpoint(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: EndpointNameInput = parse(input)?;
    let endpoint = state
        .endpoints
        .get(&input.endpoint_name)
        .ok_or_else(|| endpoint_not_found(&input.endpoint_name))?;
    Ok(describe(&endpoint))
}

/// SageMaker's DescribeEndpoint output for a snapshot.
pub(crate) fn describe(endpoint: &EndpointSnapshot) -> Value {
    let mut output = json!({
        "EndpointName": endpoint.name,
        "EndpointArn": arn("endpoint", &endpoint.name),
        "EndpointConfigName": endpoint.config_name,
        "EndpointStatus": endpoint.status.as_str(),
        "CreationTime": endpoint.created,
        "LastModifiedTime": endpoint.modified,
    });
    let old_share = 1.0 - endpoint.new_fleet.as_ref().map_or(0.0, |n| n.share);
    if !endpoint.variants.is_empty() {
        output["ProductionVariants"] = endpoint
            .variants
            .iter()
            .map(|v| variant_summary(v, old_share, &[]))
            .collect();
    }
    if !endpoint.shadows.is_empty() {
        output["ShadowProductionVariants"] = endpoint
            .shadows
            .iter()
            .map(|s| {
                json!({
                    "VariantName": s.live.name,
                    "ModelName": s.live.model_name,
                    "CurrentWeight": s.weight,
                    "DesiredWeight": s.weight,
                    "CurrentInstanceCount": s.live.pool.stats().instances,
                    "DesiredInstanceCount": s.desired_instance_count,
                    "PlinthSamplingPercentage": s.sampling * 100.0,
                    "PlinthBackend": s.live.pool.backend().as_str(),
                })
            })
            .collect();
    }
    if let Some(pending) = &endpoint.pending_config {
        let mut summary = json!({
            "EndpointConfigName": pending,
            "StartTime": endpoint.modified,
        });
        if let Some(new) = &endpoint.new_fleet {
            summary["StartTime"] = json!(new.started);
            let status = json!([{
                "Status": new.phase.as_str(),
                "StatusMessage": format!(
                    "step {}/{}: {:.1}% of traffic on the new fleet",
                    new.step, new.steps, new.share * 100.0
                ),
                "StartTime": new.phase_started,
            }]);
            summary["ProductionVariants"] = new
                .variants
                .iter()
                .map(|v| variant_summary(v, new.share, status.as_array().expect("an array")))
                .collect();
            let mut deployment = json!({
                "Strategy": new.strategy.as_str(),
                "Step": new.step,
                "Steps": new.steps,
                "NewFleetTrafficPercent": new.share * 100.0,
                "Phase": new.phase.as_str(),
                "PhaseStartTime": new.phase_started,
            });
            if let Some(end) = new.phase_end {
                deployment["PhaseEndTime"] = json!(end);
            }
            summary["PlinthDeployment"] = deployment;
        }
        output["PendingDeploymentSummary"] = summary;
    }
    if let Some(config) = &endpoint.deployment_config {
        output["LastDeploymentConfig"] = serde_json::to_value(config).unwrap_or_default();
    }
    if let Some(reason) = &endpoint.failure_reason {
        output["FailureReason"] = json!(reason);
    }
    output
}

/// A `ProductionVariantSummary`; `share` is the fraction of requests its fleet receives
/// (the weights are scaled by it).
fn variant_summary(v: &VariantState, share: f64, status: &[Value]) -> Value {
    let mut summary = json!({
        "VariantName": v.live.name,
        "ModelName": v.live.model_name,
        "CurrentWeight": v.current_weight * share,
        "DesiredWeight": v.desired_weight,
        "CurrentInstanceCount": v.live.pool.stats().instances,
        "DesiredInstanceCount": v.desired_instance_count,
        "RoutingConfig": { "RoutingStrategy": v.live.pool.routing().as_str() },
        "PlinthBackend": v.live.pool.backend().as_str(),
    });
    if !status.is_empty() {
        summary["VariantStatus"] = json!(status);
    }
    summary
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EventsInput {
    endpoint_name: String,
    #[serde(default)]
    after_sequence: i64,
    max_results: Option<i64>,
}

/// ListEndpointEvents: an endpoint's committed state changes, oldest first, after
/// `AfterSequence`; `plinth rollout watch` follows them.
fn list_endpoint_events(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: EventsInput = parse(input)?;
    if state.endpoints.get(&input.endpoint_name).is_none() {
        return Err(endpoint_not_found(&input.endpoint_name));
    }
    let limit = input.max_results.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(validation("MaxResults must be between 1 and 1000"));
    }
    let (after, limit) = if input.after_sequence < 0 {
        // Negative: the last |n| events.
        let last = state
            .store
            .last_event(&input.endpoint_name)
            .map_err(internal)?;
        (last + input.after_sequence, limit)
    } else {
        (input.after_sequence, limit)
    };
    let events: Vec<Value> = state
        .store
        .events(&input.endpoint_name, after, limit as usize)
        .map_err(internal)?
        .into_iter()
        .map(|(seq, mut event)| {
            event["Sequence"] = json!(seq);
            event
        })
        .collect();
    Ok(json!({ "Events": events }))
}

/// DescribeShadowVariants: each shadow next to production: invocations, errors, latency
/// over the last ten minutes, and agreement since it started.
fn describe_shadow_variants(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: EndpointNameInput = parse(input)?;
    let endpoint = state
        .endpoints
        .get(&input.endpoint_name)
        .ok_or_else(|| endpoint_not_found(&input.endpoint_name))?;
    let recent = |live: &crate::endpoints::LiveVariant| {
        use plinth_policy::alarm::{current_second, Metric, Statistic, RETAINED_SECONDS};
        let now = current_second();
        let stats = live
            .recent
            .stats(now.saturating_sub(RETAINED_SECONDS - 1), now);
        let value = |m, s| stats.value(m, s).map_or(Value::Null, |v| json!(v));
        json!({
            "Invocations": stats.value(Metric::Invocations, Statistic::Sum).unwrap_or(0.0),
            "ErrorRate": value(Metric::Invocation5XXErrors, Statistic::Average),
            "ModelLatencyP50": value(Metric::ModelLatency, Statistic::Percentile(50.0)),
            "ModelLatencyP99": value(Metric::ModelLatency, Statistic::Percentile(99.0)),
        })
    };
    let production: Vec<Value> = endpoint
        .variants
        .iter()
        .map(|v| {
            let mut r = json!({ "VariantName": v.live.name, "ModelName": v.live.model_name });
            r["Recent"] = recent(&v.live);
            r
        })
        .collect();
    let shadows: Vec<Value> = endpoint
        .shadows
        .iter()
        .map(|s| {
            let mut r = s.report();
            r["VariantName"] = json!(s.live.name);
            r["ModelName"] = json!(s.live.model_name);
            r["Recent"] = recent(&s.live);
            r
        })
        .collect();
    Ok(json!({
        "EndpointName": endpoint.name,
        "EndpointConfigName": endpoint.config_name,
        "ProductionVariants": production,
        "ShadowProductionVariants": shadows,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PromoteInput {
    endpoint_name: String,
    shadow_variant_name: String,
    /// The name of the endpoint config the promotion creates.
    endpoint_config_name: Option<String>,
    deployment_config: Option<Value>,
}

/// PromoteShadowVariant: a new endpoint config in which the shadow is the only production
/// variant (the other shadows stay shadows), deployed with UpdateEndpoint (all at once,
/// keeping the shadow's warm instances, unless a `DeploymentConfig` is given).
fn promote_shadow_variant(state: &Arc<AppState>, input: Value) -> Result<Value, ApiError> {
    let input: PromoteInput = parse(input)?;
    let endpoint = state
        .endpoints
        .get(&input.endpoint_name)
        .ok_or_else(|| endpoint_not_found(&input.endpoint_name))?;
    let deployment = deployment_config(input.deployment_config)?;
    let current = lock(state)
        .configs
        .get(&endpoint.config_name)
        .cloned()
        .ok_or_else(|| config_not_found(&endpoint.config_name))?;
    let mut definition = current.definition;
    let Some(index) = definition
        .shadow_production_variants
        .iter()
        .position(|v| v.variant_name == input.shadow_variant_name)
    else {
        return Err(validation(format!(
            "Endpoint {} has no shadow variant {:?}; its shadow variants are {:?}",
            endpoint.name,
            input.shadow_variant_name,
            definition
                .shadow_production_variants
                .iter()
                .map(|v| v.variant_name.as_str())
                .collect::<Vec<_>>()
        )));
    };
    let mut promoted = definition.shadow_production_variants.remove(index);
    promoted.plinth_sampling_percentage = None;
    promoted.initial_variant_weight = 1.0;
    definition.production_variants = vec![promoted];
    definition.plinth_experiment = None;
    let config_name = match input.endpoint_config_name {
        Some(name) => name,
        None => {
            let catalog = lock(state);
            let base: String = format!(
                "{}-promoted-{}",
                endpoint.config_name, input.shadow_variant_name
            )
            .chars()
            .take(55)
            .collect();
            let base = base.trim_end_matches('-').to_string();
            (1..)
                .map(|n| {
                    if n == 1 {
                        base.clone()
                    } else {
                        format!("{base}-{n}")
                    }
                })
                .find(|n| catalog.config_named(n).is_none())
                .expect("some suffix is free")
        }
    };
    let mut config_input = serde_json::to_value(&definition).map_err(internal)?;
    config_input["EndpointConfigName"] = json!(config_name);
    create_endpoint_config(state, config_input)?;
    deploy::update_endpoint(state, &endpoint.name, &config_name, deployment, false)?;
    Ok(json!({
        "EndpointArn": arn("endpoint", &endpoint.name),
        "EndpointConfigName": config_name,
    }))
}

fn list_endpoints(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: ListInput = parse(input)?;
    if let Some(status) = &input.status_equals {
        if EndpointStatus::parse(status).is_none() && !KNOWN_STATUSES.contains(&status.as_str()) {
            return Err(enum_error("statusEquals", status, KNOWN_STATUSES));
        }
    }
    let items = state
        .endpoints
        .all()
        .values()
        .map(|e| Listed {
            name: e.name.clone(),
            created: e.created,
            modified: e.modified,
            status: e.status.as_str(),
            summary: json!({
                "EndpointName": e.name,
                "EndpointArn": arn("endpoint", &e.name),
                "CreationTime": e.created,
                "LastModifiedTime": e.modified,
                "EndpointStatus": e.status.as_str(),
            }),
        })
        .collect();
    list(
        items,
        input,
        &["Name", "CreationTime", "Status"],
        "Endpoints",
    )
}

/// SageMaker's endpoint states (for `StatusEquals`), including those Plinth never reports.
const KNOWN_STATUSES: &[&str] = &[
    "OutOfService",
    "Creating",
    "Updating",
    "SystemUpdating",
    "RollingBack",
    "InService",
    "Deleting",
    "Failed",
    "UpdateRollbackFailed",
];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateWeightsInput {
    endpoint_name: String,
    desired_weights_and_capacities: Vec<DesiredWeightAndCapacity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DesiredWeightAndCapacity {
    variant_name: String,
    desired_weight: Option<f64>,
    desired_instance_count: Option<i64>,
}

fn update_weights_and_capacities(state: &Arc<AppState>, input: Value) -> Result<Value, ApiError> {
    let input: UpdateWeightsInput = parse(input)?;
    let changes: Vec<Change> = input
        .desired_weights_and_capacities
        .into_iter()
        .map(|d| Change {
            variant: d.variant_name,
            weight: d.desired_weight,
            instance_count: d.desired_instance_count,
        })
        .collect();
    deploy::update_weights_and_capacities(state, &input.endpoint_name, &changes)?;
    Ok(json!({ "EndpointArn": arn("endpoint", &input.endpoint_name) }))
}

// ---- Experiments (Plinth's extension) ----

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecordOutcomesInput {
    endpoint_name: String,
    outcomes: Vec<OutcomeInput>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OutcomeInput {
    inference_id: String,
    value: f64,
}

fn experiment_of(
    state: &AppState,
    name: &str,
) -> Result<
    (
        Arc<EndpointSnapshot>,
        Option<Arc<crate::experiments::Experiment>>,
    ),
    ApiError,
> {
    let endpoint = state
        .endpoints
        .get(name)
        .ok_or_else(|| endpoint_not_found(name))?;
    let experiment = endpoint.experiment.clone();
    Ok((endpoint, experiment))
}

/// RecordInferenceOutcomes: outcomes (1/0 for a binary metric, any number for a numeric
/// one) for earlier invocations, by inference id. Each is attributed to the variant that
/// served it, or rejected with the reason: `Unknown`, `Expired`, `Duplicate`, `Late` (served
/// under a config the endpoint no longer serves) or `Invalid`.
fn record_outcomes(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: RecordOutcomesInput = parse(input)?;
    if input.outcomes.is_empty() || input.outcomes.len() > 1000 {
        return Err(validation("Outcomes must hold 1-1000 items"));
    }
    let (endpoint, experiment) = experiment_of(state, &input.endpoint_name)?;
    let mut recorded = 0;
    let mut rejected = Vec::new();
    for o in input.outcomes {
        match state.experiments.outcome(
            &endpoint.name,
            experiment.as_ref(),
            &o.inference_id,
            o.value,
        ) {
            Ok(variant) => {
                recorded += 1;
                state
                    .metrics
                    .outcomes
                    .with_label_values(&[endpoint.name.as_str(), variant.as_str()])
                    .inc();
            }
            Err(reason) => {
                state
                    .metrics
                    .outcomes_rejected
                    .with_label_values(&[endpoint.name.as_str(), reason.as_str()])
                    .inc();
                rejected.push(json!({"InferenceId": o.inference_id, "Reason": reason.as_str()}));
            }
        }
    }
    Ok(json!({ "Recorded": recorded, "Rejected": rejected }))
}

/// DescribeExperiment: the endpoint's experiment, per variant and against the control.
fn describe_experiment(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: EndpointNameInput = parse(input)?;
    let (endpoint, experiment) = experiment_of(state, &input.endpoint_name)?;
    let experiment = experiment.ok_or_else(|| {
        validation(format!(
            "Endpoint {} serves endpoint configuration {}, which has no PlinthExperiment.",
            endpoint.name, endpoint.config_name
        ))
    })?;
    let weights: Vec<f64> = endpoint.variants.iter().map(|v| v.current_weight).collect();
    Ok(experiment.report(&weights))
}

// ---- Listing: filters, sorting, pagination ----

/// The inputs the List operations share.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListInput {
    sort_by: Option<String>,
    sort_order: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
    name_contains: Option<String>,
    creation_time_before: Option<f64>,
    creation_time_after: Option<f64>,
    last_modified_time_before: Option<f64>,
    last_modified_time_after: Option<f64>,
    status_equals: Option<String>,
}

/// One resource as a List operation sees it.
pub(crate) struct Listed {
    pub(crate) name: String,
    pub(crate) created: f64,
    pub(crate) modified: f64,
    pub(crate) status: &'static str,
    pub(crate) summary: Value,
}

/// A sort key: the `SortBy` field's value, then the name.
#[derive(serde::Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
enum Key {
    Number(f64),
    Text(String),
}

impl Key {
    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Number(a), Key::Number(b)) => a.total_cmp(b),
            (Key::Text(a), Key::Text(b)) => a.cmp(b),
            (Key::Number(_), Key::Text(_)) => Ordering::Less,
            (Key::Text(_), Key::Number(_)) => Ordering::Greater,
        }
    }
}

fn enum_error(field: &str, value: &str, allowed: &[&str]) -> ApiError {
    validation(format!(
        "1 validation error detected: Value {value:?} at '{field}' failed to satisfy \
         constraint: Member must satisfy enum value set: [{}]",
        allowed.join(", ")
    ))
}

/// Filter, sort and page `items` as SageMaker's List operations do: `SortBy` (default
/// `CreationTime`), `SortOrder` (default `Descending`), `MaxResults` 1-100 (default 10), and
/// an opaque `NextToken` that resumes after the last item returned (stable while items are
/// added or removed).
pub(crate) fn list(
    mut items: Vec<Listed>,
    input: ListInput,
    sort_keys: &[&str],
    output_key: &str,
) -> Result<Value, ApiError> {
    let sort_by = input.sort_by.as_deref().unwrap_or("CreationTime");
    if !sort_keys.contains(&sort_by) {
        return Err(enum_error("sortBy", sort_by, sort_keys));
    }
    let descending = match input.sort_order.as_deref().unwrap_or("Descending") {
        "Descending" => true,
        "Ascending" => false,
        other => return Err(enum_error("sortOrder", other, &["Ascending", "Descending"])),
    };
    let max = input.max_results.unwrap_or(10);
    if !(1..=100).contains(&max) {
        return Err(validation(format!(
            "1 validation error detected: Value {max} at 'maxResults' failed to satisfy \
             constraint: Member must have value between 1 and 100"
        )));
    }
    let key = |item: &Listed| match sort_by {
        "Name" => Key::Text(item.name.clone()),
        "Status" => Key::Text(item.status.to_string()),
        _ => Key::Number(item.created),
    };
    let order = |a: &(Key, String), b: &(Key, String)| {
        let o = a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1));
        if descending {
            o.reverse()
        } else {
            o
        }
    };
    items.retain(|i| {
        input
            .name_contains
            .as_deref()
            .is_none_or(|s| i.name.to_lowercase().contains(&s.to_lowercase()))
            && input.creation_time_before.is_none_or(|t| i.created < t)
            && input.creation_time_after.is_none_or(|t| i.created > t)
            && input
                .last_modified_time_before
                .is_none_or(|t| i.modified < t)
            && input
                .last_modified_time_after
                .is_none_or(|t| i.modified > t)
            && input.status_equals.as_deref().is_none_or(|s| i.status == s)
    });
    let mut keyed: Vec<((Key, String), Value)> = items
        .into_iter()
        .map(|i| ((key(&i), i.name), i.summary))
        .collect();
    keyed.sort_by(|a, b| order(&a.0, &b.0));
    if let Some(token) = &input.next_token {
        let after = decode_token(token, sort_by, descending)?;
        keyed.retain(|(k, _)| order(k, &after) == Ordering::Greater);
    }
    let more = keyed.len() > max as usize;
    keyed.truncate(max as usize);
    let mut output = json!({ output_key: keyed.iter().map(|(_, s)| s).collect::<Vec<_>>() });
    if more {
        if let Some((last, _)) = keyed.last() {
            output["NextToken"] = json!(encode_token(last, sort_by, descending));
        }
    }
    Ok(output)
}

fn encode_token(last: &(Key, String), sort_by: &str, descending: bool) -> String {
    hex::encode(json!([sort_by, descending, last.0, last.1]).to_string())
}

fn decode_token(token: &str, sort_by: &str, descending: bool) -> Result<(Key, String), ApiError> {
    let invalid = || {
        validation("Invalid pagination token: NextToken does not come from this listing with these SortBy and SortOrder values.")
    };
    let bytes = hex::decode(token).map_err(|_| invalid())?;
    let (by, desc, key, name): (String, bool, Key, String) =
        serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if by != sort_by || desc != descending {
        return Err(invalid());
    }
    Ok((key, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<Listed> {
        (0..n)
            .map(|i| Listed {
                name: format!("m{i:02}"),
                created: 1000.0 + (i % 5) as f64,
                modified: 2000.0 + i as f64,
                status: if i % 2 == 0 { "InService" } else { "Failed" },
                summary: json!(format!("m{i:02}")),
            })
            .collect()
    }

    fn input(v: Value) -> ListInput {
        serde_json::from_value(v).unwrap()
    }

    fn names(output: &Value) -> Vec<String> {
        output["Things"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn pages_cover_every_item_once_in_order() {
        for (sort_by, order) in [
            ("Name", "Ascending"),
            ("CreationTime", "Descending"),
            ("Status", "Ascending"),
        ] {
            let mut seen = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let mut request = json!({"SortBy": sort_by, "SortOrder": order, "MaxResults": 7});
                if let Some(t) = &token {
                    request["NextToken"] = json!(t);
                }
                let out = list(
                    items(23),
                    input(request),
                    &["Name", "CreationTime", "Status"],
                    "Things",
                )
                .unwrap();
                seen.extend(names(&out));
                match out["NextToken"].as_str() {
                    Some(t) => token = Some(t.to_string()),
                    None => break,
                }
            }
            let mut expected: Vec<String> = (0..23).map(|i| format!("m{i:02}")).collect();
            let mut sorted = seen.clone();
            sorted.sort();
            expected.sort();
            assert_eq!(sorted, expected, "{sort_by} {order}");
            if sort_by == "Name" {
                assert_eq!(seen, expected);
            }
        }
    }

    #[test]
    fn default_is_newest_first_ten() {
        let out = list(
            items(23),
            input(json!({})),
            &["Name", "CreationTime"],
            "Things",
        )
        .unwrap();
        let got = names(&out);
        assert_eq!(got.len(), 10);
        // Created 1004 (i % 5 == 4), names descending.
        assert_eq!(&got[..2], ["m19", "m14"]);
        assert!(out["NextToken"].is_string());
    }

    #[test]
    fn filters_apply() {
        let out = list(
            items(23),
            input(json!({"NameContains": "M1", "StatusEquals": "Failed", "SortBy": "Name", "SortOrder": "Ascending", "CreationTimeAfter": 1000.5})),
            &["Name", "CreationTime", "Status"],
            "Things",
        )
        .unwrap();
        assert_eq!(names(&out), ["m11", "m13", "m17", "m19"]);
        assert!(out.get("NextToken").is_none());
    }

    #[test]
    fn bad_list_inputs_are_validation_errors() {
        for bad in [
            json!({"SortBy": "Size"}),
            json!({"SortOrder": "Up"}),
            json!({"MaxResults": 0}),
            json!({"MaxResults": 101}),
            json!({"NextToken": "zz"}),
            json!({"NextToken": hex::encode("[\"Name\",true,\"a\",\"a\"]"), "SortBy": "CreationTime"}),
        ] {
            let e = list(
                items(3),
                input(bad.clone()),
                &["Name", "CreationTime"],
                "Things",
            )
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
