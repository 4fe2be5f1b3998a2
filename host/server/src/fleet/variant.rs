//! A live variant: what serves it (the runtime's `VariantPool` for a single model, a cache
//! of one pool per model for a multi-model variant, a pool per container for an inference
//! pipeline), its metrics and its recent request
//! window, shared by every snapshot that routes to it; how its runtime spec is made from a
//! model and a variant; and how each invocation is counted.

use super::multi_model::{Lease, ModelCache};
use super::pipeline::Pipeline;
use crate::error::ApiError;
use plinth_policy::config::{Backend, Model, Variant};
use plinth_policy::pipeline::Target;
use plinth_policy::routing::RoutingStrategy;
use plinth_runtime::{InvokeError, Limits, PoolStats, VariantPool, VariantSpec};
use std::sync::Arc;
use std::time::Duration;

/// What serves a variant's requests.
#[derive(Clone)]
pub(crate) enum Serving {
    /// One model: one pool.
    Single(Arc<VariantPool>),
    /// `Mode: MultiModel`: a pool per loaded model, each request naming its model.
    Multi(Arc<ModelCache>),
    /// A model with `Containers`: a pool per container.
    Pipeline(Arc<Pipeline>),
}

/// What one request runs on, held while it does: the variant's pool, its model's (which is
/// not unloaded while held), or its pipeline's stages.
pub(crate) enum Held<'a> {
    Single(&'a VariantPool),
    Multi(Lease),
    Pipeline(&'a Arc<Pipeline>, Target),
}

impl Held<'_> {
    /// Serve `request` on what is held.
    pub(crate) async fn invoke(
        &self,
        request: Arc<plinth_runtime::Invocation>,
    ) -> Result<plinth_runtime::InvocationOutput, InvokeError> {
        match self {
            Self::Single(pool) => pool.invoke(request).await,
            Self::Multi(lease) => lease.invoke(request).await,
            Self::Pipeline(pipeline, target) => pipeline.invoke(request, *target).await,
        }
    }
}

impl Serving {
    /// What serves a request naming `target_model` (`TargetModel`: given for a
    /// multi-model variant, and only for one) and `target_container`
    /// (`TargetContainerHostname`: given for a Direct pipeline, and only for one) on
    /// `variant`, whose model is `model`.
    pub(crate) async fn hold(
        &self,
        target_model: Option<&str>,
        target_container: Option<&str>,
        variant: &str,
        model: &str,
    ) -> Result<Held<'_>, ApiError> {
        if let Self::Pipeline(pipeline) = self {
            if let Some(target) = target_model {
                return Err(ApiError::validation(format!(
                    "TargetModel {target:?} was given, but variant {variant} serves an \
                     inference pipeline (model {model}); leave TargetModel out"
                )));
            }
            let target = pipeline
                .target(model, target_container)
                .map_err(ApiError::validation)?;
            return Ok(Held::Pipeline(pipeline, target));
        }
        if target_container.is_some() {
            plinth_policy::pipeline::target(model, None, target_container)
                .map_err(ApiError::validation)?;
        }
        match (self, target_model) {
            (Self::Pipeline(_), _) => unreachable!("answered above"),
            (Self::Single(pool), None) => Ok(Held::Single(pool)),
            (Self::Single(_), Some(target)) => Err(ApiError::validation(format!(
                "TargetModel {target:?} was given, but variant {variant} serves a single model \
                 (its model's Mode is SingleModel); leave TargetModel out"
            ))),
            (Self::Multi(_), None) => Err(ApiError::validation(format!(
                "Variant {variant} is a multi-model variant: give TargetModel, the path of the \
                 model under its model's ModelDataUrl"
            ))),
            (Self::Multi(cache), Some(target)) => cache.lease(target).await.map(Held::Multi),
        }
    }

    /// Serve a request that names no model (a shadow's copy); a multi-model variant
    /// refuses it.
    pub(crate) async fn invoke(
        &self,
        request: Arc<plinth_runtime::Invocation>,
    ) -> Result<plinth_runtime::InvocationOutput, InvokeError> {
        match self {
            Self::Single(pool) => pool.invoke(request).await,
            Self::Multi(_) => Err(InvokeError::Unavailable(
                "a multi-model variant serves only requests that name their model".into(),
            )),
            Self::Pipeline(pipeline) => match pipeline.target("", None) {
                Ok(target) => pipeline.invoke(request, target).await,
                Err(_) => Err(InvokeError::Unavailable(
                    "a Direct pipeline serves only requests that name their container".into(),
                )),
            },
        }
    }

    /// The single model's pool.
    pub(crate) fn single(&self) -> Option<&Arc<VariantPool>> {
        match self {
            Self::Single(pool) => Some(pool),
            Self::Multi(_) | Self::Pipeline(_) => None,
        }
    }

    /// How many instances each of its instances stands for: an inference pipeline's
    /// containers (each has a pool of its own), else 1.
    pub(crate) fn containers(&self) -> usize {
        match self {
            Self::Pipeline(pipeline) => pipeline.containers(),
            Self::Single(_) | Self::Multi(_) => 1,
        }
    }

    /// Instances (of each loaded model, for a multi-model variant; of each container, for
    /// a pipeline).
    pub(crate) fn instances(&self) -> usize {
        match self {
            Self::Single(pool) => pool.instances(),
            Self::Multi(cache) => cache.instances(),
            Self::Pipeline(pipeline) => pipeline.instances(),
        }
    }

    /// Current load; for a multi-model variant, summed over its loaded models, with
    /// `instances` as [`Self::instances`].
    pub(crate) fn stats(&self) -> PoolStats {
        match self {
            Self::Single(pool) => pool.stats(),
            Self::Pipeline(pipeline) => pipeline.stats(),
            Self::Multi(cache) => {
                let (lines, bytes) = cache.template().log_dropped();
                let mut total = PoolStats {
                    instances: cache.instances(),
                    busy: 0,
                    queued: 0,
                    replaced: 0,
                    batches: 0,
                    batched_requests: 0,
                    log_lines_dropped: lines,
                    log_bytes_dropped: bytes,
                    cpu_nanos: 0,
                    memory_bytes: 0,
                    memory_limit_bytes: 0,
                };
                for pool in cache.pools() {
                    let s = pool.stats();
                    total.busy += s.busy;
                    total.queued += s.queued;
                    total.replaced += s.replaced;
                    total.batches += s.batches;
                    total.batched_requests += s.batched_requests;
                    total.cpu_nanos += s.cpu_nanos;
                    total.memory_bytes += s.memory_bytes;
                    total.memory_limit_bytes += s.memory_limit_bytes;
                }
                total
            }
        }
    }

    /// Change the instance count (of each loaded model).
    pub(crate) async fn resize(&self, count: usize) -> Result<(), plinth_runtime::LoadError> {
        match self {
            Self::Single(pool) => pool.resize(count).await,
            Self::Multi(cache) => cache.resize(count).await,
            Self::Pipeline(pipeline) => pipeline.resize(count).await,
        }
    }

    /// A serverless variant's settings.
    pub(crate) fn elastic(&self) -> Option<plinth_runtime::Elastic> {
        match self {
            Self::Single(pool) => pool.elastic(),
            Self::Multi(_) | Self::Pipeline(_) => None,
        }
    }

    pub(crate) fn routing(&self) -> RoutingStrategy {
        match self {
            Self::Single(pool) => pool.routing(),
            Self::Multi(cache) => cache.template().routing(),
            Self::Pipeline(pipeline) => pipeline.first().routing(),
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        match self {
            Self::Single(pool) => pool.limits(),
            Self::Multi(cache) => cache.template().limits(),
            Self::Pipeline(pipeline) => pipeline.first().limits(),
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            Self::Single(pool) => pool.backend(),
            Self::Multi(cache) => cache.template().backend(),
            Self::Pipeline(pipeline) => pipeline.first().backend(),
        }
    }
}

/// A variant's warm pool, shared by every snapshot that routes to it.
pub(crate) struct LiveVariant {
    pub(crate) name: String,
    /// `name` as the value of a response's `x-Amzn-Invoked-Production-Variant`, made once.
    pub(crate) name_header: axum::http::HeaderValue,
    pub(crate) model_name: String,
    /// The model as deployed, to tell whether a new endpoint config changes it.
    pub(crate) model: Model,
    /// `PlinthModelCacheSizeInMB`, as deployed (a multi-model variant's budget).
    pub(crate) model_cache_bytes: Option<u64>,
    pub(crate) serving: Serving,
    /// Its request metrics, resolved once.
    pub(crate) metrics: crate::metrics::VariantMetrics,
    /// Its recent requests, for alarms.
    pub(crate) recent: super::recent::RecentRequests,
}

/// The runtime spec for one variant of an endpoint.
pub(crate) fn variant_spec(endpoint: &str, variant: &Variant) -> VariantSpec {
    let model = &variant.model;
    let serverless = variant.serverless;
    VariantSpec {
        endpoint: endpoint.to_string(),
        variant: variant.name.clone(),
        component: model.component.clone(),
        model_dir: model.model_data.clone(),
        environment: model.environment.clone(),
        instance_count: variant.instance_count,
        routing: variant.routing_strategy,
        limits: Limits {
            // A serverless variant's MemorySizeInMB is each instance's memory.
            memory_bytes: serverless.map_or(model.memory_bytes, |s| (s.memory_mib as usize) << 20),
            deadline: Duration::from_secs(model.timeout_seconds),
            startup_deadline: Duration::from_secs(variant.startup_timeout_seconds),
            max_response_bytes: model.max_response_bytes,
            graphs_from_bytes: model.graphs_from_bytes,
            max_queue: variant.max_queue_length,
            max_batch: variant.max_batch_size,
        },
        backend: model.backend,
        elastic: serverless.map(|s| plinth_runtime::Elastic {
            max_concurrency: s.max_concurrency,
            provisioned: s.provisioned_concurrency,
            idle_timeout: Duration::from_secs(s.idle_timeout_seconds),
        }),
    }
}

/// Count one invocation of `variant` in its metrics and its alarm window (`started`: when
/// the request arrived); for a failure, the error to answer with.
pub(crate) fn record_invocation(
    variant: &LiveVariant,
    result: &Result<plinth_runtime::InvocationOutput, InvokeError>,
    started: std::time::Instant,
) -> Option<ApiError> {
    use super::recent::second_of;
    use plinth_policy::metric_alarm::{Outcome, Sample};
    let now = std::time::Instant::now();
    let (total, second) = (now.saturating_duration_since(started), second_of(now));
    let m = &variant.metrics;
    m.invocations.inc();
    let instances = variant.serving.instances().max(1);
    m.invocations_per_instance.inc_by(1.0 / instances as f64);
    match result {
        Ok(output) => {
            if let Some(setup) = output.setup_time {
                m.model_setup.observe(setup.as_secs_f64());
            }
            let overhead = total
                .saturating_sub(output.model_latency)
                .saturating_sub(output.setup_time.unwrap_or_default());
            m.model_latency.observe(output.model_latency.as_secs_f64());
            m.overhead_latency.observe(overhead.as_secs_f64());
            variant.recent.record_at(
                second,
                &Sample {
                    outcome: Outcome::Success,
                    model_error: false,
                    model_latency: Some(output.model_latency),
                    overhead_latency: overhead,
                },
            );
            None
        }
        Err(error) => {
            let api_error = ApiError::from_invoke(error, &variant.name);
            if matches!(error, InvokeError::Throttled { .. }) {
                m.throttled.inc();
            }
            let model_error = error.original_status().is_some();
            let server_side = api_error.status().is_server_error()
                || matches!(error.original_status(), Some(0) | Some(500..));
            record_failure(variant, model_error, server_side, total, second);
            Some(api_error)
        }
    }
}

/// Count a request `variant` refused before its model ran (a multi-model variant's
/// `TargetModel` missing, wrong, not found, not loaded yet, or failing to load).
pub(crate) fn record_refusal(variant: &LiveVariant, error: &ApiError, started: std::time::Instant) {
    let now = std::time::Instant::now();
    variant.metrics.invocations.inc();
    let model_error = error.code() == "ModelError";
    record_failure(
        variant,
        model_error,
        error.status().is_server_error() || model_error,
        now.saturating_duration_since(started),
        super::recent::second_of(now),
    );
}

fn record_failure(
    variant: &LiveVariant,
    model_error: bool,
    server_side: bool,
    total: Duration,
    second: u64,
) {
    use plinth_policy::metric_alarm::{Outcome, Sample};
    let m = &variant.metrics;
    if model_error {
        m.model_errors.inc();
    }
    if server_side {
        m.errors_5xx.inc();
    } else {
        m.errors_4xx.inc();
    }
    variant.recent.record_at(
        second,
        &Sample {
            outcome: if server_side {
                Outcome::ServerError
            } else {
                Outcome::ClientError
            },
            model_error,
            model_latency: None,
            overhead_latency: total,
        },
    );
}
