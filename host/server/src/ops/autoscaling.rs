//! Application Auto Scaling's operations for SageMaker variants (boto3's
//! `application-autoscaling`: RegisterScalableTarget, DeregisterScalableTarget,
//! DescribeScalableTargets, PutScalingPolicy, DescribeScalingPolicies, DeleteScalingPolicy,
//! DescribeScalingActivities) with its errors: [`call`], their one entry point. The targets
//! and policies are kept by `state::scaling`; the controller that runs them is
//! `fleet::autoscaler`; what a target or policy may be is [`plinth_policy::autoscaling`].

use super::common::{admit, internal, parse, validation};
use crate::error::ApiError;
use crate::fleet::Fleet;
use crate::state::scaling::{TargetKey, TargetRecord};
use crate::state::store::StoreError;
use crate::state::{now, scalable_target_arn, scaling_policy_arn, ACCOUNT_ID};
use axum::http::StatusCode;
use plinth_policy::autoscaling::{
    self, Dimension, Registration, ResourceId, ScalingPolicy, TargetTrackingConfiguration,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The role a target registered without `RoleARN` gets: SageMaker's service-linked role.
const SERVICE_LINKED_ROLE: &str = "arn:aws:iam::123456789012:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint";

/// `MaxResults` when a Describe gives none (and its largest value).
const PAGE: usize = 50;
/// DescribeScalingPolicies' `MaxResults` when it gives none (and its largest value).
const POLICIES_PAGE: usize = 10;

/// Run one Application Auto Scaling operation: the member check, then the operation;
/// changes are serialised with every other change to endpoints.
pub(crate) async fn call(
    state: &Arc<Fleet>,
    operation: &str,
    input: Value,
) -> Result<Value, ApiError> {
    admit(
        operation,
        &input,
        plinth_policy::members::autoscaling_operations,
        validation,
    )?;
    let _exclusive = if operation.starts_with("Describe") {
        None
    } else {
        Some(state.changes.lock().await)
    };
    match operation {
        "RegisterScalableTarget" => register_scalable_target(state, input),
        "DeregisterScalableTarget" => deregister_scalable_target(state, input),
        "DescribeScalableTargets" => describe_scalable_targets(state, input),
        "PutScalingPolicy" => put_scaling_policy(state, input),
        "DescribeScalingPolicies" => describe_scaling_policies(state, input),
        "DeleteScalingPolicy" => delete_scaling_policy(state, input),
        "DescribeScalingActivities" => describe_scaling_activities(state, input),
        _ => unreachable!("checked above"),
    }
}

fn object_not_found(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "ObjectNotFoundException", message)
}

fn invalid_next_token() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "InvalidNextTokenException",
        "Invalid token: NextToken does not come from this listing",
    )
}

fn store_failed(e: StoreError) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServiceException",
        e.to_string(),
    )
}

/// The members every operation on one target has.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TargetInput {
    #[allow(dead_code)] // The member table admits `sagemaker` only.
    service_namespace: String,
    resource_id: String,
    scalable_dimension: String,
}

impl TargetInput {
    fn key(&self) -> Result<TargetKey, ApiError> {
        let resource = ResourceId::parse(&self.resource_id).map_err(|e| validation(e.0))?;
        let dimension = dimension(&self.scalable_dimension)?;
        Ok((resource, dimension))
    }
}

/// A Describe's `ScalableDimension`, which needs the resource it belongs to (`resource`,
/// named `member`), as Application Auto Scaling has it.
fn dimension_of(
    name: Option<&str>,
    resource: bool,
    member: &str,
) -> Result<Option<Dimension>, ApiError> {
    match name {
        None => Ok(None),
        Some(_) if !resource => Err(validation(format!(
            "ScalableDimension needs {member}: give the resource the dimension belongs to"
        ))),
        Some(name) => dimension(name).map(Some),
    }
}

fn dimension(name: &str) -> Result<Dimension, ApiError> {
    // The member table admits the two names only.
    Dimension::from_name(name)
        .ok_or_else(|| validation(format!("unknown ScalableDimension {name}")))
}

/// "for service namespace: sagemaker, resource ID: ..., scalable dimension: ...", as
/// Application Auto Scaling's messages name a target.
fn named(key: &TargetKey) -> String {
    format!(
        "service namespace: sagemaker, resource ID: {}, scalable dimension: {}",
        key.0, key.1
    )
}

/// The least and the most the variant a target names can take in its dimension, or why it
/// cannot be a target: it must exist, and a provisioned-concurrency target must be a
/// serverless variant with provisioned concurrency (an instance-count target one that is not
/// serverless). The least is 0 for an asynchronous endpoint's instance count (its queue
/// waits for an instance; a backlog policy starts one), else 1.
fn capacity_range(state: &Fleet, key: &TargetKey) -> Result<(u32, u32), ApiError> {
    let (resource, dimension) = key;
    let endpoint = state.endpoints.get(&resource.endpoint).ok_or_else(|| {
        validation(format!(
            "Could not find endpoint \"{}\" of account {ACCOUNT_ID} (ResourceId {resource})",
            resource.endpoint
        ))
    })?;
    // What runs, or (while it is created) what it is created with.
    let serverless: Option<(usize, usize)> = if endpoint.variants.is_empty() {
        let catalog = state.catalog();
        let config = catalog.configs.get(&endpoint.config_name);
        let variant = config.and_then(|c| {
            c.definition
                .production_variants
                .iter()
                .find(|v| v.variant_name == resource.variant)
        });
        let Some(variant) = variant else {
            return Err(no_variant(resource));
        };
        variant.serverless_config.map(|c| {
            let s = c.settings();
            (s.max_concurrency, s.provisioned_concurrency)
        })
    } else {
        let variant = endpoint
            .variants
            .iter()
            .find(|v| v.live.name == resource.variant)
            .ok_or_else(|| no_variant(resource))?;
        variant
            .live
            .serving
            .elastic()
            .map(|e| (e.max_concurrency, e.provisioned))
    };
    let queued = queued(state, &resource.endpoint);
    match (dimension, serverless) {
        (Dimension::InstanceCount, None) => {
            Ok((u32::from(!queued), Dimension::InstanceCount.ceiling()))
        }
        (Dimension::InstanceCount, Some(_)) => Err(validation(format!(
            "ResourceId {resource} is a serverless variant, which has no instance count: \
             scale its provisioned concurrency ({})",
            Dimension::ProvisionedConcurrency
        ))),
        (Dimension::ProvisionedConcurrency, Some((max, provisioned))) if provisioned > 0 => {
            Ok((1, u32::try_from(max).unwrap_or(u32::MAX)))
        }
        (Dimension::ProvisionedConcurrency, _) => Err(validation(format!(
            "ResourceId {resource} is not a serverless variant with ProvisionedConcurrency, so \
             {} does not apply to it",
            Dimension::ProvisionedConcurrency
        ))),
    }
}

/// Whether `endpoint` is asynchronous (its endpoint config has `AsyncInferenceConfig`).
fn queued(state: &Fleet, endpoint: &str) -> bool {
    state
        .endpoints
        .get(endpoint)
        .is_some_and(|e| crate::fleet::async_jobs::config_of(state, &e.config_name).is_some())
}

fn no_variant(resource: &ResourceId) -> ApiError {
    validation(format!(
        "Endpoint \"{}\" has no variant \"{}\" (ResourceId {resource})",
        resource.endpoint, resource.variant
    ))
}

/// RegisterScalableTarget: register a variant's dimension, or update a registered one (the
/// members it leaves out keep their values). Capacity outside new bounds is brought inside
/// by the controller at once.
fn register_scalable_target(state: &Fleet, input: Value) -> Result<Value, ApiError> {
    let target: TargetInput = parse(input.clone())?;
    let registration: Registration = parse(input)?;
    let key = target.key()?;
    let range = capacity_range(state, &key)?;
    let queued = queued(state, &key.0.endpoint);
    let mut scaling = state.stored.scaling();
    let existing = scaling.targets.get(&key).map(|t| &t.target);
    let registered = autoscaling::register(
        existing,
        key.0.clone(),
        key.1,
        registration,
        range,
        SERVICE_LINKED_ROLE,
    )
    .map_err(|e| validation(e.0))?;
    // The policies already on the target must still fit it (a MinCapacity of 0 takes
    // backlog policies only).
    for (name, p) in scaling
        .targets
        .get(&key)
        .map(|t| &t.policies)
        .into_iter()
        .flatten()
    {
        if let Ok(compiled) = &p.compiled {
            autoscaling::check_metric(&compiled.metric, &key.0, registered.min_capacity, queued)
                .map_err(|e| validation(format!("policy {name}: {}", e.0)))?;
        }
    }
    tracing::info!(target = %named(&key), min = registered.min_capacity, max = registered.max_capacity, "scalable target registered");
    scaling
        .put_target(&state.stored.store, registered, now())
        .map_err(store_failed)?;
    Ok(json!({
        "ScalableTargetARN": scalable_target_arn(&key.0.to_string(), key.1.as_str())
    }))
}

/// DeregisterScalableTarget: the target and its policies are deleted; its activities stay.
fn deregister_scalable_target(state: &Fleet, input: Value) -> Result<Value, ApiError> {
    let target: TargetInput = parse(input)?;
    let key = target.key()?;
    let mut scaling = state.stored.scaling();
    if !scaling.targets.contains_key(&key) {
        return Err(object_not_found(format!(
            "No scalable target registered for {}",
            named(&key)
        )));
    }
    scaling
        .delete_target(&state.stored.store, &key)
        .map_err(store_failed)?;
    tracing::info!(target = %named(&key), "scalable target deregistered");
    Ok(json!({}))
}

/// A page of a sorted listing: items after the one `NextToken` names (an index), at most
/// `MaxResults`, and the next token when more remain.
fn page<T>(
    items: Vec<T>,
    token: Option<&str>,
    max: Option<usize>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let start = match token {
        None => 0,
        Some(t) => t
            .strip_prefix("plinth-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(invalid_next_token)?,
    };
    let max = max.unwrap_or(PAGE);
    let total = items.len();
    let items: Vec<T> = items.into_iter().skip(start).take(max).collect();
    let next = (start + items.len() < total).then(|| format!("plinth-{}", start + items.len()));
    Ok((items, next))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeTargetsInput {
    resource_ids: Option<Vec<String>>,
    scalable_dimension: Option<String>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

fn target_output(record: &TargetRecord) -> Result<Value, ApiError> {
    let t = &record.target;
    let mut out = serde_json::to_value(t).map_err(internal)?;
    out["CreationTime"] = json!(record.created);
    out["ScalableTargetARN"] = json!(scalable_target_arn(
        &t.resource_id.to_string(),
        t.scalable_dimension.as_str()
    ));
    Ok(out)
}

/// DescribeScalableTargets: the registered targets, by resource id and dimension.
fn describe_scalable_targets(state: &Fleet, input: Value) -> Result<Value, ApiError> {
    let input: DescribeTargetsInput = parse(input)?;
    let dimension = dimension_of(
        input.scalable_dimension.as_deref(),
        input.resource_ids.is_some(),
        "ResourceIds",
    )?;
    if input
        .resource_ids
        .as_ref()
        .is_some_and(|ids| ids.len() > PAGE)
    {
        return Err(validation(format!(
            "ResourceIds may name at most {PAGE} resources"
        )));
    }
    let scaling = state.stored.scaling();
    let targets: Vec<&TargetRecord> = scaling
        .targets
        .iter()
        .filter(|((r, d), _)| {
            dimension.is_none_or(|want| *d == want)
                && input
                    .resource_ids
                    .as_ref()
                    .is_none_or(|ids| ids.iter().any(|id| *id == r.to_string()))
        })
        .map(|(_, t)| t)
        .collect();
    let (targets, next) = page(targets, input.next_token.as_deref(), input.max_results)?;
    let targets = targets
        .into_iter()
        .map(target_output)
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = json!({ "ScalableTargets": targets });
    if let Some(next) = next {
        out["NextToken"] = json!(next);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutPolicyInput {
    policy_name: String,
    policy_type: Option<String>,
    target_tracking_scaling_policy_configuration: Option<TargetTrackingConfiguration>,
}

/// PutScalingPolicy: a target-tracking policy on a registered target, created or replaced.
fn put_scaling_policy(state: &Fleet, input: Value) -> Result<Value, ApiError> {
    let target: TargetInput = parse(input.clone())?;
    let policy: PutPolicyInput = parse(input)?;
    let key = target.key()?;
    if policy.policy_name.is_empty() || policy.policy_name.chars().count() > 256 {
        return Err(validation(
            "PolicyName must be 1 to 256 printable characters",
        ));
    }
    if policy.policy_type.as_deref() != Some("TargetTrackingScaling") {
        return Err(validation(
            "PolicyType must be TargetTrackingScaling: Plinth runs target-tracking policies \
             (StepScaling, the type when PolicyType is left out, is not supported)",
        ));
    }
    let Some(configuration) = policy.target_tracking_scaling_policy_configuration else {
        return Err(validation(
            "TargetTrackingScalingPolicyConfiguration is required for a TargetTrackingScaling \
             policy",
        ));
    };
    let policy = ScalingPolicy {
        policy_name: policy.policy_name,
        service_namespace: autoscaling::NAMESPACE.to_owned(),
        resource_id: key.0.clone(),
        scalable_dimension: key.1,
        policy_type: "TargetTrackingScaling".to_owned(),
        target_tracking_scaling_policy_configuration: configuration,
    };
    let compiled = policy.compile().map_err(|e| validation(e.0))?;
    let queued = queued(state, &key.0.endpoint);
    let mut scaling = state.stored.scaling();
    let Some(registered) = scaling.targets.get(&key) else {
        return Err(object_not_found(format!(
            "No scalable target registered for {}",
            named(&key)
        )));
    };
    autoscaling::check_metric(
        &compiled.metric,
        &key.0,
        registered.target.min_capacity,
        queued,
    )
    .map_err(|e| validation(e.0))?;
    let name = policy.policy_name.clone();
    scaling
        .put_policy(&state.stored.store, policy, compiled, now())
        .map_err(store_failed)?;
    tracing::info!(target = %named(&key), policy = %name, "scaling policy put");
    Ok(json!({
        "PolicyARN": scaling_policy_arn(&key.0.to_string(), key.1.as_str(), &name),
        "Alarms": [],
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribePoliciesInput {
    policy_names: Option<Vec<String>>,
    resource_id: Option<String>,
    scalable_dimension: Option<String>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

/// DescribeScalingPolicies: the policies, by name, resource id and dimension.
fn describe_scaling_policies(state: &Fleet, input: Value) -> Result<Value, ApiError> {
    let input: DescribePoliciesInput = parse(input)?;
    let dimension = dimension_of(
        input.scalable_dimension.as_deref(),
        input.resource_id.is_some(),
        "ResourceId",
    )?;
    if input.policy_names.as_ref().is_some_and(|n| n.len() > PAGE) {
        return Err(validation(format!(
            "PolicyNames may name at most {PAGE} policies"
        )));
    }
    let scaling = state.stored.scaling();
    let mut policies = Vec::new();
    for ((resource, d), target) in &scaling.targets {
        if dimension.is_some_and(|want| *d != want)
            || input
                .resource_id
                .as_ref()
                .is_some_and(|id| *id != resource.to_string())
        {
            continue;
        }
        for (name, record) in &target.policies {
            if input
                .policy_names
                .as_ref()
                .is_some_and(|names| !names.contains(name))
            {
                continue;
            }
            let mut out = serde_json::to_value(&record.policy).map_err(internal)?;
            out["PolicyARN"] = json!(scaling_policy_arn(&resource.to_string(), d.as_str(), name));
            out["Alarms"] = json!([]);
            out["CreationTime"] = json!(record.created);
            policies.push(out);
        }
    }
    let max = Some(input.max_results.unwrap_or(POLICIES_PAGE));
    let (policies, next) = page(policies, input.next_token.as_deref(), max)?;
    let mut out = json!({ "ScalingPolicies": policies });
    if let Some(next) = next {
        out["NextToken"] = json!(next);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeletePolicyInput {
    policy_name: String,
}

/// DeleteScalingPolicy.
fn delete_scaling_policy(state: &Fleet, input: Value) -> Result<Value, ApiError> {
    let target: TargetInput = parse(input.clone())?;
    let DeletePolicyInput { policy_name } = parse(input)?;
    let key = target.key()?;
    let deleted = state
        .stored
        .scaling()
        .delete_policy(&state.stored.store, &key, &policy_name)
        .map_err(store_failed)?;
    if !deleted {
        return Err(object_not_found(format!(
            "No scaling policy found for {}, policy name: {policy_name}",
            named(&key)
        )));
    }
    tracing::info!(target = %named(&key), policy = %policy_name, "scaling policy deleted");
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeActivitiesInput {
    resource_id: Option<String>,
    scalable_dimension: Option<String>,
    max_results: Option<usize>,
    next_token: Option<String>,
    include_not_scaled_activities: Option<bool>,
}

/// DescribeScalingActivities: newest first, paged by sequence number.
fn describe_scaling_activities(state: &Fleet, input: Value) -> Result<Value, ApiError> {
    let input: DescribeActivitiesInput = parse(input)?;
    dimension_of(
        input.scalable_dimension.as_deref(),
        input.resource_id.is_some(),
        "ResourceId",
    )?;
    let before = match &input.next_token {
        None => i64::MAX,
        Some(t) => t
            .strip_prefix("plinth-")
            .and_then(|n| n.parse::<i64>().ok())
            .ok_or_else(invalid_next_token)?,
    };
    let max = input.max_results.unwrap_or(PAGE);
    let mut rows = state
        .stored
        .store
        .activities(
            input.resource_id.as_deref(),
            input.scalable_dimension.as_deref(),
            input.include_not_scaled_activities.unwrap_or(false),
            before,
            max + 1,
        )
        .map_err(store_failed)?;
    let next = (rows.len() > max).then(|| format!("plinth-{}", rows[max - 1].0));
    rows.truncate(max);
    let mut out = json!({
        "ScalingActivities": rows.into_iter().map(|(_, a)| a).collect::<Vec<_>>()
    });
    if let Some(next) = next {
        out["NextToken"] = json!(next);
    }
    Ok(out)
}
