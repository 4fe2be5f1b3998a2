//! The control plane of the real `plinth serve`, end to end over HTTP (SageMaker's awsJson1_1
//! protocol: `POST /` with `X-Amz-Target: SageMaker.<Operation>`):
//!
//! - models: CreateModel (ARN, `file://` images, `PlinthLimits` and their bounds,
//!   `Environment` reaching the guest), DescribeModel, DeleteModel; `ModelDataUrl` as a
//!   directory, a single file and a `.tar.gz` unpacked for the guest;
//! - endpoint configs: defaults filled in, given values kept, ten variants;
//! - endpoints: `Creating` then `InService`, invocations refused until then, UpdateEndpoint
//!   (`Updating`, the old config serving meanwhile, another update refused), weight and
//!   capacity changes, DeleteEndpoint taking effect at once (also while `Creating`: the
//!   build is cancelled and nothing comes back); `Failed` endpoints with the reason, refusing
//!   invocations, deletable;
//! - what no endpoint uses can be deleted, and the server-wide instance limit
//!   (`ResourceLimitExceeded` once 1000 instances run, counting endpoints still `Creating`);
//! - the List operations: sorting, every filter, paging with `NextToken` (each item exactly
//!   once, also when sorted by `CreationTime`), a token refused with other sort values;
//! - the 1 MiB body limit (413 before the body is read, and a connection that is either still
//!   usable or announced `Connection: close`);
//! - the deployment file applied through the same operations, and the CLI clients
//!   `plinth api` and `plinth apply` (idempotent, refusing to change an immutable model);
//! - authentication: SigV4 required when credentials are configured (unsigned, garbage,
//!   wrong secret, unknown key), `/ping` open, and no unauthenticated non-loopback bind.
//!
//! The protocol and validation checks (malformed requests, name rules, every refused input,
//! `ResourceInUse`, resources not found, what a refusal leaves behind) are fixture cases in
//! `tests/cases/`, run in process.
//!
//! Each test starts its own server on `127.0.0.1:0` with a fresh data directory (starting one
//! without a deployment file takes milliseconds) and runs a group of related checks on it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use plinth_tests::json::names;
use plinth_tests::{
    credentials_toml, epoch_now, expect_failure, expect_success, header, run_cli, ApiError, Config,
    Model, Options, Response, Server, StatusCode, Variant, CUSTOM_ATTRIBUTES, ECHO_WASM,
    FAULTS_WASM, HOSTILE_WASM, IRIS_MODEL_DIR, IRIS_WASM, SETOSA_ROW,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// The largest control-plane body the server accepts.
const CONTROL_BODY_LIMIT: usize = 1 << 20;

const ACCESS_KEY_ID: &str = "AKIDTEST";
const SECRET_ACCESS_KEY: &str = "control-plane-test-secret";

// ---- Helpers ----

/// A `ValidationException` naming a missing resource.
#[track_caller]
fn not_found(server: &Server, operation: &str, input: Value) -> ApiError {
    server.refused(operation, input, "ValidationException", &["Could not find"])
}

/// CreateModel input for `component` (a path) with `environment`.
fn model_input(name: &str, component: &str, environment: Value) -> Value {
    json!({
        "ModelName": name,
        "PrimaryContainer": { "Image": component, "Environment": environment },
    })
}

/// Creates an echo model `name` whose guest sees `GREETING=<greeting>`.
fn create_echo_model(server: &Server, name: &str, greeting: &str) {
    server.create_model(name, ECHO_WASM, json!({ "GREETING": greeting }));
}

/// Creates endpoint config `name` with one variant `variant` of `model`.
fn create_config(server: &Server, name: &str, variant: &str, model: &str, instances: u32) {
    server.create_config(name, &[(variant, model, instances)]);
}

/// `model` (echo), config `<name>-config` with variant `AllTraffic`, and endpoint `name`,
/// `InService`.
fn echo_endpoint(server: &Server, name: &str, model: &str) {
    let config = format!("{name}-config");
    create_config(server, &config, "AllTraffic", model, 1);
    let d = server.create_endpoint_settled(name, &config);
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
}

/// What the echo guest of `endpoint` sees for the probe `probe` (e.g. `env=GREETING`).
#[track_caller]
fn probe(server: &Server, endpoint: &str, probe: &str) -> String {
    let response = server.invoke(endpoint, "text/plain", "x", &[(CUSTOM_ATTRIBUTES, probe)]);
    let status = response.status();
    let text = response.text().unwrap_or_default();
    assert_eq!(
        status,
        StatusCode::OK,
        "probe {probe} on {endpoint}: {text}"
    );
    text
}

/// The iris label the endpoint answers for a setosa row.
#[track_caller]
fn iris_label(server: &Server, endpoint: &str) -> String {
    let response = server.invoke(endpoint, "text/csv", SETOSA_ROW, &[]);
    let status = response.status();
    let text = response.text().unwrap_or_default();
    assert_eq!(status, StatusCode::OK, "iris on {endpoint}: {text}");
    let body: Value = serde_json::from_str(&text).expect("iris answers JSON");
    body["predictions"][0]["label"]
        .as_str()
        .unwrap_or_else(|| panic!("no label in {body}"))
        .to_owned()
}

/// `ListModels` names.
fn model_names(output: &Value) -> Vec<String> {
    names(output, "Models", "ModelName")
}

/// `ListEndpoints` names.
fn endpoint_names(output: &Value) -> Vec<String> {
    names(output, "Endpoints", "EndpointName")
}

/// Every page of `operation` (with `input`), following `NextToken`: the names per page.
/// Panics if a page answers the very token it was asked with (paging would never end).
fn pages(
    server: &Server,
    operation: &str,
    input: Value,
    key: &str,
    field: &str,
) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut request = input.clone();
        if let Some(t) = &token {
            request["NextToken"] = json!(t);
        }
        let output = server.call(operation, request.clone());
        all.push(names(&output, key, field));
        let Some(next) = output.get("NextToken") else {
            return all;
        };
        let next = next
            .as_str()
            .unwrap_or_else(|| panic!("NextToken is not a string: {output}"))
            .to_owned();
        assert!(
            token.as_ref() != Some(&next),
            "{operation} {request} answered {output}: the same page and the same NextToken \
             again, so paging never ends; pages so far: {all:?}"
        );
        assert!(all.len() < 200, "{operation} keeps answering a NextToken");
        token = Some(next);
    }
}

/// `value` is an epoch-seconds number within `[from, to]` (one second of slack each side).
#[track_caller]
fn assert_timestamp(value: &Value, from: f64, to: f64) -> f64 {
    let t = value
        .as_f64()
        .unwrap_or_else(|| panic!("timestamp {value} is not a number"));
    assert!(
        from - 1.0 <= t && t <= to + 1.0,
        "timestamp {t} is not between {from} and {to}"
    );
    t
}

/// `POST /` with a raw body and the given `X-Amz-Target` (none if `None`).
fn post_raw(server: &Server, target: Option<&str>, body: impl Into<Vec<u8>>) -> Response {
    let mut request = server
        .client()
        .post(format!("{}/", server.url()))
        .header("Content-Type", "application/x-amz-json-1.1")
        .body(body.into());
    if let Some(target) = target {
        request = request.header("X-Amz-Target", target);
    }
    request.send().expect("POST /")
}

/// `plinth api OPERATION INPUT --endpoint-url URL`.
fn plinth_api(
    server: &Server,
    operation: &str,
    input: &Value,
    credentials: Option<(&str, &str)>,
) -> Output {
    run_cli(
        BIN,
        &[
            "api",
            operation,
            &input.to_string(),
            "--endpoint-url",
            server.url(),
        ],
        credentials,
    )
}

/// A server with no deployment file and no credentials.
fn empty_server() -> Server {
    Server::start_with(BIN, Options::default())
}

// ---- Models ----

#[test]
fn models_are_created_described_and_deleted() {
    let server = empty_server();
    let before = epoch_now();
    let output = server.call(
        "CreateModel",
        json!({
            "ModelName": "Echo-Model",
            "PrimaryContainer": {
                "Image": format!("file://{ECHO_WASM}"),
                "Environment": { "GREETING": "hello", "_under_score1": "x" },
            },
            "PlinthLimits": { "MemorySizeInMB": 64, "InvocationTimeoutInSeconds": 5 },
        }),
    );
    let after = epoch_now();
    assert_eq!(
        output,
        json!({ "ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/echo-model" })
    );

    let d = server.call("DescribeModel", json!({ "ModelName": "Echo-Model" }));
    assert_eq!(d["ModelName"], "Echo-Model", "{d}");
    assert_eq!(
        d["ModelArn"], "arn:aws:sagemaker:us-east-1:123456789012:model/echo-model",
        "{d}"
    );
    assert_eq!(
        d["PrimaryContainer"]["Image"],
        format!("file://{ECHO_WASM}"),
        "{d}"
    );
    assert_eq!(
        d["PrimaryContainer"]["Environment"],
        json!({ "GREETING": "hello", "_under_score1": "x" }),
        "{d}"
    );
    assert_eq!(
        d["PlinthLimits"],
        json!({
            "MemorySizeInMB": 64,
            "InvocationTimeoutInSeconds": 5,
            "MaxResponseSizeInMB": 6,
            "AllowGraphsFromBytes": false,
        }),
        "{d}"
    );
    assert_timestamp(&d["CreationTime"], before, after);

    // A plain path works as well as a file:// URL; PlinthLimits are optional and described
    // with their defaults; the limits' bounds are accepted.
    server.create_model("plain", ECHO_WASM, json!({}));
    let d = server.call("DescribeModel", json!({ "ModelName": "plain" }));
    assert_eq!(d["PrimaryContainer"]["Image"], ECHO_WASM, "{d}");
    for field in ["MemorySizeInMB", "InvocationTimeoutInSeconds"] {
        assert!(
            d["PlinthLimits"][field].as_u64().is_some_and(|v| v >= 1),
            "default {field} missing: {d}"
        );
    }
    for (i, (memory, timeout)) in [(1, 1), (4096, 3600)].into_iter().enumerate() {
        let mut input = model_input(&format!("bounds-{i}"), ECHO_WASM, json!({}));
        input["PlinthLimits"] =
            json!({ "MemorySizeInMB": memory, "InvocationTimeoutInSeconds": timeout });
        server.call("CreateModel", input);
    }

    // The environment reaches the guest.
    echo_endpoint(&server, "greeter", "Echo-Model");
    assert_eq!(probe(&server, "greeter", "env=GREETING"), "hello");
    assert_eq!(probe(&server, "greeter", "env=OTHER"), "<unset>");

    // ListModels shows exactly the models created.
    let mut listed = model_names(&server.call("ListModels", json!({})));
    listed.sort();
    assert_eq!(listed, ["Echo-Model", "bounds-0", "bounds-1", "plain"]);

    // DeleteModel: gone at once, deleting again is refused, and the name can be reused.
    assert_eq!(
        server.call("DeleteModel", json!({ "ModelName": "plain" })),
        json!({})
    );
    let e = not_found(&server, "DescribeModel", json!({ "ModelName": "plain" }));
    assert!(e.message.contains("model/plain"), "{}", e.body);
    not_found(&server, "DeleteModel", json!({ "ModelName": "plain" }));
    assert!(!model_names(&server.call("ListModels", json!({}))).contains(&"plain".to_owned()));
    server.create_model("plain", ECHO_WASM, json!({}));
    server.call("DescribeModel", json!({ "ModelName": "plain" }));
}

#[test]
fn model_data_is_a_directory_a_single_file_or_an_unpacked_tar_gz() {
    let server = empty_server();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("weights.bin"), "weights v1").unwrap();
    std::fs::write(tree.join("sub/vocab.txt"), "a b c").unwrap();
    let archive = dir.path().join("model.tar.gz");
    tar_czf(&archive, &tree, &["."]);
    let iris_archive = dir.path().join("iris.tar.gz");
    tar_czf(&iris_archive, Path::new(IRIS_MODEL_DIR), &["model.onnx"]);

    let with_data = |name: &str, component: &str, url: String| {
        let mut input = model_input(name, component, json!({}));
        input["PrimaryContainer"]["ModelDataUrl"] = json!(url);
        input
    };
    let tree_url = tree.display().to_string();
    let file_url = format!("file://{}", tree.join("weights.bin").display());
    let archive_url = format!("file://{}", archive.display());
    for (name, url) in [
        ("from-dir", tree_url.clone()),
        ("from-file", file_url.clone()),
        ("from-tgz", archive_url.clone()),
    ] {
        server.call("CreateModel", with_data(name, ECHO_WASM, url.clone()));
        let d = server.call("DescribeModel", json!({ "ModelName": name }));
        assert_eq!(d["PrimaryContainer"]["ModelDataUrl"], url, "{d}");
        echo_endpoint(&server, name, name);
    }
    assert_eq!(
        probe(&server, "from-dir", "ls=/opt/ml/model"),
        "sub\nweights.bin"
    );
    assert_eq!(
        probe(&server, "from-file", "ls=/opt/ml/model"),
        "weights.bin"
    );
    assert_eq!(
        probe(&server, "from-file", "read=/opt/ml/model/weights.bin"),
        "weights v1"
    );
    assert_eq!(
        probe(&server, "from-tgz", "ls=/opt/ml/model"),
        "sub\nweights.bin"
    );
    assert_eq!(
        probe(&server, "from-tgz", "read=/opt/ml/model/sub/vocab.txt"),
        "a b c"
    );

    // A real model from a model.tar.gz.
    server.call(
        "CreateModel",
        with_data("iris-tgz", IRIS_WASM, iris_archive.display().to_string()),
    );
    create_config(&server, "iris-tgz", "AllTraffic", "iris-tgz", 1);
    let d = server.create_endpoint_settled("iris-tgz", "iris-tgz");
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    assert_eq!(iris_label(&server, "iris-tgz"), "setosa");
}

/// A model's files must be under the server's artifact roots (the harness gives the
/// repository and the temporary directory): the host's files, `/` and devices are refused
/// by member, with one message whether the path exists or not, and nothing is read.
#[test]
fn models_come_only_from_the_artifact_roots() {
    let server = empty_server();
    let refused = |image: &str, model_data: Option<&str>, member: &str| {
        let mut input = model_input("outside", image, json!({}));
        if let Some(url) = model_data {
            input["PrimaryContainer"]["ModelDataUrl"] = json!(url);
        }
        let e = server.refused(
            "CreateModel",
            input,
            "ValidationException",
            &["not under an artifact root"],
        );
        assert!(e.message.starts_with(member), "{}", e.message);
        e.message
    };
    refused("/etc/passwd", None, "Image");
    refused("/etc/no-such-file", None, "Image");
    refused(ECHO_WASM, Some("/"), "ModelDataUrl");
    refused(ECHO_WASM, Some("/dev/zero"), "ModelDataUrl");
    refused(ECHO_WASM, Some("file:///etc"), "ModelDataUrl");
    let escape = format!("{}/../../../../../../etc", plinth_tests::WORKSPACE_ROOT);
    refused(ECHO_WASM, Some(&escape), "ModelDataUrl");
    let none = server.call("ListModels", json!({}));
    assert_eq!(none["Models"], json!([]), "{none}");
}

/// CreateModel reads and unpacks its artifact outside the lock that changes take: another
/// change made while a large artifact unpacks answers first.
#[test]
fn other_changes_go_on_while_an_artifact_unpacks() {
    let server = empty_server();
    create_echo_model(&server, "echo", "hi");
    // 300 MiB of zeros: a small .tar.gz that takes a while to unpack and sync.
    let dir = tempfile::tempdir().unwrap();
    let big = std::fs::File::create(dir.path().join("weights.bin")).unwrap();
    big.set_len(300 << 20).unwrap();
    let archive = dir.path().join("big.tar.gz");
    tar_czf(&archive, dir.path(), &["weights.bin"]);
    let url = archive.display().to_string();
    let order = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut input = model_input("big", ECHO_WASM, json!({}));
            input["PrimaryContainer"]["ModelDataUrl"] = json!(url);
            server.call("CreateModel", input);
            order.lock().unwrap().push("CreateModel");
        });
        std::thread::sleep(Duration::from_millis(150));
        create_config(&server, "meanwhile", "AllTraffic", "echo", 1);
        order.lock().unwrap().push("CreateEndpointConfig");
    });
    assert_eq!(
        *order.lock().unwrap(),
        ["CreateEndpointConfig", "CreateModel"],
        "CreateEndpointConfig waited for the unpacking"
    );
    server.call("DescribeModel", json!({"ModelName": "big"}));
}

/// `tar czf archive -C dir entries...` with the system `tar`.
fn tar_czf(archive: &Path, dir: &Path, entries: &[&str]) {
    let status = Command::new("tar")
        .arg("czf")
        .arg(archive)
        .arg("-C")
        .arg(dir)
        .args(entries)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar czf {} failed", archive.display());
}

// ---- Endpoint configs ----

#[test]
fn endpoint_configs_are_described_with_defaults() {
    let server = empty_server();
    create_echo_model(&server, "echo", "hi");
    create_echo_model(&server, "echo-two", "hi");

    let before = epoch_now();
    let output = server.call(
        "CreateEndpointConfig",
        json!({
            "EndpointConfigName": "Minimal",
            "ProductionVariants": [{ "VariantName": "AllTraffic", "ModelName": "echo" }],
        }),
    );
    let after = epoch_now();
    assert_eq!(
        output,
        json!({ "EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/minimal" })
    );
    let d = server.call(
        "DescribeEndpointConfig",
        json!({ "EndpointConfigName": "Minimal" }),
    );
    assert_eq!(d["EndpointConfigName"], "Minimal", "{d}");
    assert_eq!(
        d["EndpointConfigArn"], "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/minimal",
        "{d}"
    );
    assert_timestamp(&d["CreationTime"], before, after);
    let variants = d["ProductionVariants"].as_array().expect("variants");
    assert_eq!(variants.len(), 1, "{d}");
    let v = &variants[0];
    assert_eq!(v["VariantName"], "AllTraffic", "{d}");
    assert_eq!(v["ModelName"], "echo", "{d}");
    assert_eq!(v["InitialInstanceCount"], 1, "{d}");
    assert_eq!(v["InitialVariantWeight"].as_f64(), Some(1.0), "{d}");
    assert!(
        v["RoutingConfig"]["RoutingStrategy"].is_string(),
        "no default routing strategy: {d}"
    );

    // Given values are kept: counts, weights (one may be 0), routing, ten variants.
    server.call(
        "CreateEndpointConfig",
        json!({
            "EndpointConfigName": "given",
            "ProductionVariants": [
                { "VariantName": "A", "ModelName": "echo", "InitialInstanceCount": 2,
                  "InitialVariantWeight": 0.5, "RoutingConfig": { "RoutingStrategy": "RANDOM" } },
                { "VariantName": "B", "ModelName": "echo-two", "InitialVariantWeight": 0.0 },
            ],
        }),
    );
    let d = server.call(
        "DescribeEndpointConfig",
        json!({ "EndpointConfigName": "given" }),
    );
    let v = &d["ProductionVariants"];
    assert_eq!(
        (v[0]["VariantName"].as_str(), v[1]["VariantName"].as_str()),
        (Some("A"), Some("B")),
        "{d}"
    );
    assert_eq!(v[0]["InitialInstanceCount"], 2, "{d}");
    assert_eq!(v[0]["InitialVariantWeight"].as_f64(), Some(0.5), "{d}");
    assert_eq!(v[0]["RoutingConfig"]["RoutingStrategy"], "RANDOM", "{d}");
    assert_eq!(v[1]["ModelName"], "echo-two", "{d}");
    assert_eq!(v[1]["InitialVariantWeight"].as_f64(), Some(0.0), "{d}");
    let variants = |n: usize| -> Value {
        (0..n)
            .map(|i| json!({ "VariantName": format!("V{i}"), "ModelName": "echo" }))
            .collect()
    };
    server.call(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": "ten", "ProductionVariants": variants(10) }),
    );

    let mut listed = names(
        &server.call("ListEndpointConfigs", json!({})),
        "EndpointConfigs",
        "EndpointConfigName",
    );
    listed.sort();
    assert_eq!(listed, ["Minimal", "given", "ten"]);

    assert_eq!(
        server.call(
            "DeleteEndpointConfig",
            json!({ "EndpointConfigName": "given" })
        ),
        json!({})
    );
    not_found(
        &server,
        "DescribeEndpointConfig",
        json!({ "EndpointConfigName": "given" }),
    );
    not_found(
        &server,
        "DeleteEndpointConfig",
        json!({ "EndpointConfigName": "given" }),
    );
}

// ---- Endpoints ----

#[test]
fn endpoints_are_created_updated_and_deleted() {
    let server = empty_server();
    create_echo_model(&server, "echo", "hello");
    create_config(&server, "echo-config", "A", "echo", 1);

    // CreateEndpoint answers while the endpoint is Creating: this server has never compiled
    // the echo component, which takes far longer than the next two requests.
    let before = epoch_now();
    let output = server.call(
        "CreateEndpoint",
        json!({ "EndpointName": "Live", "EndpointConfigName": "echo-config" }),
    );
    assert_eq!(
        output,
        json!({ "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/live" })
    );
    let e = ApiError::from_response(server.invoke("Live", "text/plain", "x", &[]));
    assert_eq!(
        (e.status, e.code.as_str()),
        (StatusCode::BAD_REQUEST, "ValidationError"),
        "invoking a Creating endpoint: {}",
        e.body
    );
    assert!(e.message.contains("Creating"), "{}", e.body);
    let d = server.call("DescribeEndpoint", json!({ "EndpointName": "Live" }));
    assert_eq!(d["EndpointStatus"], "Creating", "{d}");

    let d = server.describe_settled("Live");
    let after = epoch_now();
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    assert_eq!(d["EndpointName"], "Live", "{d}");
    assert_eq!(
        d["EndpointArn"], "arn:aws:sagemaker:us-east-1:123456789012:endpoint/live",
        "{d}"
    );
    assert_eq!(d["EndpointConfigName"], "echo-config", "{d}");
    assert!(d.get("FailureReason").is_none(), "{d}");
    let created = assert_timestamp(&d["CreationTime"], before, after);
    let modified = assert_timestamp(&d["LastModifiedTime"], before, after);
    assert!(created <= modified, "{d}");
    let v = &d["ProductionVariants"][0];
    assert_eq!(v["VariantName"], "A", "{d}");
    assert_eq!(v["ModelName"], "echo", "{d}");
    assert_eq!(v["CurrentInstanceCount"], 1, "{d}");
    assert_eq!(v["DesiredInstanceCount"], 1, "{d}");
    assert_eq!(v["CurrentWeight"].as_f64(), Some(1.0), "{d}");
    assert_eq!(v["DesiredWeight"].as_f64(), Some(1.0), "{d}");
    assert_eq!(probe(&server, "Live", "env=GREETING"), "hello");

    // UpdateEndpoint to an iris config: Updating while the new variant is built (compiling
    // iris for the first time), the old config serving meanwhile; then InService on it.
    server.call("CreateModel",
        json!({ "ModelName": "iris", "PrimaryContainer": { "Image": IRIS_WASM, "ModelDataUrl": IRIS_MODEL_DIR } }),
    );
    create_config(&server, "iris-config", "B", "iris", 1);
    let output = server.call(
        "UpdateEndpoint",
        json!({ "EndpointName": "Live", "EndpointConfigName": "iris-config" }),
    );
    assert_eq!(
        output["EndpointArn"],
        "arn:aws:sagemaker:us-east-1:123456789012:endpoint/live"
    );
    let d = server.call("DescribeEndpoint", json!({ "EndpointName": "Live" }));
    assert_eq!(d["EndpointStatus"], "Updating", "{d}");
    assert_eq!(d["EndpointConfigName"], "echo-config", "{d}");
    assert_eq!(
        d["PendingDeploymentSummary"]["EndpointConfigName"], "iris-config",
        "{d}"
    );
    let response = server.invoke("Live", "text/plain", "still echo", &[]);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().unwrap(), "still echo");
    // Another update while this one runs is refused.
    server.refused(
        "UpdateEndpoint",
        json!({ "EndpointName": "Live", "EndpointConfigName": "echo-config" }),
        "ValidationException",
        &[],
    );
    let d = server.describe_settled("Live");
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    assert_eq!(d["EndpointConfigName"], "iris-config", "{d}");
    assert!(d.get("PendingDeploymentSummary").is_none(), "{d}");
    assert!(d.get("FailureReason").is_none(), "{d}");
    assert_eq!(d["ProductionVariants"][0]["VariantName"], "B", "{d}");
    assert!(d["LastModifiedTime"].as_f64().unwrap() > modified, "{d}");
    let response = server.invoke("Live", "text/csv", SETOSA_ROW, &[]);
    assert_eq!(
        header(&response, "x-amzn-invoked-production-variant").as_deref(),
        Some("B")
    );
    assert_eq!(iris_label(&server, "Live"), "setosa");

    // UpdateEndpointWeightsAndCapacities: a weight at once, a capacity through Updating.
    server.call("UpdateEndpointWeightsAndCapacities",
        json!({ "EndpointName": "Live", "DesiredWeightsAndCapacities": [{ "VariantName": "B", "DesiredWeight": 3.0 }] }),
    );
    let d = server.call("DescribeEndpoint", json!({ "EndpointName": "Live" }));
    assert_eq!(
        d["ProductionVariants"][0]["CurrentWeight"].as_f64(),
        Some(3.0),
        "{d}"
    );
    assert_eq!(
        d["ProductionVariants"][0]["DesiredWeight"].as_f64(),
        Some(3.0),
        "{d}"
    );
    server.call("UpdateEndpointWeightsAndCapacities",
        json!({ "EndpointName": "Live", "DesiredWeightsAndCapacities": [{ "VariantName": "B", "DesiredInstanceCount": 2 }] }),
    );
    let d = server.describe_settled("Live");
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    assert_eq!(d["ProductionVariants"][0]["CurrentInstanceCount"], 2, "{d}");
    assert_eq!(d["ProductionVariants"][0]["DesiredInstanceCount"], 2, "{d}");

    // DeleteEndpoint takes effect at once.
    assert_eq!(
        server.call("DeleteEndpoint", json!({ "EndpointName": "Live" })),
        json!({})
    );
    let e = not_found(
        &server,
        "DescribeEndpoint",
        json!({ "EndpointName": "Live" }),
    );
    assert!(
        e.message.contains(
            "Could not find endpoint \"arn:aws:sagemaker:us-east-1:123456789012:endpoint/live\""
        ),
        "{}",
        e.body
    );
    let e = ApiError::from_response(server.invoke("Live", "text/csv", SETOSA_ROW, &[]));
    assert_eq!(
        (e.status, e.code.as_str()),
        (StatusCode::BAD_REQUEST, "ValidationError"),
        "{}",
        e.body
    );
    assert!(endpoint_names(&server.call("ListEndpoints", json!({}))).is_empty());
    not_found(&server, "DeleteEndpoint", json!({ "EndpointName": "Live" }));

    // The name is free again.
    let d = server.create_endpoint_settled("Live", "echo-config");
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    assert_eq!(probe(&server, "Live", "env=GREETING"), "hello");
}

#[test]
fn failed_endpoints_say_why_refuse_invocations_and_can_be_deleted() {
    let server = empty_server();
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("not-wasm.wasm");
    std::fs::write(&not_wasm, "this is text, not WebAssembly\n").unwrap();
    server.create_model("not-wasm", not_wasm.to_str().unwrap(), json!({}));
    server.create_model("faulty", FAULTS_WASM, json!({ "FAULT_MODEL_FN": "1" }));
    for (name, reason) in [
        ("not-wasm", "not a valid WebAssembly component"),
        ("faulty", "model_fn failed"),
    ] {
        create_config(&server, name, "AllTraffic", name, 1);
        let d = server.create_endpoint_settled(name, name);
        assert_eq!(d["EndpointStatus"], "Failed", "{d}");
        let failure = d["FailureReason"]
            .as_str()
            .unwrap_or_else(|| panic!("no FailureReason: {d}"));
        assert!(failure.contains(reason), "{d}");

        let e = ApiError::from_response(server.invoke(name, "text/plain", "x", &[]));
        assert_eq!(
            (e.status, e.code.as_str()),
            (StatusCode::BAD_REQUEST, "ValidationError"),
            "invoking a Failed endpoint: {}",
            e.body
        );
        assert!(e.message.contains("Failed"), "{}", e.body);
    }
    let failed = server.call("ListEndpoints", json!({ "StatusEquals": "Failed" }));
    let mut listed = endpoint_names(&failed);
    listed.sort();
    assert_eq!(listed, ["faulty", "not-wasm"]);

    for name in ["not-wasm", "faulty"] {
        assert_eq!(
            server.call("DeleteEndpoint", json!({ "EndpointName": name })),
            json!({})
        );
        not_found(&server, "DescribeEndpoint", json!({ "EndpointName": name }));
    }
    assert!(endpoint_names(&server.call("ListEndpoints", json!({}))).is_empty());
    // Nothing holds their configs and models any more.
    for name in ["not-wasm", "faulty"] {
        server.call(
            "DeleteEndpointConfig",
            json!({ "EndpointConfigName": name }),
        );
        server.call("DeleteModel", json!({ "ModelName": name }));
    }
}

#[test]
fn an_endpoint_can_be_deleted_while_it_is_creating() {
    let server = empty_server();
    // model_fn never returns: the endpoint stays Creating.
    server.create_model("hangs", HOSTILE_WASM, json!({ "HOSTILE_MODEL_FN": "hang" }));
    create_config(&server, "stuck", "A", "hangs", 1);
    server.call(
        "CreateEndpoint",
        json!({ "EndpointName": "stuck", "EndpointConfigName": "stuck" }),
    );
    let d = server.describe_endpoint("stuck");
    assert_eq!(d["EndpointStatus"], "Creating", "{d}");
    let e = ApiError::from_response(server.invoke("stuck", "text/plain", "x", &[]));
    assert_eq!(e.status, StatusCode::BAD_REQUEST, "{}", e.body);
    assert!(e.message.contains("Creating"), "{}", e.body);

    assert_eq!(
        server.call("DeleteEndpoint", json!({ "EndpointName": "stuck" })),
        json!({})
    );
    not_found(
        &server,
        "DescribeEndpoint",
        json!({ "EndpointName": "stuck" }),
    );
    // Nothing comes back, and nothing holds its config and model any more.
    std::thread::sleep(Duration::from_millis(300));
    assert!(endpoint_names(&server.call("ListEndpoints", json!({}))).is_empty());
    server.call(
        "DeleteEndpointConfig",
        json!({ "EndpointConfigName": "stuck" }),
    );
    server.call("DeleteModel", json!({ "ModelName": "hangs" }));
    // The name is free again.
    create_echo_model(&server, "echo", "hi");
    create_config(&server, "echo", "A", "echo", 1);
    let d = server.create_endpoint_settled("stuck", "echo");
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
}

#[test]
fn what_no_endpoint_uses_can_be_deleted() {
    // (What an endpoint uses is refused with ResourceInUse: the cases DeleteModel/in-use and
    // DeleteEndpointConfig/in-use.)
    let server = empty_server();
    create_echo_model(&server, "used", "hi");
    create_echo_model(&server, "spare", "hi");
    echo_endpoint(&server, "live", "used");
    // A config that no endpoint uses, of a model that one does.
    create_config(&server, "unused-config", "A", "used", 1);

    // What no endpoint uses can go.
    server.call(
        "DeleteEndpointConfig",
        json!({ "EndpointConfigName": "unused-config" }),
    );
    server.call("DeleteModel", json!({ "ModelName": "spare" }));

    // After the endpoint is gone, so can its config and model.
    server.call("DeleteEndpoint", json!({ "EndpointName": "live" }));
    assert_eq!(
        server.call(
            "DeleteEndpointConfig",
            json!({ "EndpointConfigName": "live-config" })
        ),
        json!({})
    );
    assert_eq!(
        server.call("DeleteModel", json!({ "ModelName": "used" })),
        json!({})
    );
    assert!(model_names(&server.call("ListModels", json!({}))).is_empty());
    assert!(names(
        &server.call("ListEndpointConfigs", json!({})),
        "EndpointConfigs",
        "EndpointConfigName"
    )
    .is_empty());
}

// ---- The instance limit ----

#[test]
fn a_thousand_instances_fit_and_then_nothing_else_does() {
    // (Configs past the limit beside a running endpoint are refused: the cases
    // CreateEndpoint/instance-limit-*.)
    let server = empty_server();
    create_echo_model(&server, "echo", "hi");
    create_config(&server, "small-config", "AllTraffic", "echo", 1);
    create_config(&server, "thousand", "A", "echo", 1000);

    // 1000 instances fit when nothing else runs.
    server.call(
        "CreateEndpoint",
        json!({ "EndpointName": "tall", "EndpointConfigName": "thousand" }),
    );
    let d = server.describe_settled("tall");
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    assert_eq!(
        d["ProductionVariants"][0]["CurrentInstanceCount"], 1000,
        "{d}"
    );
    // And now nothing else does, creating nothing.
    server.refused(
        "CreateEndpoint",
        json!({ "EndpointName": "small", "EndpointConfigName": "small-config" }),
        "ResourceLimitExceeded",
        &["1000"],
    );
    not_found(
        &server,
        "DescribeEndpoint",
        json!({ "EndpointName": "small" }),
    );
}

#[test]
fn the_instance_limit_counts_endpoints_that_are_still_creating() {
    let server = empty_server();
    create_echo_model(&server, "echo", "hi");
    create_config(&server, "one", "A", "echo", 1);
    create_config(&server, "thousand", "A", "echo", 1000);
    // The first endpoint is still Creating (this server compiles echo for the first time)
    // when the second one, which would take the total to 1001, is asked for.
    server.call(
        "CreateEndpoint",
        json!({ "EndpointName": "first", "EndpointConfigName": "one" }),
    );
    let d = server.call("DescribeEndpoint", json!({ "EndpointName": "first" }));
    assert_eq!(d["EndpointStatus"], "Creating", "{d}");
    let response = server.control(
        "CreateEndpoint",
        &json!({ "EndpointName": "second", "EndpointConfigName": "thousand" }),
    );
    let accepted = response.status().is_success();
    let first = server.describe_settled("first");
    let second = accepted.then(|| server.describe_settled("second"));
    assert!(
        !accepted,
        "CreateEndpoint accepted 1000 instances while endpoint \"first\" (1 instance) was \
         Creating, although the server's limit is 1000; afterwards first: {first}, second: {}",
        second.unwrap_or_default()
    );
    let e = ApiError::from_response(response);
    assert_eq!(
        (e.status, e.code.as_str()),
        (StatusCode::BAD_REQUEST, "ResourceLimitExceeded"),
        "{}",
        e.body
    );
    assert_eq!(first["EndpointStatus"], "InService", "{first}");
}

// ---- Lists ----

#[test]
fn lists_sort_page_and_filter() {
    let server = empty_server();
    let all: Vec<String> = (0..12).map(|i| format!("m-{i:02}")).collect();
    let mut created = Vec::new();
    for name in &all {
        // Timestamps have millisecond resolution, as SageMaker's: keep them apart.
        std::thread::sleep(std::time::Duration::from_millis(2));
        create_echo_model(&server, name, "hi");
        let d = server.call("DescribeModel", json!({ "ModelName": name }));
        created.push(d["CreationTime"].as_f64().expect("CreationTime"));
    }
    assert!(
        created.windows(2).all(|w| w[0] < w[1]),
        "creation times do not increase: {created:?}"
    );
    let newest_first: Vec<String> = all.iter().rev().cloned().collect();
    // A time between the creation of m-<i> and m-<j> (a listed time itself may not come back
    // bit-exact through JSON).
    let between = |i: usize, j: usize| (created[i] + created[j]) / 2.0;

    // Default: CreationTime Descending, 10 per page.
    let first = server.call("ListModels", json!({}));
    assert_eq!(model_names(&first), newest_first[..10]);
    let summary = &first["Models"][0];
    assert_eq!(summary["ModelName"], "m-11", "{summary}");
    assert_eq!(
        summary["ModelArn"], "arn:aws:sagemaker:us-east-1:123456789012:model/m-11",
        "{summary}"
    );
    assert_eq!(
        summary["CreationTime"].as_f64(),
        Some(created[11]),
        "{summary}"
    );
    let second = server.call(
        "ListModels",
        json!({ "NextToken": first["NextToken"].as_str().expect("NextToken") }),
    );
    assert_eq!(model_names(&second).len(), 2, "{second}");
    assert!(second.get("NextToken").is_none(), "{second}");

    // Every sort key and order (paging by CreationTime has a test of its own:
    // `paging_by_creation_time_returns_every_item_once`).
    let oldest_first = all.clone();
    for (sort_by, order, expected) in [
        ("Name", "Ascending", &oldest_first),
        ("Name", "Descending", &newest_first),
        ("CreationTime", "Ascending", &oldest_first),
        ("CreationTime", "Descending", &newest_first),
    ] {
        let input = json!({ "SortBy": sort_by, "SortOrder": order, "MaxResults": 100 });
        let got = model_names(&server.call("ListModels", input));
        assert_eq!(got, *expected, "{sort_by} {order}");
    }
    for order in ["Ascending", "Descending"] {
        let got = pages(
            &server,
            "ListModels",
            json!({ "SortBy": "Name", "SortOrder": order, "MaxResults": 5 }),
            "Models",
            "ModelName",
        );
        let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(sizes, [5, 5, 2], "Name {order}: {got:?}");
        let expected = if order == "Ascending" {
            &oldest_first
        } else {
            &newest_first
        };
        assert_eq!(got.concat(), *expected, "Name {order}");
    }
    assert_eq!(
        server.call("ListModels", json!({ "SortOrder": "Ascending" }))["Models"][0]["ModelName"],
        "m-00"
    );

    // NextToken only when more remain.
    let exact = server.call("ListModels", json!({ "MaxResults": 12 }));
    assert_eq!(model_names(&exact).len(), 12);
    assert!(exact.get("NextToken").is_none(), "{exact}");
    let short = server.call("ListModels", json!({ "MaxResults": 11 }));
    assert!(short["NextToken"].is_string(), "{short}");
    assert_eq!(
        model_names(&server.call("ListModels", json!({ "MaxResults": 100 }))).len(),
        12
    );
    assert_eq!(
        model_names(&server.call("ListModels", json!({ "MaxResults": 1 }))),
        ["m-11"]
    );

    // Filters.
    assert_eq!(
        model_names(&server.call("ListModels", json!({ "NameContains": "M-1" }))),
        ["m-11", "m-10"]
    );
    assert_eq!(
        model_names(&server.call(
            "ListModels",
            json!({ "CreationTimeAfter": between(5, 6), "MaxResults": 100 })
        )),
        newest_first[..6]
    );
    assert_eq!(
        model_names(&server.call(
            "ListModels",
            json!({ "CreationTimeBefore": between(4, 5), "SortOrder": "Ascending" })
        )),
        all[..5]
    );
    assert_eq!(
        model_names(&server.call("ListModels",
            json!({ "CreationTimeAfter": between(2, 3), "CreationTimeBefore": between(4, 5), "SortBy": "Name", "SortOrder": "Ascending" })
        )),
        ["m-03", "m-04"]
    );
    assert_eq!(
        model_names(&server.call("ListModels",
            json!({ "NameContains": "0", "CreationTimeAfter": between(3, 4), "SortBy": "Name", "SortOrder": "Ascending" })
        )),
        ["m-04", "m-05", "m-06", "m-07", "m-08", "m-09", "m-10"]
    );
    // A filter applies before paging.
    assert_eq!(
        pages(
            &server,
            "ListModels",
            json!({ "NameContains": "m-0", "MaxResults": 4, "SortBy": "Name", "SortOrder": "Ascending" }),
            "Models",
            "ModelName"
        ),
        [&all[0..4], &all[4..8], &all[8..10]]
    );
    assert!(model_names(&server.call("ListModels", json!({ "NameContains": "zzz" }))).is_empty());

    // A NextToken is refused with other sort values than its listing's. (Other bad list
    // inputs are the cases ListModels/*, ListEndpointConfigs/* and ListEndpoints/*.)
    let token = short["NextToken"].as_str().unwrap().to_owned();
    for input in [
        json!({ "NextToken": token, "SortBy": "Name" }),
        json!({ "NextToken": token, "SortOrder": "Ascending" }),
    ] {
        server.refused("ListModels", input, "ValidationException", &[]);
    }

    // Endpoint configs: the same shape under their own key, NameContains ignoring case.
    for name in ["Blue-1", "blue-2", "red-1"] {
        create_config(&server, name, "A", "m-00", 1);
    }
    let output = server.call("ListEndpointConfigs", json!({}));
    assert_eq!(
        names(&output, "EndpointConfigs", "EndpointConfigName"),
        ["red-1", "blue-2", "Blue-1"]
    );
    let summary = &output["EndpointConfigs"][0];
    assert_eq!(
        summary["EndpointConfigArn"],
        "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/red-1",
        "{summary}"
    );
    assert!(summary["CreationTime"].is_number(), "{summary}");
    assert_eq!(
        names(
            &server.call("ListEndpointConfigs", json!({ "NameContains": "BLUE" })),
            "EndpointConfigs",
            "EndpointConfigName"
        ),
        ["blue-2", "Blue-1"]
    );
    assert_eq!(
        pages(
            &server,
            "ListEndpointConfigs",
            json!({ "MaxResults": 2, "SortBy": "Name", "SortOrder": "Ascending" }),
            "EndpointConfigs",
            "EndpointConfigName"
        ),
        [vec!["Blue-1", "blue-2"], vec!["red-1"]]
    );

    // Endpoints: status, last-modified time, sorting by status.
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("not-wasm.wasm");
    std::fs::write(&not_wasm, "text").unwrap();
    server.create_model("broken", not_wasm.to_str().unwrap(), json!({}));
    create_config(&server, "broken-config", "A", "broken", 1);
    for (endpoint, config) in [
        ("ep-a", "blue-2"),
        ("ep-b", "broken-config"),
        ("ep-c", "red-1"),
    ] {
        server.create_endpoint_settled(endpoint, config);
    }
    // ep-a changes last.
    server.call("UpdateEndpointWeightsAndCapacities",
        json!({ "EndpointName": "ep-a", "DesiredWeightsAndCapacities": [{ "VariantName": "A", "DesiredWeight": 2.0 }] }),
    );
    let output = server.call("ListEndpoints", json!({}));
    assert_eq!(endpoint_names(&output), ["ep-c", "ep-b", "ep-a"]);
    let by_name = |name: &str| -> Value {
        output["Endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["EndpointName"] == name)
            .cloned()
            .unwrap()
    };
    let a = by_name("ep-a");
    assert_eq!(
        a["EndpointArn"], "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep-a",
        "{a}"
    );
    assert_eq!(a["EndpointStatus"], "InService", "{a}");
    assert_eq!(by_name("ep-b")["EndpointStatus"], "Failed");
    let modified = |name: &str| by_name(name)["LastModifiedTime"].as_f64().unwrap();
    let created_at = |name: &str| by_name(name)["CreationTime"].as_f64().unwrap();
    assert!(modified("ep-a") > modified("ep-c"), "{output}");
    assert!(modified("ep-a") > modified("ep-b"), "{output}");
    // Filter by times between the listed ones: a listed time itself may not come back
    // bit-exact through JSON.
    let modified_between = (modified("ep-b").max(modified("ep-c")) + modified("ep-a")) / 2.0;
    for (input, expected) in [
        (json!({ "StatusEquals": "Failed" }), vec!["ep-b"]),
        (json!({ "StatusEquals": "InService" }), vec!["ep-c", "ep-a"]),
        (json!({ "StatusEquals": "Creating" }), vec![]),
        (
            json!({ "SortBy": "Status", "SortOrder": "Ascending" }),
            vec!["ep-b", "ep-a", "ep-c"],
        ),
        (
            json!({ "SortBy": "Status", "SortOrder": "Descending" }),
            vec!["ep-c", "ep-a", "ep-b"],
        ),
        (
            json!({ "SortBy": "Name", "SortOrder": "Ascending" }),
            vec!["ep-a", "ep-b", "ep-c"],
        ),
        (
            json!({ "LastModifiedTimeAfter": modified_between }),
            vec!["ep-a"],
        ),
        (
            json!({ "LastModifiedTimeBefore": modified_between }),
            vec!["ep-c", "ep-b"],
        ),
        (
            json!({ "CreationTimeAfter": (created_at("ep-b") + created_at("ep-c")) / 2.0 }),
            vec!["ep-c"],
        ),
        (
            json!({ "CreationTimeBefore": (created_at("ep-a") + created_at("ep-b")) / 2.0 }),
            vec!["ep-a"],
        ),
        (json!({ "NameContains": "EP-C" }), vec!["ep-c"]),
        (
            json!({ "StatusEquals": "InService", "NameContains": "a" }),
            vec!["ep-a"],
        ),
    ] {
        assert_eq!(
            endpoint_names(&server.call("ListEndpoints", input.clone())),
            expected,
            "ListEndpoints {input}"
        );
    }
    assert_eq!(
        pages(
            &server,
            "ListEndpoints",
            json!({ "SortBy": "Status", "SortOrder": "Ascending", "MaxResults": 1 }),
            "Endpoints",
            "EndpointName"
        ),
        [["ep-b"], ["ep-a"], ["ep-c"]]
    );
}

#[test]
fn paging_by_creation_time_returns_every_item_once() {
    // NextToken resumes after the last item of the previous page. Page by page, one item at
    // a time, each order must give every model exactly once.
    let server = empty_server();
    let all: Vec<String> = (0..30).map(|i| format!("m-{i:02}")).collect();
    for name in &all {
        create_echo_model(&server, name, "hi");
    }
    let newest_first: Vec<String> = all.iter().rev().cloned().collect();
    for (input, expected) in [
        (json!({ "MaxResults": 1 }), &newest_first),
        (
            json!({ "SortBy": "CreationTime", "SortOrder": "Descending", "MaxResults": 1 }),
            &newest_first,
        ),
        (
            json!({ "SortBy": "CreationTime", "SortOrder": "Ascending", "MaxResults": 1 }),
            &all,
        ),
        (json!({}), &newest_first),
    ] {
        let got = pages(&server, "ListModels", input.clone(), "Models", "ModelName");
        assert_eq!(
            got.concat(),
            *expected,
            "ListModels {input}, following NextToken, page by page: {got:?}"
        );
    }
}

// ---- The protocol ----

#[test]
fn control_bodies_over_1_mib_are_refused_before_they_are_read() {
    // (Every other protocol error is a fixture case: unknown operations and targets, bodies
    // that are not JSON or not objects, wrong types.)
    let server = empty_server();
    create_echo_model(&server, "echo", "hi");

    // The body limit: 1 MiB of JSON is read; a request declaring one byte more is refused
    // with 413 before its body is read. (The oversized requests are sent by hand, headers
    // only: see `an_oversized_body_leaves_the_connection_usable_or_says_close`.)
    let mut body = String::from("{}");
    body.push_str(&" ".repeat(CONTROL_BODY_LIMIT - body.len()));
    let response = post_raw(&server, Some("SageMaker.ListModels"), body);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(model_names(&response.json().unwrap()), ["echo"]);
    for (operation, length) in [
        ("ListModels", CONTROL_BODY_LIMIT + 1),
        ("CreateModel", 2 * CONTROL_BODY_LIMIT),
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(oversized_head(operation, length).as_bytes())
            .unwrap();
        let (status, headers, body) =
            read_response(&mut stream).expect("an answer to an oversized request");
        assert_eq!(
            status, 413,
            "{operation} of {length} bytes: {headers:?} {body}"
        );
        let error: Value = serde_json::from_str(&body).expect("a JSON error body");
        let code = error["__type"].as_str().expect("__type");
        assert!(error["message"].is_string(), "{error}");
        assert!(
            headers.contains(&format!("x-amzn-errortype: {}", code.to_ascii_lowercase())),
            "{headers:?} {error}"
        );
    }
    assert_eq!(model_names(&server.call("ListModels", json!({}))), ["echo"]);
}

/// The head of a `POST /` calling `operation` that declares a body of `length` bytes.
fn oversized_head(operation: &str, length: usize) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: SageMaker.{operation}\r\n\
         Content-Type: application/x-amz-json-1.1\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// Reads one HTTP/1.1 response (with a `content-length`) from `stream`: the status, the
/// lower-cased header lines, the body.
fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, Vec<String>, String)> {
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    if reader.read_line(&mut status_line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the connection was closed before a response",
        ));
    }
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        headers.push(line);
    }
    let length: usize = headers
        .iter()
        .find_map(|h| h.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("content-length"))
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

#[test]
fn an_oversized_body_leaves_the_connection_usable_or_says_close() {
    // An HTTP/1.1 connection persists unless a response says `Connection: close`, so a client
    // may send its next request on the connection that got the 413. The server must then
    // either answer it or have said `close`; closing silently makes that request fail
    // ("connection closed before message completed").
    let server = empty_server();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let declared = 2 * CONTROL_BODY_LIMIT;
    stream
        .write_all(oversized_head("ListModels", declared).as_bytes())
        .unwrap();
    let (status, headers, body) = read_response(&mut stream)
        .expect("an answer to the headers of a request over the limit, without its body");
    assert_eq!(status, 413, "{headers:?} {body}");
    if headers
        .iter()
        .any(|h| h.starts_with("connection:") && h.contains("close"))
    {
        return;
    }
    // Not closed, so the connection must take the declared body and the next request.
    let next = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: SageMaker.ListModels\r\n\
                Content-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\n\r\n{}";
    let second = stream
        .write_all(" ".repeat(declared).as_bytes())
        .and_then(|()| stream.write_all(next.as_bytes()))
        .and_then(|()| read_response(&mut stream));
    match second {
        Ok((status, _, body)) => assert_eq!(status, 200, "the next request: {body}"),
        Err(e) => panic!(
            "the 413 answer ({headers:?}) did not say `Connection: close`, yet the server closed \
             the connection: the next request on it failed ({e})"
        ),
    }
}

// ---- The deployment file ----

#[test]
fn the_deployment_file_is_applied_through_the_same_operations() {
    let config = Config::new()
        .endpoint(
            Model::new("iris", IRIS_WASM)
                .model_data(IRIS_MODEL_DIR)
                .env("LOG_LEVEL", "debug")
                .memory_mib(128)
                .timeout_seconds(30),
            1,
        )
        .model(Model::new("echo", ECHO_WASM).env("GREETING", "from the file"))
        .endpoint_with_variants(
            "split",
            vec![
                Variant::new("A", "echo", 1).routing_strategy("RANDOM"),
                Variant::new("B", "echo", 2).weight(3.0),
            ],
        );
    let server = Server::start(BIN, &config.to_toml());

    assert_eq!(
        model_names(&server.call(
            "ListModels",
            json!({ "SortBy": "Name", "SortOrder": "Ascending" })
        )),
        ["echo", "iris"]
    );
    let d = server.call("DescribeModel", json!({ "ModelName": "iris" }));
    assert_eq!(
        d["ModelArn"], "arn:aws:sagemaker:us-east-1:123456789012:model/iris",
        "{d}"
    );
    assert_eq!(d["PrimaryContainer"]["Image"], IRIS_WASM, "{d}");
    assert_eq!(d["PrimaryContainer"]["ModelDataUrl"], IRIS_MODEL_DIR, "{d}");
    assert_eq!(
        d["PrimaryContainer"]["Environment"],
        json!({ "LOG_LEVEL": "debug" }),
        "{d}"
    );
    assert_eq!(
        d["PlinthLimits"],
        json!({
            "MemorySizeInMB": 128,
            "InvocationTimeoutInSeconds": 30,
            "MaxResponseSizeInMB": 6,
            "AllowGraphsFromBytes": false,
        }),
        "{d}"
    );
    assert!(d["CreationTime"].is_number(), "{d}");

    assert_eq!(
        names(
            &server.call(
                "ListEndpointConfigs",
                json!({ "SortBy": "Name", "SortOrder": "Ascending" })
            ),
            "EndpointConfigs",
            "EndpointConfigName"
        ),
        ["iris-config", "split-config"]
    );
    let d = server.call(
        "DescribeEndpointConfig",
        json!({ "EndpointConfigName": "iris-config" }),
    );
    let v = &d["ProductionVariants"];
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(v[0]["VariantName"], "AllTraffic", "{d}");
    assert_eq!(v[0]["ModelName"], "iris", "{d}");
    let d = server.call(
        "DescribeEndpointConfig",
        json!({ "EndpointConfigName": "split-config" }),
    );
    let v = &d["ProductionVariants"];
    assert_eq!(v[0]["VariantName"], "A", "{d}");
    assert_eq!(v[0]["RoutingConfig"]["RoutingStrategy"], "RANDOM", "{d}");
    assert_eq!(v[1]["VariantName"], "B", "{d}");
    assert_eq!(v[1]["InitialInstanceCount"], 2, "{d}");
    assert_eq!(v[1]["InitialVariantWeight"].as_f64(), Some(3.0), "{d}");

    let output = server.call(
        "ListEndpoints",
        json!({ "SortBy": "Name", "SortOrder": "Ascending" }),
    );
    assert_eq!(endpoint_names(&output), ["iris", "split"]);
    for e in output["Endpoints"].as_array().unwrap() {
        assert_eq!(e["EndpointStatus"], "InService", "{e}");
    }
    let d = server.call("DescribeEndpoint", json!({ "EndpointName": "split" }));
    assert_eq!(d["EndpointConfigName"], "split-config", "{d}");
    assert_eq!(d["ProductionVariants"][1]["CurrentInstanceCount"], 2, "{d}");
    assert_eq!(iris_label(&server, "iris"), "setosa");
    let response = server.invoke(
        "split",
        "text/plain",
        "x",
        &[
            ("X-Amzn-SageMaker-Target-Variant", "B"),
            (CUSTOM_ATTRIBUTES, "env=GREETING"),
        ],
    );
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().unwrap(), "from the file");

    // What the file created is managed like anything else.
    server.refused(
        "DeleteModel",
        json!({ "ModelName": "iris" }),
        "ResourceInUse",
        &[],
    );
    server.refused(
        "CreateModel",
        model_input("IRIS", IRIS_WASM, json!({})),
        "ValidationException",
        &["Cannot create already existing model"],
    );
    server.call("DeleteEndpoint", json!({ "EndpointName": "iris" }));
    server.call(
        "DeleteEndpointConfig",
        json!({ "EndpointConfigName": "iris-config" }),
    );
    server.call("DeleteModel", json!({ "ModelName": "iris" }));
    assert_eq!(
        endpoint_names(&server.call("ListEndpoints", json!({}))),
        ["split"]
    );
}

// ---- CLI clients ----

#[test]
fn plinth_api_and_apply_are_clients_of_the_same_operations() {
    let server = empty_server();

    // plinth api: prints the output JSON, or fails with the error code.
    let input = model_input("cli-model", ECHO_WASM, json!({ "GREETING": "via cli" }));
    let stdout = expect_success(
        &plinth_api(&server, "CreateModel", &input, None),
        "plinth api CreateModel",
    );
    let output: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}"));
    assert_eq!(
        output,
        json!({ "ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/cli-model" })
    );
    let stdout = expect_success(
        &plinth_api(
            &server,
            "DescribeModel",
            &json!({ "ModelName": "cli-model" }),
            None,
        ),
        "plinth api DescribeModel",
    );
    let mut from_cli: Value = serde_json::from_str(&stdout).expect("DescribeModel JSON");
    let mut from_http = server.call("DescribeModel", json!({ "ModelName": "cli-model" }));
    // The same description; the timestamp may differ in its last bit after two JSON trips.
    let cli_time = from_cli["CreationTime"]
        .take()
        .as_f64()
        .expect("CreationTime");
    let http_time = from_http["CreationTime"]
        .take()
        .as_f64()
        .expect("CreationTime");
    assert!(
        (cli_time - http_time).abs() < 1e-3,
        "{cli_time} {http_time}"
    );
    assert_eq!(from_cli, from_http);
    expect_failure(
        &plinth_api(
            &server,
            "DescribeModel",
            &json!({ "ModelName": "nope" }),
            None,
        ),
        "plinth api DescribeModel (unknown)",
        &["ValidationException", "Could not find model"],
    );
    expect_failure(
        &plinth_api(&server, "CreateModel", &input, None),
        "plinth api CreateModel (again)",
        &[
            "ValidationException",
            "Cannot create already existing model",
        ],
    );
    expect_failure(
        &plinth_api(&server, "Nope", &json!({}), None),
        "plinth api Nope",
        &["UnknownOperationException"],
    );

    // plinth apply: creates what the file declares and waits for it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deploy.toml");
    let greeter = |greeting: &str| {
        Config::new()
            .endpoint(
                Model::new("greeter", ECHO_WASM).env("GREETING", greeting),
                1,
            )
            .to_toml()
    };
    std::fs::write(&file, greeter("hello")).unwrap();
    let apply = || {
        run_cli(
            BIN,
            &[
                "apply",
                "--config",
                file.to_str().unwrap(),
                "--endpoint-url",
                server.url(),
            ],
            None,
        )
    };
    let stdout = expect_success(&apply(), "plinth apply");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "created model greeter",
            "created endpoint config greeter-config",
            "created endpoint greeter",
            "ok: 1 endpoints InService",
        ],
        "{stdout}"
    );
    let d = server.call("DescribeEndpoint", json!({ "EndpointName": "greeter" }));
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    assert_eq!(d["EndpointConfigName"], "greeter-config", "{d}");
    assert_eq!(probe(&server, "greeter", "env=GREETING"), "hello");

    // Applying it again changes nothing.
    let stdout = expect_success(&apply(), "plinth apply (again)");
    assert_eq!(stdout.trim(), "ok: 1 endpoints InService");
    let again = server.call("DescribeEndpoint", json!({ "EndpointName": "greeter" }));
    assert_eq!(again["LastModifiedTime"], d["LastModifiedTime"], "{again}");
    let mut models = model_names(&server.call("ListModels", json!({})));
    models.sort();
    assert_eq!(models, ["cli-model", "greeter"]);

    // A model of the same name that differs is refused: models are immutable.
    std::fs::write(&file, greeter("changed")).unwrap();
    expect_failure(&apply(), "plinth apply (changed model)", &["immutable"]);
    let d = server.call("DescribeModel", json!({ "ModelName": "greeter" }));
    assert_eq!(
        d["PrimaryContainer"]["Environment"]["GREETING"], "hello",
        "{d}"
    );
    assert_eq!(probe(&server, "greeter", "env=GREETING"), "hello");

    // The same definition, but the component file was rebuilt under the same path: a
    // conflict that names the model and both digests (the server keeps running the old
    // bytes, so "InService" would be a lie).
    let component = dir.path().join("rebuilt.wasm");
    std::fs::copy(ECHO_WASM, &component).unwrap();
    let rebuilt = Config::new()
        .endpoint(Model::new("rebuilt", component.to_str().unwrap()), 1)
        .to_toml();
    std::fs::write(&file, rebuilt).unwrap();
    expect_success(&apply(), "plinth apply (rebuilt, first)");
    let was = server.call("DescribeModel", json!({ "ModelName": "rebuilt" }))["PlinthDigests"]
        ["Image"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::copy(plinth_tests::FAULTS_WASM, &component).unwrap();
    let refused = apply();
    expect_failure(
        &refused,
        "plinth apply (component rebuilt)",
        &["model \"rebuilt\"", &was, "immutable"],
    );
}

// ---- Authentication ----

#[test]
fn a_server_with_credentials_requires_signed_requests() {
    let server = Server::start_with(
        BIN,
        Options {
            credentials: Some(credentials_toml(ACCESS_KEY_ID, SECRET_ACCESS_KEY)),
            ..Options::default()
        },
    );
    let good = Some((ACCESS_KEY_ID, SECRET_ACCESS_KEY));

    // Unsigned: refused before anything runs, control plane and runtime alike.
    let forbidden = |response: Response, code: &str, what: &str| {
        let e = ApiError::from_response(response);
        assert_eq!(
            (e.status, e.code.as_str()),
            (StatusCode::FORBIDDEN, code),
            "{what}: {}",
            e.body
        );
    };
    forbidden(
        server.control("ListEndpoints", &json!({})),
        "MissingAuthenticationTokenException",
        "unsigned ListEndpoints",
    );
    forbidden(
        server.control("CreateModel", &model_input("sneaky", ECHO_WASM, json!({}))),
        "MissingAuthenticationTokenException",
        "unsigned CreateModel",
    );
    forbidden(
        server.invoke("anything", "text/plain", "x", &[]),
        "MissingAuthenticationTokenException",
        "unsigned InvokeEndpoint",
    );
    let garbage = server
        .client()
        .post(format!("{}/", server.url()))
        .header("X-Amz-Target", "SageMaker.ListEndpoints")
        .header("Authorization", "garbage")
        .body("{}")
        .send()
        .unwrap();
    forbidden(
        garbage,
        "IncompleteSignatureException",
        "garbage Authorization",
    );
    assert_eq!(server.ping().status(), StatusCode::OK);

    // Signed by the CLI with the right key: accepted; the refused CreateModel created nothing.
    let stdout = expect_success(
        &plinth_api(&server, "ListModels", &json!({}), good),
        "plinth api ListModels (signed)",
    );
    let output: Value = serde_json::from_str(&stdout).expect("ListModels JSON");
    assert_eq!(output, json!({ "Models": [] }));
    let stdout = expect_success(
        &plinth_api(&server, "ListEndpoints", &json!({}), good),
        "plinth api ListEndpoints (signed)",
    );
    let output: Value = serde_json::from_str(&stdout).expect("ListEndpoints JSON");
    assert_eq!(output, json!({ "Endpoints": [] }));

    // Wrong secret, unknown key, no key.
    expect_failure(
        &plinth_api(
            &server,
            "ListEndpoints",
            &json!({}),
            Some((ACCESS_KEY_ID, "wrong")),
        ),
        "plinth api with a wrong secret",
        &["InvalidSignatureException"],
    );
    expect_failure(
        &plinth_api(
            &server,
            "ListEndpoints",
            &json!({}),
            Some(("AKIDUNKNOWN", SECRET_ACCESS_KEY)),
        ),
        "plinth api with an unknown key id",
        &["UnrecognizedClientException"],
    );
    expect_failure(
        &plinth_api(&server, "ListEndpoints", &json!({}), None),
        "plinth api unsigned",
        &["MissingAuthenticationTokenException"],
    );

    // plinth apply signs every request too; the endpoint it deploys needs signed invocations.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deploy.toml");
    std::fs::write(
        &file,
        Config::new()
            .endpoint(Model::new("signed", ECHO_WASM), 1)
            .to_toml(),
    )
    .unwrap();
    let stdout = expect_success(
        &run_cli(
            BIN,
            &[
                "apply",
                "--config",
                file.to_str().unwrap(),
                "--endpoint-url",
                server.url(),
            ],
            good,
        ),
        "plinth apply (signed)",
    );
    assert!(stdout.contains("ok: 1 endpoints InService"), "{stdout}");
    forbidden(
        server.invoke("signed", "text/plain", "x", &[]),
        "MissingAuthenticationTokenException",
        "unsigned InvokeEndpoint of a live endpoint",
    );
    let stdout = expect_success(
        &run_cli(
            BIN,
            &[
                "invoke",
                "--endpoint",
                "signed",
                "--endpoint-url",
                server.url(),
                "--content-type",
                "text/plain",
                "--body",
                "signed body",
            ],
            good,
        ),
        "plinth invoke (signed)",
    );
    assert_eq!(stdout.trim(), "signed body");
    let stdout = expect_success(
        &plinth_api(&server, "ListModels", &json!({}), good),
        "plinth api ListModels (signed, after apply)",
    );
    let output: Value = serde_json::from_str(&stdout).expect("ListModels JSON");
    assert_eq!(model_names(&output), ["signed"]);
}

#[test]
fn only_a_server_with_credentials_listens_beyond_loopback() {
    let Err(e) = Server::try_start_with(
        BIN,
        Options {
            bind: "0.0.0.0:0".into(),
            ..Options::default()
        },
    ) else {
        panic!("plinth serve --bind 0.0.0.0:0 started without credentials");
    };
    assert!(e.status.is_some_and(|s| !s.success()), "{e:?}");
    assert!(e.stderr.contains("credentials"), "stderr:\n{}", e.stderr);
    assert!(e.stderr.contains("loopback"), "stderr:\n{}", e.stderr);

    // Beyond loopback, plain HTTP only when asked for (behind a proxy that terminates TLS).
    let Err(e) = Server::try_start_with(
        BIN,
        Options {
            bind: "0.0.0.0:0".into(),
            credentials: Some(credentials_toml(ACCESS_KEY_ID, SECRET_ACCESS_KEY)),
            ..Options::default()
        },
    ) else {
        panic!("plinth serve --bind 0.0.0.0:0 served plain HTTP without --plaintext");
    };
    assert!(e.stderr.contains("--tls-cert"), "stderr:\n{}", e.stderr);
    let server = Server::start_with(
        BIN,
        Options {
            bind: "0.0.0.0:0".into(),
            credentials: Some(credentials_toml(ACCESS_KEY_ID, SECRET_ACCESS_KEY)),
            args: vec!["--plaintext".into()],
            ..Options::default()
        },
    );
    let local = format!("http://127.0.0.1:{}", server.port());
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let ping = client
        .get(format!("{local}/ping"))
        .send()
        .expect("GET /ping");
    assert_eq!(ping.status(), StatusCode::OK);
    let unsigned = client
        .post(format!("{local}/"))
        .header("X-Amz-Target", "SageMaker.ListEndpoints")
        .body("{}")
        .send()
        .expect("POST /");
    let e = ApiError::from_response(unsigned);
    assert_eq!(
        (e.status, e.code.as_str()),
        (StatusCode::FORBIDDEN, "MissingAuthenticationTokenException"),
        "{}",
        e.body
    );
    let stdout = expect_success(
        &run_cli(
            BIN,
            &["api", "ListEndpoints", "{}", "--endpoint-url", &local],
            Some((ACCESS_KEY_ID, SECRET_ACCESS_KEY)),
        ),
        "plinth api ListEndpoints (signed, 0.0.0.0)",
    );
    let output: Value = serde_json::from_str(&stdout).expect("ListEndpoints JSON");
    assert_eq!(output, json!({ "Endpoints": [] }));
}
