//! `native-iris-pipeline`: the native reference for the pipeline benchmark
//! (`host/bench/pipeline-bench.py`): the three stages of `examples/pipeline` done in one
//! function with axum + tract-onnx and no WebAssembly: the CSV features standard-scaled with
//! `scaler/scaler.csv`, the scaled iris network (`model/model.onnx`) run, and each row's most
//! probable class named from `labels/labels.txt`, answered as the `labels` plugin answers
//! (`{"predictions":[{"label":..,"probability":..}]}`). The gap between it and Plinth's Serial
//! pipeline is what three components and two hops cost.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::sync::Arc;

use anyhow::Context as _;
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

/// The native three-stage reference server.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The pipeline example's directory (scaler/, model/, labels/).
    #[arg(long, default_value = "examples/pipeline")]
    dir: PathBuf,
    /// The address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

use iris::{load, predict, Plan};

/// The three stages' parameters.
struct Stages {
    mean: Vec<f32>,
    std: Vec<f32>,
    plan: Plan,
    labels: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let scaler = std::fs::read_to_string(args.dir.join("scaler/scaler.csv"))?;
    let mut rows = scaler.lines().map(|l| {
        l.split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<Vec<_>, _>>()
    });
    let (mean, std) = (
        rows.next().context("no means")??,
        rows.next().context("no deviations")??,
    );
    let labels = std::fs::read_to_string(args.dir.join("labels/labels.txt"))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .collect();
    let stages = Arc::new(Stages {
        mean,
        std,
        plan: load(&args.dir.join("model/model.onnx"))?,
        labels,
    });
    plinth_bench::native::serve(args.bind, args.threads, post(invoke), stages)
}

async fn invoke(
    State(stages): State<Arc<Stages>>,
    UrlPath(_endpoint): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (mut features, rows) = match iris::csv_request(&headers, &body) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    // Stage 1: standard scaling.
    for (i, x) in features.iter_mut().enumerate() {
        let c = i % iris::FEATURES;
        *x = (*x - stages.mean[c]) / stages.std[c];
    }
    // Stage 2: the network.
    let probabilities = match predict(&stages.plan, &features, rows) {
        Ok(p) => p,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response(),
    };
    // Stage 3: the most probable class's name.
    let mut out = String::from("{\"predictions\":[");
    for (i, row) in probabilities.chunks(iris::LABELS.len()).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let best = iris::argmax(row);
        out.push_str("{\"label\":\"");
        out.push_str(&stages.labels[best]);
        out.push_str("\",\"probability\":");
        out.push_str(zmij::Buffer::new().format_finite(row[best]));
        out.push('}');
    }
    out.push_str("]}");
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}
