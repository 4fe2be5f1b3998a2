//! Hostile: attacks the host on request, so the host's tests can prove that every limit of
//! the sandbox holds, including those a guest reaches through host calls (waits, wasi-nn,
//! files, stdout) rather than by running its own code, and that an attack fails only its own
//! request.
//!
//! The attack is the custom attribute (`X-Amzn-SageMaker-Custom-Attributes`); `input_fn`
//! only records it, it fires in `predict_fn`. Without one the request is an ordinary one and
//! answers `ok` (`text/plain`) at once:
//!
//! | attack         | what happens                                                         | the limit it meets |
//! |----------------|----------------------------------------------------------------------|--------------------|
//! | `sleep`        | `std::thread::sleep` for 30 s: one host wait (a `wasi:io` poll on a monotonic-clock pollable) that epoch interruption cannot stop; then `ok` | the invocation deadline |
//! | `big-response` | answers a 100 MiB body (`application/octet-stream`)                 | the response size cap |
//! | `tensors`      | creates `wasi:nn` tensors of 1 MiB each ([`nn::host_tensor`]) without bound, keeping every one: memory the host holds, outside the guest's linear memory | the instance's memory limit |
//! | `graph-bytes`  | loads a `wasi:nn` graph from bytes it supplies (`graph.load`, ONNX): `/opt/ml/model/model.onnx` if there is one, else a few junk bytes. A refusal answers `ModelError` with the `wasi:nn` error's text (so the host's reason reaches the client); a graph that loads answers `graph loaded from N bytes` | whether graphs from bytes are allowed |
//! | `files`        | opens the model directory's first regular file again and again, keeping every handle (each a host file descriptor); the first refusal answers `ModelError` with its text | the open-file cap |
//! | `stdout`       | writes 100 MiB to stdout in lines of 100 bytes, then answers `ok`    | the log rate limit |
//! | `compute`      | runs the artifact's graph (`load-by-name "model"`, an iris input `[1, 4]` f32) again and again until stopped: backend computation | the invocation deadline |
//! | `long-compute` | runs the artifact's graph once on 2,000,000 iris rows (32 MB in): one long backend computation, then `ok` | none: it must run off the host's async workers |
//! | anything else  | `BadRequest` naming the attacks                                       | |
//!
//! The guest's environment configures `model_fn` (read once, by `model_fn`):
//!
//! | variable               | effect                                                       |
//! |------------------------|--------------------------------------------------------------|
//! | `HOSTILE_MODEL_FN=loop` | `model_fn` spins forever: guest code (the startup deadline) |
//! | `HOSTILE_MODEL_FN=hang` | `model_fn` sleeps forever: a host wait (the startup deadline) |
//! | anything else, unset   | `model_fn` succeeds at once                                  |

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plinth_guest_sdk::codec::Tensor;
use plinth_guest_sdk::nn::{self, Graph, TensorType};
use plinth_guest_sdk::{Context, Handler, HandlerError, Response};

/// How long `sleep` sleeps.
const SLEEP: Duration = Duration::from_secs(30);
/// The size of `big-response`'s body.
const BIG_RESPONSE_BYTES: usize = 100 << 20;
/// The size of each of `tensors`' tensors.
const TENSOR_BYTES: usize = 1 << 20;
/// How much `stdout` writes.
const STDOUT_BYTES: usize = 100 << 20;
/// The length of each of `stdout`'s lines, its newline included.
const STDOUT_LINE: usize = 100;
/// What `graph-bytes` loads when the model directory has no `model.onnx`.
const JUNK_GRAPH: &[u8] = b"hostile plugin: not an ONNX graph";
/// An iris row (setosa): `compute`'s input.
const IRIS_ROW: [f32; 4] = [5.1, 3.5, 1.4, 0.2];
/// The rows of `long-compute`'s one computation.
const LONG_COMPUTE_ROWS: usize = 2_000_000;

struct Hostile;

/// An attack a request can ask for by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    Sleep,
    BigResponse,
    Tensors,
    GraphBytes,
    Files,
    Stdout,
    Compute,
    LongCompute,
}

impl Attack {
    /// Every attack with its name, in the docs' order.
    const ALL: [(&'static str, Attack); 8] = [
        ("sleep", Attack::Sleep),
        ("big-response", Attack::BigResponse),
        ("tensors", Attack::Tensors),
        ("graph-bytes", Attack::GraphBytes),
        ("files", Attack::Files),
        ("stdout", Attack::Stdout),
        ("compute", Attack::Compute),
        ("long-compute", Attack::LongCompute),
    ];

    /// The attack a request's custom attribute names: `Ok(None)` for none (an ordinary
    /// request), a `BadRequest` for a name that is no attack's.
    fn requested(attribute: Option<&str>) -> Result<Option<Attack>, HandlerError> {
        let Some(name) = attribute.map(str::trim).filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        match Self::ALL.iter().find(|(n, _)| *n == name) {
            Some((_, attack)) => Ok(Some(*attack)),
            None => {
                let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
                Err(HandlerError::bad_request(format!(
                    "hostile plugin: {name:?} is not an attack; expected one of {}",
                    names.join(", ")
                )))
            }
        }
    }
}

/// What `model_fn` keeps.
struct Model {
    /// The model directory (`/opt/ml/model`).
    dir: PathBuf,
}

/// What `predict_fn` hands to `output_fn`.
enum Outcome {
    /// Answer this text.
    Text(String),
    /// Answer these bytes as `application/octet-stream`.
    Bytes(Vec<u8>),
}

impl Handler for Hostile {
    type Model = Model;
    type Payload = Option<Attack>;
    type Prediction = Outcome;

    fn model_fn(model_dir: &str) -> Result<Model, HandlerError> {
        match std::env::var("HOSTILE_MODEL_FN").as_deref() {
            Ok("loop") => spin(),
            Ok("hang") => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            _ => Ok(Model {
                dir: PathBuf::from(model_dir),
            }),
        }
    }

    fn input_fn(
        _body: Vec<u8>,
        _content_type: &str,
        ctx: &Context,
    ) -> Result<Option<Attack>, HandlerError> {
        Attack::requested(ctx.custom_attributes.as_deref())
    }

    fn predict_fn(
        attack: Option<Attack>,
        model: &Model,
        _ctx: &Context,
    ) -> Result<Outcome, HandlerError> {
        match attack {
            None => Ok(Outcome::Text("ok".into())),
            Some(Attack::Sleep) => {
                std::thread::sleep(SLEEP);
                Ok(Outcome::Text("ok".into()))
            }
            Some(Attack::BigResponse) => Ok(Outcome::Bytes(vec![b'x'; BIG_RESPONSE_BYTES])),
            Some(Attack::Tensors) => hoard_tensors(),
            Some(Attack::GraphBytes) => load_graph_from_bytes(&model.dir),
            Some(Attack::Files) => hoard_files(&model.dir),
            Some(Attack::Stdout) => flood_stdout(),
            Some(Attack::Compute) => compute_forever(),
            Some(Attack::LongCompute) => compute_once_long(),
        }
    }

    fn output_fn(
        outcome: Outcome,
        _accept: &str,
        _ctx: &Context,
    ) -> Result<Response, HandlerError> {
        Ok(match outcome {
            Outcome::Text(text) => Response::text(text),
            Outcome::Bytes(bytes) => Response::new(bytes, "application/octet-stream"),
        })
    }
}

/// Spin until the host stops this instance.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Create 1 MiB tensors, keeping every one, until the host stops this instance.
fn hoard_tensors() -> Result<Outcome, HandlerError> {
    let data = vec![0u8; TENSOR_BYTES];
    let dimensions = [(TENSOR_BYTES / 4) as u32];
    let mut tensors = Vec::new();
    loop {
        // The SDK refuses only a data length that does not fit the shape: never here.
        tensors.push(nn::host_tensor(&dimensions, TensorType::Fp32, &data)?);
        std::hint::black_box(&mut tensors);
    }
}

/// `graph.load` on the model directory's `model.onnx` (or junk): the refusal as a
/// `ModelError` carrying the `wasi:nn` error's text, or `graph loaded from N bytes`.
fn load_graph_from_bytes(dir: &Path) -> Result<Outcome, HandlerError> {
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap_or_else(|_| JUNK_GRAPH.to_vec());
    match Graph::load_onnx(&bytes) {
        Ok(_graph) => Ok(Outcome::Text(format!(
            "hostile plugin: graph loaded from {} bytes",
            bytes.len()
        ))),
        Err(e) => Err(HandlerError::model_error(format!(
            "hostile plugin: graph.load of {} bytes refused: {e}",
            bytes.len()
        ))),
    }
}

/// Open `dir`'s first regular file again and again, keeping every handle: until the host
/// stops this instance, or the first refusal as a `ModelError` with its text.
fn hoard_files(dir: &Path) -> Result<Outcome, HandlerError> {
    let path = first_file(dir)?;
    let mut files: Vec<File> = Vec::new();
    loop {
        match File::open(&path) {
            Ok(file) => files.push(file),
            Err(e) => {
                return Err(HandlerError::model_error(format!(
                    "hostile plugin: opening {} failed with {} handles held: {e}",
                    path.display(),
                    files.len()
                )))
            }
        }
    }
}

/// The first regular file in `dir`.
fn first_file(dir: &Path) -> Result<PathBuf, HandlerError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        HandlerError::model_error(format!("hostile plugin: listing {}: {e}", dir.display()))
    })?;
    entries
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.is_file())
        .ok_or_else(|| {
            HandlerError::model_error(format!(
                "hostile plugin: {} holds no file to open",
                dir.display()
            ))
        })
}

/// Write [`STDOUT_BYTES`] to stdout in lines of [`STDOUT_LINE`] bytes, then answer `ok`.
fn flood_stdout() -> Result<Outcome, HandlerError> {
    let mut line = b"hostile plugin: stdout flood ".to_vec();
    line.resize(STDOUT_LINE - 1, b'x');
    line.push(b'\n');
    // A block of whole lines per write: ~100 KiB, so the flood is bounded by the host, not by
    // one host call per line.
    let block = line.repeat(1024);
    let mut stdout = std::io::stdout().lock();
    let mut written = 0;
    while written < STDOUT_BYTES {
        stdout.write_all(&block).map_err(|e| {
            HandlerError::model_error(format!(
                "hostile plugin: writing to stdout failed after {written} bytes: {e}"
            ))
        })?;
        written += block.len();
    }
    Ok(Outcome::Text("ok".into()))
}

/// Run the artifact's graph on an iris row again and again, until the host stops this
/// instance (or the first `wasi:nn` error, as a `ModelError`).
fn compute_forever() -> Result<Outcome, HandlerError> {
    let graph = Graph::load_by_name("model")?;
    let session = graph.session()?;
    let input = Tensor::new(IRIS_ROW.to_vec(), vec![1, 4])?;
    loop {
        std::hint::black_box(session.run(&[("input", &input)])?);
    }
}

/// Run the artifact's graph once on [`LONG_COMPUTE_ROWS`] iris rows: one long backend
/// computation (about 32 MB in, 24 MB out), then `ok`.
fn compute_once_long() -> Result<Outcome, HandlerError> {
    let graph = Graph::load_by_name("model")?;
    let rows: Vec<f32> = IRIS_ROW
        .iter()
        .copied()
        .cycle()
        .take(LONG_COMPUTE_ROWS * 4)
        .collect();
    let input = Tensor::new(rows, vec![LONG_COMPUTE_ROWS, 4])?;
    std::hint::black_box(graph.run(&[("input", &input)])?);
    Ok(Outcome::Text("ok".into()))
}

plinth_guest_sdk::export_handler!(Hostile);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacks_are_named_by_the_custom_attribute() {
        assert_eq!(Attack::requested(None), Ok(None));
        assert_eq!(Attack::requested(Some(" ")), Ok(None));
        assert_eq!(Attack::requested(Some("sleep")), Ok(Some(Attack::Sleep)));
        assert_eq!(
            Attack::requested(Some(" graph-bytes ")),
            Ok(Some(Attack::GraphBytes))
        );
        for (name, attack) in Attack::ALL {
            assert_eq!(Attack::requested(Some(name)), Ok(Some(attack)));
        }
    }

    #[test]
    fn an_unknown_attack_is_a_bad_request() {
        let e = Attack::requested(Some("explode")).unwrap_err();
        assert_eq!(
            e,
            HandlerError::bad_request(
                "hostile plugin: \"explode\" is not an attack; expected one of sleep, \
                 big-response, tensors, graph-bytes, files, stdout, compute, long-compute"
            )
        );
    }

    #[test]
    fn an_ordinary_request_answers_ok() {
        let ctx = Context::default();
        let model = Model {
            dir: PathBuf::from("/nonexistent"),
        };
        let attack = Hostile::input_fn(b"anything".to_vec(), "text/plain", &ctx).unwrap();
        let outcome = Hostile::predict_fn(attack, &model, &ctx).unwrap();
        let response = Hostile::output_fn(outcome, "", &ctx).unwrap();
        assert_eq!(response.body, b"ok");
        assert_eq!(response.content_type, "text/plain");
    }
}
