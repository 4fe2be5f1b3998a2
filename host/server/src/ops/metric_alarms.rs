//! CloudWatch's alarm operations (boto3's `cloudwatch`): PutMetricAlarm, DescribeAlarms,
//! DescribeAlarmsForMetric, DeleteAlarms, SetAlarmState, DescribeAlarmHistory,
//! EnableAlarmActions and DisableAlarmActions. They work on the same alarms as Plinth's
//! CreateAlarm (one schema: [`AlarmDefinition`], kept in the catalog), so an alarm put here
//! is one `AutoRollbackConfiguration` can name. An alarm watches an endpoint
//! (`EndpointName`) or one of its variants (`VariantName`); its state and history are
//! `fleet::alarm_watch`'s.

use super::cloudwatch::{bad_token, dimensions, invalid, missing, position, text, token};
use crate::error::ApiError;
use crate::fleet::alarm_watch::SetState;
use crate::fleet::Fleet;
use crate::state::catalog::Record;
use crate::state::store::{HistoryQuery, Kind, StoreError};
use crate::state::{now, ACCOUNT_ID};
use axum::http::StatusCode;
use plinth_policy::metric_alarm::{AlarmDefinition, AlarmState, REQUEST_NAMESPACE};
use serde_json::{json, Value};
use std::sync::Arc;

/// DescribeAlarms' and DescribeAlarmHistory's `MaxRecords` when none is given.
const PAGE: usize = 50;

/// The most alarm names one call takes.
const MAX_NAMES: usize = 100;

fn not_found(message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "ResourceNotFound", message)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServiceError",
        e.to_string(),
    )
}

/// CloudWatch's ARN of alarm `name`.
pub(crate) fn alarm_arn(name: &str) -> String {
    format!(
        "arn:aws:cloudwatch:{}:{ACCOUNT_ID}:alarm:{name}",
        crate::state::identity::REGION
    )
}

/// The operations this module serves.
pub(crate) const OPERATIONS: &[&str] = &[
    "PutMetricAlarm",
    "DescribeAlarms",
    "DescribeAlarmsForMetric",
    "DeleteAlarms",
    "SetAlarmState",
    "DescribeAlarmHistory",
    "EnableAlarmActions",
    "DisableAlarmActions",
];

/// Run one alarm operation; changes are serialised with every other change to endpoints.
pub(crate) async fn call(
    state: &Arc<Fleet>,
    operation: &str,
    input: Value,
) -> Result<Value, ApiError> {
    let _exclusive = if operation.starts_with("Describe") {
        None
    } else {
        Some(state.changes.lock().await)
    };
    let state = state.clone();
    let operation = operation.to_owned();
    tokio::task::spawn_blocking(move || match operation.as_str() {
        "PutMetricAlarm" => put_metric_alarm(&state, &input),
        "DescribeAlarms" => describe_alarms(&state, &input),
        "DescribeAlarmsForMetric" => describe_alarms_for_metric(&state, &input),
        "DeleteAlarms" => delete_alarms(&state, &input),
        "SetAlarmState" => set_alarm_state(&state, &input),
        "DescribeAlarmHistory" => describe_alarm_history(&state, &input),
        "EnableAlarmActions" => alarm_actions(&state, &input, true),
        "DisableAlarmActions" => alarm_actions(&state, &input, false),
        other => unreachable!("{other} is not an alarm operation"),
    })
    .await
    .map_err(internal)?
}

/// PutMetricAlarm's input as an [`AlarmDefinition`]: `EndpointName` (required) and
/// `VariantName` (optional) from `Dimensions`.
fn definition_of(input: &Value) -> Result<AlarmDefinition, ApiError> {
    let namespace = text(input, "Namespace", "")?;
    let metric = text(input, "MetricName", "")?;
    let dims = dimensions(input, "")?;
    let mut endpoint = None;
    let mut variant = None;
    for (name, value) in dims {
        match name.as_str() {
            "EndpointName" => endpoint = Some(value),
            "VariantName" => variant = Some(value),
            other => {
                return Err(invalid(format!(
                    "The dimension {other} is not one Plinth's alarms watch: give EndpointName, \
                     and VariantName for one variant."
                )))
            }
        }
    }
    let endpoint = endpoint.ok_or_else(|| {
        invalid("Dimensions must name the endpoint watched (EndpointName), and may name one variant (VariantName).")
    })?;
    let comparison = text(input, "ComparisonOperator", "")?;
    if comparison.contains("LowerThreshold") || comparison.contains("UpperThreshold") {
        return Err(invalid(format!(
            "ComparisonOperator {comparison} compares with an anomaly detection band, which Plinth \
             does not have; use GreaterThanThreshold, GreaterThanOrEqualToThreshold, \
             LessThanThreshold or LessThanOrEqualToThreshold."
        )));
    }
    if let Some(other) = input["EvaluateLowSampleCountPercentile"]
        .as_str()
        .filter(|v| *v != "evaluate")
    {
        return Err(invalid(format!(
            "EvaluateLowSampleCountPercentile {other:?} is not supported: Plinth always \
             evaluates percentiles, however few the samples (evaluate)."
        )));
    }
    let number = |field: &str| input[field].as_f64().ok_or_else(|| missing(field));
    let whole = |field: &str| input[field].as_u64().ok_or_else(|| missing(field));
    let string = |field: &str| input[field].as_str().map(str::to_owned);
    let definition = AlarmDefinition {
        endpoint_name: endpoint,
        variant_name: variant,
        scope: Default::default(),
        metric_name: metric.to_owned(),
        statistic: string("Statistic"),
        extended_statistic: string("ExtendedStatistic"),
        comparison_operator: comparison.to_owned(),
        threshold: number("Threshold")?,
        period: whole("Period")?,
        evaluation_periods: whole("EvaluationPeriods")?,
        datapoints_to_alarm: input["DatapointsToAlarm"].as_u64(),
        treat_missing_data: string("TreatMissingData"),
        alarm_description: string("AlarmDescription"),
        namespace: (namespace != REQUEST_NAMESPACE).then(|| namespace.to_owned()),
        unit: string("Unit"),
        actions_enabled: input["ActionsEnabled"].as_bool(),
    };
    definition.compile().map_err(invalid)?;
    Ok(definition)
}

/// PutMetricAlarm: create the alarm, or replace its definition (its state stays).
fn put_metric_alarm(state: &Fleet, input: &Value) -> Result<Value, ApiError> {
    let name = text(input, "AlarmName", "")?.to_owned();
    crate::ops::common::check_name("AlarmName", &name)
        .map_err(|e| invalid(e.message().to_owned()))?;
    let definition = definition_of(input)?;
    super::alarms::check_stored(&state.stored, &definition).map_err(invalid)?;
    let at = now();
    let created = {
        let mut catalog = state.catalog();
        let existing = catalog
            .alarms
            .keys()
            .find(|n| n.eq_ignore_ascii_case(&name))
            .cloned();
        let record = Record {
            name: existing.clone().unwrap_or_else(|| name.clone()),
            created: existing
                .as_ref()
                .and_then(|n| catalog.alarms.get(n))
                .map_or(at, |r| r.created),
            definition: definition.clone(),
        };
        let written = match &existing {
            Some(_) => state
                .stored
                .store
                .replace(Kind::Alarm, &record.stored())
                .map(|_| ()),
            None => state.stored.store.insert(Kind::Alarm, &record.stored()),
        };
        written.map_err(internal)?;
        let stored_name = record.name.clone();
        catalog.alarms.insert(record.name.clone(), record);
        (existing.is_none(), stored_name)
    };
    let (created, name) = created;
    state
        .alarm_states
        .configured(
            &state.stored.store,
            &name,
            created,
            &serde_json::to_value(&definition).unwrap_or_default(),
            at,
        )
        .map_err(internal)?;
    tracing::info!(alarm = %name, created, "alarm put");
    Ok(json!({}))
}

/// A time to the millisecond, as CloudWatch gives its times (and the `query` protocol's
/// ISO 8601 form holds).
fn ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

/// An alarm in DescribeAlarms' `MetricAlarm` shape.
fn metric_alarm(state: &Fleet, record: &Record<AlarmDefinition>) -> Value {
    let d = &record.definition;
    let row = state.alarm_states.get(&record.name);
    let mut dims = vec![json!({"Name": "EndpointName", "Value": d.endpoint_name})];
    if let Some(v) = &d.variant_name {
        dims.push(json!({"Name": "VariantName", "Value": v}));
    }
    let mut alarm = json!({
        "AlarmName": record.name,
        "AlarmArn": alarm_arn(&record.name),
        "AlarmConfigurationUpdatedTimestamp": ms(row.as_ref().map_or(record.created, |r| r.configured)),
        "ActionsEnabled": d.actions_enabled.unwrap_or(true),
        "OKActions": [],
        "AlarmActions": [],
        "InsufficientDataActions": [],
        "StateValue": row.as_ref().map_or("INSUFFICIENT_DATA", |r| r.state.as_str()),
        "StateReason": row.as_ref().map_or("Unchecked: Initial alarm creation", |r| r.reason.as_str()),
        "StateUpdatedTimestamp": ms(row.as_ref().map_or(record.created, |r| r.updated)),
        "StateTransitionedTimestamp": ms(row.as_ref().map_or(record.created, |r| r.transitioned)),
        "MetricName": d.metric_name,
        "Namespace": d.namespace.as_deref().unwrap_or(REQUEST_NAMESPACE),
        "Dimensions": dims,
        "Period": d.period,
        "EvaluationPeriods": d.evaluation_periods,
        "DatapointsToAlarm": d.datapoints_to_alarm.unwrap_or(d.evaluation_periods),
        "Threshold": d.threshold,
        "ComparisonOperator": d.comparison_operator,
        "TreatMissingData": d.treat_missing_data.as_deref().unwrap_or("missing"),
    });
    let mut put = |key: &str, value: Option<&String>| {
        if let Some(v) = value {
            alarm[key] = json!(v);
        }
    };
    put("AlarmDescription", d.alarm_description.as_ref());
    put("Statistic", d.statistic.as_ref());
    put("ExtendedStatistic", d.extended_statistic.as_ref());
    put("Unit", d.unit.as_ref());
    if let Some(data) = row.and_then(|r| r.reason_data) {
        alarm["StateReasonData"] = json!(data);
    }
    alarm
}

/// A page of `alarms` (in name order) from `input`'s NextToken, of its MaxRecords.
fn page(input: &Value, alarms: Vec<Value>, key: &str) -> Result<Value, ApiError> {
    let size = input["MaxRecords"].as_u64().map_or(PAGE, |n| n as usize);
    let start = position(input, 1)?.map_or(0, |at| at[0]);
    if start > alarms.len() {
        return Err(bad_token());
    }
    let stop = (start + size).min(alarms.len());
    let mut output = json!({ key: alarms[start..stop] });
    if stop < alarms.len() {
        output["NextToken"] = json!(token(&[stop], input));
    }
    Ok(output)
}

fn names(input: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    let names: Vec<String> = input[field]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if names.len() > MAX_NAMES {
        return Err(invalid(format!(
            "The collection {field} must not have a size greater than {MAX_NAMES}."
        )));
    }
    Ok(names)
}

fn describe_alarms(state: &Fleet, input: &Value) -> Result<Value, ApiError> {
    let wanted = names(input, "AlarmNames")?;
    let prefix = input["AlarmNamePrefix"].as_str();
    if !wanted.is_empty() && prefix.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterCombination",
            "AlarmNames and AlarmNamePrefix cannot be given together.",
        ));
    }
    let types: Vec<&str> = input["AlarmTypes"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for t in &types {
        if !matches!(*t, "MetricAlarm" | "CompositeAlarm") {
            return Err(invalid(format!(
                "AlarmTypes holds {t:?}; use MetricAlarm or CompositeAlarm."
            )));
        }
    }
    let state_value = input["StateValue"].as_str();
    let metric_alarms = types.is_empty() || types.contains(&"MetricAlarm");
    let records: Vec<Record<AlarmDefinition>> = {
        let catalog = state.catalog();
        let mut records: Vec<_> = catalog.alarms.values().cloned().collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        records
    };
    let alarms: Vec<Value> = records
        .iter()
        .filter(|_| metric_alarms)
        // Plinth's alarms have no actions: an action prefix matches none of them.
        .filter(|_| input["ActionPrefix"].is_null())
        .filter(|r| wanted.is_empty() || wanted.contains(&r.name))
        .filter(|r| prefix.is_none_or(|p| r.name.starts_with(p)))
        .map(|r| metric_alarm(state, r))
        .filter(|a| state_value.is_none_or(|s| a["StateValue"] == s))
        .collect();
    let mut output = page(input, alarms, "MetricAlarms")?;
    output["CompositeAlarms"] = json!([]);
    Ok(output)
}

fn describe_alarms_for_metric(state: &Fleet, input: &Value) -> Result<Value, ApiError> {
    let metric = text(input, "MetricName", "")?;
    let namespace = text(input, "Namespace", "")?;
    let mut dims = dimensions(input, "")?;
    dims.sort();
    let records: Vec<Record<AlarmDefinition>> = {
        let catalog = state.catalog();
        let mut records: Vec<_> = catalog.alarms.values().cloned().collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        records
    };
    let same =
        |field: &str, value: Option<&str>| input[field].as_str().is_none_or(|v| Some(v) == value);
    let alarms: Vec<Value> = records
        .iter()
        .filter(|r| {
            let d = &r.definition;
            let mut theirs = vec![("EndpointName".to_owned(), d.endpoint_name.clone())];
            if let Some(v) = &d.variant_name {
                theirs.push(("VariantName".to_owned(), v.clone()));
            }
            theirs.sort();
            d.metric_name == metric
                && d.namespace.as_deref().unwrap_or(REQUEST_NAMESPACE) == namespace
                && (input["Dimensions"].is_null() || theirs == dims)
                && same("Statistic", d.statistic.as_deref())
                && same("ExtendedStatistic", d.extended_statistic.as_deref())
                && same("Unit", d.unit.as_deref())
                && input["Period"].as_u64().is_none_or(|p| p == d.period)
        })
        .map(|r| metric_alarm(state, r))
        .collect();
    Ok(json!({ "MetricAlarms": alarms }))
}

/// The catalog's name of alarm `name`, or ResourceNotFound.
fn existing(state: &Fleet, name: &str) -> Result<Record<AlarmDefinition>, ApiError> {
    state
        .catalog()
        .alarms
        .get(name)
        .cloned()
        .ok_or_else(|| not_found(format!("Alarm {name} does not exist.")))
}

fn delete_alarms(state: &Fleet, input: &Value) -> Result<Value, ApiError> {
    let wanted = names(input, "AlarmNames")?;
    for name in &wanted {
        existing(state, name)?;
        if let Some(endpoint) = super::alarms::watched_by(&state.endpoints, name) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "ResourceInUse",
                format!(
                    "Alarm {name} cannot be deleted: the deployment in progress on endpoint \
                     {endpoint} rolls back on it."
                ),
            ));
        }
    }
    for name in &wanted {
        super::alarms::remove(&state.stored, &state.alarm_states, name)?;
    }
    Ok(json!({}))
}

fn set_alarm_state(state: &Fleet, input: &Value) -> Result<Value, ApiError> {
    let name = text(input, "AlarmName", "")?;
    let record = existing(state, name)?;
    let value = match text(input, "StateValue", "")? {
        "OK" => AlarmState::Ok,
        "ALARM" => AlarmState::Alarm,
        "INSUFFICIENT_DATA" => AlarmState::InsufficientData,
        other => {
            return Err(invalid(format!(
                "StateValue {other:?} is not OK, ALARM or INSUFFICIENT_DATA."
            )))
        }
    };
    let reason = input["StateReason"]
        .as_str()
        .ok_or_else(|| missing("StateReason"))?;
    let data = input["StateReasonData"].as_str();
    if let Some(data) = data {
        if serde_json::from_str::<Value>(data).is_err() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidFormat",
                "StateReasonData must be JSON.",
            ));
        }
    }
    state
        .alarm_states
        .set(
            &state.stored.store,
            &record.name,
            &SetState {
                value,
                reason,
                data,
            },
            record.definition.period,
            now(),
        )
        .map_err(internal)?;
    tracing::info!(alarm = %record.name, state = value.as_str(), "alarm state set");
    Ok(json!({}))
}

fn describe_alarm_history(state: &Fleet, input: &Value) -> Result<Value, ApiError> {
    let time = |field: &str, default: f64| -> Result<f64, ApiError> {
        if input[field].is_null() {
            Ok(default)
        } else {
            super::cloudwatch::time(input, field).map(|t| t as f64)
        }
    };
    // A page after the first reads only what there was at the first page (its token holds
    // the time), so that new items do not move the positions.
    let paged = position(input, 2)?;
    let (start, mut end) = (time("StartDate", 0.0)?, time("EndDate", f64::MAX)?);
    let asked = paged.as_ref().map_or_else(now, |p| p[1] as f64 / 1000.0);
    end = end.min(asked);
    let composite_only = input["AlarmTypes"]
        .as_array()
        .is_some_and(|a| !a.is_empty() && !a.iter().any(|t| t == "MetricAlarm"));
    let size = input["MaxRecords"].as_u64().map_or(100, |n| n as usize);
    let offset = paged.map_or(0, |at| at[0]).min(i64::MAX as usize / 2);
    let rows = if composite_only {
        Vec::new()
    } else {
        state
            .stored
            .store
            .alarm_history(&HistoryQuery {
                name: input["AlarmName"].as_str(),
                kind: input["HistoryItemType"].as_str(),
                start,
                end,
                ascending: input["ScanBy"].as_str() == Some("TimestampAscending"),
                offset,
                // One more than a page says whether there is a next one.
                limit: size + 1,
            })
            .map_err(|e: StoreError| internal(e))?
    };
    let more = rows.len() > size;
    let items: Vec<Value> = rows
        .into_iter()
        .take(size)
        .map(|h| {
            json!({
                "AlarmName": h.name,
                "AlarmType": "MetricAlarm",
                "Timestamp": ms(h.time),
                "HistoryItemType": h.kind,
                "HistorySummary": h.summary,
                "HistoryData": h.data,
            })
        })
        .collect();
    let mut output = json!({ "AlarmHistoryItems": items });
    if more {
        let at = (asked * 1000.0) as usize;
        output["NextToken"] = json!(token(&[offset.saturating_add(size), at], input));
    }
    Ok(output)
}

/// EnableAlarmActions and DisableAlarmActions: `ActionsEnabled` in each definition.
fn alarm_actions(state: &Fleet, input: &Value, enabled: bool) -> Result<Value, ApiError> {
    let wanted = names(input, "AlarmNames")?;
    for name in &wanted {
        existing(state, name)?;
    }
    let mut catalog = state.catalog();
    for name in &wanted {
        let Some(record) = catalog.alarms.get(name) else {
            continue;
        };
        let mut record = record.clone();
        record.definition.actions_enabled = Some(enabled);
        state
            .stored
            .store
            .replace(Kind::Alarm, &record.stored())
            .map_err(internal)?;
        catalog.alarms.insert(name.clone(), record);
    }
    Ok(json!({}))
}
