//! Serverless variants (`ProductionVariant.ServerlessConfig`) against the real server: no
//! instance until a request needs one (a cold start, `plinth_model_setup_time_seconds`),
//! idle instances dropped after `PlinthIdleTimeoutInSeconds` (back to zero) and the next
//! request served again; `ProvisionedConcurrency` kept warm; requests beyond
//! `MaxConcurrency` throttled at once; DescribeEndpoint's `CurrentServerlessConfig`; and
//! every invalid combination refused.

use std::time::{Duration, Instant};

use plinth_tests::metrics::{counter, of_variant, sample};
use plinth_tests::{Options, Server, FAULTS_WASM, IRIS_MODEL_DIR, IRIS_WASM, SETOSA_ROW};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

fn serverless_endpoint(server: &Server, name: &str, model: &str, config: Value) {
    server.call(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": name, "ProductionVariants": [
            { "VariantName": "AllTraffic", "ModelName": model, "ServerlessConfig": config }] }),
    );
    let described = server.create_endpoint_settled(name, name);
    assert_eq!(described["EndpointStatus"], "InService", "{described}");
}

/// A server with the model `iris`.
fn with_iris() -> Server {
    let server = Server::start_with(BIN, Options::default());
    server.call(
        "CreateModel",
        json!({ "ModelName": "iris", "PrimaryContainer": {
            "Image": IRIS_WASM, "ModelDataUrl": IRIS_MODEL_DIR } }),
    );
    server
}

fn instances(server: &Server, endpoint: &str) -> f64 {
    sample(
        &server.metrics(),
        "plinth_variant_instances",
        &of_variant(endpoint, "AllTraffic"),
    )
    .unwrap_or(0.0)
}

fn setups(server: &Server, endpoint: &str) -> f64 {
    counter(
        &server.metrics(),
        "plinth_model_setup_time_seconds_count",
        &of_variant(endpoint, "AllTraffic"),
    )
}

fn assert_setosa(server: &Server, endpoint: &str) {
    let response = server.invoke(endpoint, "text/csv", SETOSA_ROW, &[]);
    let status = response.status();
    let body = response.text().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("setosa"), "{body}");
}

/// No instance until the first request; one cold start for it; warm after; back to zero
/// after the idle timeout, and the next request starts one again.
#[test]
fn a_serverless_variant_starts_on_demand_and_scales_to_zero() {
    let server = with_iris();
    serverless_endpoint(
        &server,
        "sl",
        "iris",
        json!({ "MemorySizeInMB": 2048, "MaxConcurrency": 4, "PlinthIdleTimeoutInSeconds": 1 }),
    );
    let described = server.describe_endpoint("sl");
    let variant = &described["ProductionVariants"][0];
    assert_eq!(
        variant["CurrentServerlessConfig"],
        json!({ "MemorySizeInMB": 2048, "MaxConcurrency": 4 }),
        "{variant}"
    );
    assert!(variant.get("CurrentInstanceCount").is_none(), "{variant}");
    assert_eq!(instances(&server, "sl"), 0.0, "no instance before a request");

    assert_setosa(&server, "sl");
    assert_eq!(setups(&server, "sl"), 1.0, "the first request started an instance");
    assert_setosa(&server, "sl");
    assert_eq!(setups(&server, "sl"), 1.0, "the second found it warm");
    assert_eq!(instances(&server, "sl"), 1.0);

    // Idle past the timeout: dropped (the upkeep looks every second).
    let deadline = Instant::now() + Duration::from_secs(10);
    while instances(&server, "sl") > 0.0 {
        assert!(Instant::now() < deadline, "the idle instance was never dropped");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_setosa(&server, "sl");
    assert_eq!(setups(&server, "sl"), 2.0, "a cold start again after scaling to zero");
}

/// `ProvisionedConcurrency` instances are warm from the start and stay after the idle
/// timeout; beyond `MaxConcurrency`, requests are throttled at once, not queued.
#[test]
fn provisioned_instances_stay_warm_and_max_concurrency_throttles() {
    let server = Server::start_with(BIN, Options::default());
    server.call(
        "CreateModel",
        json!({ "ModelName": "slow", "PrimaryContainer": {
            "Image": FAULTS_WASM, "Environment": { "FAULT_DELAY_MS": "600" } } }),
    );
    serverless_endpoint(
        &server,
        "sl-slow",
        "slow",
        json!({ "MemorySizeInMB": 1024, "MaxConcurrency": 2, "ProvisionedConcurrency": 1,
                "PlinthIdleTimeoutInSeconds": 1 }),
    );
    assert_eq!(instances(&server, "sl-slow"), 1.0, "the provisioned instance is warm");

    let results: Vec<(u16, String, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    let started = Instant::now();
                    let response = server.invoke("sl-slow", "text/plain", "", &[]);
                    let status = response.status().as_u16();
                    (status, response.text().unwrap(), started.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let served = results.iter().filter(|r| r.0 == 200).count();
    let throttled: Vec<_> = results.iter().filter(|r| r.0 == 400).collect();
    assert!(
        (1..=2).contains(&served),
        "at most MaxConcurrency served at once: {results:?}"
    );
    assert_eq!(served + throttled.len(), 6, "{results:?}");
    for (_, body, took) in &throttled {
        assert!(body.contains("ThrottlingException"), "{body}");
        assert!(*took < Duration::from_millis(500), "throttled at once, not after {took:?}");
    }
    // Idle past the timeout: the instance started beyond the provisioned one goes, the
    // provisioned one stays.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(instances(&server, "sl-slow"), 1.0);
}

/// What SageMaker refuses for serverless variants is refused, naming the member.
#[test]
fn invalid_serverless_configs_are_refused() {
    let server = with_iris();
    let ok = json!({ "MemorySizeInMB": 2048, "MaxConcurrency": 4 });
    let variant = |extra: Value| {
        let mut v = json!({ "VariantName": "A", "ModelName": "iris", "ServerlessConfig": ok });
        for (key, value) in extra.as_object().unwrap() {
            v[key] = value.clone();
        }
        v
    };
    let cases = [
        (
            json!([variant(json!({ "InitialInstanceCount": 1 }))]),
            "InitialInstanceCount cannot be given with ServerlessConfig",
        ),
        (
            json!([variant(json!({ "ServerlessConfig": { "MemorySizeInMB": 1500, "MaxConcurrency": 4 } }))]),
            "must be one of 1024, 2048",
        ),
        (
            json!([variant(json!({ "ServerlessConfig": { "MemorySizeInMB": 1024, "MaxConcurrency": 2, "ProvisionedConcurrency": 3 } }))]),
            "must not be greater than MaxConcurrency",
        ),
        (
            json!([variant(json!({ "ServerlessConfig": { "MemorySizeInMB": 8192, "MaxConcurrency": 2 } }))]),
            "MemorySizeInMB",
        ),
        (
            json!([variant(json!({})), { "VariantName": "B", "ModelName": "iris", "InitialInstanceCount": 1 }]),
            "only production variant",
        ),
    ];
    for (variants, says) in cases {
        let response = server.control(
            "CreateEndpointConfig",
            &json!({ "EndpointConfigName": "bad", "ProductionVariants": variants }),
        );
        assert_eq!(response.status(), 400, "{variants}");
        let text = response.text().unwrap();
        assert!(text.contains(says), "{says:?} not in {text}");
    }
    // DesiredInstanceCount on a serverless variant.
    serverless_endpoint(&server, "sl-cap", "iris", ok.clone());
    let response = server.control(
        "UpdateEndpointWeightsAndCapacities",
        &json!({ "EndpointName": "sl-cap", "DesiredWeightsAndCapacities": [
            { "VariantName": "AllTraffic", "DesiredInstanceCount": 3 }] }),
    );
    assert_eq!(response.status(), 400);
    assert!(response.text().unwrap().contains("is serverless"));
}

/// `ServerlessUpdateConfig` changes a running variant's concurrency: a higher
/// `ProvisionedConcurrency` warms instances at once, DescribeEndpoint shows it, and it
/// survives a restart; invalid updates are refused.
#[test]
fn serverless_update_config_changes_concurrency_and_survives_a_restart() {
    let server = with_iris();
    serverless_endpoint(
        &server,
        "sl-up",
        "iris",
        json!({ "MemorySizeInMB": 1024, "MaxConcurrency": 2 }),
    );
    assert_eq!(instances(&server, "sl-up"), 0.0);
    server.call(
        "UpdateEndpointWeightsAndCapacities",
        json!({ "EndpointName": "sl-up", "DesiredWeightsAndCapacities": [
            { "VariantName": "AllTraffic",
              "ServerlessUpdateConfig": { "MaxConcurrency": 6, "ProvisionedConcurrency": 3 } }] }),
    );
    let described = server.wait_in_service("sl-up", Duration::from_secs(30));
    let expected = json!({ "MemorySizeInMB": 1024, "MaxConcurrency": 6, "ProvisionedConcurrency": 3 });
    assert_eq!(
        described["ProductionVariants"][0]["CurrentServerlessConfig"],
        expected,
        "{described}"
    );
    assert_eq!(instances(&server, "sl-up"), 3.0, "the provisioned instances are warm");
    assert_setosa(&server, "sl-up");

    // Above MaxConcurrency, or on an instance variant: refused.
    let response = server.control(
        "UpdateEndpointWeightsAndCapacities",
        &json!({ "EndpointName": "sl-up", "DesiredWeightsAndCapacities": [
            { "VariantName": "AllTraffic", "ServerlessUpdateConfig": { "ProvisionedConcurrency": 7 } }] }),
    );
    assert_eq!(response.status(), 400);
    assert!(response.text().unwrap().contains("must not be greater than MaxConcurrency 6"));

    let server = server.kill_and_restart().expect("restart");
    let described = server.wait_in_service("sl-up", Duration::from_secs(30));
    assert_eq!(
        described["ProductionVariants"][0]["CurrentServerlessConfig"],
        expected,
        "{described}"
    );
    assert_eq!(instances(&server, "sl-up"), 3.0);
    assert_setosa(&server, "sl-up");
}
