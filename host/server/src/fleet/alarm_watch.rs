//! Alarms evaluated in process over the live variants' recent request windows, or over the
//! model quality the monitoring executions found: by a deployment's bakes
//! (`AutoRollbackConfiguration.Alarms`) ten times a second, and on DescribeAlarm. The condition logic is [`plinth_policy::metric_alarm`]; this module finds the
//! windows an alarm watches.

use super::deployer::Fleet;
use super::recent::current_second;
use super::table::{EndpointTable, VariantState};
use plinth_policy::metric_alarm::{AlarmDefinition, Evaluation, Scope};

/// Evaluate `definition` now over the windows it watches.
pub(crate) fn evaluate(
    endpoints: &EndpointTable,
    quality: &super::monitoring::Running,
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

/// The first of `names` that is in `ALARM` for `endpoint`, with the reason. An alarm on
/// another endpoint is evaluated all the same (it watches what it names).
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
        let evaluation = evaluate(&state.endpoints, &state.monitoring, &definition);
        (evaluation.state == plinth_policy::metric_alarm::AlarmState::Alarm).then(|| {
            tracing::warn!(endpoint, alarm = %name, reason = %evaluation.reason, "alarm in ALARM");
            (name, evaluation.reason)
        })
    })
}
