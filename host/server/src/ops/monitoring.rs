//! Model Monitor's model quality, as SageMaker's API has it: CreateModelQualityJobDefinition,
//! DescribeModelQualityJobDefinition, DeleteModelQualityJobDefinition,
//! ListModelQualityJobDefinitions; CreateMonitoringSchedule, DescribeMonitoringSchedule,
//! ListMonitoringSchedules, StopMonitoringSchedule, StartMonitoringSchedule,
//! DeleteMonitoringSchedule; ListMonitoringExecutions. Definitions and schedules are stored
//! as given (locations checked, paths made real); `fleet::monitoring` runs the executions.

use super::common::{check_name, in_use, internal, parse, validation};
use super::listing::{enum_error, list, ListInput, Listed};
use crate::error::ApiError;
use crate::fleet::monitoring::{quality_job, schedule_of, str_at};
use crate::state::store::{Definition, Kind, StoreError};
use crate::state::Stored;
use crate::state::{arn, now};
use axum::http::StatusCode;
use serde_json::{json, Value};

/// A schedule's statuses (SageMaker's `ScheduleStatus`).
const SCHEDULE_STATUSES: [&str; 4] = ["Pending", "Failed", "Scheduled", "Stopped"];
/// An execution's statuses (SageMaker's `ExecutionStatus`).
pub(crate) const EXECUTION_STATUSES: [&str; 7] = [
    "Pending",
    "Completed",
    "CompletedWithViolations",
    "InProgress",
    "Failed",
    "Stopping",
    "Stopped",
];

fn not_found(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "ResourceNotFound", message)
}

/// A required member, or SageMaker's error for a missing one.
fn required<'a>(input: &'a Value, path: &[&str]) -> Result<&'a Value, ApiError> {
    let found = path.iter().try_fold(input, |v, k| v.get(k));
    match found {
        Some(v) if !v.is_null() => Ok(v),
        _ => Err(validation(format!(
            "1 validation error detected: Value null at '{}' failed to satisfy constraint: \
             Member must not be null",
            path.join(".")
        ))),
    }
}

/// A location for monitoring data: `s3://`, or a directory under the artifact roots (its
/// real path); `directory`: it must exist as one (an output), else it may be a file.
fn location(
    stored: &Stored,
    member: &str,
    value: &str,
    directory: bool,
) -> Result<String, ApiError> {
    if value.starts_with("s3://") {
        let parsed = plinth_storage::Location::parse(value)
            .map_err(|e| validation(format!("{member} {value:?}: {e}")))?;
        return Ok(parsed.to_string());
    }
    let real = stored.roots.check(member, value).map_err(validation)?;
    if directory && !std::path::Path::new(&real).is_dir() {
        return Err(validation(format!("{member} {value:?} is not a directory")));
    }
    Ok(real)
}

/// CreateModelQualityJobDefinition: checked and stored. Plinth runs its own analysis, so
/// `ImageUri` must name SageMaker's Model Monitor analyzer (or `plinth:model-quality`);
/// `ProblemType` and `EndpointInput` are required.
pub(crate) fn create_definition(stored: &Stored, mut input: Value) -> Result<Value, ApiError> {
    let name = required(&input, &["JobDefinitionName"])?
        .as_str()
        .ok_or_else(|| validation("JobDefinitionName must be a string"))?
        .to_owned();
    check_name("jobDefinitionName", &name)?;
    for path in [
        &["ModelQualityAppSpecification", "ImageUri"][..],
        &["ModelQualityJobInput", "GroundTruthS3Input", "S3Uri"],
        &["ModelQualityJobOutputConfig", "MonitoringOutputs"],
        &["JobResources", "ClusterConfig", "InstanceCount"],
        &["JobResources", "ClusterConfig", "InstanceType"],
        &["JobResources", "ClusterConfig", "VolumeSizeInGB"],
        &["RoleArn"],
    ] {
        required(&input, path)?;
    }
    let image = str_at(&input, &["ModelQualityAppSpecification", "ImageUri"]).unwrap_or("");
    if !(image.contains("sagemaker-model-monitor-analyzer") || image == "plinth:model-quality") {
        return Err(validation(format!(
            "ModelQualityAppSpecification.ImageUri {image:?}: Plinth runs its own model quality \
             analysis; give SageMaker's Model Monitor analyzer image \
             (<account>.dkr.ecr.<region>.amazonaws.com/sagemaker-model-monitor-analyzer) or \
             plinth:model-quality; a custom container is not supported"
        )));
    }
    if str_at(&input, &["ModelQualityAppSpecification", "ProblemType"]).is_none() {
        return Err(validation(
            "ModelQualityAppSpecification.ProblemType is required: BinaryClassification, \
             MulticlassClassification or Regression",
        ));
    }
    let endpoint = required(
        &input,
        &["ModelQualityJobInput", "EndpointInput", "EndpointName"],
    )?
    .as_str()
    .ok_or_else(|| validation("ModelQualityJobInput.EndpointInput.EndpointName must be a string"))?
    .to_owned();
    check_name("endpointName", &endpoint)?;
    required(
        &input,
        &["ModelQualityJobInput", "EndpointInput", "LocalPath"],
    )?;
    let outputs = input["ModelQualityJobOutputConfig"]["MonitoringOutputs"]
        .as_array()
        .map_or(0, Vec::len);
    if outputs != 1 {
        return Err(validation(format!(
            "ModelQualityJobOutputConfig.MonitoringOutputs must hold exactly 1 output; it \
             holds {outputs}"
        )));
    }
    // Locations: real paths under the roots, or s3://.
    let truth = str_at(
        &input,
        &["ModelQualityJobInput", "GroundTruthS3Input", "S3Uri"],
    )
    .unwrap_or("")
    .to_owned();
    input["ModelQualityJobInput"]["GroundTruthS3Input"]["S3Uri"] = json!(location(
        stored,
        "ModelQualityJobInput.GroundTruthS3Input.S3Uri",
        &truth,
        true
    )?);
    let output = &mut input["ModelQualityJobOutputConfig"]["MonitoringOutputs"][0]["S3Output"];
    let uri = required(output, &["S3Uri"])?
        .as_str()
        .unwrap_or("")
        .to_owned();
    required(output, &["LocalPath"])?;
    output["S3Uri"] = json!(location(
        stored,
        "ModelQualityJobOutputConfig.MonitoringOutputs[0].S3Output.S3Uri",
        &uri,
        true
    )?);
    if let Some(c) = str_at(
        &input,
        &["ModelQualityBaselineConfig", "ConstraintsResource", "S3Uri"],
    )
    .map(str::to_owned)
    {
        input["ModelQualityBaselineConfig"]["ConstraintsResource"]["S3Uri"] = json!(location(
            stored,
            "ModelQualityBaselineConfig.ConstraintsResource.S3Uri",
            &c,
            false
        )?);
    }
    quality_job(&input).map_err(validation)?;
    let created = now();
    if let Some(o) = input.as_object_mut() {
        o.remove("JobDefinitionName");
    }
    insert_new(
        stored,
        Kind::ModelQualityJobDefinition,
        ("Job definition", "model-quality-job-definition"),
        Definition {
            name: name.clone(),
            created,
            definition: input,
        },
    )?;
    tracing::info!(job_definition = %name, %endpoint, "model quality job definition created");
    Ok(json!({ "JobDefinitionArn": arn("model-quality-job-definition", &name) }))
}

/// Store a new definition; `ResourceInUse` naming it (`what`: its name in messages and its
/// ARN's kind) if one of its name exists.
fn insert_new(
    stored: &Stored,
    kind: Kind,
    what: (&str, &str),
    definition: Definition,
) -> Result<(), ApiError> {
    stored.store.insert(kind, &definition).map_err(|e| match e {
        StoreError::Exists(_) => in_use(format!(
            "{} {} already exists",
            what.0,
            arn(what.1, &definition.name)
        )),
        e => internal(e),
    })
}

fn definition_named(stored: &Stored, input: Value) -> Result<Definition, ApiError> {
    let name = required(&input, &["JobDefinitionName"])?
        .as_str()
        .unwrap_or("")
        .to_owned();
    stored
        .store
        .definition(Kind::ModelQualityJobDefinition, &name)
        .map_err(internal)?
        .ok_or_else(|| {
            not_found(format!(
                "Could not find job definition {}",
                arn("model-quality-job-definition", &name)
            ))
        })
}

/// DescribeModelQualityJobDefinition: as given, without `Tags` (as SageMaker answers).
pub(crate) fn describe_definition(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    let d = definition_named(stored, input)?;
    let mut output = d.definition;
    if let Some(o) = output.as_object_mut() {
        o.remove("Tags");
    }
    output["JobDefinitionName"] = json!(d.name);
    output["JobDefinitionArn"] = json!(arn("model-quality-job-definition", &d.name));
    output["CreationTime"] = json!(d.created);
    Ok(output)
}

/// DeleteModelQualityJobDefinition: refused while a schedule uses it.
pub(crate) fn delete_definition(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    let d = definition_named(stored, input)?;
    let schedules = stored
        .store
        .definitions(Kind::MonitoringSchedule)
        .map_err(internal)?;
    if let Some(s) = schedules.iter().find(|s| {
        str_at(
            &s.definition,
            &["MonitoringScheduleConfig", "MonitoringJobDefinitionName"],
        )
        .is_some_and(|n| n.eq_ignore_ascii_case(&d.name))
    }) {
        return Err(in_use(format!(
            "Job definition {} is used by monitoring schedule {}; delete the schedule first",
            d.name, s.name
        )));
    }
    stored
        .store
        .delete(Kind::ModelQualityJobDefinition, &d.name)
        .map_err(internal)?;
    Ok(json!({}))
}

/// ListModelQualityJobDefinitions: `EndpointName`, `NameContains`, creation times, sorted by
/// `Name` or `CreationTime`, paged.
pub(crate) fn list_definitions(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    let endpoint = input["EndpointName"].as_str().map(str::to_owned);
    let listing: ListInput = parse(input)?;
    let items = stored
        .store
        .definitions(Kind::ModelQualityJobDefinition)
        .map_err(internal)?
        .into_iter()
        .filter_map(|d| {
            let e = str_at(
                &d.definition,
                &["ModelQualityJobInput", "EndpointInput", "EndpointName"],
            )
            .unwrap_or("")
            .to_owned();
            if endpoint
                .as_deref()
                .is_some_and(|want| !want.eq_ignore_ascii_case(&e))
            {
                return None;
            }
            Some(Listed {
                summary: json!({
                    "MonitoringJobDefinitionName": d.name,
                    "MonitoringJobDefinitionArn": arn("model-quality-job-definition", &d.name),
                    "CreationTime": d.created,
                    "EndpointName": e,
                }),
                name: d.name,
                created: d.created,
                modified: d.created,
                status: "",
            })
        })
        .collect();
    list(
        items,
        listing,
        &["Name", "CreationTime"],
        "JobDefinitionSummaries",
    )
}

/// CreateMonitoringSchedule: a `ModelQuality` schedule over an existing job definition,
/// `Scheduled` at once.
pub(crate) fn create_schedule(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    let name = required(&input, &["MonitoringScheduleName"])?
        .as_str()
        .ok_or_else(|| validation("MonitoringScheduleName must be a string"))?
        .to_owned();
    check_name("monitoringScheduleName", &name)?;
    let config = required(&input, &["MonitoringScheduleConfig"])?.clone();
    let definition_name = str_at(&config, &["MonitoringJobDefinitionName"]).ok_or_else(|| {
        validation(
            "MonitoringScheduleConfig.MonitoringJobDefinitionName is required (Plinth runs model \
             quality job definitions; an inline MonitoringJobDefinition is not supported)",
        )
    })?;
    match str_at(&config, &["MonitoringType"]) {
        Some("ModelQuality") => {}
        _ => {
            return Err(validation(
                "MonitoringScheduleConfig.MonitoringType must be ModelQuality (Plinth monitors \
                 model quality)",
            ))
        }
    }
    let definition = stored
        .store
        .definition(Kind::ModelQualityJobDefinition, definition_name)
        .map_err(internal)?
        .ok_or_else(|| {
            validation(format!(
                "Could not find job definition {} (MonitoringScheduleConfig.\
                 MonitoringJobDefinitionName)",
                arn("model-quality-job-definition", definition_name)
            ))
        })?;
    schedule_of(&config).map_err(validation)?;
    let endpoint = str_at(
        &definition.definition,
        &["ModelQualityJobInput", "EndpointInput", "EndpointName"],
    )
    .unwrap_or("")
    .to_owned();
    let t = now();
    let mut config = config;
    config["MonitoringJobDefinitionName"] = json!(definition.name);
    let record = json!({
        "MonitoringScheduleConfig": config,
        "MonitoringScheduleStatus": "Scheduled",
        "LastModifiedTime": t,
        "EndpointName": endpoint,
        "MonitoringType": "ModelQuality",
        "Tags": input.get("Tags").cloned().unwrap_or(json!([])),
    });
    insert_new(
        stored,
        Kind::MonitoringSchedule,
        ("Monitoring schedule", "monitoring-schedule"),
        Definition {
            name: name.clone(),
            created: t,
            definition: record,
        },
    )?;
    tracing::info!(monitoring_schedule = %name, %endpoint, "monitoring schedule created");
    Ok(json!({ "MonitoringScheduleArn": arn("monitoring-schedule", &name) }))
}

fn schedule_named(stored: &Stored, input: &Value) -> Result<Definition, ApiError> {
    let name = required(input, &["MonitoringScheduleName"])?
        .as_str()
        .unwrap_or("")
        .to_owned();
    stored
        .store
        .definition(Kind::MonitoringSchedule, &name)
        .map_err(internal)?
        .ok_or_else(|| {
            not_found(format!(
                "Could not find monitoring schedule {}",
                arn("monitoring-schedule", &name)
            ))
        })
}

/// An execution's summary as SageMaker lists it (Plinth's `PlinthVariants` and
/// `PlinthOutputLocation` kept: clients that do not know them ignore them).
fn execution_summary(e: &Value) -> Value {
    let mut summary = e.clone();
    if let Some(o) = summary.as_object_mut() {
        o.retain(|k, v| !v.is_null() && k != "PlinthStatistics");
    }
    summary
}

/// DescribeMonitoringSchedule, with its last execution.
pub(crate) fn describe_schedule(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    let s = schedule_named(stored, &input)?;
    let mut output = s.definition.clone();
    if let Some(o) = output.as_object_mut() {
        o.remove("Tags");
    }
    output["MonitoringScheduleName"] = json!(s.name);
    output["MonitoringScheduleArn"] = json!(arn("monitoring-schedule", &s.name));
    output["CreationTime"] = json!(s.created);
    if let Some(last) = stored
        .store
        .last_execution(&s.name, s.created)
        .map_err(internal)?
    {
        output["LastMonitoringExecutionSummary"] = execution_summary(&last);
    }
    Ok(output)
}

fn set_status(stored: &Stored, input: Value, status: &str) -> Result<Value, ApiError> {
    let mut s = schedule_named(stored, &input)?;
    s.definition["MonitoringScheduleStatus"] = json!(status);
    s.definition["LastModifiedTime"] = json!(now());
    stored
        .store
        .replace(Kind::MonitoringSchedule, &s)
        .map_err(internal)?;
    tracing::info!(monitoring_schedule = %s.name, status, "monitoring schedule changed");
    Ok(json!({}))
}

/// StopMonitoringSchedule: no execution starts until it is started again.
pub(crate) fn stop_schedule(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    set_status(stored, input, "Stopped")
}

/// StartMonitoringSchedule.
pub(crate) fn start_schedule(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    set_status(stored, input, "Scheduled")
}

/// DeleteMonitoringSchedule: its executions stay listed, as SageMaker keeps them.
pub(crate) fn delete_schedule(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    let s = schedule_named(stored, &input)?;
    stored
        .store
        .delete(Kind::MonitoringSchedule, &s.name)
        .map_err(internal)?;
    tracing::info!(monitoring_schedule = %s.name, "monitoring schedule deleted");
    Ok(json!({}))
}

fn status_of(text: &str, allowed: &'static [&'static str]) -> &'static str {
    allowed.iter().find(|s| **s == text).copied().unwrap_or("")
}

/// ListMonitoringSchedules: SageMaker's filters, sorted by `Name`, `CreationTime` or
/// `Status`, paged.
pub(crate) fn list_schedules(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    let filter = |key: &str| input[key].as_str().map(str::to_owned);
    let (endpoint, definition, kind) = (
        filter("EndpointName"),
        filter("MonitoringJobDefinitionName"),
        filter("MonitoringTypeEquals"),
    );
    if let Some(s) = input["StatusEquals"].as_str() {
        if !SCHEDULE_STATUSES.contains(&s) {
            return Err(enum_error("statusEquals", s, &SCHEDULE_STATUSES));
        }
    }
    let listing: ListInput = parse(input)?;
    let same = |want: &Option<String>, have: &str| {
        want.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(have))
    };
    let items = stored
        .store
        .definitions(Kind::MonitoringSchedule)
        .map_err(internal)?
        .into_iter()
        .filter_map(|s| {
            let d = &s.definition;
            let e = d["EndpointName"].as_str().unwrap_or("").to_owned();
            let job = str_at(
                d,
                &["MonitoringScheduleConfig", "MonitoringJobDefinitionName"],
            )
            .unwrap_or("")
            .to_owned();
            if !(same(&endpoint, &e) && same(&definition, &job) && same(&kind, "ModelQuality")) {
                return None;
            }
            let status = status_of(
                d["MonitoringScheduleStatus"].as_str().unwrap_or(""),
                &SCHEDULE_STATUSES,
            );
            let modified = d["LastModifiedTime"].as_f64().unwrap_or(s.created);
            Some(Listed {
                summary: json!({
                    "MonitoringScheduleName": s.name,
                    "MonitoringScheduleArn": arn("monitoring-schedule", &s.name),
                    "CreationTime": s.created,
                    "LastModifiedTime": modified,
                    "MonitoringScheduleStatus": status,
                    "EndpointName": e,
                    "MonitoringJobDefinitionName": job,
                    "MonitoringType": "ModelQuality",
                }),
                name: s.name,
                created: s.created,
                modified,
                status,
            })
        })
        .collect();
    list(
        items,
        listing,
        &["Name", "CreationTime", "Status"],
        "MonitoringScheduleSummaries",
    )
}

/// ListMonitoringExecutions: SageMaker's filters, sorted by `CreationTime`, `ScheduledTime`
/// or `Status`, paged.
pub(crate) fn list_executions(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    let filter = |key: &str| input[key].as_str().map(str::to_owned);
    let (schedule_name, endpoint, definition, kind) = (
        filter("MonitoringScheduleName"),
        filter("EndpointName"),
        filter("MonitoringJobDefinitionName"),
        filter("MonitoringTypeEquals"),
    );
    if let Some(s) = input["StatusEquals"].as_str() {
        if !EXECUTION_STATUSES.contains(&s) {
            return Err(enum_error("statusEquals", s, &EXECUTION_STATUSES));
        }
    }
    let scheduled = (
        input["ScheduledTimeBefore"].as_f64(),
        input["ScheduledTimeAfter"].as_f64(),
    );
    let by_scheduled = input["SortBy"] == "ScheduledTime";
    let listing: ListInput = parse(input)?;
    let same = |want: &Option<String>, have: &str| {
        want.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(have))
    };
    let items = stored
        .store
        .executions(None)
        .map_err(internal)?
        .into_iter()
        .filter_map(|x| {
            let e = &x.execution;
            let text = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            let at = e["ScheduledTime"].as_f64().unwrap_or(0.0);
            if !(same(&schedule_name, &text("MonitoringScheduleName"))
                && same(&endpoint, &text("EndpointName"))
                && same(&definition, &text("MonitoringJobDefinitionName"))
                && same(&kind, "ModelQuality")
                && scheduled.0.is_none_or(|t| at < t)
                && scheduled.1.is_none_or(|t| at > t))
            {
                return None;
            }
            Some(Listed {
                name: format!("{:020}", x.seq),
                // The listing sorts by `created` unless by name or status.
                created: if by_scheduled {
                    at
                } else {
                    e["CreationTime"].as_f64().unwrap_or(at)
                },
                modified: e["LastModifiedTime"].as_f64().unwrap_or(at),
                status: status_of(
                    e["MonitoringExecutionStatus"].as_str().unwrap_or(""),
                    &EXECUTION_STATUSES,
                ),
                summary: execution_summary(e),
            })
        })
        .collect();
    list(
        items,
        listing,
        &["CreationTime", "ScheduledTime", "Status"],
        "MonitoringExecutionSummaries",
    )
}

/// Outcomes recorded with RecordInferenceOutcomes, written as ground truth for the model
/// quality job definitions of `endpoint` whose labels are numbers (`BinaryClassification`,
/// `Regression`): one file of SageMaker's records under each of their
/// `GroundTruthS3Input.S3Uri` prefixes, in the current hour's folder. How many prefixes got
/// them.
pub(crate) async fn outcomes_as_ground_truth(
    stored: &Stored,
    endpoint: &str,
    outcomes: &[(String, f64)],
) -> Result<usize, ApiError> {
    if outcomes.is_empty() {
        return Ok(0);
    }
    let definitions = stored
        .store
        .definitions(Kind::ModelQualityJobDefinition)
        .map_err(internal)?;
    // Numbers are labels of binary and regression problems only (a multiclass problem's
    // labels are names).
    let mut prefixes: Vec<String> = definitions
        .iter()
        .filter(|d| {
            let numeric = matches!(
                str_at(
                    &d.definition,
                    &["ModelQualityAppSpecification", "ProblemType"]
                ),
                Some("BinaryClassification" | "Regression")
            );
            numeric
                && str_at(
                    &d.definition,
                    &["ModelQualityJobInput", "EndpointInput", "EndpointName"],
                )
                .is_some_and(|e| e.eq_ignore_ascii_case(endpoint))
        })
        .filter_map(|d| {
            str_at(
                &d.definition,
                &["ModelQualityJobInput", "GroundTruthS3Input", "S3Uri"],
            )
            .map(str::to_owned)
        })
        .collect();
    prefixes.sort();
    prefixes.dedup();
    if prefixes.is_empty() {
        return Ok(0);
    }
    let mut lines = String::new();
    for (id, value) in outcomes {
        lines.push_str(&plinth_policy::model_quality::ground_truth_record(
            id,
            &plinth_policy::model_quality::label_of_number(*value),
        ));
        lines.push('\n');
    }
    let t = plinth_policy::data_capture::utc((now() * 1000.0) as i64);
    let name = format!(
        "{:04}/{:02}/{:02}/{:02}/outcomes-{}.jsonl",
        t.year,
        t.month,
        t.day,
        t.hour,
        uuid::Uuid::new_v4()
    );
    let data = bytes::Bytes::from(lines);
    for prefix in &prefixes {
        let at = format!("{}/{name}", prefix.trim_end_matches('/'));
        let location = plinth_storage::Location::parse(&at).map_err(internal)?;
        stored
            .remote
            .storage()
            .put(data.clone(), &location)
            .await
            .map_err(|e| internal(format!("writing the outcomes as ground truth: {e}")))?;
    }
    Ok(prefixes.len())
}
