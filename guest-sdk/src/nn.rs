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
///
/// # Examples
///
/// ```no_run
/// use plinth_guest_sdk::nn::{ErrorCode, Graph};
///
/// // A model directory's graphs are optional extras: go on without one that is not there.
/// let reranker = match Graph::load_by_name("reranker") {
///     Ok(graph) => Some(graph),
///     Err(e) if e.code == ErrorCode::NotFound => None,
///     Err(e) => return Err(e.into()),
/// };
/// # Ok::<(), plinth_guest_sdk::HandlerError>(())
/// ```
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
///
/// # Examples
///
/// ```
/// use plinth_guest_sdk::nn::{Error, ErrorCode};
/// use plinth_guest_sdk::HandlerError;
///
/// let e = Error {
///     operation: "load-by-name \"model\"".to_owned(),
///     code: ErrorCode::NotFound,
///     data: String::new(),
/// };
/// assert_eq!(e.to_string(), "wasi-nn load-by-name \"model\" failed (not-found)");
/// assert!(matches!(HandlerError::from(e), HandlerError::ModelError(_)));
/// ```
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
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use plinth_guest_sdk::nn::{self, Error, TensorType};
    /// use plinth_guest_sdk::HandlerError;
    ///
    /// fn embed(session: &nn::Session, ids: &[i64]) -> Result<usize, HandlerError> {
    ///     let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    ///     let input = nn::host_tensor(&[1, ids.len() as u32], TensorType::I64, &bytes)?;
    ///     let outputs = session
    ///         .context()
    ///         .compute(vec![("input_ids".to_owned(), input)])
    ///         .map_err(|e| Error::from_wasi("compute", e))?;
    ///     Ok(outputs.len())
    /// }
    /// ```
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
///
/// # Examples
///
/// ```no_run
/// use plinth_guest_sdk::nn::{host_tensor, HostTensor, TensorType};
///
/// let mask: HostTensor = host_tensor(&[1, 3], TensorType::U8, &[1, 1, 0])?;
/// assert_eq!(mask.dimensions(), vec![1, 3]);
/// # Ok::<(), plinth_guest_sdk::nn::Error>(())
/// ```
pub type HostTensor = tensor::Tensor;

/// The element type of a [`HostTensor`] (`wasi:nn`'s `tensor-type`).
///
/// # Examples
///
/// ```
/// use plinth_guest_sdk::nn::{host_tensor, TensorType};
///
/// // Token ids are `I64`: eight bytes each.
/// let e = host_tensor(&[1, 2], TensorType::I64, &[0; 8]).unwrap_err();
/// assert_eq!(e.data, "expected 16 bytes of data, got 8");
/// ```
pub use crate::bindings::wasi::nn::tensor::TensorType;

/// A [`HostTensor`] of element type `ty` and shape `dimensions` holding `data`: the elements'
/// little-endian bytes in C (row-major) order.
///
/// `wasi:nn` copies `data` into the host's memory, where it stays until the tensor is
/// dropped; the host counts it against the instance's memory limit. An `InvalidArgument`
/// error, before anything reaches the host, if `data`'s length is not the shape's element
/// count times the type's size.
///
/// # Examples
///
/// ```
/// use plinth_guest_sdk::nn::{host_tensor, ErrorCode, TensorType};
///
/// // Four i64 token ids need 32 bytes: a wrong length is refused before the host is called.
/// let e = host_tensor(&[1, 4], TensorType::I64, &[0; 24]).unwrap_err();
/// assert_eq!(e.code, ErrorCode::InvalidArgument);
/// assert_eq!(e.data, "expected 32 bytes of data, got 24");
/// ```
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
///
/// # Examples
///
/// ```no_run
/// use plinth_guest_sdk::nn::{Graph, Session};
/// use plinth_guest_sdk::HandlerError;
///
/// struct Model {
///     session: Session,
///     _graph: Graph,
/// }
///
/// fn model_fn(model_dir: &str) -> Result<Model, HandlerError> {
///     let graph = Graph::load("model", model_dir)?;
///     Ok(Model { session: graph.session()?, _graph: graph })
/// }
/// ```
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
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use plinth_guest_sdk::{nn::Graph, HandlerError};
    ///
    /// // `/opt/ml/model/model.onnx`, preloaded by the host.
    /// let graph = Graph::load_by_name("model")?;
    /// let session = graph.session()?;
    /// # Ok::<(), HandlerError>(())
    /// ```
    pub fn load_by_name(name: &str) -> Result<Self, Error> {
        let inner = graph::load_by_name(name)
            .map_err(|e| Error::from_wasi(format!("load-by-name \"{name}\""), e))?;
        Ok(Self {
            inner,
            name: name.to_owned(),
        })
    }

    /// Read an ONNX file (usually inside the model dir) and load it on the CPU.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use plinth_guest_sdk::{nn::Graph, HandlerError};
    ///
    /// let graph = Graph::load_onnx_file("/opt/ml/model/encoder.onnx")?;
    /// assert_eq!(graph.name(), "/opt/ml/model/encoder.onnx");
    /// # Ok::<(), HandlerError>(())
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use plinth_guest_sdk::{nn::Graph, HandlerError};
    ///
    /// let bytes = std::fs::read("/opt/ml/model/model.onnx")
    ///     .map_err(|e| HandlerError::model_error(format!("cannot read model.onnx: {e}")))?;
    /// let graph = Graph::load_onnx(&bytes)?;
    /// # Ok::<(), HandlerError>(())
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use plinth_guest_sdk::{nn::Graph, HandlerError};
    ///
    /// fn model_fn(model_dir: &str) -> Result<Graph, HandlerError> {
    ///     Ok(Graph::load("model", model_dir)?)
    /// }
    /// ```
    pub fn load(name: &str, model_dir: impl AsRef<Path>) -> Result<Self, Error> {
        match Self::load_by_name(name) {
            Err(by_name) if by_name.code == ErrorCode::NotFound => {
                let path = model_dir.as_ref().join(format!("{name}.onnx"));
                // If the file fails too, say both: the host's answer names the graphs there are.
                Self::load_onnx_file(&path).map_err(|e| Error {
                    operation: format!(
                        "load of graph \"{name}\" (by name, then from {})",
                        path.display()
                    ),
                    code: e.code,
                    data: format!("{}; {}", by_name.data, e.data),
                })
            }
            other => other,
        }
    }

    /// The name the graph was loaded under (or its file path).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use plinth_guest_sdk::{nn::Graph, HandlerError};
    ///
    /// let graph = Graph::load("model", "/opt/ml/model")?;
    /// // "model" if the host preloaded it, else "/opt/ml/model/model.onnx".
    /// eprintln!("loaded {}", graph.name());
    /// # Ok::<(), HandlerError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new execution context. Keep it (e.g. in the handler's model) to reuse it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use plinth_guest_sdk::{codec::Tensor, nn::Graph, HandlerError};
    ///
    /// let session = Graph::load_by_name("model")?.session()?;
    /// let x = Tensor::new(vec![5.1, 3.5, 1.4, 0.2], vec![1, 4])?;
    /// let probabilities = session.run(&[("input", &x)])?.take("probabilities")?;
    /// # Ok::<(), HandlerError>(())
    /// ```
    pub fn session(&self) -> Result<Session, Error> {
        self.init_execution_context()
    }

    /// Same as [`Graph::session`], under its `wasi:nn` name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use plinth_guest_sdk::{nn::Graph, HandlerError};
    ///
    /// let session = Graph::load_by_name("model")?.init_execution_context()?;
    /// # Ok::<(), HandlerError>(())
    /// ```
    pub fn init_execution_context(&self) -> Result<Session, Error> {
        let inner = self
            .inner
            .init_execution_context()
            .map_err(|e| Error::from_wasi(format!("init-execution-context ({})", self.name), e))?;
        Ok(Session { inner })
    }

    /// Run once in a fresh execution context (see [`Session::run`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use plinth_guest_sdk::{codec::Tensor, nn::Graph, HandlerError};
    ///
    /// // Once, for a request that does not keep a session (a session is cheaper to reuse).
    /// let graph = Graph::load_by_name("model")?;
    /// let x = Tensor::new(vec![5.1, 3.5, 1.4, 0.2], vec![1, 4])?;
    /// let probabilities = graph.run(&[("input", &x)])?.take("probabilities")?;
    /// # Ok::<(), HandlerError>(())
    /// ```
    pub fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Outputs, Error> {
        self.session()?.run(inputs)
    }
}

/// An execution context bound to a [`Graph`]; reusable across requests.
///
/// # Examples
///
/// ```no_run
/// use plinth_guest_sdk::{codec::Tensor, nn::Graph, HandlerError};
///
/// // Made once (in `model_fn`), used by every request.
/// let session = Graph::load_by_name("model")?.session()?;
/// let mut scores = Vec::new();
/// for row in [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]] {
///     let x = Tensor::new(row.to_vec(), vec![1, 4])?;
///     scores.push(session.run(&[("input", &x)])?.take("probabilities")?);
/// }
/// # Ok::<(), HandlerError>(())
/// ```
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
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use plinth_guest_sdk::nn::{host_tensor, Error, Graph, TensorType};
    ///
    /// let session = Graph::load_by_name("model")?.session()?;
    /// let bytes = [101i64, 102].map(i64::to_le_bytes).concat();
    /// let ids = host_tensor(&[1, 2], TensorType::I64, &bytes)?;
    /// let outputs = session
    ///     .context()
    ///     .compute(vec![("input_ids".to_owned(), ids)])
    ///     .map_err(|e| Error::from_wasi("compute", e))?;
    /// # Ok::<(), Error>(())
    /// ```
    pub fn context(&self) -> &inference::GraphExecutionContext {
        &self.inner
    }

    /// Compute the graph on named `f32` inputs. Outputs of type FP32, FP64, FP16, BF16, I32,
    /// I64 and U8 come back as `f32` tensors.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use plinth_guest_sdk::{codec::Tensor, nn::Session, Context, HandlerError};
    ///
    /// fn predict_fn(x: Tensor, session: &Session, _: &Context) -> Result<Tensor, HandlerError> {
    ///     let mut outputs = session.run(&[("input", &x)])?;
    ///     outputs.take("probabilities")
    /// }
    /// ```
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
///
/// # Examples
///
/// ```
/// use plinth_guest_sdk::{codec::Tensor, nn::Outputs};
///
/// let probabilities = Tensor::new(vec![0.9, 0.1], vec![1, 2])?;
/// let mut outputs = Outputs(vec![("probabilities".to_owned(), probabilities)]);
/// assert_eq!(outputs.take("probabilities")?.data, vec![0.9, 0.1]);
/// # Ok::<(), plinth_guest_sdk::HandlerError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outputs(
    /// The outputs by name, in the order the backend returned them.
    pub Vec<(String, Tensor)>,
);

impl Outputs {
    /// Remove and return the output `name`; a [`HandlerError::ModelError`] naming the outputs
    /// there are if it is missing.
    ///
    /// # Examples
    ///
    /// ```
    /// use plinth_guest_sdk::{codec::Tensor, nn::Outputs};
    ///
    /// let mut outputs = Outputs(vec![("logits".to_owned(), Tensor::new(vec![2.0], vec![1])?)]);
    /// let e = outputs.take("probabilities").unwrap_err();
    /// assert!(e.message().contains("no output named \"probabilities\"; it produced: logits"));
    /// assert_eq!(outputs.take("logits")?.data, vec![2.0]);
    /// # Ok::<(), plinth_guest_sdk::HandlerError>(())
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use plinth_guest_sdk::{codec::Tensor, nn::Outputs};
    ///
    /// let outputs = Outputs(vec![("logits".to_owned(), Tensor::new(vec![2.0], vec![1])?)]);
    /// for (name, tensor) in outputs.into_vec() {
    ///     assert_eq!((name.as_str(), tensor.shape), ("logits", vec![1]));
    /// }
    /// # Ok::<(), plinth_guest_sdk::HandlerError>(())
    /// ```
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
