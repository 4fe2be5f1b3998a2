//! The control plane, as SageMaker's awsJson1_1 protocol: `POST /` with
//! `X-Amz-Target: SageMaker.<Operation>`. Operations here: DescribeEndpoint, ListEndpoints,
//! UpdateEndpointWeightsAndCapacities.

use crate::api::AppState;
use crate::endpoints::{routing_of, EndpointSnapshot, EndpointStatus};
use crate::error::{ApiError, ACCOUNT_ID};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use plinth_policy::capacity::{self, Capacity, Change};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::SystemTime;

/// The region named in ARNs.
const REGION: &str = "us-east-1";

pub(crate) fn endpoint_arn(name: &str) -> String {
    format!(
        "arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:endpoint/{}",
        name.to_lowercase()
    )
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn validation(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "ValidationException", message)
}

fn not_found(name: &str) -> ApiError {
    validation(format!("Could not find endpoint \"{}\".", endpoint_arn(name)))
}

/// `POST /`: dispatch on `X-Amz-Target`.
pub(crate) async fn dispatch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(operation) = target.strip_prefix("SageMaker.") else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("X-Amz-Target {target:?} is not a SageMaker operation"),
        )
        .into_response();
    };
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "SerializationException",
                    format!("the request body is not valid JSON: {e}"),
                )
                .into_response()
            }
        }
    };
    let result = match operation {
        "DescribeEndpoint" => describe_endpoint(&state, input),
        "ListEndpoints" => list_endpoints(&state),
        "UpdateEndpointWeightsAndCapacities" => {
            update_weights_and_capacities(&state, input).await
        }
        other => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("operation {other} is not supported by this Plinth version"),
        )),
    };
    match result {
        Ok(output) => (
            [("content-type", "application/x-amz-json-1.1")],
            axum::Json(output),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(input: Value) -> Result<T, ApiError> {
    serde_json::from_value(input).map_err(|e| validation(format!("invalid request: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointNameInput {
    endpoint_name: String,
}

fn describe_endpoint(state: &AppState, input: Value) -> Result<Value, ApiError> {
    let input: EndpointNameInput = parse(input)?;
    let endpoint = state
        .endpoints
        .get(&input.endpoint_name)
        .ok_or_else(|| not_found(&input.endpoint_name))?;
    Ok(describe(&endpoint))
}

/// SageMaker's DescribeEndpoint output for a snapshot.
pub(crate) fn describe(endpoint: &EndpointSnapshot) -> Value {
    let variants: Vec<Value> = endpoint
        .variants
        .iter()
        .map(|v| {
            json!({
                "VariantName": v.live.name,
                "ModelName": v.live.model_name,
                "CurrentWeight": v.current_weight,
                "DesiredWeight": v.desired_weight,
                "CurrentInstanceCount": v.live.pool.stats().instances,
                "DesiredInstanceCount": v.desired_instance_count,
                "RoutingConfig": { "RoutingStrategy": routing_of(v).as_str() },
            })
        })
        .collect();
    json!({
        "EndpointName": endpoint.name,
        "EndpointArn": endpoint_arn(&endpoint.name),
        "EndpointConfigName": endpoint.config_name,
        "ProductionVariants": variants,
        "EndpointStatus": endpoint.status.as_str(),
        "CreationTime": epoch(endpoint.created),
        "LastModifiedTime": epoch(endpoint.modified),
    })
}

fn list_endpoints(state: &AppState) -> Result<Value, ApiError> {
    let all = state.endpoints.all();
    let mut endpoints: Vec<_> = all.values().collect();
    endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    let summaries: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            json!({
                "EndpointName": e.name,
                "EndpointArn": endpoint_arn(&e.name),
                "CreationTime": epoch(e.created),
                "LastModifiedTime": epoch(e.modified),
                "EndpointStatus": e.status.as_str(),
            })
        })
        .collect();
    Ok(json!({ "Endpoints": summaries }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateInput {
    endpoint_name: String,
    desired_weights_and_capacities: Vec<DesiredWeightAndCapacity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DesiredWeightAndCapacity {
    variant_name: String,
    desired_weight: Option<f64>,
    desired_instance_count: Option<i64>,
}

/// UpdateEndpointWeightsAndCapacities. Weight-only changes take effect before the call
/// returns. Capacity changes move the endpoint to `Updating`: new instances are started and
/// warmed first, then the new weights are published, then surplus instances drain; the
/// endpoint returns to `InService` when that is done.
async fn update_weights_and_capacities(
    state: &Arc<AppState>,
    input: Value,
) -> Result<Value, ApiError> {
    let input: UpdateInput = parse(input)?;
    let _exclusive = state.updates.lock().await;
    let endpoint = state
        .endpoints
        .get(&input.endpoint_name)
        .ok_or_else(|| not_found(&input.endpoint_name))?;
    if endpoint.status != EndpointStatus::InService {
        return Err(validation(format!(
            "Cannot update in-progress endpoint \"{}\".",
            endpoint_arn(&endpoint.name)
        )));
    }
    let current: Vec<Capacity> = endpoint
        .variants
        .iter()
        .map(|v| Capacity {
            variant: v.live.name.clone(),
            weight: v.current_weight,
            instance_count: v.live.pool.stats().instances,
        })
        .collect();
    let changes: Vec<Change> = input
        .desired_weights_and_capacities
        .into_iter()
        .map(|d| Change {
            variant: d.variant_name,
            weight: d.desired_weight,
            instance_count: d.desired_instance_count,
        })
        .collect();
    let next = capacity::apply(&current, &changes).map_err(validation)?;
    let arn = endpoint_arn(&endpoint.name);

    let mut desired = EndpointSnapshot::clone(&endpoint);
    for (v, n) in desired.variants.iter_mut().zip(&next) {
        v.desired_weight = n.weight;
        v.desired_instance_count = n.instance_count;
    }
    desired.modified = SystemTime::now();
    let resizes = current
        .iter()
        .zip(&next)
        .any(|(c, n)| c.instance_count != n.instance_count);
    if !resizes {
        publish_weights(state, desired, EndpointStatus::InService);
        return Ok(json!({ "EndpointArn": arn }));
    }

    desired.status = EndpointStatus::Updating;
    state.endpoints.publish(desired.clone());
    tracing::info!(endpoint = %desired.name, "endpoint Updating: weights and capacities");
    let endpoints_state = state.clone();
    tokio::spawn(async move {
        let mut failure = None;
        // Grow first, so that new weights never route to instances that do not exist yet.
        for v in &desired.variants {
            if v.desired_instance_count > v.live.pool.stats().instances {
                if let Err(e) = v.live.pool.resize(v.desired_instance_count).await {
                    failure = Some(format!("variant {}: {e}", v.live.name));
                }
            }
        }
        let finished = match failure {
            None => {
                publish_weights(&endpoints_state, desired.clone(), EndpointStatus::Updating);
                for v in &desired.variants {
                    if v.desired_instance_count < v.live.pool.stats().instances {
                        // Shrinking cannot fail: it only stops routing to the surplus.
                        let _ = v.live.pool.resize(v.desired_instance_count).await;
                    }
                }
                let mut done = desired.clone();
                for v in &mut done.variants {
                    v.current_weight = v.desired_weight;
                }
                done
            }
            Some(reason) => {
                tracing::error!(endpoint = %desired.name, %reason, "capacity update failed; keeping the old weights");
                let mut back = desired.clone();
                for v in &mut back.variants {
                    v.desired_weight = v.current_weight;
                    v.desired_instance_count = v.live.pool.stats().instances;
                }
                back
            }
        };
        let mut finished = finished;
        finished.status = EndpointStatus::InService;
        finished.modified = SystemTime::now();
        tracing::info!(endpoint = %finished.name, "endpoint InService");
        endpoints_state.endpoints.publish(finished);
    });
    Ok(json!({ "EndpointArn": arn }))
}

/// Route by the desired weights from now on.
fn publish_weights(state: &AppState, mut snapshot: EndpointSnapshot, status: EndpointStatus) {
    for v in &mut snapshot.variants {
        v.current_weight = v.desired_weight;
    }
    snapshot.status = status;
    state.endpoints.publish(snapshot);
}
