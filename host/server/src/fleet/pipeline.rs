//! Inference pipelines (a model with `Containers`): each container is a stage with its own
//! pool of instances (its own memory limit, its instances replaced alone after a trap),
//! built from the variant's settings; a `Serial` request runs every stage in order inside
//! the process, each stage's response the next one's request, within what is left of the
//! model's invocation timeout; a `Direct` request runs the one stage its
//! `TargetContainerHostname` names. Each stage's requests, errors and latency are counted
//! per container.
//!
//! A chain runs in a task of its own, which calls each container directly when its instance
//! is idle (`VariantPool::invoke_here`: no hand-off to the instance's runner task, about
//! 4 µs a stage less) and queues on it otherwise; being its own task, a client that goes
//! away does not cancel a call in the middle of a container.

use crate::metrics::{ContainerMetrics, Metrics};
use plinth_policy::pipeline::{remaining, stage_accept, Mode, Target, DEFAULT_ACCEPT_VARIABLE};
use plinth_runtime::{
    Invocation, InvocationOutput, InvokeError, LoadError, PoolStats, Runtime, VariantPool,
    VariantSpec,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// A variant's pipeline: its stages, in order.
pub(crate) struct Pipeline {
    mode: Mode,
    stages: Vec<Stage>,
    hostnames: Vec<String>,
    /// The chain's deadline: the model's `InvocationTimeoutInSeconds`.
    deadline: Duration,
}

/// One container of a pipeline.
struct Stage {
    hostname: String,
    pool: Arc<VariantPool>,
    /// What the stage is asked for when it is not the last (its environment's
    /// `SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`).
    default_accept: Option<String>,
    metrics: ContainerMetrics,
}

impl Pipeline {
    /// Build a pool per stage of `pipeline`, each from `spec` (the variant's settings) with
    /// the stage's component, artifact and environment. Blocking (compiles components).
    pub(crate) async fn build(
        runtime: &Runtime,
        spec: &VariantSpec,
        pipeline: &plinth_policy::config::Pipeline,
        metrics: &Metrics,
    ) -> Result<Self, (String, LoadError)> {
        let mut stages = Vec::with_capacity(pipeline.stages.len());
        for stage in &pipeline.stages {
            let mut stage_spec = spec.clone();
            stage_spec.component = stage.component.clone();
            stage_spec.model_dir = stage.model_data.clone();
            stage_spec.environment = stage.environment.clone();
            let pool = VariantPool::new(runtime, &stage_spec)
                .await
                .map_err(|e| (stage.hostname.clone(), e))?;
            let default_accept = stage
                .environment
                .iter()
                .find(|(k, _)| k == DEFAULT_ACCEPT_VARIABLE)
                .map(|(_, v)| v.clone());
            stages.push(Stage {
                hostname: stage.hostname.clone(),
                pool: Arc::new(pool),
                default_accept,
                metrics: metrics.container(&spec.endpoint, &spec.variant, &stage.hostname),
            });
        }
        Ok(Self {
            mode: pipeline.mode,
            hostnames: pipeline.hostnames(),
            stages,
            deadline: spec.limits.deadline,
        })
    }

    /// What a request naming `given` (`TargetContainerHostname`) runs.
    pub(crate) fn target(&self, model: &str, given: Option<&str>) -> Result<Target, String> {
        plinth_policy::pipeline::target(model, Some((self.mode, &self.hostnames)), given)
    }

    /// Serve `request`: the whole chain, or the one stage `target` names, in a task of its
    /// own (a client that goes away does not cancel a container's call: each container is
    /// called in that task when its instance is idle, with no hand-off to the instance's
    /// runner, and queued on it otherwise). See [`Self::chain`].
    pub(crate) async fn invoke(
        self: &Arc<Self>,
        request: Arc<Invocation>,
        target: Target,
    ) -> Result<InvocationOutput, InvokeError> {
        let pipeline = self.clone();
        let chain = async move { pipeline.chain(request, target).await };
        tokio::spawn(chain.instrument(tracing::Span::current()))
            .await
            .unwrap_or_else(|e| {
                Err(InvokeError::Trap {
                    message: format!("the host task serving the pipeline failed: {e}"),
                })
            })
    }

    /// The chain's work, for [`Self::invoke`]. Each stage runs
    /// within what is left of the model's invocation timeout after the stages before it
    /// (their time in the guest; waiting for an instance is not counted, as for a single
    /// model). A stage's model error comes back as [`InvokeError::InContainer`] naming it;
    /// a stage without room fails the request as a single model's would (throttled: a client
    /// or the asynchronous queue may try the whole chain again, as inference requests are;
    /// a later stage without instances as unavailable, not routed again at once).
    async fn chain(
        &self,
        request: Arc<Invocation>,
        target: Target,
    ) -> Result<InvocationOutput, InvokeError> {
        let stages = match target {
            Target::Chain => &self.stages[..],
            Target::One(i) => std::slice::from_ref(&self.stages[i]),
        };
        let (mut used, mut setup_time) = (Duration::ZERO, None::<Duration>);
        let mut previous: Option<InvocationOutput> = None;
        for (i, stage) in stages.iter().enumerate() {
            let failed = |error: InvokeError| InvokeError::InContainer {
                hostname: stage.hostname.clone(),
                error: Box::new(error),
            };
            let Some(left) = remaining(self.deadline, used) else {
                return Err(failed(InvokeError::Timeout(self.deadline)));
            };
            let accept = stage_accept(
                i,
                stages.len(),
                &request.accept,
                stage.default_accept.as_deref(),
            );
            let call = match previous.take() {
                None if accept == request.accept => request.clone(),
                None => Arc::new(Invocation {
                    accept: accept.to_owned(),
                    ..(*request).clone()
                }),
                // The previous response is this stage's request: its body and content type,
                // and the custom attributes it set (or those it was given).
                Some(output) => Arc::new(Invocation {
                    body: bytes::Bytes::from(output.body),
                    content_type: output.content_type,
                    accept: accept.to_owned(),
                    inference_id: request.inference_id.clone(),
                    custom_attributes: output.custom_attributes,
                    deadline: Some(left),
                }),
            };
            // What this stage was given passes on when it sets no attributes of its own.
            let given = if i + 1 < stages.len() {
                call.custom_attributes.clone()
            } else {
                None
            };
            let at = Instant::now();
            let span = tracing::debug_span!("container", hostname = %stage.hostname);
            let result = async {
                match stage.pool.invoke_here(&call).await {
                    // Its instance is busy: wait in its queue.
                    Err(InvokeError::Unavailable(_)) => stage.pool.invoke(call).await,
                    done => done,
                }
            }
            .instrument(span)
            .await;
            stage.record(&result, at.elapsed());
            tracing::debug!(
                container = %stage.hostname,
                ok = result.is_ok(),
                ms = at.elapsed().as_secs_f64() * 1e3,
                "pipeline stage done"
            );
            let mut output = match result {
                Ok(output) => output,
                Err(InvokeError::Timeout(_)) => {
                    return Err(failed(InvokeError::Timeout(self.deadline)))
                }
                Err(e) if e.original_status().is_some() => return Err(failed(e)),
                Err(InvokeError::NoInstances(variant)) if i > 0 => {
                    return Err(InvokeError::Unavailable(format!(
                        "container {} of variant {variant} has no instance",
                        stage.hostname
                    )))
                }
                Err(e) => return Err(e),
            };
            used += output.model_latency;
            if let Some(setup) = output.setup_time {
                setup_time = Some(setup_time.unwrap_or_default() + setup);
            }
            if output.custom_attributes.is_none() {
                output.custom_attributes = given;
            }
            previous = Some(output);
        }
        let mut output = previous.expect("a pipeline has a stage");
        output.model_latency = used;
        output.setup_time = setup_time;
        Ok(output)
    }

    /// Instances: each stage has as many (the fewest, while they are resized).
    pub(crate) fn instances(&self) -> usize {
        self.stages
            .iter()
            .map(|s| s.pool.instances())
            .min()
            .unwrap_or(0)
    }

    /// Load, summed over the stages; `instances` as [`Self::instances`].
    pub(crate) fn stats(&self) -> PoolStats {
        let mut total = self.stages[0].pool.stats();
        for stage in &self.stages[1..] {
            let s = stage.pool.stats();
            total.busy += s.busy;
            total.queued += s.queued;
            total.replaced += s.replaced;
            total.batches += s.batches;
            total.batched_requests += s.batched_requests;
            total.log_lines_dropped += s.log_lines_dropped;
            total.log_bytes_dropped += s.log_bytes_dropped;
            total.cpu_nanos += s.cpu_nanos;
            total.memory_bytes += s.memory_bytes;
            total.memory_limit_bytes += s.memory_limit_bytes;
        }
        total.instances = self.instances();
        total
    }

    /// Its containers.
    pub(crate) fn containers(&self) -> usize {
        self.stages.len()
    }

    /// Change every stage's instance count; if one cannot, those already changed go back
    /// to what they had, so that the stages keep one count.
    pub(crate) async fn resize(&self, count: usize) -> Result<(), LoadError> {
        let before = self.instances();
        for (i, stage) in self.stages.iter().enumerate() {
            if let Err(e) = stage.pool.resize(count).await {
                for done in &self.stages[..=i] {
                    if let Err(back) = done.pool.resize(before).await {
                        tracing::error!(container = %done.hostname, error = %back, "a pipeline container could not go back to its instance count");
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// The first stage's pool: its settings are every stage's.
    pub(crate) fn first(&self) -> &Arc<VariantPool> {
        &self.stages[0].pool
    }
}

impl Stage {
    fn record(&self, result: &Result<InvocationOutput, InvokeError>, took: Duration) {
        let m = &self.metrics;
        m.invocations.inc();
        match result {
            Ok(_) => m.latency.observe(took.as_secs_f64()),
            Err(e) => match e.original_status() {
                Some(status) if (400..500).contains(&status) => m.errors_4xx.inc(),
                Some(_) => m.errors_5xx.inc(),
                // Refused before the container ran: throttled (400), or no instance (503).
                None if matches!(e, InvokeError::Throttled { .. }) => m.errors_4xx.inc(),
                None => m.errors_5xx.inc(),
            },
        }
    }
}
