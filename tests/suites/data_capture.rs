//! Data capture (`DataCaptureConfig`) against the real server: records in SageMaker's format
//! in S3 through boto3; sampling within its binomial bound, each variant in its own folder;
//! a destination that fails costs captures (counted) and never a request; files still open
//! written at a graceful shutdown; combinations SageMaker or Plinth refuses, named.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use plinth_tests::metrics::counter;
use plinth_tests::{Options, Server, IRIS_MODEL_DIR, IRIS_WASM};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");
const ROW: &str = "5.1,3.5,1.4,0.2";

/// A server whose capture files are written a second after they open.
fn server() -> Server {
    Server::start_with(
        BIN,
        Options {
            args: vec!["--data-capture-roll-seconds".into(), "1".into()],
            ..Options::default()
        },
    )
}

/// Model `name`: the iris classifier.
fn iris(server: &Server, name: &str) {
    server.call(
        "CreateModel",
        json!({"ModelName": name, "PrimaryContainer": {"Image": IRIS_WASM, "ModelDataUrl": IRIS_MODEL_DIR}}),
    );
}

fn capture(destination: &Path, percentage: u32, modes: &[&str]) -> Value {
    json!({
        "InitialSamplingPercentage": percentage,
        "DestinationS3Uri": destination.display().to_string(),
        "CaptureOptions": modes.iter().map(|m| json!({"CaptureMode": m})).collect::<Vec<_>>(),
        "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"]},
    })
}

/// Every record under `dir`, each with its path relative to `dir`.
fn records(dir: &Path) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "jsonl") {
                let relative = path.strip_prefix(dir).unwrap().display().to_string();
                for line in std::fs::read_to_string(&path).unwrap().lines() {
                    found.push((relative.clone(), serde_json::from_str(line).unwrap()));
                }
            }
        }
    }
    found
}

/// The records under `dir` once `metric` (the written and dropped records the server
/// counted) reaches `wanted`.
fn settle(server: &Server, endpoint: &str, wanted: f64) {
    let started = Instant::now();
    loop {
        let metrics = server.metrics();
        let written = counter(
            &metrics,
            "plinth_data_capture_records_total",
            &[("endpoint", endpoint)],
        );
        let dropped = counter(
            &metrics,
            "plinth_data_capture_dropped_total",
            &[("endpoint", endpoint)],
        );
        if written + dropped >= wanted {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{written} written and {dropped} dropped of {wanted} captures after 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Records in SageMaker's format in S3, read with boto3's S3 client; capture turned off by
/// UpdateEndpoint; refusals by name.
#[test]
fn boto3_captures_to_s3_in_sagemakers_format() {
    let bucket = format!("capture-{}", std::process::id());
    let Some(python) = plinth_tests::venv_python("data_capture::boto3_captures_to_s3") else {
        return;
    };
    let Some(s3) = plinth_tests::s3::S3::shared("data_capture::boto3_captures_to_s3") else {
        return;
    };
    s3.create_bucket(&bucket);
    let server = Server::start_with(
        BIN,
        Options {
            env: s3.server_env(),
            args: vec!["--data-capture-roll-seconds".into(), "1".into()],
            ..Options::default()
        },
    );
    server.run_python(
        &python,
        "test_data_capture_boto3.py",
        &[
            [
                ("IRIS_WASM", IRIS_WASM),
                ("IRIS_MODEL_DIR", IRIS_MODEL_DIR),
            ]
            .as_slice(),
            &s3.python_env(&bucket),
        ]
        .concat(),
    );
}

/// Two variants sampled at 30 %: each captures within the binomial bound of the requests it
/// served, in its own folder, only the requests it served; input only, as configured.
#[test]
fn sampling_stays_within_its_binomial_bound_per_variant() {
    let out = tempfile::tempdir().unwrap();
    let server = server();
    iris(&server, "iris");
    iris(&server, "iris-2");
    server.call(
        "CreateEndpointConfig",
        json!({"EndpointConfigName": "sampled", "ProductionVariants": [
                {"VariantName": "A", "ModelName": "iris", "InitialInstanceCount": 1, "InitialVariantWeight": 1},
                {"VariantName": "B", "ModelName": "iris-2", "InitialInstanceCount": 1, "InitialVariantWeight": 1}],
               "DataCaptureConfig": capture(out.path(), 30, &["Input"])}),
    );
    let described = server.create_endpoint_settled("sampled", "sampled");
    assert_eq!(described["DataCaptureConfig"]["CaptureStatus"], "Started");
    assert_eq!(described["DataCaptureConfig"]["CurrentSamplingPercentage"], 30);
    let n = 1000;
    let mut served: HashMap<String, HashSet<String>> = HashMap::new();
    for i in 0..n {
        let id = format!("r{i}");
        let response = server.invoke(
            "sampled",
            "text/csv",
            ROW,
            &[("X-Amzn-SageMaker-Inference-Id", &id)],
        );
        assert_eq!(response.status(), 200);
        let variant =
            plinth_tests::header(&response, "x-amzn-invoked-production-variant").unwrap();
        served.entry(variant).or_default().insert(id);
    }
    // Every sampled capture is written (a second's roll): the files hold as many records as
    // the server counts written, and that count no longer changes.
    let sampled_metric = |v: &str| {
        counter(
            &server.metrics(),
            "plinth_data_capture_records_total",
            &[("endpoint", "sampled"), ("variant", v)],
        )
    };
    let started = Instant::now();
    let mut seen = (f64::NAN, Instant::now());
    let found = loop {
        let written = sampled_metric("A") + sampled_metric("B");
        if written != seen.0 {
            seen = (written, Instant::now());
        }
        let found = records(out.path());
        if found.len() as f64 == written && seen.1.elapsed() > Duration::from_secs(3) {
            break found;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{written} written, {} in files", found.len());
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut captured: HashMap<String, usize> = HashMap::new();
    for (path, record) in &found {
        let variant = path.split('/').nth(1).unwrap().to_string();
        assert!(path.starts_with("sampled/"), "{path}");
        let id = record["eventMetadata"]["inferenceId"].as_str().unwrap();
        assert!(
            served[&variant].contains(id),
            "{id} captured under {variant}, which did not serve it"
        );
        assert!(record["captureData"].get("endpointOutput").is_none());
        assert_eq!(record["captureData"]["endpointInput"]["data"], ROW);
        *captured.entry(variant).or_default() += 1;
    }
    for (variant, ids) in &served {
        let count = captured.get(variant).copied().unwrap_or(0);
        plinth_tests::assert_binomial(count, ids.len(), 0.3, &format!("variant {variant}"));
        assert_eq!(sampled_metric(variant), count as f64);
    }
    assert_eq!(served.len(), 2, "both variants served");
}

/// A destination that cannot be written (its directory replaced by a file) drops each
/// file's records, counted as `write_failed`; every request is still answered; capture
/// resumes when the destination is back.
#[test]
fn a_failing_destination_drops_captures_and_fails_no_request() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let server = server();
    iris(&server, "iris");
    server.call(
        "CreateEndpointConfig",
        json!({"EndpointConfigName": "failing", "ProductionVariants": [
                {"VariantName": "AllTraffic", "ModelName": "iris", "InitialInstanceCount": 1}],
               "DataCaptureConfig": capture(&out, 100, &["InputAndOutput"])}),
    );
    server.create_endpoint_settled("failing", "failing");
    std::fs::remove_dir(&out).unwrap();
    std::fs::write(&out, b"in the way").unwrap();
    for _ in 0..200 {
        let response = server.invoke("failing", "text/csv", ROW, &[]);
        assert_eq!(response.status(), 200);
    }
    settle(&server, "failing", 200.0);
    let metrics = server.metrics();
    let dropped = |reason: &str| {
        counter(
            &metrics,
            "plinth_data_capture_dropped_total",
            &[("endpoint", "failing"), ("reason", reason)],
        )
    };
    assert_eq!(dropped("write_failed"), 200.0);
    assert_eq!(dropped("queue_full"), 0.0);
    assert!(server
        .stderr()
        .contains("a data capture file could not be written"));

    std::fs::remove_file(&out).unwrap();
    std::fs::create_dir(&out).unwrap();
    for _ in 0..10 {
        assert_eq!(server.invoke("failing", "text/csv", ROW, &[]).status(), 200);
    }
    settle(&server, "failing", 210.0);
    assert_eq!(records(&out).len(), 10);
}

/// A file still open when the server is stopped (SIGTERM) is written before it exits.
#[test]
fn open_files_are_written_at_a_graceful_shutdown() {
    let out = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(
        BIN,
        Options {
            args: vec!["--data-capture-roll-seconds".into(), "3600".into()],
            ..Options::default()
        },
    );
    iris(&server, "iris");
    server.call(
        "CreateEndpointConfig",
        json!({"EndpointConfigName": "kept", "ProductionVariants": [
                {"VariantName": "AllTraffic", "ModelName": "iris", "InitialInstanceCount": 1}],
               "DataCaptureConfig": capture(out.path(), 100, &["Input", "Output"])}),
    );
    server.create_endpoint_settled("kept", "kept");
    for _ in 0..10 {
        assert_eq!(server.invoke("kept", "text/csv", ROW, &[]).status(), 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    // (A file also rolls when its hour ends: not checked across an hour's end.)
    let into_hour = plinth_tests::epoch_now() % 3600.0;
    if (5.0..3590.0).contains(&into_hour) {
        assert!(records(out.path()).is_empty(), "written before its roll");
    }
    let status = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    while server.is_running() {
        assert!(started.elapsed() < Duration::from_secs(30), "still running");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(records(out.path()).len(), 10);
}

/// What SageMaker refuses beside DataCaptureConfig, and a destination outside the roots.
#[test]
fn refused_combinations_are_named() {
    let out = tempfile::tempdir().unwrap();
    let server = server();
    iris(&server, "iris");
    server.call(
        "CreateModel",
        json!({"ModelName": "many", "PrimaryContainer": {"Image": IRIS_WASM, "Mode": "MultiModel",
               "ModelDataUrl": format!("{}/", PathBuf::from(IRIS_MODEL_DIR).parent().unwrap().display())}}),
    );
    let variant = json!({"VariantName": "AllTraffic", "ModelName": "iris", "InitialInstanceCount": 1});
    let good = capture(out.path(), 100, &["Input"]);
    let cases = [
        (
            json!({"ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "iris",
                   "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1}}],
                   "DataCaptureConfig": good}),
            "DataCaptureConfig cannot be given with a serverless variant",
        ),
        (
            json!({"ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "many", "InitialInstanceCount": 1}],
                   "DataCaptureConfig": good}),
            "DataCaptureConfig cannot be given with a multi-model variant",
        ),
        (
            json!({"ProductionVariants": [variant],
                   "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": out.path().display().to_string()}},
                   "DataCaptureConfig": good}),
            "DataCaptureConfig cannot be given with AsyncInferenceConfig",
        ),
        (
            json!({"ProductionVariants": [variant],
                   "DataCaptureConfig": capture(Path::new("/proc/self"), 100, &["Input"])}),
            "DataCaptureConfig.DestinationS3Uri",
        ),
        (
            json!({"ProductionVariants": [variant],
                   "DataCaptureConfig": {"InitialSamplingPercentage": 101, "DestinationS3Uri": "s3://b/c",
                                         "CaptureOptions": [{"CaptureMode": "Input"}]}}),
            "DataCaptureConfig.InitialSamplingPercentage",
        ),
        (
            json!({"ProductionVariants": [variant],
                   "DataCaptureConfig": {"InitialSamplingPercentage": 10, "DestinationS3Uri": "s3://b/c",
                                         "CaptureOptions": [{"CaptureMode": "Input"}],
                                         "CaptureContentTypeHeader": {"JsonContentTypes": []}}}),
            "JsonContentTypes lists 0 types",
        ),
    ];
    for (i, (mut input, fragment)) in cases.into_iter().enumerate() {
        input["EndpointConfigName"] = json!(format!("bad-{i}"));
        server.refused("CreateEndpointConfig", input, "ValidationException", &[fragment]);
    }
}
