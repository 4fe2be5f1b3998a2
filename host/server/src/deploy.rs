//! Changing endpoints without a restart and without a failed request: creating them
//! (CreateEndpoint), swapping their endpoint config (UpdateEndpoint: variants added,
//! replaced or removed), changing weights and instance counts
//! (UpdateEndpointWeightsAndCapacities), deleting them, and bringing them back after a
//! restart.
//!
//! New instances are always built and warmed before they take traffic; the switch is one
//! snapshot publish; instances that leave finish their in-flight requests first. Every state
//! an endpoint reaches is committed to the store before it is published, so after a crash
//! the endpoint comes back as last committed: never a half-applied mix.

use crate::api::AppState;
use crate::catalog::Unresolved;
use crate::endpoints::{
    now, variant_spec, EndpointSnapshot, EndpointStatus, LiveVariant, VariantState,
};
use crate::shadows::Shadow;
use crate::store::{EndpointRecord, StoreError, VariantCapacity};
use plinth_policy::capacity::{self, Capacity, Change};
use plinth_policy::rollout::DeploymentConfig;
use plinth_runtime::VariantPool;
use std::sync::Arc;

/// Why a change was refused before anything happened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("Could not find endpoint \"{0}\".")]
    NoEndpoint(String),
    #[error("Cannot update in-progress endpoint \"{0}\".")]
    InProgress(String),
    #[error("Cannot create already existing endpoint \"{0}\".")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Limit(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Write `snapshot` to the store with an event saying what changed, then publish it.
pub(crate) fn commit(
    state: &AppState,
    snapshot: EndpointSnapshot,
    message: &str,
) -> Result<(), StoreError> {
    let event = event(&snapshot, message);
    state
        .store
        .put_endpoint_with_event(&snapshot.record(), &event)?;
    log_event(&snapshot, message);
    state.endpoints.publish(snapshot);
    Ok(())
}

/// [`commit`] from a background task: a store failure is logged, and the endpoint is
/// still published so that it serves what was built.
pub(crate) fn commit_logged(state: &AppState, snapshot: EndpointSnapshot, message: &str) {
    let name = snapshot.name.clone();
    if let Err(e) = commit(state, snapshot.clone(), message) {
        tracing::error!(endpoint = %name, error = %e, "cannot commit the endpoint's state");
        state.endpoints.publish(snapshot);
    }
}

/// An endpoint event (`ListEndpointEvents`): the state it reached, and why.
fn event(snapshot: &EndpointSnapshot, message: &str) -> serde_json::Value {
    let mut event = serde_json::json!({
        "EventTime": now(),
        "EndpointName": snapshot.name,
        "EndpointStatus": snapshot.status.as_str(),
        "EndpointConfigName": snapshot.config_name,
        "Message": message,
    });
    if let Some(pending) = &snapshot.pending_config {
        event["PendingEndpointConfigName"] = pending.as_str().into();
    }
    if let Some(new) = &snapshot.new_fleet {
        event["NewFleetTrafficPercent"] = (new.share * 100.0).into();
        event["DeploymentPhase"] = new.phase.as_str().into();
    }
    event
}

fn log_event(snapshot: &EndpointSnapshot, message: &str) {
    tracing::info!(
        endpoint = %snapshot.name,
        config = %snapshot.config_name,
        status = snapshot.status.as_str(),
        pending = ?snapshot.pending_config,
        share = ?snapshot.new_fleet.as_ref().map(|n| n.share),
        "{message}"
    );
}

fn existing(state: &AppState, name: &str) -> Result<Arc<EndpointSnapshot>, Refused> {
    state
        .endpoints
        .get(name)
        .ok_or_else(|| Refused::NoEndpoint(crate::control::arn("endpoint", name)))
}

fn in_service(state: &AppState, name: &str) -> Result<Arc<EndpointSnapshot>, Refused> {
    let endpoint = existing(state, name)?;
    if endpoint.status != EndpointStatus::InService {
        return Err(Refused::InProgress(crate::control::arn("endpoint", name)));
    }
    Ok(endpoint)
}

/// Instances an endpoint holds or is about to: its variants' desired counts, plus the
/// config it is being created with or is moving to.
fn instances_of(state: &AppState, endpoint: &EndpointSnapshot) -> usize {
    let held: usize = endpoint
        .variants
        .iter()
        .map(|v| v.desired_instance_count)
        .chain(endpoint.shadows.iter().map(|s| s.desired_instance_count))
        .sum();
    let coming = match (endpoint.status, &endpoint.pending_config) {
        (EndpointStatus::Creating, _) => Some(&endpoint.config_name),
        (_, Some(pending)) => Some(pending),
        _ => None,
    };
    let coming = coming.map_or(0, |config| {
        let catalog = state.catalog.lock().unwrap_or_else(|e| e.into_inner());
        catalog.configs.get(config).map_or(0, |c| {
            c.definition
                .production_variants
                .iter()
                .chain(&c.definition.shadow_production_variants)
                .map(|v| v.initial_instance_count as usize)
                .sum()
        })
    });
    held + coming
}

/// Refuse a change that would take the server past its instance limit.
fn check_instances(state: &AppState, endpoint: &str, wanted: usize) -> Result<(), Refused> {
    let others: usize = state
        .endpoints
        .all()
        .values()
        .filter(|e| e.name != endpoint)
        .map(|e| instances_of(state, e))
        .sum();
    if others + wanted > state.max_instances {
        return Err(Refused::Limit(format!(
            "The request for {wanted} instances for endpoint {endpoint} would bring the \
             server's total to {}, above its limit of {} instances.",
            others + wanted,
            state.max_instances
        )));
    }
    Ok(())
}

/// The config `name` from the catalog, with the instance count it asks for.
fn lookup(state: &AppState, name: &str) -> Result<(Unresolved, usize), Refused> {
    let catalog = state.catalog.lock().unwrap_or_else(|e| e.into_inner());
    if !catalog.configs.contains_key(name) {
        return Err(Refused::Invalid(format!(
            "Could not find endpoint configuration \"{}\".",
            crate::control::arn("endpoint-config", name)
        )));
    }
    let unresolved = catalog.unresolved(name).map_err(Refused::Invalid)?;
    let instances = unresolved
        .variants_unchecked()
        .iter()
        .chain(&unresolved.shadows_unchecked())
        .map(|v| v.instance_count)
        .sum();
    Ok((unresolved, instances))
}

/// Resolve artifacts (unpacking archives) and build every variant and shadow of `config`,
/// reusing `reuse`'s warm pools where name, model and settings are unchanged (none, for a
/// blue/green fleet). `capacities` override the config's weights and instance counts (from a
/// committed weight update, or a rolling update's first batch).
pub(crate) async fn build(
    state: &Arc<AppState>,
    endpoint: &str,
    config: Unresolved,
    reuse: &[Arc<LiveVariant>],
    capacities: &[VariantCapacity],
) -> Result<Built, String> {
    let experiment = config.experiment();
    let artifacts = state.artifacts.clone();
    let resolved = tokio::task::spawn_blocking(move || config.resolve(&artifacts))
        .await
        .map_err(|e| e.to_string())??;
    let config = resolved.config;
    let mut variants = Vec::new();
    for v in &config.variants {
        let mut v = v.clone();
        if let Some(c) = capacities.iter().find(|c| c.variant == v.name) {
            v.weight = c.weight;
            v.instance_count = c.instance_count;
        }
        let live = live_variant(state, endpoint, &v, reuse).await?;
        variants.push(VariantState {
            live,
            current_weight: v.weight,
            desired_weight: v.weight,
            desired_instance_count: v.instance_count,
        });
    }
    let mut shadows = Vec::new();
    for (v, sampling) in &resolved.shadows {
        let live = live_variant(state, endpoint, v, reuse).await?;
        shadows.push(Shadow::start(
            endpoint,
            live,
            *sampling,
            v.weight,
            v.instance_count,
            &state.metrics,
        ));
    }
    let experiment = experiment.map(|e| {
        let names = variants.iter().map(|v| v.live.name.clone()).collect();
        state.experiments.start(endpoint, &config.name, e, names)
    });
    Ok(Built {
        config_name: config.name,
        variants,
        experiment,
        shadows,
    })
}

/// A warm pool for variant `v`: one of `reuse` if its name, model and settings match
/// (resized to `v`'s instance count), else a new one.
async fn live_variant(
    state: &Arc<AppState>,
    endpoint: &str,
    v: &plinth_policy::config::Variant,
    reuse: &[Arc<LiveVariant>],
) -> Result<Arc<LiveVariant>, String> {
    let kept = reuse.iter().find(|old| {
        old.name == v.name
            && old.model == v.model
            && old.pool.routing() == v.routing_strategy
            && old.max_queue_length == v.max_queue_length
            && old.max_batch_size == v.max_batch_size
    });
    if let Some(old) = kept {
        old.pool
            .resize(v.instance_count)
            .await
            .map_err(|e| format!("variant {}: {e}", v.name))?;
        return Ok(old.clone());
    }
    let name_header = axum::http::HeaderValue::from_str(&v.name)
        .map_err(|_| format!("variant name {:?} cannot be sent in a header", v.name))?;
    let runtime = state.runtime.clone();
    let spec = variant_spec(endpoint, v);
    // Compiling blocks: build the pool on a blocking thread.
    let handle = tokio::runtime::Handle::current();
    let pool =
        tokio::task::spawn_blocking(move || handle.block_on(VariantPool::new(&runtime, &spec)))
            .await
            .map_err(|e| format!("variant {}: {e}", v.name))?
            .map_err(|e| format!("variant {}, model {}: {e}", v.name, v.model.name))?;
    Ok(Arc::new(LiveVariant {
        name: v.name.clone(),
        name_header,
        model_name: v.model.name.clone(),
        model: v.model.clone(),
        max_queue_length: v.max_queue_length,
        max_batch_size: v.max_batch_size,
        pool: Arc::new(pool),
        metrics: state.metrics.variant(endpoint, &v.name),
        recent: Default::default(),
    }))
}

/// A config's variants and shadows, built, and its experiment.
pub(crate) struct Built {
    pub(crate) config_name: String,
    pub(crate) variants: Vec<VariantState>,
    pub(crate) experiment: Option<Arc<crate::experiments::Experiment>>,
    pub(crate) shadows: Vec<Arc<Shadow>>,
}

/// Every warm pool of an endpoint that a new config may keep: its variants' and shadows'.
fn warm(endpoint: &EndpointSnapshot) -> Vec<Arc<LiveVariant>> {
    endpoint
        .variants
        .iter()
        .map(|v| v.live.clone())
        .chain(endpoint.shadows.iter().map(|s| s.live.clone()))
        .collect()
}

/// CreateEndpoint: the endpoint is `Creating` when this returns; it is built in the
/// background and becomes `InService`, or `Failed` with the reason. A `DeploymentConfig` is
/// checked and kept for later updates (`RetainDeploymentConfig`), as in SageMaker.
pub(crate) fn create_endpoint(
    state: &Arc<AppState>,
    name: &str,
    config_name: &str,
    deployment: Option<DeploymentConfig>,
) -> Result<(), Refused> {
    let arn = crate::control::arn("endpoint", name);
    if state
        .endpoints
        .all()
        .keys()
        .any(|n| n.eq_ignore_ascii_case(name))
    {
        return Err(Refused::Exists(arn));
    }
    let (config, instances) = lookup(state, config_name)?;
    if let Some(deployment) = &deployment {
        crate::rollout::check(state, deployment, &config)?;
    }
    check_instances(state, name, instances)?;
    let t = now();
    let snapshot = EndpointSnapshot {
        name: name.to_string(),
        config_name: config_name.to_string(),
        pending_config: None,
        status: EndpointStatus::Creating,
        failure_reason: None,
        created: t,
        modified: t,
        variants: Vec::new(),
        experiment: None,
        shadows: Vec::new(),
        new_fleet: None,
        deployment_config: deployment,
    };
    state
        .store
        .insert_endpoint(&snapshot.record())
        .map_err(|e| match e {
            StoreError::Exists(_) => Refused::Exists(arn),
            e => e.into(),
        })?;
    state.endpoints.publish(snapshot.clone());
    record_event(state, &snapshot, "Creating the endpoint");
    spawn_create(state, snapshot, config, Vec::new(), None, false);
    Ok(())
}

/// Record an event for a state that was committed (or needs no commit).
fn record_event(state: &AppState, snapshot: &EndpointSnapshot, message: &str) {
    log_event(snapshot, message);
    if let Err(e) = state
        .store
        .put_event(&snapshot.name, &event(snapshot, message))
    {
        tracing::error!(endpoint = %snapshot.name, error = %e, "cannot record the event");
    }
}

/// Build a `Creating` endpoint in the background. `note` becomes its `FailureReason` when
/// it comes up (a restart's explanation). When `restoring` an endpoint after a restart, a
/// failure is published but not committed, so that the next start tries again (a missing
/// file may come back).
fn spawn_create(
    state: &Arc<AppState>,
    mut snapshot: EndpointSnapshot,
    config: Unresolved,
    capacities: Vec<VariantCapacity>,
    note: Option<String>,
    restoring: bool,
) {
    let state = state.clone();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let message = match build(&state, &snapshot.name, config, &[], &capacities).await {
            Ok(built) => {
                snapshot.variants = built.variants;
                snapshot.experiment = built.experiment;
                snapshot.shadows = built.shadows;
                snapshot.status = EndpointStatus::InService;
                snapshot.failure_reason = note;
                format!(
                    "Endpoint in service on {} (built in {} ms)",
                    snapshot.config_name,
                    started.elapsed().as_millis()
                )
            }
            Err(reason) => {
                snapshot.status = EndpointStatus::Failed;
                snapshot.failure_reason = Some(reason.clone());
                if restoring {
                    tracing::error!(endpoint = %snapshot.name, reason = ?snapshot.failure_reason, "cannot restore the endpoint; it is Failed until the next start");
                    state.endpoints.publish(snapshot);
                    return;
                }
                format!("Endpoint failed: {reason}")
            }
        };
        snapshot.modified = now();
        commit_logged(&state, snapshot, &message);
    });
}

/// UpdateEndpoint: serve config `config_name` from now on. Returns once the endpoint is
/// `Updating`.
///
/// With a `DeploymentConfig` (given, or the last one retained) the update is a blue/green
/// or rolling deployment ([`crate::rollout`]). Without one, every variant moves at once: a
/// variant whose name, model and settings are unchanged keeps its warm instances (resized
/// if its count changed); others get a new pool, built and warmed before the switch. If
/// any new pool fails to start, the old config keeps serving and the endpoint reports the
/// failure in `FailureReason`.
pub(crate) fn update_endpoint(
    state: &Arc<AppState>,
    name: &str,
    config_name: &str,
    deployment: Option<DeploymentConfig>,
    retain_deployment: bool,
) -> Result<(), Refused> {
    let endpoint = in_service(state, name)?;
    let (config, instances) = lookup(state, config_name)?;
    let deployment = deployment.or_else(|| {
        retain_deployment
            .then(|| endpoint.deployment_config.clone())
            .flatten()
    });
    let plan = deployment
        .as_ref()
        .map(|d| crate::rollout::check(state, d, &config))
        .transpose()?;
    check_instances(state, name, instances)?;
    if let (Some(deployment), Some(plan)) = (deployment, plan) {
        return crate::rollout::start(state, &endpoint, config, deployment, plan);
    }
    let mut updating = EndpointSnapshot::clone(&endpoint);
    updating.status = EndpointStatus::Updating;
    updating.pending_config = Some(config_name.to_string());
    updating.failure_reason = None;
    updating.modified = now();
    commit(
        state,
        updating.clone(),
        &format!("Updating to endpoint configuration {config_name}, all at once"),
    )?;
    let state = state.clone();
    tokio::spawn(async move {
        let mut next = updating.clone();
        next.pending_config = None;
        next.status = EndpointStatus::InService;
        next.modified = now();
        let message = match build(&state, &updating.name, config, &warm(&updating), &[]).await {
            Ok(built) => {
                next.config_name = built.config_name;
                next.variants = built.variants;
                next.experiment = built.experiment;
                next.shadows = built.shadows;
                format!("Update complete: in service on {}", next.config_name)
            }
            Err(reason) => {
                tracing::error!(endpoint = %updating.name, %reason, "update failed; the previous endpoint config keeps serving");
                next.failure_reason = Some(reason.clone());
                format!(
                    "Update failed, {} keeps serving: {reason}",
                    next.config_name
                )
            }
        };
        commit_logged(&state, next, &message);
    });
    Ok(())
}

/// UpdateEndpointWeightsAndCapacities. Weight-only changes take effect before this returns.
/// Capacity changes move the endpoint to `Updating`: new instances are started and warmed
/// first, then the new weights are published, then surplus instances drain; then
/// `InService`. The desired values are committed first, so a restart comes back with them.
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
    check_instances(state, name, next.iter().map(|n| n.instance_count).sum())?;

    let mut desired = EndpointSnapshot::clone(&endpoint);
    for (v, n) in desired.variants.iter_mut().zip(&next) {
        v.desired_weight = n.weight;
        v.desired_instance_count = n.instance_count;
    }
    desired.modified = now();
    desired.failure_reason = None;
    let resizes = current
        .iter()
        .zip(&next)
        .any(|(c, n)| c.instance_count != n.instance_count);
    let summary = next
        .iter()
        .map(|n| format!("{} weight {} x{}", n.variant, n.weight, n.instance_count))
        .collect::<Vec<_>>()
        .join(", ");
    if !resizes {
        commit(
            state,
            with_desired_weights(desired),
            &format!("Weights changed: {summary}"),
        )?;
        return Ok(());
    }

    desired.status = EndpointStatus::Updating;
    commit(
        state,
        desired.clone(),
        &format!("Changing weights and instance counts: {summary}"),
    )?;
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
            back.status = EndpointStatus::InService;
            back.failure_reason = Some(reason.clone());
            back.modified = now();
            commit_logged(&state, back, &format!("Capacity change failed: {reason}"));
            return;
        }
        let switched = with_desired_weights(desired);
        state.endpoints.publish(switched.clone());
        for v in &switched.variants {
            if v.desired_instance_count < v.live.pool.stats().instances {
                // Shrinking cannot fail: it only stops routing to the surplus.
                let _ = v.live.pool.resize(v.desired_instance_count).await;
            }
        }
        let mut done = switched;
        done.status = EndpointStatus::InService;
        done.modified = now();
        commit_logged(&state, done, "Capacity change complete");
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

/// DeleteEndpoint: gone from the store and the table at once; its instances finish their
/// in-flight requests and are dropped. Refused while a change is in progress.
pub(crate) fn delete_endpoint(state: &AppState, name: &str) -> Result<(), Refused> {
    let endpoint = existing(state, name)?;
    if endpoint.status.in_progress() {
        return Err(Refused::Invalid(format!(
            "Cannot delete endpoint \"{}\" while it is {}; wait for it to finish.",
            crate::control::arn("endpoint", name),
            endpoint.status.as_str()
        )));
    }
    state.store.delete_endpoint(&endpoint.name)?;
    state.endpoints.remove(&endpoint.name);
    tracing::info!(endpoint = %name, "endpoint deleted");
    Ok(())
}

/// Bring back every stored endpoint after a start: a `Failed` one stays failed; any other
/// is rebuilt on its committed config with its committed weights and instance counts. An
/// update that a restart interrupted is abandoned (the old config serves) and says so.
pub(crate) fn recover(state: &Arc<AppState>, records: Vec<EndpointRecord>) {
    for record in records {
        let status = EndpointStatus::parse(&record.status).unwrap_or(EndpointStatus::Creating);
        let mut snapshot = EndpointSnapshot {
            name: record.name.clone(),
            config_name: record.config_name.clone(),
            pending_config: None,
            status,
            failure_reason: record.failure_reason.clone(),
            created: record.created,
            modified: record.modified,
            variants: Vec::new(),
            experiment: None,
            shadows: Vec::new(),
            new_fleet: None,
            deployment_config: record.deployment_config.clone(),
        };
        if status == EndpointStatus::Failed {
            state.endpoints.publish(snapshot);
            continue;
        }
        let note = match &record.pending_config {
            Some(pending) => Some(format!(
                "The update to endpoint configuration {pending} was interrupted by a restart \
                 and rolled back; the endpoint serves {}. Call UpdateEndpoint again.",
                record.config_name
            )),
            None => record.failure_reason.clone(),
        };
        snapshot.status = EndpointStatus::Creating;
        let config = match lookup(state, &record.config_name) {
            Ok((config, _)) => config,
            Err(e) => {
                snapshot.status = EndpointStatus::Failed;
                snapshot.failure_reason = Some(e.to_string());
                state.endpoints.publish(snapshot);
                continue;
            }
        };
        state.endpoints.publish(snapshot.clone());
        record_event(
            state,
            &snapshot,
            &match &record.pending_config {
                Some(pending) => format!(
                    "Restarted during the update to {pending}: rolling back to {}",
                    record.config_name
                ),
                None => format!(
                    "Restarted: restoring the endpoint on {}",
                    record.config_name
                ),
            },
        );
        spawn_create(state, snapshot, config, record.capacities, note, true);
    }
}

/// Wait until no endpoint is `Creating` or `Updating`.
pub(crate) async fn settled(state: &AppState) {
    while state
        .endpoints
        .all()
        .values()
        .any(|e| e.status.in_progress())
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
