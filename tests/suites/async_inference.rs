//! Asynchronous inference (`AsyncInferenceConfig`, InvokeEndpointAsync) against the real
//! server: boto3 end to end against the S3 test server (inputs in S3, answers compared with
//! synchronous ones, a failing input at its failure location with the model's message), and
//! the durable queue across kill -9 (every accepted job ends with exactly one output or
//! failure object, none lost, none partial).

use std::path::Path;
use std::time::{Duration, Instant};

use plinth_tests::s3::S3;
use plinth_tests::{Options, Server, FAULTS_WASM, IRIS_MODEL_DIR, IRIS_WASM};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

#[test]
fn boto3_async_with_s3_matches_synchronous_answers() {
    let Some(python) =
        plinth_tests::venv_python("boto3_async_with_s3_matches_synchronous_answers")
    else {
        return;
    };
    let Some(s3) = S3::shared("async_inference::boto3_async_with_s3") else {
        return;
    };
    let bucket = format!("async-{}", std::process::id());
    s3.create_bucket(&bucket);
    let server = Server::start_with(
        BIN,
        Options {
            env: s3.server_env(),
            ..Options::default()
        },
    );
    server.run_python(
        &python,
        "test_async_boto3.py",
        &[
            ("IRIS_WASM", IRIS_WASM),
            ("IRIS_MODEL_DIR", IRIS_MODEL_DIR),
            ("BUCKET", &bucket),
            ("S3_ENDPOINT", &s3.endpoint),
            ("S3_ACCESS_KEY_ID", &s3.access_key_id),
            ("S3_SECRET_ACCESS_KEY", &s3.secret_access_key),
        ],
    );
}

/// The inference ids with an output (`<id>.out`) and with a failure (`<id>-error.out`) in
/// `dir`, and any other file (a partial one would be).
fn results(dir: &Path) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut outputs, mut failures, mut other) = (Vec::new(), Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix("-error.out") {
            failures.push(id.to_string());
        } else if let Some(id) = name.strip_suffix(".out") {
            outputs.push(id.to_string());
        } else {
            other.push(name);
        }
    }
    (outputs, failures, other)
}

/// 120 jobs of 25 ms each, one at a time; the server killed (-9) twice while they run and
/// started again on the same data: every job accepted ends with exactly one output (the
/// model's answer, whole), none with a failure, none lost.
#[test]
fn queued_jobs_survive_kill_9_and_each_ends_once() {
    let work = tempfile::tempdir().unwrap();
    let (input, out) = (work.path().join("input.txt"), work.path().join("out"));
    std::fs::write(&input, "hello").unwrap();
    std::fs::create_dir(&out).unwrap();
    let server = Server::start_with(BIN, Options::default());
    server.create_model("slow", FAULTS_WASM, json!({ "FAULT_DELAY_MS": "25" }));
    server.call(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": "queue", "ProductionVariants": [{
                    "VariantName": "AllTraffic", "ModelName": "slow", "InitialInstanceCount": 1 }],
                "AsyncInferenceConfig": {
                    "ClientConfig": { "MaxConcurrentInvocationsPerInstance": 1 },
                    "OutputConfig": { "S3OutputPath": out.display().to_string() } } }),
    );
    let described = server.create_endpoint_settled("queue", "queue");
    assert_eq!(
        described["AsyncInferenceConfig"]["ClientConfig"]["MaxConcurrentInvocationsPerInstance"],
        1,
        "{described}"
    );
    let jobs = 120;
    let mut ids = Vec::new();
    let accept = |id: &str| {
        let response = server
            .client()
            .post(format!("{}/endpoints/queue/async-invocations", server.url()))
            .header("X-Amzn-SageMaker-InputLocation", input.display().to_string())
            .header("X-Amzn-SageMaker-Content-Type", "text/plain")
            .header("X-Amzn-SageMaker-Inference-Id", id)
            .send()
            .unwrap();
        let location = plinth_tests::header(&response, "x-amzn-sagemaker-outputlocation");
        assert_eq!(response.status(), 202, "{}", response.text().unwrap());
        // Objects are named by a fresh id: `<S3OutputPath>/<object>.out`.
        let location = location.expect("an OutputLocation");
        let name = location
            .strip_prefix(&format!("{}/", out.display()))
            .and_then(|n| n.strip_suffix(".out"))
            .unwrap_or_else(|| panic!("{location}"))
            .to_string();
        name
    };
    for i in 0..jobs - 1 {
        ids.push(accept(&format!("job-{i}")));
    }
    // An InferenceId given twice is two requests, each with its own objects.
    ids.push(accept("job-0"));
    assert_ne!(ids[0], ids[jobs - 1]);

    let mut server = server;
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(700));
        let done = results(&out).0.len();
        assert!(done < jobs, "the kill must come while jobs run ({done} done)");
        server = server.kill_and_restart().expect("restart");
    }
    let start = Instant::now();
    loop {
        let (outputs, failures, _) = results(&out);
        if outputs.len() + failures.len() >= jobs {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} of {jobs} done",
            outputs.len() + failures.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (mut outputs, failures, _) = results(&out);
    outputs.sort();
    ids.sort();
    assert_eq!(outputs, ids, "every job has its output");
    assert!(failures.is_empty(), "{failures:?}");
    for id in &ids {
        let body = std::fs::read_to_string(out.join(format!("{id}.out"))).unwrap();
        assert_eq!(body, "ok", "{id}");
    }
    drop(server);
}
