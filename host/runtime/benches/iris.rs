//! One iris request through the full guest path (CSV in -> `input-fn` -> wasi-nn/tract ->
//! `output-fn` -> JSON) on a warm, reused instance, next to the same work done natively
//! (CSV parsed in Rust, the same tract graph, the same JSON out), in one run.
//!
//! `guest_echo` is the floor: the same request through the echo plugin (no decoding, no
//! model), the fixed cost of crossing the sandbox.
//!
//! `guest_batch16` is the server's batched path: 16 concurrent requests, each its own task
//! as a connection's is, queued on one instance of a variant with `max_batch = 16`, so that
//! one `invoke-batch` call serves them; `native_x16` is the native work for the same 16
//! requests. Both time 16 requests.
//!
//! Run: `cargo bench -p plinth-runtime --bench iris`. The ratio guest/native is the figure
//! to watch; results are recorded in BENCHMARKS.md. With `--features onnxruntime` and
//! `ORT_DYLIB_PATH` set, `guest_onnxruntime` runs the same guest request on ONNX Runtime.

use criterion::{criterion_group, criterion_main, Criterion};
use plinth_runtime::nn::TractGraph;
use plinth_runtime::{
    Backend, Invocation, Limits, Runtime, RuntimeConfig, VariantPool, VariantSpec,
};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::{tvec, IntoTValue, Tensor, TypedSimpleState};

const BODY: &str = "5.1,3.5,1.4,0.2";
/// Requests per batch in `guest_batch16`.
const BATCH: usize = 16;
const LABELS: [&str; 3] = ["setosa", "versicolor", "virginica"];

/// The native reference: what the iris plugin does, without Wasm (CSV parsed in Rust, the
/// graph run on a reused tract state, JSON written by hand with the same float formatter).
fn native(state: &mut TypedSimpleState, body: &str) -> Vec<u8> {
    use std::fmt::Write;
    let rows: Vec<Vec<f32>> = body
        .lines()
        .map(|l| {
            l.split(',')
                .map(|v| v.trim().parse::<f32>().unwrap())
                .collect()
        })
        .collect();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let input = Tensor::from_shape(&[rows.len(), 4], &flat).unwrap();
    let outputs = state.run(tvec![input.into_tvalue()]).unwrap();
    // As the guest path does after every backend run.
    plinth_runtime::nn::clear_upper_vector_state();
    let probs = outputs[0].try_as_plain_ram().unwrap();
    let probs = probs.as_slice::<f32>().unwrap();
    let mut out = String::from("{\"predictions\":[");
    for (i, p) in probs.chunks(3).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let best = (0..3).max_by(|a, b| p[*a].total_cmp(&p[*b])).unwrap();
        let _ = write!(
            out,
            "{{\"label\":\"{}\",\"class_index\":{best},\"probabilities\":[",
            LABELS[best]
        );
        for (j, value) in p.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(zmij::Buffer::new().format_finite(*value));
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out.into_bytes()
}

fn bench(c: &mut Criterion) {
    let model_dir = Path::new(plinth_tests::IRIS_MODEL_DIR);
    let graph =
        TractGraph::from_onnx(&std::fs::read(model_dir.join("model.onnx")).unwrap()).unwrap();

    // With the `onnxruntime` feature and ORT_DYLIB_PATH set, the same request also runs on
    // ONNX Runtime (default session settings).
    let onnxruntime = std::env::var_os("ORT_DYLIB_PATH")
        .filter(|p| cfg!(feature = "onnxruntime") && !p.is_empty())
        .map(|p| plinth_runtime::OnnxRuntime::load(Path::new(&p)).unwrap());
    let runtime = Runtime::new(&RuntimeConfig {
        onnxruntime: onnxruntime.clone(),
        ..RuntimeConfig::default()
    })
    .unwrap();
    // Guest calls are async; the benchmark drives them on a current-thread runtime.
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool_of = |component: &str, model_dir: Option<&Path>, backend: Backend, max_batch| {
        tokio
            .block_on(VariantPool::new(
                &runtime,
                &VariantSpec {
                    endpoint: "bench".into(),
                    variant: "AllTraffic".into(),
                    component: component.into(),
                    model_dir: model_dir.map(Path::to_path_buf),
                    environment: Vec::new(),
                    instance_count: 1,
                    routing: Default::default(),
                    limits: Limits {
                        max_batch,
                        ..Limits::default()
                    },
                    backend,
                    elastic: None,
                },
            ))
            .unwrap()
    };
    let pool_on = |backend| pool_of(plinth_tests::IRIS_WASM, Some(model_dir), backend, 1);
    let pool = pool_on(Backend::Tract);
    let ort_pool = onnxruntime.as_ref().map(|_| pool_on(Backend::OnnxRuntime));
    let request = Invocation {
        body: BODY.as_bytes().to_vec().into(),
        content_type: "text/csv".into(),
        accept: "application/json".into(),
        inference_id: "bench".into(),
        deadline: None,
        custom_attributes: None,
    };
    // Both paths must give the same answer.
    let guest_out = tokio.block_on(pool.invoke_here(&request)).unwrap();
    let mut state = graph.state().unwrap();
    let native_out = native(&mut state, BODY);
    let label = |b: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(b).unwrap()["predictions"][0]["label"].clone()
    };
    assert_eq!(label(&guest_out.body), label(&native_out));
    if let Some(ort_pool) = &ort_pool {
        let ort_out = tokio.block_on(ort_pool.invoke_here(&request)).unwrap();
        assert_eq!(label(&ort_out.body), label(&native_out));
    }

    // The floor: the same request through the echo plugin, which decodes nothing and runs
    // no model, i.e. the fixed cost of one request crossing the sandbox.
    let echo = pool_of(plinth_tests::ECHO_WASM, None, Backend::Tract, 1);
    let echo_request = Invocation {
        accept: String::new(),
        ..request.clone()
    };
    assert_eq!(
        tokio
            .block_on(echo.invoke_here(&echo_request))
            .unwrap()
            .body,
        BODY.as_bytes()
    );

    // The batched path: 16 tasks queue on one instance, and its runner serves them in one
    // call (asserted once here, from the pool's batch counts).
    let batched = Arc::new(pool_of(
        plinth_tests::IRIS_WASM,
        Some(model_dir),
        Backend::Tract,
        BATCH,
    ));
    let shared = Arc::new(request.clone());
    let batch16 = || {
        tokio.block_on(async {
            // Spawned before any runs: the first starts the runner, which runs after the
            // other 15 have queued.
            let tasks: Vec<_> = (0..BATCH)
                .map(|_| {
                    let (pool, request) = (batched.clone(), shared.clone());
                    tokio::spawn(async move { pool.invoke(request).await })
                })
                .collect();
            let mut outputs = Vec::with_capacity(tasks.len());
            for task in tasks {
                outputs.push(task.await.unwrap().unwrap());
            }
            outputs
        })
    };
    for output in batch16() {
        assert_eq!(label(&output.body), label(&native_out));
    }
    let stats = batched.stats();
    assert_eq!(
        (stats.batches, stats.batched_requests),
        (1, BATCH),
        "the 16 requests must form one batch"
    );

    let mut group = c.benchmark_group("iris_request");
    group.bench_function("native", |b| {
        b.iter(|| black_box(native(&mut state, black_box(BODY))))
    });
    group.bench_function("guest", |b| {
        b.iter(|| {
            black_box(
                tokio
                    .block_on(pool.invoke_here(black_box(&request)))
                    .unwrap(),
            )
        })
    });
    group.bench_function("guest_echo", |b| {
        b.iter(|| {
            black_box(
                tokio
                    .block_on(echo.invoke_here(black_box(&echo_request)))
                    .unwrap(),
            )
        })
    });
    group.bench_function("native_x16", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                black_box(native(&mut state, black_box(BODY)));
            }
        })
    });
    group.bench_function("guest_batch16", |b| b.iter(|| black_box(batch16())));
    if let Some(ort_pool) = &ort_pool {
        group.bench_function("guest_onnxruntime", |b| {
            b.iter(|| {
                black_box(
                    tokio
                        .block_on(ort_pool.invoke_here(black_box(&request)))
                        .unwrap(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
