//! `native-onnx`: the native reference server of Plinth's benchmark suite
//! (`host/bench/suite.sh`). It serves the suite's models with axum and no WebAssembly, calling
//! tract-onnx or ONNX Runtime (the `ort` crate, library loaded at run time) directly, and reads
//! and writes the same formats as Plinth's plugins for them, so that the gap between the two is
//! the cost of Plinth itself:
//!
//! | kind | request | response | plugin |
//! |---|---|---|---|
//! | `iris` | CSV rows of 4 features | `{"predictions":[{"label",...}]}` | `plugins/iris` |
//! | `mlp` | raw little-endian float32, N x 784 (`application/octet-stream`) | raw float32 N x 10, or JSON `{"outputs":[[...]]}` with `Accept: application/json` | `plugins/mlp` |
//! | `minilm` | JSON `{"input_ids":[...],"attention_mask":[...]}` | `{"embedding":[...384]}` (mean-pooled, L2-normalised), or raw float32 with `Accept: application/octet-stream` | `plugins/minilm` |
//!
//! Each model is an endpoint: `POST /endpoints/{name}/invocations`, as on Plinth. Inference runs
//! inline on the async worker, as a straightforward native server would do it (and as Plinth
//! runs its guests). tract keeps one run state per model and worker thread; ONNX Runtime one
//! session per model and worker thread, each with `--ort-threads` intra-op threads (default 1:
//! the suite pins every server to one core).
//!
//! ```sh
//! native-onnx --model iris=iris:tract:examples/iris/model/model.onnx \
//!   --model minilm=minilm:ort:/path/to/minilm/model.onnx --onnxruntime /path/to/libonnxruntime.so
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, ensure, Context as _};
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use ort::session::builder::GraphOptimizationLevel;
use plinth_bench::iris;
use serde::Deserialize;
use tract_onnx::prelude::*;

/// The same allocator as `plinth serve`, so that the comparison is of the servers' own work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RAW: &str = "application/octet-stream";
const JSON: &str = "application/json";
const MLP_FEATURES: usize = 784;
const MLP_OUTPUTS: usize = 10;
const MINILM_HIDDEN: usize = 384;
const MINILM_MAX_TOKENS: usize = 512;

/// The native reference server of the benchmark suite.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A model to serve, `ENDPOINT=KIND:ENGINE:PATH`: KIND is iris, mlp or minilm (the request
    /// format), ENGINE tract or ort, PATH the ONNX file. Repeatable.
    #[arg(
        long = "model",
        value_name = "ENDPOINT=KIND:ENGINE:PATH",
        required = true
    )]
    models: Vec<String>,
    /// The address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The ONNX Runtime shared library, for `ort` models.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    onnxruntime: Option<PathBuf>,
    /// Intra-op threads of each ONNX Runtime session.
    #[arg(long, default_value_t = 1)]
    ort_threads: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Iris,
    Mlp,
    MiniLm,
}

impl Kind {
    /// The graph's inputs this kind feeds, and the output it reads.
    fn io(self) -> (&'static [&'static str], &'static str) {
        match self {
            Kind::Iris => (&["input"], "probabilities"),
            Kind::Mlp => (&["input"], "output"),
            Kind::MiniLm => (
                &["input_ids", "attention_mask", "token_type_ids"],
                "last_hidden_state",
            ),
        }
    }
}

/// One input tensor, borrowed.
enum Input<'a> {
    F32(Vec<usize>, &'a [f32]),
    I64(Vec<usize>, &'a [i64]),
}

/// A model served by tract: the plan, and where the wanted inputs and output sit in it.
struct TractModel {
    plan: Arc<TypedRunnableModel>,
    /// For each graph input in order, the index of the request input that feeds it.
    input_order: Vec<usize>,
    output: usize,
}

enum Engine {
    Tract(TractModel),
    /// One session per worker thread (`Session::run` needs `&mut`); a request takes any free one.
    Ort(Vec<Mutex<ort::session::Session>>),
}

struct Served {
    kind: Kind,
    engine: Engine,
    /// The key of this model's tract run states in [`STATES`].
    id: usize,
}

type Models = Arc<HashMap<String, Served>>;

thread_local! {
    /// tract's run states, one per model and worker thread, reused from request to request (as
    /// Plinth's backend reuses one per instance).
    static STATES: RefCell<HashMap<usize, TypedSimpleState>> = RefCell::new(HashMap::new());
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut models = HashMap::new();
    let mut ort_ready = false;
    for (id, spec) in args.models.iter().enumerate() {
        let (endpoint, rest) = spec
            .split_once('=')
            .with_context(|| format!("--model {spec:?}: expected ENDPOINT=KIND:ENGINE:PATH"))?;
        let mut parts = rest.splitn(3, ':');
        let (kind, engine, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(k), Some(e), Some(p)) => (k, e, Path::new(p)),
            _ => bail!("--model {spec:?}: expected ENDPOINT=KIND:ENGINE:PATH"),
        };
        let kind = match kind {
            "iris" => Kind::Iris,
            "mlp" => Kind::Mlp,
            "minilm" => Kind::MiniLm,
            other => bail!("--model {spec:?}: unknown kind {other:?}; use iris, mlp or minilm"),
        };
        let engine = match engine {
            "tract" => Engine::Tract(load_tract(path, kind)?),
            "ort" => {
                if !ort_ready {
                    let library = args.onnxruntime.as_ref().context(
                        "an `ort` model needs the ONNX Runtime library: --onnxruntime or ORT_DYLIB_PATH",
                    )?;
                    ort::init_from(library.display().to_string())
                        .with_name("native-onnx")
                        .with_telemetry(false)
                        .commit()
                        .with_context(|| {
                            format!("cannot load ONNX Runtime from {}", library.display())
                        })?;
                    ort_ready = true;
                }
                let sessions = (0..args.threads.max(1))
                    .map(|_| load_ort(path, args.ort_threads).map(Mutex::new))
                    .collect::<anyhow::Result<_>>()?;
                Engine::Ort(sessions)
            }
            other => bail!("--model {spec:?}: unknown engine {other:?}; use tract or ort"),
        };
        eprintln!(
            "native-onnx: {endpoint}: {kind:?} on {engine_name} from {}",
            path.display(),
            engine_name = if matches!(engine, Engine::Tract(_)) {
                "tract"
            } else {
                "onnxruntime"
            }
        );
        if models
            .insert(endpoint.to_string(), Served { kind, engine, id })
            .is_some()
        {
            bail!("--model {spec:?}: endpoint {endpoint:?} given twice");
        }
    }
    let models: Models = Arc::new(models);
    plinth_bench::native::serve(args.bind, args.threads, post(invoke), models)
}

/// Parse, optimise and plan the model once, as Plinth's tract backend does.
fn load_tract(path: &Path, kind: Kind) -> anyhow::Result<TractModel> {
    let plan = tract_onnx::onnx()
        .model_for_path(path)
        .with_context(|| format!("cannot read the ONNX model {}", path.display()))?
        .into_optimized()
        .with_context(|| format!("tract cannot optimise {}", path.display()))?
        .into_runnable()?;
    let graph = plan.model();
    let (wanted_inputs, wanted_output) = kind.io();
    let mut input_order = Vec::new();
    for outlet in graph.input_outlets()? {
        let name = &graph.node(outlet.node).name;
        let index = wanted_inputs
            .iter()
            .position(|w| w == name)
            .with_context(|| format!("{}: unexpected input {name:?}", path.display()))?;
        input_order.push(index);
    }
    ensure!(
        input_order.len() == wanted_inputs.len(),
        "{}: expected the inputs {wanted_inputs:?}",
        path.display()
    );
    let output = graph
        .output_outlets()?
        .iter()
        .position(|o| graph.outlet_label(*o).unwrap_or(&graph.node(o.node).name) == wanted_output)
        .with_context(|| format!("{}: no output {wanted_output:?}", path.display()))?;
    Ok(TractModel {
        plan,
        input_order,
        output,
    })
}

/// One ONNX Runtime session, with the settings Plinth's backend uses (all graph
/// optimisations, sequential execution, `threads` intra-op threads).
fn load_ort(path: &Path, threads: usize) -> anyhow::Result<ort::session::Session> {
    let session = ort::session::Session::builder()?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .with_intra_threads(threads.max(1))?
        .with_inter_threads(1)?
        .with_parallel_execution(false)?
        .commit_from_file(path)
        .with_context(|| format!("ONNX Runtime cannot load {}", path.display()))?;
    Ok(session)
}

/// Run `served` on `inputs` (in the order of [`Kind::io`]); the wanted output's shape and
/// values.
fn run(served: &Served, inputs: &[Input<'_>]) -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
    let (names, output_name) = served.kind.io();
    let result = match &served.engine {
        Engine::Tract(model) => {
            let mut values = TVec::new();
            for &i in &model.input_order {
                let tensor = match &inputs[i] {
                    Input::F32(shape, data) => Tensor::from_shape(shape, data)?,
                    Input::I64(shape, data) => Tensor::from_shape(shape, data)?,
                };
                values.push(tensor.into_tvalue());
            }
            let outputs = STATES.with_borrow_mut(|states| {
                let state = match states.entry(served.id) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => e.insert(model.plan.spawn()?),
                };
                state.run(values)
            })?;
            let output = outputs
                .get(model.output)
                .context("the model gave too few outputs")?;
            let data = output.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
            Ok((output.shape().to_vec(), data))
        }
        Engine::Ort(sessions) => {
            let mut feeds: Vec<(&str, ort::session::SessionInputValue<'_>)> = Vec::new();
            for (name, input) in names.iter().zip(inputs) {
                let value = match input {
                    Input::F32(shape, data) => {
                        ort::value::TensorRef::from_array_view((shape.clone(), *data))?.into()
                    }
                    Input::I64(shape, data) => {
                        ort::value::TensorRef::from_array_view((shape.clone(), *data))?.into()
                    }
                };
                feeds.push((*name, value));
            }
            let mut session = sessions
                .iter()
                .find_map(|s| s.try_lock().ok())
                .map_or_else(|| sessions[0].lock(), Ok)
                .map_err(|_| anyhow::anyhow!("an ONNX Runtime session lock is poisoned"))?;
            let outputs = session.run(feeds)?;
            let output = outputs
                .get(output_name)
                .with_context(|| format!("the model has no output {output_name:?}"))?;
            let (shape, data) = output.try_extract_tensor::<f32>()?;
            let shape = shape.iter().map(|&d| d as usize).collect();
            Ok((shape, data.to_vec()))
        }
    };
    // As Plinth does after every backend run.
    plinth_runtime::nn::clear_upper_vector_state();
    result
}

fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The response type: `default`, unless `Accept` names `other` first.
fn negotiate(headers: &HeaderMap, default: &'static str, other: &'static str) -> &'static str {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match accept.split(',').map(media_type).next() {
        Some(first) if first == other => other,
        _ => default,
    }
}

fn bad_request(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, message.into()).into_response()
}

fn model_error(e: anyhow::Error) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response()
}

fn unsupported(content_type: &str, wanted: &str) -> Response {
    (
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("content type {content_type:?} is not supported; send {wanted}"),
    )
        .into_response()
}

async fn invoke(
    State(models): State<Models>,
    UrlPath(endpoint): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(served) = models.get(&endpoint) else {
        return (StatusCode::NOT_FOUND, format!("no endpoint {endpoint:?}")).into_response();
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match served.kind {
        Kind::Iris => iris_invoke(served, content_type, &body),
        Kind::Mlp => mlp_invoke(served, content_type, &headers, &body),
        Kind::MiniLm => minilm_invoke(served, content_type, &headers, &body),
    }
}

fn iris_invoke(served: &Served, content_type: &str, body: &[u8]) -> Response {
    if media_type(content_type) != "text/csv" {
        return unsupported(content_type, "text/csv");
    }
    let (features, rows) = match iris::parse_csv(body) {
        Ok(parsed) => parsed,
        Err(message) => return bad_request(message),
    };
    let input = Input::F32(vec![rows, iris::FEATURES], &features);
    match run(served, &[input]) {
        Ok((shape, probabilities)) if shape == [rows, iris::LABELS.len()] => (
            [(header::CONTENT_TYPE, JSON)],
            iris::predictions_json(&probabilities),
        )
            .into_response(),
        Ok((shape, _)) => model_error(anyhow::anyhow!("unexpected output shape {shape:?}")),
        Err(e) => model_error(e),
    }
}

fn mlp_invoke(served: &Served, content_type: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if media_type(content_type) != RAW {
        return unsupported(content_type, RAW);
    }
    let row_bytes = MLP_FEATURES * 4;
    if body.is_empty() || !body.len().is_multiple_of(row_bytes) {
        return bad_request(format!(
            "expected rows of {MLP_FEATURES} float32 values ({row_bytes} bytes each), got {} bytes",
            body.len()
        ));
    }
    let rows = body.len() / row_bytes;
    let features: Vec<f32> = body
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let input = Input::F32(vec![rows, MLP_FEATURES], &features);
    let output = match run(served, &[input]) {
        Ok((shape, output)) if shape == [rows, MLP_OUTPUTS] => output,
        Ok((shape, _)) => return model_error(anyhow::anyhow!("unexpected output shape {shape:?}")),
        Err(e) => return model_error(e),
    };
    if negotiate(headers, RAW, JSON) == RAW {
        let bytes: Vec<u8> = output.iter().flat_map(|v| v.to_le_bytes()).collect();
        return ([(header::CONTENT_TYPE, RAW)], bytes).into_response();
    }
    let mut json = String::with_capacity(16 + 16 * output.len());
    json.push_str("{\"outputs\":[");
    for (i, row) in output.chunks_exact(MLP_OUTPUTS).enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push('[');
        for (j, &value) in row.iter().enumerate() {
            if j > 0 {
                json.push(',');
            }
            push_json_number(&mut json, value);
        }
        json.push(']');
    }
    json.push_str("]}");
    ([(header::CONTENT_TYPE, JSON)], json).into_response()
}

/// One tokenised sequence, as `plugins/minilm` reads it.
#[derive(Deserialize)]
struct Tokens {
    input_ids: Vec<i64>,
    #[serde(default)]
    attention_mask: Option<Vec<i64>>,
    #[serde(default)]
    token_type_ids: Option<Vec<i64>>,
}

fn minilm_invoke(
    served: &Served,
    content_type: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if media_type(content_type) != JSON {
        return unsupported(content_type, JSON);
    }
    let tokens: Tokens = match serde_json::from_slice(body) {
        Ok(tokens) => tokens,
        Err(e) => return bad_request(format!("invalid request: {e}")),
    };
    let n = tokens.input_ids.len();
    if n == 0 || n > MINILM_MAX_TOKENS {
        return bad_request(format!(
            "expected 1 to {MINILM_MAX_TOKENS} input_ids, got {n}"
        ));
    }
    let mask = tokens.attention_mask.unwrap_or_else(|| vec![1; n]);
    let types = tokens.token_type_ids.unwrap_or_else(|| vec![0; n]);
    if mask.len() != n || types.len() != n {
        return bad_request("attention_mask and token_type_ids must be as long as input_ids");
    }
    let inputs = [
        Input::I64(vec![1, n], &tokens.input_ids),
        Input::I64(vec![1, n], &mask),
        Input::I64(vec![1, n], &types),
    ];
    let hidden = match run(served, &inputs) {
        Ok((shape, hidden)) if shape == [1, n, MINILM_HIDDEN] => hidden,
        Ok((shape, _)) => return model_error(anyhow::anyhow!("unexpected output shape {shape:?}")),
        Err(e) => return model_error(e),
    };
    let embedding = mean_pool(&hidden, &mask);
    if negotiate(headers, JSON, RAW) == RAW {
        let bytes: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
        return ([(header::CONTENT_TYPE, RAW)], bytes).into_response();
    }
    let mut json = String::with_capacity(16 + 12 * embedding.len());
    json.push_str("{\"embedding\":[");
    for (i, &value) in embedding.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        push_json_number(&mut json, value);
    }
    json.push_str("]}");
    ([(header::CONTENT_TYPE, JSON)], json).into_response()
}

/// Mean of the token embeddings (`hidden`: `[n, MINILM_HIDDEN]`) whose mask is not 0,
/// L2-normalised: the same pooling as `plugins/minilm`.
fn mean_pool(hidden: &[f32], mask: &[i64]) -> Vec<f32> {
    let mut sum = vec![0f32; MINILM_HIDDEN];
    let mut count = 0f32;
    for (token, &m) in hidden.chunks_exact(MINILM_HIDDEN).zip(mask) {
        if m == 0 {
            continue;
        }
        count += 1.0;
        for (s, v) in sum.iter_mut().zip(token) {
            *s += v;
        }
    }
    let count = count.max(1e-9);
    sum.iter_mut().for_each(|s| *s /= count);
    let norm = sum.iter().map(|s| s * s).sum::<f32>().sqrt().max(1e-12);
    sum.iter_mut().for_each(|s| *s /= norm);
    sum
}

/// An f32 as the guest SDK writes it (`codec::push_json_number`): the shortest decimal that
/// reads back as the same f32 (by the same formatter), `null` if not finite.
fn push_json_number(out: &mut String, value: f32) {
    if value.is_finite() {
        out.push_str(zmij::Buffer::new().format_finite(value));
    } else {
        out.push_str("null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_skips_masked_tokens_and_normalises() {
        let mut hidden = vec![3f32; MINILM_HIDDEN];
        hidden.extend([1f32; MINILM_HIDDEN]);
        hidden.extend([100f32; MINILM_HIDDEN]);
        let pooled = mean_pool(&hidden, &[1, 1, 0]);
        let expected = 1.0 / (MINILM_HIDDEN as f32).sqrt();
        assert!(pooled.iter().all(|v| (v - expected).abs() < 1e-6));
    }

    #[test]
    fn accept_picks_the_other_type_only_when_named_first() {
        let mut headers = HeaderMap::new();
        assert_eq!(negotiate(&headers, RAW, JSON), RAW);
        headers.insert(header::ACCEPT, "Application/JSON; q=1".parse().unwrap());
        assert_eq!(negotiate(&headers, RAW, JSON), JSON);
        headers.insert(header::ACCEPT, "*/*".parse().unwrap());
        assert_eq!(negotiate(&headers, RAW, JSON), RAW);
    }

    #[test]
    fn json_numbers_are_the_sdk_s() {
        let mut out = String::new();
        push_json_number(&mut out, 0.1);
        out.push(',');
        push_json_number(&mut out, f32::NAN);
        assert_eq!(out, "0.1,null");
    }
}
