//! The iris classifier: a small MLP (`examples/iris/model/model.onnx`) served through wasi-nn.
//!
//! - `model_fn` takes the graph the host preloaded as `"model"`, or loads
//!   `<model_dir>/model.onnx` itself if the host has none by that name.
//! - `input_fn` reads CSV, JSON or NPY into an N x 4 matrix of features (sepal length, sepal
//!   width, petal length, petal width, in cm).
//! - `predict_fn` runs input `"input"` -> output `"probabilities"` (N x 3).
//! - `output_fn` writes JSON (default), CSV (`label,p0,p1,p2` per row) or NPY (N x 3).

use plinth_guest_sdk::codec::{self, Tensor};
use plinth_guest_sdk::nn::{Graph, Session};
use plinth_guest_sdk::{Context, Handler, HandlerError, Response};

/// The class labels, in the model's output order.
const LABELS: [&str; 3] = ["setosa", "versicolor", "virginica"];
/// What a JSON prediction starts with, per class: the hot path writes it in one piece.
const ROW_PREFIXES: [&str; 3] = [
    r#"{"label":"setosa","class_index":0,"probabilities":["#,
    r#"{"label":"versicolor","class_index":1,"probabilities":["#,
    r#"{"label":"virginica","class_index":2,"probabilities":["#,
];
const FEATURES: usize = 4;
const OUTPUT_TYPES: &[&str] = &[codec::JSON, codec::CSV, codec::NPY];

struct Iris;

/// The loaded graph and an execution context reused across requests.
struct Model {
    session: Session,
    _graph: Graph,
}

impl Handler for Iris {
    type Model = Model;
    type Payload = Tensor;
    type Prediction = Tensor;

    fn model_fn(model_dir: &str) -> Result<Model, HandlerError> {
        let graph = Graph::load("model", model_dir)?;
        let session = graph.session()?;
        Ok(Model {
            session,
            _graph: graph,
        })
    }

    fn input_fn(body: Vec<u8>, content_type: &str, _ctx: &Context) -> Result<Tensor, HandlerError> {
        let features = codec::decode(&body, content_type)?.into_matrix()?;
        let columns = features.shape[1];
        if columns != FEATURES {
            return Err(HandlerError::bad_request(format!(
                "expected {FEATURES} features per row (sepal length, sepal width, petal length, \
                 petal width), got {columns}"
            )));
        }
        Ok(features)
    }

    fn predict_fn(features: Tensor, model: &Model, _ctx: &Context) -> Result<Tensor, HandlerError> {
        let rows = features.shape[0];
        let probabilities = model
            .session
            .run(&[("input", &features)])?
            .take("probabilities")?;
        if probabilities.shape != [rows, LABELS.len()] {
            return Err(HandlerError::model_error(format!(
                "expected probabilities of shape [{rows}, {}], the model gave {:?}",
                LABELS.len(),
                probabilities.shape
            )));
        }
        Ok(probabilities)
    }

    /// The whole batch in one run: every request's rows stacked into one matrix, the
    /// probabilities split back by request.
    fn predict_batch(
        batch: Vec<Tensor>,
        model: &Model,
        _ctxs: &[Context],
    ) -> Vec<Result<Tensor, HandlerError>> {
        let rows: Vec<usize> = batch.iter().map(|t| t.shape[0]).collect();
        let total = rows.iter().sum();
        let mut data = Vec::with_capacity(total * FEATURES);
        for features in batch {
            data.extend(features.data);
        }
        let stacked = match Tensor::new(data, vec![total, FEATURES]) {
            Ok(t) => t,
            Err(e) => return rows.iter().map(|_| Err(e.clone())).collect(),
        };
        let probabilities = match Self::predict_fn(stacked, model, &Context::default()) {
            Ok(p) => p,
            Err(e) => return rows.iter().map(|_| Err(e.clone())).collect(),
        };
        let width = LABELS.len();
        let mut start = 0;
        rows.iter()
            .map(|&n| {
                let part = probabilities.data[start * width..(start + n) * width].to_vec();
                start += n;
                Tensor::new(part, vec![n, width])
            })
            .collect()
    }

    fn output_fn(
        probabilities: Tensor,
        accept: &str,
        _ctx: &Context,
    ) -> Result<Response, HandlerError> {
        let content_type = codec::negotiate(accept, OUTPUT_TYPES)?;
        match content_type {
            codec::JSON => {
                // Written by hand: this is the hot path of every request.
                let mut body = String::with_capacity(32 + 96 * probabilities.shape[0]);
                body.push_str("{\"predictions\":[");
                for (i, row) in probabilities.iter_rows().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str(ROW_PREFIXES[argmax(row)]);
                    for (j, &p) in row.iter().enumerate() {
                        if j > 0 {
                            body.push(',');
                        }
                        codec::push_json_number(&mut body, p);
                    }
                    body.push_str("]}");
                }
                body.push_str("]}");
                Ok(Response::new(body, codec::JSON))
            }
            codec::CSV => {
                let mut body = String::new();
                for row in probabilities.iter_rows() {
                    body.push_str(LABELS[argmax(row)]);
                    for p in row {
                        body.push(',');
                        body.push_str(&p.to_string());
                    }
                    body.push('\n');
                }
                Ok(Response::new(body, codec::CSV))
            }
            other => Response::tensor(&probabilities, other),
        }
    }
}

/// The index of the largest value (the first one on ties).
fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &p)| {
            if p > best.1 {
                (i, p)
            } else {
                best
            }
        })
        .0
}

plinth_guest_sdk::export_handler!(Iris);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_needs_four_features() {
        let ctx = Context::default();
        let t = Iris::input_fn(b"5.1,3.5,1.4,0.2\n6,3,4,1\n".to_vec(), "text/csv", &ctx).unwrap();
        assert_eq!(t.shape, vec![2, 4]);
        let t = Iris::input_fn(b"[5.1,3.5,1.4,0.2]".to_vec(), "application/json", &ctx).unwrap();
        assert_eq!(t.shape, vec![1, 4]);
        let err = Iris::input_fn(b"1,2,3".to_vec(), "text/csv", &ctx).unwrap_err();
        assert_eq!(
            err,
            HandlerError::bad_request(
                "expected 4 features per row (sepal length, sepal width, petal length, petal \
                 width), got 3"
            )
        );
    }

    #[test]
    fn outputs() {
        let ctx = Context::default();
        let p = Tensor::new(vec![0.97, 0.02, 0.01, 0.1, 0.2, 0.7], vec![2, 3]).unwrap();
        let json = Iris::output_fn(p.clone(), "", &ctx).unwrap();
        assert_eq!(json.content_type, "application/json");
        assert_eq!(
            String::from_utf8(json.body).unwrap(),
            r#"{"predictions":[{"label":"setosa","class_index":0,"probabilities":[0.97,0.02,0.01]},{"label":"virginica","class_index":2,"probabilities":[0.1,0.2,0.7]}]}"#
        );
        let csv = Iris::output_fn(p.clone(), "text/csv", &ctx).unwrap();
        assert_eq!(csv.body, b"setosa,0.97,0.02,0.01\nvirginica,0.1,0.2,0.7\n");
        let npy = Iris::output_fn(p.clone(), "application/x-npy", &ctx).unwrap();
        assert_eq!(codec::decode_npy(&npy.body).unwrap(), p);
        assert!(matches!(
            Iris::output_fn(p, "text/html", &ctx),
            Err(HandlerError::NotAcceptable(_))
        ));
    }
}
