//! Echo: returns the request body unchanged, with the request's content type and custom
//! attributes, and shows what the sandbox lets a guest see.
//!
//! A custom attribute (`X-Amzn-SageMaker-Custom-Attributes`) of the form `OP=ARG` replaces the
//! echo with a `text/plain` probe:
//!
//! | attribute           | response                                            |
//! |---------------------|-----------------------------------------------------|
//! | `env=NAME`          | the value of environment variable NAME, or `<unset>` |
//! | `ls=PATH`           | the directory's entries, one per line, or the error  |
//! | `read=PATH`         | the file's contents, or the error                    |
//! | `write=PATH`        | `written`, or the error                              |
//! | `connect=HOST:PORT` | `connected`, or the error                            |
//!
//! The host's tests use these to prove the model dir is read-only, the environment is only
//! the declared one, and there is no network.

use plinth_guest_sdk::{codec, Context, Handler, HandlerError, Response};

/// The media type used when a request has none.
const FALLBACK_TYPE: &str = "application/octet-stream";

struct Echo;

/// What `input_fn` keeps for `output_fn`.
struct Request {
    body: Vec<u8>,
    content_type: String,
}

impl Handler for Echo {
    type Model = ();
    type Payload = Request;
    type Prediction = Request;

    fn model_fn(_model_dir: &str) -> Result<(), HandlerError> {
        Ok(())
    }

    fn input_fn(
        body: Vec<u8>,
        content_type: &str,
        _ctx: &Context,
    ) -> Result<Request, HandlerError> {
        let content_type = if content_type.trim().is_empty() {
            FALLBACK_TYPE.to_owned()
        } else {
            content_type.to_owned()
        };
        Ok(Request { body, content_type })
    }

    fn predict_fn(request: Request, _model: &(), _ctx: &Context) -> Result<Request, HandlerError> {
        Ok(request)
    }

    fn output_fn(request: Request, accept: &str, ctx: &Context) -> Result<Response, HandlerError> {
        if let Some(probe) = ctx.custom_attributes.as_deref().and_then(probe) {
            return Ok(Response::text(probe).with_custom_attributes(ctx.custom_attributes.clone()));
        }
        codec::negotiate(accept, &[request.content_type.as_str()])?;
        Ok(Response::new(request.body, request.content_type)
            .with_custom_attributes(ctx.custom_attributes.clone()))
    }
}

/// The probe named by `attributes`, run; `None` if it names none.
fn probe(attributes: &str) -> Option<String> {
    let (op, arg) = attributes.trim().split_once('=')?;
    let arg = arg.trim();
    let text = match op.trim() {
        "env" => std::env::var(arg).unwrap_or_else(|_| "<unset>".to_owned()),
        "ls" => match std::fs::read_dir(arg) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .map(|e| match e {
                        Ok(e) => e.file_name().to_string_lossy().into_owned(),
                        Err(e) => format!("<error: {e}>"),
                    })
                    .collect();
                names.sort();
                names.join("\n")
            }
            Err(e) => e.to_string(),
        },
        "read" => match std::fs::read(arg) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => e.to_string(),
        },
        "write" => match std::fs::write(arg, b"written by the echo plugin\n") {
            Ok(()) => "written".to_owned(),
            Err(e) => e.to_string(),
        },
        "connect" => match std::net::TcpStream::connect(arg) {
            Ok(_) => "connected".to_owned(),
            Err(e) => e.to_string(),
        },
        _ => return None,
    };
    Some(text)
}

plinth_guest_sdk::export_handler!(Echo);
