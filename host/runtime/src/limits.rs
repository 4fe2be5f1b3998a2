//! Per-instance sandbox limits and their defaults: what a model may configure
//! ([`Limits`]) and the fixed caps every instance runs under.

use std::time::Duration;

/// Limits applied to every instance of a variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Host memory one instance may hold, in bytes: its linear memories together with the
    /// bytes of its wasi-nn tensors and of the graphs it loads from bytes. Default: 256 MiB.
    pub memory_bytes: usize,
    /// How long one invocation (`input-fn` + `predict-fn` + `output-fn`, or one
    /// `invoke-batch`) may run. Default: 60 s, SageMaker's container timeout.
    pub deadline: Duration,
    /// How long instantiating the component and its `model-fn` may take (SageMaker's
    /// `ContainerStartupHealthCheckTimeoutInSeconds`). Default: 60 s.
    pub startup_deadline: Duration,
    /// The largest response body an invocation may return, in bytes. Default: 6 MiB,
    /// SageMaker's cap on a real-time response.
    pub max_response_bytes: usize,
    /// Whether the guest may load a wasi-nn graph from bytes it supplies (`graph.load`), as
    /// well as the artifact's graphs (`load-by-name`). Default: no.
    pub graphs_from_bytes: bool,
    /// Requests that may wait for a busy variant before new ones are throttled.
    /// Default: 128.
    pub max_queue: usize,
    /// The most queued requests one call to an instance serves (`invoke-batch`); 1, the
    /// default, serves every request on its own.
    pub max_batch: usize,
}

impl Limits {
    /// Default host memory per instance: 256 MiB.
    pub const DEFAULT_MEMORY_BYTES: usize = 256 << 20;
    /// Default invocation deadline: 60 s.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
    /// Default `model-fn` deadline: 60 s.
    pub const DEFAULT_STARTUP_DEADLINE: Duration = Duration::from_secs(60);
    /// Default cap on a response body: 6 MiB.
    pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 6 << 20;
    /// Default bound on requests queued per variant: 128.
    pub const DEFAULT_MAX_QUEUE: usize = 128;
    /// Default batch size: 1, no batching.
    pub const DEFAULT_MAX_BATCH: usize = 1;
    /// The largest batch a variant may ask for.
    pub const MAX_BATCH: usize = 256;

    /// Resource handles (files, streams, pollables, tensors, graphs, execution contexts...)
    /// one instance may hold at once.
    pub const MAX_RESOURCE_HANDLES: usize = 1024;
    /// Files and directories one instance may hold open at once (each holds a host file
    /// descriptor).
    pub const MAX_OPEN_FILES: usize = 64;
    /// Linear memories one instance may have.
    pub const MAX_MEMORIES: usize = 4;
    /// Tables one instance may have.
    pub const MAX_TABLES: usize = 8;
    /// Elements one table may grow to.
    pub const MAX_TABLE_ELEMENTS: usize = 100_000;
    /// Core instances one component instance may create.
    pub const MAX_CORE_INSTANCES: usize = 32;
    /// Lines of stdout and stderr together one instance may log per second; the rest are
    /// dropped, counted and summarised.
    pub const LOG_LINES_PER_SECOND: u32 = 1000;
    /// Bytes of stdout and stderr together one instance may log per second.
    pub const LOG_BYTES_PER_SECOND: usize = 1 << 20;
    /// How long past its deadline an instance may stay in a call before the watchdog
    /// abandons it and starts a fresh one.
    pub const WATCHDOG_GRACE: Duration = Duration::from_millis(250);
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            deadline: Self::DEFAULT_DEADLINE,
            startup_deadline: Self::DEFAULT_STARTUP_DEADLINE,
            max_response_bytes: Self::DEFAULT_MAX_RESPONSE_BYTES,
            graphs_from_bytes: false,
            max_queue: Self::DEFAULT_MAX_QUEUE,
            max_batch: Self::DEFAULT_MAX_BATCH,
        }
    }
}
