//! Scaler: a pipeline's preprocessor. Standard scaling of each row of features,
//! `z = (x - mean) / std`, with the means and standard deviations read from
//! `<model_dir>/scaler.csv` (two rows of as many columns as the features).
//!
//! - `input_fn` reads CSV, JSON or NPY into an N x F matrix (F: the scaler's columns).
//! - `output_fn` writes CSV (the default), NPY or JSON: what the next container of the
//!   pipeline reads.

use plinth_guest_sdk::codec::{self, Tensor};
use plinth_guest_sdk::{Context, Handler, HandlerError, Response};

const OUTPUT_TYPES: &[&str] = &[codec::CSV, codec::NPY, codec::JSON];

struct Scaler;

/// The scaling: each column's mean and standard deviation.
struct Scaling {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Handler for Scaler {
    type Model = Scaling;
    type Payload = Tensor;
    type Prediction = Tensor;

    fn model_fn(model_dir: &str) -> Result<Scaling, HandlerError> {
        let path = format!("{model_dir}/scaler.csv");
        let text = std::fs::read(&path)
            .map_err(|e| HandlerError::model_error(format!("cannot read {path}: {e}")))?;
        let rows = codec::decode(&text, codec::CSV)?.into_matrix()?;
        if rows.shape[0] != 2 {
            return Err(HandlerError::model_error(format!(
                "{path} must hold two rows (means, then standard deviations), not {}",
                rows.shape[0]
            )));
        }
        let mut it = rows.iter_rows();
        let (mean, std) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
        if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(HandlerError::model_error(format!(
                "{path}: every standard deviation must be positive"
            )));
        }
        Ok(Scaling {
            mean: mean.to_vec(),
            std: std.to_vec(),
        })
    }

    fn input_fn(body: Vec<u8>, content_type: &str, _ctx: &Context) -> Result<Tensor, HandlerError> {
        codec::decode(&body, content_type)?.into_matrix()
    }

    fn predict_fn(
        features: Tensor,
        model: &Scaling,
        _ctx: &Context,
    ) -> Result<Tensor, HandlerError> {
        let columns = model.mean.len();
        if features.shape[1] != columns {
            return Err(HandlerError::bad_request(format!(
                "expected {columns} features per row, got {}",
                features.shape[1]
            )));
        }
        let shape = features.shape.clone();
        let data = features
            .data
            .iter()
            .enumerate()
            .map(|(i, x)| (x - model.mean[i % columns]) / model.std[i % columns])
            .collect();
        Tensor::new(data, shape)
    }

    fn output_fn(scaled: Tensor, accept: &str, _ctx: &Context) -> Result<Response, HandlerError> {
        Response::tensor(&scaled, codec::negotiate(accept, OUTPUT_TYPES)?)
    }
}

plinth_guest_sdk::export_handler!(Scaler);

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir(text: &str) -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("scaler-test-{}", text.len()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("scaler.csv"), text).unwrap();
        let path = dir.display().to_string();
        (dir, path)
    }

    #[test]
    fn rows_are_standardized_with_the_files_means_and_deviations() {
        let (_dir, path) = model_dir("1,10\n2,5\n");
        let model = Scaler::model_fn(&path).unwrap();
        let ctx = Context::default();
        let x = Scaler::input_fn(b"3,10\n1,0".to_vec(), "text/csv", &ctx).unwrap();
        let z = Scaler::predict_fn(x, &model, &ctx).unwrap();
        assert_eq!(z.data, vec![1.0, 0.0, 0.0, -2.0]);
        let three = Scaler::input_fn(b"1,2,3".to_vec(), "text/csv", &ctx).unwrap();
        assert!(matches!(
            Scaler::predict_fn(three, &model, &ctx),
            Err(HandlerError::BadRequest(_))
        ));
    }

    #[test]
    fn a_zero_deviation_fails_model_fn() {
        let (_dir, path) = model_dir("1,10\n2,0\n\n");
        assert!(Scaler::model_fn(&path).is_err());
    }
}
