//! A production variant's pool of warm instances. The instance count is the variant's
//! parallelism: each instance serves one request at a time, a request is routed to one
//! instance by the variant's routing strategy (least outstanding requests, or random) and
//! waits for it in a bounded queue; when the variant's queue is full the request is
//! throttled, never left hanging.
//!
//! Guest calls run as tokio tasks on the async workers, with no hop to another thread:
//! wasmtime runs the guest on a fiber that gives way to other tasks every epoch tick, and
//! stops it at its deadline. The call is its own task, so a client that goes away does not
//! cancel it half-way. A trapped instance is dropped and replaced before its slot takes
//! the next request. The set of instances is itself a snapshot
//! (arc-swap): resizing publishes a new set, and requests already on a removed instance
//! finish there.

use crate::engine::Runtime;
use crate::error::{InvokeError, LoadError};
use crate::guest::{GuestInstance, InstanceTemplate, Invocation, InvocationOutput, ModelPre};
use crate::limits::Limits;
use crate::nn::SharedGraphs;
use arc_swap::ArcSwap;
use plinth_policy::config::Backend;
use plinth_policy::routing::{pick_instance, RoutingStrategy};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
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
}

/// One instance and the requests routed to it.
struct Slot {
    /// One permit: the instance serves one request at a time.
    gate: Arc<Semaphore>,
    /// The instance; `None` while a request has it, or after a failed replacement.
    instance: Mutex<Option<GuestInstance>>,
    /// Requests routed here and not finished (waiting or running).
    outstanding: AtomicUsize,
}

impl Slot {
    fn new(instance: GuestInstance) -> Arc<Self> {
        Arc::new(Self {
            gate: Arc::new(Semaphore::new(1)),
            instance: Mutex::new(Some(instance)),
            outstanding: AtomicUsize::new(0),
        })
    }
}

/// Decrements a slot's outstanding count when the request ends, however it ends.
struct Outstanding(Arc<Slot>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The warm instances of one variant.
pub struct VariantPool {
    template: Arc<InstanceTemplate>,
    slots: ArcSwap<Vec<Arc<Slot>>>,
    routing: RoutingStrategy,
    max_queue: usize,
    queued: AtomicUsize,
    replaced: Arc<AtomicUsize>,
    resizing: tokio::sync::Mutex<()>,
}

impl VariantPool {
    /// Load the component, preload the artifact's graphs and start `instance_count` warm
    /// instances (each has run `model-fn`). Compiling blocks: call it from a thread that
    /// may block, inside a tokio runtime (e.g. `Handle::block_on` on a blocking thread).
    pub async fn new(runtime: &Runtime, spec: &VariantSpec) -> Result<Self, LoadError> {
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
            .nn_backend(spec.backend, spec.instance_count)
            .map_err(LoadError::Backend)?;
        let graphs = match &spec.model_dir {
            Some(dir) => SharedGraphs::preload_with(dir, &nn).map_err(|e| LoadError::Artifact {
                path: dir.display().to_string(),
                reason: format!("{e:#}"),
            })?,
            None => SharedGraphs::default(),
        };
        tracing::info!(
            endpoint = %spec.endpoint,
            variant = %spec.variant,
            backend = %nn.kind(),
            intra_op_threads = nn.intra_op_threads(),
            graphs = ?graphs.names(),
            "wasi-nn backend"
        );
        let template = Arc::new(InstanceTemplate {
            engine: runtime.engine.clone(),
            pre,
            graphs,
            nn,
            model_dir: spec.model_dir.clone(),
            environment: spec.environment.clone(),
            memory_bytes: spec.limits.memory_bytes,
            deadline: spec.limits.deadline,
            endpoint: spec.endpoint.as_str().into(),
            variant: spec.variant.as_str().into(),
        });
        // A variant with no instances still proves its component can start.
        let first = template.instantiate().await?;
        let mut slots = Vec::with_capacity(spec.instance_count);
        if spec.instance_count > 0 {
            slots.push(Slot::new(first));
            for _ in 1..spec.instance_count {
                slots.push(Slot::new(template.instantiate().await?));
            }
        }
        Ok(Self {
            template,
            slots: ArcSwap::from_pointee(slots),
            routing: spec.routing,
            max_queue: spec.limits.max_queue,
            queued: AtomicUsize::new(0),
            replaced: Arc::default(),
            resizing: tokio::sync::Mutex::new(()),
        })
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
            busy: slots
                .iter()
                .filter(|s| s.gate.available_permits() == 0)
                .count(),
            queued: self.queued.load(Ordering::Relaxed),
            replaced: self.replaced.load(Ordering::Relaxed),
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

    /// Serve one request: route it to an instance, wait for that instance (or be
    /// throttled), run the handler as its own task on the async workers, and bound the wait by the
    /// deadline even if the backend overruns it.
    pub async fn invoke(&self, request: Invocation) -> Result<InvocationOutput, InvokeError> {
        let slot = self.route()?;
        let permit = match slot.0.gate.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let queued = self.queued.fetch_add(1, Ordering::SeqCst);
                if queued >= self.max_queue {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    return Err(InvokeError::Throttled {
                        in_flight: self.stats().busy,
                        queued,
                    });
                }
                let permit = slot.0.gate.clone().acquire_owned().await;
                self.queued.fetch_sub(1, Ordering::SeqCst);
                permit.map_err(|_| InvokeError::Unavailable("the instance was closed".into()))?
            }
        };
        let template = self.template.clone();
        let replaced = self.replaced.clone();
        let deadline = template.deadline;
        // Guest logs and trap reports carry the caller's span (endpoint, variant, inference id).
        let span = tracing::Span::current();
        let task = tokio::spawn(
            async move {
                let result = serve_on(&template, &slot.0, &replaced, &request).await;
                drop(permit);
                drop(slot);
                result
            }
            .instrument(span),
        );
        // The epoch deadline stops guest code; this bounds a backend computation that
        // overruns it too.
        let grace = crate::engine::EPOCH_TICK * 10;
        match tokio::time::timeout(deadline + grace, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(InvokeError::Trap {
                message: format!("the host task failed: {join}"),
            }),
            Err(_) => Err(InvokeError::Timeout(deadline)),
        }
    }

    /// Serve one request in the calling task, on an idle instance (for `plinth local` and
    /// benchmarks).
    pub async fn invoke_here(&self, request: &Invocation) -> Result<InvocationOutput, InvokeError> {
        let slot = self.route()?;
        let _permit = slot
            .0
            .gate
            .try_acquire()
            .map_err(|_| InvokeError::Unavailable("the instance is busy".into()))?;
        serve_on(&self.template, &slot.0, &self.replaced, request).await
    }

    fn route(&self) -> Result<Outstanding, InvokeError> {
        let slots = self.slots.load();
        let outstanding: Vec<usize> = slots
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

/// Run the request on the slot's instance (the caller holds the slot's permit). A trapped
/// instance is replaced before the permit is released.
async fn serve_on(
    template: &InstanceTemplate,
    slot: &Slot,
    replaced: &AtomicUsize,
    request: &Invocation,
) -> Result<InvocationOutput, InvokeError> {
    let taken = slot
        .instance
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let mut instance = match taken {
        Some(instance) => instance,
        None => template
            .instantiate()
            .await
            .map_err(|e| InvokeError::Unavailable(e.to_string()))?,
    };
    let outcome = instance
        .invoke(request, &template.variant, template.deadline)
        .await;
    let next = if outcome.reusable {
        Some(instance)
    } else {
        drop(instance);
        replaced.fetch_add(1, Ordering::Relaxed);
        template
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
            .ok()
    };
    *slot.instance.lock().unwrap_or_else(|e| e.into_inner()) = next;
    outcome.result
}
