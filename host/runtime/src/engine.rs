//! The process-wide engine: wasmtime configured with the pooling allocator and epoch
//! interruption, a linker with WASI and wasi-nn, the compiled-component cache and the cache
//! of preloaded graphs in use.

use crate::blocking::BackendPool;
use crate::cache::ComponentCache;
use crate::error::{HostLimit, LoadError};
use crate::guest::HostState;
use crate::limits::Limits;
use crate::nn::{GraphCache, NnBackend, SharedGraphs};
use crate::ort_library::OnnxRuntime;
use plinth_policy::config::Backend;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, Linker, Resource};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; deadlines are rounded up to this.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Settings fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached. `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Component instances the pooling allocator reserves room for (all variants together).
    /// Default: 1000.
    pub max_instances: u32,
    /// The largest linear memory any instance may have; each variant's own limit is at most
    /// this. Default: 4 GiB.
    pub max_memory_bytes: usize,
    /// ONNX Runtime, if its library was loaded ([`OnnxRuntime::load`]): models may then ask
    /// for it, and those asking for [`Backend::Auto`] get it. `None` (default): tract only.
    pub onnxruntime: Option<OnnxRuntime>,
    /// Intra-op threads of each ONNX Runtime session. `None` (default): the cores divided
    /// by the variant's instance count, at least 1
    /// ([`default_intra_op_threads`](crate::ort_library::default_intra_op_threads)).
    pub onnxruntime_intra_op_threads: Option<usize>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_instances: 1000,
            max_memory_bytes: 4 << 30,
            onnxruntime: None,
            onnxruntime_intra_op_threads: None,
        }
    }
}

/// The engine, linker and cache shared by every variant.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    cache: ComponentCache,
    graphs: GraphCache,
    pub(crate) backend_pool: BackendPool,
    ticker_stop: Arc<AtomicBool>,
    onnxruntime: Option<OnnxRuntime>,
    #[cfg_attr(not(feature = "onnxruntime"), allow(dead_code))]
    intra_op_threads: Option<usize>,
}

impl Runtime {
    /// Build the engine and start its epoch ticker.
    pub fn new(config: &RuntimeConfig) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 4)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 4)
            .total_stacks(config.max_instances)
            .max_memories_per_component(Limits::MAX_MEMORIES as u32)
            .max_tables_per_component(Limits::MAX_TABLES as u32)
            .max_core_instances_per_component(Limits::MAX_CORE_INSTANCES as u32)
            .max_component_instance_size(1 << 20)
            .max_memory_size(config.max_memory_bytes);
        let mut wasm = Config::new();
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable)
            .wasm_component_model(true);
        if std::env::var("PLINTH_WASM_PROFILER").as_deref() == Ok("perfmap") {
            // Name JIT code for `perf` (/tmp/perf-<pid>.map).
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wasm)?;

        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        count_open_files(&mut linker)?;
        crate::nn::host::add_to_linker(&mut linker, HostState::nn_view)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.weak();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("plinth-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        match engine.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => break,
                        }
                    }
                })?;
        }

        let backend_pool = BackendPool::per_core();
        tracing::debug!(
            threads = backend_pool.threads(),
            "wasi-nn load and compute run on a pool of this many threads"
        );
        Ok(Self {
            cache: ComponentCache::new(&engine, config.cache_dir.clone()),
            graphs: GraphCache::default(),
            backend_pool,
            engine,
            linker,
            ticker_stop,
            onnxruntime: config.onnxruntime.clone(),
            intra_op_threads: config.onnxruntime_intra_op_threads.map(|n| n.max(1)),
        })
    }

    /// ONNX Runtime, if this runtime uses it.
    pub fn onnxruntime(&self) -> Option<&OnnxRuntime> {
        self.onnxruntime.as_ref()
    }

    /// The backend that serves a model asking for `requested` (`Auto`: ONNX Runtime when
    /// this runtime has it, tract otherwise), or why none can.
    pub fn backend_for(&self, requested: Backend) -> Result<Backend, String> {
        match requested {
            Backend::Tract => Ok(Backend::Tract),
            Backend::Auto if self.onnxruntime.is_some() => Ok(Backend::OnnxRuntime),
            Backend::Auto => Ok(Backend::Tract),
            Backend::OnnxRuntime if self.onnxruntime.is_some() => Ok(Backend::OnnxRuntime),
            Backend::OnnxRuntime if cfg!(feature = "onnxruntime") => Err(
                "the model asks for the OnnxRuntime backend, but this server has no ONNX \
                 Runtime library: start it with --onnxruntime PATH (or ORT_DYLIB_PATH) naming \
                 libonnxruntime.so from the onnxruntime wheel, or give the model the Tract or \
                 Auto backend"
                    .into(),
            ),
            Backend::OnnxRuntime => Err(
                "the model asks for the OnnxRuntime backend, but this Plinth was built without \
                 ONNX Runtime support (the `onnxruntime` cargo feature); give the model the \
                 Tract or Auto backend"
                    .into(),
            ),
        }
    }

    /// The resolved backend, with its settings, for a variant of `instances` instances.
    #[cfg_attr(not(feature = "onnxruntime"), allow(unused_variables))]
    pub(crate) fn nn_backend(
        &self,
        requested: Backend,
        instances: usize,
    ) -> Result<NnBackend, String> {
        match self.backend_for(requested)? {
            #[cfg(feature = "onnxruntime")]
            Backend::OnnxRuntime => Ok(NnBackend::OnnxRuntime(
                crate::nn::ort_backend::SessionSettings {
                    intra_op_threads: self
                        .intra_op_threads
                        .unwrap_or_else(|| crate::ort_library::default_intra_op_threads(instances)),
                },
            )),
            #[cfg(not(feature = "onnxruntime"))]
            Backend::OnnxRuntime => {
                Err("this Plinth was built without ONNX Runtime support".into())
            }
            Backend::Tract | Backend::Auto => Ok(NnBackend::Tract),
        }
    }

    /// Whether `backend` (resolved as for a model asking for it) loads the ONNX graph
    /// `bytes`, or why not (`plinth inspect`).
    pub fn try_load_graph(&self, backend: Backend, bytes: &[u8]) -> Result<Backend, String> {
        let nn = self.nn_backend(backend, 1)?;
        nn.load(bytes).map_err(|e| format!("{e:#}"))?;
        Ok(nn.kind())
    }

    /// Remove compiled components from the on-disk cache unless their component's digest
    /// (hex SHA-256 of its bytes) is in `keep`; gives how many entries went.
    pub fn collect_compiled(&self, keep: &std::collections::HashSet<String>) -> usize {
        self.cache.collect_garbage(keep)
    }

    /// Load a component from disk, through the compiled-component cache: while the returned
    /// component is held, loading the same component again returns the same compiled copy.
    pub fn load_component(&self, path: &Path) -> Result<Arc<Component>, LoadError> {
        self.cache.load(&self.engine, path)
    }

    /// Preload the `*.onnx` graphs of a model artifact on `backend`, through the cache of
    /// graphs in use: while the returned graphs are held, the same files on the same backend
    /// load as the same copy.
    pub(crate) fn preload_graphs(
        &self,
        model_dir: &Path,
        backend: &NnBackend,
    ) -> anyhow::Result<SharedGraphs> {
        self.graphs.preload(model_dir, backend)
    }
}

/// Put the open-files cap in front of WASI's `open-at`: past
/// [`Limits::MAX_OPEN_FILES`] descriptors held, the call traps with the limit's message.
fn count_open_files(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::filesystem::types::{
        DescriptorFlags, ErrorCode, Host, HostDescriptor, OpenFlags, PathFlags,
    };
    type Args = (
        Resource<Descriptor>,
        PathFlags,
        String,
        OpenFlags,
        DescriptorFlags,
    );
    linker.allow_shadowing(true);
    linker.instance(WASI_FILESYSTEM_TYPES)?.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store, (dir, path_flags, path, open_flags, flags): Args| {
            Box::new(async move {
                let state: &mut HostState = store.data_mut();
                if state.open_files() >= Limits::MAX_OPEN_FILES {
                    return Err(wasmtime::Error::new(HostLimit::OpenFiles {
                        limit: Limits::MAX_OPEN_FILES,
                    }));
                }
                let mut view = state.filesystem();
                let opened: Result<Resource<Descriptor>, ErrorCode> =
                    match view.open_at(dir, path_flags, path, open_flags, flags).await {
                        Ok(file) => Ok(file),
                        Err(e) => Err(view.convert_error_code(e)?),
                    };
                Ok((opened,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The versioned name under which WASI's filesystem types are linked.
const WASI_FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
