//! The iris classifier in its simplest form: a [`TensorModel`] over `model_dir/model.onnx`
//! (`examples/iris/model`) that refuses rows without four features and answers with the
//! graph's class probabilities (JSON by default; CSV and NPY on request). `plugins/iris` is
//! the same model written as a full `Handler`, tuned for speed and with labelled answers.

use plinth_guest_sdk::codec::{self, Tensor};
use plinth_guest_sdk::{Context, HandlerError, TensorModel};

struct Iris;

impl TensorModel for Iris {
    fn input_fn(body: Vec<u8>, content_type: &str, _: &Context) -> Result<Tensor, HandlerError> {
        let rows = codec::decode(&body, content_type)?.into_matrix()?;
        match rows.shape[1] {
            4 => Ok(rows),
            n => Err(HandlerError::bad_request(format!(
                "expected 4 features per row (sepal length, sepal width, petal length, petal \
                 width), got {n}"
            ))),
        }
    }
}

plinth_guest_sdk::export_tensor_model!(Iris);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_need_four_features() {
        let ctx = Context::default();
        let x = Iris::input_fn(b"5.1,3.5,1.4,0.2\n6,3,4,1".to_vec(), "text/csv", &ctx);
        assert_eq!(x.map(|t| t.shape), Ok(vec![2, 4]));
        let Err(HandlerError::BadRequest(m)) = Iris::input_fn(b"1,2,3".to_vec(), "text/csv", &ctx)
        else {
            panic!("three features were accepted")
        };
        assert!(m.ends_with("got 3"), "{m}");
    }
}
