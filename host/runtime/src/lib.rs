//! Plinth's WebAssembly runtime: it turns a model component plus its artifact into a pool of
//! warm, sandboxed instances and runs SageMaker's handler functions in them.
//!
//! - [`Runtime`]: the wasmtime engine (pooling allocator, epoch deadlines), the linker with
//!   WASI and wasi-nn, and the on-disk cache of compiled components. Built once per process.
//! - [`VariantPool`]: one production variant's warm instances (`InstancePre` + shared wasi-nn
//!   graphs, built once per deployment; a `Store` per instance).
//! - [`nn`]: the wasi-nn backends (tract-onnx; ONNX Runtime with the `onnxruntime` feature)
//!   and the registry of host-preloaded graphs. A model's [`Backend`] picks one per variant.
//! - [`OnnxRuntime`]: the ONNX Runtime library, found and checked at start
//!   ([`ort_library`]).
//!
//! Nothing here speaks HTTP; the server crate maps [`InvokeError`] onto SageMaker's errors.

mod blocking;
mod budget;
mod cache;
mod engine;
mod error;
mod guest;
mod limits;
pub mod nn;
pub mod ort_library;
mod pool;
mod stdio;
mod usage;

pub use engine::{Runtime, RuntimeConfig};
pub use error::{DeadlineExceeded, HandlerErrorKind, HostLimit, InvokeError, LoadError};
pub use guest::{Invocation, InvocationOutput};
pub use limits::Limits;
pub use ort_library::{OnnxRuntime, OnnxRuntimeError};
pub use plinth_policy::config::Backend;
pub use pool::{Elastic, PoolStats, PoolTemplate, VariantPool, VariantSpec};
pub use usage::account_cpu;
