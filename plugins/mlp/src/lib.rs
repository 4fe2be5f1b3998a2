//! A 784-512-512-10 MLP served through wasi-nn, for Plinth's benchmark suite
//! (`host/bench/suite.sh`): the cheapest possible handler around a model that does real work,
//! so that the suite measures what Plinth adds.
//!
//! - `model_fn` takes the graph the host preloaded as `"model"` (or loads
//!   `<model_dir>/model.onnx` itself if the host has none by that name).
//! - `input_fn` takes `application/octet-stream`: N x 784 raw little-endian float32 values,
//!   handed to wasi-nn as they are (no parsing). JSON, CSV and NPY also work (through the SDK's
//!   codecs), for trying it by hand.
//! - `predict_fn` runs input `"input"` -> output `"output"` (N x 10, float32).
//! - `output_fn` writes raw little-endian float32 (`application/octet-stream`, the default)
//!   or JSON `{"outputs":[[...10 numbers], ...]}`.
//!
//! The native reference server (`host/bench/src/bin/native_onnx.rs`, kind `mlp`) reads and
//! writes the same formats.

use plinth_guest_sdk::bindings::wasi::nn::tensor;
use plinth_guest_sdk::codec;
use plinth_guest_sdk::nn;
use plinth_guest_sdk::{Context, Handler, HandlerError, Response};

const FEATURES: usize = 784;
const OUTPUTS: usize = 10;
const RAW: &str = "application/octet-stream";
const OUTPUT_TYPES: &[&str] = &[RAW, codec::JSON];

struct Mlp;

/// The preloaded graph and an execution context reused across requests.
struct Model {
    session: nn::Session,
    _graph: nn::Graph,
}

/// Little-endian float32 bytes and their row count.
struct Rows {
    bytes: Vec<u8>,
    rows: usize,
}

impl Handler for Mlp {
    type Model = Model;
    type Payload = Rows;
    type Prediction = Rows;

    fn model_fn(model_dir: &str) -> Result<Model, HandlerError> {
        let graph = nn::Graph::load("model", model_dir)?;
        let session = graph.session()?;
        Ok(Model {
            session,
            _graph: graph,
        })
    }

    fn input_fn(body: Vec<u8>, content_type: &str, _ctx: &Context) -> Result<Rows, HandlerError> {
        let bytes = if codec::media_type(content_type) == RAW {
            body
        } else {
            let tensor = codec::decode(&body, content_type)?.into_matrix()?;
            tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        let row_bytes = FEATURES * 4;
        if bytes.is_empty() || !bytes.len().is_multiple_of(row_bytes) {
            return Err(HandlerError::bad_request(format!(
                "expected rows of {FEATURES} float32 values ({row_bytes} bytes each), got {} bytes",
                bytes.len()
            )));
        }
        let rows = bytes.len() / row_bytes;
        Ok(Rows { bytes, rows })
    }

    fn predict_fn(input: Rows, model: &Model, _ctx: &Context) -> Result<Rows, HandlerError> {
        let dims = [input.rows as u32, FEATURES as u32];
        let tensor = tensor::Tensor::new(&dims, tensor::TensorType::Fp32, &input.bytes);
        let outputs = model
            .session
            .context()
            .compute(vec![("input".to_owned(), tensor)])
            .map_err(|e| nn::Error::from_wasi("compute", e))?;
        let (_, output) = outputs
            .into_iter()
            .find(|(name, _)| name == "output")
            .ok_or_else(|| HandlerError::model_error("the model has no output \"output\""))?;
        let shape = output.dimensions();
        if output.ty() != tensor::TensorType::Fp32 || shape != [input.rows as u32, OUTPUTS as u32] {
            return Err(HandlerError::model_error(format!(
                "expected a float32 output of shape [{}, {OUTPUTS}], the model gave {:?} {shape:?}",
                input.rows,
                output.ty()
            )));
        }
        Ok(Rows {
            bytes: output.data(),
            rows: input.rows,
        })
    }

    /// The whole batch in one run: every request's rows stacked, the outputs split back.
    fn predict_batch(
        batch: Vec<Rows>,
        model: &Model,
        _ctxs: &[Context],
    ) -> Vec<Result<Rows, HandlerError>> {
        let counts: Vec<usize> = batch.iter().map(|r| r.rows).collect();
        let mut bytes = Vec::with_capacity(batch.iter().map(|r| r.bytes.len()).sum());
        for rows in &batch {
            bytes.extend_from_slice(&rows.bytes);
        }
        let stacked = Rows {
            rows: counts.iter().sum(),
            bytes,
        };
        match Self::predict_fn(stacked, model, &Context::default()) {
            Ok(output) => {
                let mut rest = output.bytes.as_slice();
                counts
                    .iter()
                    .map(|&rows| {
                        let (part, tail) = rest.split_at(rows * OUTPUTS * 4);
                        rest = tail;
                        Ok(Rows {
                            bytes: part.to_vec(),
                            rows,
                        })
                    })
                    .collect()
            }
            Err(e) => counts.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    fn output_fn(output: Rows, accept: &str, _ctx: &Context) -> Result<Response, HandlerError> {
        match codec::negotiate(accept, OUTPUT_TYPES)? {
            RAW => Ok(Response::new(output.bytes, RAW)),
            _ => {
                let mut body = String::with_capacity(16 + 16 * OUTPUTS * output.rows);
                body.push_str("{\"outputs\":[");
                for (i, row) in output.bytes.chunks_exact(OUTPUTS * 4).enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push('[');
                    for (j, value) in row.chunks_exact(4).enumerate() {
                        if j > 0 {
                            body.push(',');
                        }
                        let value = f32::from_le_bytes([value[0], value[1], value[2], value[3]]);
                        codec::push_json_number(&mut body, value);
                    }
                    body.push(']');
                }
                body.push_str("]}");
                Ok(Response::new(body, codec::JSON))
            }
        }
    }
}

plinth_guest_sdk::export_handler!(Mlp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_whole_rows() {
        let ctx = Context::default();
        let rows = Mlp::input_fn(vec![0; 784 * 4 * 2], RAW, &ctx).unwrap();
        assert_eq!(rows.rows, 2);
        assert!(Mlp::input_fn(vec![0; 784 * 4 - 1], RAW, &ctx).is_err());
        assert!(Mlp::input_fn(Vec::new(), RAW, &ctx).is_err());
        let json = format!("[{}]", vec!["0.5"; 784].join(","));
        let rows = Mlp::input_fn(json.into_bytes(), "application/json", &ctx).unwrap();
        assert_eq!(rows.rows, 1);
        assert_eq!(&rows.bytes[..4], &0.5f32.to_le_bytes());
    }

    #[test]
    fn outputs() {
        let ctx = Context::default();
        let bytes: Vec<u8> = (0..10)
            .flat_map(|i| (i as f32 / 4.0).to_le_bytes())
            .collect();
        let rows = || Rows {
            bytes: bytes.clone(),
            rows: 1,
        };
        let raw = Mlp::output_fn(rows(), "", &ctx).unwrap();
        assert_eq!(raw.content_type, RAW);
        assert_eq!(raw.body, bytes);
        let json = Mlp::output_fn(rows(), "application/json", &ctx).unwrap();
        assert_eq!(
            String::from_utf8(json.body).unwrap(),
            "{\"outputs\":[[0.0,0.25,0.5,0.75,1.0,1.25,1.5,1.75,2.0,2.25]]}"
        );
    }
}
