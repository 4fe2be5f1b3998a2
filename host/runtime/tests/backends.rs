//! The wasi-nn backends behind a variant, through the real iris guest: the model's `Backend`
//! setting resolved (`Auto` = ONNX Runtime when the runtime has it, tract otherwise), the
//! same answers from ONNX Runtime and tract, instances of one variant sharing a session
//! concurrently, the intra-op thread setting and its default, and refusals (ONNX Runtime
//! asked for without its library; library paths that are missing, not a library, or not
//! ONNX Runtime), each an error and never a panic.
//!
//! The ONNX Runtime tests need `ORT_DYLIB_PATH` (`tests/run` sets it from `.venv`): without
//! it they print a notice and pass, except in CI (`CI=true`), where they fail.

use plinth_runtime::{
    Backend, Invocation, LoadError, OnnxRuntime, OnnxRuntimeError, Runtime, RuntimeConfig,
    VariantPool, VariantSpec,
};
use std::path::PathBuf;

fn library(test: &str) -> Option<OnnxRuntime> {
    if !cfg!(feature = "onnxruntime") {
        eprintln!("{test}: skipped: built without the onnxruntime feature");
        return None;
    }
    plinth_tests::onnxruntime_library(test)
        .map(|path| OnnxRuntime::load(&path).unwrap_or_else(|e| panic!("ORT_DYLIB_PATH: {e}")))
}

fn runtime(onnxruntime: Option<OnnxRuntime>, threads: Option<usize>) -> Runtime {
    Runtime::new(&RuntimeConfig {
        onnxruntime,
        onnxruntime_intra_op_threads: threads,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn spec(backend: Backend, instances: usize) -> VariantSpec {
    VariantSpec {
        endpoint: "backends".into(),
        variant: "AllTraffic".into(),
        component: plinth_tests::IRIS_WASM.into(),
        model_dir: Some(PathBuf::from(plinth_tests::IRIS_MODEL_DIR)),
        environment: Vec::new(),
        instance_count: instances,
        routing: Default::default(),
        limits: Default::default(),
        backend,
        elastic: None,
    }
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

const ROWS: &str = "5.1,3.5,1.4,0.2\n6.3,3.3,6.0,2.5\n5.7,2.8,4.1,1.3\n7.7,2.6,6.9,2.3";

fn request(body: &str) -> Invocation {
    Invocation {
        body: body.as_bytes().to_vec().into(),
        content_type: "text/csv".into(),
        accept: "application/json".into(),
        inference_id: "test".into(),
        deadline: None,
        custom_attributes: None,
    }
}

/// The labels and probabilities of an iris answer.
fn answer(
    pool: &VariantPool,
    tokio: &tokio::runtime::Runtime,
    body: &str,
) -> Vec<(String, Vec<f64>)> {
    let output = tokio
        .block_on(pool.invoke(request(body)))
        .unwrap_or_else(|e| panic!("{body}: {e}"));
    let json: serde_json::Value = serde_json::from_slice(&output.body).unwrap();
    json["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["label"].as_str().unwrap().to_string(),
                p["probabilities"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

fn pool(runtime: &Runtime, tokio: &tokio::runtime::Runtime, spec: &VariantSpec) -> VariantPool {
    tokio
        .block_on(VariantPool::new(runtime, spec))
        .unwrap_or_else(|e| panic!("{:?}: {e}", spec.backend))
}

#[test]
fn without_onnxruntime_auto_is_tract_and_onnxruntime_is_refused() {
    let runtime = runtime(None, None);
    let tokio = tokio();
    assert_eq!(runtime.backend_for(Backend::Auto), Ok(Backend::Tract));
    let auto = pool(&runtime, &tokio, &spec(Backend::Auto, 1));
    assert_eq!(auto.backend(), Backend::Tract);
    assert_eq!(auto.intra_op_threads(), None);
    assert_eq!(answer(&auto, &tokio, ROWS).len(), 4);

    let refused = tokio.block_on(VariantPool::new(&runtime, &spec(Backend::OnnxRuntime, 1)));
    let Err(LoadError::Backend(message)) = refused else {
        panic!("OnnxRuntime without the library was not refused as a backend error");
    };
    let expected = if cfg!(feature = "onnxruntime") {
        "start it with --onnxruntime PATH (or ORT_DYLIB_PATH)"
    } else {
        "built without ONNX Runtime support"
    };
    assert!(message.contains(expected), "{message}");
    assert_eq!(runtime.backend_for(Backend::OnnxRuntime), Err(message));
}

#[test]
fn onnxruntime_answers_like_tract() {
    let Some(onnxruntime) = library("onnxruntime_answers_like_tract") else {
        return;
    };
    let runtime = runtime(Some(onnxruntime.clone()), None);
    assert_eq!(runtime.onnxruntime().unwrap().path(), onnxruntime.path());
    assert!(
        onnxruntime.version().starts_with("1."),
        "{}",
        onnxruntime.version()
    );
    let tokio = tokio();
    let ort = pool(&runtime, &tokio, &spec(Backend::OnnxRuntime, 1));
    let auto = pool(&runtime, &tokio, &spec(Backend::Auto, 1));
    let tract = pool(&runtime, &tokio, &spec(Backend::Tract, 1));
    assert_eq!(ort.backend(), Backend::OnnxRuntime);
    assert_eq!(auto.backend(), Backend::OnnxRuntime);
    assert_eq!(tract.backend(), Backend::Tract);
    let ours = answer(&ort, &tokio, ROWS);
    let theirs = answer(&tract, &tokio, ROWS);
    assert_eq!(
        ours.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
        ["setosa", "virginica", "versicolor", "virginica"]
    );
    for ((label, p), (tract_label, q)) in ours.iter().zip(&theirs) {
        assert_eq!(label, tract_label);
        for (a, b) in p.iter().zip(q) {
            assert!((a - b).abs() <= 1e-5, "ONNX Runtime {p:?}, tract {q:?}");
        }
    }
    assert_eq!(answer(&auto, &tokio, ROWS), ours);
}

#[test]
fn instances_share_a_session_concurrently() {
    let Some(onnxruntime) = library("instances_share_a_session_concurrently") else {
        return;
    };
    let runtime = runtime(Some(onnxruntime), None);
    let tokio = tokio();
    let pool = std::sync::Arc::new(pool(&runtime, &tokio, &spec(Backend::OnnxRuntime, 4)));
    let rows: Vec<&str> = ROWS.lines().collect();
    let expected: Vec<_> = rows.iter().map(|r| answer(&pool, &tokio, r)).collect();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (pool, rows, expected) = (pool.clone(), rows.clone(), expected.clone());
        tasks.push(tokio.spawn(async move {
            for i in 0..100 {
                let k = (t + i) % rows.len();
                let output = pool.invoke(request(rows[k])).await.unwrap();
                let json: serde_json::Value = serde_json::from_slice(&output.body).unwrap();
                assert_eq!(json["predictions"][0]["label"], expected[k][0].0.as_str());
                let p: Vec<f64> = json["predictions"][0]["probabilities"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect();
                assert_eq!(p, expected[k][0].1);
            }
        }));
    }
    for task in tasks {
        tokio.block_on(task).unwrap();
    }
    assert_eq!(pool.stats().replaced, 0);
}

#[test]
fn intra_op_threads_default_to_the_cores_per_instance() {
    let Some(onnxruntime) = library("intra_op_threads_default_to_the_cores_per_instance") else {
        return;
    };
    let cores = std::thread::available_parallelism().unwrap().get();
    let tokio = tokio();
    let default = runtime(Some(onnxruntime.clone()), None);
    for instances in [1, 2, 3] {
        let pool = pool(&default, &tokio, &spec(Backend::OnnxRuntime, instances));
        assert_eq!(
            pool.intra_op_threads(),
            Some((cores / instances).max(1)),
            "{instances} instances on {cores} cores"
        );
    }
    let configured = runtime(Some(onnxruntime), Some(3));
    let pool = pool(&configured, &tokio, &spec(Backend::OnnxRuntime, 2));
    assert_eq!(pool.intra_op_threads(), Some(3));
    assert_eq!(answer(&pool, &tokio, ROWS).len(), 4);
}

#[test]
fn bad_libraries_are_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libonnxruntime.so.1.22.1");
    let e = OnnxRuntime::load(&missing).unwrap_err();
    assert!(matches!(e, OnnxRuntimeError::NotFound { .. }), "{e:?}");
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );

    let text = dir.path().join("libonnxruntime.so");
    std::fs::write(&text, "not a library").unwrap();
    let e = OnnxRuntime::load(&text).unwrap_err();
    if cfg!(feature = "onnxruntime") {
        assert!(matches!(e, OnnxRuntimeError::Load { .. }), "{e:?}");
        assert!(e.to_string().contains("cannot load it"), "{e}");
    } else {
        assert!(matches!(e, OnnxRuntimeError::NotBuilt), "{e:?}");
    }
    // A directory stands for the library it holds.
    let e = OnnxRuntime::load(dir.path()).unwrap_err();
    if cfg!(feature = "onnxruntime") {
        assert!(e.to_string().contains(&text.display().to_string()), "{e}");
    }

    // A real shared library that is not ONNX Runtime: the wheel ships one next to it.
    let Some(onnxruntime) = library("bad_libraries_are_errors_naming_the_path") else {
        return;
    };
    let other = onnxruntime
        .path()
        .with_file_name("libonnxruntime_providers_shared.so");
    if other.is_file() {
        let e = OnnxRuntime::load(&other).unwrap_err();
        assert!(
            matches!(e, OnnxRuntimeError::NotOnnxRuntime { .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("not ONNX Runtime"), "{e}");
    }
    // The same library again is the same handle.
    let again = OnnxRuntime::load(onnxruntime.path()).unwrap();
    assert_eq!(again.version(), onnxruntime.version());
}
