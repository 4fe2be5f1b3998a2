//! DescribeAsyncQueue (Plinth's): an asynchronous endpoint's queue at a glance (`plinth async
//! status`): jobs queued, running and done (in the last day), the backlog as SageMaker's metrics
//! measure it, and the notifications' deliveries.

use super::common::{named_endpoint, validation};
use crate::error::ApiError;
use crate::fleet::async_jobs::{backlog, config_of};
use crate::fleet::Fleet;
use plinth_policy::async_inference::BacklogMetric;
use serde_json::{json, Value};

/// DescribeAsyncQueue: refused for an endpoint without `AsyncInferenceConfig`.
pub(crate) fn describe_async_queue(state: &Fleet, input: Value) -> Result<Value, ApiError> {
    let endpoint = named_endpoint(&state.endpoints, input)?;
    let Some(config) = config_of(state, &endpoint.config_name) else {
        return Err(validation(format!(
            "Endpoint {} is not an asynchronous endpoint: its endpoint config {} has no \
             AsyncInferenceConfig",
            endpoint.name, endpoint.config_name
        )));
    };
    let status = state
        .stored
        .queue
        .status(&endpoint.name, crate::state::now());
    let backlog = backlog(state, &endpoint.name).unwrap_or_default();
    let metric = |m: BacklogMetric| m.value(&backlog);
    let undelivered: Vec<Value> = status
        .undelivered
        .iter()
        .map(|(url, tries, last)| json!({ "Url": url, "Tries": tries, "LastTry": last }))
        .collect();
    Ok(json!({
        "EndpointName": endpoint.name,
        "MaxConcurrentInvocationsPerInstance": config.per_instance(),
        "InstanceCount": backlog.instances,
        "Queued": status.queued,
        "Running": status.running,
        "Completed": status.completed,
        "Failed": status.failed,
        "ApproximateBacklogSize": metric(BacklogMetric::Size),
        "ApproximateBacklogSizePerInstance": metric(BacklogMetric::SizePerInstance),
        "ApproximateAgeOfOldestRequest": metric(BacklogMetric::AgeOfOldestRequest),
        "HasBacklogWithoutCapacity": metric(BacklogMetric::HasBacklogWithoutCapacity),
        "Notifications": {
            "Pending": status.notifications_pending,
            "Delivered": status.notifications_delivered,
            "Failed": status.notifications_failed,
            "Undelivered": undelivered,
        },
    }))
}
