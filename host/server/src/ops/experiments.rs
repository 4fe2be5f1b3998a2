//! RecordInferenceOutcomes and DescribeExperiment (Plinth's): outcomes attributed to the
//! variant that served an inference id, and each experiment's statistics and verdicts.

use super::common::{endpoint_not_found, internal, parse, validation, EndpointNameInput};
use crate::error::ApiError;
use crate::fleet::ledger::Experiments;
use crate::fleet::table::{EndpointSnapshot, EndpointTable};
use crate::metrics::Metrics;
use crate::state::store::Store;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecordOutcomesInput {
    endpoint_name: String,
    outcomes: Vec<OutcomeInput>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OutcomeInput {
    inference_id: String,
    value: f64,
}

fn experiment_of(
    endpoints: &EndpointTable,
    name: &str,
) -> Result<
    (
        Arc<EndpointSnapshot>,
        Option<Arc<crate::fleet::ledger::Experiment>>,
    ),
    ApiError,
> {
    let endpoint = endpoints
        .get(name)
        .ok_or_else(|| endpoint_not_found(name))?;
    let experiment = endpoint.experiment.clone();
    Ok((endpoint, experiment))
}

/// RecordInferenceOutcomes: outcomes (1/0 for a binary metric, any number for a numeric
/// one) for earlier invocations, by inference id. Each is attributed to the variant that
/// served it, or rejected with the reason: `Unknown`, `Expired`, `Duplicate`, `Late` (served
/// under a config the endpoint no longer serves) or `Invalid`. The answer waits until the
/// recorded outcomes are in the store (one flush, shared with concurrent callers' outcomes).
pub(crate) fn record_outcomes(
    endpoints: &EndpointTable,
    ledger: &Experiments,
    store: &Store,
    metrics: &Metrics,
    input: Value,
) -> Result<Value, ApiError> {
    let input: RecordOutcomesInput = parse(input)?;
    if input.outcomes.is_empty() || input.outcomes.len() > 1000 {
        return Err(validation("Outcomes must hold 1-1000 items"));
    }
    let (endpoint, experiment) = experiment_of(endpoints, &input.endpoint_name)?;
    let mut recorded = 0;
    let mut rejected = Vec::new();
    for o in input.outcomes {
        match ledger.outcome(
            &endpoint.name,
            experiment.as_ref(),
            &o.inference_id,
            o.value,
        ) {
            Ok(variant) => {
                recorded += 1;
                metrics
                    .outcomes
                    .with_label_values(&[endpoint.name.as_str(), variant.as_str()])
                    .inc();
            }
            Err(reason) => {
                metrics
                    .outcomes_rejected
                    .with_label_values(&[endpoint.name.as_str(), reason.as_str()])
                    .inc();
                rejected.push(json!({"InferenceId": o.inference_id, "Reason": reason.as_str()}));
            }
        }
    }
    if recorded > 0 {
        ledger.flush(store).map_err(internal)?;
    }
    Ok(json!({ "Recorded": recorded, "Rejected": rejected }))
}

/// DescribeExperiment: the endpoint's experiment, per variant and against the control.
pub(crate) fn describe_experiment(
    endpoints: &EndpointTable,
    input: Value,
) -> Result<Value, ApiError> {
    let input: EndpointNameInput = parse(input)?;
    let (endpoint, experiment) = experiment_of(endpoints, &input.endpoint_name)?;
    let experiment = experiment.ok_or_else(|| {
        validation(
            if endpoint.status == crate::fleet::table::EndpointStatus::Creating {
                format!(
                    "Endpoint {} is Creating; its experiment can be described once it is \
                     InService.",
                    endpoint.name
                )
            } else {
                format!(
                    "Endpoint {} serves endpoint configuration {}, which has no \
                     PlinthExperiment.",
                    endpoint.name, endpoint.config_name
                )
            },
        )
    })?;
    let weights: Vec<f64> = endpoint.variants.iter().map(|v| v.current_weight).collect();
    Ok(experiment.report(&weights))
}
