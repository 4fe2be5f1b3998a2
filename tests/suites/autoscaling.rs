//! Application Auto Scaling against the real server, with its minute compressed to one
//! second (`--autoscaling-minute 1`: datapoints, the 3- and 15-datapoint alarms and the
//! cooldowns all count in it), so that a load ramp of minutes plays out in seconds:
//!
//! - SageMaker's documented example (register the variant, put the target-tracking policy on
//!   `SageMakerVariantInvocationsPerInstance`) through unmodified boto3, and the endpoint
//!   scaled by it;
//! - a stepped load ramp followed within the bounds, never turning around between steps, and
//!   every activity recorded with its cause; targets, policies and activities kept across a
//!   restart;
//! - scaling paused during a deployment and resumed after it;
//! - a serverless variant's provisioned concurrency scaled on
//!   `SageMakerVariantProvisionedConcurrencyUtilization`;
//! - `plinth api` calling Application Auto Scaling's operations on a server that requires
//!   signatures (signed for `application-autoscaling`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use plinth_tests::{
    credentials_toml, expect_success, run_cli, Options, Server, ECHO_WASM, FAULTS_WASM,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");
const INSTANCES: &str = "sagemaker:variant:DesiredInstanceCount";
const PROVISIONED: &str = "sagemaker:variant:DesiredProvisionedConcurrency";

/// A server whose autoscaling minute is one second.
fn compressed() -> Server {
    Server::start_with(
        BIN,
        Options {
            args: vec!["--autoscaling-minute".into(), "1".into()],
            ..Options::default()
        },
    )
}

fn echo_endpoint(server: &Server, name: &str, instances: u32) {
    server.create_model(name, ECHO_WASM, json!({}));
    server.create_config(name, &[("AllTraffic", name, instances)]);
    let described = server.create_endpoint_settled(name, name);
    assert_eq!(described["EndpointStatus"], "InService", "{described}");
}

fn resource(endpoint: &str) -> String {
    format!("endpoint/{endpoint}/variant/AllTraffic")
}

fn register(server: &Server, endpoint: &str, dimension: &str, min: u32, max: u32) {
    server.call(
        "RegisterScalableTarget",
        json!({ "ServiceNamespace": "sagemaker", "ResourceId": resource(endpoint),
                "ScalableDimension": dimension, "MinCapacity": min, "MaxCapacity": max }),
    );
}

fn put_policy(server: &Server, endpoint: &str, dimension: &str, configuration: Value) {
    server.call(
        "PutScalingPolicy",
        json!({ "PolicyName": "track", "ServiceNamespace": "sagemaker",
                "ResourceId": resource(endpoint), "ScalableDimension": dimension,
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": configuration }),
    );
}

fn activities(server: &Server, endpoint: &str, not_scaled: bool) -> Vec<Value> {
    let out = server.call(
        "DescribeScalingActivities",
        json!({ "ServiceNamespace": "sagemaker", "ResourceId": resource(endpoint),
                "IncludeNotScaledActivities": not_scaled }),
    );
    out["ScalingActivities"].as_array().cloned().unwrap_or_default()
}

/// The variant's desired instance count, as DescribeEndpoint shows it.
fn instance_count(server: &Server, endpoint: &str) -> u64 {
    let described = server.describe_endpoint(endpoint);
    described["ProductionVariants"][0]["DesiredInstanceCount"]
        .as_u64()
        .unwrap_or_else(|| panic!("{described}"))
}

/// Requests to `endpoint` at `rate` a second for `duration`, from `threads` threads each
/// keeping its own schedule (a late request is not made up with a burst). Every request must
/// succeed.
fn load(server: &Server, endpoint: &str, rate: u32, duration: Duration, threads: u32) {
    let url = format!("{}/endpoints/{endpoint}/invocations", server.url());
    let interval = Duration::from_secs_f64(f64::from(threads) / f64::from(rate));
    let end = Instant::now() + duration;
    thread::scope(|scope| {
        for _ in 0..threads {
            let url = url.clone();
            scope.spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut next = Instant::now();
                while next < end {
                    let response = client
                        .post(&url)
                        .header("Content-Type", "text/csv")
                        .body("1,2,3")
                        .send()
                        .expect("invoke");
                    assert_eq!(response.status(), 200, "{}", response.text().unwrap_or_default());
                    next = (next + interval).max(Instant::now());
                    thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            });
        }
    });
}

/// Samples the variant's instance counts every 50 ms until stopped: the desired counts seen,
/// in order, each change once; and every current count seen.
struct Watch {
    seen: Arc<Mutex<(Vec<u64>, Vec<u64>)>>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Watch {
    fn instance_count(server: &Server, endpoint: &str) -> Self {
        let seen = Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let stop = Arc::new(AtomicBool::new(false));
        let url = server.url().to_string();
        let endpoint = endpoint.to_string();
        let handle = {
            let (seen, stop) = (seen.clone(), stop.clone());
            thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let described: Value = client
                        .post(format!("{url}/"))
                        .header("X-Amz-Target", "SageMaker.DescribeEndpoint")
                        .header("Content-Type", "application/x-amz-json-1.1")
                        .body(json!({ "EndpointName": endpoint }).to_string())
                        .send()
                        .and_then(|r| r.json())
                        .expect("DescribeEndpoint");
                    let variant = &described["ProductionVariants"][0];
                    let mut seen = seen.lock().unwrap();
                    if let Some(n) = variant["DesiredInstanceCount"].as_u64() {
                        if seen.0.last() != Some(&n) {
                            seen.0.push(n);
                        }
                    }
                    if let Some(n) = variant["CurrentInstanceCount"].as_u64() {
                        seen.1.push(n);
                    }
                    drop(seen);
                    thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Self {
            seen,
            stop,
            handle: Some(handle),
        }
    }

    /// The desired counts so far.
    fn seen(&self) -> Vec<u64> {
        self.seen.lock().unwrap().0.clone()
    }

    /// The desired counts and the current counts.
    fn stop(mut self) -> (Vec<u64>, Vec<u64>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        self.seen.lock().unwrap().clone()
    }
}

/// Wait until `check` holds (polling every 100 ms), or panic after `timeout` with `what`.
fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn boto3_documented_example_scales_an_endpoint() {
    let Some(python) = plinth_tests::venv_python("boto3_documented_example_scales_an_endpoint")
    else {
        return;
    };
    let server = compressed();
    server.run_python(&python, "test_autoscaling_boto3.py", &[("ECHO_WASM", ECHO_WASM)]);
}

/// Target 70 invocations per instance per minute, bounds 1 to 4: 180 a minute asks for 3
/// instances (180 / 70, rounded up), 360 for 6 and gets the maximum, 4 (an
/// `AlreadyAtMaxCapacity` not-scaled activity), and 15 quiet minutes scale in to the
/// minimum. The count only ever goes up while the load rises and down once it stops.
#[test]
fn a_load_ramp_is_followed_within_the_bounds_without_flapping() {
    let server = compressed();
    echo_endpoint(&server, "ramp", 1);
    register(&server, "ramp", INSTANCES, 1, 4);
    put_policy(
        &server,
        "ramp",
        INSTANCES,
        json!({ "TargetValue": 70.0,
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance" },
                "ScaleOutCooldown": 60, "ScaleInCooldown": 120 }),
    );
    let watch = Watch::instance_count(&server, "ramp");

    load(&server, "ramp", 180, Duration::from_secs(7), 6);
    assert_eq!(instance_count(&server, "ramp"), 3, "{:?}", watch.seen());
    load(&server, "ramp", 360, Duration::from_secs(7), 12);
    assert_eq!(instance_count(&server, "ramp"), 4, "{:?}", watch.seen());
    eventually(Duration::from_secs(40), "scale-in to the minimum", || {
        instance_count(&server, "ramp") == 1
            && activities(&server, "ramp", false)[0]["StatusCode"] == "Successful"
    });
    let (seen, current) = watch.stop();
    assert!(seen.iter().all(|n| (1..=4).contains(n)), "{seen:?}");
    assert!(current.iter().all(|n| (1..=4).contains(n)), "{current:?}");
    // Up while the load rose, down once it stopped: one turn, and every step is one the
    // policy asked for.
    let peak = seen.iter().position(|n| *n == 4).expect("reached 4");
    assert!(seen[..=peak].windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(seen[peak..].windows(2).all(|w| w[0] > w[1]), "{seen:?}");
    assert_eq!(seen.first(), Some(&1), "{seen:?}");

    // Every change the policy made, oldest first: up to 4 while the load rose (the first
    // from three minutes above the target), then down to 1 after fifteen quiet ones.
    let mut scaled = activities(&server, "ramp", false);
    scaled.reverse();
    let counts: Vec<u64> = scaled
        .iter()
        .map(|a| {
            assert_eq!(a["StatusCode"], "Successful", "{a}");
            let d = a["Description"].as_str().unwrap();
            d.trim_start_matches("Setting desired instance count to ")
                .trim_end_matches('.')
                .parse()
                .unwrap_or_else(|_| panic!("{d}"))
        })
        .collect();
    assert_eq!(counts.last(), Some(&1), "{scaled:?}");
    let top = counts.iter().position(|n| *n == 4).expect("a change to 4");
    assert!(counts[..=top].windows(2).all(|w| w[0] < w[1]), "{counts:?}");
    assert!(counts[top..].windows(2).all(|w| w[0] > w[1]), "{counts:?}");
    assert!(
        scaled[0]["Cause"]
            .as_str()
            .unwrap()
            .contains("policy track: the metric was above the target 70 for 3 minutes"),
        "{}",
        scaled[0]
    );
    assert!(
        scaled.last().unwrap()["Cause"].as_str().unwrap().contains("for 15 minutes"),
        "{}",
        scaled.last().unwrap()
    );
    let all = activities(&server, "ramp", true);
    let at_max = all
        .iter()
        .find(|a| a["NotScaledReasons"][0]["Code"] == "AlreadyAtMaxCapacity")
        .unwrap_or_else(|| panic!("no AlreadyAtMaxCapacity in {all:?}"));
    assert_eq!(at_max["NotScaledReasons"][0]["CurrentCapacity"], 4);
    assert_eq!(at_max["StatusCode"], "Failed");

    // Targets, policies and activities survive a crash.
    let before = (
        server.call("DescribeScalableTargets", json!({ "ServiceNamespace": "sagemaker" })),
        server.call("DescribeScalingPolicies", json!({ "ServiceNamespace": "sagemaker" })),
        activities(&server, "ramp", false),
    );
    let server = server.kill_and_restart().expect("restart");
    server.wait_in_service("ramp", Duration::from_secs(30));
    let after = (
        server.call("DescribeScalableTargets", json!({ "ServiceNamespace": "sagemaker" })),
        server.call("DescribeScalingPolicies", json!({ "ServiceNamespace": "sagemaker" })),
        activities(&server, "ramp", false),
    );
    assert_eq!(before, after);
}

/// A target whose capacity is below its new minimum is scaled at once, but not while a
/// deployment is under way: the controller waits for it to finish.
#[test]
fn scaling_pauses_during_a_deployment_and_resumes_after() {
    let server = compressed();
    echo_endpoint(&server, "deploying", 1);
    server.create_config("deploying-v2", &[("AllTraffic", "deploying", 1)]);
    server.call(
        "UpdateEndpoint",
        json!({ "EndpointName": "deploying", "EndpointConfigName": "deploying-v2",
                "DeploymentConfig": { "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 8 } } } }),
    );
    eventually(Duration::from_secs(20), "the deployment to bake", || {
        let d = server.describe_endpoint("deploying");
        d["ProductionVariants"][0]["VariantStatus"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["Status"] == "Baking"))
            || d.to_string().contains("Baking")
    });
    register(&server, "deploying", INSTANCES, 2, 3);
    // Six controller minutes pass during the bake: nothing changes.
    thread::sleep(Duration::from_secs(2));
    let during = server.describe_endpoint("deploying");
    assert_eq!(during["EndpointStatus"], "Updating", "{during}");
    assert!(activities(&server, "deploying", true).is_empty());
    let settled = server.describe_settled("deploying");
    assert_eq!(settled["EndpointConfigName"], "deploying-v2", "{settled}");
    eventually(Duration::from_secs(10), "the minimum after the deployment", || {
        instance_count(&server, "deploying") == 2
    });
    let scaled = activities(&server, "deploying", false);
    assert_eq!(scaled.len(), 1, "{scaled:?}");
    assert!(
        scaled[0]["Cause"].as_str().unwrap().contains("below MinCapacity 2"),
        "{}",
        scaled[0]
    );
}

/// A serverless variant with one provisioned instance, kept busy by four clients whose
/// requests take 100 ms each: its utilization (time in the model over the minute, per
/// provisioned instance) is near 4, far above the target of 0.5, so its provisioned
/// concurrency goes to the maximum of 3.
#[test]
fn provisioned_concurrency_follows_its_utilization() {
    let server = compressed();
    server.create_model("slow", FAULTS_WASM, json!({ "FAULT_DELAY_MS": "100" }));
    server.call(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": "slow", "ProductionVariants": [{
            "VariantName": "AllTraffic", "ModelName": "slow",
            "ServerlessConfig": { "MemorySizeInMB": 1024, "MaxConcurrency": 8,
                                  "ProvisionedConcurrency": 1 } }] }),
    );
    server.create_endpoint_settled("slow", "slow");
    register(&server, "slow", PROVISIONED, 1, 3);
    put_policy(
        &server,
        "slow",
        PROVISIONED,
        json!({ "TargetValue": 0.5,
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantProvisionedConcurrencyUtilization" },
                "ScaleOutCooldown": 60 }),
    );
    load(&server, "slow", 40, Duration::from_secs(6), 4);
    let provisioned = |server: &Server| {
        server.describe_endpoint("slow")["ProductionVariants"][0]["CurrentServerlessConfig"]
            ["ProvisionedConcurrency"]
            .as_u64()
    };
    eventually(Duration::from_secs(10), "provisioned concurrency 3", || {
        provisioned(&server) == Some(3)
    });
    let scaled = activities(&server, "slow", false);
    assert_eq!(
        scaled[0]["Description"], "Setting desired provisioned concurrency to 3.",
        "{scaled:?}"
    );
    assert_eq!(scaled[0]["ScalableDimension"], PROVISIONED);
}

/// `plinth api` names Application Auto Scaling's operations with their own `X-Amz-Target`
/// and signs them for `application-autoscaling`, as boto3 does.
#[test]
fn plinth_api_signs_autoscaling_operations_for_their_service() {
    let server = Server::start_with(
        BIN,
        Options {
            credentials: Some(credentials_toml("AKIDSCALE", "scale-secret")),
            ..Options::default()
        },
    );
    let api = |operation: &str, input: Value| {
        let input = input.to_string();
        let output = run_cli(
            BIN,
            &["api", operation, &input, "--endpoint-url", server.url()],
            Some(("AKIDSCALE", "scale-secret")),
        );
        let text = expect_success(&output, operation);
        serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{operation}: {e}: {text}"))
    };
    api(
        "CreateModel",
        json!({ "ModelName": "signed", "PrimaryContainer": { "Image": ECHO_WASM } }),
    );
    api(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": "signed", "ProductionVariants": [
            { "VariantName": "AllTraffic", "ModelName": "signed", "InitialInstanceCount": 1 }] }),
    );
    api(
        "CreateEndpoint",
        json!({ "EndpointName": "signed", "EndpointConfigName": "signed" }),
    );
    eventually(Duration::from_secs(30), "signed InService", || {
        api("DescribeEndpoint", json!({ "EndpointName": "signed" }))["EndpointStatus"]
            == "InService"
    });
    let registered = api(
        "RegisterScalableTarget",
        json!({ "ServiceNamespace": "sagemaker", "ResourceId": resource("signed"),
                "ScalableDimension": INSTANCES, "MinCapacity": 1, "MaxCapacity": 2 }),
    );
    assert!(registered["ScalableTargetARN"].is_string(), "{registered}");
    let targets = api(
        "DescribeScalableTargets",
        json!({ "ServiceNamespace": "sagemaker" }),
    );
    assert_eq!(targets["ScalableTargets"][0]["MaxCapacity"], 2, "{targets}");
}
