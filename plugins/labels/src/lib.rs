//! Labels: a pipeline's postprocessor. Turns rows of class probabilities into the most
//! probable class's name, with the class names read from `<model_dir>/labels.txt` (one per
//! line, in the model's output order).
//!
//! - `input_fn` reads CSV, JSON or NPY into an N x K matrix (K: the number of labels).
//! - `output_fn` writes JSON (the default: `{"predictions":[{"label":..,"probability":..}]}`)
//!   or CSV (`label,probability` per row).

use plinth_guest_sdk::codec::{self, Tensor};
use plinth_guest_sdk::{Context, Handler, HandlerError, Response};

const OUTPUT_TYPES: &[&str] = &[codec::JSON, codec::CSV];

struct Labels;

/// Each row's most probable class and its probability.
struct Chosen(Vec<(String, f32)>);

impl Handler for Labels {
    type Model = Vec<String>;
    type Payload = Tensor;
    type Prediction = Chosen;

    fn model_fn(model_dir: &str) -> Result<Vec<String>, HandlerError> {
        let path = format!("{model_dir}/labels.txt");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| HandlerError::model_error(format!("cannot read {path}: {e}")))?;
        let labels: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        let plain = |l: &String| {
            l.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.'))
        };
        if labels.is_empty() || !labels.iter().all(plain) {
            return Err(HandlerError::model_error(format!(
                "{path} must name at least one class, one per line, in letters, digits, \
                 spaces, '_', '-' and '.'"
            )));
        }
        Ok(labels)
    }

    fn input_fn(body: Vec<u8>, content_type: &str, _ctx: &Context) -> Result<Tensor, HandlerError> {
        codec::decode(&body, content_type)?.into_matrix()
    }

    fn predict_fn(
        probabilities: Tensor,
        labels: &Vec<String>,
        _ctx: &Context,
    ) -> Result<Chosen, HandlerError> {
        if probabilities.shape[1] != labels.len() {
            return Err(HandlerError::bad_request(format!(
                "expected {} class probabilities per row, got {}",
                labels.len(),
                probabilities.shape[1]
            )));
        }
        let chosen = probabilities
            .iter_rows()
            .map(|row| {
                row.iter()
                    .copied()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (i, p)| {
                        if p > best.1 {
                            (i, p)
                        } else {
                            best
                        }
                    })
            })
            .map(|(i, p)| (labels[i].clone(), p))
            .collect();
        Ok(Chosen(chosen))
    }

    fn output_fn(chosen: Chosen, accept: &str, _ctx: &Context) -> Result<Response, HandlerError> {
        let content_type = codec::negotiate(accept, OUTPUT_TYPES)?;
        let mut body = String::new();
        if content_type == codec::CSV {
            for (label, p) in &chosen.0 {
                body.push_str(label);
                body.push(',');
                codec::push_json_number(&mut body, *p);
                body.push('\n');
            }
        } else {
            // Labels are plain (checked by `model_fn`): no escaping needed.
            body.push_str("{\"predictions\":[");
            for (i, (label, p)) in chosen.0.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str("{\"label\":\"");
                body.push_str(label);
                body.push_str("\",\"probability\":");
                codec::push_json_number(&mut body, *p);
                body.push('}');
            }
            body.push_str("]}");
        }
        Ok(Response::new(body, content_type))
    }
}

plinth_guest_sdk::export_handler!(Labels);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_gets_its_most_probable_label() {
        let labels = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let ctx = Context::default();
        let p = Labels::input_fn(b"0.1,0.2,0.7\n0.6,0.3,0.1".to_vec(), "text/csv", &ctx).unwrap();
        let chosen = Labels::predict_fn(p, &labels, &ctx).unwrap();
        let json = Labels::output_fn(chosen, "", &ctx).unwrap();
        assert_eq!(
            String::from_utf8(json.body).unwrap(),
            r#"{"predictions":[{"label":"c","probability":0.7},{"label":"a","probability":0.6}]}"#
        );
        let p = Labels::input_fn(b"0.1,0.9,0".to_vec(), "text/csv", &ctx).unwrap();
        let chosen = Labels::predict_fn(p, &labels, &ctx).unwrap();
        let csv = Labels::output_fn(chosen, "text/csv", &ctx).unwrap();
        assert_eq!(String::from_utf8(csv.body).unwrap(), "b,0.9\n");
        let two = Labels::input_fn(b"0.5,0.5".to_vec(), "text/csv", &ctx).unwrap();
        assert!(Labels::predict_fn(two, &labels, &ctx).is_err());
    }
}
