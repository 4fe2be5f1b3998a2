//! The control plane, as SageMaker's awsJson1_1 protocol: `POST /` with
//! `X-Amz-Target: SageMaker.<Operation>`. Operations here: CreateModel,
//! CreateEndpointConfig, DescribeEndpointConfig, UpdateEndpoint, DescribeEndpoint,
//! ListEndpoints, UpdateEndpointWeightsAndCapacities. This module owns the wire shapes;
//! `deploy` owns what changes.

use crate::api::AppState;
use crate::catalog::{ConfigRecord, ModelRecord};
use crate::deploy::{self, Refused};
use crate::endpoints::EndpointSnapshot;
use crate::error::{ApiError, ACCOUNT_ID};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use plinth_policy::capacity::Change;
use plinth_policy::config::{
    check_variants, EndpointConfig, Model, Variant, DEFAULT_MAX_QUEUE_LENGTH, DEFAULT_MEMORY_MIB,
    DEFAULT_TIMEOUT_SECONDS,
};
use plinth_policy::names;
use plinth_policy::routing::RoutingStrategy;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// The region named in ARNs.
const REGION: &str = "us-east-1";

pub(crate) fn endpoint_arn(name: &str) -> String {
    format!(
        "arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:endpoint/{}",
        name.to_lowercase()
    )
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn validation(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "ValidationException", message)
}

fn not_found(name: &str) -> ApiError {
    validation(format!(
        "Could not find endpoint \"{}\".",
        endpoint_arn(name)
    ))
}

/// `POST /`: dispatch on `X-Amz-Target`.
pub(crate) async fn dispatch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(operation) = target.strip_prefix("SageMaker.") else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("X-Amz-Target {target:?} is not a SageMaker operation"),
        )
        .into_response();
    };
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "SerializationException",
                    format!("the request body is not valid JSON: {e}"),
                )
                .into_response()
            }
        }
    };
    let result = match operation {
        "CreateModel" => create_model(&state, input),
        "CreateEndpointConfig" => create_endpoint_config(&state, input),
        "DescribeModel" => describe_model(&state, input),
        "DescribeEndpointConfig" => describe_endpoint_config(&state, input),
        "UpdateEndpoint" => update_endpoint(&state, input).await,
        "DescribeEndpoint" => describe_endpoint(&state, input),
        "ListEndpoints" => list_endpoints(&state),
        "UpdateEndpointWeightsAndCapacities" => update_weights_and_capacities(&state, input).await,
        other => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("operation {other} is not supported by this Plinth version"),
        )),
    };
    match result {
        Ok(output) => (
            [("content-type", "application/x-amz-json-1.1")],
            axum::Json(output),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(input: Value) -> Result<T, ApiError> {
    serde_json::from_value(input).map_err(|e| validation(format!("invalid request: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointNameInput {
    endpoint_name: String,
}

fn describe_endpoint(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: EndpointNameInput = parse(input)?;
    let endpoint = state
        .endpoints
        .get(&input.endpoint_name)
        .ok_or_else(|| not_found(&input.endpoint_name))?;
    Ok(describe(&endpoint))
}

/// SageMaker's DescribeEndpoint output for a snapshot.
pub(crate) fn describe(endpoint: &EndpointSnapshot) -> Value {
    let mut output = describe_fields(endpoint);
    if let Some(reason) = &endpoint.failure_reason {
        output["FailureReason"] = json!(reason);
    }
    output
}

fn describe_fields(endpoint: &EndpointSnapshot) -> Value {
    let variants: Vec<Value> = endpoint
        .variants
        .iter()
        .map(|v| {
            json!({
                "VariantName": v.live.name,
                "ModelName": v.live.model_name,
                "CurrentWeight": v.current_weight,
                "DesiredWeight": v.desired_weight,
                "CurrentInstanceCount": v.live.pool.stats().instances,
                "DesiredInstanceCount": v.desired_instance_count,
                "RoutingConfig": { "RoutingStrategy": v.live.pool.routing().as_str() },
            })
        })
        .collect();
    json!({
        "EndpointName": endpoint.name,
        "EndpointArn": endpoint_arn(&endpoint.name),
        "EndpointConfigName": endpoint.config_name,
        "ProductionVariants": variants,
        "EndpointStatus": endpoint.status.as_str(),
        "CreationTime": epoch(endpoint.created),
        "LastModifiedTime": epoch(endpoint.modified),
    })
}

fn list_endpoints(state: &AppState) -> Result<Value, ApiError> {
    let all = state.endpoints.all();
    let mut endpoints: Vec<_> = all.values().collect();
    endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    let summaries: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            json!({
                "EndpointName": e.name,
                "EndpointArn": endpoint_arn(&e.name),
                "CreationTime": epoch(e.created),
                "LastModifiedTime": epoch(e.modified),
                "EndpointStatus": e.status.as_str(),
            })
        })
        .collect();
    Ok(json!({ "Endpoints": summaries }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateInput {
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

fn refused(e: Refused) -> ApiError {
    validation(e.to_string())
}

async fn update_weights_and_capacities(
    state: &Arc<AppState>,
    input: Value,
) -> Result<Value, ApiError> {
    let input: UpdateInput = parse(input)?;
    let changes: Vec<Change> = input
        .desired_weights_and_capacities
        .into_iter()
        .map(|d| Change {
            variant: d.variant_name,
            weight: d.desired_weight,
            instance_count: d.desired_instance_count,
        })
        .collect();
    let _exclusive = state.updates.lock().await;
    deploy::update_weights_and_capacities(state, &input.endpoint_name, &changes)
        .map_err(refused)?;
    Ok(json!({ "EndpointArn": endpoint_arn(&input.endpoint_name) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateEndpointInput {
    endpoint_name: String,
    endpoint_config_name: String,
}

async fn update_endpoint(state: &Arc<AppState>, input: Value) -> Result<Value, ApiError> {
    let input: UpdateEndpointInput = parse(input)?;
    let config = lock(&state.catalog)
        .configs
        .get(&input.endpoint_config_name)
        .map(|c| c.config.clone())
        .ok_or_else(|| {
            validation(format!(
                "Could not find endpoint configuration \"{}\".",
                arn("endpoint-config", &input.endpoint_config_name)
            ))
        })?;
    let _exclusive = state.updates.lock().await;
    deploy::update_endpoint(state, &input.endpoint_name, config).map_err(refused)?;
    Ok(json!({ "EndpointArn": endpoint_arn(&input.endpoint_name) }))
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn arn(kind: &str, name: &str) -> String {
    format!(
        "arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:{kind}/{}",
        name.to_lowercase()
    )
}

/// A local path from `Image` or `ModelDataUrl`: a path or a `file://` URL.
fn local_path(field: &str, value: &str) -> Result<PathBuf, ApiError> {
    let path = value.strip_prefix("file://").unwrap_or(value);
    if path.contains("://") {
        return Err(validation(format!(
            "{field} {value:?}: only local paths and file:// URLs are supported"
        )));
    }
    Ok(PathBuf::from(path))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateModelInput {
    model_name: String,
    primary_container: ContainerDefinition,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerDefinition {
    image: String,
    model_data_url: Option<String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
}

fn create_model(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: CreateModelInput = parse(input)?;
    if !names::is_valid(&input.model_name) {
        return Err(validation(format!(
            "ModelName {:?} is not valid: {}",
            input.model_name,
            names::RULE
        )));
    }
    let container = input.primary_container;
    let component = local_path("Image", &container.image)?;
    if !component.is_file() {
        return Err(validation(format!(
            "Image {:?}: no component file there",
            container.image
        )));
    }
    let model_data = container
        .model_data_url
        .as_deref()
        .map(|url| local_path("ModelDataUrl", url))
        .transpose()?;
    if let Some(dir) = &model_data {
        if !dir.is_dir() {
            return Err(validation(format!(
                "ModelDataUrl {:?}: not a directory",
                dir.display()
            )));
        }
    }
    let model = Model {
        name: input.model_name.clone(),
        component,
        model_data,
        environment: container.environment.into_iter().collect(),
        memory_bytes: (DEFAULT_MEMORY_MIB as usize) << 20,
        timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
    };
    let mut catalog = lock(&state.catalog);
    if catalog.models.contains_key(&model.name) {
        return Err(validation(format!(
            "Cannot create already existing model \"{}\".",
            arn("model", &model.name)
        )));
    }
    catalog.models.insert(
        model.name.clone(),
        ModelRecord {
            model,
            created: SystemTime::now(),
        },
    );
    Ok(json!({ "ModelArn": arn("model", &input.model_name) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEndpointConfigInput {
    endpoint_config_name: String,
    production_variants: Vec<ProductionVariantInput>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProductionVariantInput {
    variant_name: String,
    model_name: String,
    initial_instance_count: Option<usize>,
    initial_variant_weight: Option<f64>,
    routing_config: Option<RoutingConfigInput>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoutingConfigInput {
    routing_strategy: RoutingStrategy,
}

fn create_endpoint_config(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: CreateEndpointConfigInput = parse(input)?;
    let name = input.endpoint_config_name;
    if !names::is_valid(&name) {
        return Err(validation(format!(
            "EndpointConfigName {name:?} is not valid: {}",
            names::RULE
        )));
    }
    let mut catalog = lock(&state.catalog);
    if catalog.configs.contains_key(&name) {
        return Err(validation(format!(
            "Cannot create already existing endpoint configuration \"{}\".",
            arn("endpoint-config", &name)
        )));
    }
    let mut variants = Vec::new();
    for v in input.production_variants {
        let model = catalog
            .models
            .get(&v.model_name)
            .ok_or_else(|| {
                validation(format!(
                    "Could not find model \"{}\".",
                    arn("model", &v.model_name)
                ))
            })?
            .model
            .clone();
        variants.push(Variant {
            name: v.variant_name,
            model,
            instance_count: v.initial_instance_count.unwrap_or(1),
            weight: v.initial_variant_weight.unwrap_or(1.0),
            routing_strategy: v
                .routing_config
                .map(|r| r.routing_strategy)
                .unwrap_or_default(),
            max_queue_length: DEFAULT_MAX_QUEUE_LENGTH,
        });
    }
    check_variants(&name, &variants).map_err(|p| {
        let at = p
            .index
            .map(|j| format!("ProductionVariants[{j}]: "))
            .unwrap_or_else(|| "ProductionVariants: ".into());
        validation(format!("{at}{}", p.message))
    })?;
    catalog.configs.insert(
        name.clone(),
        ConfigRecord {
            config: EndpointConfig {
                name: name.clone(),
                variants,
            },
            created: SystemTime::now(),
        },
    );
    Ok(json!({ "EndpointConfigArn": arn("endpoint-config", &name) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModelNameInput {
    model_name: String,
}

fn describe_model(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: ModelNameInput = parse(input)?;
    let catalog = lock(&state.catalog);
    let record = catalog.models.get(&input.model_name).ok_or_else(|| {
        validation(format!(
            "Could not find model \"{}\".",
            arn("model", &input.model_name)
        ))
    })?;
    let m = &record.model;
    let mut container = json!({
        "Image": m.component.display().to_string(),
        "Environment": m.environment.iter().cloned().collect::<BTreeMap<_, _>>(),
    });
    if let Some(dir) = &m.model_data {
        container["ModelDataUrl"] = json!(dir.display().to_string());
    }
    Ok(json!({
        "ModelName": m.name,
        "ModelArn": arn("model", &m.name),
        "PrimaryContainer": container,
        "CreationTime": epoch(record.created),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointConfigNameInput {
    endpoint_config_name: String,
}

fn describe_endpoint_config(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: EndpointConfigNameInput = parse(input)?;
    let catalog = lock(&state.catalog);
    let record = catalog
        .configs
        .get(&input.endpoint_config_name)
        .ok_or_else(|| {
            validation(format!(
                "Could not find endpoint configuration \"{}\".",
                arn("endpoint-config", &input.endpoint_config_name)
            ))
        })?;
    let variants: Vec<Value> = record
        .config
        .variants
        .iter()
        .map(|v| {
            json!({
                "VariantName": v.name,
                "ModelName": v.model.name,
                "InitialInstanceCount": v.instance_count,
                "InitialVariantWeight": v.weight,
                "RoutingConfig": { "RoutingStrategy": v.routing_strategy.as_str() },
            })
        })
        .collect();
    Ok(json!({
        "EndpointConfigName": record.config.name,
        "EndpointConfigArn": arn("endpoint-config", &record.config.name),
        "ProductionVariants": variants,
        "CreationTime": epoch(record.created),
    }))
}
