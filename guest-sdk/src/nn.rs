//! Tensor work on the host's native backend through `wasi:nn`.
//!
//! The host preloads every `*.onnx` file in the model directory as a graph named after its
//! file stem (`model.onnx` -> `"model"`): [`Graph::load_by_name`] picks one up in
//! microseconds. [`Graph::load_onnx_file`] parses a file itself instead (milliseconds per
//! instance). Errors convert into [`HandlerError::ModelError`] with `?`.
//!
//! [`Session::run`] takes and gives `f32` tensors; for other element types (token ids, raw
//! bytes), build [`HostTensor`]s with [`host_tensor`] and call the raw `compute` of
//! [`Session::context`].

use std::fmt;
use std::path::Path;

use crate::bindings::wasi::nn::{errors, graph, inference, tensor};
use crate::codec::Tensor;
use crate::HandlerError;

/// What went wrong, as `wasi:nn` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The caller passed an invalid argument.
    InvalidArgument,
    /// The graph's encoding is invalid.
    InvalidEncoding,
    /// The operation timed out.
    Timeout,
    /// The backend failed at run time.
    RuntimeError,
    /// The backend does not support the operation.
    UnsupportedOperation,
    /// The graph is too large.
    TooLarge,
    /// No graph by that name.
    NotFound,
    /// Not permitted.
    Security,
    /// Anything else.
    Unknown,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidArgument => "invalid-argument",
            Self::InvalidEncoding => "invalid-encoding",
            Self::Timeout => "timeout",
            Self::RuntimeError => "runtime-error",
            Self::UnsupportedOperation => "unsupported-operation",
            Self::TooLarge => "too-large",
            Self::NotFound => "not-found",
            Self::Security => "security",
            Self::Unknown => "unknown",
        })
    }
}

/// A failed `wasi:nn` call: what was being done, the error code and the backend's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The operation, e.g. `load-by-name "model"`.
    pub operation: String,
    /// The `wasi:nn` error code.
    pub code: ErrorCode,
    /// The error's data text (the host may keep details to its log).
    pub data: String,
}

impl Error {
    fn new(operation: impl Into<String>, code: ErrorCode, data: impl Into<String>) -> Self {
        Self {
            operation: operation.into(),
            code,
            data: data.into(),
        }
    }

    /// A raw `wasi:nn` error, for code that calls [`Session::context`] directly.
    pub fn from_wasi(operation: impl Into<String>, e: errors::Error) -> Self {
        let code = match e.code() {
            errors::ErrorCode::InvalidArgument => ErrorCode::InvalidArgument,
            errors::ErrorCode::InvalidEncoding => ErrorCode::InvalidEncoding,
            errors::ErrorCode::Timeout => ErrorCode::Timeout,
            errors::ErrorCode::RuntimeError => ErrorCode::RuntimeError,
            errors::ErrorCode::UnsupportedOperation => ErrorCode::UnsupportedOperation,
            errors::ErrorCode::TooLarge => ErrorCode::TooLarge,
            errors::ErrorCode::NotFound => ErrorCode::NotFound,
            errors::ErrorCode::Security => ErrorCode::Security,
            errors::ErrorCode::Unknown => ErrorCode::Unknown,
        };
        Self::new(operation, code, e.data())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wasi-nn {} failed ({})", self.operation, self.code)?;
        if !self.data.is_empty() {
            write!(f, ": {}", self.data)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<Error> for HandlerError {
    fn from(e: Error) -> Self {
        HandlerError::ModelError(e.to_string())
    }
}

/// A `wasi:nn` tensor: dimensions, an element type and the elements' bytes, held in the
/// host's memory (not the guest's) until it is dropped. Made by [`host_tensor`]; what the
/// raw `compute` of [`Session::context`] takes and returns.
pub type HostTensor = tensor::Tensor;

/// The element type of a [`HostTensor`] (`wasi:nn`'s `tensor-type`).
pub use crate::bindings::wasi::nn::tensor::TensorType;

/// A [`HostTensor`] of element type `ty` and shape `dimensions` holding `data`: the elements'
/// little-endian bytes in C (row-major) order.
///
/// `wasi:nn` copies `data` into the host's memory, where it stays until the tensor is
/// dropped; the host counts it against the instance's memory limit. An `InvalidArgument`
/// error, before anything reaches the host, if `data`'s length is not the shape's element
/// count times the type's size.
pub fn host_tensor(dimensions: &[u32], ty: TensorType, data: &[u8]) -> Result<HostTensor, Error> {
    match tensor_bytes(dimensions, ty) {
        Some(expected) if expected == data.len() => Ok(tensor::Tensor::new(dimensions, ty, data)),
        expected => Err(Error::new(
            format!("tensor {dimensions:?}"),
            ErrorCode::InvalidArgument,
            match expected {
                Some(expected) => format!("expected {expected} bytes of data, got {}", data.len()),
                None => "the shape holds more bytes than memory can address".to_owned(),
            },
        )),
    }
}

/// The size in bytes of one element of `ty`.
fn element_size(ty: TensorType) -> usize {
    match ty {
        TensorType::U8 => 1,
        TensorType::Fp16 | TensorType::Bf16 => 2,
        TensorType::Fp32 | TensorType::I32 => 4,
        TensorType::Fp64 | TensorType::I64 => 8,
    }
}

/// The bytes a tensor of `ty` and shape `dimensions` holds; `None` if that overflows `usize`.
fn tensor_bytes(dimensions: &[u32], ty: TensorType) -> Option<usize> {
    dimensions
        .iter()
        .try_fold(element_size(ty), |bytes, &d| bytes.checked_mul(d as usize))
}

/// A loaded model graph.
pub struct Graph {
    inner: graph::Graph,
    name: String,
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Graph").field("name", &self.name).finish()
    }
}

impl Graph {
    /// A graph the host preloaded, by name (a model-dir `*.onnx` file's stem).
    pub fn load_by_name(name: &str) -> Result<Self, Error> {
        let inner = graph::load_by_name(name)
            .map_err(|e| Error::from_wasi(format!("load-by-name \"{name}\""), e))?;
        Ok(Self {
            inner,
            name: name.to_owned(),
        })
    }

    /// Read an ONNX file (usually inside the model dir) and load it on the CPU.
    pub fn load_onnx_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let operation = || format!("load of {}", path.display());
        let bytes = std::fs::read(path)
            .map_err(|e| Error::new(operation(), ErrorCode::NotFound, e.to_string()))?;
        let mut graph = Self::load_onnx(&bytes).map_err(|e| Error {
            operation: operation(),
            ..e
        })?;
        graph.name = path.display().to_string();
        Ok(graph)
    }

    /// Load an ONNX model from its bytes, on the CPU.
    pub fn load_onnx(bytes: &[u8]) -> Result<Self, Error> {
        let inner = graph::load(
            &[bytes.to_vec()],
            graph::GraphEncoding::Onnx,
            graph::ExecutionTarget::Cpu,
        )
        .map_err(|e| Error::from_wasi("load", e))?;
        Ok(Self {
            inner,
            name: "<bytes>".to_owned(),
        })
    }

    /// The preloaded graph `name`, or, if the host has none by that name, the file
    /// `<model_dir>/<name>.onnx`.
    pub fn load(name: &str, model_dir: impl AsRef<Path>) -> Result<Self, Error> {
        match Self::load_by_name(name) {
            Err(e) if e.code == ErrorCode::NotFound => {
                Self::load_onnx_file(model_dir.as_ref().join(format!("{name}.onnx")))
            }
            other => other,
        }
    }

    /// The name the graph was loaded under (or its file path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new execution context. Keep it (e.g. in the handler's model) to reuse it.
    pub fn session(&self) -> Result<Session, Error> {
        self.init_execution_context()
    }

    /// Same as [`Graph::session`], under its `wasi:nn` name.
    pub fn init_execution_context(&self) -> Result<Session, Error> {
        let inner = self
            .inner
            .init_execution_context()
            .map_err(|e| Error::from_wasi(format!("init-execution-context ({})", self.name), e))?;
        Ok(Session { inner })
    }

    /// Run once in a fresh execution context (see [`Session::run`]).
    pub fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Outputs, Error> {
        self.session()?.run(inputs)
    }
}

/// An execution context bound to a [`Graph`]; reusable across requests.
pub struct Session {
    inner: inference::GraphExecutionContext,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    /// The raw `wasi:nn` execution context: for inputs and outputs that are not `f32` (token
    /// ids, raw bytes), call its `compute` with `wasi:nn` tensors; map its errors with
    /// [`Error::from_wasi`].
    pub fn context(&self) -> &inference::GraphExecutionContext {
        &self.inner
    }

    /// Compute the graph on named `f32` inputs. Outputs of type FP32, FP64, FP16, BF16, I32,
    /// I64 and U8 come back as `f32` tensors.
    pub fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Outputs, Error> {
        let mut named = Vec::with_capacity(inputs.len());
        for (name, t) in inputs {
            let dims = t
                .shape
                .iter()
                .map(|&d| u32::try_from(d))
                .collect::<Result<Vec<u32>, _>>()
                .map_err(|_| {
                    Error::new(
                        format!("input \"{name}\""),
                        ErrorCode::TooLarge,
                        format!("dimension too large in shape {:?}", t.shape),
                    )
                })?;
            // Little-endian bytes; on wasm32 this compiles to one copy.
            let mut data = vec![0u8; t.data.len() * 4];
            for (bytes, value) in data.chunks_exact_mut(4).zip(&t.data) {
                bytes.copy_from_slice(&value.to_le_bytes());
            }
            let tensor = tensor::Tensor::new(&dims, tensor::TensorType::Fp32, &data);
            named.push(((*name).to_owned(), tensor));
        }
        let outputs = self
            .inner
            .compute(named)
            .map_err(|e| Error::from_wasi("compute", e))?;
        let mut converted = Vec::with_capacity(outputs.len());
        for (name, t) in outputs {
            let tensor = to_f32(&name, &t)?;
            converted.push((name, tensor));
        }
        Ok(Outputs(converted))
    }
}

fn to_f32(name: &str, t: &tensor::Tensor) -> Result<Tensor, Error> {
    let shape: Vec<usize> = t.dimensions().into_iter().map(|d| d as usize).collect();
    let bytes = t.data();
    let data: Vec<f32> = match t.ty() {
        tensor::TensorType::Fp32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        tensor::TensorType::Fp64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        tensor::TensorType::I32 => bytes
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
            .collect(),
        tensor::TensorType::I64 => bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        tensor::TensorType::U8 => bytes.iter().map(|&b| f32::from(b)).collect(),
        tensor::TensorType::Bf16 => bytes
            .chunks_exact(2)
            .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
            .collect(),
        tensor::TensorType::Fp16 => bytes
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
    };
    Tensor::new(data, shape).map_err(|e| {
        Error::new(
            format!("output \"{name}\""),
            ErrorCode::RuntimeError,
            e.message(),
        )
    })
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = f32::from_bits(u32::from(h & 0x8000) << 16);
    let exp = (h >> 10) & 0x1f;
    let mant = f32::from(h & 0x3ff);
    let magnitude = match exp {
        0 => mant * 2f32.powi(-24),
        0x1f if mant == 0.0 => f32::INFINITY,
        0x1f => f32::NAN,
        e => (1.0 + mant / 1024.0) * 2f32.powi(i32::from(e) - 15),
    };
    magnitude.copysign(sign)
}

/// The named outputs of one [`Session::run`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outputs(pub Vec<(String, Tensor)>);

impl Outputs {
    /// Remove and return the output `name`; a [`HandlerError::ModelError`] naming the outputs
    /// there are if it is missing.
    pub fn take(&mut self, name: &str) -> Result<Tensor, HandlerError> {
        match self.0.iter().position(|(n, _)| n == name) {
            Some(i) => Ok(self.0.swap_remove(i).1),
            None => Err(HandlerError::model_error(format!(
                "the model produced no output named \"{name}\"; it produced: {}",
                self.0
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The outputs, in the order the backend returned them.
    pub fn into_vec(self) -> Vec<(String, Tensor)> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_sizes() {
        assert_eq!(tensor_bytes(&[2, 3], TensorType::Fp32), Some(24));
        assert_eq!(tensor_bytes(&[2, 3], TensorType::I64), Some(48));
        assert_eq!(tensor_bytes(&[5], TensorType::Bf16), Some(10));
        assert_eq!(tensor_bytes(&[7], TensorType::U8), Some(7));
        // A scalar, and an empty tensor.
        assert_eq!(tensor_bytes(&[], TensorType::Fp64), Some(8));
        assert_eq!(tensor_bytes(&[4, 0], TensorType::Fp32), Some(0));
        assert_eq!(tensor_bytes(&[u32::MAX; 4], TensorType::Fp64), None);
    }

    #[test]
    fn a_wrong_data_length_is_refused_before_the_host() {
        let e = host_tensor(&[1, 4], TensorType::Fp32, &[0; 15]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert_eq!(e.data, "expected 16 bytes of data, got 15");
        assert_eq!(
            e.to_string(),
            "wasi-nn tensor [1, 4] failed (invalid-argument): expected 16 bytes of data, got 15"
        );
    }
}
