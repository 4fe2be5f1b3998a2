//! Changing endpoints without a restart and without a failed request: creating them
//! (CreateEndpoint), swapping their endpoint config (UpdateEndpoint: variants added,
//! replaced or removed), changing weights and instance counts
//! (UpdateEndpointWeightsAndCapacities), deleting them (also while a change is in
//! progress: the change is cancelled), and bringing them back after a restart (each in the
//! background, on its own).
//!
//! New instances are always built and warmed before they take traffic; the switch is one
//! snapshot publish; instances that leave finish their in-flight requests first. Every state
//! an endpoint reaches is committed to the store before it is published, so after a crash
//! the endpoint comes back as last committed: never a half-applied mix. The work runs in
//! background [`Job`]s: guarded (a panic settles the endpoint instead of leaving it
//! `Creating` or `Updating`) and cancellable (DeleteEndpoint).

use super::assemble::{
    build, check_instances, commit, event, existing, in_service, log_event, lookup, warm, Refused,
};
use super::background::Job;
use super::deployer::Fleet;
use super::table::{EndpointSnapshot, EndpointStatus};
use super::variant::LiveVariant;
use crate::state::catalog::Unresolved;
use crate::state::now;
use crate::state::store::{EndpointRecord, StoreError, VariantCapacity};
use plinth_policy::capacity::{self, Capacity, Change, ServerlessCapacity};
use plinth_policy::rollout::DeploymentConfig;
use std::sync::Arc;

/// CreateEndpoint: the endpoint is `Creating` when this returns; it is built in the
/// background and becomes `InService`, or `Failed` with the reason. A `DeploymentConfig` is
/// checked and kept for later updates (`RetainDeploymentConfig`), as in SageMaker.
pub(crate) fn create_endpoint(
    state: &Arc<Fleet>,
    name: &str,
    config_name: &str,
    deployment: Option<DeploymentConfig>,
) -> Result<(), Refused> {
    let arn = crate::state::arn("endpoint", name);
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
        crate::fleet::rollout_driver::check(state, deployment, &config)?;
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
        capture: None,
        new_fleet: None,
        deployment_config: deployment,
    };
    state
        .stored
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
fn record_event(state: &Fleet, snapshot: &EndpointSnapshot, message: &str) {
    log_event(snapshot, message);
    if let Err(e) = state
        .stored
        .store
        .put_event(&snapshot.name, &event(snapshot, message))
    {
        tracing::error!(endpoint = %snapshot.name, error = %e, "cannot record the event");
    }
}

/// Build a `Creating` endpoint in the background. `note` becomes its `FailureReason` when
/// it comes up (a restart's explanation). When `restoring` an endpoint after a restart, a
/// failure is published but not committed, so that the next start tries again (a missing
/// file may come back). A panic in the task fails the endpoint the same way, with the
/// panic's message.
fn spawn_create(
    state: &Arc<Fleet>,
    snapshot: EndpointSnapshot,
    config: Unresolved,
    capacities: Vec<VariantCapacity>,
    note: Option<String>,
    restoring: bool,
) {
    let job = Job::claim(state, &snapshot.name);
    let creating = snapshot.clone();
    let work = {
        let job = job.clone();
        async move {
            let started = std::time::Instant::now();
            match build(job.state(), &snapshot.name, config, &[], &capacities).await {
                Ok(built) => {
                    let mut snapshot = snapshot;
                    snapshot.variants = built.variants;
                    snapshot.experiment = built.experiment;
                    snapshot.shadows = built.shadows;
                    snapshot.capture = built.capture;
                    snapshot.status = EndpointStatus::InService;
                    snapshot.failure_reason = note;
                    snapshot.modified = now();
                    let message = format!(
                        "Endpoint in service on {} (built in {} ms)",
                        snapshot.config_name,
                        started.elapsed().as_millis()
                    );
                    job.commit(snapshot, &message).await;
                }
                Err(reason) => fail(&job, snapshot, reason, restoring).await,
            }
        }
    };
    job.spawn(work, move |job, panic| async move {
        let what = if restoring {
            "restoring the endpoint after a restart"
        } else {
            "creating the endpoint"
        };
        let reason = format!("The task {what} panicked: {panic}");
        fail(&job, creating, reason, restoring).await;
    });
}

/// A `Creating` endpoint could not be built: `Failed` with `reason` (committed, or only
/// published when `restoring`).
async fn fail(job: &Job, mut snapshot: EndpointSnapshot, reason: String, restoring: bool) {
    snapshot.status = EndpointStatus::Failed;
    snapshot.failure_reason = Some(reason.clone());
    snapshot.modified = now();
    if restoring {
        tracing::error!(endpoint = %snapshot.name, %reason, "cannot restore the endpoint; it is Failed until the next start");
        job.publish(snapshot).await;
    } else {
        job.commit(snapshot, &format!("Endpoint failed: {reason}"))
            .await;
    }
}

/// UpdateEndpoint: serve config `config_name` from now on. Returns once the endpoint is
/// `Updating`.
///
/// With a `DeploymentConfig` (given, or the last one retained) the update is a blue/green
/// or rolling deployment ([`crate::fleet::rollout_driver`]). Without one, every variant moves at once: a
/// variant whose name, model and settings are unchanged keeps its warm instances (resized
/// if its count changed); others get a new pool, built and warmed before the switch. If
/// any new pool fails to start, the old config keeps serving and the endpoint reports the
/// failure in `FailureReason`.
pub(crate) fn update_endpoint(
    state: &Arc<Fleet>,
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
    if deployment.is_some() {
        if let Some(v) = endpoint
            .variants
            .iter()
            .find(|v| v.live.serving.elastic().is_some())
        {
            return Err(crate::fleet::rollout_driver::serverless_refused(
                &v.live.name,
            ));
        }
    }
    let plan = deployment
        .as_ref()
        .map(|d| crate::fleet::rollout_driver::check(state, d, &config))
        .transpose()?;
    check_instances(state, name, instances)?;
    if let (Some(deployment), Some(plan)) = (deployment, plan) {
        return crate::fleet::rollout_driver::start(state, &endpoint, config, deployment, plan);
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
    let job = Job::claim(state, name);
    let before = updating.clone();
    let work = {
        let job = job.clone();
        async move {
            let mut next = updating.clone();
            next.pending_config = None;
            next.status = EndpointStatus::InService;
            let reuse = warm(&updating);
            let message = match build(job.state(), &updating.name, config, &reuse, &[]).await {
                Ok(built) => {
                    next.config_name = built.config_name;
                    next.variants = built.variants;
                    next.experiment = built.experiment;
                    next.shadows = built.shadows;
                    next.capture = built.capture;
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
            next.modified = now();
            job.commit(next, &message).await;
        }
    };
    job.spawn(work, move |job, panic| async move {
        let mut back = before;
        let pending = back.pending_config.take().unwrap_or_default();
        back.status = EndpointStatus::InService;
        back.modified = now();
        let reason = format!(
            "The task updating to endpoint configuration {pending} panicked: {panic}; {} \
             keeps serving",
            back.config_name
        );
        back.failure_reason = Some(reason.clone());
        job.commit(back, &format!("Update failed: {reason}")).await;
    });
    Ok(())
}

/// UpdateEndpointWeightsAndCapacities. Weight-only changes take effect before this returns.
/// Capacity changes move the endpoint to `Updating`: new instances are started and warmed
/// first, then the new weights are published, then surplus instances drain; then
/// `InService`. The desired values are committed first, so a restart comes back with them.
pub(crate) fn update_weights_and_capacities(
    state: &Arc<Fleet>,
    name: &str,
    changes: &[Change],
) -> Result<(), Refused> {
    let endpoint = in_service(state, name)?;
    let queued = super::async_jobs::config_of(state, &endpoint.config_name).is_some();
    let current: Vec<Capacity> = endpoint
        .variants
        .iter()
        .map(|v| Capacity {
            variant: v.live.name.clone(),
            weight: v.current_weight,
            instance_count: v.live.serving.stats().instances,
            serverless: v.live.serving.elastic().map(|e| ServerlessCapacity {
                max_concurrency: e.max_concurrency,
                provisioned_concurrency: e.provisioned,
            }),
            queued,
        })
        .collect();
    let next = capacity::apply(&current, changes).map_err(Refused::Invalid)?;
    check_instances(
        state,
        name,
        next.iter()
            .map(|n| n.serverless.map_or(n.instance_count, |s| s.max_concurrency))
            .sum(),
    )?;
    // Serverless variants whose concurrency changes: applied to their pools at once (more
    // provisioned instances are started, fewer are dropped when idle), then committed.
    let serverless: Vec<(Arc<LiveVariant>, plinth_runtime::Elastic)> = endpoint
        .variants
        .iter()
        .zip(&next)
        .filter_map(|(v, n)| {
            let elastic = v.live.serving.elastic()?;
            let s = n.serverless?;
            let wanted = plinth_runtime::Elastic {
                max_concurrency: s.max_concurrency,
                provisioned: s.provisioned_concurrency,
                ..elastic
            };
            (wanted != elastic).then(|| (v.live.clone(), wanted))
        })
        .collect();

    let mut desired = EndpointSnapshot::clone(&endpoint);
    for (v, n) in desired.variants.iter_mut().zip(&next) {
        v.desired_weight = n.weight;
        v.desired_instance_count = n.instance_count;
    }
    desired.modified = now();
    desired.failure_reason = None;
    let resizes = !serverless.is_empty()
        || current
            .iter()
            .zip(&next)
            .any(|(c, n)| c.serverless.is_none() && c.instance_count != n.instance_count);
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
    let job = Job::claim(state, name);
    let work = {
        let job = job.clone();
        async move {
            // Grow first, so that new weights never route to instances that do not exist yet.
            // Serverless variants size themselves: they get their new concurrency.
            let mut failure = None;
            for (live, wanted) in &serverless {
                if let Some(pool) = live.serving.single() {
                    if let Err(e) = pool.set_elastic(*wanted).await {
                        failure = Some(format!("variant {}: {e}", live.name));
                    }
                }
            }
            for v in desired
                .variants
                .iter()
                .filter(|v| v.live.serving.elastic().is_none())
            {
                if v.desired_instance_count > v.live.serving.stats().instances {
                    if let Err(e) = v.live.serving.resize(v.desired_instance_count).await {
                        failure = Some(format!("variant {}: {e}", v.live.name));
                    }
                }
            }
            if let Some(reason) = failure {
                let back = as_running(desired, reason.clone());
                job.commit(back, &format!("Capacity change failed: {reason}"))
                    .await;
                return;
            }
            let switched = with_desired_weights(desired);
            if !job.publish(switched.clone()).await {
                return;
            }
            for v in switched
                .variants
                .iter()
                .filter(|v| v.live.serving.elastic().is_none())
            {
                if v.desired_instance_count < v.live.serving.stats().instances {
                    // Shrinking cannot fail: it only stops routing to the surplus.
                    let _ = v.live.serving.resize(v.desired_instance_count).await;
                }
            }
            let mut done = switched;
            done.status = EndpointStatus::InService;
            done.modified = now();
            job.commit(done, "Capacity change complete").await;
        }
    };
    job.spawn(work, |job, panic| async move {
        // What serves now: the weights may have switched already.
        let Some(current) = job.state().endpoints.get(job.endpoint()) else {
            return;
        };
        let reason = format!(
            "The task changing weights and instance counts panicked: {panic}; the endpoint \
             keeps the weights and instance counts it runs"
        );
        let back = as_running(EndpointSnapshot::clone(&current), reason.clone());
        job.commit(back, &format!("Capacity change failed: {reason}"))
            .await;
    });
    Ok(())
}

/// `snapshot` settled on what runs, after a failed capacity change: desired weights and
/// instance counts back to the current ones, `InService`, with `reason`.
fn as_running(mut snapshot: EndpointSnapshot, reason: String) -> EndpointSnapshot {
    for v in &mut snapshot.variants {
        v.desired_weight = v.current_weight;
        v.desired_instance_count = v.live.serving.stats().instances;
    }
    snapshot.status = EndpointStatus::InService;
    snapshot.failure_reason = Some(reason);
    snapshot.modified = now();
    snapshot
}

/// Route by the desired weights from now on.
fn with_desired_weights(mut snapshot: EndpointSnapshot) -> EndpointSnapshot {
    for v in &mut snapshot.variants {
        v.current_weight = v.desired_weight;
    }
    snapshot
}

/// DeleteEndpoint: gone from the store and the table at once; its instances finish their
/// in-flight requests and are dropped. Also while it is `Creating`, `Updating` or
/// `RollingBack`: the background task making the change is cancelled first (flagged and
/// aborted), so that it commits nothing more and what it built is dropped. Call it holding
/// `Fleet::changes` (as `ops::call` does): the task checks its flag under that lock.
pub(crate) fn delete_endpoint(state: &Fleet, name: &str) -> Result<(), Refused> {
    let endpoint = existing(state, name)?;
    if state.tasks.cancel(&endpoint.name) {
        tracing::info!(endpoint = %name, status = endpoint.status.as_str(), "deleting the endpoint: its change in progress is cancelled");
    }
    state.stored.store.delete_endpoint(&endpoint.name)?;
    state.endpoints.remove(&endpoint.name);
    tracing::info!(endpoint = %name, "endpoint deleted");
    Ok(())
}

/// Bring back every stored endpoint after a start, without waiting: a `Failed` one stays
/// failed; any other is `Creating` (published, not committed: the store keeps its last
/// committed state, so a crash now restores it again) until its own background task has
/// rebuilt it on its committed config with its committed weights and instance counts
/// (`InService`), or could not (`Failed`, published only: the next start tries again). One
/// slow endpoint delays no other. An update that a restart interrupted is abandoned (the
/// old config serves) and says so.
pub(crate) fn recover(state: &Arc<Fleet>, records: Vec<EndpointRecord>) {
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
            capture: None,
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

/// Wait until none of the endpoints `names` (that exist) is `Creating`, `Updating` or
/// `RollingBack`.
pub(crate) async fn settled(state: &Fleet, names: &[&str]) {
    while names.iter().any(|name| {
        state
            .endpoints
            .get(name)
            .is_some_and(|e| e.status.in_progress())
    }) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
