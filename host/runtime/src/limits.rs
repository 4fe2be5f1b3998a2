//! Per-instance sandbox limits and their defaults.

use std::time::Duration;

/// Limits applied to every instance of a variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Linear memory one instance may grow to, in bytes. Default: 256 MiB.
    ///
    /// This counts guest memory only; tensors the wasi-nn backend holds on the host are
    /// not included.
    pub memory_bytes: usize,
    /// How long one invocation (`input-fn` + `predict-fn` + `output-fn`) or one `model-fn`
    /// may run. Default: 60 s, SageMaker's container timeout.
    pub deadline: Duration,
    /// Requests that may wait for a busy variant before new ones are throttled.
    /// Default: 128.
    pub max_queue: usize,
    /// The most queued requests one call to an instance serves (`invoke-batch`); 1, the
    /// default, serves every request on its own.
    pub max_batch: usize,
}

impl Limits {
    /// Default linear memory per instance: 256 MiB.
    pub const DEFAULT_MEMORY_BYTES: usize = 256 << 20;
    /// Default invocation deadline: 60 s.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
    /// Default bound on requests queued per variant: 128.
    pub const DEFAULT_MAX_QUEUE: usize = 128;
    /// Default batch size: 1, no batching.
    pub const DEFAULT_MAX_BATCH: usize = 1;
    /// The largest batch a variant may ask for.
    pub const MAX_BATCH: usize = 256;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            deadline: Self::DEFAULT_DEADLINE,
            max_queue: Self::DEFAULT_MAX_QUEUE,
            max_batch: Self::DEFAULT_MAX_BATCH,
        }
    }
}
