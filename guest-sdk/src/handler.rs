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
pub trait Handler: 'static {
    /// The loaded model, built once per instance.
    type Model: 'static;
    /// A decoded request.
    type Payload: 'static;
    /// The model's output for one request.
    type Prediction: 'static;

    /// Load the model from `model_dir` (mounted read-only, SageMaker's `/opt/ml/model`).
    fn model_fn(model_dir: &str) -> Result<Self::Model, HandlerError>;

    /// Decode a request body according to its `Content-Type`.
    fn input_fn(
        body: Vec<u8>,
        content_type: &str,
        ctx: &Context,
    ) -> Result<Self::Payload, HandlerError>;

    /// Run the model on a decoded request.
    fn predict_fn(
        data: Self::Payload,
        model: &Self::Model,
        ctx: &Context,
    ) -> Result<Self::Prediction, HandlerError>;

    /// Encode a prediction. `accept` is the request's `Accept` header; empty or `*/*` means
    /// the handler's default type (see [`crate::codec::negotiate`]).
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// `X-Amzn-SageMaker-Inference-Id`, or one Plinth generated.
    pub inference_id: String,
    /// `X-Amzn-SageMaker-Custom-Attributes`, as sent by the client.
    pub custom_attributes: Option<String>,
    /// The production variant serving this request.
    pub variant_name: String,
}

/// What [`Handler::output_fn`] returns.
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
    /// A response with `body` of type `content_type` and no custom attributes.
    pub fn new(body: impl Into<Vec<u8>>, content_type: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            content_type: content_type.into(),
            custom_attributes: None,
        }
    }

    /// A `text/plain` response.
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(text.into().into_bytes(), "text/plain")
    }

    /// An `application/json` response holding `value`.
    pub fn json(value: &serde_json::Value) -> Self {
        Self::new(crate::codec::encode_json_value(value), crate::codec::JSON)
    }

    /// `tensor` encoded as `content_type` (see [`crate::codec::encode`]).
    pub fn tensor(tensor: &crate::codec::Tensor, content_type: &str) -> Result<Self, HandlerError> {
        let body = crate::codec::encode(tensor, content_type)?;
        Ok(Self::new(body, crate::codec::media_type(content_type)))
    }

    /// The same response with `X-Amzn-SageMaker-Custom-Attributes` set to `attributes`.
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
