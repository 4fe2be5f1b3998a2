//! [`call`]: one operation by name, the one entry point of the control plane (the HTTP
//! protocol, the deployment file and the CLI all go through it): the member check first, then
//! the operation, with changes serialised.

use super::common::{require_object, unknown_operation, validation};
use super::{
    alarms, async_queue, endpoint_configs, endpoints, experiments, loaded_models, models,
    monitoring, shadow_variants, transform_jobs,
};
use crate::error::ApiError;
use crate::fleet::Fleet;
use serde_json::Value;
use std::sync::Arc;

/// Run one operation. Changes are serialized: one at a time, each committed before it
/// answers.
pub(crate) async fn call(
    state: &Arc<Fleet>,
    operation: &str,
    input: Value,
) -> Result<Value, ApiError> {
    require_object(&input)?;
    // SageMaker members Plinth does not implement, unknown keys and numbers out of range are
    // refused by name before anything else reads the input.
    plinth_policy::members::check_input(operation, &input).map_err(|e| validation(e.message))?;
    let read_only = operation.starts_with("Describe") || operation.starts_with("List");
    // CreateModel reads and unpacks its artifact first, which may take minutes, and takes
    // the lock itself only to commit.
    let locks_itself = operation == "CreateModel";
    let _exclusive = if read_only || locks_itself {
        None
    } else {
        Some(state.changes.lock().await)
    };
    match operation {
        "CreateModel" => {
            models::create_model(&state.stored, &state.runtime, &state.changes, input).await
        }
        "DescribeModel" => models::describe_model(&state.stored, input),
        "DeleteModel" => {
            models::delete_model(&state.stored, &state.endpoints, &state.runtime, input)
        }
        "ListModels" => models::list_models(&state.stored, input),
        "CreateEndpointConfig" => endpoint_configs::create_endpoint_config(&state.stored, input),
        "DescribeEndpointConfig" => {
            endpoint_configs::describe_endpoint_config(&state.stored, input)
        }
        "DeleteEndpointConfig" => {
            endpoint_configs::delete_endpoint_config(&state.stored, &state.endpoints, input)
        }
        "ListEndpointConfigs" => endpoint_configs::list_endpoint_configs(&state.stored, input),
        "CreateEndpoint" => endpoints::create_endpoint(state, input),
        "DescribeEndpoint" => endpoints::describe_endpoint(state, input),
        "UpdateEndpoint" => endpoints::update_endpoint(state, input),
        "UpdateEndpointWeightsAndCapacities" => {
            endpoints::update_weights_and_capacities(state, input)
        }
        "DeleteEndpoint" => endpoints::delete_endpoint(state, input),
        "ListEndpoints" => endpoints::list_endpoints(&state.endpoints, input),
        "CreateTransformJob" => transform_jobs::create_transform_job(state, input),
        "DescribeTransformJob" => transform_jobs::describe_transform_job(state, input),
        "ListTransformJobs" => transform_jobs::list_transform_jobs(state, input),
        "StopTransformJob" => transform_jobs::stop_transform_job(state, input),
        "CreateModelQualityJobDefinition" => monitoring::create_definition(&state.stored, input),
        "DescribeModelQualityJobDefinition" => {
            monitoring::describe_definition(&state.stored, input)
        }
        "DeleteModelQualityJobDefinition" => monitoring::delete_definition(&state.stored, input),
        "ListModelQualityJobDefinitions" => monitoring::list_definitions(&state.stored, input),
        "CreateMonitoringSchedule" => monitoring::create_schedule(&state.stored, input),
        "DescribeMonitoringSchedule" => monitoring::describe_schedule(&state.stored, input),
        "ListMonitoringSchedules" => monitoring::list_schedules(&state.stored, input),
        "StopMonitoringSchedule" => monitoring::stop_schedule(&state.stored, input),
        "StartMonitoringSchedule" => monitoring::start_schedule(&state.stored, input),
        "DeleteMonitoringSchedule" => monitoring::delete_schedule(&state.stored, input),
        "ListMonitoringExecutions" => monitoring::list_executions(&state.stored, input),
        "RecordInferenceOutcomes" => {
            // The outcomes are also the labels of the endpoint's model quality monitoring.
            let labels: Vec<(String, f64)> = input["Outcomes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| Some((o["InferenceId"].as_str()?.to_owned(), o["Value"].as_f64()?)))
                .collect();
            let endpoint = input["EndpointName"].as_str().unwrap_or("").to_owned();
            let mut answer = experiments::record_outcomes(
                &state.endpoints,
                &state.experiments,
                &state.stored.store,
                &state.metrics,
                input,
            );
            if answer.is_ok() {
                let written =
                    monitoring::outcomes_as_ground_truth(&state.stored, &endpoint, &labels).await;
                if let Err(e) = written {
                    answer = Err(e);
                }
            }
            answer
        }
        "DescribeExperiment" => experiments::describe_experiment(&state.endpoints, input),
        "CreateAlarm" => alarms::create(&state.stored, input),
        "DescribeAlarm" => {
            alarms::describe(&state.stored, &state.endpoints, &state.monitoring, input)
        }
        "DeleteAlarm" => {
            alarms::delete(&state.stored, &state.endpoints, &state.alarm_states, input)
        }
        "ListAlarms" => alarms::list_alarms(&state.stored, input),
        "ListEndpointEvents" => {
            endpoints::list_endpoint_events(&state.endpoints, &state.stored.store, input)
        }
        "DescribeShadowVariants" => {
            shadow_variants::describe_shadow_variants(&state.endpoints, input)
        }
        "PromoteShadowVariant" => shadow_variants::promote_shadow_variant(state, input),
        "ListLoadedModels" => loaded_models::list_loaded_models(&state.endpoints, input),
        "DescribeAsyncQueue" => async_queue::describe_async_queue(state, input),
        other => Err(unknown_operation(
            other,
            plinth_policy::members::operations(),
        )),
    }
}
