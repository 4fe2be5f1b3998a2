//! The wasi-nn backends of the real `plinth serve`: the iris endpoint served by ONNX Runtime
//! and by tract in one server (the per-model `backend` / `PlinthBackend` setting, from the
//! deployment file and from CreateModel) giving the same answers within 1e-5; `Auto` meaning
//! ONNX Runtime when the library is loaded and tract otherwise; the intra-op thread flag;
//! a bad `--onnxruntime` or `ORT_DYLIB_PATH` stopping the server at start with a message
//! naming the path and the problem; and a model that needs ONNX Runtime refused, never a
//! panic, by a server without the library (CreateModel, the deployment file, and a stored
//! model after a restart).
//!
//! The tests that load ONNX Runtime need `ORT_DYLIB_PATH` (`tests/run` sets it from `.venv`):
//! without it they print a notice and pass, except in CI (`CI=true`), where they fail.

use plinth_tests::{
    ApiError, Config, Model, Options, Server, StartError, StatusCode, IRIS_MODEL_DIR, IRIS_WASM,
};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// The library to test with (see `plinth_tests::onnxruntime_library`); `None` also when this
/// Plinth is built without ONNX Runtime.
fn onnxruntime_library(test: &str) -> Option<std::path::PathBuf> {
    if !cfg!(feature = "onnxruntime") {
        eprintln!("{test}: skipped: built without the onnxruntime feature");
        return None;
    }
    plinth_tests::onnxruntime_library(test)
}

/// Iris samples of all three species, several per request.
const ROWS: &str =
    "5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n5.9,3.0,4.2,1.5\n4.9,2.5,4.5,1.7\n6.0,2.2,5.0,1.5";

/// A server that inherits no `ORT_DYLIB_PATH`, with `args` added.
fn options(config: Option<String>, args: &[&str]) -> Options {
    Options {
        config,
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![("ORT_DYLIB_PATH".into(), None)],
        ..Options::default()
    }
}

fn start_failure(options: Options) -> StartError {
    match Server::try_start_with(BIN, options) {
        Ok(_) => panic!("plinth serve started"),
        Err(e) => e,
    }
}

/// `(label, probabilities)` per row of an iris JSON answer.
fn predictions(
    server: &Server,
    endpoint: &str,
    content_type: &str,
    body: &str,
) -> Vec<(String, Vec<f64>)> {
    let response = server.invoke(
        endpoint,
        content_type,
        body,
        &[("Accept", "application/json")],
    );
    assert_eq!(response.status(), StatusCode::OK, "{endpoint}");
    let answer: Value = response.json().unwrap();
    answer["predictions"]
        .as_array()
        .unwrap_or_else(|| panic!("{endpoint}: {answer}"))
        .iter()
        .map(|p| {
            let probabilities = p["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            (p["label"].as_str().unwrap().to_string(), probabilities)
        })
        .collect()
}

fn assert_close(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for ((label_a, p), (label_b, q)) in a.iter().zip(b) {
        assert_eq!(label_a, label_b, "{what}");
        assert_eq!(p.len(), q.len(), "{what}");
        for (x, y) in p.iter().zip(q) {
            assert!((x - y).abs() <= 1e-5, "{what}: {p:?} vs {q:?}");
        }
    }
}

/// The backend DescribeEndpoint reports for the endpoint's one variant.
fn served_by(server: &Server, endpoint: &str) -> String {
    let d = server.describe_settled(endpoint);
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    d["ProductionVariants"][0]["PlinthBackend"]
        .as_str()
        .unwrap_or_else(|| panic!("no PlinthBackend in {d}"))
        .to_string()
}

fn create_model(server: &Server, name: &str, backend: Option<&str>) -> ApiError {
    let mut input = json!({
        "ModelName": name,
        "PrimaryContainer": { "Image": IRIS_WASM, "ModelDataUrl": IRIS_MODEL_DIR },
    });
    if let Some(backend) = backend {
        input["PlinthBackend"] = json!(backend);
    }
    ApiError::from_response(server.control("CreateModel", &input))
}

/// CreateModel (which must succeed), an endpoint config and an endpoint of one instance.
fn deploy(server: &Server, name: &str, backend: Option<&str>) {
    let mut input = json!({
        "ModelName": name,
        "PrimaryContainer": { "Image": IRIS_WASM, "ModelDataUrl": IRIS_MODEL_DIR },
    });
    if let Some(backend) = backend {
        input["PlinthBackend"] = json!(backend);
    }
    server.call("CreateModel", input);
    server.call(
        "CreateEndpointConfig",
        json!({
            "EndpointConfigName": format!("{name}-config"),
            "ProductionVariants": [{ "VariantName": "AllTraffic", "ModelName": name }],
        }),
    );
    server.call(
        "CreateEndpoint",
        json!({ "EndpointName": name, "EndpointConfigName": format!("{name}-config") }),
    );
}

#[test]
fn onnxruntime_and_tract_give_the_same_answers() {
    let Some(library) = onnxruntime_library("onnxruntime_and_tract_give_the_same_answers") else {
        return;
    };
    let config = Config::new()
        .endpoint(Model::iris("iris-ort").backend("onnxruntime"), 2)
        .endpoint(Model::iris("iris-tract").backend("tract"), 2)
        .endpoint(Model::iris("iris-auto"), 1)
        .to_toml();
    let server = Server::start_with(
        BIN,
        options(Some(config), &["--onnxruntime", library.to_str().unwrap()]),
    );
    assert!(
        server.stderr().contains("ONNX Runtime ready"),
        "{}",
        server.stderr()
    );

    // DescribeModel shows the setting, DescribeEndpoint the backend that serves.
    for (model, setting) in [
        ("iris-ort", "OnnxRuntime"),
        ("iris-tract", "Tract"),
        ("iris-auto", "Auto"),
    ] {
        let d = server.call("DescribeModel", json!({ "ModelName": model }));
        assert_eq!(d["PlinthBackend"], setting, "{d}");
    }
    assert_eq!(served_by(&server, "iris-ort"), "OnnxRuntime");
    assert_eq!(served_by(&server, "iris-tract"), "Tract");
    assert_eq!(served_by(&server, "iris-auto"), "OnnxRuntime");

    let json_rows: Vec<Vec<f64>> = ROWS
        .lines()
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    let json_body = serde_json::to_string(&json_rows).unwrap();
    for (content_type, body) in [("text/csv", ROWS), ("application/json", json_body.as_str())] {
        let ort = predictions(&server, "iris-ort", content_type, body);
        let tract = predictions(&server, "iris-tract", content_type, body);
        let auto = predictions(&server, "iris-auto", content_type, body);
        assert_eq!(
            ort.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
            [
                "setosa",
                "virginica",
                "versicolor",
                "virginica",
                "virginica"
            ],
            "{content_type}"
        );
        assert_close(&ort, &tract, content_type);
        assert_close(&auto, &tract, content_type);
    }
    // One row at a time, as most clients send.
    for row in ROWS.lines() {
        assert_close(
            &predictions(&server, "iris-ort", "text/csv", row),
            &predictions(&server, "iris-tract", "text/csv", row),
            row,
        );
    }

    // The API's spelling, through CreateModel.
    deploy(&server, "api-ort", Some("OnnxRuntime"));
    deploy(&server, "api-tract", Some("tract"));
    assert_eq!(served_by(&server, "api-ort"), "OnnxRuntime");
    assert_eq!(served_by(&server, "api-tract"), "Tract");
    assert_close(
        &predictions(&server, "api-ort", "text/csv", ROWS),
        &predictions(&server, "api-tract", "text/csv", ROWS),
        "CreateModel",
    );
}

#[test]
fn intra_op_threads_follow_the_flag() {
    let Some(library) = onnxruntime_library("intra_op_threads_follow_the_flag") else {
        return;
    };
    let config = Config::new()
        .endpoint(Model::iris("iris").backend("onnxruntime"), 2)
        .to_toml();
    let server = Server::start_with(
        BIN,
        options(
            Some(config),
            &[
                "--onnxruntime",
                library.to_str().unwrap(),
                "--onnxruntime-intra-op-threads",
                "3",
            ],
        ),
    );
    server
        .wait_for_stderr(Duration::from_secs(5), |e| {
            e.contains("backend=OnnxRuntime") && e.contains("intra_op_threads=3")
        })
        .unwrap_or_else(|e| panic!("no intra_op_threads=3 in the log:\n{e}"));
    assert_eq!(predictions(&server, "iris", "text/csv", ROWS).len(), 5);

    // The default: the cores divided by the instances (2), at least 1.
    let cores = std::thread::available_parallelism().unwrap().get();
    let config = Config::new()
        .endpoint(Model::iris("iris").backend("onnxruntime"), 2)
        .to_toml();
    let server = Server::start_with(
        BIN,
        options(Some(config), &["--onnxruntime", library.to_str().unwrap()]),
    );
    let expected = format!("intra_op_threads={}", (cores / 2).max(1));
    server
        .wait_for_stderr(Duration::from_secs(5), |e| e.contains(&expected))
        .unwrap_or_else(|e| panic!("no {expected} in the log:\n{e}"));

    let e = start_failure(options(None, &["--onnxruntime-intra-op-threads", "0"]));
    assert!(
        e.stderr.contains("--onnxruntime-intra-op-threads"),
        "{}",
        e.stderr
    );
}

#[test]
fn a_bad_library_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libonnxruntime.so.1.22.1");
    let not_a_library = dir.path().join("libonnxruntime.so");
    std::fs::write(&not_a_library, "not a shared library").unwrap();
    let empty_dir = dir.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let shown = |p: &Path| p.display().to_string();
    let mut cases: Vec<(Options, Vec<String>)> = vec![
        (
            options(None, &["--onnxruntime", &shown(&missing)]),
            vec![
                shown(&missing),
                "no such file".into(),
                "--onnxruntime".into(),
            ],
        ),
        (
            options(None, &["--onnxruntime", &shown(&not_a_library)]),
            if cfg!(feature = "onnxruntime") {
                vec![shown(&not_a_library), "cannot load it".into()]
            } else {
                vec!["built without ONNX Runtime support".into()]
            },
        ),
        (
            options(None, &["--onnxruntime", &shown(&empty_dir)]),
            vec![shown(&empty_dir), "holds no libonnxruntime.so".into()],
        ),
    ];
    let bad_env = Options {
        env: vec![("ORT_DYLIB_PATH".into(), Some(shown(&missing)))],
        ..Options::default()
    };
    if cfg!(feature = "onnxruntime") {
        cases.push((
            bad_env,
            vec![
                shown(&missing),
                "no such file".into(),
                "ORT_DYLIB_PATH".into(),
            ],
        ));
    } else {
        // Without ONNX Runtime support the variable is not Plinth's concern: a warning.
        let server = Server::start_with(BIN, bad_env);
        assert!(
            server.stderr().contains("ORT_DYLIB_PATH is set, but"),
            "{}",
            server.stderr()
        );
    }
    for (options, fragments) in cases {
        let what = format!("{:?} {:?}", options.args, options.env);
        let e = start_failure(options);
        let status = e.status.unwrap_or_else(|| panic!("{what}: did not exit"));
        assert!(!status.success(), "{what}");
        for fragment in &fragments {
            assert!(
                e.stderr.contains(fragment.as_str()),
                "{what}: no {fragment:?} in\n{}",
                e.stderr
            );
        }
        assert!(!e.stderr.contains("panicked"), "{what}: {}", e.stderr);
    }

    // A shared library that is not ONNX Runtime: the wheel ships one next to it.
    let Some(library) = onnxruntime_library("a_bad_library_stops_the_server_at_start") else {
        return;
    };
    let library = plinth_runtime::ort_library::library_file(&library).unwrap();
    let other = library.with_file_name("libonnxruntime_providers_shared.so");
    if other.is_file() {
        let e = start_failure(options(None, &["--onnxruntime", &shown(&other)]));
        assert!(e.stderr.contains("not ONNX Runtime"), "{}", e.stderr);
        assert!(e.stderr.contains(&shown(&other)), "{}", e.stderr);
    }
    // The wheel's directory stands for the library in it.
    let server = Server::start_with(
        BIN,
        options(None, &["--onnxruntime", &shown(library.parent().unwrap())]),
    );
    assert!(
        server.stderr().contains("ONNX Runtime ready"),
        "{}",
        server.stderr()
    );
}

#[test]
fn without_the_library_onnxruntime_models_are_refused() {
    let server = Server::start_with(BIN, options(None, &[]));
    // CreateModel names the setting and the fix.
    let e = create_model(&server, "needs-ort", Some("OnnxRuntime"));
    assert_eq!(e.status, StatusCode::BAD_REQUEST, "{}", e.body);
    assert_eq!(e.code, "ValidationException", "{}", e.body);
    assert!(
        e.message.contains("PlinthBackend OnnxRuntime"),
        "{}",
        e.message
    );
    let fix = if cfg!(feature = "onnxruntime") {
        "--onnxruntime PATH (or ORT_DYLIB_PATH)"
    } else {
        "built without ONNX Runtime support"
    };
    assert!(e.message.contains(fix), "{}", e.message);
    let missing = server.control("DescribeModel", &json!({ "ModelName": "needs-ort" }));
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    // An unknown backend.
    let e = create_model(&server, "bad-backend", Some("Cuda"));
    assert_eq!(e.code, "ValidationException", "{}", e.body);
    assert!(
        e.message.contains("unknown backend \"Cuda\""),
        "{}",
        e.message
    );
    // Auto (the default) and Tract run on tract.
    deploy(&server, "auto", None);
    deploy(&server, "tract", Some("Tract"));
    assert_eq!(served_by(&server, "auto"), "Tract");
    assert_eq!(served_by(&server, "tract"), "Tract");
    assert_eq!(predictions(&server, "auto", "text/csv", ROWS).len(), 5);

    // A deployment file asking for ONNX Runtime stops the server with the same reason.
    let config = Config::new()
        .endpoint(Model::iris("iris").backend("onnxruntime"), 1)
        .to_toml();
    let e = start_failure(options(Some(config), &[]));
    assert!(
        e.stderr.contains("PlinthBackend OnnxRuntime"),
        "{}",
        e.stderr
    );
    assert!(e.stderr.contains(fix), "{}", e.stderr);
    assert!(!e.stderr.contains("panicked"), "{}", e.stderr);
}

#[test]
fn a_stored_onnxruntime_model_fails_its_endpoint_after_a_restart_without_the_library() {
    let Some(library) = onnxruntime_library(
        "a_stored_onnxruntime_model_fails_its_endpoint_after_a_restart_without_the_library",
    ) else {
        return;
    };
    let library = library.to_str().unwrap().to_string();
    let server = Server::start_with(BIN, options(None, &["--onnxruntime", &library]));
    deploy(&server, "iris", Some("OnnxRuntime"));
    assert_eq!(served_by(&server, "iris"), "OnnxRuntime");

    let mut server = server
        .kill_and_restart_with(|o| o.args.clear())
        .unwrap_or_else(|e| panic!("restart: {}", e.stderr));
    let d = server.describe_settled("iris");
    assert_eq!(d["EndpointStatus"], "Failed", "{d}");
    let reason = d["FailureReason"].as_str().unwrap_or_default();
    assert!(reason.contains("OnnxRuntime backend"), "{reason}");
    assert!(reason.contains("--onnxruntime"), "{reason}");
    assert_eq!(server.ping().status(), StatusCode::OK);
    assert!(server.is_running());

    // With the library back, the endpoint serves again.
    let server = server
        .kill_and_restart_with(|o| o.args = vec!["--onnxruntime".into(), library.clone()])
        .unwrap_or_else(|e| panic!("restart: {}", e.stderr));
    assert_eq!(served_by(&server, "iris"), "OnnxRuntime");
    assert_eq!(predictions(&server, "iris", "text/csv", ROWS).len(), 5);
}
