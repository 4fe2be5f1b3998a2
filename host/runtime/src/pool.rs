//! A production variant's pool of warm instances. The instance count is the variant's
//! parallelism: each instance serves one call at a time, a request is routed to one
//! instance by the variant's routing strategy (least outstanding requests, or random) and
//! waits for it in a bounded queue; when the variant's queue is full the request is
//! throttled, never left hanging.
//!
//! A busy instance is driven by one runner task on the async workers, which serves the
//! instance's queue until it is empty, with no hop to another thread: wasmtime runs the
//! guest on a fiber that gives way to other tasks every epoch tick, and stops it at its
//! deadline. The runner is its own task, so a client that goes away does not cancel a call
//! half-way. When the variant allows batches (`max_batch` > 1), the runner takes up to that
//! many queued requests into one `invoke-batch` call; a batch that traps is served again one
//! request at a time on a fresh instance, so that only the request at fault fails. A trapped
//! instance is dropped and replaced before the next call. The set of instances is itself a
//! snapshot (arc-swap): resizing publishes a new set, and requests already queued on a
//! removed instance are served there.
//!
//! A watchdog bounds every call: an instance that has not returned by its deadline plus
//! [`Limits::WATCHDOG_GRACE`] (stuck in a host wait that epoch interruption cannot stop) is
//! abandoned and replaced, so the requests queued behind it are served by a fresh instance.

use crate::engine::Runtime;
use crate::error::{InvokeError, LoadError};
use crate::guest::{
    GuestInstance, InstanceTemplate, Invocation, InvocationOutput, ModelPre, Outcome,
};
use crate::limits::Limits;
use crate::nn::SharedGraphs;
use arc_swap::ArcSwap;
use plinth_policy::config::Backend;
use plinth_policy::routing::{pick_instance, RoutingStrategy};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::Instrument;

/// Everything needed to build a variant's pool.
#[derive(Debug, Clone)]
pub struct VariantSpec {
    /// The endpoint serving this variant (for logs and metrics).
    pub endpoint: String,
    /// The variant's name.
    pub variant: String,
    /// The component file.
    pub component: PathBuf,
    /// The model artifact directory, mounted read-only at `/opt/ml/model`.
    pub model_dir: Option<PathBuf>,
    /// The environment the guest sees (and nothing else).
    pub environment: Vec<(String, String)>,
    /// Warm instances, i.e. requests served at once. May be 0 (the variant then refuses
    /// requests until it is scaled up).
    pub instance_count: usize,
    /// How requests are spread over instances.
    pub routing: RoutingStrategy,
    /// Sandbox limits.
    pub limits: Limits,
    /// The wasi-nn backend the model asks for (`Auto`: ONNX Runtime when the runtime has it,
    /// tract otherwise).
    pub backend: Backend,
    /// For a serverless variant: instances started on demand and dropped when idle, besides
    /// the `instance_count` kept warm (its provisioned concurrency).
    pub elastic: Option<Elastic>,
}

/// How a serverless variant's pool grows and shrinks: an instance is started when a request
/// finds none idle (a cold start), up to `max_concurrency` requests at once (more are
/// throttled at once); `provisioned` instances are kept warm however idle, and the others are
/// dropped after `idle_timeout` without a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elastic {
    /// `MaxConcurrency`.
    pub max_concurrency: usize,
    /// `ProvisionedConcurrency` (0: none).
    pub provisioned: usize,
    /// How long an instance beyond the provisioned ones may stay idle.
    pub idle_timeout: std::time::Duration,
}

/// A point-in-time view of a pool's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Instances in the pool.
    pub instances: usize,
    /// Instances serving a request now.
    pub busy: usize,
    /// Requests waiting for an instance.
    pub queued: usize,
    /// Instances replaced after a trap or timeout since the pool was built.
    pub replaced: usize,
    /// Calls that served a batch of more than one request, since the pool was built.
    pub batches: usize,
    /// Requests served in those batches.
    pub batched_requests: usize,
    /// Lines of guest output dropped over the instances' log rate, since the pool was built.
    pub log_lines_dropped: u64,
    /// Bytes of guest output dropped over the instances' log rate.
    pub log_bytes_dropped: u64,
    /// Time its guest calls and backend jobs have run since the pool was built, in
    /// nanoseconds (counted while `account_cpu` is on).
    pub cpu_nanos: u64,
    /// The bytes its instances hold against their memory limits, as of each one's last
    /// call (linear memory and wasi-nn host bytes).
    pub memory_bytes: usize,
    /// Their memory limits together.
    pub memory_limit_bytes: usize,
}

/// One instance and the requests routed to it.
struct Slot {
    /// Requests waiting for the instance, and whether a runner is serving it.
    queue: Mutex<SlotQueue>,
    /// The instance while no runner holds it; `None` after a failed replacement.
    instance: Mutex<Option<GuestInstance>>,
    /// Requests routed here and not finished (waiting or running).
    outstanding: AtomicUsize,
    /// The bytes the instance held against its memory limit when it started.
    memory: usize,
    /// When its last request ended (milliseconds of [`now_ms`]).
    idle_since: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct SlotQueue {
    /// A runner task is serving this instance.
    running: bool,
    /// The last batch taken here held more than one request: requests arrive together, so a
    /// new runner lets a batch form before its first call too.
    concurrent: bool,
    waiting: VecDeque<Waiter>,
}

/// A request waiting for its instance.
struct Waiter {
    request: Arc<Invocation>,
    /// Told when the request's call starts (its deadline runs from then), with the size of
    /// its batch.
    started: oneshot::Sender<(Instant, usize)>,
    reply: oneshot::Sender<Result<InvocationOutput, InvokeError>>,
    /// The caller's span (endpoint, variant, inference id), for the guest's logs.
    span: tracing::Span,
    /// Counted in the variant's queue depth (it arrived while the instance was busy).
    counted: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Slot {
    fn new(instance: GuestInstance) -> Arc<Self> {
        Arc::new(Self {
            memory: instance.memory_used(),
            queue: Mutex::default(),
            instance: Mutex::new(Some(instance)),
            outstanding: AtomicUsize::new(0),
            idle_since: now_ms().into(),
        })
    }
}

/// Milliseconds since the first call (a monotonic clock that fits an atomic).
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Decrements a slot's outstanding count when the request ends, however it ends.
struct Outstanding(Arc<Slot>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        if self.0.outstanding.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle_since.store(now_ms(), Ordering::Relaxed);
        }
    }
}

/// A serverless pool's settings (changed live by `ServerlessUpdateConfig`) and its requests
/// in flight.
struct ElasticState {
    config: Mutex<Elastic>,
    in_flight: AtomicUsize,
    /// Cold starts since the pool was built.
    cold_starts: AtomicUsize,
}

/// A request counted in a serverless pool's concurrency until it ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The warm instances of one variant.
pub struct VariantPool {
    template: Arc<InstanceTemplate>,
    slots: ArcSwap<Vec<Arc<Slot>>>,
    routing: RoutingStrategy,
    max_queue: usize,
    max_batch: usize,
    queued: Arc<AtomicUsize>,
    replaced: Arc<AtomicUsize>,
    batches: Arc<Batches>,
    resizing: tokio::sync::Mutex<()>,
    elastic: Option<ElasticState>,
}

/// Counts of the batches a pool's runners served.
#[derive(Default)]
struct Batches {
    calls: AtomicUsize,
    requests: AtomicUsize,
}

/// A component compiled and linked for one variant's settings (environment, limits,
/// backend, routing), ready to start pools over model directories: a single-model variant
/// starts one, a multi-model variant one per model it loads, all sharing the compiled
/// component, the wasi-nn backend and the variant's log budget.
pub struct PoolTemplate {
    engine: wasmtime::Engine,
    component: Arc<wasmtime::component::Component>,
    pre: ModelPre<crate::guest::HostState>,
    nn: crate::nn::NnBackend,
    backend_pool: crate::blocking::BackendPool,
    environment: Vec<(String, String)>,
    limits: Limits,
    logs: Arc<crate::stdio::Dropped>,
    endpoint: Arc<str>,
    variant: Arc<str>,
    routing: RoutingStrategy,
    elastic: Option<Elastic>,
}

impl PoolTemplate {
    /// Load (compile, or take from the cache) and link `spec`'s component. Blocks while
    /// compiling. `spec.model_dir` and `spec.instance_count` are not used here.
    pub fn new(runtime: &Runtime, spec: &VariantSpec) -> Result<Self, LoadError> {
        let shown = spec.component.display().to_string();
        let component = runtime.load_component(&spec.component)?;
        let instance_pre =
            runtime
                .linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::WrongWorld {
                    path: shown.clone(),
                    reason: format!("{e:#}"),
                })?;
        let pre = ModelPre::new(instance_pre).map_err(|e| LoadError::WrongWorld {
            path: shown,
            reason: crate::guest::wrong_world(&runtime.engine, &component, &e),
        })?;
        let nn = runtime
            .nn_backend(spec.backend, spec.instance_count.max(1))
            .map_err(LoadError::Backend)?;
        Ok(Self {
            engine: runtime.engine.clone(),
            component,
            pre,
            nn,
            backend_pool: runtime.backend_pool.clone(),
            environment: spec.environment.clone(),
            limits: spec.limits.clone(),
            logs: Arc::default(),
            endpoint: spec.endpoint.as_str().into(),
            variant: spec.variant.as_str().into(),
            routing: spec.routing,
            elastic: spec.elastic,
        })
    }

    /// The sandbox limits its instances run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The routing strategy of the pools it starts.
    pub fn routing(&self) -> RoutingStrategy {
        self.routing
    }

    /// The wasi-nn backend of the pools it starts (`Tract` or `OnnxRuntime`).
    pub fn backend(&self) -> Backend {
        self.nn.kind()
    }

    /// Lines and bytes of guest output its pools dropped over their instances' log rate.
    pub fn log_dropped(&self) -> (u64, u64) {
        (
            self.logs.lines.load(Ordering::Relaxed),
            self.logs.bytes.load(Ordering::Relaxed),
        )
    }

    /// Preload `model_dir`'s graphs (shared with every pool serving the same files) and
    /// start `instance_count` warm instances over it (each has run `model-fn`). With no
    /// instances, one is still started and dropped: the pool proves its model can start.
    pub async fn pool(
        &self,
        runtime: &Runtime,
        model_dir: Option<PathBuf>,
        instance_count: usize,
    ) -> Result<VariantPool, LoadError> {
        let graphs = match &model_dir {
            Some(dir) => {
                runtime
                    .preload_graphs(dir, &self.nn)
                    .map_err(|e| LoadError::Artifact {
                        path: dir.display().to_string(),
                        reason: format!("{e:#}"),
                    })?
            }
            None => SharedGraphs::default(),
        };
        tracing::debug!(
            endpoint = %self.endpoint,
            variant = %self.variant,
            backend = %self.nn.kind(),
            intra_op_threads = self.nn.intra_op_threads(),
            graphs = ?graphs.names(),
            "wasi-nn backend"
        );
        let template = Arc::new(InstanceTemplate {
            engine: self.engine.clone(),
            _component: self.component.clone(),
            pre: self.pre.clone(),
            graphs,
            nn: self.nn.clone(),
            backend_pool: self.backend_pool.clone(),
            model_dir,
            environment: self.environment.clone(),
            limits: self.limits.clone(),
            logs: self.logs.clone(),
            endpoint: self.endpoint.clone(),
            variant: self.variant.clone(),
            usage: Arc::default(),
        });
        let first = template.instantiate().await?;
        let mut slots = Vec::with_capacity(instance_count);
        if instance_count > 0 {
            slots.push(Slot::new(first));
            for _ in 1..instance_count {
                slots.push(Slot::new(template.instantiate().await?));
            }
        }
        Ok(VariantPool {
            template,
            slots: ArcSwap::from_pointee(slots),
            routing: self.routing,
            max_queue: self.limits.max_queue,
            max_batch: self.limits.max_batch.max(1),
            queued: Arc::default(),
            replaced: Arc::default(),
            batches: Arc::default(),
            resizing: tokio::sync::Mutex::new(()),
            elastic: self.elastic.map(|config| ElasticState {
                config: Mutex::new(config),
                in_flight: AtomicUsize::new(0),
                cold_starts: AtomicUsize::new(0),
            }),
        })
    }
}

impl VariantPool {
    /// Load the component, preload the artifact's graphs and start `instance_count` warm
    /// instances (each has run `model-fn`). Compiling blocks: call it from a thread that
    /// may block, inside a tokio runtime (e.g. `Handle::block_on` on a blocking thread).
    pub async fn new(runtime: &Runtime, spec: &VariantSpec) -> Result<Self, LoadError> {
        let template = PoolTemplate::new(runtime, spec)?;
        tracing::info!(
            endpoint = %spec.endpoint,
            variant = %spec.variant,
            backend = %template.nn.kind(),
            intra_op_threads = template.nn.intra_op_threads(),
            "wasi-nn backend"
        );
        template
            .pool(runtime, spec.model_dir.clone(), spec.instance_count)
            .await
    }

    /// The bytes its instances held against their memory limits when they started (linear
    /// memory and wasi-nn host bytes, after `model-fn`), plus its graphs' file bytes: what a
    /// loaded model costs, as a multi-model variant's cache counts it.
    pub fn memory_bytes(&self) -> usize {
        let instances: usize = self.slots.load().iter().map(|s| s.memory).sum();
        instances.saturating_add(self.template.graphs.bytes())
    }

    #[cfg(test)]
    pub(crate) fn template(&self) -> &InstanceTemplate {
        &self.template
    }

    /// The variant's name.
    pub fn variant(&self) -> &str {
        &self.template.variant
    }

    /// The routing strategy.
    pub fn routing(&self) -> RoutingStrategy {
        self.routing
    }

    /// The sandbox limits its instances run under.
    pub fn limits(&self) -> &Limits {
        &self.template.limits
    }

    /// The wasi-nn backend serving the variant (`Tract` or `OnnxRuntime`, never `Auto`).
    pub fn backend(&self) -> Backend {
        self.template.nn.kind()
    }

    /// Intra-op threads of the variant's ONNX Runtime sessions (`None` on tract).
    pub fn intra_op_threads(&self) -> Option<usize> {
        self.template.nn.intra_op_threads()
    }

    /// Instances in the pool now.
    pub fn instances(&self) -> usize {
        self.slots.load().len()
    }

    /// Current load.
    pub fn stats(&self) -> PoolStats {
        let slots = self.slots.load();
        PoolStats {
            instances: slots.len(),
            busy: slots.iter().filter(|s| lock(&s.queue).running).count(),
            queued: self.queued.load(Ordering::Relaxed),
            replaced: self.replaced.load(Ordering::Relaxed),
            batches: self.batches.calls.load(Ordering::Relaxed),
            batched_requests: self.batches.requests.load(Ordering::Relaxed),
            log_lines_dropped: self.template.logs.lines.load(Ordering::Relaxed),
            log_bytes_dropped: self.template.logs.bytes.load(Ordering::Relaxed),
            cpu_nanos: self.template.usage.cpu_nanos(),
            memory_bytes: self.template.usage.memory_bytes(),
            memory_limit_bytes: self
                .template
                .limits
                .memory_bytes
                .saturating_mul(slots.len()),
        }
    }

    /// Change the number of instances. New instances are warm (their `model-fn` has run)
    /// before they take traffic; removed ones finish their requests first.
    pub async fn resize(self: &Arc<Self>, count: usize) -> Result<(), LoadError> {
        let _one_at_a_time = self.resizing.lock().await;
        let current = self.slots.load().len();
        if count > current {
            let mut fresh = Vec::with_capacity(count - current);
            for _ in current..count {
                fresh.push(Slot::new(self.template.instantiate().await?));
            }
            self.slots.rcu(|slots| {
                let mut next = Vec::clone(slots);
                next.extend(fresh.iter().cloned());
                next
            });
        } else if count < current {
            self.slots.rcu(|slots| slots[..count].to_vec());
        }
        Ok(())
    }

    /// Serve one request: route it to an instance, queue for it (or be throttled), and wait
    /// for the instance's runner to serve it, bounded by the deadline once its call starts,
    /// even if the backend overruns it.
    ///
    /// The request is shared (`Arc`) so that a caller that needs it again (a retry, shadows)
    /// does not copy it.
    pub async fn invoke(
        &self,
        request: impl Into<Arc<Invocation>>,
    ) -> Result<InvocationOutput, InvokeError> {
        let request = request.into();
        let deadline = request.deadline_within(self.template.limits.deadline);
        let _in_flight = self.enter()?;
        let (slot, setup_time) = match &self.elastic {
            Some(elastic) => self.route_elastic(elastic).await?,
            None => (self.route()?, None),
        };
        let (started, started_rx) = oneshot::channel();
        let (reply, reply_rx) = oneshot::channel();
        let start_runner = {
            let mut queue = lock(&slot.0.queue);
            let counted = queue.running;
            if counted {
                let queued = self.queued.fetch_add(1, Ordering::SeqCst);
                if queued >= self.max_queue {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    drop(queue);
                    return Err(InvokeError::Throttled {
                        in_flight: self.stats().busy,
                        queued,
                    });
                }
            }
            queue.waiting.push_back(Waiter {
                request,
                started,
                reply,
                span: tracing::Span::current(),
                counted,
            });
            !std::mem::replace(&mut queue.running, true)
        };
        if start_runner {
            self.start_runner(&slot.0);
        }
        let (begun, batch) = started_rx
            .await
            .map_err(|_| InvokeError::Unavailable("the instance was closed".into()))?;
        // The epoch deadline stops guest code; this bounds a backend computation that
        // overruns it too. If its batch traps, a request waits for the batch and then for the
        // batch's requests served one by one.
        let calls = if batch > 1 { 1 + batch as u32 } else { 1 };
        let bound = deadline * calls + crate::engine::EPOCH_TICK * 10;
        match tokio::time::timeout_at((begun + bound).into(), reply_rx).await {
            Ok(Ok(result)) => result.map(|mut output| {
                output.setup_time = setup_time;
                output
            }),
            Ok(Err(_)) => Err(InvokeError::Trap {
                message: "the host task serving the request failed".into(),
            }),
            Err(_) => Err(InvokeError::Timeout(deadline)),
        }
    }

    /// Serve one request in the calling task, on an idle instance (`Unavailable` when the
    /// instance it is routed to is busy): no hand-off to a runner task. For `plinth local`,
    /// benchmarks and an inference pipeline's stages. Not cancel-safe: a caller that may be
    /// dropped mid-call must run it in a task of its own, or the instance is lost.
    pub async fn invoke_here(&self, request: &Invocation) -> Result<InvocationOutput, InvokeError> {
        let slot = self.route()?;
        {
            let mut queue = lock(&slot.0.queue);
            if queue.running {
                return Err(InvokeError::Unavailable("the instance is busy".into()));
            }
            queue.running = true;
        }
        let mut here = Here {
            pool: self,
            slot: &slot.0,
            instance: lock(&slot.0.instance).take(),
            done: false,
        };
        let result = serve_one(&self.template, &mut here.instance, &self.replaced, request).await;
        here.hand_back();
        result
    }

    /// Start the task that serves `slot`'s queue (the caller has marked it running).
    fn start_runner(&self, slot: &Arc<Slot>) {
        tokio::spawn(run(
            self.template.clone(),
            slot.clone(),
            self.replaced.clone(),
            self.queued.clone(),
            self.batches.clone(),
            self.max_batch,
        ));
    }

    /// For a serverless pool, count the request in its concurrency, or throttle it at once
    /// past `MaxConcurrency`.
    fn enter(&self) -> Result<Option<InFlight<'_>>, InvokeError> {
        let Some(elastic) = &self.elastic else {
            return Ok(None);
        };
        let max = lock(&elastic.config).max_concurrency;
        let before = elastic.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(&elastic.in_flight);
        if before >= max {
            return Err(InvokeError::Throttled {
                in_flight: before,
                queued: 0,
            });
        }
        Ok(Some(guard))
    }

    /// A serverless pool's instance for a request: an idle one (the most recently used), or
    /// one started now, a cold start, whose time is given. An instance is started only when
    /// every one is busy, so there are never more instances than requests in flight, and
    /// the pool stays within `MaxConcurrency`.
    async fn route_elastic(
        &self,
        elastic: &ElasticState,
    ) -> Result<(Outstanding, Option<std::time::Duration>), InvokeError> {
        {
            let slots = self.slots.load();
            let idle = slots
                .iter()
                .filter(|s| s.outstanding.load(Ordering::Relaxed) == 0)
                .max_by_key(|s| s.idle_since.load(Ordering::Relaxed));
            if let Some(slot) = idle {
                slot.outstanding.fetch_add(1, Ordering::SeqCst);
                return Ok((Outstanding(slot.clone()), None));
            }
        }
        let started = Instant::now();
        let instance = self.template.instantiate().await.map_err(|e| {
            InvokeError::Unavailable(format!("the variant's cold start failed: {e}"))
        })?;
        let slot = Slot::new(instance);
        slot.outstanding.fetch_add(1, Ordering::SeqCst);
        self.slots.rcu(|slots| {
            let mut next = Vec::clone(slots);
            next.push(slot.clone());
            next
        });
        elastic.cold_starts.fetch_add(1, Ordering::Relaxed);
        Ok((Outstanding(slot), Some(started.elapsed())))
    }

    /// A serverless pool's settings, if it is one.
    pub fn elastic(&self) -> Option<Elastic> {
        self.elastic.as_ref().map(|e| *lock(&e.config))
    }

    /// A serverless pool's requests in flight and its cold starts so far.
    pub fn elastic_stats(&self) -> Option<(usize, usize)> {
        self.elastic.as_ref().map(|e| {
            (
                e.in_flight.load(Ordering::Relaxed),
                e.cold_starts.load(Ordering::Relaxed),
            )
        })
    }

    /// Change a serverless pool's `MaxConcurrency` and `ProvisionedConcurrency`, warming
    /// instances up to the provisioned count (idle ones above it go with [`Self::reap_idle`]).
    pub async fn set_elastic(self: &Arc<Self>, config: Elastic) -> Result<(), LoadError> {
        let Some(elastic) = &self.elastic else {
            return Ok(());
        };
        *lock(&elastic.config) = config;
        if self.instances() < config.provisioned {
            self.resize(config.provisioned).await?;
        }
        Ok(())
    }

    /// Drop a serverless pool's instances that have been idle longer than its idle timeout,
    /// keeping the provisioned count (the most recently used); gives how many went.
    pub fn reap_idle(&self) -> usize {
        let Some(elastic) = &self.elastic else {
            return 0;
        };
        let config = *lock(&elastic.config);
        let now = now_ms();
        let timeout = config.idle_timeout.as_millis() as u64;
        let mut dropped = 0;
        self.slots.rcu(|slots| {
            let mut by_use: Vec<&Arc<Slot>> = slots.iter().collect();
            by_use.sort_by_key(|s| std::cmp::Reverse(s.idle_since.load(Ordering::Relaxed)));
            let keep: Vec<Arc<Slot>> = by_use
                .iter()
                .enumerate()
                .filter(|(i, s)| {
                    *i < config.provisioned
                        || s.outstanding.load(Ordering::SeqCst) > 0
                        || now.saturating_sub(s.idle_since.load(Ordering::Relaxed)) < timeout
                })
                .map(|(_, s)| Arc::clone(s))
                .collect();
            dropped = slots.len() - keep.len();
            keep
        });
        dropped
    }

    fn route(&self) -> Result<Outstanding, InvokeError> {
        let slots = self.slots.load();
        // On the stack for up to eight instances: routing a request allocates nothing.
        let outstanding: smallvec::SmallVec<[usize; 8]> = slots
            .iter()
            .map(|s| s.outstanding.load(Ordering::Relaxed))
            .collect();
        let index = pick_instance(self.routing, &outstanding, rand::random())
            .ok_or_else(|| InvokeError::NoInstances(self.template.variant.to_string()))?;
        let slot = slots[index].clone();
        slot.outstanding.fetch_add(1, Ordering::SeqCst);
        Ok(Outstanding(slot))
    }
}

/// How many times a runner gives way, at most, while a batch is still growing.
const MAX_YIELDS: usize = 4;

/// A slot's runner: serve its queue, a batch at a time, until it is empty; then hand the
/// instance back to the slot.
async fn run(
    template: Arc<InstanceTemplate>,
    slot: Arc<Slot>,
    replaced: Arc<AtomicUsize>,
    queued: Arc<AtomicUsize>,
    batches: Arc<Batches>,
    max_batch: usize,
) {
    let _unstuck = Unstuck(&slot, &queued);
    let mut instance = lock(&slot.instance).take();
    // A runner starts for a request that found the instance idle. It serves that request at
    // once unless the last batch here showed requests arriving together: then the others are
    // likely on their way, and a call for this one alone would cost them a whole call each.
    let mut first = true;
    loop {
        if max_batch > 1 && (!std::mem::take(&mut first) || lock(&slot.queue).concurrent) {
            // Let the tasks that read requests run before taking the next batch: on a busy
            // worker, that is what lets a batch form. Give way again while requests are
            // still arriving (never when none do: an idle endpoint adds no wait).
            let mut seen = 0;
            for _ in 0..MAX_YIELDS {
                tokio::task::yield_now().await;
                let waiting = lock(&slot.queue).waiting.len();
                if waiting == seen || waiting >= max_batch {
                    break;
                }
                seen = waiting;
            }
        }
        let batch: Vec<Waiter> = {
            let mut queue = lock(&slot.queue);
            if queue.waiting.is_empty() {
                // Under the queue lock, so that the next runner finds the instance.
                *lock(&slot.instance) = instance.take();
                queue.running = false;
                return;
            }
            let n = queue.waiting.len().min(max_batch);
            // A request with a deadline of its own (a pipeline's later stage) is served
            // alone: a batch runs under its shortest deadline.
            let n = match queue.waiting.front() {
                Some(w) if w.request.deadline.is_some() => 1,
                _ => queue
                    .waiting
                    .iter()
                    .take(n)
                    .take_while(|w| w.request.deadline.is_none())
                    .count(),
            };
            queue.concurrent = n > 1;
            queue.waiting.drain(..n).collect()
        };
        let counted = batch.iter().filter(|w| w.counted).count();
        queued.fetch_sub(counted, Ordering::SeqCst);
        // Requests whose caller went away while they waited are not run.
        let (begun, size) = (Instant::now(), batch.len());
        let batch: Vec<(Arc<Invocation>, ReplyTo)> = batch
            .into_iter()
            .filter_map(|w| {
                w.started.send((begun, size)).ok()?;
                Some((w.request, (w.reply, w.span)))
            })
            .collect();
        let results = match batch.as_slice() {
            [] => continue,
            [(request, (_, span))] => vec![
                serve_one(&template, &mut instance, &replaced, request)
                    .instrument(span.clone())
                    .await,
            ],
            _ => {
                batches.calls.fetch_add(1, Ordering::Relaxed);
                batches.requests.fetch_add(batch.len(), Ordering::Relaxed);
                serve_batch(&template, &mut instance, &replaced, &batch).await
            }
        };
        for ((_, (reply, _)), result) in batch.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}

/// A slot served in the caller's task ([`VariantPool::invoke_here`]): its instance handed
/// back when the call ends; if the call is dropped or panics instead, the instance (in an
/// unknown state) is dropped and the slot freed, a runner started for what waits there
/// (which makes a fresh instance).
struct Here<'a> {
    pool: &'a VariantPool,
    slot: &'a Arc<Slot>,
    instance: Option<GuestInstance>,
    done: bool,
}

impl Here<'_> {
    fn hand_back(&mut self) {
        self.done = true;
        let mut queue = lock(&self.slot.queue);
        *lock(&self.slot.instance) = self.instance.take();
        self.release(&mut queue);
    }

    /// Free the slot, or start a runner for the requests that arrived meanwhile.
    fn release(&self, queue: &mut SlotQueue) {
        if queue.waiting.is_empty() || tokio::runtime::Handle::try_current().is_err() {
            queue.running = false;
        } else {
            self.pool.start_runner(self.slot);
        }
    }
}

impl Drop for Here<'_> {
    fn drop(&mut self) {
        if !self.done {
            drop(self.instance.take());
            self.pool.replaced.fetch_add(1, Ordering::Relaxed);
            let mut queue = lock(&self.slot.queue);
            self.release(&mut queue);
        }
    }
}

/// If a runner panics, its slot must not stay marked as served: the requests waiting there
/// fail (their answer channels close) and the next request starts a new runner, which makes
/// a fresh instance.
struct Unstuck<'a>(&'a Slot, &'a AtomicUsize);

impl Drop for Unstuck<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut queue = lock(&self.0.queue);
            let counted = queue.waiting.drain(..).filter(|w| w.counted).count();
            self.1.fetch_sub(counted, Ordering::SeqCst);
            queue.running = false;
        }
    }
}

/// Where a request's answer goes, and its span.
type ReplyTo = (
    oneshot::Sender<Result<InvocationOutput, InvokeError>>,
    tracing::Span,
);

/// Serve several requests with one `invoke-batch` call; if it traps, replace the instance and
/// serve them one by one.
async fn serve_batch(
    template: &InstanceTemplate,
    instance: &mut Option<GuestInstance>,
    replaced: &AtomicUsize,
    batch: &[(Arc<Invocation>, ReplyTo)],
) -> Vec<Result<InvocationOutput, InvokeError>> {
    if let Err(e) = ensure_instance(template, instance).await {
        return batch.iter().map(|_| Err(e.clone())).collect();
    }
    let requests: Vec<&Invocation> = batch.iter().map(|(request, _)| &**request).collect();
    let span = tracing::debug_span!(
        "batch",
        endpoint = %template.endpoint,
        variant = %template.variant,
        requests = requests.len()
    );
    let deadline = requests
        .iter()
        .map(|r| r.deadline_within(template.limits.deadline))
        .min()
        .unwrap_or(template.limits.deadline);
    let answered = match instance.as_mut() {
        Some(guest) => {
            let call = guest
                .invoke_batch(&requests, &template.variant, deadline)
                .instrument(span);
            watched(template, deadline, call).await.unwrap_or_default()
        }
        None => None,
    };
    if let Some(results) = answered {
        if let Some(guest) = instance.as_mut() {
            guest.report_memory();
        }
        return results;
    }
    replace(template, instance, replaced).await;
    let mut results = Vec::with_capacity(batch.len());
    for (request, (_, span)) in batch {
        results.push(
            serve_one(template, instance, replaced, request)
                .instrument(span.clone())
                .await,
        );
    }
    results
}

/// Serve one request with `invoke` on the slot's instance (made first if there is none); a
/// trapped instance is replaced before the next call.
async fn serve_one(
    template: &InstanceTemplate,
    instance: &mut Option<GuestInstance>,
    replaced: &AtomicUsize,
    request: &Invocation,
) -> Result<InvocationOutput, InvokeError> {
    ensure_instance(template, instance).await?;
    let Some(guest) = instance.as_mut() else {
        return Err(InvokeError::Unavailable("no instance".into()));
    };
    let deadline = request.deadline_within(template.limits.deadline);
    let call = guest.invoke(request, &template.variant, deadline);
    let outcome = watched(template, deadline, call).await.unwrap_or(Outcome {
        result: Err(InvokeError::Timeout(deadline)),
        reusable: false,
    });
    if !outcome.reusable {
        replace(template, instance, replaced).await;
    } else if let Some(guest) = instance.as_mut() {
        guest.report_memory();
    }
    outcome.result
}

/// Run a call on an instance under the watchdog: `None` if it has not returned by its
/// `deadline` plus the grace period (the call is dropped, which unwinds the guest wherever it
/// waits; the caller must then replace the instance).
async fn watched<T>(
    template: &InstanceTemplate,
    deadline: Duration,
    call: impl std::future::Future<Output = T>,
) -> Option<T> {
    let limit = deadline + Limits::WATCHDOG_GRACE;
    match tokio::time::timeout(limit, template.usage.timed(call)).await {
        Ok(done) => Some(done),
        Err(_) => {
            tracing::error!(
                endpoint = %template.endpoint,
                variant = %template.variant,
                "an instance did not return within its deadline of {:?} plus {:?}; \
                 abandoning it for a fresh one",
                deadline,
                Limits::WATCHDOG_GRACE
            );
            None
        }
    }
}

/// Make the slot's instance if a failed replacement left it without one.
async fn ensure_instance(
    template: &InstanceTemplate,
    instance: &mut Option<GuestInstance>,
) -> Result<(), InvokeError> {
    if instance.is_none() {
        *instance = Some(
            template
                .instantiate()
                .await
                .map_err(|e| InvokeError::Unavailable(e.to_string()))?,
        );
    }
    Ok(())
}

/// Drop a failed instance and start a fresh one (left `None`, and retried by the next call,
/// if that fails).
async fn replace(
    template: &InstanceTemplate,
    instance: &mut Option<GuestInstance>,
    replaced: &AtomicUsize,
) {
    *instance = None;
    replaced.fetch_add(1, Ordering::Relaxed);
    *instance = template
        .instantiate()
        .await
        .map_err(|e| {
            tracing::error!(
                endpoint = %template.endpoint,
                variant = %template.variant,
                error = %e,
                "could not replace a failed instance; the next request will retry"
            )
        })
        .ok();
}
