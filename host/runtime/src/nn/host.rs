//! The wasi-nn host the guest calls: the WIT interfaces `graph`, `tensor`, `inference` and
//! `errors`, served over the variant's backend ([`NnBackend`]) and preloaded graphs
//! ([`SharedGraphs`]), with every host resource counted against the instance:
//!
//! - a tensor's bytes, and a graph loaded from the guest's bytes, are charged to the
//!   instance's memory budget ([`MemoryBudget`]) while the guest holds them; past it the call
//!   traps with the limit's message;
//! - every handle goes in the store's resource table, which is capped
//!   ([`Limits::MAX_RESOURCE_HANDLES`]);
//! - a graph from the guest's bytes is refused unless the model allows it
//!   (`PlinthLimits.AllowGraphsFromBytes`): it would run arbitrary backend work;
//! - `load` and `compute` run on the bounded [`BackendPool`], not on the async workers, and
//!   the guest waits for them no longer than its call's deadline: past it the call traps as a
//!   timeout ([`DeadlineExceeded`]) and the instance is replaced. The one exception: a
//!   graph whose computations have shown themselves shorter than a hop to the pool costs
//!   runs them inline ([`plinth_policy::compute_placement`]; each graph's [`History`]).

use super::{NnBackend, SharedGraphs};
use crate::blocking::BackendPool;
use crate::budget::{Charge, MemoryBudget};
use crate::error::{DeadlineExceeded, HostLimit};
use crate::limits::Limits;
use plinth_policy::compute_placement::ComputeHistory;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable, ResourceTableError};
use wasmtime_wasi_nn::backend::NamedTensor as BackendNamedTensor;
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

mod generated {
    wasmtime::component::bindgen!({
        world: "ml",
        path: "../../wit/deps/wasi-nn",
        with: {
            "wasi:nn/graph.graph": super::NnGraph,
            "wasi:nn/tensor.tensor": super::NnTensor,
            "wasi:nn/inference.graph-execution-context": super::NnExecution,
            "wasi:nn/errors.error": super::NnError,
        },
        imports: {
            "wasi:nn/graph.load": async | trappable,
            "wasi:nn/inference.[method]graph-execution-context.compute": async | trappable,
            default: trappable,
        },
    });
}

use generated::wasi::nn::{errors, graph, inference, tensor};

/// A graph the guest holds: preloaded (shared, not charged) or loaded from its bytes
/// (charged by their size).
#[allow(unreachable_pub)] // named by the generated bindings
pub struct NnGraph {
    graph: Graph,
    history: Arc<History>,
    _charge: Option<Charge>,
}

/// What a graph's computations have shown of their length, shared by its execution contexts.
#[derive(Default)]
pub(crate) struct History(Mutex<ComputeHistory>);

impl History {
    fn now(&self) -> ComputeHistory {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, input_bytes: usize, took: Duration) {
        let mut history = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *history = history.after(input_bytes, took);
    }
}

/// A tensor the guest holds, charged by its data's size.
#[allow(unreachable_pub)] // named by the generated bindings
pub struct NnTensor {
    tensor: Tensor,
    _charge: Charge,
}

/// An execution context (shared with the pool thread that runs its `compute`) and its
/// graph's history.
#[allow(unreachable_pub)] // named by the generated bindings
pub struct NnExecution {
    context: Arc<Mutex<ExecutionContext>>,
    history: Arc<History>,
}

/// A wasi-nn error resource.
#[allow(unreachable_pub)] // named by the generated bindings
pub struct NnError {
    code: errors::ErrorCode,
    message: String,
}

/// What one instance's wasi-nn host works with, fixed when the instance is made.
pub(crate) struct NnHost {
    pub(crate) graphs: SharedGraphs,
    pub(crate) backend: NnBackend,
    pub(crate) graphs_from_bytes: bool,
    pub(crate) budget: Arc<MemoryBudget>,
    pub(crate) pool: BackendPool,
}

/// When the call in progress must end, and its deadline (for the message).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallDeadline {
    pub(crate) at: Instant,
    pub(crate) deadline: Duration,
}

/// The wasi-nn host's view of an instance's state, for one host call.
pub(crate) struct NnView<'a> {
    pub(crate) host: &'a NnHost,
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) call: CallDeadline,
}

struct HasNn;

impl HasData for HasNn {
    type Data<'a> = NnView<'a>;
}

/// Add the wasi-nn interfaces to `linker`, served through `view`.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> NnView<'_>,
) -> wasmtime::Result<()> {
    graph::add_to_linker::<_, HasNn>(linker, view)?;
    tensor::add_to_linker::<_, HasNn>(linker, view)?;
    inference::add_to_linker::<_, HasNn>(linker, view)?;
    errors::add_to_linker::<_, HasNn>(linker, view)?;
    Ok(())
}

/// A resource table error as the guest's failure: a full table is the handle limit.
pub(crate) fn table_error(error: ResourceTableError) -> wasmtime::Error {
    match error {
        ResourceTableError::Full => wasmtime::Error::new(HostLimit::ResourceHandles {
            limit: Limits::MAX_RESOURCE_HANDLES,
        }),
        other => wasmtime::Error::new(other),
    }
}

type NnResult<T> = wasmtime::Result<Result<T, Resource<NnError>>>;

impl NnView<'_> {
    fn push<T: Send + 'static>(&mut self, value: T) -> wasmtime::Result<Resource<T>> {
        self.table.push(value).map_err(table_error)
    }

    /// Answer the guest with a wasi-nn error (logged with its cause: the guest may not
    /// show it).
    fn fail<T>(&mut self, code: errors::ErrorCode, message: impl Into<String>) -> NnResult<T> {
        let message = message.into();
        tracing::warn!(target: "plinth::nn", ?code, "{message}");
        Ok(Err(self.push(NnError { code, message })?))
    }

    /// A tensor charged to the instance's budget, or the limit's trap.
    fn charged(&self, tensor: Tensor, what: &str) -> wasmtime::Result<NnTensor> {
        let charge = self
            .host
            .budget
            .charge(tensor.data.len(), what)
            .map_err(wasmtime::Error::new)?;
        Ok(NnTensor {
            tensor,
            _charge: charge,
        })
    }
}

/// Run `job` on the backend pool, waiting no longer than the call's deadline.
async fn off_the_workers<T: Send + 'static>(
    pool: &BackendPool,
    call: CallDeadline,
    during: &'static str,
    job: impl FnOnce() -> T + Send + 'static,
) -> wasmtime::Result<Result<T, String>> {
    match tokio::time::timeout_at(call.at.into(), pool.run(job)).await {
        Ok(done) => Ok(done),
        Err(_) => Err(wasmtime::Error::new(DeadlineExceeded {
            deadline: call.deadline,
            during,
        })),
    }
}

impl graph::Host for NnView<'_> {
    async fn load(
        &mut self,
        builders: Vec<Vec<u8>>,
        encoding: graph::GraphEncoding,
        target: graph::ExecutionTarget,
    ) -> NnResult<Resource<NnGraph>> {
        use errors::ErrorCode;
        if !self.host.graphs_from_bytes {
            return self.fail(
                ErrorCode::Security,
                "loading a graph from the guest's bytes is not allowed for this model: ship the \
                 graph in the model artifact and load it by name, or create the model with \
                 PlinthLimits.AllowGraphsFromBytes set to true",
            );
        }
        if !matches!(encoding, graph::GraphEncoding::Onnx) {
            return self.fail(
                ErrorCode::InvalidEncoding,
                format!("this host loads ONNX graphs only, not {encoding:?}"),
            );
        }
        let Ok([bytes]) = <[Vec<u8>; 1]>::try_from(builders) else {
            return self.fail(
                ErrorCode::InvalidArgument,
                "an ONNX graph is loaded from exactly one builder",
            );
        };
        if !matches!(target, graph::ExecutionTarget::Cpu) {
            tracing::debug!(target: "plinth::nn", "the backends run on the CPU; {target:?} requested");
        }
        // The serialized graph stands for the memory its loaded form holds.
        let charge = self
            .host
            .budget
            .charge(bytes.len(), "a graph loaded from bytes")
            .map_err(wasmtime::Error::new)?;
        let backend = self.host.backend.clone();
        let pool = self.host.pool.clone();
        let loaded = off_the_workers(&pool, self.call, "a wasi-nn graph load", move || {
            backend
                .load(&bytes)
                .map(|(graph, _, _)| graph)
                .map_err(|e| format!("cannot load the ONNX graph: {e:#}"))
        })
        .await?;
        match loaded {
            Ok(Ok(graph)) => {
                let graph = NnGraph {
                    graph,
                    history: Arc::default(),
                    _charge: Some(charge),
                };
                Ok(Ok(self.push(graph)?))
            }
            Ok(Err(e)) | Err(e) => self.fail(ErrorCode::InvalidArgument, e),
        }
    }

    fn load_by_name(&mut self, name: String) -> NnResult<Resource<NnGraph>> {
        match self.host.graphs.get(&name) {
            Some(preloaded) => {
                let graph = NnGraph {
                    graph: preloaded.graph.clone(),
                    history: preloaded.history.clone(),
                    _charge: None,
                };
                Ok(Ok(self.push(graph)?))
            }
            None => {
                let mut known = self.host.graphs.names();
                known.sort_unstable();
                let message = format!(
                    "no graph named {name:?} in the model artifact; its graphs are {known:?} \
                     (each *.onnx file at its top, by file stem)"
                );
                // Not a warning: guests ask by name first and fall back to reading a file
                // (the SDK's `Graph::load`); if that fails too, the guest's error says so.
                tracing::debug!(target: "plinth::nn", "{message}");
                Ok(Err(self.push(NnError {
                    code: errors::ErrorCode::NotFound,
                    message,
                })?))
            }
        }
    }
}

impl graph::HostGraph for NnView<'_> {
    fn init_execution_context(
        &mut self,
        graph: Resource<NnGraph>,
    ) -> NnResult<Resource<NnExecution>> {
        let graph = self.table.get(&graph)?;
        match graph.graph.init_execution_context() {
            Ok(context) => {
                let context = NnExecution {
                    context: Arc::new(Mutex::new(context)),
                    history: graph.history.clone(),
                };
                Ok(Ok(self.push(context)?))
            }
            Err(e) => self.fail(errors::ErrorCode::RuntimeError, e.to_string()),
        }
    }

    fn drop(&mut self, graph: Resource<NnGraph>) -> wasmtime::Result<()> {
        self.table.delete(graph)?;
        Ok(())
    }
}

impl inference::Host for NnView<'_> {}

impl inference::HostGraphExecutionContext for NnView<'_> {
    async fn compute(
        &mut self,
        context: Resource<NnExecution>,
        inputs: Vec<(String, Resource<NnTensor>)>,
    ) -> NnResult<Vec<(String, Resource<NnTensor>)>> {
        let mut named = Vec::with_capacity(inputs.len());
        // The inputs stay charged until the run has used them.
        let mut charges = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            let NnTensor { tensor, _charge } = self.table.delete(tensor)?;
            named.push(BackendNamedTensor { name, tensor });
            charges.push(_charge);
        }
        let NnExecution { context, history } = self.table.get(&context)?;
        let (context, history) = (context.clone(), history.clone());
        let input_bytes = named.iter().map(|t| t.tensor.data.len()).sum();
        let inline = history.now().inline(input_bytes);
        let run = move || {
            let started = Instant::now();
            let mut context = context.lock().unwrap_or_else(|e| e.into_inner());
            let outputs = context.compute_with_io(named);
            history.record(input_bytes, started.elapsed());
            drop(charges);
            outputs.map_err(|e| e.to_string())
        };
        let ran = if inline {
            Ok(run())
        } else {
            let pool = self.host.pool.clone();
            off_the_workers(&pool, self.call, "a wasi-nn compute", run).await?
        };
        let outputs = match ran {
            Ok(Ok(outputs)) => outputs,
            Ok(Err(e)) | Err(e) => return self.fail(errors::ErrorCode::RuntimeError, e),
        };
        let mut answered = Vec::with_capacity(outputs.len());
        for BackendNamedTensor { name, tensor } in outputs {
            let tensor = self.charged(tensor, "an output tensor")?;
            answered.push((name, self.push(tensor)?));
        }
        Ok(Ok(answered))
    }

    fn drop(&mut self, context: Resource<NnExecution>) -> wasmtime::Result<()> {
        self.table.delete(context)?;
        Ok(())
    }
}

impl tensor::Host for NnView<'_> {}

impl tensor::HostTensor for NnView<'_> {
    fn new(
        &mut self,
        dimensions: Vec<u32>,
        ty: tensor::TensorType,
        data: Vec<u8>,
    ) -> wasmtime::Result<Resource<NnTensor>> {
        let tensor = self.charged(Tensor::new(dimensions, to_backend(ty), data), "a tensor")?;
        self.push(tensor)
    }

    fn dimensions(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&tensor)?.tensor.dimensions.clone())
    }

    fn ty(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<tensor::TensorType> {
        Ok(from_backend(self.table.get(&tensor)?.tensor.ty))
    }

    fn data(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&tensor)?.tensor.data.clone())
    }

    fn drop(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<()> {
        self.table.delete(tensor)?;
        Ok(())
    }
}

impl errors::Host for NnView<'_> {}

impl errors::HostError for NnView<'_> {
    fn code(&mut self, error: Resource<NnError>) -> wasmtime::Result<errors::ErrorCode> {
        Ok(self.table.get(&error)?.code)
    }

    fn data(&mut self, error: Resource<NnError>) -> wasmtime::Result<String> {
        Ok(self.table.get(&error)?.message.clone())
    }

    fn drop(&mut self, error: Resource<NnError>) -> wasmtime::Result<()> {
        self.table.delete(error)?;
        Ok(())
    }
}

/// The backends' tensor type for the guest's.
fn to_backend(ty: tensor::TensorType) -> wasmtime_wasi_nn::wit::TensorType {
    use tensor::TensorType as G;
    use wasmtime_wasi_nn::wit::TensorType as B;
    match ty {
        G::Fp16 => B::Fp16,
        G::Fp32 => B::Fp32,
        G::Fp64 => B::Fp64,
        G::Bf16 => B::Bf16,
        G::U8 => B::U8,
        G::I32 => B::I32,
        G::I64 => B::I64,
    }
}

/// The guest's tensor type for the backends'.
fn from_backend(ty: wasmtime_wasi_nn::wit::TensorType) -> tensor::TensorType {
    use tensor::TensorType as G;
    use wasmtime_wasi_nn::wit::TensorType as B;
    match ty {
        B::Fp16 => G::Fp16,
        B::Fp32 => G::Fp32,
        B::Fp64 => G::Fp64,
        B::Bf16 => G::Bf16,
        B::U8 => G::U8,
        B::I32 => G::I32,
        B::I64 => G::I64,
    }
}
