//! Errors from loading a variant and from invoking it.

use std::time::Duration;
use thiserror::Error;

/// Why a variant could not be loaded. Raised when a variant is deployed, never at request
/// time.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The component file could not be read.
    #[error("cannot read component {path}: {error}")]
    ComponentUnreadable {
        /// The path that was tried.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The bytes are not a WebAssembly component wasmtime accepts.
    #[error("{path} is not a valid WebAssembly component: {reason}")]
    NotAComponent {
        /// The component's path.
        path: String,
        /// wasmtime's explanation.
        reason: String,
    },
    /// The component does not implement the `plinth:model/model` world.
    #[error(
        "{path} does not implement the plinth:model@0.2.0 `model` world: {reason}. \
         Build it with plinth-guest-sdk and its export_handler! macro"
    )]
    WrongWorld {
        /// The component's path.
        path: String,
        /// What was missing or mismatched.
        reason: String,
    },
    /// The model artifact could not be prepared or a graph in it could not be loaded.
    #[error("model artifact {path}: {reason}")]
    Artifact {
        /// The artifact's path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Every instance the runtime reserves room for is in use (`RuntimeConfig::max_instances`):
    /// another can start once one is dropped.
    #[error("{0}")]
    NoInstanceSlot(String),
    /// The model's wasi-nn backend is not available here (e.g. ONNX Runtime without its
    /// library).
    #[error("{0}")]
    Backend(String),
    /// `model-fn` returned an error or trapped.
    #[error("model_fn failed: {0}")]
    ModelFn(String),
    /// Any other engine failure.
    #[error("runtime error: {0}")]
    Engine(String),
}

/// The kind of a failure the guest reported through `handler-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerErrorKind {
    /// `bad-request`: 400.
    BadRequest,
    /// `unsupported-media-type`: 415.
    UnsupportedMediaType,
    /// `not-acceptable`: 406.
    NotAcceptable,
    /// `model-error`: 500.
    ModelError,
}

impl HandlerErrorKind {
    /// The HTTP status the handler would have answered with: SageMaker's
    /// `OriginalStatusCode`.
    pub fn original_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::UnsupportedMediaType => 415,
            Self::NotAcceptable => 406,
            Self::ModelError => 500,
        }
    }
}

/// Why an invocation failed.
#[derive(Debug, Clone, Error)]
pub enum InvokeError {
    /// The guest reported a foreseeable failure.
    #[error("{message}")]
    Handler {
        /// Which failure.
        kind: HandlerErrorKind,
        /// The guest's message.
        message: String,
    },
    /// The guest trapped (panic, out of memory, invalid output...). The instance was
    /// replaced.
    #[error("the model crashed: {message}")]
    Trap {
        /// The trap and, for a panic, the panic message.
        message: String,
    },
    /// The invocation ran past its deadline. The instance was replaced.
    #[error(
        "the invocation ran past its deadline of {0:?} (PlinthLimits.InvocationTimeoutInSeconds)"
    )]
    Timeout(Duration),
    /// All instances were busy and the queue was full.
    #[error("variant is at capacity: {in_flight} requests in flight and {queued} queued")]
    Throttled {
        /// Requests being served.
        in_flight: usize,
        /// Requests waiting.
        queued: usize,
    },
    /// The guest returned something the host cannot send (e.g. an invalid content type).
    #[error("the model returned an invalid response: {0}")]
    InvalidOutput(String),
    /// The variant has no instances (it was scaled to zero).
    #[error("variant {0} has 0 instances; raise its instance count")]
    NoInstances(String),
    /// The pool could not provide an instance (e.g. a replacement failed to start).
    #[error("no instance available: {0}")]
    Unavailable(String),
    /// One container of an inference pipeline failed as the model (a handler error, a trap,
    /// a timeout, an invalid response): which one, and how.
    #[error("container {hostname}: {error}")]
    InContainer {
        /// The container's hostname.
        hostname: String,
        /// Its failure.
        error: Box<InvokeError>,
    },
}

impl InvokeError {
    /// SageMaker's `OriginalStatusCode` for errors that count as the model's.
    pub fn original_status(&self) -> Option<u16> {
        match self {
            Self::Handler { kind, .. } => Some(kind.original_status()),
            Self::Trap { .. } | Self::InvalidOutput(_) => Some(500),
            Self::Timeout(_) => Some(0),
            Self::Throttled { .. } | Self::NoInstances(_) | Self::Unavailable(_) => None,
            Self::InContainer { error, .. } => error.original_status(),
        }
    }
}

/// A per-instance cap the guest reached ([`Limits`](crate::Limits)). Raised as a trap: the
/// call fails with this message and the instance is replaced, which frees all it held.
#[derive(Debug, Clone, Error)]
pub enum HostLimit {
    /// Linear memory and wasi-nn host bytes together would pass the memory limit.
    #[error(
        "memory limit exceeded: {what} would bring the instance to {asked} bytes, over its \
         PlinthLimits.MemorySizeInMB of {} MiB (linear memory and wasi-nn tensors and graphs \
         together)",
        limit >> 20
    )]
    Memory {
        /// The limit, in bytes.
        limit: usize,
        /// The total the allocation would have reached.
        asked: usize,
        /// What was being allocated.
        what: String,
    },
    /// A table would grow past its cap.
    #[error("table limit exceeded: a table asked for {asked} elements; the limit is {limit}")]
    TableElements {
        /// The cap.
        limit: usize,
        /// The size asked for.
        asked: usize,
    },
    /// Too many open files.
    #[error(
        "open files limit exceeded: the instance already holds {limit} open files and \
         directories, the most it may"
    )]
    OpenFiles {
        /// The cap.
        limit: usize,
    },
    /// Too many resource handles.
    #[error(
        "resource handle limit exceeded: the instance already holds {limit} handles (files, \
         streams, tensors, graphs...), the most it may"
    )]
    ResourceHandles {
        /// The cap.
        limit: usize,
    },
}

impl HostLimit {
    pub(crate) fn memory(limit: usize, asked: usize, what: &str) -> Self {
        Self::Memory {
            limit,
            asked,
            what: what.to_string(),
        }
    }
}

/// A host call (a wasi-nn `compute` or `load`) outlived the call's deadline. Raised as a trap;
/// the request fails as a timeout and the instance is replaced.
#[derive(Debug, Clone, Error)]
#[error("deadline of {deadline:?} exceeded during {during}")]
pub struct DeadlineExceeded {
    /// The deadline of the call.
    pub deadline: Duration,
    /// What the guest was waiting on.
    pub during: &'static str,
}
