//! CloudWatch's API against the real server: the hosting guide's metric queries and its
//! deployment alarms through unmodified boto3 (both of CloudWatch's protocols); datapoints that survive
//! `kill -9` and a restart; `--metric-retention` checked at start, and `off` storing
//! nothing; CloudWatch's calls refused by name where Plinth does not serve them.

use plinth_tests::{
    epoch_now, Options, Server, StatusCode, ECHO_WASM, FAULTS_WASM, IRIS_MODEL_DIR, IRIS_WASM,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// The guide's code through boto3: counts exactly, latencies against the server's own
/// histograms, pages, `list_metrics`, CloudWatch's errors, and the `query` protocol.
#[test]
fn boto3_reads_the_guides_metrics() {
    let Some(python) = plinth_tests::venv_python("cloudwatch::boto3_reads_the_guides_metrics")
    else {
        return;
    };
    let server = Server::start_with(BIN, Options::default());
    server.run_python(
        &python,
        "test_cloudwatch_boto3.py",
        &[("IRIS_WASM", IRIS_WASM), ("IRIS_MODEL_DIR", IRIS_MODEL_DIR)],
    );
}

/// SageMaker's deployment guardrails with an alarm put through boto3's CloudWatch client:
/// a faulty canary rolled back; the alarm's state, history, filters, pages and errors; the
/// alarms through the `query` protocol.
#[test]
fn boto3_alarms_roll_a_faulty_canary_back() {
    let Some(python) =
        plinth_tests::venv_python("cloudwatch::boto3_alarms_roll_a_faulty_canary_back")
    else {
        return;
    };
    let server = Server::start_with(BIN, Options::default());
    server.run_python(
        &python,
        "test_cloudwatch_alarms_boto3.py",
        &[("FAULTS_WASM", FAULTS_WASM), ("ECHO_WASM", ECHO_WASM)],
    );
}

/// `Invocations`' sum for `endpoint`'s variant `A` over the last ten minutes.
fn invocations(server: &Server, endpoint: &str) -> f64 {
    let now = epoch_now();
    let output = server.call(
        "GetMetricStatistics",
        json!({
            "Namespace": "AWS/SageMaker", "MetricName": "Invocations",
            "Dimensions": [{"Name": "EndpointName", "Value": endpoint},
                           {"Name": "VariantName", "Value": "A"}],
            "StartTime": now - 600.0, "EndTime": now + 60.0, "Period": 60,
            "Statistics": ["Sum"],
        }),
    );
    output["Datapoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["Sum"].as_f64().unwrap())
        .sum()
}

/// Wait until `Invocations` reaches `wanted`.
fn settle(server: &Server, endpoint: &str, wanted: f64) {
    let started = Instant::now();
    loop {
        let got = invocations(server, endpoint);
        if got == wanted {
            return;
        }
        assert!(
            got < wanted && started.elapsed() < Duration::from_secs(20),
            "Invocations is {got}, not {wanted}; the server's log:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn echo_endpoint(server: &Server, name: &str) {
    server.create_model("echo", ECHO_WASM, json!({}));
    server.create_config("one", &[("A", "echo", 1)]);
    let d = server.create_endpoint_settled(name, "one");
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
}

fn send(server: &Server, endpoint: &str, n: usize) {
    for _ in 0..n {
        let r = server.invoke(endpoint, "text/plain", "hi", &[]);
        assert_eq!(r.status(), StatusCode::OK);
    }
}

/// Published datapoints are in the metric store's database: `kill -9` and a restart keep
/// them, and what comes after adds to them.
#[test]
fn datapoints_survive_kill_and_restart() {
    let server = Server::start_with(BIN, Options::default());
    echo_endpoint(&server, "kept");
    send(&server, "kept", 25);
    settle(&server, "kept", 25.0);
    let server = server.kill_and_restart().expect("restart");
    assert_eq!(invocations(&server, "kept"), 25.0);
    server.wait_in_service("kept", Duration::from_secs(30));
    send(&server, "kept", 5);
    settle(&server, "kept", 30.0);
    let listed = server.call("ListMetrics", json!({"MetricName": "Invocations"}));
    assert_eq!(
        listed["Metrics"],
        json!([{"Namespace": "AWS/SageMaker", "MetricName": "Invocations", "Dimensions": [
            {"Name": "EndpointName", "Value": "kept"}, {"Name": "VariantName", "Value": "A"}]}])
    );

    // `plinth metrics`: the table, and one metric's sparkline.
    let cli = |args: &[&str]| {
        let mut all = vec!["metrics", "kept", "--endpoint-url", server.url()];
        all.extend_from_slice(args);
        let out = plinth_tests::run_cli(BIN, &all, None);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let table = cli(&["--since", "10m"]);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("A "))
        .unwrap_or_else(|| panic!("{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(&row[..5], ["A", "30", "0", "0", "0"], "{table}");
    let spark = cli(&["--since", "10m", "--metric", "Invocations"]);
    assert!(spark.contains("Invocations Sum per 10 s over the last 600 s"), "{spark}");
    let line = spark.lines().next().unwrap();
    assert!(line.contains('█') && line.contains("max "), "{spark}");
    let out = plinth_tests::run_cli(BIN, &["metrics", "kept", "--endpoint-url", server.url(), "--since", "soon"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"), "{out:?}");
}

/// `--metric-retention off` stores nothing (queries find no data); a retention that cannot
/// hold is refused at start, naming the flag.
#[test]
fn retention_is_configurable_and_checked() {
    let server = Server::start_with(
        BIN,
        Options {
            args: vec!["--metric-retention".into(), "off".into()],
            ..Options::default()
        },
    );
    echo_endpoint(&server, "unkept");
    send(&server, "unkept", 10);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(invocations(&server, "unkept"), 0.0);
    assert_eq!(
        server.call("ListMetrics", json!({}))["Metrics"],
        json!([])
    );
    assert!(!server.dir().join("metrics.db").exists());
    // An alarm past the live windows needs the store.
    let long = server.control(
        "PutMetricAlarm",
        &json!({"AlarmName": "long", "Namespace": "AWS/SageMaker", "MetricName": "Invocations",
                "Dimensions": [{"Name": "EndpointName", "Value": "unkept"}], "Statistic": "Sum",
                "Period": 60, "EvaluationPeriods": 11, "Threshold": 1,
                "ComparisonOperator": "GreaterThanThreshold"}),
    );
    assert_eq!(long.status(), StatusCode::BAD_REQUEST);
    assert!(long.text().unwrap().contains("--metric-retention off"));
    let refused = Server::try_start_with(
        BIN,
        Options {
            args: vec!["--metric-retention".into(), "1m:1h,1s:3h".into()],
            ..Options::default()
        },
    )
    .err()
    .expect("a finer resolution after a coarser one is refused");
    assert!(
        refused.stderr.contains("--metric-retention"),
        "{}",
        refused.stderr
    );
}

/// CloudWatch's operations Plinth does not serve are refused by name on the CloudWatch
/// protocol (awsJson1.0 with CloudWatch's error headers), and a query-protocol call without
/// `Action` or with another `Version` gets CloudWatch's XML error.
#[test]
fn unserved_calls_are_refused_by_name() {
    let server = Server::start_with(BIN, Options::default());
    let response = server
        .client()
        .post(format!("{}/", server.url()))
        .header("X-Amz-Target", "GraniteServiceVersion20100801.PutDashboard")
        .header("Content-Type", "application/x-amz-json-1.0")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().unwrap();
    assert_eq!(body["__type"], "UnknownOperationException", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("PutDashboard"),
        "{body}"
    );
    let form = |body: &str| {
        server
            .client()
            .post(format!("{}/", server.url()))
            .header("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
            .body(body.to_owned())
            .send()
            .unwrap()
    };
    let response = form("Action=ListMetrics&Version=2009-01-01");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let xml = response.text().unwrap();
    assert!(
        xml.contains("<Code>InvalidParameterValue</Code>") && xml.contains("Version"),
        "{xml}"
    );
    let response = form("Action=ListMetrics&Version=2010-08-01");
    assert_eq!(response.status(), StatusCode::OK);
    let xml = response.text().unwrap();
    assert!(
        xml.starts_with("<ListMetricsResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\"><ListMetricsResult><Metrics></Metrics>"),
        "{xml}"
    );
}

/// An alarm's state and history are stored: after `kill -9` and a restart, an alarm set to
/// `ALARM` with `TreatMissingData: ignore` and no traffic is still in `ALARM`, and its
/// history holds what came before.
#[test]
fn alarm_states_and_history_survive_kill_and_restart() {
    let server = Server::start_with(BIN, Options::default());
    echo_endpoint(&server, "watched");
    server.call(
        "PutMetricAlarm",
        json!({"AlarmName": "kept", "Namespace": "AWS/SageMaker", "MetricName": "Invocation5XXErrors",
               "Dimensions": [{"Name": "EndpointName", "Value": "watched"}],
               "Statistic": "Sum", "Period": 10, "EvaluationPeriods": 1, "Threshold": 0,
               "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "ignore"}),
    );
    server.call(
        "SetAlarmState",
        json!({"AlarmName": "kept", "StateValue": "ALARM", "StateReason": "paged by hand"}),
    );
    let server = server.kill_and_restart().expect("restart");
    // Evaluated again after the restart (every second), with no datapoint: kept.
    std::thread::sleep(Duration::from_secs(2));
    let alarms = server.call("DescribeAlarms", json!({"AlarmNames": ["kept"]}));
    let alarm = &alarms["MetricAlarms"][0];
    assert_eq!(alarm["StateValue"], "ALARM", "{alarm}");
    assert_eq!(alarm["StateReason"], "paged by hand", "{alarm}");
    let history = server.call(
        "DescribeAlarmHistory",
        json!({"AlarmName": "kept", "ScanBy": "TimestampAscending"}),
    );
    let summaries: Vec<&str> = history["AlarmHistoryItems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["HistorySummary"].as_str().unwrap())
        .collect();
    assert_eq!(
        summaries,
        [
            "Alarm \"kept\" created",
            "Alarm updated from INSUFFICIENT_DATA to ALARM"
        ],
        "{history}"
    );
}

/// `metric`'s `statistic` summed over the last ten minutes for the series `dimensions`,
/// once it reaches `at_least` (within 20 s).
fn statistic_at_least(
    server: &Server,
    metric: &str,
    dimensions: Value,
    statistic: &str,
    at_least: f64,
) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let now = epoch_now();
        let output = server.call(
            "GetMetricStatistics",
            json!({"Namespace": "AWS/SageMaker", "MetricName": metric, "Dimensions": dimensions,
                   "StartTime": now - 600.0, "EndTime": now + 60.0, "Period": 60,
                   "Statistics": [statistic]}),
        );
        let points = output["Datapoints"].as_array().unwrap().clone();
        let total: f64 = points.iter().map(|d| d[statistic].as_f64().unwrap()).sum();
        if total >= at_least {
            return points;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{metric} {statistic} is {total}, not {at_least}: {output}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Metrics of the other hosting modes reach CloudWatch: a serverless variant's
/// `ModelSetupTime` (one cold start), an asynchronous endpoint's `TimeInBacklog` and
/// `TotalProcessingTime` per job (milliseconds, one sample each) and its backlog gauges
/// (dimension `EndpointName` only), with their units.
#[test]
fn serverless_and_asynchronous_metrics_are_published() {
    let work = tempfile::tempdir().unwrap();
    let (input, out) = (work.path().join("input.txt"), work.path().join("out"));
    std::fs::write(&input, "hello").unwrap();
    std::fs::create_dir(&out).unwrap();
    let server = Server::start_with(BIN, Options::default());
    server.create_model("echo", ECHO_WASM, json!({}));
    server.call(
        "CreateEndpointConfig",
        json!({"EndpointConfigName": "cold", "ProductionVariants": [{"VariantName": "AllTraffic",
               "ModelName": "echo", "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2}}]}),
    );
    assert_eq!(server.create_endpoint_settled("cold", "cold")["EndpointStatus"], "InService");
    let r = server.invoke("cold", "text/plain", "hi", &[]);
    assert_eq!(r.status(), StatusCode::OK);
    let serverless = json!([{"Name": "EndpointName", "Value": "cold"},
                            {"Name": "VariantName", "Value": "AllTraffic"}]);
    let setup = statistic_at_least(&server, "ModelSetupTime", serverless, "SampleCount", 1.0);
    assert_eq!(setup[0]["Unit"], "Microseconds", "{setup:?}");

    server.call(
        "CreateEndpointConfig",
        json!({"EndpointConfigName": "queue", "ProductionVariants": [{"VariantName": "AllTraffic",
               "ModelName": "echo", "InitialInstanceCount": 1}],
               "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": out.display().to_string()}}}),
    );
    assert_eq!(server.create_endpoint_settled("queue", "queue")["EndpointStatus"], "InService");
    for _ in 0..3 {
        let response = server
            .client()
            .post(format!("{}/endpoints/queue/async-invocations", server.url()))
            .header("X-Amzn-SageMaker-InputLocation", input.display().to_string())
            .send()
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let endpoint = json!([{"Name": "EndpointName", "Value": "queue"}]);
    for metric in ["TimeInBacklog", "TotalProcessingTime"] {
        let points = statistic_at_least(&server, metric, endpoint.clone(), "SampleCount", 3.0);
        assert_eq!(points[0]["Unit"], "Milliseconds", "{metric}: {points:?}");
    }
    // Sampled every second while the endpoint exists: present, and empty once done.
    let size = statistic_at_least(&server, "ApproximateBacklogSize", endpoint.clone(), "SampleCount", 2.0);
    assert_eq!(size.last().unwrap()["Unit"], "None");
    let last = statistic_at_least(&server, "HasBacklogWithoutCapacity", endpoint, "Maximum", 0.0);
    assert!(last.iter().all(|d| d["Maximum"] == 0.0), "{last:?}");
}

/// An alarm over more than the live windows' 600 s (Period 60 × EvaluationPeriods 15) is
/// evaluated over the stored datapoints: model errors put it in `ALARM` within seconds, and
/// its `StateReasonData` has the period; one with a Period that is not a multiple of 60 is
/// refused.
#[test]
fn a_long_alarm_is_evaluated_over_the_stored_datapoints() {
    let server = Server::start_with(BIN, Options::default());
    server.create_model(
        "broken",
        FAULTS_WASM,
        json!({"FAULT_DEFAULT": "model-error"}),
    );
    server.create_config("broken", &[("A", "broken", 1)]);
    let d = server.create_endpoint_settled("failing", "broken");
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    let alarm = json!({"AlarmName": "quarter-hour", "Namespace": "AWS/SageMaker",
        "MetricName": "InvocationModelErrors",
        "Dimensions": [{"Name": "EndpointName", "Value": "failing"},
                       {"Name": "VariantName", "Value": "A"}],
        "Statistic": "Sum", "Period": 60, "EvaluationPeriods": 15, "DatapointsToAlarm": 1,
        "Threshold": 0, "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching"});
    server.call("PutMetricAlarm", alarm.clone());
    let mut odd = alarm.clone();
    odd["Period"] = json!(90);
    let refused = server.control("PutMetricAlarm", &odd);
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.text().unwrap().contains("multiple of 60"));
    let state = |server: &Server| {
        server.call("DescribeAlarms", json!({"AlarmNames": ["quarter-hour"]}))["MetricAlarms"][0]
            .clone()
    };
    // No request yet: nothing breaches (notBreaching).
    let started = Instant::now();
    while state(&server)["StateValue"] != "OK" {
        assert!(started.elapsed() < Duration::from_secs(10), "{}", state(&server));
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..5 {
        let r = server.invoke("failing", "text/plain", "hi", &[]);
        assert!(r.status().is_client_error() || r.status().is_server_error());
    }
    let started = Instant::now();
    loop {
        let a = state(&server);
        if a["StateValue"] == "ALARM" {
            let data: Value = serde_json::from_str(a["StateReasonData"].as_str().unwrap()).unwrap();
            assert_eq!(data["period"], 60, "{a}");
            // The errors of the newest stored period (all five, or those stored when the
            // state changed).
            let newest = data["recentDatapoints"][0].as_f64().unwrap();
            assert!((1.0..=5.0).contains(&newest), "{a}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{a}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
