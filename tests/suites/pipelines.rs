//! Inference pipelines (models with `Containers`) against the real server: the example
//! deployment file (`examples/pipeline/plinth.toml`: scaler -> iris -> labels, Serial and
//! Direct) through boto3, each container's effect checked and the chain compared with the
//! iris model alone; a failing, trapping or looping middle container fails only its own
//! request, naming the container, and only its instance is replaced; custom attributes pass
//! along the chain; per-container metrics; every bad input refused by name.

use std::path::Path;
use std::time::Duration;

use plinth_tests::metrics::{counter, of_variant};
use plinth_tests::{
    ApiError, Options, Server, ECHO_WASM, FAULTS_WASM, IRIS_MODEL_DIR, IRIS_WASM, LABELS_WASM,
    SCALER_WASM, WORKSPACE_ROOT,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");
const TARGET_CONTAINER: &str = "X-Amzn-SageMaker-Target-Container-Hostname";
const ATTRIBUTES: &str = "X-Amzn-SageMaker-Custom-Attributes";

fn pipeline_dir() -> String {
    Path::new(WORKSPACE_ROOT)
        .join("examples/pipeline")
        .display()
        .to_string()
}

/// The example deployment file's endpoints (`iris-pipeline`, Serial; `iris-direct`,
/// Direct), served.
fn example_server() -> Server {
    let config = Path::new(WORKSPACE_ROOT).join("examples/pipeline/plinth.toml");
    Server::start_with(
        BIN,
        Options {
            args: vec!["--config".into(), config.display().to_string()],
            ..Options::default()
        },
    )
}

/// An endpoint `name` of one variant (`AllTraffic`, one instance) serving model `model`.
fn endpoint(server: &Server, name: &str, model: &str) {
    server.create_config(&format!("{name}-config"), &[("AllTraffic", model, 1)]);
    server.create_endpoint_settled(name, &format!("{name}-config"));
    server.wait_in_service(name, Duration::from_secs(60));
}

/// The example's endpoints through unmodified boto3, with an iris endpoint to compare with.
#[test]
fn boto3_serial_and_direct_pipelines_answer_with_each_containers_effect() {
    let Some(python) = plinth_tests::venv_python(
        "boto3_serial_and_direct_pipelines_answer_with_each_containers_effect",
    ) else {
        return;
    };
    let server = Server::start_with(BIN, Options::default());
    let dir = pipeline_dir();
    server.run_python(
        &python,
        "test_pipeline_boto3.py",
        &[
            ("SCALER_WASM", SCALER_WASM),
            ("IRIS_WASM", IRIS_WASM),
            ("LABELS_WASM", LABELS_WASM),
            ("PIPELINE_DIR", &dir),
            ("IRIS_MODEL_DIR", IRIS_MODEL_DIR),
        ],
    );
}

/// The deployment file expresses both modes; a Serial request runs every container once
/// and a Direct one only the container it names, each counted under its hostname.
#[test]
fn the_example_file_serves_both_modes_and_counts_each_container() {
    let server = example_server();
    server.wait_in_service("iris-pipeline", Duration::from_secs(60));
    server.wait_in_service("iris-direct", Duration::from_secs(60));
    for _ in 0..5 {
        let answer = server.invoke("iris-pipeline", "text/csv", "5.1,3.5,1.4,0.2", &[]);
        assert_eq!(answer.status(), StatusCode::OK);
        let body: Value = answer.json().unwrap();
        assert_eq!(body["predictions"][0]["label"], "setosa", "{body}");
    }
    let answer = server.invoke(
        "iris-direct",
        "text/csv",
        "0.1,0.2,0.7",
        &[(TARGET_CONTAINER, "labels")],
    );
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        answer.text().unwrap(),
        r#"{"predictions":[{"label":"virginica","probability":0.7}]}"#
    );
    let metrics = server.metrics();
    let of = |endpoint: &str, container: &str, name: &str| {
        let [e, v] = of_variant(endpoint, "AllTraffic");
        counter(&metrics, name, &[e, v, ("container", container)])
    };
    for container in ["scaler", "model", "labels"] {
        assert_eq!(
            of("iris-pipeline", container, "plinth_container_invocations_total"),
            5.0,
            "{container}"
        );
        assert_eq!(
            of(
                "iris-pipeline",
                container,
                "plinth_container_latency_seconds_count"
            ),
            5.0,
            "{container}"
        );
    }
    assert_eq!(
        of("iris-direct", "labels", "plinth_container_invocations_total"),
        1.0
    );
    assert_eq!(
        of("iris-direct", "scaler", "plinth_container_invocations_total"),
        0.0
    );
    // The chain is one variant: its invocations are counted once.
    let [e, v] = of_variant("iris-pipeline", "AllTraffic");
    assert_eq!(counter(&metrics, "plinth_invocations_total", &[e, v]), 5.0);
}

/// echo -> faults -> echo: a model error, a trap and a timeout in the middle container each
/// fail only their own request, naming `middle`; the next request is served; only the
/// trapping and looping container's instance is replaced. Custom attributes pass along.
#[test]
fn a_failing_middle_container_fails_only_its_request_and_is_named() {
    let server = Server::start_with(BIN, Options::default());
    server.call(
        "CreateModel",
        json!({
            "ModelName": "chain",
            "Containers": [
                {"ContainerHostname": "pre", "Image": ECHO_WASM},
                {"ContainerHostname": "middle", "Image": FAULTS_WASM},
                {"ContainerHostname": "post", "Image": ECHO_WASM},
            ],
            "PlinthLimits": {"InvocationTimeoutInSeconds": 1},
        }),
    );
    endpoint(&server, "chain", "chain");
    let ok = |attributes: &str| {
        let answer = server.invoke("chain", "text/plain", "x", &[(ATTRIBUTES, attributes)]);
        assert_eq!(answer.status(), StatusCode::OK);
        // The attributes went through all three containers and came back.
        assert_eq!(answer.headers()[ATTRIBUTES], attributes);
        assert_eq!(answer.text().unwrap(), "ok");
    };
    ok("first");
    for (fault, fragment) in [
        ("model-error", "deliberate model error"),
        ("panic", "crashed"),
        ("loop", "timed out"),
    ] {
        let e = ApiError::from_response(server.invoke(
            "chain",
            "text/plain",
            "x",
            &[(ATTRIBUTES, fault)],
        ));
        assert_eq!(
            (e.status, e.code.as_str()),
            (StatusCode::FAILED_DEPENDENCY, "ModelError"),
            "{fault}: {}",
            e.body
        );
        assert!(
            e.message.contains("from middle") && e.message.contains(fragment),
            "{fault}: {}",
            e.message
        );
        ok("again");
    }
    let metrics = server.metrics();
    let [e, v] = of_variant("chain", "AllTraffic");
    // The trap's and the timeout's instance, both the middle container's.
    assert_eq!(
        plinth_tests::metrics::sample(&metrics, "plinth_variant_instances_replaced", &[e, v]),
        Some(2.0)
    );
    let middle = |name: &str| counter(&metrics, name, &[e, v, ("container", "middle")]);
    assert_eq!(middle("plinth_container_invocation_4xx_errors_total"), 0.0);
    assert_eq!(middle("plinth_container_invocation_5xx_errors_total"), 3.0);
    let post = counter(
        &metrics,
        "plinth_container_invocations_total",
        &[e, v, ("container", "post")],
    );
    assert_eq!(post, 4.0, "post ran only for the requests the middle answered");
}

/// Every bad pipeline is refused by name, and the server keeps serving.
#[test]
fn bad_pipelines_are_refused_by_name() {
    let server = Server::start_with(BIN, Options::default());
    let container = |host: Option<&str>| {
        let mut c = json!({"Image": ECHO_WASM});
        if let Some(h) = host {
            c["ContainerHostname"] = json!(h);
        }
        c
    };
    let model = |containers: Vec<Value>| json!({"ModelName": "p", "Containers": containers});
    let refused = |input: Value, fragments: &[&str]| {
        server.refused("CreateModel", input, "ValidationException", fragments);
    };
    refused(
        model(vec![container(None)]),
        &["Containers has 1", "2 to 15"],
    );
    refused(
        model(vec![container(None); 16]),
        &["Containers has 16"],
    );
    refused(
        model(vec![container(Some("a")), container(Some("A"))]),
        &["Containers[1].ContainerHostname", "unique"],
    );
    refused(
        model(vec![container(Some("a")), container(None)]),
        &["1 of 2", "every container"],
    );
    refused(
        model(vec![container(Some("-a")), container(Some("b"))]),
        &["Containers[0].ContainerHostname"],
    );
    let mut unknown = model(vec![container(None), container(None)]);
    unknown["InferenceExecutionConfig"] = json!({"Mode": "Parallel"});
    refused(unknown, &["InferenceExecutionConfig.Mode", "Parallel"]);
    refused(
        json!({"ModelName": "p", "PrimaryContainer": {"Image": ECHO_WASM}, "Containers": [container(None), container(None)]}),
        &["PrimaryContainer or Containers, not both"],
    );
    refused(
        json!({"ModelName": "p", "PrimaryContainer": {"Image": ECHO_WASM}, "InferenceExecutionConfig": {"Mode": "Direct"}}),
        &["InferenceExecutionConfig applies only"],
    );
    refused(
        model(vec![
            container(None),
            json!({"Image": ECHO_WASM, "Mode": "MultiModel", "ModelDataUrl": WORKSPACE_ROOT}),
        ]),
        &["Containers[1].Mode"],
    );
    refused(
        model(vec![container(None), json!({"Image": "/nowhere/x.wasm"})]),
        &["Containers[1].Image"],
    );
    refused(
        json!({"ModelName": "p"}),
        &["PrimaryContainer or Containers is required"],
    );

    // A Direct model as a serverless variant or a shadow; in a transform job.
    let mut direct = model(vec![container(Some("a")), container(Some("b"))]);
    direct["ModelName"] = json!("direct");
    direct["InferenceExecutionConfig"] = json!({"Mode": "Direct"});
    server.call("CreateModel", direct);
    server.create_model("single", ECHO_WASM, json!({}));
    server.refused(
        "CreateEndpointConfig",
        json!({"EndpointConfigName": "c", "ProductionVariants": [{
            "VariantName": "A", "ModelName": "direct",
            "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
        }]}),
        "ValidationException",
        &["ProductionVariants[0]", "serverless"],
    );
    server.refused(
        "CreateEndpointConfig",
        json!({"EndpointConfigName": "c",
            "ProductionVariants": [{"VariantName": "A", "ModelName": "single", "InitialInstanceCount": 1}],
            "ShadowProductionVariants": [{"VariantName": "S", "ModelName": "direct", "InitialInstanceCount": 1}],
        }),
        "ValidationException",
        &["ShadowProductionVariants[0]", "direct invocation"],
    );
    server.refused(
        "CreateTransformJob",
        json!({
            "TransformJobName": "t", "ModelName": "direct",
            "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": WORKSPACE_ROOT}}},
            "TransformOutput": {"S3OutputPath": std::env::temp_dir().display().to_string()},
            "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        }),
        "ValidationException",
        &["direct invocation"],
    );
    // Requests: a hostname on a single model; the header too long.
    endpoint(&server, "single", "single");
    let e = ApiError::from_response(server.invoke(
        "single",
        "text/plain",
        "x",
        &[(TARGET_CONTAINER, "a")],
    ));
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert!(e.message.contains("single container"), "{}", e.message);
    let long = "a".repeat(64);
    let e = ApiError::from_response(server.invoke(
        "single",
        "text/plain",
        "x",
        &[(TARGET_CONTAINER, &long)],
    ));
    assert!(e.message.contains("TargetContainerHostname"), "{}", e.message);
    assert_eq!(
        server.invoke("single", "text/plain", "x", &[]).status(),
        StatusCode::OK
    );
}

/// A Serial pipeline is one unit wherever a model goes: a transform job's model (every row
/// through the three containers, as InvokeEndpoint answers it), a shadow variant (its copies
/// compared with production's iris), an asynchronous endpoint's, and an endpoint restored
/// after kill -9.
#[test]
fn a_serial_pipeline_serves_a_transform_job_a_shadow_async_jobs_and_a_restart() {
    let server = example_server();
    server.wait_in_service("iris-pipeline", Duration::from_secs(60));
    let rows = ["5.1,3.5,1.4,0.2", "6.7,3.0,5.2,2.3", "5.9,3.0,4.2,1.5"];
    let synchronous: Vec<String> = rows
        .iter()
        .map(|row| {
            let answer = server.invoke("iris-pipeline", "text/csv", *row, &[]);
            assert_eq!(answer.status(), StatusCode::OK);
            answer.text().unwrap()
        })
        .collect();

    // Batch transform: one line per row, answered as InvokeEndpoint answers it.
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&output).unwrap();
    std::fs::write(input.join("rows.csv"), rows.join("\n") + "\n").unwrap();
    server.call(
        "CreateTransformJob",
        json!({
            "TransformJobName": "through-the-pipeline",
            "ModelName": "iris-pipeline",
            "BatchStrategy": "SingleRecord",
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input.display().to_string()}},
                "ContentType": "text/csv",
                "SplitType": "Line",
            },
            "TransformOutput": {"S3OutputPath": output.display().to_string(), "AssembleWith": "Line"},
            "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        }),
    );
    let start = std::time::Instant::now();
    loop {
        let d = server.call(
            "DescribeTransformJob",
            json!({"TransformJobName": "through-the-pipeline"}),
        );
        match d["TransformJobStatus"].as_str() {
            Some("Completed") => break,
            Some("InProgress") => {}
            _ => panic!("the job did not complete: {d}"),
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{d}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let written = std::fs::read_to_string(output.join("rows.csv.out")).unwrap();
    assert_eq!(written.lines().collect::<Vec<_>>(), synchronous);

    // A shadow: the pipeline beside production's iris gets a copy of every request.
    server.call(
        "CreateModel",
        json!({"ModelName": "iris", "PrimaryContainer": {"Image": IRIS_WASM, "ModelDataUrl": IRIS_MODEL_DIR}}),
    );
    server.call(
        "CreateEndpointConfig",
        json!({
            "EndpointConfigName": "shadowed",
            "ProductionVariants": [{"VariantName": "iris", "ModelName": "iris", "InitialInstanceCount": 1}],
            "ShadowProductionVariants": [{"VariantName": "chain", "ModelName": "iris-pipeline", "InitialInstanceCount": 1}],
        }),
    );
    server.create_endpoint_settled("shadowed", "shadowed");
    for row in rows {
        let answer = server.invoke("shadowed", "text/csv", row, &[]);
        assert_eq!(answer.status(), StatusCode::OK);
    }
    let start = std::time::Instant::now();
    loop {
        let metrics = server.metrics();
        let [e, v] = of_variant("shadowed", "chain");
        let served = counter(
            &metrics,
            "plinth_container_invocations_total",
            &[e, v, ("container", "labels")],
        );
        if served == rows.len() as f64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the shadow pipeline served {served} copies"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Asynchronous inference: a job through the pipeline writes what InvokeEndpoint answers.
    let results = dir.path().join("async");
    std::fs::create_dir_all(&results).unwrap();
    server.call(
        "CreateEndpointConfig",
        json!({
            "EndpointConfigName": "queued",
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "iris-pipeline", "InitialInstanceCount": 1}],
            "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": results.display().to_string()}},
        }),
    );
    server.create_endpoint_settled("queued", "queued");
    let job = dir.path().join("job.csv");
    std::fs::write(&job, rows[1]).unwrap();
    let accepted = server
        .client()
        .post(format!("{}/endpoints/queued/async-invocations", server.url()))
        .header("X-Amzn-SageMaker-InputLocation", job.display().to_string())
        .header("X-Amzn-SageMaker-Content-Type", "text/csv")
        .send()
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let output = plinth_tests::header(&accepted, "x-amzn-sagemaker-outputlocation").unwrap();
    let start = std::time::Instant::now();
    while !Path::new(&output).exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "no output at {output}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(&output).unwrap(), synchronous[1]);

    // kill -9: the pipeline endpoint comes back and answers the same.
    let server = server.kill_and_restart().unwrap();
    server.wait_in_service("iris-pipeline", Duration::from_secs(60));
    let again = server.invoke("iris-pipeline", "text/csv", rows[0], &[]);
    assert_eq!(again.text().unwrap(), synchronous[0]);
}

/// `Accept` along a chain of two echo containers (echo refuses an `Accept` other than its
/// request's content type): the request's goes to the last container only; the first is
/// asked for what its `SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT` sets.
#[test]
fn each_container_is_asked_for_what_its_environment_sets_and_the_last_for_the_requests() {
    let server = Server::start_with(BIN, Options::default());
    let chain = |name: &str, first_accepts: &str| {
        server.call(
            "CreateModel",
            json!({
                "ModelName": name,
                "Containers": [
                    {"ContainerHostname": "first", "Image": ECHO_WASM,
                     "Environment": {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": first_accepts}},
                    {"ContainerHostname": "last", "Image": ECHO_WASM},
                ],
            }),
        );
        endpoint(&server, name, name);
    };
    chain("plain", "text/plain");
    chain("json", "application/json");
    let send = |endpoint: &str, accept: &str| {
        server.invoke(endpoint, "text/plain", "hello", &[("Accept", accept)])
    };
    // The first container answers text/plain as asked; the last gets the request's Accept.
    let answer = send("plain", "text/plain");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().unwrap(), "hello");
    let e = ApiError::from_response(send("plain", "application/json"));
    assert_eq!(e.code, "ModelError", "{}", e.body);
    assert!(e.message.contains("from last"), "{}", e.message);
    // The first container is asked for JSON by its environment, whatever the request asks.
    let e = ApiError::from_response(send("json", "text/plain"));
    assert!(e.message.contains("from first"), "{}", e.message);
    assert_eq!(e.body["OriginalStatusCode"], 406, "{}", e.body);
}
