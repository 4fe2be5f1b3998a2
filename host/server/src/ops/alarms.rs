//! CreateAlarm, DescribeAlarm, ListAlarms, DeleteAlarm (Plinth's, with CloudWatch's keys):
//! named conditions over an endpoint's recent request metrics, kept with the models and
//! endpoint configs; the same alarms CloudWatch's PutMetricAlarm puts (`metric_alarms`). Evaluation is `fleet::alarm_watch`; the condition logic is
//! [`plinth_policy::metric_alarm`].

use super::common::{described, in_use, parse, store_error, validation};
use super::listing::{list, ListInput, Listed};
use crate::error::ApiError;
use crate::fleet::alarm_watch::{evaluate, AlarmStates};
use crate::fleet::table::EndpointTable;
use crate::state::catalog::Record;
use crate::state::store::Kind;
use crate::state::Stored;
use crate::state::{arn, now};
use plinth_policy::metric_alarm::AlarmDefinition;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AlarmNameInput {
    alarm_name: String,
}

/// CreateAlarm: `AlarmName` and an [`AlarmDefinition`]. Alarms are immutable, like models.
pub(crate) fn create(stored: &Stored, mut input: Value) -> Result<Value, ApiError> {
    let name = match input.as_object_mut().and_then(|o| o.remove("AlarmName")) {
        Some(Value::String(name)) => name,
        _ => return Err(validation("AlarmName is required (a string)")),
    };
    crate::ops::common::check_name("alarmName", &name)?;
    let definition: AlarmDefinition = parse(input)?;
    definition.compile().map_err(validation)?;
    check_stored(stored, &definition).map_err(validation)?;
    let mut catalog = stored.catalog();
    if catalog.alarms.keys().any(|n| n.eq_ignore_ascii_case(&name)) {
        return Err(store_error(
            crate::state::store::StoreError::Exists(name.clone()),
            "alarm",
            &name,
        ));
    }
    let record = Record {
        name: name.clone(),
        created: now(),
        definition,
    };
    stored
        .store
        .insert(Kind::Alarm, &record.stored())
        .map_err(|e| store_error(e, "alarm", &name))?;
    catalog.alarms.insert(name.clone(), record);
    tracing::info!(alarm = %name, "alarm created");
    Ok(json!({ "AlarmArn": arn("alarm", &name) }))
}

/// An alarm over more than the windows' 600 s needs the metric store.
pub(crate) fn check_stored(stored: &Stored, definition: &AlarmDefinition) -> Result<(), String> {
    let from_store = definition.compile().is_ok_and(|a| a.from_store());
    if from_store && stored.metrics.is_none() {
        return Err(format!(
            "Period × EvaluationPeriods ({} × {}) is more than the {} s of live request \
             metrics, and this server stores none (--metric-retention off)",
            definition.period,
            definition.evaluation_periods,
            plinth_policy::metric_alarm::RETAINED_SECONDS
        ));
    }
    Ok(())
}

fn not_found(name: &str) -> ApiError {
    validation(format!("Could not find alarm \"{}\".", arn("alarm", name)))
}

/// DescribeAlarm: the definition, and its state evaluated now.
pub(crate) fn describe(
    stored: &Stored,
    endpoints: &EndpointTable,
    quality: &crate::fleet::monitoring::Running,
    input: Value,
) -> Result<Value, ApiError> {
    let input: AlarmNameInput = parse(input)?;
    let record = stored
        .catalog()
        .alarms
        .get(&input.alarm_name)
        .cloned()
        .ok_or_else(|| not_found(&input.alarm_name))?;
    let mut output = described(&record, "Alarm", "alarm")?;
    let evaluation = evaluate(
        endpoints,
        quality,
        stored.metrics.as_deref(),
        &record.definition,
    );
    output["StateValue"] = json!(evaluation.state.as_str());
    output["StateReason"] = json!(evaluation.reason);
    output["Datapoints"] = json!(evaluation.datapoints);
    Ok(output)
}

/// The endpoint whose deployment in progress rolls back on alarm `name`, if one does.
pub(crate) fn watched_by(endpoints: &EndpointTable, name: &str) -> Option<String> {
    endpoints.all().values().find_map(|endpoint| {
        let watched = endpoint.new_fleet.is_some()
            && endpoint.deployment_config.as_ref().is_some_and(|d| {
                d.auto_rollback_configuration
                    .as_ref()
                    .is_some_and(|r| r.alarms.iter().flatten().any(|a| a.alarm_name == name))
            });
        watched.then(|| endpoint.name.clone())
    })
}

/// Delete alarm `name` (it exists): its definition, then its state (its history stays).
pub(crate) fn remove(stored: &Stored, states: &AlarmStates, name: &str) -> Result<(), ApiError> {
    let mut catalog = stored.catalog();
    stored
        .store
        .delete(Kind::Alarm, name)
        .map_err(crate::ops::common::internal)?;
    catalog.alarms.remove(name);
    drop(catalog);
    if let Err(e) = states.forget(&stored.store, name, now()) {
        tracing::warn!(alarm = %name, error = %e, "a deleted alarm's state could not be dropped");
    }
    tracing::info!(alarm = %name, "alarm deleted");
    Ok(())
}

/// DeleteAlarm: refused while a deployment in progress watches it.
pub(crate) fn delete(
    stored: &Stored,
    endpoints: &EndpointTable,
    states: &AlarmStates,
    input: Value,
) -> Result<Value, ApiError> {
    let input: AlarmNameInput = parse(input)?;
    let name = input.alarm_name;
    if !stored.catalog().alarms.contains_key(&name) {
        return Err(not_found(&name));
    }
    if let Some(endpoint) = watched_by(endpoints, &name) {
        return Err(in_use(format!(
            "Cannot delete alarm \"{}\": the deployment in progress on endpoint {endpoint} \
             rolls back on it.",
            arn("alarm", &name),
        )));
    }
    remove(stored, states, &name)?;
    Ok(json!({}))
}

/// ListAlarms: SageMaker's list conventions (sort, filters, pages).
pub(crate) fn list_alarms(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    let input: ListInput = parse(input)?;
    let items = stored
        .catalog()
        .alarms
        .values()
        .map(|a| Listed {
            name: a.name.clone(),
            created: a.created,
            modified: a.created,
            status: "",
            summary: json!({
                "AlarmName": a.name,
                "AlarmArn": arn("alarm", &a.name),
                "EndpointName": a.definition.endpoint_name,
                "MetricName": a.definition.metric_name,
                "CreationTime": a.created,
            }),
        })
        .collect();
    list(items, input, &["Name", "CreationTime"], "Alarms")
}
