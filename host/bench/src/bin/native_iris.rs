//! `native-iris`: the native reference server for Plinth's HTTP benchmark. It serves the same
//! iris model with axum + tract-onnx and no WebAssembly, doing the same work as Plinth's iris
//! plugin (CSV in, `{"predictions":[...]}` JSON out), so that the gap between the two is the
//! cost of Plinth itself. Inference runs inline on the async worker: it takes a few
//! microseconds, and that is what a straightforward native server would do.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use plinth_bench::iris;

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

use iris::{load, predict, Plan};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = load(&args.model)?;
    plinth_bench::native::serve(args.bind, args.threads, post(invoke), plan)
}

async fn invoke(
    State(plan): State<Plan>,
    UrlPath(_endpoint): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (features, rows) = match iris::csv_request(&headers, &body) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
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
