//! Faults: misbehaves on request, so the host's tests can prove that a bad guest fails only
//! its own request and that its instance is replaced.
//!
//! The fault is the custom attribute (`X-Amzn-SageMaker-Custom-Attributes`) or, without one,
//! the body text. `input_fn` only records it; it fires in `predict_fn`:
//!
//! | fault          | what happens                                                         |
//! |----------------|----------------------------------------------------------------------|
//! | `panic`        | `panic!("fault plugin: deliberate panic")` (a trap)                  |
//! | `loop`         | spins forever (until the host's deadline)                            |
//! | `oom`          | allocates and touches 1 MiB blocks without bound (until the memory cap) |
//! | `bad-output`   | `output_fn` returns a malformed response (see `bad_output`)        |
//! | `model-error`  | `HandlerError::ModelError("fault plugin: deliberate model error")`   |
//! | `bad-request`  | `HandlerError::BadRequest("fault plugin: deliberate bad request")`   |
//! | anything else  | `ok`, as `text/plain`                                                |
//!
//! With the environment variable `FAULT_MODEL_FN=1`, `model_fn` itself fails with
//! `ModelError("fault plugin: model_fn failed as configured")` (`model-fn-fails`).

use plinth_guest_sdk::{Context, Handler, HandlerError, Response};

struct Faults;

/// What `predict_fn` hands to `output_fn`.
enum Outcome {
    Ok,
    BadOutput,
}

impl Handler for Faults {
    type Model = ();
    type Payload = String;
    type Prediction = Outcome;

    fn model_fn(_model_dir: &str) -> Result<(), HandlerError> {
        if std::env::var("FAULT_MODEL_FN").as_deref() == Ok("1") {
            return Err(HandlerError::model_error(
                "fault plugin: model_fn failed as configured",
            ));
        }
        Ok(())
    }

    fn input_fn(body: Vec<u8>, _content_type: &str, ctx: &Context) -> Result<String, HandlerError> {
        let fault = match ctx.custom_attributes.as_deref() {
            Some(attributes) if !attributes.trim().is_empty() => attributes.to_owned(),
            _ => String::from_utf8_lossy(&body).into_owned(),
        };
        Ok(fault.trim().to_owned())
    }

    fn predict_fn(fault: String, _model: &(), _ctx: &Context) -> Result<Outcome, HandlerError> {
        match fault.as_str() {
            "panic" => panic!("fault plugin: deliberate panic"),
            "loop" => spin(),
            "oom" => exhaust_memory(),
            "bad-output" => Ok(Outcome::BadOutput),
            "model-error" => Err(HandlerError::model_error(
                "fault plugin: deliberate model error",
            )),
            "bad-request" => Err(HandlerError::bad_request(
                "fault plugin: deliberate bad request",
            )),
            _ => Ok(Outcome::Ok),
        }
    }

    fn output_fn(
        outcome: Outcome,
        _accept: &str,
        _ctx: &Context,
    ) -> Result<Response, HandlerError> {
        Ok(match outcome {
            Outcome::Ok => Response::text("ok"),
            Outcome::BadOutput => bad_output(),
        })
    }
}

/// The malformed response for `bad-output`: an EMPTY content type, which is not a media type
/// (`type/subtype`) and so cannot be sent as `Content-Type`, and a body of invalid UTF-8
/// bytes (`ff fe 00 7b c3 28`), so no text type could describe it either. The host must not
/// crash on it: it answers a `ModelError` (or a documented default type).
fn bad_output() -> Response {
    Response::new(vec![0xff, 0xfe, 0x00, b'{', 0xc3, 0x28], "")
}

/// Spin until the host's deadline stops this instance.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocate and touch 1 MiB blocks until the memory cap traps this instance.
fn exhaust_memory() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(vec![0xa5; 1 << 20]);
        std::hint::black_box(&mut blocks);
    }
}

plinth_guest_sdk::export_handler!(Faults);
