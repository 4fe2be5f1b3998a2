//! The handler trait authors implement, its context and response types, and the adapter
//! that turns a [`Handler`] into the generated `plinth:model/handler` exports. Its error type,
//! [`HandlerError`], is the codec crate's (`plinth-codec`), so that the codecs return it
//! directly; its conversion to the WIT `handler-error` is here.

use std::marker::PhantomData;

use crate::bindings::exports::plinth::model::handler as wit;
use crate::HandlerError;

/// SageMaker's four handler functions, as plain Rust.
///
/// Plinth calls [`Handler::model_fn`] once per instance (a warm instance keeps its model), then
/// for each request [`Handler::input_fn`] -> [`Handler::predict_fn`] -> [`Handler::output_fn`].
/// The associated types stay inside the component; the host only sees bodies.
///
/// Return a [`HandlerError`] for anything foreseeable. A panic fails the request and the
/// instance is thrown away and replaced.
///
/// # Examples
///
/// A model that scales CSV or JSON rows by a factor read at load time; export it with
/// [`crate::export_handler!`] in the crate that builds the component.
///
/// ```
/// use plinth_guest_sdk::{codec, Context, Handler, HandlerError, Response};
/// use codec::Tensor;
///
/// struct Scale;
///
/// impl Handler for Scale {
///     type Model = f32;
///     type Payload = Tensor;
///     type Prediction = Tensor;
///
///     fn model_fn(_model_dir: &str) -> Result<f32, HandlerError> {
///         Ok(2.0)
///     }
///     fn input_fn(
///         body: Vec<u8>,
///         content_type: &str,
///         _: &Context,
///     ) -> Result<Tensor, HandlerError> {
///         codec::decode(&body, content_type)
///     }
///     fn predict_fn(mut x: Tensor, factor: &f32, _: &Context) -> Result<Tensor, HandlerError> {
///         x.data.iter_mut().for_each(|v| *v *= factor);
///         Ok(x)
///     }
///     fn output_fn(y: Tensor, accept: &str, _: &Context) -> Result<Response, HandlerError> {
///         Response::tensor(&y, codec::negotiate(accept, codec::TENSOR_TYPES)?)
///     }
/// }
///
/// // What Plinth does for one request.
/// let (model, ctx) = (Scale::model_fn("/opt/ml/model").unwrap(), Context::default());
/// let x = Scale::input_fn(b"1,2\n".to_vec(), "text/csv", &ctx).unwrap();
/// let y = Scale::predict_fn(x, &model, &ctx).unwrap();
/// assert_eq!(Scale::output_fn(y, "text/csv", &ctx).unwrap().body, b"2,4\n");
/// ```
pub trait Handler: 'static {
    /// The loaded model, built once per instance.
    type Model: 'static;
    /// A decoded request.
    type Payload: 'static;
    /// The model's output for one request.
    type Prediction: 'static;

    /// Load the model from `model_dir` (mounted read-only, SageMaker's `/opt/ml/model`).
    ///
    /// # Examples
    ///
    /// The body of a `model_fn` that takes the graph the host preloaded from `model.onnx`
    /// (or loads the file itself) and keeps one session for every request:
    ///
    /// ```no_run
    /// use plinth_guest_sdk::{nn::Session, HandlerError};
    ///
    /// fn model_fn(model_dir: &str) -> Result<Session, HandlerError> {
    ///     let graph = plinth_guest_sdk::nn::Graph::load("model", model_dir)?;
    ///     Ok(graph.session()?)
    /// }
    /// ```
    fn model_fn(model_dir: &str) -> Result<Self::Model, HandlerError>;

    /// Decode a request body according to its `Content-Type`.
    ///
    /// # Examples
    ///
    /// The body of an `input_fn` that reads CSV and JSON only:
    ///
    /// ```
    /// use plinth_guest_sdk::{codec, codec::Tensor, Context, HandlerError};
    ///
    /// fn input_fn(
    ///     body: Vec<u8>,
    ///     content_type: &str,
    ///     _: &Context,
    /// ) -> Result<Tensor, HandlerError> {
    ///     match codec::require_content_type(content_type, &[codec::CSV, codec::JSON])? {
    ///         codec::CSV => codec::decode_csv(&body),
    ///         _ => codec::decode_json(&body),
    ///     }
    /// }
    /// let x = input_fn(b"5.1,3.5\n".to_vec(), "text/csv; charset=utf-8", &Context::default());
    /// assert_eq!(x.unwrap().shape, vec![1, 2]);
    /// let npy = input_fn(b"".to_vec(), "application/x-npy", &Context::default());
    /// assert!(matches!(npy, Err(HandlerError::UnsupportedMediaType(_))));
    /// ```
    fn input_fn(
        body: Vec<u8>,
        content_type: &str,
        ctx: &Context,
    ) -> Result<Self::Payload, HandlerError>;

    /// Run the model on a decoded request.
    ///
    /// # Examples
    ///
    /// The body of a `predict_fn` that runs an ONNX graph whose input is `"input"` and
    /// output `"probabilities"`:
    ///
    /// ```no_run
    /// use plinth_guest_sdk::{codec::Tensor, nn::Session, Context, HandlerError};
    ///
    /// fn predict_fn(x: Tensor, session: &Session, _: &Context) -> Result<Tensor, HandlerError> {
    ///     session.run(&[("input", &x)])?.take("probabilities")
    /// }
    /// ```
    fn predict_fn(
        data: Self::Payload,
        model: &Self::Model,
        ctx: &Context,
    ) -> Result<Self::Prediction, HandlerError>;

    /// Encode a prediction. `accept` is the request's `Accept` header; empty or `*/*` means
    /// the handler's default type (see [`crate::codec::negotiate`]).
    ///
    /// # Examples
    ///
    /// The body of an `output_fn` that writes labels as JSON by default, or as CSV:
    ///
    /// ```
    /// use plinth_guest_sdk::{codec, Context, HandlerError, Response};
    ///
    /// fn output_fn(
    ///     labels: Vec<String>,
    ///     accept: &str,
    ///     _: &Context,
    /// ) -> Result<Response, HandlerError> {
    ///     match codec::negotiate(accept, &[codec::JSON, codec::CSV])? {
    ///         codec::CSV => Ok(Response::new(labels.join("\n") + "\n", codec::CSV)),
    ///         _ => Response::json(&labels),
    ///     }
    /// }
    /// let r = output_fn(vec!["setosa".into()], "*/*", &Context::default()).unwrap();
    /// assert_eq!((r.body, r.content_type), (br#"["setosa"]"#.to_vec(), codec::JSON.to_owned()));
    /// ```
    fn output_fn(
        prediction: Self::Prediction,
        accept: &str,
        ctx: &Context,
    ) -> Result<Response, HandlerError>;

    /// Run the model on several decoded requests at once: Plinth batches the requests that
    /// queue for a busy instance when the variant allows it (`PlinthMaxBatchSize`). Return
    /// one result per payload, in order. The default calls [`Handler::predict_fn`] on each;
    /// override it to run the model once over the whole batch (e.g. stack the rows of every
    /// payload into one tensor), which is where batching saves time.
    ///
    /// # Examples
    ///
    /// The body of a `predict_batch` that runs the model (here: scaling by a factor) once
    /// over the values of every payload, then hands each payload its own part back:
    ///
    /// ```
    /// use plinth_guest_sdk::{codec::Tensor, Context, HandlerError};
    ///
    /// type Results = Vec<Result<Tensor, HandlerError>>;
    /// fn predict_batch(xs: Vec<Tensor>, factor: &f32, _: &[Context]) -> Results {
    ///     let all: Vec<f32> = xs.iter().flat_map(|x| &x.data).map(|v| v * factor).collect();
    ///     let mut rest = &all[..];
    ///     let mut own = |n: usize| {
    ///         let (mine, others) = rest.split_at(n);
    ///         rest = others;
    ///         mine.to_vec()
    ///     };
    ///     xs.into_iter().map(|x| Tensor::new(own(x.data.len()), x.shape)).collect()
    /// }
    /// let xs = vec![Tensor::new(vec![1.0], vec![1])?, Tensor::new(vec![2.0, 3.0], vec![2])?];
    /// let ys = predict_batch(xs, &10.0, &[Context::default(), Context::default()]);
    /// assert_eq!(ys[1].as_ref().unwrap().data, vec![20.0, 30.0]);
    /// # Ok::<(), HandlerError>(())
    /// ```
    fn predict_batch(
        payloads: Vec<Self::Payload>,
        model: &Self::Model,
        ctxs: &[Context],
    ) -> Vec<Result<Self::Prediction, HandlerError>> {
        payloads
            .into_iter()
            .zip(ctxs)
            .map(|(payload, ctx)| Self::predict_fn(payload, model, ctx))
            .collect()
    }
}

/// Per-request facts that SageMaker passes to its handlers.
///
/// # Examples
///
/// Send the client's custom attributes back with the response:
///
/// ```
/// use plinth_guest_sdk::{Context, Response};
///
/// let ctx = Context {
///     custom_attributes: Some("trace=on".to_owned()),
///     ..Context::default()
/// };
/// let r = Response::text("ok").with_custom_attributes(ctx.custom_attributes.clone());
/// assert_eq!(r.custom_attributes.as_deref(), Some("trace=on"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// `X-Amzn-SageMaker-Inference-Id`, or one Plinth generated.
    pub inference_id: String,
    /// `X-Amzn-SageMaker-Custom-Attributes`, as sent by the client.
    pub custom_attributes: Option<String>,
    /// The production variant serving this request.
    pub variant_name: String,
}

/// What [`Handler::output_fn`] returns: a body, its `Content-Type` and optional custom
/// attributes.
///
/// Constructors that can fail return `Result`: [`Response::json`] (a value that does not
/// serialize) and [`Response::tensor`] (a type the codecs do not write) give a
/// [`HandlerError`] an `output_fn` returns with `?`. [`Response::new`] and [`Response::text`]
/// cannot fail and return the response itself.
///
/// # Examples
///
/// ```
/// use plinth_guest_sdk::{codec, serde_json::json, Response};
///
/// let r = Response::json(&json!({"label": "setosa", "score": codec::json_number(0.97)}))?;
/// assert_eq!(r.body, br#"{"label":"setosa","score":0.97}"#);
/// assert_eq!(r.content_type, "application/json");
/// # Ok::<(), plinth_guest_sdk::HandlerError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// The response body.
    pub body: Vec<u8>,
    /// Its media type, sent as `Content-Type`.
    pub content_type: String,
    /// Sent back as `X-Amzn-SageMaker-Custom-Attributes` when set.
    pub custom_attributes: Option<String>,
}

impl Response {
    /// A response with `body` of type `content_type` and no custom attributes. It cannot
    /// fail: the body is sent as it is.
    ///
    /// # Examples
    ///
    /// ```
    /// use plinth_guest_sdk::{codec, Response};
    ///
    /// let r = Response::new("setosa\nvirginica\n", codec::CSV);
    /// assert_eq!((r.body.len(), r.content_type.as_str()), (17, "text/csv"));
    /// ```
    pub fn new(body: impl Into<Vec<u8>>, content_type: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            content_type: content_type.into(),
            custom_attributes: None,
        }
    }

    /// A `text/plain` response. It cannot fail.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = plinth_guest_sdk::Response::text(format!("{} rows", 3));
    /// assert_eq!((r.body, r.content_type), (b"3 rows".to_vec(), "text/plain".to_owned()));
    /// ```
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(text.into().into_bytes(), "text/plain")
    }

    /// An `application/json` response holding `value`: anything `serde` serializes, such as
    /// a [`serde_json::Value`] built with [`serde_json::json!`], a `Vec`, a map or a
    /// `#[derive(Serialize)]` type. Object keys keep the order the value gives them (the SDK
    /// turns on `serde_json`'s `preserve_order`); an `f32` is written as its `f64` value
    /// (`0.9700000286102295`), so pass scores through [`crate::codec::json_number`] for the
    /// short form.
    ///
    /// A value that does not serialize (a map with non-string keys, a `Serialize` impl that
    /// fails) is a [`HandlerError::ModelError`] naming its type and what failed.
    ///
    /// # Examples
    ///
    /// ```
    /// use plinth_guest_sdk::{codec::json_number, serde_json::json, Response};
    ///
    /// let r = Response::json(&json!({"scores": [json_number(0.9), json_number(0.1)]}))?;
    /// assert_eq!(r.body, br#"{"scores":[0.9,0.1]}"#);
    /// let r = Response::json(&["setosa", "virginica"])?;
    /// assert_eq!(r.body, br#"["setosa","virginica"]"#);
    /// # Ok::<(), plinth_guest_sdk::HandlerError>(())
    /// ```
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, HandlerError> {
        let body = serde_json::to_vec(value).map_err(|e| {
            HandlerError::model_error(format!(
                "the response could not be written as JSON: {} failed to serialize: {e}",
                std::any::type_name::<T>()
            ))
        })?;
        Ok(Self::new(body, crate::codec::JSON))
    }

    /// `tensor` encoded as `content_type` (see [`crate::codec::encode`]); a type the codecs do
    /// not write is a [`HandlerError::NotAcceptable`]. The response's `Content-Type` is the
    /// media type without parameters.
    ///
    /// # Examples
    ///
    /// ```
    /// use plinth_guest_sdk::{codec, Response};
    ///
    /// let y = codec::Tensor::new(vec![0.25, 0.75], vec![1, 2])?;
    /// let r = Response::tensor(&y, codec::negotiate("text/csv", codec::TENSOR_TYPES)?)?;
    /// assert_eq!((r.body, r.content_type), (b"0.25,0.75\n".to_vec(), "text/csv".to_owned()));
    /// assert!(Response::tensor(&y, "image/png").is_err());
    /// # Ok::<(), plinth_guest_sdk::HandlerError>(())
    /// ```
    pub fn tensor(tensor: &crate::codec::Tensor, content_type: &str) -> Result<Self, HandlerError> {
        let body = crate::codec::encode(tensor, content_type)?;
        Ok(Self::new(body, crate::codec::media_type(content_type)))
    }

    /// The same response with `X-Amzn-SageMaker-Custom-Attributes` set to `attributes`.
    ///
    /// # Examples
    ///
    /// ```
    /// use plinth_guest_sdk::{Context, Response};
    ///
    /// let ctx = Context::default();
    /// let r = Response::text("ok").with_custom_attributes(Some("model=v2".into()));
    /// assert_eq!(r.custom_attributes.as_deref(), Some("model=v2"));
    /// let r = r.with_custom_attributes(ctx.custom_attributes.clone());
    /// assert_eq!(r.custom_attributes, None);
    /// ```
    pub fn with_custom_attributes(mut self, attributes: Option<String>) -> Self {
        self.custom_attributes = attributes;
        self
    }
}

impl From<HandlerError> for wit::HandlerError {
    fn from(e: HandlerError) -> Self {
        match e {
            HandlerError::BadRequest(m) => Self::BadRequest(m),
            HandlerError::UnsupportedMediaType(m) => Self::UnsupportedMediaType(m),
            HandlerError::NotAcceptable(m) => Self::NotAcceptable(m),
            HandlerError::ModelError(m) => Self::ModelError(m),
        }
    }
}

impl From<wit::Context> for Context {
    fn from(c: wit::Context) -> Self {
        Self {
            inference_id: c.inference_id,
            custom_attributes: c.custom_attributes,
            variant_name: c.variant_name,
        }
    }
}

impl From<Response> for wit::Response {
    fn from(r: Response) -> Self {
        Self {
            body: r.body,
            content_type: r.content_type,
            custom_attributes: r.custom_attributes,
        }
    }
}

/// Implements the generated exports for any [`Handler`]; [`crate::export_handler!`] exports it.
#[doc(hidden)]
pub struct Adapter<H>(PhantomData<H>);

/// Holds a [`Handler::Model`] as the `model` resource.
#[doc(hidden)]
pub struct ModelResource<H: Handler>(H::Model);
/// Holds a [`Handler::Payload`] as the `payload` resource.
#[doc(hidden)]
pub struct PayloadResource<H: Handler>(H::Payload);
/// Holds a [`Handler::Prediction`] as the `prediction` resource.
#[doc(hidden)]
pub struct PredictionResource<H: Handler>(H::Prediction);

impl<H: Handler> wit::GuestModel for ModelResource<H> {}
impl<H: Handler> wit::GuestPayload for PayloadResource<H> {}
impl<H: Handler> wit::GuestPrediction for PredictionResource<H> {}

impl<H: Handler> wit::Guest for Adapter<H> {
    type Model = ModelResource<H>;
    type Payload = PayloadResource<H>;
    type Prediction = PredictionResource<H>;

    fn model_fn(model_dir: String) -> Result<wit::Model, wit::HandlerError> {
        let model = H::model_fn(&model_dir)?;
        Ok(wit::Model::new(ModelResource::<H>(model)))
    }

    fn input_fn(
        body: Vec<u8>,
        content_type: String,
        ctx: wit::Context,
    ) -> Result<wit::Payload, wit::HandlerError> {
        let payload = H::input_fn(body, &content_type, &ctx.into())?;
        Ok(wit::Payload::new(PayloadResource::<H>(payload)))
    }

    fn predict_fn(
        data: wit::Payload,
        model: wit::ModelBorrow<'_>,
        ctx: wit::Context,
    ) -> Result<wit::Prediction, wit::HandlerError> {
        let data = data.into_inner::<PayloadResource<H>>().0;
        let model = &model.get::<ModelResource<H>>().0;
        let prediction = H::predict_fn(data, model, &ctx.into())?;
        Ok(wit::Prediction::new(PredictionResource::<H>(prediction)))
    }

    fn output_fn(
        prediction: wit::Prediction,
        accept: String,
        ctx: wit::Context,
    ) -> Result<wit::Response, wit::HandlerError> {
        let prediction = prediction.into_inner::<PredictionResource<H>>().0;
        Ok(H::output_fn(prediction, &accept, &ctx.into())?.into())
    }

    fn invoke(
        model: wit::ModelBorrow<'_>,
        body: Vec<u8>,
        content_type: String,
        accept: String,
        ctx: wit::Context,
    ) -> Result<wit::Response, wit::HandlerError> {
        let model = &model.get::<ModelResource<H>>().0;
        let ctx = ctx.into();
        let payload = H::input_fn(body, &content_type, &ctx)?;
        let prediction = H::predict_fn(payload, model, &ctx)?;
        Ok(H::output_fn(prediction, &accept, &ctx)?.into())
    }

    fn invoke_batch(
        model: wit::ModelBorrow<'_>,
        requests: Vec<wit::Request>,
    ) -> Vec<Result<wit::Response, wit::HandlerError>> {
        let model = &model.get::<ModelResource<H>>().0;
        let n = requests.len();
        let mut results: Vec<Option<Result<wit::Response, wit::HandlerError>>> =
            (0..n).map(|_| None).collect();
        // Decode every request; those that fail to decode are answered now.
        let (mut decoded, mut ctxs, mut accepts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (i, request) in requests.into_iter().enumerate() {
            let ctx: Context = request.ctx.into();
            match H::input_fn(request.body, &request.content_type, &ctx) {
                Ok(payload) => {
                    decoded.push((i, payload));
                    ctxs.push(ctx);
                    accepts.push(request.accept);
                }
                Err(e) => results[i] = Some(Err(e.into())),
            }
        }
        let (indices, payloads): (Vec<usize>, Vec<H::Payload>) = decoded.into_iter().unzip();
        let predictions = H::predict_batch(payloads, model, &ctxs);
        if predictions.len() != indices.len() {
            let e = HandlerError::model_error(format!(
                "predict_batch returned {} results for {} requests",
                predictions.len(),
                indices.len()
            ));
            for i in indices {
                results[i] = Some(Err(e.clone().into()));
            }
        } else {
            for (((i, prediction), ctx), accept) in indices
                .into_iter()
                .zip(predictions)
                .zip(&ctxs)
                .zip(&accepts)
            {
                results[i] = Some(
                    prediction
                        .and_then(|p| H::output_fn(p, accept, ctx))
                        .map(Into::into)
                        .map_err(Into::into),
                );
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every request has a result"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_key_order_and_names_what_failed() {
        let value = serde_json::json!({"z": 1, "a": [2], "m": null});
        let r = Response::json(&value).unwrap();
        assert_eq!(r.body, br#"{"z":1,"a":[2],"m":null}"#);
        assert_eq!(r.body, crate::codec::encode_json_value(&value));
        assert_eq!(r.content_type, "application/json");

        let mut bad = std::collections::BTreeMap::new();
        bad.insert((1, 2), 0.5);
        match Response::json(&bad) {
            Err(HandlerError::ModelError(m)) => {
                assert!(
                    m.starts_with("the response could not be written as JSON: "),
                    "{m}"
                );
                assert!(m.contains("BTreeMap<(i32, i32), f64>"), "{m}");
                assert!(m.contains("key must be a string"), "{m}");
            }
            other => panic!("expected a ModelError, got {other:?}"),
        }
    }
}
