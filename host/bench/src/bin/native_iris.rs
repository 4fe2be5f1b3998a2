//! `native-iris`: the native reference server for Plinth's HTTP benchmark. It serves the same
//! iris model with axum + tract-onnx and no WebAssembly, doing the same work as Plinth's iris
//! plugin (CSV in, `{"predictions":[...]}` JSON out), so that the gap between the two is the
//! cost of Plinth itself. Inference runs inline on the async worker: it takes a few
//! microseconds, and that is what a straightforward native server would do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use plinth_bench::iris;
use tract_onnx::prelude::*;

/// The same allocator as `plinth serve`, so that the comparison is of the servers' own work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The native iris reference server.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The ONNX model: input "input" f32 [N,4], output "probabilities" f32 [N,3].
    #[arg(long, default_value = "examples/iris/model/model.onnx")]
    model: PathBuf,
    /// The address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

type Plan = Arc<TypedRunnableModel>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = load(&args.model)?;
    plinth_bench::native::serve(args.bind, args.threads, post(invoke), plan)
}

/// Parse, optimise and plan the model once.
fn load(path: &Path) -> anyhow::Result<Plan> {
    let plan = tract_onnx::onnx()
        .model_for_path(path)
        .with_context(|| format!("cannot read the ONNX model {}", path.display()))?
        .into_optimized()?
        .into_runnable()?;
    Ok(plan)
}

async fn invoke(
    State(plan): State<Plan>,
    UrlPath(_endpoint): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/csv");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("text/csv") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type {content_type:?} is not supported; send text/csv"),
        )
            .into_response();
    }
    let (features, rows) = match iris::parse_csv(&body) {
        Ok(parsed) => parsed,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    match predict(&plan, &features, rows) {
        Ok(probabilities) => (
            [(header::CONTENT_TYPE, "application/json")],
            iris::predictions_json(&probabilities),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response(),
    }
}

thread_local! {
    /// tract's run state, reused from request to request on each worker thread (as Plinth's
    /// backend reuses one per instance).
    static STATE: std::cell::RefCell<Option<TypedSimpleState>> = const { std::cell::RefCell::new(None) };
}

/// Run the model on `rows` x 4 features; the probabilities come back row-major, `rows` x 3.
fn predict(plan: &Plan, features: &[f32], rows: usize) -> anyhow::Result<Vec<f32>> {
    let input = Tensor::from_shape(&[rows, iris::FEATURES], features)?;
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
        output.shape() == [rows, iris::LABELS.len()],
        "expected probabilities of shape [{rows}, {}], the model gave {:?}",
        iris::LABELS.len(),
        output.shape()
    );
    Ok(output.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
}
