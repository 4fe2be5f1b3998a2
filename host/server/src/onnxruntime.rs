//! `plinth serve`'s ONNX Runtime settings: where the library is (`--onnxruntime`, else
//! `ORT_DYLIB_PATH`) and how many threads its sessions use. The library is loaded and
//! checked at start; a missing or incompatible one stops the server with a message naming
//! the path and the problem.

use anyhow::anyhow;
use clap::Args;
use plinth_runtime::{OnnxRuntime, RuntimeConfig};
use std::path::PathBuf;

/// The ONNX Runtime flags of `plinth serve`.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct OnnxRuntimeArgs {
    /// The ONNX Runtime library (libonnxruntime.so*, e.g. from the `onnxruntime` PyPI wheel:
    /// `.venv/lib/python3.*/site-packages/onnxruntime/capi/`), or the directory holding it.
    /// Default: $ORT_DYLIB_PATH. With it, models whose PlinthBackend is Auto run on ONNX
    /// Runtime; without it, every model runs on tract.
    #[arg(long = "onnxruntime", value_name = "PATH")]
    library: Option<PathBuf>,
    /// Threads one ONNX Runtime session may use for a request (intra-op). Default: the cores
    /// divided by the variant's instance count, at least 1.
    #[arg(
        long = "onnxruntime-intra-op-threads",
        value_name = "N",
        env = "PLINTH_ONNXRUNTIME_INTRA_OP_THREADS",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    intra_op_threads: Option<u16>,
}

/// ONNX Runtime as `plinth serve` will use it.
pub(crate) struct OnnxRuntimeSettings {
    runtime: Option<OnnxRuntime>,
    intra_op_threads: Option<usize>,
}

impl OnnxRuntimeArgs {
    /// Find, load and check the library, if one is configured.
    pub(crate) fn load(&self) -> anyhow::Result<OnnxRuntimeSettings> {
        let from_env = std::env::var_os("ORT_DYLIB_PATH")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let intra_op_threads = self.intra_op_threads.map(usize::from);
        let (path, source) = match (&self.library, from_env) {
            (Some(path), _) => (path.clone(), "--onnxruntime"),
            (None, Some(path)) if cfg!(feature = "onnxruntime") => (path, "ORT_DYLIB_PATH"),
            (None, Some(_)) => {
                tracing::warn!(
                    "ORT_DYLIB_PATH is set, but this Plinth was built without ONNX Runtime \
                     support (the `onnxruntime` feature): every model runs on tract"
                );
                return Ok(OnnxRuntimeSettings {
                    runtime: None,
                    intra_op_threads,
                });
            }
            (None, None) => {
                tracing::info!(
                    "ONNX Runtime not configured (--onnxruntime or ORT_DYLIB_PATH): every model \
                     runs on tract"
                );
                return Ok(OnnxRuntimeSettings {
                    runtime: None,
                    intra_op_threads,
                });
            }
        };
        let runtime = OnnxRuntime::load(&path).map_err(|e| {
            anyhow!(
                "{e} (from {source}); fix it, or start without --onnxruntime and ORT_DYLIB_PATH \
                 to serve every model with tract"
            )
        })?;
        tracing::info!(
            path = %runtime.path().display(),
            version = runtime.version(),
            intra_op_threads = ?intra_op_threads,
            "ONNX Runtime ready: models whose PlinthBackend is Auto or OnnxRuntime use it"
        );
        Ok(OnnxRuntimeSettings {
            runtime: Some(runtime),
            intra_op_threads,
        })
    }
}

impl OnnxRuntimeSettings {
    /// A runtime config with these settings (and every other setting at its default).
    pub(crate) fn runtime_config(self) -> RuntimeConfig {
        RuntimeConfig {
            onnxruntime: self.runtime,
            onnxruntime_intra_op_threads: self.intra_op_threads,
            ..RuntimeConfig::default()
        }
    }
}
