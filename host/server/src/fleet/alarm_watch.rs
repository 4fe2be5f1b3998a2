//! Alarms evaluated in process over the live variants' recent request windows, or over the
//! model quality the monitoring executions found: by a deployment's bakes
//! (`AutoRollbackConfiguration.Alarms`) ten times a second, every second by [`run`], and on
//! DescribeAlarm. The condition logic is [`plinth_policy::metric_alarm`]; this module finds
//! the windows an alarm watches, and keeps each alarm's state as CloudWatch does
//! ([`AlarmStates`]): a change of state is stored with a `StateUpdate` history item before
//! it counts; SetAlarmState's state holds until the alarm's next period; `TreatMissingData`
//! `ignore` keeps the state while no datapoint is present.

use super::deployer::Fleet;
use super::recent::current_second;
use super::table::{EndpointTable, VariantState};
use crate::state::metric_store::MetricStore;
use crate::state::store::{AlarmHistoryRow, AlarmStateRow, Store};
use plinth_policy::metric_alarm::{
    transition, Alarm, AlarmDefinition, AlarmState, Evaluation, Held, Scope,
};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Evaluate `definition` now over the windows it watches (or, for one over more than the
/// windows keep, over `metrics`' datapoints).
pub(crate) fn evaluate(
    endpoints: &EndpointTable,
    quality: &super::monitoring::Running,
    metrics: Option<&MetricStore>,
    definition: &AlarmDefinition,
) -> Evaluation {
    let alarm = match definition.compile() {
        Ok(alarm) => alarm,
        // Checked when created; a stored definition this build refuses cannot fire.
        Err(e) => {
            return Evaluation {
                state: plinth_policy::metric_alarm::AlarmState::InsufficientData,
                reason: format!("The alarm's definition is not valid: {e}"),
                datapoints: Vec::new(),
            }
        }
    };
    let now = current_second();
    if let Some(metric) = alarm.quality_metric() {
        // A model quality metric: the monitoring executions' values, of the variant named,
        // or of the endpoint; with NewFleet, of the deployment's new config's fleet.
        // A new fleet's values count from its deployment's start (not an earlier attempt's).
        let (config, since) = match alarm.scope() {
            Scope::Endpoint => (None, f64::MIN),
            Scope::NewFleet => match endpoints.get(alarm.endpoint_name()).and_then(|e| {
                e.new_fleet
                    .as_ref()
                    .map(|n| (n.config_name.clone(), n.started))
            }) {
                Some((config, started)) => (Some(config), started),
                None => {
                    return alarm
                        .evaluate_datapoints(vec![None; alarm.evaluation_periods() as usize])
                }
            },
        };
        let values = quality.values(
            alarm.endpoint_name(),
            alarm.variant_name(),
            config.as_deref(),
            metric,
            since,
        );
        return alarm.evaluate_datapoints(alarm.quality_datapoints(&values, now));
    }
    if alarm.from_store() {
        let now = crate::state::now().floor() as i64;
        // An alarm on the whole endpoint watches its production variants, as over the
        // windows: not its shadows, which the store keeps under the same endpoint.
        let shadows: Vec<String> = endpoints
            .get(alarm.endpoint_name())
            .map(|e| {
                e.shadows
                    .iter()
                    .chain(e.new_fleet.iter().flat_map(|n| n.shadows.iter()))
                    .map(|s| s.live.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        return alarm.evaluate_datapoints(stored_datapoints(metrics, &alarm, &shadows, now));
    }
    let mut periods = alarm.periods();
    if let Some(endpoint) = endpoints.get(alarm.endpoint_name()) {
        let fleet: Vec<&VariantState> = match alarm.scope() {
            Scope::Endpoint => endpoint.serving().collect(),
            Scope::NewFleet => endpoint
                .new_fleet
                .iter()
                .flat_map(|f| f.variants.iter())
                .collect(),
        };
        // One window locked at a time, each only while it is read.
        for v in fleet
            .into_iter()
            .filter(|v| alarm.variant_name().is_none_or(|n| n == v.live.name))
        {
            alarm.add_window(&v.live.recent.lock(), now, &mut periods);
        }
    }
    alarm.evaluate_periods(&periods)
}

/// How many seconds after it ends a second is surely stored: the publisher's grace and its
/// tick.
const STORED_AFTER: i64 = 4;

/// `alarm`'s datapoints at `now` (Unix seconds), newest first, from the metric store: the
/// endpoint's production variants' series (one variant's, if the alarm names one) at the
/// finest resolution holding the oldest period, each period `Period` seconds, the newest
/// ending with the last period of that resolution that is wholly stored (a second a few
/// seconds after it ends; a minute once merged); missing where no datapoint fell in a
/// period, all missing without a store.
fn stored_datapoints(
    metrics: Option<&MetricStore>,
    alarm: &Alarm,
    shadows: &[String],
    now: i64,
) -> Vec<Option<f64>> {
    use plinth_policy::metric_data::{period_start, tier_for, Aggregate};
    let n = alarm.evaluation_periods() as usize;
    let period = alarm.period() as i64;
    let none = vec![None; n];
    let Some(store) = metrics else {
        return none;
    };
    let stored = now - STORED_AFTER;
    let Some(tier) = tier_for(store.tiers(), stored - period * n as i64, now) else {
        return none;
    };
    let resolution = tier.resolution as i64;
    if alarm.other_unit() || period % resolution != 0 {
        return none;
    }
    let finest = store
        .tiers()
        .first()
        .is_some_and(|f| f.resolution == tier.resolution);
    let last = if finest {
        stored
    } else {
        match store.merged_until() {
            Ok(Some(merged)) => stored.min(merged),
            Ok(None) => return none,
            Err(e) => {
                tracing::warn!(error = %e, "an alarm's stored datapoints could not be read");
                return none;
            }
        }
    };
    // The last second of the last whole period of the resolution stored.
    let end = period_start(last + 1, tier.resolution) - 1;
    let from = end - period * n as i64 + 1;
    let ids: Vec<i64> = match alarm.variant_name() {
        // One variant: its series alone.
        Some(variant) => store
            .find(
                plinth_policy::metric_alarm::REQUEST_NAMESPACE,
                &[
                    ("EndpointName".to_owned(), alarm.endpoint_name().to_owned()),
                    ("VariantName".to_owned(), variant.to_owned()),
                ],
            )
            .map(|id| id.into_iter().collect())
            .unwrap_or_default(),
        // The endpoint: each production variant's series (not its shadows').
        None => match store.series() {
            Ok(series) => series
                .into_iter()
                .filter(|s| {
                    let dim = |name: &str| {
                        s.dimensions
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| v.as_str())
                    };
                    s.namespace == plinth_policy::metric_alarm::REQUEST_NAMESPACE
                        && dim("EndpointName") == Some(alarm.endpoint_name())
                        && dim("VariantName").is_some_and(|v| !shadows.iter().any(|s| s == v))
                })
                .map(|s| s.id)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "an alarm's stored datapoints could not be read");
                return none;
            }
        },
    };
    let mut periods: Vec<Option<Aggregate>> = vec![None; n];
    for id in ids {
        let points = match store.points(id, tier.resolution, from, end + 1, alarm.metric().as_str())
        {
            Ok(points) => points,
            Err(e) => {
                tracing::warn!(error = %e, "an alarm's stored datapoints could not be read");
                continue;
            }
        };
        for (t, aggregate) in points {
            let k = ((end - t) / period) as usize;
            if let Some(slot) = periods.get_mut(k) {
                match slot {
                    Some(mine) => mine.merge(&aggregate),
                    None => *slot = Some(aggregate),
                }
            }
        }
    }
    periods
        .into_iter()
        .map(|a| a.and_then(|a| a.value(alarm.statistic())))
        .collect()
}

/// The first of `names` that is in `ALARM` for `endpoint`, with the reason. An alarm on
/// another endpoint is evaluated all the same (it watches what it names); each evaluation
/// moves the alarm's state.
pub(crate) fn firing(state: &Fleet, endpoint: &str, names: &[String]) -> Option<(String, String)> {
    let definitions: Vec<(String, AlarmDefinition)> = {
        let catalog = state.catalog();
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
        let held = observe(state, &name, &definition);
        (held.state == AlarmState::Alarm).then(|| {
            tracing::warn!(endpoint, alarm = %name, reason = %held.reason, "alarm in ALARM");
            (name, held.reason)
        })
    })
}

/// Evaluate alarm `name` (defined as `definition`) now and move its state.
pub(crate) fn observe(state: &Fleet, name: &str, definition: &AlarmDefinition) -> Held {
    let evaluation = evaluate(
        &state.endpoints,
        &state.monitoring,
        state.stored.metrics.as_deref(),
        definition,
    );
    match definition.compile() {
        Ok(alarm) => state.alarm_states.observe(
            &state.stored.store,
            name,
            &alarm,
            &evaluation,
            crate::state::now(),
        ),
        Err(_) => Held {
            state: evaluation.state,
            reason: evaluation.reason,
        },
    }
}

/// How long alarm history is kept: CloudWatch's 30 days.
const HISTORY_DAYS: f64 = 30.0;

/// Evaluate every alarm every second, moving its state, until the process ends; history
/// older than 30 days is dropped every hour.
pub(crate) async fn run(state: Arc<Fleet>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick: u64 = 0;
    loop {
        ticker.tick().await;
        let state = state.clone();
        let pass = tokio::task::spawn_blocking(move || {
            let alarms: Vec<(String, AlarmDefinition)> = state
                .catalog()
                .alarms
                .iter()
                .map(|(n, r)| (n.clone(), r.definition.clone()))
                .collect();
            for (name, definition) in alarms {
                observe(&state, &name, &definition);
            }
            if tick.is_multiple_of(3600) {
                let before = crate::state::now() - HISTORY_DAYS * 86_400.0;
                if let Err(e) = state.stored.store.forget_alarm_history(before) {
                    tracing::warn!(error = %e, "old alarm history could not be dropped");
                }
            }
        })
        .await;
        if let Err(e) = pass {
            tracing::error!(error = %e, "an alarm evaluation pass failed");
        }
        tick += 1;
    }
}

/// One alarm's state as it lasts.
#[derive(Debug, Clone)]
struct Current {
    row: AlarmStateRow,
    /// Set by SetAlarmState: evaluations before this time keep the state.
    held_until: f64,
}

/// A state given by SetAlarmState.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SetState<'a> {
    pub(crate) value: AlarmState,
    pub(crate) reason: &'a str,
    /// `StateReasonData` (JSON).
    pub(crate) data: Option<&'a str>,
}

/// Every alarm's state, in memory over the store's `alarm_states`.
#[derive(Default)]
pub(crate) struct AlarmStates {
    current: Mutex<HashMap<String, Current>>,
    /// Alarms deleted since the start (until put again): an evaluation that began before
    /// the deletion does not store their state again.
    deleted: Mutex<std::collections::HashSet<String>>,
}

/// CloudWatch's `StateReasonData` for an evaluation.
fn reason_data(alarm: &Alarm, evaluation: &Evaluation, now: f64) -> String {
    let recent: Vec<f64> = evaluation.datapoints.iter().flatten().copied().collect();
    json!({
        "version": "1.0",
        "queryDate": plinth_policy::async_inference::iso8601(now),
        "statistic": alarm.statistic().to_string(),
        "period": alarm.period(),
        "recentDatapoints": recent,
        "threshold": alarm.threshold(),
        "evaluatedDatapoints": evaluation.datapoints.len(),
    })
    .to_string()
}

/// A `StateUpdate` history item for a change from `old` to `new`.
fn state_update(name: &str, old: Option<&AlarmStateRow>, new: &AlarmStateRow) -> AlarmHistoryRow {
    let side = |row: &AlarmStateRow| {
        let mut v = json!({ "stateValue": row.state, "stateReason": row.reason });
        if let Some(data) = row.reason_data.as_deref() {
            v["stateReasonData"] = serde_json::from_str(data).unwrap_or_else(|_| json!(data));
        }
        v
    };
    let old_state = old.map_or("INSUFFICIENT_DATA", |o| o.state.as_str());
    AlarmHistoryRow {
        name: name.to_owned(),
        time: new.updated,
        kind: "StateUpdate".into(),
        summary: format!("Alarm updated from {old_state} to {}", new.state),
        data: json!({
            "version": "1.0",
            "oldState": old.map(side).unwrap_or_else(|| json!({"stateValue": "INSUFFICIENT_DATA"})),
            "newState": side(new),
        })
        .to_string(),
    }
}

fn state_of(text: &str) -> AlarmState {
    match text {
        "OK" => AlarmState::Ok,
        "ALARM" => AlarmState::Alarm,
        _ => AlarmState::InsufficientData,
    }
}

impl AlarmStates {
    /// The states stored in `store` (none, with an error logged, when they cannot be read:
    /// each alarm is evaluated again within a second).
    pub(crate) fn load(store: &Store) -> Self {
        let rows = store.alarm_states().unwrap_or_else(|e| {
            tracing::error!(error = %e, "the alarms' states could not be read; they start again");
            Vec::new()
        });
        Self {
            deleted: Mutex::default(),
            current: Mutex::new(
                rows.into_iter()
                    .map(|(name, row)| {
                        (
                            name,
                            Current {
                                row,
                                held_until: 0.0,
                            },
                        )
                    })
                    .collect(),
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Current>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_deleted(&self, name: &str) -> bool {
        self.deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|d| d.eq_ignore_ascii_case(name))
    }

    fn set_deleted(&self, name: &str, deleted: bool) {
        let mut set = self.deleted.lock().unwrap_or_else(|e| e.into_inner());
        set.retain(|d| !d.eq_ignore_ascii_case(name));
        if deleted {
            set.insert(name.to_owned());
        }
    }

    /// Alarm `name`'s state, if it has one yet.
    pub(crate) fn get(&self, name: &str) -> Option<AlarmStateRow> {
        self.lock().get(name).map(|c| c.row.clone())
    }

    /// Move `name`'s state on `evaluation` at `now`; a change is stored (with its history)
    /// before it is returned. A store that fails leaves the state as it was (tried again at
    /// the next evaluation).
    pub(crate) fn observe(
        &self,
        store: &Store,
        name: &str,
        alarm: &Alarm,
        evaluation: &Evaluation,
        now: f64,
    ) -> Held {
        let mut current = self.lock();
        if self.is_deleted(name) {
            return Held {
                state: evaluation.state,
                reason: evaluation.reason.clone(),
            };
        }
        let previous = current.get(name).cloned();
        if let Some(p) = previous.as_ref().filter(|p| now < p.held_until) {
            return Held {
                state: state_of(&p.row.state),
                reason: p.row.reason.clone(),
            };
        }
        let held = previous.as_ref().map(|p| Held {
            state: state_of(&p.row.state),
            reason: p.row.reason.clone(),
        });
        let next = transition(held.as_ref(), alarm, evaluation);
        if held.as_ref().is_some_and(|h| h.state == next.state) {
            return next;
        }
        let row = AlarmStateRow {
            state: next.state.as_str().to_owned(),
            reason: next.reason.clone(),
            reason_data: Some(reason_data(alarm, evaluation, now)),
            updated: now,
            transitioned: now,
            configured: previous.as_ref().map_or(now, |p| p.row.configured),
        };
        let history = state_update(name, previous.as_ref().map(|p| &p.row), &row);
        match store.save_alarm_state(name, &row, Some(&history)) {
            Ok(()) => {
                tracing::info!(alarm = %name, state = %row.state, reason = %row.reason, "alarm state changed");
                current.insert(
                    name.to_owned(),
                    Current {
                        row,
                        held_until: 0.0,
                    },
                );
                next
            }
            Err(e) => {
                tracing::error!(alarm = %name, error = %e, "an alarm's new state could not be stored; it is evaluated again");
                held.unwrap_or(next)
            }
        }
    }

    /// A new or changed definition of `name` at `now`: its state starts (or stays) and its
    /// configuration time is `now`, with a `ConfigurationUpdate` history item.
    pub(crate) fn configured(
        &self,
        store: &Store,
        name: &str,
        created: bool,
        definition: &serde_json::Value,
        now: f64,
    ) -> Result<AlarmStateRow, crate::state::store::StoreError> {
        let mut current = self.lock();
        self.set_deleted(name, false);
        let row = match current.get(name) {
            Some(c) => AlarmStateRow {
                configured: now,
                ..c.row.clone()
            },
            None => AlarmStateRow {
                state: "INSUFFICIENT_DATA".into(),
                reason: "Unchecked: Initial alarm creation".into(),
                reason_data: None,
                updated: now,
                transitioned: now,
                configured: now,
            },
        };
        let history = AlarmHistoryRow {
            name: name.to_owned(),
            time: now,
            kind: "ConfigurationUpdate".into(),
            summary: format!(
                "Alarm \"{name}\" {}",
                if created { "created" } else { "updated" }
            ),
            data: json!({
                "version": "1.0",
                "type": if created { "Create" } else { "Update" },
                "updatedAlarm": definition,
            })
            .to_string(),
        };
        store.save_alarm_state(name, &row, Some(&history))?;
        current.insert(
            name.to_owned(),
            Current {
                row: row.clone(),
                held_until: 0.0,
            },
        );
        Ok(row)
    }

    /// SetAlarmState: `set` until the alarm's next period (`period` seconds), stored with
    /// its history.
    pub(crate) fn set(
        &self,
        store: &Store,
        name: &str,
        set: &SetState<'_>,
        period: u64,
        now: f64,
    ) -> Result<(), crate::state::store::StoreError> {
        let SetState {
            value: state,
            reason,
            data: reason_data,
        } = *set;
        let mut current = self.lock();
        let previous = current.get(name).map(|c| c.row.clone());
        let changed = previous.as_ref().is_none_or(|p| p.state != state.as_str());
        let row = AlarmStateRow {
            state: state.as_str().to_owned(),
            reason: reason.to_owned(),
            reason_data: reason_data.map(str::to_owned),
            updated: now,
            transitioned: if changed {
                now
            } else {
                previous.as_ref().map_or(now, |p| p.transitioned)
            },
            configured: previous.as_ref().map_or(now, |p| p.configured),
        };
        let history = state_update(name, previous.as_ref(), &row);
        store.save_alarm_state(name, &row, Some(&history))?;
        current.insert(
            name.to_owned(),
            Current {
                row,
                held_until: now + period as f64,
            },
        );
        Ok(())
    }

    /// Forget `name`'s state (it was deleted), with a `ConfigurationUpdate` history item.
    pub(crate) fn forget(
        &self,
        store: &Store,
        name: &str,
        now: f64,
    ) -> Result<(), crate::state::store::StoreError> {
        let history = AlarmHistoryRow {
            name: name.to_owned(),
            time: now,
            kind: "ConfigurationUpdate".into(),
            summary: format!("Alarm \"{name}\" deleted"),
            data: json!({"version": "1.0", "type": "Delete"}).to_string(),
        };
        let mut current = self.lock();
        store.delete_alarm_state(name, &history)?;
        current.remove(name);
        self.set_deleted(name, true);
        Ok(())
    }
}
