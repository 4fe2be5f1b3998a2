//! The common case in a few lines: one graph from the model directory, a tensor in and a
//! tensor out. [`TensorModel`] needs nothing but a name; every function has a default (the
//! SDK's codecs for `input_fn` and `output_fn`, one run of the graph for `predict_fn`) and
//! each can be overridden. [`TensorHandler`] turns it into a full [`Handler`], which
//! [`export_tensor_model!`](crate::export_tensor_model) exports.

use std::marker::PhantomData;

use crate::codec::{self, Tensor};
use crate::nn::{Graph, Outputs, Session};
use crate::{Context, Handler, HandlerError, Response};

/// A model that is one ONNX graph from the model directory, with tensors in and out.
///
/// Per request Plinth calls [`input_fn`](TensorModel::input_fn) (decode the body into a
/// [`Tensor`]), [`predict_fn`](TensorModel::predict_fn) (run the graph) and
/// [`output_fn`](TensorModel::output_fn) (encode the result). The defaults:
///
/// - `model_fn` loads the graph [`GRAPH`](TensorModel::GRAPH) (`"model"`: the host's
///   preloaded `model.onnx`, or the file itself) and keeps one execution context;
/// - `input_fn` decodes CSV, JSON or NPY with [`codec::decode`];
/// - `predict_fn` feeds the tensor to input [`INPUT`](TensorModel::INPUT) and returns
///   output [`OUTPUT`](TensorModel::OUTPUT) (by default the graph's only output);
/// - `output_fn` writes one of [`OUTPUT_TYPES`](TensorModel::OUTPUT_TYPES) (JSON unless the
///   request's `Accept` asks for CSV or NPY) with [`Response::tensor`].
///
/// When the variant batches requests (`PlinthMaxBatchSize` > 1), the rows of the batch's
/// tensors are stacked into one and `predict_fn` runs once (see
/// [`STACK_BATCHES`](TensorModel::STACK_BATCHES)).
///
/// For anything else (several graphs, tokenizers, outputs that are not tensors), implement
/// [`Handler`] instead.
///
/// # Examples
///
/// The iris classifier, refusing rows without four features:
///
/// ```
/// use plinth_guest_sdk::codec::{self, Tensor};
/// use plinth_guest_sdk::{Context, HandlerError, TensorModel};
///
/// struct Iris;
///
/// impl TensorModel for Iris {
///     fn input_fn(body: Vec<u8>, content_type: &str, _: &Context) -> Result<Tensor, HandlerError> {
///         let rows = codec::decode(&body, content_type)?.into_matrix()?;
///         match rows.shape[1] {
///             4 => Ok(rows),
///             n => Err(HandlerError::bad_request(format!("expected 4 features per row, got {n}"))),
///         }
///     }
/// }
///
/// plinth_guest_sdk::export_tensor_model!(Iris);
/// # let ctx = Context::default();
/// # assert!(Iris::input_fn(b"1,2,3".to_vec(), "text/csv", &ctx).is_err());
/// # assert_eq!(Iris::input_fn(b"1,2,3,4".to_vec(), "text/csv", &ctx).unwrap().shape, [1, 4]);
/// ```
pub trait TensorModel: 'static {
    /// The graph to load: the file stem of a `*.onnx` file at the top of the model directory
    /// (`plinth inspect MODEL_DIR` lists them).
    const GRAPH: &'static str = "model";
    /// The graph input the request's tensor is fed to. A graph with a single input takes it
    /// under any name.
    const INPUT: &'static str = "input";
    /// The graph output to answer with; `None`: the graph's only output (a graph with several
    /// fails the request with an error naming them).
    const OUTPUT: Option<&'static str> = None;
    /// The response types the default `output_fn` writes, the default first.
    const OUTPUT_TYPES: &'static [&'static str] = codec::TENSOR_TYPES;
    /// Whether a batch of requests runs as one tensor: their rows stacked along the first
    /// axis, `predict_fn` called once (with the first request's [`Context`]), and its
    /// output's rows split back per request. True suits graphs whose first axis is the batch
    /// (rows are independent); set it to false to run each request of a batch on its own,
    /// e.g. when `predict_fn` reads the request's context. Requests whose shapes cannot
    /// stack (a different row length) run on their own either way, and so does each request
    /// of a batch whose stacked run fails.
    const STACK_BATCHES: bool = true;

    /// Load the graph, once per instance. The default is
    /// [`Graph::load`]`(Self::GRAPH, model_dir)`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use plinth_guest_sdk::{nn::Graph, HandlerError, TensorModel};
    /// struct Encoder;
    /// impl TensorModel for Encoder {
    ///     fn model_fn(model_dir: &str) -> Result<Graph, HandlerError> {
    ///         Ok(Graph::load_onnx_file(format!("{model_dir}/encoder/model.onnx"))?)
    ///     }
    /// }
    /// ```
    fn model_fn(model_dir: &str) -> Result<Graph, HandlerError> {
        Ok(Graph::load(Self::GRAPH, model_dir)?)
    }

    /// Decode a request body. The default reads CSV, JSON or NPY with [`codec::decode`]; any
    /// other `Content-Type` is refused with 415.
    ///
    /// # Examples
    ///
    /// ```
    /// # use plinth_guest_sdk::{codec::{self, Tensor}, Context, HandlerError, TensorModel};
    /// struct JsonOnly;
    /// impl TensorModel for JsonOnly {
    ///     fn input_fn(body: Vec<u8>, content_type: &str, _: &Context) -> Result<Tensor, HandlerError> {
    ///         codec::require_content_type(content_type, &[codec::JSON])?;
    ///         codec::decode_json(&body)
    ///     }
    /// }
    /// let ctx = Context::default();
    /// assert!(JsonOnly::input_fn(b"1,2".to_vec(), "text/csv", &ctx).is_err());
    /// assert_eq!(JsonOnly::input_fn(b"[1,2]".to_vec(), "application/json", &ctx).unwrap().shape, [1, 2]);
    /// ```
    fn input_fn(body: Vec<u8>, content_type: &str, ctx: &Context) -> Result<Tensor, HandlerError> {
        let _ = ctx;
        codec::decode(&body, content_type)
    }

    /// Run the graph. The default feeds `input` to [`INPUT`](TensorModel::INPUT) and returns
    /// [`OUTPUT`](TensorModel::OUTPUT) (see [`run_graph`]).
    ///
    /// # Examples
    ///
    /// Scaling the features before the graph sees them:
    ///
    /// ```no_run
    /// # use plinth_guest_sdk::{codec::Tensor, nn::Session, tensor_model, Context, HandlerError, TensorModel};
    /// struct Scaled;
    /// impl TensorModel for Scaled {
    ///     fn predict_fn(mut x: Tensor, session: &Session, _: &Context) -> Result<Tensor, HandlerError> {
    ///         x.data.iter_mut().for_each(|v| *v /= 10.0);
    ///         tensor_model::run_graph::<Self>(x, session)
    ///     }
    /// }
    /// ```
    fn predict_fn(input: Tensor, session: &Session, ctx: &Context) -> Result<Tensor, HandlerError> {
        let _ = ctx;
        run_graph::<Self>(input, session)
    }

    /// Encode the prediction. The default picks one of
    /// [`OUTPUT_TYPES`](TensorModel::OUTPUT_TYPES) from `accept` with [`codec::negotiate`]
    /// and writes the tensor with [`Response::tensor`] (JSON: nested arrays of its shape).
    ///
    /// # Examples
    ///
    /// ```
    /// # use plinth_guest_sdk::{codec::Tensor, serde_json::json, Context, HandlerError, Response, TensorModel};
    /// struct Scores;
    /// impl TensorModel for Scores {
    ///     fn output_fn(y: Tensor, _accept: &str, _: &Context) -> Result<Response, HandlerError> {
    ///         Response::json(&json!({ "scores": y.data }))
    ///     }
    /// }
    /// let y = Tensor::new(vec![0.5, 0.25], vec![1, 2]).unwrap();
    /// let response = Scores::output_fn(y, "", &Context::default()).unwrap();
    /// assert_eq!(response.body, br#"{"scores":[0.5,0.25]}"#);
    /// ```
    fn output_fn(output: Tensor, accept: &str, ctx: &Context) -> Result<Response, HandlerError> {
        let _ = ctx;
        let content_type = codec::negotiate(accept, Self::OUTPUT_TYPES)?;
        Response::tensor(&output, content_type)
    }
}

/// What [`TensorModel::predict_fn`] does by default: one run of the graph on `input`, fed to
/// `M::INPUT`, answering with `M::OUTPUT` (or the only output).
///
/// # Examples
///
/// ```no_run
/// # use plinth_guest_sdk::{codec::Tensor, nn::Graph, tensor_model, TensorModel};
/// # struct Iris;
/// # impl TensorModel for Iris {}
/// let session = Graph::load_by_name("model")?.session()?;
/// let x = Tensor::new(vec![5.1, 3.5, 1.4, 0.2], vec![1, 4])?;
/// let probabilities = tensor_model::run_graph::<Iris>(x, &session)?;
/// # Ok::<(), plinth_guest_sdk::HandlerError>(())
/// ```
pub fn run_graph<M: TensorModel + ?Sized>(
    input: Tensor,
    session: &Session,
) -> Result<Tensor, HandlerError> {
    let outputs = session.run(&[(M::INPUT, &input)])?;
    pick_output(outputs, M::OUTPUT)
}

/// Output `name` of a run, or the only one when `name` is `None`.
fn pick_output(mut outputs: Outputs, name: Option<&str>) -> Result<Tensor, HandlerError> {
    match name {
        Some(name) => outputs.take(name),
        None if outputs.0.len() == 1 => Ok(outputs.0.remove(0).1),
        None => Err(HandlerError::model_error(format!(
            "the graph has {} outputs ({}); name the one to answer with in TensorModel::OUTPUT",
            outputs.0.len(),
            outputs
                .0
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The graph a [`TensorModel`] loaded and the execution context its requests run in.
pub struct Loaded {
    session: Session,
    graph: Graph,
}

impl Loaded {
    /// The graph, as loaded by [`TensorModel::model_fn`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(loaded: &plinth_guest_sdk::tensor_model::Loaded) {
    /// println!("serving graph {}", loaded.graph().name());
    /// # }
    /// ```
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The execution context requests run in.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(loaded: &plinth_guest_sdk::tensor_model::Loaded) -> Result<(), plinth_guest_sdk::nn::Error> {
    /// let x = plinth_guest_sdk::codec::Tensor::new(vec![1.0, 2.0], vec![1, 2]).unwrap();
    /// let outputs = loaded.session().run(&[("input", &x)])?;
    /// # Ok(()) }
    /// ```
    pub fn session(&self) -> &Session {
        &self.session
    }
}

/// A [`TensorModel`] as a full [`Handler`]: what
/// [`export_tensor_model!`](crate::export_tensor_model) exports. Its functions are the
/// model's, plus a `predict_batch` that stacks a batch's rows (see
/// [`TensorModel::STACK_BATCHES`]).
///
/// # Examples
///
/// ```
/// # use plinth_guest_sdk::{tensor_model::TensorHandler, Context, Handler, TensorModel};
/// struct Iris;
/// impl TensorModel for Iris {}
/// // The same as plinth_guest_sdk::export_tensor_model!(Iris):
/// plinth_guest_sdk::export_handler!(TensorHandler<Iris>);
/// // Its functions can be called in tests like any Handler's:
/// let x = TensorHandler::<Iris>::input_fn(b"1,2".to_vec(), "text/csv", &Context::default()).unwrap();
/// assert_eq!(x.shape, [1, 2]);
/// ```
pub struct TensorHandler<M>(PhantomData<M>);

impl<M: TensorModel> Handler for TensorHandler<M> {
    type Model = Loaded;
    type Payload = Tensor;
    type Prediction = Tensor;

    fn model_fn(model_dir: &str) -> Result<Loaded, HandlerError> {
        let graph = M::model_fn(model_dir)?;
        let session = graph.session()?;
        Ok(Loaded { session, graph })
    }

    fn input_fn(body: Vec<u8>, content_type: &str, ctx: &Context) -> Result<Tensor, HandlerError> {
        M::input_fn(body, content_type, ctx)
    }

    fn predict_fn(input: Tensor, model: &Loaded, ctx: &Context) -> Result<Tensor, HandlerError> {
        M::predict_fn(input, &model.session, ctx)
    }

    fn output_fn(output: Tensor, accept: &str, ctx: &Context) -> Result<Response, HandlerError> {
        M::output_fn(output, accept, ctx)
    }

    fn predict_batch(
        payloads: Vec<Tensor>,
        model: &Loaded,
        ctxs: &[Context],
    ) -> Vec<Result<Tensor, HandlerError>> {
        if !M::STACK_BATCHES || !stackable(&payloads) {
            return payloads
                .into_iter()
                .zip(ctxs)
                .map(|(x, ctx)| M::predict_fn(x, &model.session, ctx))
                .collect();
        }
        let rows: Vec<usize> = payloads.iter().map(|t| t.shape[0]).collect();
        let ctx = ctxs.first().cloned().unwrap_or_default();
        // The stacked run consumes the payloads; a copy is kept to run each alone if it fails
        // (a graph whose batch axis is fixed at 1, or one request's bad values): one request
        // never fails the others.
        let alone = payloads.clone();
        match M::predict_fn(stack(payloads), &model.session, &ctx) {
            Ok(output) => split(output, &rows),
            Err(_) => alone
                .into_iter()
                .zip(ctxs)
                .map(|(x, ctx)| M::predict_fn(x, &model.session, ctx))
                .collect(),
        }
    }
}

/// Whether tensors can be stacked along their first axis: more than one, each with at
/// least one axis, all with the same shape after the first.
fn stackable(tensors: &[Tensor]) -> bool {
    match tensors {
        [] | [_] => false,
        [first, rest @ ..] => {
            !first.shape.is_empty()
                && rest
                    .iter()
                    .all(|t| t.shape.get(1..) == first.shape.get(1..))
        }
    }
}

/// Stack tensors that are [`stackable`] along their first axis.
fn stack(tensors: Vec<Tensor>) -> Tensor {
    let mut shape = tensors[0].shape.clone();
    shape[0] = tensors.iter().map(|t| t.shape[0]).sum();
    let mut data = Vec::with_capacity(tensors.iter().map(|t| t.data.len()).sum());
    for t in tensors {
        data.extend(t.data);
    }
    Tensor { data, shape }
}

/// Split a stacked run's output back into one tensor per request of `rows` rows each; if its
/// first axis is not the batch's row count, every request fails saying so.
fn split(output: Tensor, rows: &[usize]) -> Vec<Result<Tensor, HandlerError>> {
    let total: usize = rows.iter().sum();
    if output.shape.first() != Some(&total) {
        let e = HandlerError::model_error(format!(
            "a batch of {total} rows gave an output of shape {:?}, whose first axis is not the \
             rows: set TensorModel::STACK_BATCHES to false for this model",
            output.shape
        ));
        return rows.iter().map(|_| Err(e.clone())).collect();
    }
    let row_len = output.data.len().checked_div(total).unwrap_or(0);
    let mut start = 0;
    rows.iter()
        .map(|&n| {
            let mut shape = output.shape.clone();
            shape[0] = n;
            let part = output.data[start * row_len..(start + n) * row_len].to_vec();
            start += n;
            Ok(Tensor { data: part, shape })
        })
        .collect()
}

/// Export a [`TensorModel`] as this component's `plinth:model/handler` interface: the same
/// as [`export_handler!`](crate::export_handler)`(TensorHandler<M>)`.
///
/// # Examples
///
/// ```
/// struct Iris;
/// impl plinth_guest_sdk::TensorModel for Iris {}
/// plinth_guest_sdk::export_tensor_model!(Iris);
/// ```
#[macro_export]
macro_rules! export_tensor_model {
    ($model:ty) => {
        $crate::export_handler!($crate::tensor_model::TensorHandler<$model>);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(data: &[f32], shape: &[usize]) -> Tensor {
        Tensor::new(data.to_vec(), shape.to_vec()).unwrap()
    }

    #[test]
    fn batches_stack_when_the_rows_agree() {
        assert!(stackable(&[
            t(&[1., 2.], &[1, 2]),
            t(&[3., 4., 5., 6.], &[2, 2])
        ]));
        // Different row lengths, a scalar, or a single request: no stacking.
        assert!(!stackable(&[
            t(&[1., 2.], &[1, 2]),
            t(&[3., 4., 5.], &[1, 3])
        ]));
        assert!(!stackable(&[t(&[1.], &[]), t(&[2.], &[])]));
        assert!(!stackable(&[t(&[1., 2.], &[1, 2])]));
        let stacked = stack(vec![t(&[1., 2.], &[1, 2]), t(&[3., 4., 5., 6.], &[2, 2])]);
        assert_eq!(stacked, t(&[1., 2., 3., 4., 5., 6.], &[3, 2]));
    }

    #[test]
    fn a_stacked_output_splits_back_by_rows() {
        let out = t(&[0.1, 0.9, 0.2, 0.8, 0.3, 0.7], &[3, 2]);
        let parts = split(out, &[1, 2]);
        assert_eq!(parts[0], Ok(t(&[0.1, 0.9], &[1, 2])));
        assert_eq!(parts[1], Ok(t(&[0.2, 0.8, 0.3, 0.7], &[2, 2])));
        // An output that lost the batch axis fails every request, saying what to do.
        let parts = split(t(&[1.0], &[1]), &[1, 2]);
        assert_eq!(parts.len(), 2);
        let Err(HandlerError::ModelError(m)) = &parts[1] else {
            panic!("{parts:?}")
        };
        assert!(m.contains("STACK_BATCHES"), "{m}");
    }

    #[test]
    fn the_only_output_is_taken_unless_one_is_named() {
        let one = Outputs(vec![("probabilities".into(), t(&[1.0], &[1]))]);
        assert_eq!(pick_output(one.clone(), None), Ok(t(&[1.0], &[1])));
        assert!(pick_output(one, Some("logits")).is_err());
        let two = Outputs(vec![
            ("a".into(), t(&[1.0], &[1])),
            ("b".into(), t(&[2.0], &[1])),
        ]);
        assert_eq!(pick_output(two.clone(), Some("b")), Ok(t(&[2.0], &[1])));
        let Err(HandlerError::ModelError(m)) = pick_output(two, None) else {
            panic!()
        };
        assert!(m.contains("2 outputs (a, b)"), "{m}");
    }

    struct Defaults;
    impl TensorModel for Defaults {}

    #[test]
    fn the_defaults_are_the_codecs() {
        let ctx = Context::default();
        let x = TensorHandler::<Defaults>::input_fn(b"1,2\n3,4".to_vec(), "text/csv", &ctx);
        assert_eq!(x, Ok(t(&[1., 2., 3., 4.], &[2, 2])));
        let Err(HandlerError::UnsupportedMediaType(_)) =
            TensorHandler::<Defaults>::input_fn(b"x".to_vec(), "text/html", &ctx)
        else {
            panic!()
        };
        let y = t(&[0.5, 0.25], &[1, 2]);
        let json = TensorHandler::<Defaults>::output_fn(y.clone(), "", &ctx).unwrap();
        assert_eq!(
            (json.body.as_slice(), json.content_type.as_str()),
            (&b"[[0.5,0.25]]"[..], codec::JSON)
        );
        let csv = TensorHandler::<Defaults>::output_fn(y, "text/csv", &ctx).unwrap();
        assert_eq!(csv.content_type, codec::CSV);
    }
}
