//! Alarms: named conditions over an endpoint's recent request metrics (CreateAlarm,
//! DescribeAlarm, ListAlarms, DeleteAlarm), kept with the models and endpoint configs, and
//! evaluated in process: by a deployment's bakes (`AutoRollbackConfiguration.Alarms`) ten
//! times a second, and on DescribeAlarm. The condition logic is
//! [`plinth_policy::alarm`]; this module finds the windows an alarm watches and serves the
//! operations.

use crate::api::AppState;
use crate::catalog::Record;
use crate::control::{arn, in_use, list, lock, parse, stored, validation, ListInput, Listed};
use crate::endpoints::now;
use crate::error::ApiError;
use crate::store::Kind;
use plinth_policy::alarm::{current_second, AlarmDefinition, Evaluation, Scope, Window};
use serde::Deserialize;
use serde_json::{json, Value};

/// Evaluate `definition` now over the windows it watches.
pub(crate) fn evaluate(state: &AppState, definition: &AlarmDefinition) -> Evaluation {
    let alarm = match definition.compile() {
        Ok(alarm) => alarm,
        // Checked when created; a stored definition this build refuses cannot fire.
        Err(e) => {
            return Evaluation {
                state: plinth_policy::alarm::AlarmState::InsufficientData,
                reason: format!("The alarm's definition is not valid: {e}"),
                datapoints: Vec::new(),
            }
        }
    };
    let endpoint = state.endpoints.get(alarm.endpoint_name());
    let windows: Vec<&Window> = match &endpoint {
        None => Vec::new(),
        Some(endpoint) => {
            let fleet: Vec<&crate::endpoints::VariantState> = match alarm.scope() {
                Scope::Endpoint => endpoint.serving().collect(),
                Scope::NewFleet => endpoint
                    .new_fleet
                    .iter()
                    .flat_map(|f| f.variants.iter())
                    .collect(),
            };
            fleet
                .into_iter()
                .filter(|v| alarm.variant_name().is_none_or(|n| n == v.live.name))
                .map(|v| &v.live.recent)
                .collect()
        }
    };
    alarm.evaluate(&windows, current_second())
}

/// The first of `names` that is in `ALARM` for `endpoint`, with the reason. An alarm on
/// another endpoint is evaluated all the same (it watches what it names).
pub(crate) fn firing(
    state: &AppState,
    endpoint: &str,
    names: &[String],
) -> Option<(String, String)> {
    let definitions: Vec<(String, AlarmDefinition)> = {
        let catalog = lock(state);
        names
            .iter()
            .filter_map(|n| {
                catalog
                    .alarms
                    .get(n)
                    .map(|r| (n.clone(), r.definition.clone()))
            })
            .collect()
    };
    definitions.into_iter().find_map(|(name, definition)| {
        let evaluation = evaluate(state, &definition);
        (evaluation.state == plinth_policy::alarm::AlarmState::Alarm).then(|| {
            tracing::warn!(endpoint, alarm = %name, reason = %evaluation.reason, "alarm in ALARM");
            (name, evaluation.reason)
        })
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AlarmNameInput {
    alarm_name: String,
}

/// CreateAlarm: `AlarmName` and an [`AlarmDefinition`]. Alarms are immutable, like models.
pub(crate) fn create(state: &AppState, mut input: Value) -> Result<Value, ApiError> {
    let name = match input.as_object_mut().and_then(|o| o.remove("AlarmName")) {
        Some(Value::String(name)) => name,
        _ => return Err(validation("AlarmName is required (a string)")),
    };
    crate::control::check_name("alarmName", &name)?;
    let definition: AlarmDefinition = parse(input)?;
    definition.compile().map_err(validation)?;
    let mut catalog = lock(state);
    if catalog.alarms.keys().any(|n| n.eq_ignore_ascii_case(&name)) {
        return Err(stored(
            crate::store::StoreError::Exists(name.clone()),
            "alarm",
            &name,
        ));
    }
    let record = Record {
        name: name.clone(),
        created: now(),
        definition,
    };
    state
        .store
        .insert(Kind::Alarm, &record.stored())
        .map_err(|e| stored(e, "alarm", &name))?;
    catalog.alarms.insert(name.clone(), record);
    tracing::info!(alarm = %name, "alarm created");
    Ok(json!({ "AlarmArn": arn("alarm", &name) }))
}

fn not_found(name: &str) -> ApiError {
    validation(format!("Could not find alarm \"{}\".", arn("alarm", name)))
}

/// DescribeAlarm: the definition, and its state evaluated now.
pub(crate) fn describe(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: AlarmNameInput = parse(input)?;
    let record = lock(state)
        .alarms
        .get(&input.alarm_name)
        .cloned()
        .ok_or_else(|| not_found(&input.alarm_name))?;
    let mut output = crate::control::described(&record, "Alarm", "alarm")?;
    let evaluation = evaluate(state, &record.definition);
    output["StateValue"] = json!(evaluation.state.as_str());
    output["StateReason"] = json!(evaluation.reason);
    output["Datapoints"] = json!(evaluation.datapoints);
    Ok(output)
}

/// DeleteAlarm: refused while a deployment in progress watches it.
pub(crate) fn delete(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: AlarmNameInput = parse(input)?;
    let name = input.alarm_name;
    let mut catalog = lock(state);
    if !catalog.alarms.contains_key(&name) {
        return Err(not_found(&name));
    }
    for endpoint in state.endpoints.all().values() {
        let watched = endpoint.new_fleet.is_some()
            && endpoint.deployment_config.as_ref().is_some_and(|d| {
                d.auto_rollback_configuration
                    .as_ref()
                    .is_some_and(|r| r.alarms.iter().flatten().any(|a| a.alarm_name == name))
            });
        if watched {
            return Err(in_use(format!(
                "Cannot delete alarm \"{}\": the deployment in progress on endpoint {} \
                 rolls back on it.",
                arn("alarm", &name),
                endpoint.name
            )));
        }
    }
    state
        .store
        .delete(Kind::Alarm, &name)
        .map_err(crate::control::internal)?;
    catalog.alarms.remove(&name);
    tracing::info!(alarm = %name, "alarm deleted");
    Ok(json!({}))
}

/// ListAlarms: SageMaker's list conventions (sort, filters, pages).
pub(crate) fn list_alarms(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: ListInput = parse(input)?;
    let items = lock(state)
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
