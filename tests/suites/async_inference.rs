//! Asynchronous inference (`AsyncInferenceConfig`, InvokeEndpointAsync) against the real
//! server: boto3 end to end against the S3 test server (inputs in S3, answers compared with
//! synchronous ones, a failing input at its failure location with the model's message,
//! webhook notifications retried and delivered once), the durable queue across kill -9
//! (1,000 jobs: every accepted job ends with exactly one output or failure object, none
//! lost, none partial, interrupted ones run again), an input larger than the model's memory,
//! and scaling from zero instances on the backlog and back.

use std::path::Path;
use std::time::{Duration, Instant};

use plinth_tests::{Options, Server, FAULTS_WASM, IRIS_MODEL_DIR, IRIS_WASM};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

#[test]
fn boto3_async_with_s3_matches_synchronous_answers() {
    let bucket = format!("async-{}", std::process::id());
    let Some((python, s3, server)) =
        plinth_tests::boto3_with_s3(BIN, "async_inference::boto3_async_with_s3", &bucket)
    else {
        return;
    };
    server.run_python(
        &python,
        "test_async_boto3.py",
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
    // `plinth async status` shows the queue: 20 completed, 2 failed, 22 notifications
    // delivered (each after one refused try).
    let output = std::process::Command::new(BIN)
        .args(["async", "status", "iris-async", "--endpoint-url", server.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("0 queued, 0 running on 2 instances (2 per instance); 20 completed, 2 failed"),
        "{text}"
    );
    assert!(
        text.contains("notifications: 22 delivered, 0 pending, 0 failed"),
        "{text}"
    );
    let metrics = server.metrics();
    for line in [
        "plinth_async_notifications_total{endpoint=\"iris-async\",result=\"Delivered\"} 22",
        "plinth_async_notifications_total{endpoint=\"iris-async\",result=\"Retried\"} 22",
        "plinth_async_approximate_backlog_size{endpoint=\"iris-async\"} 0",
        "plinth_async_total_processing_time_seconds_count{endpoint=\"iris-async\"} 22",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
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

/// A scratch directory with an input file (`hello`) and an empty output directory.
fn work_dirs() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let (input, out) = (work.path().join("input.txt"), work.path().join("out"));
    std::fs::write(&input, "hello").unwrap();
    std::fs::create_dir(&out).unwrap();
    (work, input, out)
}

/// 1,000 jobs of 20 ms each, two at a time; the server killed (-9) three times while they
/// run and started again on the same data: every job accepted ends with exactly one output
/// (the model's answer, whole), none with a failure, none lost, and the jobs a kill
/// interrupted ran again.
#[test]
fn queued_jobs_survive_kill_9_and_each_ends_once() {
    let (_work, input, out) = work_dirs();
    let server = Server::start_with(BIN, Options::default());
    server.create_model("slow", FAULTS_WASM, json!({ "FAULT_DELAY_MS": "20" }));
    server.call(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": "queue", "ProductionVariants": [{
                    "VariantName": "AllTraffic", "ModelName": "slow", "InitialInstanceCount": 2 }],
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
    let jobs = 1000;
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
    let mut rerun = 0;
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        let done = results(&out).0.len();
        assert!(done < jobs, "the kill must come while jobs run ({done} done)");
        server = server.kill_and_restart().expect("restart");
        let requeued = server.wait_for_stderr(Duration::from_secs(5), |log| {
            log.contains("a stop interrupted are queued again")
        });
        rerun += usize::from(requeued.is_ok());
    }
    assert!(rerun > 0, "no kill interrupted a running job");
    let start = Instant::now();
    loop {
        let (outputs, failures, _) = results(&out);
        if outputs.len() + failures.len() >= jobs {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
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

/// An input larger than the model's memory fails unread, with a failure object saying so.
#[test]
fn an_input_larger_than_the_model_s_memory_fails_with_a_clear_message() {
    let work = tempfile::tempdir().unwrap();
    let (input, out) = (work.path().join("big.bin"), work.path().join("out"));
    std::fs::File::create(&input)
        .unwrap()
        .set_len(9 << 20)
        .unwrap();
    std::fs::create_dir(&out).unwrap();
    let server = Server::start_with(BIN, Options::default());
    server.call(
        "CreateModel",
        json!({ "ModelName": "small", "PrimaryContainer": { "Image": FAULTS_WASM },
                "PlinthLimits": { "MemorySizeInMB": 8 } }),
    );
    server.call(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": "small", "ProductionVariants": [{
                    "VariantName": "AllTraffic", "ModelName": "small", "InitialInstanceCount": 1 }],
                "AsyncInferenceConfig": {
                    "OutputConfig": { "S3OutputPath": out.display().to_string() } } }),
    );
    server.create_endpoint_settled("small", "small");
    let response = server
        .client()
        .post(format!("{}/endpoints/small/async-invocations", server.url()))
        .header("X-Amzn-SageMaker-InputLocation", input.display().to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    let failure = plinth_tests::header(&response, "x-amzn-sagemaker-failurelocation").unwrap();
    let start = Instant::now();
    while !Path::new(&failure).exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "no failure object");
        std::thread::sleep(Duration::from_millis(50));
    }
    let message = std::fs::read_to_string(&failure).unwrap();
    assert!(
        message.contains("is 9437184 bytes, more than the model's memory (8388608 bytes"),
        "{message}"
    );
    assert!(results(&out).0.is_empty(), "no output");
}

/// Set `endpoint`'s one variant to `count` instances and wait until it serves with them.
fn set_instances(server: &Server, endpoint: &str, count: u32) {
    server.call(
        "UpdateEndpointWeightsAndCapacities",
        json!({ "EndpointName": endpoint, "DesiredWeightsAndCapacities": [
            { "VariantName": "AllTraffic", "DesiredInstanceCount": count }] }),
    );
    let start = Instant::now();
    loop {
        let d = server.describe_endpoint(endpoint);
        if d["EndpointStatus"] == "InService"
            && d["ProductionVariants"][0]["CurrentInstanceCount"] == count
        {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{d}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An asynchronous endpoint `name` of one instance whose results go to `out`.
fn async_endpoint(server: &Server, name: &str, out: &Path) {
    server.create_model(name, FAULTS_WASM, json!({}));
    server.call(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": name, "ProductionVariants": [{
                    "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1 }],
                "AsyncInferenceConfig": {
                    "OutputConfig": { "S3OutputPath": out.display().to_string() } } }),
    );
    server.create_endpoint_settled(name, name);
}

/// Queue one job on `endpoint`: its output and failure locations.
fn submit(server: &Server, endpoint: &str, input: &Path, ttl: u32) -> (String, String) {
    let response = server
        .client()
        .post(format!("{}/endpoints/{endpoint}/async-invocations", server.url()))
        .header("X-Amzn-SageMaker-InputLocation", input.display().to_string())
        .header("X-Amzn-SageMaker-RequestTTLSeconds", ttl.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    (
        plinth_tests::header(&response, "x-amzn-sagemaker-outputlocation").unwrap(),
        plinth_tests::header(&response, "x-amzn-sagemaker-failurelocation").unwrap(),
    )
}

/// A job on an endpoint at zero instances, with nothing to scale it, waits its time to live
/// (60 s, SageMaker's least) and fails as expired.
#[test]
fn a_job_no_instance_runs_expires_after_its_ttl() {
    let (_work, input, out) = work_dirs();
    let server = Server::start_with(BIN, Options::default());
    async_endpoint(&server, "idle", &out);
    set_instances(&server, "idle", 0);
    let accepted = Instant::now();
    let (output, failure) = submit(&server, "idle", &input, 60);
    while !Path::new(&failure).exists() {
        assert!(
            accepted.elapsed() < Duration::from_secs(90),
            "not expired after 90 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(accepted.elapsed() >= Duration::from_secs(60), "expired early");
    let message = std::fs::read_to_string(&failure).unwrap();
    assert!(
        message.contains("waited more than its RequestTTLSeconds (60 s)"),
        "{message}"
    );
    assert!(!Path::new(&output).exists());
    let queue = server.call("DescribeAsyncQueue", json!({ "EndpointName": "idle" }));
    assert_eq!((queue["Queued"].as_u64(), queue["Failed"].as_u64()), (Some(0), Some(1)), "{queue}");
}

/// An asynchronous endpoint at zero instances: a job waits with the backlog reported, a
/// policy on `ApproximateBacklogSizePerInstance` starts an instance (MinCapacity 0 is
/// allowed for an asynchronous endpoint only, and then with a backlog policy only), the
/// job's output appears, and with the queue empty the policy scales back in to zero.
#[test]
fn a_backlog_policy_scales_from_zero_and_back() {
    let (_work, input, out) = work_dirs();
    let server = Server::start_with(
        BIN,
        Options {
            args: vec!["--autoscaling-minute".into(), "1".into()],
            ..Options::default()
        },
    );
    async_endpoint(&server, "zero", &out);
    // A synchronous endpoint cannot go to zero with traffic: only an asynchronous one.
    server.create_model("sync", FAULTS_WASM, json!({}));
    server.create_config("sync", &[("AllTraffic", "sync", 1)]);
    server.create_endpoint_settled("sync", "sync");
    let target = |endpoint: &str| {
        json!({ "ServiceNamespace": "sagemaker",
                "ResourceId": format!("endpoint/{endpoint}/variant/AllTraffic"),
                "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
                "MinCapacity": 0, "MaxCapacity": 2 })
    };
    let refused = server.control("RegisterScalableTarget", &target("sync"));
    assert_eq!(refused.status(), 400);
    assert!(refused.text().unwrap().contains("MinCapacity 0 must be at least 1"));

    // At zero instances a job waits, and the backlog says so.
    set_instances(&server, "zero", 0);
    let accepted = Instant::now();
    let (output, _) = submit(&server, "zero", &input, 600);
    let queue = || server.call("DescribeAsyncQueue", json!({ "EndpointName": "zero" }));
    let waiting = queue();
    assert_eq!(waiting["Queued"], 1, "{waiting}");
    assert_eq!(waiting["InstanceCount"], 0, "{waiting}");
    assert_eq!(waiting["HasBacklogWithoutCapacity"], 1.0, "{waiting}");
    assert!(server
        .metrics()
        .contains("plinth_async_has_backlog_without_capacity{endpoint=\"zero\"} 1"));
    std::thread::sleep(Duration::from_secs(1));
    assert!(!Path::new(&output).exists(), "nothing runs it yet");

    server.call("RegisterScalableTarget", target("zero"));
    let policy = |metric: Value| {
        json!({ "PolicyName": "backlog", "ServiceNamespace": "sagemaker",
                "ResourceId": "endpoint/zero/variant/AllTraffic",
                "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": 5.0, "ScaleInCooldown": 0, "ScaleOutCooldown": 0,
                    "CustomizedMetricSpecification": metric } })
    };
    // Invocations cannot bring a target back from zero; another endpoint's backlog is not
    // this one's.
    for (metric, wanted) in [
        (
            json!({ "MetricName": "Invocations", "Namespace": "AWS/SageMaker",
                    "Statistic": "Sum", "Dimensions": [
                        { "Name": "EndpointName", "Value": "zero" },
                        { "Name": "VariantName", "Value": "AllTraffic" }] }),
            "MinCapacity 0",
        ),
        (
            json!({ "MetricName": "ApproximateBacklogSizePerInstance",
                    "Namespace": "AWS/SageMaker", "Statistic": "Average",
                    "Dimensions": [{ "Name": "EndpointName", "Value": "sync" }] }),
            "its own endpoint's backlog only",
        ),
    ] {
        let refused = server.control("PutScalingPolicy", &policy(metric));
        assert_eq!(refused.status(), 400);
        let text = refused.text().unwrap();
        assert!(text.contains(wanted), "{text}");
    }
    server.call(
        "PutScalingPolicy",
        policy(json!({ "MetricName": "ApproximateBacklogSizePerInstance",
                       "Namespace": "AWS/SageMaker", "Statistic": "Average",
                       "Dimensions": [{ "Name": "EndpointName", "Value": "zero" }] })),
    );
    let eventually = |timeout: u64, what: &str, check: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !check() {
            assert!(start.elapsed() < Duration::from_secs(timeout), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    eventually(60, "the job's output", &|| Path::new(&output).exists());
    let took = accepted.elapsed();
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "ok");
    let scaled_out = || {
        let activities = server.call(
            "DescribeScalingActivities",
            json!({ "ServiceNamespace": "sagemaker",
                    "ResourceId": "endpoint/zero/variant/AllTraffic" }),
        );
        activities["ScalingActivities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| {
                a["Description"] == "Setting desired instance count to 1."
                    && a["StatusCode"] == "Successful"
                    && a["Cause"]
                        .as_str()
                        .is_some_and(|c| c.ends_with("0 -> 1"))
            })
    };
    eventually(30, "a successful scale-out from 0 to 1", &scaled_out);
    eprintln!("scaled from zero: output after {took:?}");
    assert!(server
        .metrics()
        .contains("plinth_async_time_in_backlog_seconds_count{endpoint=\"zero\"} 1"));
    // And back to zero once the queue is empty.
    let instances = || {
        server.describe_endpoint("zero")["ProductionVariants"][0]["DesiredInstanceCount"]
            .as_u64()
            .unwrap()
    };
    eventually(60, "scaled in to zero again", &|| instances() == 0);
}
