//! A production variant's pool of warm instances. The instance count is the variant's
//! parallelism: a request takes an idle instance, waits in a bounded queue when all are
//! busy, and is throttled when the queue is full. Guest calls run on tokio's blocking pool;
//! a trapped instance is dropped and replaced before its slot is given back.

use crate::engine::Runtime;
use crate::error::{InvokeError, LoadError};
use crate::guest::{GuestInstance, InstanceTemplate, Invocation, InvocationOutput, ModelPre};
use crate::limits::Limits;
use crate::nn::SharedGraphs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

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
    /// Warm instances, i.e. requests served at once. At least 1.
    pub instance_count: usize,
    /// Sandbox limits.
    pub limits: Limits,
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

/// The warm instances of one variant.
pub struct VariantPool {
    template: Arc<InstanceTemplate>,
    idle: Arc<Mutex<Vec<GuestInstance>>>,
    permits: Arc<Semaphore>,
    instances: usize,
    max_queue: usize,
    queued: AtomicUsize,
    replaced: Arc<AtomicUsize>,
}

impl VariantPool {
    /// Load the component, preload the artifact's graphs and start `instance_count` warm
    /// instances (each has run `model-fn`). Blocking: call it off the async workers.
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
            reason: format!("{e:#}"),
        })?;
        let graphs = match &spec.model_dir {
            Some(dir) => SharedGraphs::preload(dir).map_err(|e| LoadError::Artifact {
                path: dir.display().to_string(),
                reason: format!("{e:#}"),
            })?,
            None => SharedGraphs::default(),
        };
        let template = Arc::new(InstanceTemplate {
            engine: runtime.engine.clone(),
            pre,
            graphs,
            model_dir: spec.model_dir.clone(),
            environment: spec.environment.clone(),
            memory_bytes: spec.limits.memory_bytes,
            deadline: spec.limits.deadline,
            endpoint: spec.endpoint.as_str().into(),
            variant: spec.variant.as_str().into(),
        });
        let instances = spec.instance_count.max(1);
        let idle = (0..instances)
            .map(|_| template.instantiate())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            template,
            idle: Arc::new(Mutex::new(idle)),
            permits: Arc::new(Semaphore::new(instances)),
            instances,
            max_queue: spec.limits.max_queue,
            queued: AtomicUsize::new(0),
            replaced: Arc::default(),
        })
    }

    /// The variant's name.
    pub fn variant(&self) -> &str {
        &self.template.variant
    }

    /// Current load.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            instances: self.instances,
            busy: self.instances - self.permits.available_permits(),
            queued: self.queued.load(Ordering::Relaxed),
            replaced: self.replaced.load(Ordering::Relaxed),
        }
    }

    /// Serve one request: wait for an instance (or be throttled), run the handler on the
    /// blocking pool, and bound the wait by the deadline even if the backend overruns it.
    pub async fn invoke(&self, request: Invocation) -> Result<InvocationOutput, InvokeError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let queued = self.queued.fetch_add(1, Ordering::SeqCst);
                if queued >= self.max_queue {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    return Err(InvokeError::Throttled {
                        in_flight: self.instances,
                        queued,
                    });
                }
                let permit = self.permits.clone().acquire_owned().await;
                self.queued.fetch_sub(1, Ordering::SeqCst);
                permit
                    .map_err(|_| InvokeError::Unavailable("the variant is shutting down".into()))?
            }
        };
        let template = self.template.clone();
        let idle = self.idle.clone();
        let replaced = self.replaced.clone();
        let deadline = template.deadline;
        // Guest logs and trap reports carry the caller's span (endpoint, variant, inference id).
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let result = run_on_pool(&template, &idle, &replaced, &request);
            drop(permit);
            result
        });
        // The epoch deadline stops guest code; this bounds a backend computation that
        // overruns it too. The instance returns to the pool when that computation ends.
        let grace = crate::engine::EPOCH_TICK * 10;
        match tokio::time::timeout(deadline + grace, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(InvokeError::Trap {
                message: format!("the host task failed: {join}"),
            }),
            Err(_) => Err(InvokeError::Timeout(deadline)),
        }
    }

    /// Serve one request on the calling thread (for `plinth local` and benchmarks).
    pub fn invoke_blocking(&self, request: &Invocation) -> Result<InvocationOutput, InvokeError> {
        run_on_pool(&self.template, &self.idle, &self.replaced, request)
    }
}

fn run_on_pool(
    template: &InstanceTemplate,
    idle: &Mutex<Vec<GuestInstance>>,
    replaced: &AtomicUsize,
    request: &Invocation,
) -> Result<InvocationOutput, InvokeError> {
    let taken = idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let mut instance = match taken {
        Some(instance) => instance,
        None => template
            .instantiate()
            .map_err(|e| InvokeError::Unavailable(e.to_string()))?,
    };
    let outcome = instance.invoke(request, &template.variant, template.deadline);
    if outcome.reusable {
        idle.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(instance);
    } else {
        drop(instance);
        replaced.fetch_add(1, Ordering::Relaxed);
        match template.instantiate() {
            Ok(fresh) => idle.lock().unwrap_or_else(|e| e.into_inner()).push(fresh),
            Err(e) => tracing::error!(
                endpoint = %template.endpoint,
                variant = %template.variant,
                error = %e,
                "could not replace a failed instance; the next request will retry"
            ),
        }
    }
    outcome.result
}
