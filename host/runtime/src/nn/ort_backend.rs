//! wasi-nn served by ONNX Runtime, through `ort` with the library loaded at run time (the
//! `onnxruntime` feature).
//!
//! - One session per graph, built when the variant is deployed and shared by all its
//!   instances. ONNX Runtime allows concurrent `Run` calls on one session, but `ort`
//!   2.0.0-rc.10's `Session::run` takes `&mut self`; [`OrtGraph::run`] therefore makes the
//!   C API's `Run` call itself (the call `ort` makes) and wraps the outputs with `ort`'s
//!   `Value::from_ptr`, so instances never wait for each other.
//! - Each session has its own intra-op thread pool of the configured size, one inter-op
//!   thread and sequential execution.
//! - Tensors are copied once in (wasi-nn bytes into an ONNX Runtime tensor) and once out, as
//!   with tract. Input types and shapes are checked by ONNX Runtime, whose message reaches
//!   the log.
//!
//! wasmtime-wasi-nn's own `onnx` backend is not used: it holds each session behind a mutex
//! (instances would take turns), returns f32 outputs only and sets no thread counts.

use super::{backend_error, compute, get_output, input_position, Execution};
use ort::memory::Allocator;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::tensor::{PrimitiveTensorElementType, TensorElementType};
use ort::value::{DynValue, Tensor as OrtTensor, ValueType};
use ort::AsPointer;
use std::ffi::{c_char, CString};
use std::ptr::{self, NonNull};
use std::sync::Arc;
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendGraph, Id, NamedTensor,
};
use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::{ExecutionContext, Tensor};

/// How a variant's sessions are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SessionSettings {
    /// Threads one `Run` may use (ONNX Runtime's intra-op pool, the calling thread included).
    pub(crate) intra_op_threads: usize,
}

/// An ONNX Runtime session with its input and output names.
#[derive(Clone)]
pub(crate) struct OrtGraph(Arc<SessionInner>);

struct SessionInner {
    session: Session,
    inputs: Vec<String>,
    outputs: Vec<String>,
    c_inputs: Vec<CString>,
    c_outputs: Vec<CString>,
}

impl OrtGraph {
    /// Build a session from an ONNX model.
    pub(crate) fn from_onnx(bytes: &[u8], settings: SessionSettings) -> anyhow::Result<Self> {
        let session = Session::builder()?
            .with_optimization_level(GraphOptimizationLevel::Level3)?
            .with_intra_threads(settings.intra_op_threads)?
            .with_inter_threads(1)?
            .with_parallel_execution(false)?
            .commit_from_memory(bytes)?;
        let inputs: Vec<String> = session.inputs.iter().map(|i| i.name.clone()).collect();
        let outputs: Vec<String> = session.outputs.iter().map(|o| o.name.clone()).collect();
        let c_names = |names: &[String]| -> anyhow::Result<Vec<CString>> {
            names
                .iter()
                .map(|n| CString::new(n.as_str()).map_err(anyhow::Error::from))
                .collect()
        };
        Ok(Self(Arc::new(SessionInner {
            c_inputs: c_names(&inputs)?,
            c_outputs: c_names(&outputs)?,
            session,
            inputs,
            outputs,
        })))
    }

    /// The graph's input names, in order.
    pub(crate) fn input_names(&self) -> &[String] {
        &self.0.inputs
    }

    /// The graph's output names, in order.
    pub(crate) fn output_names(&self) -> &[String] {
        &self.0.outputs
    }

    /// Run the session on one value per input, in the graph's input order; the outputs come
    /// back in the graph's output order.
    #[allow(unsafe_code)]
    fn run(&self, inputs: &[DynValue]) -> Result<Vec<DynValue>, ort::Error> {
        let inner = &*self.0;
        let input_names: Vec<*const c_char> = inner.c_inputs.iter().map(|n| n.as_ptr()).collect();
        let output_names: Vec<*const c_char> = inner.c_outputs.iter().map(|n| n.as_ptr()).collect();
        let input_values: Vec<*const ort::sys::OrtValue> = inputs.iter().map(|v| v.ptr()).collect();
        let mut outputs: Vec<*mut ort::sys::OrtValue> = vec![ptr::null_mut(); output_names.len()];
        // SAFETY: ONNX Runtime allows concurrent `Run` calls on one session (CPU execution
        // provider). The session lives as long as `inner`; the name and value arrays have
        // the lengths passed and outlive the call, and `inputs` holds one live value per
        // input name. Null output slots ask ONNX Runtime to allocate the outputs, which
        // become ours.
        let status = unsafe {
            (ort::api().Run)(
                inner.session.ptr().cast_mut(),
                ptr::null(),
                input_names.as_ptr(),
                input_values.as_ptr(),
                input_values.len(),
                output_names.as_ptr(),
                output_names.len(),
                outputs.as_mut_ptr(),
            )
        };
        // SAFETY: `status` is what `Run` returned; it is released here.
        unsafe { ort::error::status_to_result(status) }?;
        outputs
            .into_iter()
            .map(|value| {
                let value = NonNull::new(value).ok_or_else(|| {
                    ort::Error::new("ONNX Runtime returned no value for an output")
                })?;
                // SAFETY: `value` is an output `Run` allocated for this session; the session
                // is kept alive as the value's backing, as `ort` does for its own outputs.
                Ok(unsafe { DynValue::from_ptr(value, Some(inner.session.inner())) })
            })
            .collect()
    }
}

/// Convert a wasi-nn tensor into an ONNX Runtime tensor (one copy).
pub(crate) fn to_ort(tensor: &Tensor) -> anyhow::Result<DynValue> {
    let shape: Vec<i64> = tensor.dimensions.iter().map(|d| i64::from(*d)).collect();
    fn decode<T: PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static, const N: usize>(
        shape: Vec<i64>,
        data: &[u8],
        f: fn([u8; N]) -> T,
    ) -> anyhow::Result<DynValue> {
        anyhow::ensure!(
            data.len().is_multiple_of(N),
            "tensor data length {} is not a multiple of {N}",
            data.len()
        );
        let elements = shape.iter().try_fold(1i64, |n, d| n.checked_mul(*d));
        anyhow::ensure!(
            elements.and_then(|n| usize::try_from(n).ok()) == Some(data.len() / N),
            "tensor of shape {shape:?} does not fit its data ({} elements)",
            data.len() / N
        );
        if data.is_empty() {
            // ONNX Runtime cannot wrap an empty buffer; it allocates an empty tensor.
            return Ok(OrtTensor::<T>::new(&Allocator::default(), shape)?.into_dyn());
        }
        let values: Vec<T> = data
            .chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N bytes")))
            .collect();
        Ok(OrtTensor::from_array((shape, values))?.into_dyn())
    }
    let data = &tensor.data;
    match tensor.ty {
        TensorType::Fp32 => decode(shape, data, f32::from_le_bytes),
        TensorType::Fp64 => decode(shape, data, f64::from_le_bytes),
        TensorType::Fp16 => decode(shape, data, half::f16::from_le_bytes),
        TensorType::Bf16 => decode(shape, data, half::bf16::from_le_bytes),
        TensorType::I32 => decode(shape, data, i32::from_le_bytes),
        TensorType::I64 => decode(shape, data, i64::from_le_bytes),
        TensorType::U8 => decode(shape, data, |b: [u8; 1]| b[0]),
    }
}

/// Convert an ONNX Runtime output into a wasi-nn tensor (one copy). Booleans become `U8`.
pub(crate) fn from_ort(value: &DynValue) -> anyhow::Result<Tensor> {
    let ValueType::Tensor { ty, shape, .. } = value.dtype() else {
        anyhow::bail!("the output is a {}, not a tensor", value.dtype());
    };
    let dimensions: Vec<u32> = shape
        .iter()
        .map(|d| u32::try_from(*d))
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("output shape {shape:?} does not fit wasi-nn's u32"))?;
    fn encode<T: PrimitiveTensorElementType + Copy, const N: usize>(
        value: &DynValue,
        f: fn(T) -> [u8; N],
    ) -> anyhow::Result<Vec<u8>> {
        if value
            .dtype()
            .tensor_shape()
            .is_some_and(|s| s.num_elements() == 0)
        {
            // `ort` would build a slice from the null data pointer of an empty tensor.
            return Ok(Vec::new());
        }
        let (_, data) = value.try_extract_tensor::<T>()?;
        let mut bytes = Vec::with_capacity(data.len() * N);
        for v in data {
            bytes.extend_from_slice(&f(*v));
        }
        Ok(bytes)
    }
    let (ty, data) = match ty {
        TensorElementType::Float32 => (TensorType::Fp32, encode(value, f32::to_le_bytes)?),
        TensorElementType::Float64 => (TensorType::Fp64, encode(value, f64::to_le_bytes)?),
        TensorElementType::Float16 => (TensorType::Fp16, encode(value, half::f16::to_le_bytes)?),
        TensorElementType::Bfloat16 => (TensorType::Bf16, encode(value, half::bf16::to_le_bytes)?),
        TensorElementType::Int32 => (TensorType::I32, encode(value, i32::to_le_bytes)?),
        TensorElementType::Int64 => (TensorType::I64, encode(value, i64::to_le_bytes)?),
        TensorElementType::Uint8 => (TensorType::U8, encode(value, |v: u8| [v])?),
        TensorElementType::Bool => (TensorType::U8, encode(value, |v: bool| [u8::from(v)])?),
        other => anyhow::bail!("output type {other} has no wasi-nn equivalent"),
    };
    Ok(Tensor::new(dimensions, ty, data))
}

impl BackendGraph for OrtGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let context: Box<dyn BackendExecutionContext> = Box::new(OrtExecution {
            graph: self.clone(),
            pending: (0..self.0.inputs.len()).map(|_| None).collect(),
            results: Vec::new(),
        });
        Ok(context.into())
    }
}

/// One execution context: the shared session, inputs being gathered and the last outputs.
struct OrtExecution {
    graph: OrtGraph,
    pending: Vec<Option<DynValue>>,
    results: Vec<Tensor>,
}

impl Execution for OrtExecution {
    fn run_pending(&mut self) -> Result<(), BackendError> {
        let names = &self.graph.0.inputs;
        let inputs = self
            .pending
            .iter_mut()
            .enumerate()
            .map(|(i, v)| {
                v.take()
                    .ok_or_else(|| backend_error("compute", format!("input {} not set", names[i])))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = self
            .graph
            .run(&inputs)
            .map_err(|e| backend_error("compute", e))?;
        self.results = outputs
            .iter()
            .map(|v| from_ort(v).map_err(|e| backend_error("read output", format!("{e:#}"))))
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    fn outputs(&mut self) -> (&[String], &mut Vec<Tensor>) {
        (&self.graph.0.outputs, &mut self.results)
    }
}

impl BackendExecutionContext for OrtExecution {
    fn set_input(&mut self, id: Id, tensor: &Tensor) -> Result<(), BackendError> {
        let index = input_position(&self.graph.0.inputs, &id)?;
        self.pending[index] =
            Some(to_ort(tensor).map_err(|e| backend_error("set input", format!("{e:#}")))?);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{from_tract, to_tract, TractGraph};
    use tract_onnx::prelude::{IntoTValue, TVec};

    fn iris_bytes() -> Vec<u8> {
        std::fs::read(std::path::Path::new(plinth_tests::IRIS_MODEL_DIR).join("model.onnx"))
            .unwrap()
    }

    fn features(rows: &[[f32; 4]]) -> Tensor {
        let data = rows
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        Tensor::new(vec![rows.len() as u32, 4], TensorType::Fp32, data)
    }

    fn floats(tensor: &Tensor) -> Vec<f32> {
        assert_eq!(tensor.ty, TensorType::Fp32);
        tensor
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    const ROWS: [[f32; 4]; 4] = [
        [5.1, 3.5, 1.4, 0.2],
        [6.3, 3.3, 6.0, 2.5],
        [5.7, 2.8, 4.1, 1.3],
        [4.9, 3.0, 1.4, 0.2],
    ];

    fn tract_answer(rows: &[[f32; 4]]) -> Vec<f32> {
        let graph = TractGraph::from_onnx(&iris_bytes()).unwrap();
        let input: TVec<_> = [to_tract(&features(rows)).unwrap().into_tvalue()]
            .into_iter()
            .collect();
        floats(&from_tract(&graph.run(input).unwrap()[0]).unwrap())
    }

    fn ort_answer(graph: &OrtGraph, rows: &[[f32; 4]]) -> Vec<f32> {
        let outputs = graph.run(&[to_ort(&features(rows)).unwrap()]).unwrap();
        floats(&from_ort(&outputs[0]).unwrap())
    }

    fn settings(threads: usize) -> SessionSettings {
        SessionSettings {
            intra_op_threads: threads,
        }
    }

    #[test]
    fn iris_answers_like_tract() {
        if crate::ort_library::for_tests("iris_answers_like_tract").is_none() {
            return;
        }
        let graph = OrtGraph::from_onnx(&iris_bytes(), settings(1)).unwrap();
        assert_eq!(graph.input_names(), ["input"]);
        assert_eq!(graph.output_names(), ["probabilities"]);
        let ours = ort_answer(&graph, &ROWS);
        let tract = tract_answer(&ROWS);
        assert_eq!(ours.len(), 12);
        for (o, t) in ours.iter().zip(&tract) {
            assert!(
                (o - t).abs() <= 1e-5,
                "ONNX Runtime {ours:?}\ntract {tract:?}"
            );
        }
    }

    /// One session, many threads running it at once (the instances of a variant).
    #[test]
    fn a_shared_session_runs_concurrently() {
        if crate::ort_library::for_tests("a_shared_session_runs_concurrently").is_none() {
            return;
        }
        let graph = OrtGraph::from_onnx(&iris_bytes(), settings(2)).unwrap();
        let expected: Vec<Vec<f32>> = ROWS.iter().map(|r| ort_answer(&graph, &[*r])).collect();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (graph, expected) = (&graph, &expected);
                scope.spawn(move || {
                    for i in 0..300 {
                        let row = (t + i) % ROWS.len();
                        assert_eq!(ort_answer(graph, &[ROWS[row]]), expected[row]);
                    }
                });
            }
        });
    }

    #[test]
    fn execution_contexts_take_inputs_by_name_or_index() {
        if crate::ort_library::for_tests("execution_contexts_take_inputs").is_none() {
            return;
        }
        let graph = OrtGraph::from_onnx(&iris_bytes(), settings(1)).unwrap();
        let expected = ort_answer(&graph, &ROWS[..2]);
        let mut context = OrtExecution {
            graph: graph.clone(),
            pending: vec![None],
            results: Vec::new(),
        };
        // wasi-nn's WIT path: named inputs in, named outputs out.
        let outputs = context
            .compute(Some(vec![NamedTensor {
                name: "input".into(),
                tensor: features(&ROWS[..2]),
            }]))
            .unwrap()
            .unwrap();
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].name, "probabilities");
        assert_eq!(floats(&outputs[0].tensor), expected);
        // The WITX path: set-input, compute, get-output.
        context
            .set_input(Id::Index(0), &features(&ROWS[..2]))
            .unwrap();
        assert!(context.compute(None).unwrap().is_none());
        let output = context
            .get_output(Id::Name("probabilities".into()))
            .unwrap();
        assert_eq!(output.dimensions, [2, 3]);
        assert_eq!(floats(&output), expected);
        // Inputs are consumed by a run; a run without them is an error, not a panic.
        assert!(context.compute(None).is_err());
        assert!(context.set_input(Id::Index(3), &features(&ROWS)).is_err());
        assert!(context.get_output(Id::Name("nope".into())).is_err());
        // A wrong shape or type is ONNX Runtime's error, returned.
        let wrong = Tensor::new(vec![1, 3], TensorType::Fp32, vec![0; 12]);
        assert!(context
            .compute(Some(vec![NamedTensor {
                name: "input".into(),
                tensor: wrong
            }]))
            .is_err());
        let wrong = Tensor::new(vec![1, 4], TensorType::I64, vec![0; 32]);
        assert!(context
            .compute(Some(vec![NamedTensor {
                name: "input".into(),
                tensor: wrong
            }]))
            .is_err());
    }

    #[test]
    fn every_wasi_nn_type_converts_both_ways() {
        if crate::ort_library::for_tests("every_wasi_nn_type_converts").is_none() {
            return;
        }
        for (ty, size) in [
            (TensorType::Fp16, 2),
            (TensorType::Bf16, 2),
            (TensorType::Fp32, 4),
            (TensorType::Fp64, 8),
            (TensorType::U8, 1),
            (TensorType::I32, 4),
            (TensorType::I64, 8),
        ] {
            let data: Vec<u8> = (0..6 * size).map(|i| (i * 7 % 61) as u8).collect();
            let tensor = Tensor::new(vec![2, 3], ty, data);
            let back = from_ort(&to_ort(&tensor).unwrap()).unwrap();
            assert_eq!(back.ty, tensor.ty);
            assert_eq!(back.dimensions, tensor.dimensions);
            assert_eq!(back.data, tensor.data, "{ty:?}");
        }
        // Data that does not match the shape is refused, not a panic.
        for (dims, bytes) in [
            (vec![2, 2], 12),
            (vec![2, 2], 18),
            (vec![0], 4),
            (vec![u32::MAX; 4], 4),
        ] {
            let tensor = Tensor::new(dims.clone(), TensorType::Fp32, vec![0; bytes]);
            assert!(to_ort(&tensor).is_err(), "{dims:?} with {bytes} bytes");
        }
        let empty = Tensor::new(vec![0, 4], TensorType::Fp32, Vec::new());
        assert_eq!(
            from_ort(&to_ort(&empty).unwrap()).unwrap().dimensions,
            [0, 4]
        );
    }

    #[test]
    fn a_bad_model_is_an_error() {
        if crate::ort_library::for_tests("a_bad_model_is_an_error").is_none() {
            return;
        }
        let e = OrtGraph::from_onnx(b"not a model", settings(1))
            .err()
            .unwrap();
        assert!(!e.to_string().is_empty());
    }
}
