//! wasi-nn served by tract-onnx (and, with the `onnxruntime` feature, by ONNX Runtime: see
//! [`ort_backend`](self::ort_backend)), and the registry of graphs the host preloads from a
//! model artifact so that every instance shares one parsed, optimised graph, and every
//! variant serving the same graph files shares it too ([`GraphCache`]).
//!
//! wasi-nn hands the guest only a generic error text for backend failures, so each failure
//! is logged here with its real cause before it is returned. After each run the vector
//! registers' upper halves are marked clean ([`clear_upper_vector_state`]), so that the
//! guest's code does not run slowed by the backend's AVX kernels.

pub(crate) mod host;
#[cfg(feature = "onnxruntime")]
pub(crate) mod ort_backend;

use plinth_policy::config::Backend;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::*;
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendGraph, Id, NamedTensor,
};
use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

type Plan = Arc<TypedRunnableModel>;

fn backend_error(context: &str, error: impl std::fmt::Display) -> BackendError {
    tracing::warn!(target: "plinth::nn", "{context}: {error}");
    BackendError::BackendAccess(wasmtime::format_err!("{context}: {error}"))
}

/// What the tract and ONNX Runtime execution contexts share: inputs set one by one, one
/// run, and the outputs read back by index or name. [`get_output`] and [`compute`] give
/// wasi-nn's semantics on top of it.
trait Execution: BackendExecutionContext {
    /// Run on the inputs set so far, keeping the outputs.
    fn run_pending(&mut self) -> Result<(), BackendError>;
    /// The graph's output names and the last run's outputs, in the same order.
    fn outputs(&mut self) -> (&[String], &mut Vec<Tensor>);
}

/// wasi-nn's `get-output`: output `id` of the last run.
fn get_output(execution: &mut impl Execution, id: Id) -> Result<Tensor, BackendError> {
    let (names, results) = execution.outputs();
    let index = match &id {
        Id::Index(i) => Some(*i as usize),
        Id::Name(name) => names.iter().position(|n| n == name),
    };
    index
        .and_then(|i| results.get(i).cloned())
        .ok_or_else(|| backend_error("get output", format!("no output {id:?}")))
}

/// wasi-nn's `compute`: set the named inputs, run, and, when the inputs came by name, hand
/// back every output by name.
fn compute(
    execution: &mut impl Execution,
    inputs: Option<Vec<NamedTensor>>,
) -> Result<Option<Vec<NamedTensor>>, BackendError> {
    let named = inputs.is_some();
    for input in inputs.unwrap_or_default() {
        execution.set_input(Id::Name(input.name), &input.tensor)?;
    }
    let ran = execution.run_pending();
    clear_upper_vector_state();
    ran?;
    if !named {
        return Ok(None);
    }
    let (names, results) = execution.outputs();
    Ok(Some(
        names
            .iter()
            .cloned()
            .zip(std::mem::take(results))
            .map(|(name, tensor)| NamedTensor { name, tensor })
            .collect(),
    ))
}

/// Mark the upper halves of the vector registers clean (`vzeroupper`), as code that used
/// 256/512-bit registers must before it returns to code that may use SSE.
///
/// tract's AVX2/AVX-512 kernels return with the upper halves dirty (their common epilogue
/// has no `vzeroupper`). Until the next `vzeroupper`, every legacy-SSE instruction on the
/// thread then carries a false dependency and an extra merge. The guest's compiled code
/// still has such instructions: its CSV parsing and JSON writing ran several times slower
/// after every model run (BENCHMARKS.md, "Dirty vector state"). Called after every backend
/// run, failed or not; a no-op where the CPU has no AVX.
#[allow(unsafe_code)]
pub fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx")]
        fn zeroupper() {
            std::arch::x86_64::_mm256_zeroupper();
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX (checked above), all `zeroupper` needs.
            unsafe { zeroupper() }
        }
    }
}

/// The position of input `id` among a graph's `inputs`. A single-input graph accepts its one
/// input under any name.
fn input_position(inputs: &[String], id: &Id) -> Result<usize, BackendError> {
    let index = match id {
        Id::Index(i) => Some(*i as usize).filter(|i| *i < inputs.len()),
        Id::Name(name) => inputs
            .iter()
            .position(|n| n == name)
            .or_else(|| (inputs.len() == 1).then_some(0)),
    };
    index.ok_or_else(|| {
        backend_error(
            "set input",
            format!("unknown input {id:?}; the graph's inputs are {inputs:?}"),
        )
    })
}

/// One tensor of a graph's signature, as the graph declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSignature {
    /// The name to give `compute` (inputs) or to read back (outputs).
    pub name: String,
    /// Shape and element type in tract's notation, e.g. `N,4,F32` (a letter: a dimension
    /// the graph leaves open, such as the batch).
    pub fact: String,
}

/// What a graph takes and gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphSignature {
    /// Inputs, in order.
    pub inputs: Vec<TensorSignature>,
    /// Outputs, in order.
    pub outputs: Vec<TensorSignature>,
}

/// The inputs and outputs an ONNX model declares (before any optimisation).
pub fn onnx_signature(bytes: &[u8]) -> anyhow::Result<GraphSignature> {
    // Types and shapes as far as inference makes them out (the outputs' come from it).
    let model = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(bytes))?
        .into_typed()?;
    let describe = |outlet: &OutletId, name: String| -> anyhow::Result<TensorSignature> {
        let fact = model.outlet_fact(*outlet)?;
        Ok(TensorSignature {
            name,
            fact: format!("{fact:?}"),
        })
    };
    let inputs = model
        .input_outlets()?
        .iter()
        .map(|o| describe(o, model.node(o.node).name.clone()))
        .collect::<anyhow::Result<_>>()?;
    let outputs = model
        .output_outlets()?
        .iter()
        .map(|o| {
            let name = model
                .outlet_label(*o)
                .map(str::to_string)
                .unwrap_or_else(|| model.node(o.node).name.clone());
            describe(o, name)
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(GraphSignature { inputs, outputs })
}

/// A parsed, optimised ONNX graph with its input and output names.
pub struct TractGraph {
    plan: Plan,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl TractGraph {
    /// Parse and optimise an ONNX model.
    pub fn from_onnx(bytes: &[u8]) -> anyhow::Result<Self> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(bytes))?
            .into_optimized()?;
        let plan = model.into_runnable()?;
        let graph = plan.model();
        let inputs = graph
            .input_outlets()?
            .iter()
            .map(|o| graph.node(o.node).name.clone())
            .collect();
        let outputs = graph
            .output_outlets()?
            .iter()
            .map(|o| {
                graph
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| graph.node(o.node).name.clone())
            })
            .collect();
        Ok(Self {
            plan,
            inputs,
            outputs,
        })
    }

    /// The graph's input names, in order.
    pub fn input_names(&self) -> &[String] {
        &self.inputs
    }

    /// The graph's output names, in order.
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// A run state, to reuse from run to run (cheaper than [`TractGraph::run`], which makes
    /// one each time).
    pub fn state(&self) -> anyhow::Result<TypedSimpleState> {
        self.plan.spawn()
    }

    /// Run the graph on inputs given in the graph's input order.
    pub fn run(&self, inputs: TVec<TValue>) -> anyhow::Result<TVec<TValue>> {
        self.plan.run(inputs)
    }
}

// wasi-nn tensor data is little-endian; so is every host Plinth runs on, which lets tensors
// cross as one copy of their bytes.
#[cfg(not(target_endian = "little"))]
compile_error!("the wasi-nn backends assume a little-endian host");

/// Convert a wasi-nn tensor into a tract tensor (one copy of the data).
#[allow(unsafe_code)]
pub fn to_tract(tensor: &Tensor) -> anyhow::Result<tract_onnx::prelude::Tensor> {
    let shape: TVec<usize> = tensor.dimensions.iter().map(|d| *d as usize).collect();
    let dt = match tensor.ty {
        TensorType::Fp32 => DatumType::F32,
        TensorType::Fp64 => DatumType::F64,
        TensorType::I32 => DatumType::I32,
        TensorType::I64 => DatumType::I64,
        TensorType::U8 => DatumType::U8,
        other => anyhow::bail!("tensor type {other:?} is not supported by the tract backend"),
    };
    // SAFETY: every bit pattern is a valid value of these plain numeric types, and
    // `from_raw_dt` checks the data's length against the shape before copying.
    unsafe { tract_onnx::prelude::Tensor::from_raw_dt(dt, &shape, &tensor.data) }
}

/// Convert a tract tensor into a wasi-nn tensor (one copy of the data).
pub fn from_tract(value: &tract_onnx::prelude::Tensor) -> anyhow::Result<Tensor> {
    let dimensions = value.shape().iter().map(|d| *d as u32).collect();
    let ty = match value.datum_type() {
        DatumType::F32 => TensorType::Fp32,
        DatumType::F64 => TensorType::Fp64,
        DatumType::I32 => TensorType::I32,
        DatumType::I64 => TensorType::I64,
        DatumType::U8 => TensorType::U8,
        other => anyhow::bail!("output type {other:?} has no wasi-nn equivalent"),
    };
    let data = value.try_as_plain_ram()?.as_bytes().to_vec();
    Ok(Tensor::new(dimensions, ty, data))
}

impl BackendGraph for TractGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let state = self
            .plan
            .spawn()
            .map_err(|e| backend_error("init execution context", format!("{e:#}")))?;
        let context: Box<dyn BackendExecutionContext> = Box::new(TractExecution {
            state: std::sync::Mutex::new(state),
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
            pending: vec![None; self.inputs.len()],
            results: Vec::new(),
        });
        Ok(context.into())
    }
}

/// One execution context: tract's run state (reused from run to run), inputs being
/// gathered and the last outputs.
struct TractExecution {
    /// Only ever used by its one instance; the mutex makes it `Sync` as wasi-nn requires.
    state: std::sync::Mutex<TypedSimpleState>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    pending: Vec<Option<tract_onnx::prelude::Tensor>>,
    results: Vec<Tensor>,
}

impl Execution for TractExecution {
    fn run_pending(&mut self) -> Result<(), BackendError> {
        let mut inputs = TVec::new();
        for (i, tensor) in self.pending.iter_mut().enumerate() {
            let tensor = tensor.take().ok_or_else(|| {
                backend_error("compute", format!("input {} not set", self.inputs[i]))
            })?;
            inputs.push(tensor.into_tvalue());
        }
        let outputs = self
            .state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .run(inputs)
            .map_err(|e| backend_error("compute", format!("{e:#}")))?;
        self.results = outputs
            .iter()
            .map(|v| from_tract(v).map_err(|e| backend_error("read output", e)))
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    fn outputs(&mut self) -> (&[String], &mut Vec<Tensor>) {
        (&self.outputs, &mut self.results)
    }
}

impl BackendExecutionContext for TractExecution {
    fn set_input(&mut self, id: Id, tensor: &Tensor) -> Result<(), BackendError> {
        let index = input_position(&self.inputs, &id)?;
        self.pending[index] = Some(to_tract(tensor).map_err(|e| backend_error("set input", e))?);
        Ok(())
    }

    fn get_output(&mut self, id: Id) -> Result<Tensor, BackendError> {
        get_output(self, id)
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        compute(self, inputs)
    }
}

/// The backend that runs a variant's graphs, resolved from the model's [`Backend`] setting
/// when the variant is deployed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum NnBackend {
    /// tract-onnx.
    Tract,
    /// ONNX Runtime, with the variant's session settings.
    #[cfg(feature = "onnxruntime")]
    OnnxRuntime(ort_backend::SessionSettings),
}

impl NnBackend {
    /// Which backend this is.
    pub(crate) fn kind(&self) -> Backend {
        match self {
            Self::Tract => Backend::Tract,
            #[cfg(feature = "onnxruntime")]
            Self::OnnxRuntime(_) => Backend::OnnxRuntime,
        }
    }

    /// Intra-op threads of its sessions (ONNX Runtime only).
    pub(crate) fn intra_op_threads(&self) -> Option<usize> {
        match self {
            Self::Tract => None,
            #[cfg(feature = "onnxruntime")]
            Self::OnnxRuntime(settings) => Some(settings.intra_op_threads),
        }
    }

    /// Load an ONNX model; returns the graph with its input and output names.
    pub(crate) fn load(&self, bytes: &[u8]) -> anyhow::Result<(Graph, Vec<String>, Vec<String>)> {
        fn shared<G: BackendGraph + 'static>(
            graph: G,
            inputs: &[String],
            outputs: &[String],
        ) -> (Graph, Vec<String>, Vec<String>) {
            let graph: Box<dyn BackendGraph> = Box::new(graph);
            (graph.into(), inputs.to_vec(), outputs.to_vec())
        }
        Ok(match self {
            Self::Tract => {
                let graph = TractGraph::from_onnx(bytes)?;
                let (inputs, outputs) = (graph.inputs.clone(), graph.outputs.clone());
                shared(graph, &inputs, &outputs)
            }
            #[cfg(feature = "onnxruntime")]
            Self::OnnxRuntime(settings) => {
                let graph = ort_backend::OrtGraph::from_onnx(bytes, *settings)?;
                let (inputs, outputs) =
                    (graph.input_names().to_vec(), graph.output_names().to_vec());
                shared(graph, &inputs, &outputs)
            }
        })
    }
}

/// Graphs preloaded from a model artifact, shared by all instances of a variant, and by
/// every variant serving the same graph files on the same backend ([`GraphCache`]).
#[derive(Clone, Default)]
pub struct SharedGraphs(Arc<HashMap<String, Preloaded>>);

/// A preloaded graph, with what its computations have shown of their length (shared by all
/// who run it: where the next one runs, [`plinth_policy::compute_placement`]).
pub(crate) struct Preloaded {
    pub(crate) graph: Graph,
    pub(crate) history: Arc<host::History>,
    /// The size of the graph's file.
    pub(crate) file_bytes: usize,
}

impl SharedGraphs {
    /// Preload every `*.onnx` file at the top of `model_dir` with tract, named by its file
    /// stem (`model.onnx` becomes `"model"`).
    pub fn preload(model_dir: &Path) -> anyhow::Result<Self> {
        Self::load(&read_graph_files(model_dir)?, &NnBackend::Tract)
    }

    /// Parse and optimise `files` on `backend`.
    fn load(files: &[GraphFile], backend: &NnBackend) -> anyhow::Result<Self> {
        let mut graphs = HashMap::new();
        for file in files {
            let (graph, inputs, outputs) = backend.load(&file.bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {} cannot load it: {e:#}",
                    file.path.display(),
                    backend.kind()
                )
            })?;
            tracing::debug!(graph = %file.name, backend = %backend.kind(), ?inputs, ?outputs, "preloaded graph");
            graphs.insert(
                file.name.clone(),
                Preloaded {
                    graph,
                    history: Arc::default(),
                    file_bytes: file.bytes.len(),
                },
            );
        }
        Ok(Self(Arc::new(graphs)))
    }

    /// The graphs' file bytes, all together.
    pub fn bytes(&self) -> usize {
        self.0.values().map(|p| p.file_bytes).sum()
    }

    /// The names of the preloaded graphs.
    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// One `*.onnx` file of an artifact: its graph name (the file stem), its bytes and their
/// SHA-256.
struct GraphFile {
    name: String,
    path: std::path::PathBuf,
    bytes: Vec<u8>,
    digest: [u8; 32],
}

/// The `*.onnx` files at the top of `model_dir`, in name order.
fn read_graph_files(model_dir: &Path) -> anyhow::Result<Vec<GraphFile>> {
    use sha2::{Digest, Sha256};
    let mut paths: Vec<_> = std::fs::read_dir(model_dir)?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path)?;
            Ok(GraphFile {
                name: path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                digest: Sha256::digest(&bytes).into(),
                path,
                bytes,
            })
        })
        .collect()
}

/// The preloaded graphs in use, keyed by backend and by the name and content hash of each
/// graph file: variants that serve the same files on the same backend (two variants of one
/// model, a shadow of a production variant, an update that keeps the model) share one
/// parsed, optimised copy, so it is in memory, and in the CPU's caches, once. An entry lives
/// while a variant holds it.
#[derive(Default)]
pub(crate) struct GraphCache {
    live: crate::cache::Live<GraphKey, HashMap<String, Preloaded>>,
}

type GraphKey = (NnBackend, Vec<(String, [u8; 32])>);

impl GraphCache {
    /// The graphs of `model_dir` on `backend`: the copy already in use if one has the same
    /// files, else loaded now. The map is not locked while loading, so two first loads at
    /// once may both load; the later becomes the shared copy.
    pub(crate) fn preload(
        &self,
        model_dir: &Path,
        backend: &NnBackend,
    ) -> anyhow::Result<SharedGraphs> {
        let files = read_graph_files(model_dir)?;
        let key: GraphKey = (
            backend.clone(),
            files.iter().map(|f| (f.name.clone(), f.digest)).collect(),
        );
        if let Some(graphs) = self.live.get(&key) {
            return Ok(SharedGraphs(graphs));
        }
        let graphs = SharedGraphs::load(&files, backend)?;
        self.live.insert(key, &graphs.0);
        Ok(graphs)
    }
}

impl SharedGraphs {
    /// The preloaded graph called `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Preloaded> {
        self.0.get(name)
    }
}

#[cfg(test)]
mod graph_cache_tests {
    use super::*;

    fn model_dir(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        dir
    }

    /// Variants serving the same graph files share one loaded copy, wherever the files lie;
    /// other files, or the same files under another name, load their own; and a copy no
    /// variant holds any more is let go.
    #[test]
    fn the_same_graph_files_share_one_copy_while_held() {
        let iris =
            std::fs::read(std::path::Path::new(plinth_tests::IRIS_MODEL_DIR).join("model.onnx"))
                .unwrap();
        let cache = GraphCache::default();
        let tract = NnBackend::Tract;
        let first = model_dir(&[("model.onnx", &iris)]);
        let copy = model_dir(&[("model.onnx", &iris)]);
        let renamed = model_dir(&[("other.onnx", &iris)]);

        let a = cache.preload(first.path(), &tract).unwrap();
        let b = cache.preload(first.path(), &tract).unwrap();
        let c = cache.preload(copy.path(), &tract).unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0), "one directory loaded twice");
        assert!(Arc::ptr_eq(&a.0, &c.0), "a copy of the same file elsewhere");
        let d = cache.preload(renamed.path(), &tract).unwrap();
        assert!(
            !Arc::ptr_eq(&a.0, &d.0),
            "the same bytes under another graph name"
        );
        assert_eq!(d.names(), vec!["other"]);

        // The file changes: the next load reads the new bytes; the old copy stays with those
        // that hold it.
        std::fs::write(first.path().join("model.onnx"), b"not onnx").unwrap();
        let err = cache.preload(first.path(), &tract).err().unwrap();
        assert!(format!("{err:#}").contains("model.onnx"), "{err:#}");
        assert_eq!(a.names(), vec!["model"]);

        drop((a, b, c, d));
        assert!(
            cache
                .live
                .lock()
                .values()
                .all(|held| held.strong_count() == 0),
            "no variant holds the graphs, but the cache keeps them alive"
        );
        let again = cache.preload(copy.path(), &tract).unwrap();
        assert_eq!(Arc::strong_count(&again.0), 1);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Whether the upper halves of the YMM registers may be dirty: bit 2 of XINUSE (`xgetbv`
    /// with ECX = 1). `None` where the CPU cannot say.
    #[allow(unsafe_code)]
    fn upper_state_in_use() -> Option<bool> {
        if !std::arch::is_x86_feature_detected!("avx")
            || !std::arch::is_x86_feature_detected!("xsave")
        {
            return None;
        }
        // Leaf 0xD exists where XSAVE does.
        let xgetbv1 = std::arch::x86_64::__cpuid_count(0xD, 1).eax & (1 << 2) != 0;
        if !xgetbv1 {
            return None;
        }
        let low: u32;
        // SAFETY: the CPU supports `xgetbv` with ECX = 1 (checked above); it only reads.
        unsafe {
            std::arch::asm!(
                "xgetbv",
                in("ecx") 1u32,
                out("eax") low,
                out("edx") _,
                options(nomem, nostack, preserves_flags)
            );
        }
        Some(low & (1 << 2) != 0)
    }

    /// Leave the upper halves dirty, as a 256-bit instruction does.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx")]
    fn dirty_upper_state() {
        // SAFETY: only ymm0 is written, and it is declared clobbered.
        unsafe {
            std::arch::asm!(
                "vpcmpeqd ymm0, ymm0, ymm0",
                out("ymm0") _,
                options(nomem, nostack, preserves_flags)
            );
        }
    }

    /// A wasi-nn run through tract leaves the vector state clean, so that the guest's SSE
    /// code after it runs at full speed (BENCHMARKS.md, "Dirty vector state"). Skipped where
    /// the CPU does not report the state, or where tract's kernels leave it clean anyway.
    #[test]
    #[allow(unsafe_code)]
    fn a_tract_run_leaves_the_upper_vector_state_clean() {
        let test = "a_tract_run_leaves_the_upper_vector_state_clean";
        if upper_state_in_use().is_none() {
            eprintln!("{test}: skipped: this CPU does not report its AVX state");
            return;
        }
        // SAFETY: the CPU has AVX (`upper_state_in_use` answers only where it does).
        unsafe { dirty_upper_state() };
        let reported_dirty = upper_state_in_use() == Some(true);
        clear_upper_vector_state();
        if !reported_dirty || upper_state_in_use() != Some(false) {
            eprintln!("{test}: skipped: this CPU does not report its AVX state precisely");
            return;
        }

        let model = std::path::Path::new(plinth_tests::IRIS_MODEL_DIR).join("model.onnx");
        let graph = TractGraph::from_onnx(&std::fs::read(model).unwrap()).unwrap();
        let rows = 16;
        let values: Vec<f32> = (0..rows * 4).map(|i| (i % 7) as f32 * 0.5).collect();
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensor = Tensor::new(vec![rows as u32, 4], TensorType::Fp32, data);

        // tract alone: does it leave the state dirty on this CPU?
        let mut state = graph.state().unwrap();
        let input = to_tract(&tensor).unwrap();
        let outputs = state.run(tvec![input.into_tvalue()]).unwrap();
        let dirty_after_tract = upper_state_in_use() == Some(true);
        drop(outputs);
        clear_upper_vector_state();
        if !dirty_after_tract {
            eprintln!("{test}: skipped: tract's kernels leave the state clean on this CPU");
            return;
        }

        // The same run through wasi-nn, as a guest makes it.
        let mut context = graph.init_execution_context().unwrap();
        context
            .set_input(Id::Name(graph.input_names()[0].clone()), &tensor)
            .unwrap();
        context.compute().unwrap();
        assert_eq!(
            upper_state_in_use(),
            Some(false),
            "the upper vector state is still dirty after a wasi-nn compute"
        );
        let output = context.get_output(Id::Index(0)).unwrap();
        assert_eq!(output.dimensions, vec![rows as u32, 3]);
    }
}
