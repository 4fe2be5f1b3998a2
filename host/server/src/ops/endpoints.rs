//! CreateEndpoint, DescribeEndpoint, UpdateEndpoint, UpdateEndpointWeightsAndCapacities,
//! DeleteEndpoint, ListEndpoints and ListEndpointEvents: the wire shapes over `fleet::deploy`.

use super::common::{
    check_name, endpoint_not_found, internal, named_endpoint, parse, validation, EndpointNameInput,
};
use super::listing::{enum_error, list, ListInput, Listed};
use crate::error::ApiError;
use crate::fleet::deploy;
use crate::fleet::table::{EndpointSnapshot, EndpointStatus, EndpointTable, VariantState};
use crate::fleet::Fleet;
use crate::state::arn;
use crate::state::store::Store;
use plinth_policy::capacity::Change;
use plinth_policy::rollout::DeploymentConfig;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

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
pub(crate) fn deployment_config(
    value: Option<Value>,
) -> Result<Option<DeploymentConfig>, ApiError> {
    value
        .map(|v| {
            serde_json::from_value(v)
                .map_err(|e| validation(format!("invalid DeploymentConfig: {e}")))
        })
        .transpose()
}

pub(crate) fn create_endpoint(state: &Arc<Fleet>, input: Value) -> Result<Value, ApiError> {
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
}

pub(crate) fn update_endpoint(state: &Arc<Fleet>, input: Value) -> Result<Value, ApiError> {
    let input: UpdateEndpointInput = parse(input)?;
    let deployment = deployment_config(input.deployment_config)?;
    check_scaled_variants(state, &input.endpoint_name, &input.endpoint_config_name)?;
    deploy::update_endpoint(
        state,
        &input.endpoint_name,
        &input.endpoint_config_name,
        deployment,
        input.retain_deployment_config,
    )?;
    Ok(json!({ "EndpointArn": arn("endpoint", &input.endpoint_name) }))
}

/// UpdateEndpoint may not change the instance type of a variant under autoscaling
/// ([`plinth_policy::autoscaling::check_update`]).
fn check_scaled_variants(state: &Fleet, endpoint: &str, config: &str) -> Result<(), ApiError> {
    let (scaled, to_zero) = {
        let scaling = state.stored.scaling();
        let targets = scaling.targets_of(endpoint);
        let to_zero = targets
            .iter()
            .filter(|k| {
                scaling
                    .targets
                    .get(*k)
                    .is_some_and(|t| t.target.min_capacity == 0)
            })
            .map(|(r, _)| r.variant.clone())
            .next();
        let scaled: Vec<String> = targets.into_iter().map(|(r, _)| r.variant).collect();
        (scaled, to_zero)
    };
    if scaled.is_empty() {
        return Ok(());
    }
    if let Some(variant) = to_zero {
        if crate::fleet::async_jobs::config_of(state, config).is_none() {
            return Err(validation(format!(
                "Endpoint config {config} has no AsyncInferenceConfig, but variant {variant} of \
                 endpoint {endpoint} is registered to scale to 0 instances (MinCapacity 0), \
                 which only an asynchronous endpoint may; register it with MinCapacity 1 first"
            )));
        }
    }
    let Some(current) = state.endpoints.get(endpoint) else {
        return Ok(());
    };
    let catalog = state.catalog();
    let types = |name: &str| -> Vec<(String, Option<String>)> {
        catalog.configs.get(name).map_or_else(Vec::new, |c| {
            c.definition
                .production_variants
                .iter()
                .map(|v| (v.variant_name.clone(), v.instance_type.clone()))
                .collect()
        })
    };
    let (old, new) = (types(&current.config_name), types(config));
    fn refs(v: &[(String, Option<String>)]) -> Vec<(&str, Option<&str>)> {
        v.iter().map(|(n, t)| (n.as_str(), t.as_deref())).collect()
    }
    let scaled: Vec<&str> = scaled.iter().map(String::as_str).collect();
    plinth_policy::autoscaling::check_update(&scaled, &refs(&old), &refs(&new))
        .map_err(|e| validation(e.0))
}

/// DeleteEndpoint; Application Auto Scaling's targets on its variants are deregistered with
/// it, as SageMaker does.
pub(crate) fn delete_endpoint(state: &Fleet, input: Value) -> Result<Value, ApiError> {
    let input: EndpointNameInput = parse(input)?;
    deploy::delete_endpoint(state, &input.endpoint_name)?;
    let deregistered = state
        .stored
        .scaling()
        .delete_endpoint_targets(&state.stored.store, &input.endpoint_name)
        .map_err(internal)?;
    if deregistered > 0 {
        tracing::info!(endpoint = %input.endpoint_name, deregistered, "the endpoint's scalable targets were deregistered with it");
    }
    Ok(json!({}))
}

pub(crate) fn describe_endpoint(state: &Fleet, input: Value) -> Result<Value, ApiError> {
    let endpoint = named_endpoint(&state.endpoints, input)?;
    let mut output = describe(&endpoint);
    // An asynchronous endpoint shows its config's AsyncInferenceConfig, as SageMaker does,
    // and one that captures data its DataCaptureConfig summary.
    let (asynchronous, capture) = state
        .catalog()
        .configs
        .get(&endpoint.config_name)
        .map(|c| {
            (
                c.definition.async_inference_config.clone(),
                c.definition.data_capture_config.clone(),
            )
        })
        .unwrap_or_default();
    if let Some(config) = asynchronous {
        output["AsyncInferenceConfig"] = serde_json::to_value(config).map_err(internal)?;
    }
    if let Some(Ok(settings)) = capture.map(|c| c.settings()) {
        output["DataCaptureConfig"] = json!({
            "EnableCapture": settings.enabled,
            "CaptureStatus": plinth_policy::data_capture::capture_status(&settings),
            "CurrentSamplingPercentage": settings.sampling_percentage,
            "DestinationS3Uri": settings.destination,
        });
    }
    Ok(output)
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
                    "CurrentInstanceCount": s.live.serving.stats().instances,
                    "DesiredInstanceCount": s.desired_instance_count,
                    "PlinthSamplingPercentage": s.sampling * 100.0,
                    "PlinthBackend": s.live.serving.backend().as_str(),
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
        "CurrentInstanceCount": v.live.serving.stats().instances,
        "DesiredInstanceCount": v.desired_instance_count,
        "RoutingConfig": { "RoutingStrategy": v.live.serving.routing().as_str() },
        "PlinthBackend": v.live.serving.backend().as_str(),
    });
    if let Some(elastic) = v.live.serving.elastic() {
        // A serverless variant reports its configuration instead of instance counts.
        let config = json!({
            "MemorySizeInMB": v.live.serving.limits().memory_bytes >> 20,
            "MaxConcurrency": elastic.max_concurrency,
            "ProvisionedConcurrency": elastic.provisioned,
        });
        let fields = summary.as_object_mut().expect("an object");
        fields.remove("CurrentInstanceCount");
        fields.remove("DesiredInstanceCount");
        let mut current = config.clone();
        if elastic.provisioned == 0 {
            current
                .as_object_mut()
                .expect("an object")
                .remove("ProvisionedConcurrency");
        }
        fields.insert("CurrentServerlessConfig".into(), current.clone());
        fields.insert("DesiredServerlessConfig".into(), current);
    }
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
pub(crate) fn list_endpoint_events(
    endpoints: &EndpointTable,
    store: &Store,
    input: Value,
) -> Result<Value, ApiError> {
    let input: EventsInput = parse(input)?;
    if endpoints.get(&input.endpoint_name).is_none() {
        return Err(endpoint_not_found(&input.endpoint_name));
    }
    let limit = input.max_results.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(validation("MaxResults must be between 1 and 1000"));
    }
    let (after, limit) = if input.after_sequence < 0 {
        // Negative: the last |n| events.
        let last = store.last_event(&input.endpoint_name).map_err(internal)?;
        (last + input.after_sequence, limit)
    } else {
        (input.after_sequence, limit)
    };
    let events: Vec<Value> = store
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

pub(crate) fn list_endpoints(endpoints: &EndpointTable, input: Value) -> Result<Value, ApiError> {
    let input: ListInput = parse(input)?;
    if let Some(status) = &input.status_equals {
        if EndpointStatus::parse(status).is_none() && !KNOWN_STATUSES.contains(&status.as_str()) {
            return Err(enum_error("statusEquals", status, KNOWN_STATUSES));
        }
    }
    let items = endpoints
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
    serverless_update_config: Option<ServerlessUpdateConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServerlessUpdateConfig {
    max_concurrency: Option<i64>,
    provisioned_concurrency: Option<i64>,
}

pub(crate) fn update_weights_and_capacities(
    state: &Arc<Fleet>,
    input: Value,
) -> Result<Value, ApiError> {
    let input: UpdateWeightsInput = parse(input)?;
    let changes: Vec<Change> = input
        .desired_weights_and_capacities
        .into_iter()
        .map(|d| Change {
            variant: d.variant_name,
            weight: d.desired_weight,
            instance_count: d.desired_instance_count,
            serverless: d.serverless_update_config.map(|c| {
                plinth_policy::capacity::ServerlessUpdate {
                    max_concurrency: c.max_concurrency,
                    provisioned_concurrency: c.provisioned_concurrency,
                }
            }),
        })
        .collect();
    deploy::update_weights_and_capacities(state, &input.endpoint_name, &changes)?;
    Ok(json!({ "EndpointArn": arn("endpoint", &input.endpoint_name) }))
}
