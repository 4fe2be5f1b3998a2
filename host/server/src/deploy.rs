//! Changing what a live endpoint serves, without a restart and without a failed request:
//! swapping its endpoint config (UpdateEndpoint: variants added, replaced or removed) and
//! changing weights and instance counts (UpdateEndpointWeightsAndCapacities).
//!
//! New instances are always built and warmed before they take traffic; the switch is one
//! snapshot publish; instances that leave finish their in-flight requests first.

use crate::api::AppState;
use crate::endpoints::{variant_spec, EndpointSnapshot, EndpointStatus, LiveVariant, VariantState};
use plinth_policy::capacity::{self, Capacity, Change};
use plinth_policy::config::EndpointConfig;
use plinth_runtime::VariantPool;
use std::sync::Arc;
use std::time::SystemTime;

/// Why a change was refused before anything happened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("Could not find endpoint \"{0}\".")]
    NoEndpoint(String),
    #[error("Cannot update in-progress endpoint \"{0}\".")]
    InProgress(String),
    #[error("{0}")]
    Invalid(String),
}

fn in_service(state: &AppState, name: &str) -> Result<Arc<EndpointSnapshot>, Refused> {
    let endpoint = state
        .endpoints
        .get(name)
        .ok_or_else(|| Refused::NoEndpoint(crate::control::endpoint_arn(name)))?;
    if endpoint.status != EndpointStatus::InService {
        return Err(Refused::InProgress(crate::control::endpoint_arn(name)));
    }
    Ok(endpoint)
}

/// Mark an endpoint `Updating` (same variants, same weights).
fn mark_updating(state: &AppState, endpoint: &EndpointSnapshot) {
    let mut updating = endpoint.clone();
    updating.status = EndpointStatus::Updating;
    updating.failure_reason = None;
    updating.modified = SystemTime::now();
    state.endpoints.publish(updating);
}

/// Publish an endpoint back `InService`.
fn finish(state: &AppState, mut snapshot: EndpointSnapshot, failure: Option<String>) {
    snapshot.status = EndpointStatus::InService;
    snapshot.failure_reason = failure;
    snapshot.modified = SystemTime::now();
    tracing::info!(endpoint = %snapshot.name, config = %snapshot.config_name, failure = ?snapshot.failure_reason, "endpoint InService");
    state.endpoints.publish(snapshot);
}

/// UpdateEndpoint: serve `config` from now on. Returns once the endpoint is `Updating`; the
/// new variants are built in the background. A variant whose name, model and settings are
/// unchanged keeps its warm instances (resized if its count changed); others get a new
/// pool. If any new pool fails to start, the old config keeps serving and the endpoint
/// reports the failure in `FailureReason`.
pub(crate) fn update_endpoint(
    state: &Arc<AppState>,
    name: &str,
    config: EndpointConfig,
) -> Result<(), Refused> {
    let endpoint = in_service(state, name)?;
    mark_updating(state, &endpoint);
    let state = state.clone();
    tokio::spawn(async move {
        let mut variants = Vec::new();
        let mut failure = None;
        for v in &config.variants {
            let kept = endpoint.variants.iter().find(|old| {
                old.live.name == v.name
                    && old.live.model == v.model
                    && old.live.pool.routing() == v.routing_strategy
                    && old.live.max_queue_length == v.max_queue_length
            });
            let live = match kept {
                Some(old) => {
                    if let Err(e) = old.live.pool.resize(v.instance_count).await {
                        failure = Some(format!("variant {}: {e}", v.name));
                        break;
                    }
                    old.live.clone()
                }
                None => {
                    let runtime = state.runtime.clone();
                    let spec = variant_spec(&endpoint.name, v);
                    match tokio::task::spawn_blocking(move || VariantPool::new(&runtime, &spec))
                        .await
                    {
                        Ok(Ok(pool)) => Arc::new(LiveVariant {
                            name: v.name.clone(),
                            model_name: v.model.name.clone(),
                            model: v.model.clone(),
                            max_queue_length: v.max_queue_length,
                            pool: Arc::new(pool),
                        }),
                        Ok(Err(e)) => {
                            failure =
                                Some(format!("variant {}, model {}: {e}", v.name, v.model.name));
                            break;
                        }
                        Err(e) => {
                            failure = Some(format!("variant {}: {e}", v.name));
                            break;
                        }
                    }
                }
            };
            variants.push(VariantState {
                live,
                current_weight: v.weight,
                desired_weight: v.weight,
                desired_instance_count: v.instance_count,
            });
        }
        match failure {
            None => {
                let mut next = EndpointSnapshot::clone(&endpoint);
                next.config_name = config.name.clone();
                next.variants = variants;
                finish(&state, next, None);
            }
            Some(reason) => {
                tracing::error!(endpoint = %endpoint.name, %reason, "update failed; the previous endpoint config keeps serving");
                finish(&state, EndpointSnapshot::clone(&endpoint), Some(reason));
            }
        }
    });
    Ok(())
}

/// UpdateEndpointWeightsAndCapacities. Weight-only changes take effect before this returns.
/// Capacity changes move the endpoint to `Updating`: new instances are started and warmed
/// first, then the new weights are published, then surplus instances drain; then
/// `InService`.
pub(crate) fn update_weights_and_capacities(
    state: &Arc<AppState>,
    name: &str,
    changes: &[Change],
) -> Result<(), Refused> {
    let endpoint = in_service(state, name)?;
    let current: Vec<Capacity> = endpoint
        .variants
        .iter()
        .map(|v| Capacity {
            variant: v.live.name.clone(),
            weight: v.current_weight,
            instance_count: v.live.pool.stats().instances,
        })
        .collect();
    let next = capacity::apply(&current, changes).map_err(Refused::Invalid)?;

    let mut desired = EndpointSnapshot::clone(&endpoint);
    for (v, n) in desired.variants.iter_mut().zip(&next) {
        v.desired_weight = n.weight;
        v.desired_instance_count = n.instance_count;
    }
    desired.modified = SystemTime::now();
    desired.failure_reason = None;
    let resizes = current
        .iter()
        .zip(&next)
        .any(|(c, n)| c.instance_count != n.instance_count);
    if !resizes {
        state.endpoints.publish(with_desired_weights(desired));
        return Ok(());
    }

    desired.status = EndpointStatus::Updating;
    state.endpoints.publish(desired.clone());
    let state = state.clone();
    tokio::spawn(async move {
        // Grow first, so that new weights never route to instances that do not exist yet.
        let mut failure = None;
        for v in &desired.variants {
            if v.desired_instance_count > v.live.pool.stats().instances {
                if let Err(e) = v.live.pool.resize(v.desired_instance_count).await {
                    failure = Some(format!("variant {}: {e}", v.live.name));
                }
            }
        }
        if let Some(reason) = failure {
            let mut back = desired.clone();
            for v in &mut back.variants {
                v.desired_weight = v.current_weight;
                v.desired_instance_count = v.live.pool.stats().instances;
            }
            finish(&state, back, Some(reason));
            return;
        }
        let mut switched = with_desired_weights(desired);
        state.endpoints.publish(switched.clone());
        for v in &switched.variants {
            if v.desired_instance_count < v.live.pool.stats().instances {
                // Shrinking cannot fail: it only stops routing to the surplus.
                let _ = v.live.pool.resize(v.desired_instance_count).await;
            }
        }
        switched.status = EndpointStatus::InService;
        finish(&state, switched, None);
    });
    Ok(())
}

/// Route by the desired weights from now on.
fn with_desired_weights(mut snapshot: EndpointSnapshot) -> EndpointSnapshot {
    for v in &mut snapshot.variants {
        v.current_weight = v.desired_weight;
    }
    snapshot
}
