//! Assembling what an endpoint runs, and making a change visible: resolving a config from
//! the catalog, checking the server's instance limit, building and warming each variant's
//! pool (reusing warm ones that did not change), and committing a snapshot to the store
//! before publishing it. Both plain updates (`deploy`) and deployments (`rollout_driver`)
//! are made of these steps.

use super::deployer::Fleet;
use super::multi_model::{host_memory_bytes, CacheSpec, ModelCache};
use super::pipeline::Pipeline;
use super::shadow_copies::Shadow;
use super::table::{EndpointSnapshot, EndpointStatus, VariantState};
use super::variant::{variant_spec, LiveVariant, Serving};
use crate::state::catalog::Unresolved;
use crate::state::now;
use crate::state::store::{StoreError, VariantCapacity};
use plinth_runtime::{PoolTemplate, VariantPool};
use std::sync::Arc;
use std::time::Duration;

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
    state: &Fleet,
    snapshot: EndpointSnapshot,
    message: &str,
) -> Result<(), StoreError> {
    let event = event(&snapshot, message);
    state
        .stored
        .store
        .put_endpoint_with_event(&snapshot.record(), &event)?;
    log_event(&snapshot, message);
    state.endpoints.publish(snapshot);
    Ok(())
}

/// [`commit`] from a background task: a store failure is logged, and the endpoint is
/// still published so that it serves what was built.
pub(crate) fn commit_logged(state: &Fleet, snapshot: EndpointSnapshot, message: &str) {
    let name = snapshot.name.clone();
    if let Err(e) = commit(state, snapshot.clone(), message) {
        tracing::error!(endpoint = %name, error = %e, "cannot commit the endpoint's state");
        state.endpoints.publish(snapshot);
    }
}

/// An endpoint event (`ListEndpointEvents`): the state it reached, and why.
pub(crate) fn event(snapshot: &EndpointSnapshot, message: &str) -> serde_json::Value {
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

pub(crate) fn log_event(snapshot: &EndpointSnapshot, message: &str) {
    tracing::info!(
        endpoint = %snapshot.name,
        config = %snapshot.config_name,
        status = snapshot.status.as_str(),
        pending = ?snapshot.pending_config,
        share = ?snapshot.new_fleet.as_ref().map(|n| n.share),
        "{message}"
    );
}

pub(crate) fn existing(state: &Fleet, name: &str) -> Result<Arc<EndpointSnapshot>, Refused> {
    state
        .endpoints
        .get(name)
        .ok_or_else(|| Refused::NoEndpoint(crate::state::arn("endpoint", name)))
}

pub(crate) fn in_service(state: &Fleet, name: &str) -> Result<Arc<EndpointSnapshot>, Refused> {
    let endpoint = existing(state, name)?;
    if endpoint.status != EndpointStatus::InService {
        return Err(Refused::InProgress(crate::state::arn("endpoint", name)));
    }
    Ok(endpoint)
}

/// Instances an endpoint holds or is about to: its variants' desired counts (an inference
/// pipeline's for each of its containers), plus the config it is being created with or is
/// moving to.
pub(crate) fn instances_of(state: &Fleet, endpoint: &EndpointSnapshot) -> usize {
    let held: usize = endpoint
        .variants
        .iter()
        .map(|v| {
            v.live
                .serving
                .elastic()
                .map_or(v.desired_instance_count, |e| e.max_concurrency)
                * v.live.serving.containers()
        })
        .chain(
            endpoint
                .shadows
                .iter()
                .map(|s| s.desired_instance_count * s.live.serving.containers()),
        )
        .sum();
    let coming = match (endpoint.status, &endpoint.pending_config) {
        (EndpointStatus::Creating, _) => Some(&endpoint.config_name),
        (_, Some(pending)) => Some(pending),
        _ => None,
    };
    let coming = coming.map_or(0, |config| {
        let catalog = state.catalog();
        catalog.configs.get(config).map_or(0, |c| {
            c.definition
                .production_variants
                .iter()
                .chain(&c.definition.shadow_production_variants)
                .map(|v| {
                    let containers = catalog
                        .models
                        .get(&v.model_name)
                        .map_or(1, |m| m.definition.all_containers().len());
                    v.serverless_config
                        .map_or(v.initial_instance_count, |s| s.max_concurrency)
                        as usize
                        * containers
                })
                .sum()
        })
    });
    held + coming
}

/// Instances held or about to be by every endpoint but `except`, and by the running
/// transform jobs.
pub(crate) fn instances_held(state: &Fleet, except: Option<&str>) -> usize {
    let endpoints: usize = state
        .endpoints
        .all()
        .values()
        .filter(|e| Some(e.name.as_str()) != except)
        .map(|e| instances_of(state, e))
        .sum();
    endpoints + state.transform_jobs.instances()
}

/// Refuse a change that would take the server past its instance limit.
pub(crate) fn check_instances(state: &Fleet, endpoint: &str, wanted: usize) -> Result<(), Refused> {
    let others = instances_held(state, Some(endpoint));
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
pub(crate) fn lookup(state: &Fleet, name: &str) -> Result<(Unresolved, usize), Refused> {
    let catalog = state.catalog();
    if !catalog.configs.contains_key(name) {
        return Err(Refused::Invalid(format!(
            "Could not find endpoint configuration \"{}\".",
            crate::state::arn("endpoint-config", name)
        )));
    }
    let unresolved = catalog.unresolved(name).map_err(Refused::Invalid)?;
    let instances = unresolved
        .variants_unchecked()
        .iter()
        .chain(&unresolved.shadows_unchecked())
        .map(|v| v.reserved_instances())
        .sum();
    Ok((unresolved, instances))
}

/// Resolve artifacts (unpacking archives) and build every variant and shadow of `config`,
/// reusing `reuse`'s warm pools where name, model and settings are unchanged (none, for a
/// blue/green fleet). `capacities` override the config's weights and instance counts (from a
/// committed weight update, or a rolling update's first batch).
pub(crate) async fn build(
    state: &Arc<Fleet>,
    endpoint: &str,
    config: Unresolved,
    reuse: &[Arc<LiveVariant>],
    capacities: &[VariantCapacity],
) -> Result<Built, String> {
    let experiment = config.experiment();
    let capture = config.data_capture();
    // The remote artifacts and components first, all at once (each within its variant's
    // ModelDataDownloadTimeoutInSeconds); a failure names the object and the store's code.
    let wanted = config.remote()?;
    let fetches = wanted.into_iter().map(|w| async move {
        let path = state
            .stored
            .remote
            .local(&w.remote, w.timeout, Some(&w.pin))
            .await?;
        Ok::<_, String>((w, path))
    });
    let fetched = futures::future::try_join_all(fetches).await?;
    let artifacts = state.stored.artifacts.clone();
    let resolved = tokio::task::spawn_blocking(move || config.resolve(&artifacts, &fetched))
        .await
        .map_err(|e| e.to_string())??;
    let config = resolved.config;
    let mut variants = Vec::new();
    for v in &config.variants {
        let mut v = v.clone();
        if let Some(c) = capacities.iter().find(|c| c.variant == v.name) {
            v.weight = c.weight;
            v.instance_count = c.instance_count;
            if let (Some(s), Some((max, provisioned))) = (&mut v.serverless, c.serverless) {
                // A committed ServerlessUpdateConfig.
                s.max_concurrency = max;
                s.provisioned_concurrency = provisioned;
            }
        }
        if let Some(s) = v.serverless {
            // A serverless variant starts with its provisioned instances, whatever ran before.
            v.instance_count = s.provisioned_concurrency;
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
        if let Some(p) = &v.model.pipeline {
            if p.mode == plinth_policy::pipeline::Mode::Direct {
                return Err(format!(
                    "shadow variant {}: model {} is a multi-container model with direct \
                     invocation; a shadow's copies name no container",
                    v.name, v.model.name
                ));
            }
        }
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
    let capture = capture
        .transpose()
        .map_err(|e| format!("endpoint config {}: {e}", config.name))?
        .map(|settings| state.captures.capture(endpoint, &config.name, settings));
    Ok(Built {
        config_name: config.name,
        variants,
        experiment,
        shadows,
        capture,
    })
}

/// A warm pool for variant `v`: one of `reuse` if its name, model and settings match
/// (resized to `v`'s instance count), else a new one.
pub(crate) async fn live_variant(
    state: &Arc<Fleet>,
    endpoint: &str,
    v: &plinth_policy::config::Variant,
    reuse: &[Arc<LiveVariant>],
) -> Result<Arc<LiveVariant>, String> {
    let spec = variant_spec(endpoint, v);
    // The same model with the same settings (routing, and every limit: queue, batch,
    // deadlines, memory...) keeps its warm instances.
    let kept = reuse.iter().find(|old| {
        old.name == v.name
            && old.model == v.model
            && old.serving.routing() == v.routing_strategy
            && *old.serving.limits() == spec.limits
            && old.model_cache_bytes == v.model_cache_bytes
            && old.serving.elastic().is_some() == spec.elastic.is_some()
    });
    if let Some(old) = kept {
        match (&old.serving, spec.elastic) {
            (Serving::Single(pool), Some(elastic)) => pool.set_elastic(elastic).await,
            _ => old.serving.resize(v.instance_count).await,
        }
        .map_err(|e| format!("variant {}: {e}", v.name))?;
        return Ok(old.clone());
    }
    let name_header = axum::http::HeaderValue::from_str(&v.name)
        .map_err(|_| format!("variant name {:?} cannot be sent in a header", v.name))?;
    let runtime = state.runtime.clone();
    let failed =
        |e: plinth_runtime::LoadError| format!("variant {}, model {}: {e}", v.name, v.model.name);
    // Compiling blocks: build the pool on a blocking thread.
    let handle = tokio::runtime::Handle::current();
    let serving = match &v.model.multi_model {
        None if v.model.pipeline.is_some() => {
            let pipeline = v.model.pipeline.clone().expect("a pipeline");
            // Checked at CreateEndpointConfig; the model may have been created again since.
            if spec.elastic.is_some() {
                return Err(format!(
                    "variant {}: model {} is an inference pipeline; serverless variants serve \
                     models with one container",
                    v.name, v.model.name
                ));
            }
            let fleet = state.clone();
            let built = tokio::task::spawn_blocking(move || {
                handle.block_on(Pipeline::build(&runtime, &spec, &pipeline, &fleet.metrics))
            })
            .await
            .map_err(|e| format!("variant {}: {e}", v.name))?
            .map_err(|(hostname, e)| {
                format!(
                    "variant {}, model {}, container {hostname}: {e}",
                    v.name, v.model.name
                )
            })?;
            Serving::Pipeline(Arc::new(built))
        }
        None => {
            let pool = tokio::task::spawn_blocking(move || {
                handle.block_on(VariantPool::new(&runtime, &spec))
            })
            .await
            .map_err(|e| format!("variant {}: {e}", v.name))?
            .map_err(failed)?;
            Serving::Single(Arc::new(pool))
        }
        Some(multi) => {
            let template = {
                let (runtime, spec) = (runtime.clone(), spec.clone());
                tokio::task::spawn_blocking(move || PoolTemplate::new(&runtime, &spec))
                    .await
                    .map_err(|e| format!("variant {}: {e}", v.name))?
                    .map_err(failed)?
            };
            let cache = ModelCache::new(
                CacheSpec {
                    endpoint: endpoint.to_owned(),
                    variant: v.name.clone(),
                    prefix: if multi.prefix.starts_with("s3://") {
                        multi.prefix.clone()
                    } else {
                        // Under the artifact roots now too (they may have changed since the
                        // model was created).
                        state
                            .stored
                            .roots
                            .check("ModelDataUrl", &multi.prefix)
                            .map_err(|e| {
                                format!("variant {}, model {}: {e}", v.name, v.model.name)
                            })?
                    },
                    keep: multi.cache,
                    budget: v.model_cache_bytes.unwrap_or_else(|| {
                        plinth_policy::model_cache::default_budget_bytes(host_memory_bytes())
                    }),
                    instances: v.instance_count,
                    download_timeout: Duration::from_secs(v.download_timeout_seconds),
                    wait_timeout: spec.limits.deadline,
                },
                template,
                runtime,
                state.stored.clone(),
                state.metrics.multi_model(endpoint, &v.name),
            )
            .map_err(|e| format!("variant {}, model {}: {e}", v.name, v.model.name))?;
            Serving::Multi(Arc::new(cache))
        }
    };
    Ok(Arc::new(LiveVariant {
        name: v.name.clone(),
        name_header,
        model_name: v.model.name.clone(),
        model: v.model.clone(),
        model_cache_bytes: v.model_cache_bytes,
        serving,
        metrics: state.metrics.variant(endpoint, &v.name),
        recent: Default::default(),
    }))
}

/// A config's variants and shadows, built, and its experiment.
pub(crate) struct Built {
    pub(crate) config_name: String,
    pub(crate) variants: Vec<VariantState>,
    pub(crate) experiment: Option<Arc<crate::fleet::ledger::Experiment>>,
    pub(crate) shadows: Vec<Arc<Shadow>>,
    pub(crate) capture: Option<Arc<crate::fleet::capture::Capture>>,
}

/// Every warm pool of an endpoint that a new config may keep: its variants' and shadows'.
pub(crate) fn warm(endpoint: &EndpointSnapshot) -> Vec<Arc<LiveVariant>> {
    endpoint
        .variants
        .iter()
        .map(|v| v.live.clone())
        .chain(endpoint.shadows.iter().map(|s| s.live.clone()))
        .collect()
}
