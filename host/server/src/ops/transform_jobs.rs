//! CreateTransformJob, DescribeTransformJob, ListTransformJobs, StopTransformJob: batch
//! transform jobs, stored in the state database and run by `fleet::transform_jobs`.
//! `DescribeTransformJob` adds `PlinthProgress` (inputs, records and bytes completed).

use super::common::{check_name, in_use, internal, model_not_found, parse, validation};
use super::listing::{enum_error, list, ListInput, Listed};
use crate::error::ApiError;
use crate::fleet::transform_jobs::{self, location, settings_of};
use crate::fleet::Fleet;
use crate::state::store::{StoreError, TransformJobRow};
use crate::state::{arn, now};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The most models a job compares with its own.
const MAX_COMPARED: usize = 4;

/// A transform job's statuses.
const STATUSES: [&str; 5] = ["InProgress", "Completed", "Failed", "Stopping", "Stopped"];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NameInput {
    transform_job_name: String,
}

/// What SageMaker answers for a job that does not exist.
fn not_found(name: &str) -> ApiError {
    validation(format!("Could not find requested job with name {name}"))
}

/// A member the job must have, or its error.
fn required<'a>(input: &'a Value, path: &[&str]) -> Result<&'a Value, ApiError> {
    let mut at = input;
    for key in path {
        at = &at[key];
    }
    if at.is_null() {
        return Err(validation(format!(
            "1 validation error detected: Value null at '{}' failed to satisfy constraint: \
             Member must not be null",
            path.join(".")
        )));
    }
    Ok(at)
}

/// CreateTransformJob: checked, stored `InProgress`, and started.
pub(crate) fn create_transform_job(state: &Arc<Fleet>, input: Value) -> Result<Value, ApiError> {
    let name = required(&input, &["TransformJobName"])?
        .as_str()
        .ok_or_else(|| validation("TransformJobName must be a string"))?
        .to_owned();
    check_name("transformJobName", &name)?;
    let model = required(&input, &["ModelName"])?
        .as_str()
        .ok_or_else(|| validation("ModelName must be a string"))?
        .to_owned();
    let uri = required(
        &input,
        &["TransformInput", "DataSource", "S3DataSource", "S3Uri"],
    )?;
    required(
        &input,
        &["TransformInput", "DataSource", "S3DataSource", "S3DataType"],
    )?;
    let output = required(&input, &["TransformOutput", "S3OutputPath"])?;
    required(&input, &["TransformResources", "InstanceType"])?;
    required(&input, &["TransformResources", "InstanceCount"])?;
    let (uri, output) = match (uri.as_str(), output.as_str()) {
        (Some(uri), Some(output)) => (uri, output),
        _ => return Err(validation("S3Uri and S3OutputPath must be strings")),
    };
    let settings = settings_of(&input).map_err(validation)?;
    transform_jobs::processing_of(&input).map_err(validation)?;
    location(state, "TransformInput.DataSource.S3DataSource.S3Uri", uri).map_err(validation)?;
    location(state, "TransformOutput.S3OutputPath", output).map_err(validation)?;
    // The models compared with it (Plinth's extension): each runs every request too.
    let compared: Vec<String> = match &input["PlinthCompareModels"] {
        Value::Null => Vec::new(),
        Value::Array(names) if (1..=MAX_COMPARED).contains(&names.len()) => names
            .iter()
            .map(|n| {
                n.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| validation("PlinthCompareModels must be a list of model names"))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(validation(format!(
                "PlinthCompareModels must be a list of 1 to {MAX_COMPARED} model names"
            )))
        }
    };
    let named = |model: &str| -> Result<String, ApiError> {
        let catalog = state.catalog();
        let record = catalog
            .model_named(model)
            .ok_or_else(|| model_not_found(model))?;
        if record.definition.is_multi_model() {
            return Err(validation(format!(
                "Model {} is a multi-model model (Mode MultiModel): a transform job runs \
                 single models",
                record.name
            )));
        }
        if let Ok(Some((plinth_policy::pipeline::Mode::Direct, _))) = record.definition.pipeline() {
            return Err(validation(format!(
                "Model {} is a multi-container model with direct invocation \
                 (InferenceExecutionConfig.Mode Direct): its requests name a container, which \
                 a transform job cannot; give a Serial pipeline or a single model",
                record.name
            )));
        }
        Ok(record.name.clone())
    };
    let model = named(&model)?;
    let compared = compared
        .iter()
        .map(|m| named(m))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::BTreeSet::from([model.to_lowercase()]);
    if let Some(twice) = compared.iter().find(|m| !seen.insert(m.to_lowercase())) {
        return Err(validation(format!(
            "PlinthCompareModels names model {twice} twice (or the job's ModelName)"
        )));
    }
    // Each model gets InstanceCount instances, held from now on (the dispatcher holds
    // `state.changes`: no endpoint takes them meanwhile).
    // An inference pipeline holds that many of each of its containers.
    let containers: usize = std::iter::once(&model)
        .chain(&compared)
        .map(|m| {
            state
                .catalog()
                .models
                .get(m)
                .map_or(1, |r| r.definition.all_containers().len())
        })
        .sum();
    let instances = settings.instances * containers;
    let held = crate::fleet::assemble::instances_held(state, None);
    if held + instances > state.max_instances {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ResourceLimitExceeded",
            format!(
                "TransformResources.InstanceCount {} (for each of the job's {} models, and each \
                 container of a pipeline) would bring the server's instances to {}, above its \
                 limit of {}",
                settings.instances,
                1 + compared.len(),
                held + instances,
                state.max_instances
            ),
        ));
    }
    let mut definition = input;
    definition["ModelName"] = json!(model);
    if !compared.is_empty() {
        definition["PlinthCompareModels"] = json!(compared);
    }
    match state
        .stored
        .store
        .insert_transform_job(&name, now(), &definition)
    {
        Ok(()) => {}
        Err(StoreError::Exists(_)) => {
            return Err(in_use(format!(
                "Job name must be unique within an AWS account and region, and a job with \
                 this name already exists ({})",
                arn("transform-job", &name)
            )))
        }
        Err(e) => return Err(internal(e)),
    }
    tracing::info!(transform_job = %name, model = %model, "transform job created");
    transform_jobs::start(state, &name, instances);
    Ok(json!({ "TransformJobArn": arn("transform-job", &name) }))
}

fn job_named(state: &Fleet, name: &str) -> Result<TransformJobRow, ApiError> {
    state
        .stored
        .store
        .transform_jobs(Some(name))
        .map_err(internal)?
        .pop()
        .ok_or_else(|| not_found(name))
}

/// DescribeTransformJob: the job as created, SageMaker's defaults filled in, its status,
/// times and `PlinthProgress`.
pub(crate) fn describe_transform_job(state: &Fleet, input: Value) -> Result<Value, ApiError> {
    let input: NameInput = parse(input)?;
    let job = job_named(state, &input.transform_job_name)?;
    let mut output = job.definition.clone();
    if let Some(o) = output.as_object_mut() {
        o.remove("Tags");
    }
    if let Ok(s) = settings_of(&job.definition) {
        output["MaxConcurrentTransforms"] = json!(s.max_concurrent_transforms);
        output["MaxPayloadInMB"] = json!(s.max_payload_bytes >> 20);
        output["BatchStrategy"] = json!(match s.strategy {
            plinth_policy::batch_transform::Strategy::MultiRecord => "MultiRecord",
            plinth_policy::batch_transform::Strategy::SingleRecord => "SingleRecord",
        });
        output["ModelClientConfig"] = json!({
            "InvocationsTimeoutInSeconds": s.timeout_seconds,
            "InvocationsMaxRetries": s.max_retries,
        });
    }
    output["TransformJobName"] = json!(job.name);
    output["TransformJobArn"] = json!(arn("transform-job", &job.name));
    output["TransformJobStatus"] = json!(job.status);
    output["CreationTime"] = json!(job.created);
    output["TransformStartTime"] = json!(job.created);
    if let Some(ended) = job.ended {
        output["TransformEndTime"] = json!(ended);
    }
    if let Some(reason) = &job.failure_reason {
        output["FailureReason"] = json!(reason);
    }
    output["PlinthProgress"] = match state.transform_jobs.get(&job.name) {
        Some(running) => running.progress.to_json(),
        None => job.progress.clone(),
    };
    Ok(output)
}

/// ListTransformJobs: SageMaker's filters, sort keys and pagination.
pub(crate) fn list_transform_jobs(state: &Fleet, input: Value) -> Result<Value, ApiError> {
    let input: ListInput = parse(input)?;
    if let Some(status) = &input.status_equals {
        if !STATUSES.contains(&status.as_str()) {
            return Err(enum_error("statusEquals", status, &STATUSES));
        }
    }
    let jobs = state.stored.store.transform_jobs(None).map_err(internal)?;
    let items = jobs
        .into_iter()
        .map(|job| {
            let status = STATUSES
                .iter()
                .find(|s| **s == job.status)
                .copied()
                .unwrap_or("Failed");
            let mut summary = json!({
                "TransformJobName": job.name,
                "TransformJobArn": arn("transform-job", &job.name),
                "CreationTime": job.created,
                "LastModifiedTime": job.modified,
                "TransformJobStatus": status,
            });
            if let Some(ended) = job.ended {
                summary["TransformEndTime"] = json!(ended);
            }
            if let Some(reason) = &job.failure_reason {
                summary["FailureReason"] = json!(reason);
            }
            Listed {
                name: job.name,
                created: job.created,
                modified: job.modified,
                status,
                summary,
            }
        })
        .collect();
    list(
        items,
        input,
        &["Name", "CreationTime", "Status"],
        "TransformJobSummaries",
    )
}

/// StopTransformJob: an `InProgress` job becomes `Stopping`, and `Stopped` once its
/// requests in flight are answered; its completed outputs stay.
pub(crate) fn stop_transform_job(state: &Fleet, input: Value) -> Result<Value, ApiError> {
    let input: NameInput = parse(input)?;
    let job = job_named(state, &input.transform_job_name)?;
    let stopping = state
        .stored
        .store
        .set_transform_status(&job.name, &["InProgress"], "Stopping", None, None)
        .map_err(internal)?;
    if stopping {
        tracing::info!(transform_job = %job.name, "transform job stopping");
        state.transform_jobs.stop(&job.name);
        return Ok(json!({}));
    }
    let now = job_named(state, &job.name)?;
    if now.status == "Stopping" {
        return Ok(json!({}));
    }
    Err(validation(format!(
        "Transform job {} has already ended ({}): only an InProgress job can be stopped",
        job.name, now.status
    )))
}
