//! The process-wide engine: wasmtime configured with the pooling allocator and epoch
//! interruption, a linker with WASI and wasi-nn, and the compiled-component cache.

use crate::cache::ComponentCache;
use crate::error::LoadError;
use crate::guest::HostState;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, Linker};
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
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_instances: 1000,
            max_memory_bytes: 4 << 30,
        }
    }
}

/// The engine, linker and cache shared by every variant.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    cache: ComponentCache,
    ticker_stop: Arc<AtomicBool>,
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
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(32)
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
        wasmtime_wasi_nn::wit::add_to_linker(&mut linker, HostState::nn_view)?;

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

        Ok(Self {
            cache: ComponentCache::new(&engine, config.cache_dir.clone()),
            engine,
            linker,
            ticker_stop,
        })
    }

    /// Load a component from disk, through the compiled-component cache.
    pub fn load_component(&self, path: &Path) -> Result<Component, LoadError> {
        self.cache.load(&self.engine, path)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
