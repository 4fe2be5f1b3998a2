//! The iris request and response formats, written to match Plinth's iris plugin
//! (`plugins/iris`): CSV rows of 4 features in, `{"predictions":[...]}` JSON out; and the
//! network planned and run with tract as the native servers run it.

use anyhow::Context as _;
use std::path::Path;
use tract_onnx::prelude::*;

/// The class labels, in the model's output order.
pub const LABELS: [&str; 3] = ["setosa", "versicolor", "virginica"];

/// Features per row: sepal length, sepal width, petal length, petal width (cm).
pub const FEATURES: usize = 4;

/// A request's CSV rows ([`parse_csv`]), or the status and message refusing it: 415 unless its
/// `Content-Type` is `text/csv` (or absent), 400 for a malformed body.
pub fn csv_request(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<(Vec<f32>, usize), (axum::http::StatusCode, String)> {
    use axum::http::{header, StatusCode};
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/csv");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("text/csv") {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type {content_type:?} is not supported; send text/csv"),
        ));
    }
    parse_csv(body).map_err(|message| (StatusCode::BAD_REQUEST, message))
}

/// Parse a CSV body of rows of [`FEATURES`] numbers into a row-major matrix and its row count.
/// Blank lines are skipped; any other malformed row is an error saying what was expected.
pub fn parse_csv(body: &[u8]) -> Result<(Vec<f32>, usize), String> {
    let text = std::str::from_utf8(body).map_err(|_| "the CSV body is not UTF-8".to_string())?;
    let mut values = Vec::with_capacity(FEATURES);
    let mut rows = 0;
    for (line_no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let before = values.len();
        for field in line.split(',') {
            let value = field
                .trim()
                .parse::<f32>()
                .map_err(|_| format!("line {}: {:?} is not a number", line_no + 1, field.trim()))?;
            values.push(value);
        }
        let columns = values.len() - before;
        if columns != FEATURES {
            return Err(format!(
                "expected {FEATURES} features per row (sepal length, sepal width, petal length, \
                 petal width), got {columns}"
            ));
        }
        rows += 1;
    }
    if rows == 0 {
        return Err("the CSV body has no rows".to_string());
    }
    Ok((values, rows))
}

/// The index of the largest value (the first one on ties).
pub fn argmax(row: &[f32]) -> usize {
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

/// The JSON response for row-major probabilities of shape `[rows, 3]`, written by hand as
/// the plugin writes it (each probability the shortest decimal that reads back as the f32,
/// by the same formatter).
pub fn predictions_json(probabilities: &[f32]) -> String {
    use std::fmt::Write;
    let mut body = String::with_capacity(32 + 96 * probabilities.len() / LABELS.len());
    body.push_str("{\"predictions\":[");
    for (i, row) in probabilities.chunks_exact(LABELS.len()).enumerate() {
        if i > 0 {
            body.push(',');
        }
        let class = argmax(row);
        let _ = write!(
            body,
            "{{\"label\":\"{}\",\"class_index\":{class},\"probabilities\":[",
            LABELS[class]
        );
        for (j, p) in row.iter().enumerate() {
            if j > 0 {
                body.push(',');
            }
            if p.is_finite() {
                body.push_str(zmij::Buffer::new().format_finite(*p));
            } else {
                body.push_str("null");
            }
        }
        body.push_str("]}");
    }
    body.push_str("]}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn parses_rows() {
        let (values, rows) = parse_csv(b"5.1,3.5,1.4,0.2\n\n6,3,4,1\n").unwrap();
        assert_eq!(rows, 2);
        assert_eq!(values, vec![5.1, 3.5, 1.4, 0.2, 6.0, 3.0, 4.0, 1.0]);
        assert!(parse_csv(b"1,2,3").unwrap_err().contains("got 3"));
        assert!(parse_csv(b"1,2,x,4").unwrap_err().contains("not a number"));
        assert!(parse_csv(b"\n").is_err());
    }

    #[test]
    fn formats_predictions() {
        let json: Value =
            serde_json::from_str(&predictions_json(&[0.97, 0.02, 0.01, 0.1, 0.2, 0.7])).unwrap();
        assert_eq!(
            json,
            json!({"predictions": [
                {"label": "setosa", "class_index": 0, "probabilities": [0.97, 0.02, 0.01]},
                {"label": "virginica", "class_index": 2, "probabilities": [0.1, 0.2, 0.7]},
            ]})
        );
    }
}

/// A planned iris network.
pub type Plan = std::sync::Arc<TypedRunnableModel>;

/// Parse, optimise and plan the model once.
pub fn load(path: &Path) -> anyhow::Result<Plan> {
    let plan = tract_onnx::onnx()
        .model_for_path(path)
        .with_context(|| format!("cannot read the ONNX model {}", path.display()))?
        .into_optimized()?
        .into_runnable()?;
    Ok(plan)
}

thread_local! {
    /// tract's run state, reused from request to request on each worker thread (as Plinth's
    /// backend reuses one per instance).
    static STATE: std::cell::RefCell<Option<TypedSimpleState>> = const { std::cell::RefCell::new(None) };
}

/// Run the model on `rows` x 4 features; the probabilities come back row-major, `rows` x 3.
pub fn predict(plan: &Plan, features: &[f32], rows: usize) -> anyhow::Result<Vec<f32>> {
    let input = Tensor::from_shape(&[rows, FEATURES], features)?;
    let outputs = STATE.with_borrow_mut(|state| {
        if state.is_none() {
            *state = Some(plan.spawn()?);
        }
        state
            .as_mut()
            .expect("set above")
            .run(tvec![input.into_tvalue()])
    })?;
    // As Plinth does after every backend run.
    plinth_runtime::nn::clear_upper_vector_state();
    let output = outputs.first().context("the model has no output")?;
    anyhow::ensure!(
        output.shape() == [rows, LABELS.len()],
        "expected probabilities of shape [{rows}, {}], the model gave {:?}",
        LABELS.len(),
        output.shape()
    );
    Ok(output.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
}
