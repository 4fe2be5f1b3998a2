//! The SageMaker runtime API of the real `plinth serve`, end to end: the iris model through
//! CSV, JSON and NPY; response headers; every kind of bad input with its status and error
//! code; the payload limit; guests that panic, spin or exhaust memory fail only their own
//! request; the sandbox (environment, read-only model dir, no host files, no network); and
//! concurrent requests. (An unknown endpoint or TargetVariant is a fixture case:
//! `tests/cases/InvokeEndpoint/`.)
//!
//! Each test starts its own server on `127.0.0.1:0` (see `plinth_tests::Server`).

use std::time::Duration;

use plinth_tests::{
    header, npy_f32, parse_npy_f32, ApiError, Config, Model, Server, StatusCode, Variant,
    CUSTOM_ATTRIBUTES, ECHO_WASM, FAULTS_WASM, IRIS_MODEL_DIR,
};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// Known iris samples and their species.
const SETOSA: [f32; 4] = [5.1, 3.5, 1.4, 0.2];
const VIRGINICA: [f32; 4] = [6.7, 3.0, 5.2, 2.3];
const VERSICOLOR: [f32; 4] = [5.9, 3.0, 4.2, 1.5];
const LABELS: [&str; 3] = ["setosa", "virginica", "versicolor"];

fn iris_server(instances: u32) -> Server {
    Server::start(
        BIN,
        &Config::new()
            .endpoint(Model::iris("iris"), instances)
            .to_toml(),
    )
}

fn csv_rows(rows: &[[f32; 4]]) -> String {
    rows.iter()
        .map(|r| r.map(|v| v.to_string()).join(","))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The labels of an iris JSON answer, after checking its shape.
fn json_labels(response: plinth_tests::Response) -> Vec<String> {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/json")
    );
    let body: serde_json::Value = response.json().expect("JSON body");
    let predictions = body["predictions"]
        .as_array()
        .unwrap_or_else(|| panic!("no predictions array in {body}"));
    predictions
        .iter()
        .map(|p| {
            let label = p["label"].as_str().expect("label").to_owned();
            let probabilities = p["probabilities"].as_array().expect("probabilities");
            assert_eq!(probabilities.len(), 3, "{p}");
            let class = p["class_index"].as_u64().expect("class_index") as usize;
            assert_eq!(["setosa", "versicolor", "virginica"][class], label, "{p}");
            label
        })
        .collect()
}

/// Expects a 424 `ModelError` whose `OriginalStatusCode` is `original`.
fn model_error(response: plinth_tests::Response, original: u64) -> ApiError {
    let e = ApiError::from_response(response);
    assert_eq!(e.status, StatusCode::FAILED_DEPENDENCY, "{}", e.body);
    assert_eq!(e.code, "ModelError", "{}", e.body);
    assert_eq!(e.original_status(), Some(original), "{}", e.body);
    e
}

/// Expects a client error (4xx from the guest) answered the SageMaker way.
fn guest_client_error(response: plinth_tests::Response, original: u64, fragment: &str) {
    let e = model_error(response, original);
    let original_message = e.original_message().unwrap_or_else(|| {
        panic!("no OriginalMessage in {}", e.body);
    });
    assert!(
        original_message.contains(fragment),
        "OriginalMessage {original_message:?} lacks {fragment:?}"
    );
    // SageMaker's wording: `Received client error (400) from <container> with message "..."`.
    // Which name follows "from" (the model, the variant) is the server's choice.
    let prefix = format!("Received client error ({original}) from ");
    let quoted = format!(" with message \"{original_message}\"");
    assert!(
        e.message.starts_with(&prefix) && e.message.contains(&quoted),
        "message {:?} is not `{prefix}<name>{quoted}`",
        e.message
    );
}

#[test]
fn ping() {
    let server = iris_server(1);
    let response = server.ping();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().unwrap().is_empty());
}

#[test]
fn iris_predicts_from_csv_json_and_npy() {
    let server = iris_server(1);
    let rows = [SETOSA, VIRGINICA, VERSICOLOR];

    // One CSV row, then several.
    let one = server.invoke("iris", "text/csv", csv_rows(&[SETOSA]), &[]);
    assert_eq!(json_labels(one), ["setosa"]);
    let many = server.invoke("iris", "text/csv", csv_rows(&rows) + "\n", &[]);
    assert_eq!(json_labels(many), LABELS);

    // JSON: a nested array, a flat array (one row) and {"instances": ...}.
    let nested = serde_json::to_string(&rows).unwrap();
    let r = server.invoke("iris", "application/json", nested.clone(), &[]);
    assert_eq!(json_labels(r), LABELS);
    let flat = serde_json::to_string(&VERSICOLOR).unwrap();
    let r = server.invoke("iris", "application/json", flat, &[]);
    assert_eq!(json_labels(r), ["versicolor"]);
    let instances = format!("{{\"instances\": {nested}}}");
    let r = server.invoke("iris", "application/json", instances, &[]);
    assert_eq!(json_labels(r), LABELS);

    // NPY, float32, shape (3, 4).
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let r = server.invoke("iris", "application/x-npy", npy_f32(&flat, &[3, 4]), &[]);
    assert_eq!(json_labels(r), LABELS);
}

#[test]
fn iris_answers_in_the_accepted_type() {
    let server = iris_server(1);
    let body = csv_rows(&[SETOSA, VIRGINICA, VERSICOLOR]);

    let r = server.invoke("iris", "text/csv", body.clone(), &[("Accept", "text/csv")]);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type").as_deref(), Some("text/csv"));
    let text = r.text().unwrap();
    let labels: Vec<&str> = text.lines().map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(labels, LABELS, "CSV answer {text:?}");
    assert!(text.lines().all(|l| l.split(',').count() == 4), "{text:?}");

    let r = server.invoke(
        "iris",
        "text/csv",
        body.clone(),
        &[("Accept", "application/x-npy")],
    );
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/x-npy")
    );
    let (probabilities, shape) = parse_npy_f32(&r.bytes().unwrap());
    assert_eq!(shape, [3, 3]);
    let argmax: Vec<usize> = probabilities
        .chunks(3)
        .map(|row| {
            let sum: f32 = row.iter().sum();
            assert!(
                (sum - 1.0).abs() < 1e-3,
                "probabilities {row:?} do not sum to 1"
            );
            (0..3).fold(0, |b, i| if row[i] > row[b] { i } else { b })
        })
        .collect();
    assert_eq!(argmax, [0, 2, 1]);

    // */* and no Accept at all: JSON.
    let r = server.invoke("iris", "text/csv", body.clone(), &[("Accept", "*/*")]);
    assert_eq!(json_labels(r), LABELS);
    let r = server.invoke("iris", "text/csv", body, &[]);
    assert_eq!(json_labels(r), LABELS);
}

#[test]
fn response_headers() {
    let config = Config::new()
        .endpoint(Model::iris("iris"), 1)
        .endpoint(Model::new("echo", ECHO_WASM), 1);
    let server = Server::start(BIN, &config.to_toml());
    let body = csv_rows(&[SETOSA]);

    let r = server.invoke(
        "iris",
        "text/csv",
        body.clone(),
        &[("X-Amzn-SageMaker-Inference-Id", "req-1234")],
    );
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "x-Amzn-Invoked-Production-Variant").as_deref(),
        Some("AllTraffic")
    );
    assert_eq!(
        header(&r, "X-Amzn-SageMaker-Inference-Id").as_deref(),
        Some("req-1234")
    );
    assert_eq!(
        header(&r, CUSTOM_ATTRIBUTES),
        None,
        "iris sets no attributes"
    );

    // Without an inference id the server makes one up, a different one each time.
    let a = server.invoke("iris", "text/csv", body.clone(), &[]);
    let b = server.invoke("iris", "text/csv", body.clone(), &[]);
    let a = header(&a, "X-Amzn-SageMaker-Inference-Id").expect("generated inference id");
    let b = header(&b, "X-Amzn-SageMaker-Inference-Id").expect("generated inference id");
    assert!(!a.is_empty());
    assert_ne!(a, b);

    // Naming the variant that exists works.
    let r = server.invoke(
        "iris",
        "text/csv",
        body,
        &[("X-Amzn-SageMaker-Target-Variant", "AllTraffic")],
    );
    assert_eq!(
        header(&r, "x-Amzn-Invoked-Production-Variant").as_deref(),
        Some("AllTraffic")
    );
    assert_eq!(json_labels(r), ["setosa"]);

    // Custom attributes come back when the guest sets them (echo does), and only then.
    let r = server.invoke(
        "echo",
        "application/octet-stream",
        b"hello".to_vec(),
        &[(CUSTOM_ATTRIBUTES, "trace-id=abc,flag")],
    );
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, CUSTOM_ATTRIBUTES).as_deref(),
        Some("trace-id=abc,flag")
    );
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(r.bytes().unwrap().as_ref(), b"hello");

    let r = server.invoke("echo", "text/plain", b"hi".to_vec(), &[]);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, CUSTOM_ATTRIBUTES), None);
    assert_eq!(header(&r, "content-type").as_deref(), Some("text/plain"));
    assert_eq!(r.text().unwrap(), "hi");
}

#[test]
fn bad_inputs_are_client_errors_from_the_model() {
    let server = iris_server(1);
    let bad_csv = server.invoke("iris", "text/csv", "5.1,abc,1.4,0.2", &[]);
    guest_client_error(bad_csv, 400, "not a number");

    let bad_json = server.invoke("iris", "application/json", "[[5.1, 3.5,", &[]);
    guest_client_error(bad_json, 400, "invalid JSON");

    let three_columns = server.invoke("iris", "text/csv", "5.1,3.5,1.4", &[]);
    guest_client_error(three_columns, 400, "expected 4 features per row");

    let bad_npy = server.invoke("iris", "application/x-npy", "not npy", &[]);
    guest_client_error(bad_npy, 400, "invalid NPY body");

    let empty = server.invoke("iris", "text/csv", "", &[]);
    guest_client_error(empty, 400, "empty");

    let text = server.invoke("iris", "text/plain", "5.1,3.5,1.4,0.2", &[]);
    guest_client_error(text, 415, "text/plain");

    let html = server.invoke(
        "iris",
        "text/csv",
        "5.1,3.5,1.4,0.2",
        &[("Accept", "text/html")],
    );
    guest_client_error(html, 406, "text/html");

    // The endpoint still serves.
    let r = server.invoke("iris", "text/csv", "5.1,3.5,1.4,0.2", &[]);
    assert_eq!(json_labels(r), ["setosa"]);
}

#[test]
fn payload_limit_is_enforced_before_the_guest() {
    let config = Config::new()
        .max_payload_bytes(1024)
        .endpoint(Model::new("echo", ECHO_WASM), 1);
    let server = Server::start(BIN, &config.to_toml());

    let at_limit = vec![b'a'; 1024];
    let r = server.invoke("echo", "application/octet-stream", at_limit.clone(), &[]);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().unwrap().as_ref(), at_limit.as_slice());

    let over = vec![b'a'; 1025];
    let e = ApiError::from_response(server.invoke("echo", "application/octet-stream", over, &[]));
    assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", e.body);
    assert_eq!(e.code, "ValidationError");
    assert!(
        e.message.contains("exceeds") && e.message.contains("1024"),
        "message {:?} should say the body exceeds 1024 bytes",
        e.message
    );

    let r = server.invoke("echo", "application/octet-stream", vec![b'b'; 10], &[]);
    assert_eq!(r.status(), StatusCode::OK);
}

/// A faults endpoint named `faults`; `model` sets its limits.
fn faults_server(model: Model) -> Server {
    Server::start(BIN, &Config::new().endpoint(model, 1).to_toml())
}

fn fault(server: &Server, which: &str) -> plinth_tests::Response {
    server.invoke("faults", "text/plain", "x", &[(CUSTOM_ATTRIBUTES, which)])
}

/// After a failure the same endpoint answers the next request normally, and `/ping` is 200.
fn still_serves(server: &Server) {
    let r = server.invoke("faults", "text/plain", "fine", &[]);
    assert_eq!(r.status(), StatusCode::OK, "the endpoint did not recover");
    assert_eq!(r.text().unwrap(), "ok");
    assert_eq!(server.ping().status(), StatusCode::OK);
}

#[test]
fn a_panic_fails_only_its_own_request_and_is_logged() {
    let server = faults_server(Model::new("faults", FAULTS_WASM));
    let e = model_error(
        server.invoke(
            "faults",
            "text/plain",
            "x",
            &[
                (CUSTOM_ATTRIBUTES, "panic"),
                ("X-Amzn-SageMaker-Inference-Id", "panicking-request-1"),
            ],
        ),
        500,
    );
    assert!(e.message.contains("the model crashed"), "{:?}", e.message);
    assert!(
        e.message.contains("fault plugin: deliberate panic"),
        "{:?}",
        e.message
    );
    still_serves(&server);
    // Once more: the replaced instance is healthy too.
    model_error(fault(&server, "panic"), 500);
    still_serves(&server);

    // At the default log level: the guest's own panic line, and the request's failure, each
    // name the endpoint, the variant and the request's inference id.
    let names_the_request = |l: &str| {
        l.contains("endpoint=faults")
            && l.contains("variant=AllTraffic")
            && l.contains("inference_id=panicking-request-1")
    };
    let logged = server.wait_for_stderr(Duration::from_secs(5), |log| {
        log.lines().any(|l| {
            names_the_request(l)
                && l.contains("plinth::guest")
                && l.contains("fault plugin: deliberate panic")
        }) && log
            .lines()
            .any(|l| names_the_request(l) && l.contains("invocation failed"))
    });
    if let Err(log) = logged {
        panic!(
            "no stderr lines name the endpoint, the variant and the inference id with the \
             panic text and the failure:\n{log}"
        );
    }
}

#[test]
fn an_endless_loop_times_out() {
    let server = faults_server(Model::new("faults", FAULTS_WASM).timeout_seconds(1));
    let started = std::time::Instant::now();
    let e = model_error(fault(&server, "loop"), 0);
    assert!(e.message.contains("timed out"), "{:?}", e.message);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a 1 s timeout took {:?}",
        started.elapsed()
    );
    still_serves(&server);
}

#[test]
fn running_out_of_memory_fails_only_its_own_request() {
    let server = faults_server(Model::new("faults", FAULTS_WASM).memory_mib(32));
    let e = model_error(fault(&server, "oom"), 500);
    assert!(e.message.contains("the model crashed"), "{:?}", e.message);
    assert!(e.message.contains("memory"), "{:?}", e.message);
    still_serves(&server);
}

#[test]
fn model_errors_and_bad_output() {
    let server = faults_server(Model::new("faults", FAULTS_WASM));

    let e = model_error(fault(&server, "model-error"), 500);
    assert_eq!(
        e.original_message(),
        Some("fault plugin: deliberate model error"),
        "{}",
        e.body
    );
    assert!(
        e.message.contains("Received server error (500)")
            && e.message.contains("fault plugin: deliberate model error"),
        "{:?}",
        e.message
    );

    guest_client_error(
        fault(&server, "bad-request"),
        400,
        "fault plugin: deliberate bad request",
    );

    let e = model_error(fault(&server, "bad-output"), 500);
    assert!(e.message.contains("invalid response"), "{:?}", e.message);

    // The fault can also come from the body.
    let r = server.invoke("faults", "text/plain", "model-error", &[]);
    model_error(r, 500);
    still_serves(&server);
}

#[test]
fn the_sandbox_holds() {
    let echo = Model::new("echo", ECHO_WASM)
        .model_data(IRIS_MODEL_DIR)
        .env("GREETING", "hello from the config");
    let server = Server::start(BIN, &Config::new().endpoint(echo, 1).to_toml());
    let probe = |attribute: &str| -> String {
        let r = server.invoke("echo", "text/plain", "", &[(CUSTOM_ATTRIBUTES, attribute)]);
        assert_eq!(r.status(), StatusCode::OK, "probe {attribute}");
        r.text().unwrap()
    };

    assert_eq!(probe("env=GREETING"), "hello from the config");
    assert_eq!(probe("env=HOME"), "<unset>");
    assert_eq!(probe("env=PATH"), "<unset>");

    let listing = probe("ls=/opt/ml/model");
    assert!(
        listing.lines().any(|l| l == "model.onnx"),
        "/opt/ml/model lists {listing:?}"
    );
    let written = probe("write=/opt/ml/model/x");
    assert_ne!(written, "written", "the model dir must be read-only");
    assert!(
        !std::path::Path::new(IRIS_MODEL_DIR).join("x").exists(),
        "the guest wrote into the host's model dir"
    );

    let passwd = probe("read=/etc/passwd");
    assert!(
        !passwd.contains("root:"),
        "the guest read /etc/passwd: {passwd:?}"
    );
    let listing = probe("ls=/");
    assert!(
        !listing.lines().any(|l| l == "etc" || l == "proc"),
        "the guest sees the host's root: {listing:?}"
    );

    let connect = probe(&format!("connect=127.0.0.1:{}", server.port()));
    assert_ne!(connect, "connected", "the guest opened a socket");
}

#[test]
fn concurrent_requests_all_succeed() {
    let server = iris_server(2);
    let body = csv_rows(&[SETOSA, VIRGINICA, VERSICOLOR]);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..25 {
                        let r = server.invoke("iris", "text/csv", body.clone(), &[]);
                        assert_eq!(json_labels(r), LABELS);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("a client thread failed");
        }
    });
}

#[test]
fn endpoint_with_two_variants_routes_to_the_named_one() {
    let config = Config::new()
        .model(Model::iris("iris"))
        .model(Model::new("echo", ECHO_WASM))
        .endpoint_with_variants(
            "ab",
            vec![
                Variant::new("Iris", "iris", 1),
                Variant::new("Echo", "echo", 1),
            ],
        );
    let server = Server::start(BIN, &config.to_toml());
    for _ in 0..3 {
        let r = server.invoke(
            "ab",
            "text/csv",
            "5.1,3.5,1.4,0.2",
            &[("X-Amzn-SageMaker-Target-Variant", "Echo")],
        );
        assert_eq!(
            header(&r, "x-Amzn-Invoked-Production-Variant").as_deref(),
            Some("Echo")
        );
        assert_eq!(r.text().unwrap(), "5.1,3.5,1.4,0.2");
        let r = server.invoke(
            "ab",
            "text/csv",
            "5.1,3.5,1.4,0.2",
            &[("X-Amzn-SageMaker-Target-Variant", "Iris")],
        );
        assert_eq!(
            header(&r, "x-Amzn-Invoked-Production-Variant").as_deref(),
            Some("Iris")
        );
        assert_eq!(json_labels(r), ["setosa"]);
    }
}
