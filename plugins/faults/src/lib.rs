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
//! | anything else  | `FAULT_DEFAULT`'s fault if set, else `ok` (or `FAULT_REPLY`), as `text/plain` |
//!
//! The guest's environment configures it (read once, by `model_fn`):
//!
//! | variable               | effect                                                       |
//! |------------------------|--------------------------------------------------------------|
//! | `FAULT_MODEL_FN=1`     | `model_fn` itself fails with `ModelError("fault plugin: model_fn failed as configured")` (`model-fn-fails`) |
//! | `FAULT_DEFAULT=<fault>`| the fault (one of the table above) of a request that names none: an empty body without a custom attribute, or a text that is no fault's name. E.g. `model-error` makes every ordinary request fail: a faulty version of a model |
//! | `FAULT_DELAY_MS=<n>`   | `predict_fn` first sleeps `n` milliseconds: a slow version   |
//! | `FAULT_REPLY=<text>`   | what an ok request answers instead of `ok`: tells versions apart |
//!
//! A `FAULT_DEFAULT` that is no fault's name, or a `FAULT_DELAY_MS` that is not a whole number,
//! fails `model_fn` with a `ModelError` naming the variable. Empty values count as unset.

use plinth_guest_sdk::{Context, Handler, HandlerError, Response};
use std::time::Duration;

struct Faults;

/// A misbehaviour a request can ask for by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Panic,
    Loop,
    Oom,
    BadOutput,
    ModelError,
    BadRequest,
}

impl Fault {
    /// Every fault with its name, in the docs' order.
    const ALL: [(&'static str, Fault); 6] = [
        ("panic", Fault::Panic),
        ("loop", Fault::Loop),
        ("oom", Fault::Oom),
        ("bad-output", Fault::BadOutput),
        ("model-error", Fault::ModelError),
        ("bad-request", Fault::BadRequest),
    ];

    /// The fault called `name`, if any.
    fn named(name: &str) -> Option<Fault> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, fault)| *fault)
    }
}

/// The instance's configuration, from the guest's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    /// `FAULT_DEFAULT`: the fault of a request that names none.
    default: Option<Fault>,
    /// `FAULT_DELAY_MS`: slept at the start of every `predict_fn`.
    delay: Duration,
    /// `FAULT_REPLY`: the body of an ok answer.
    reply: String,
}

impl Config {
    /// The configuration from the variables' values (`None` or empty: unset).
    fn parse(
        default: Option<&str>,
        delay_ms: Option<&str>,
        reply: Option<&str>,
    ) -> Result<Config, String> {
        let default = match set(default) {
            None => None,
            Some(name) => Some(Fault::named(name).ok_or_else(|| {
                let names: Vec<&str> = Fault::ALL.iter().map(|(n, _)| *n).collect();
                format!(
                    "FAULT_DEFAULT={name:?} is not a fault; expected one of {}",
                    names.join(", ")
                )
            })?),
        };
        let delay = match set(delay_ms) {
            None => Duration::ZERO,
            Some(ms) => Duration::from_millis(ms.parse().map_err(|_| {
                format!("FAULT_DELAY_MS={ms:?} is not a whole number of milliseconds")
            })?),
        };
        let reply = reply.filter(|r| !r.is_empty()).unwrap_or("ok").to_owned();
        Ok(Config {
            default,
            delay,
            reply,
        })
    }

    /// The fault that a request naming `requested` gets: the named one, else the default.
    fn fault_for(&self, requested: &str) -> Option<Fault> {
        Fault::named(requested).or(self.default)
    }
}

/// A variable's value, trimmed; `None` if unset or empty.
fn set(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// What `predict_fn` hands to `output_fn`.
enum Outcome {
    /// Answer this text.
    Ok(String),
    BadOutput,
}

/// An environment variable's value, if set and valid UTF-8.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Handler for Faults {
    type Model = Config;
    type Payload = String;
    type Prediction = Outcome;

    fn model_fn(_model_dir: &str) -> Result<Config, HandlerError> {
        if std::env::var("FAULT_MODEL_FN").as_deref() == Ok("1") {
            return Err(HandlerError::model_error(
                "fault plugin: model_fn failed as configured",
            ));
        }
        Config::parse(
            env("FAULT_DEFAULT").as_deref(),
            env("FAULT_DELAY_MS").as_deref(),
            env("FAULT_REPLY").as_deref(),
        )
        .map_err(|e| HandlerError::model_error(format!("fault plugin: {e}")))
    }

    fn input_fn(body: Vec<u8>, _content_type: &str, ctx: &Context) -> Result<String, HandlerError> {
        let fault = match ctx.custom_attributes.as_deref() {
            Some(attributes) if !attributes.trim().is_empty() => attributes.to_owned(),
            _ => String::from_utf8_lossy(&body).into_owned(),
        };
        Ok(fault.trim().to_owned())
    }

    fn predict_fn(fault: String, config: &Config, _ctx: &Context) -> Result<Outcome, HandlerError> {
        if !config.delay.is_zero() {
            std::thread::sleep(config.delay);
        }
        match config.fault_for(&fault) {
            Some(Fault::Panic) => panic!("fault plugin: deliberate panic"),
            Some(Fault::Loop) => spin(),
            Some(Fault::Oom) => exhaust_memory(),
            Some(Fault::BadOutput) => Ok(Outcome::BadOutput),
            Some(Fault::ModelError) => Err(HandlerError::model_error(
                "fault plugin: deliberate model error",
            )),
            Some(Fault::BadRequest) => Err(HandlerError::bad_request(
                "fault plugin: deliberate bad request",
            )),
            None => Ok(Outcome::Ok(config.reply.clone())),
        }
    }

    fn output_fn(
        outcome: Outcome,
        _accept: &str,
        _ctx: &Context,
    ) -> Result<Response, HandlerError> {
        Ok(match outcome {
            Outcome::Ok(reply) => Response::text(reply),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(default: Option<&str>, delay: Option<&str>, reply: Option<&str>) -> Config {
        Config::parse(default, delay, reply).unwrap()
    }

    fn answer(config: &Config, request: &str) -> Result<Vec<u8>, HandlerError> {
        let ctx = Context::default();
        let fault = Faults::input_fn(request.as_bytes().to_vec(), "text/plain", &ctx)?;
        let outcome = Faults::predict_fn(fault, config, &ctx)?;
        Ok(Faults::output_fn(outcome, "", &ctx)?.body)
    }

    #[test]
    fn unset_means_ok_at_once() {
        let c = config(None, None, None);
        assert_eq!(
            c,
            Config {
                default: None,
                delay: Duration::ZERO,
                reply: "ok".into()
            }
        );
        assert_eq!(c, config(Some(""), Some(" "), Some("")));
        assert_eq!(answer(&c, "").unwrap(), b"ok");
        assert_eq!(answer(&c, "hello").unwrap(), b"ok");
    }

    #[test]
    fn named_faults_win_over_the_default() {
        let c = config(Some("bad-request"), None, None);
        assert_eq!(c.fault_for("panic"), Some(Fault::Panic));
        assert_eq!(c.fault_for("model-error"), Some(Fault::ModelError));
        assert_eq!(c.fault_for(""), Some(Fault::BadRequest));
        assert_eq!(c.fault_for("hello"), Some(Fault::BadRequest));
        assert_eq!(config(None, None, None).fault_for("oom"), Some(Fault::Oom));
        assert_eq!(config(None, None, None).fault_for("nothing"), None);
    }

    #[test]
    fn default_model_error_fails_ordinary_requests() {
        let c = config(Some(" model-error "), None, None);
        assert_eq!(
            answer(&c, "").unwrap_err(),
            HandlerError::model_error("fault plugin: deliberate model error")
        );
        assert_eq!(
            answer(&c, "1,2,3").unwrap_err(),
            HandlerError::model_error("fault plugin: deliberate model error")
        );
        assert_eq!(
            answer(&c, "bad-request").unwrap_err(),
            HandlerError::bad_request("fault plugin: deliberate bad request")
        );
    }

    #[test]
    fn reply_and_delay() {
        let c = config(None, Some("30"), Some("v2"));
        assert_eq!(c.delay, Duration::from_millis(30));
        let start = std::time::Instant::now();
        assert_eq!(answer(&c, "").unwrap(), b"v2");
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn bad_values_are_refused() {
        let e = Config::parse(Some("explode"), None, None).unwrap_err();
        assert!(
            e.starts_with("FAULT_DEFAULT=\"explode\" is not a fault"),
            "{e}"
        );
        assert!(e.contains("panic, loop, oom, bad-output, model-error, bad-request"));
        let e = Config::parse(None, Some("1.5"), None).unwrap_err();
        assert_eq!(
            e,
            "FAULT_DELAY_MS=\"1.5\" is not a whole number of milliseconds"
        );
        assert!(Config::parse(None, Some("-1"), None).is_err());
    }
}
