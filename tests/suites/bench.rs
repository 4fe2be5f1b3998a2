//! `plinth bench`, the load test, run as a subprocess against a real server: a concurrency
//! sweep as JSON (shape, answers, no errors, the variant split) and as a table with a
//! recommendation; an instance sweep that sets each count, recommends one and restores the
//! original; an open loop at 50 requests/s signed with SigV4; and the errors a user meets (an
//! unknown endpoint, a server that does not answer, a URL that refuses, bad flags).

use std::net::TcpListener;
use std::process::Output;

use plinth_tests::{
    credentials_toml, expect_failure, expect_success, run_cli, Config, Model, Options, Server,
    Variant, SETOSA_ROW,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

const ACCESS_KEY_ID: &str = "AKIDBENCHEXAMPLE";
const SECRET_ACCESS_KEY: &str = "bench/secret/key";

/// `plinth bench --endpoint-url URL --body SETOSA_ROW ARGS` (split on whitespace), signing
/// with `credentials` if given (see `plinth_tests::run_cli`).
fn bench(url: &str, args: &str, credentials: Option<(&str, &str)>) -> Output {
    let mut all = vec!["bench", "--endpoint-url", url, "--body", SETOSA_ROW];
    all.extend(args.split_whitespace());
    run_cli(BIN, &all, credentials)
}

/// Endpoint `iris` with one variant `A` of `instances` instances.
fn iris_config(instances: u32) -> String {
    Config::new()
        .model(Model::iris("iris"))
        .endpoint_with_variants("iris", vec![Variant::new("A", "iris", instances)])
        .to_toml()
}

/// stdout as JSON, after checking that the command succeeded.
#[track_caller]
fn json_output(output: &Output, what: &str) -> Value {
    let stdout = expect_success(output, what);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not one JSON document ({e}):\n{stdout}"))
}

/// A run without errors, whose answers all came from variant A, with sane latencies.
#[track_caller]
fn check_clean_run(run: &Value) {
    let requests = run["requests"].as_u64().expect("requests");
    assert!(requests > 0, "no requests: {run}");
    assert_eq!(run["errors"], 0, "{run}");
    assert_eq!(run["non_2xx"], 0, "{run}");
    assert_eq!(run["dropped"], 0, "{run}");
    assert_eq!(run["variants"], json!({ "A": requests }), "{run}");
    assert_eq!(run["error_messages"], json!([]), "{run}");
    assert!(run["rps"].as_f64().unwrap() > 0.0, "{run}");
    let l = &run["latency_ms"];
    let [p50, p90, p99, max] = ["p50", "p90", "p99", "max"].map(|k| l[k].as_f64().unwrap());
    assert!(
        0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max,
        "latencies out of order: {l}"
    );
    assert!(l["mean"].as_f64().unwrap() > 0.0, "{l}");
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_concurrency_sweep_reports_every_run_and_errors_are_clear() {
    let server = Server::start(BIN, &iris_config(2));
    let output = bench(
        server.url(),
        "--endpoint iris --concurrency 1,2 --duration 1 --warmup 0 --json",
        None,
    );
    let doc = json_output(&output, "plinth bench --concurrency 1,2 --json");
    assert_eq!(doc["endpoint"], "iris");
    assert_eq!(doc["mode"], "closed");
    assert_eq!(doc["duration_s"], 1.0);
    assert_eq!(doc["warmup_s"], 0.0);
    assert_eq!(doc["percentile"], 99.0);
    assert_eq!(doc["recommendation"], Value::Null);
    assert_eq!(
        doc["url"],
        format!("{}/endpoints/iris/invocations", server.url())
    );
    let runs = doc["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{doc}");
    for (run, concurrency) in runs.iter().zip([1, 2]) {
        assert_eq!(run["concurrency"], concurrency, "{run}");
        assert_eq!(run["rate"], Value::Null);
        assert_eq!(run["instances"], Value::Null);
        assert_eq!(run["meets_target"], Value::Null);
        check_clean_run(run);
    }

    // The table, with a recommendation: the highest concurrency that meets the target.
    let output = bench(
        server.url(),
        "--endpoint iris --concurrency 1,2 --duration 0.5 --warmup 0 --latency-target-ms 10000",
        None,
    );
    let table = expect_success(&output, "plinth bench (table)");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].trim_start().starts_with("CONCURRENCY") && lines[0].ends_with("VARIANTS"),
        "{table}"
    );
    assert!(lines[1].trim_start().starts_with('1'), "{table}");
    assert!(lines[2].trim_start().starts_with('2'), "{table}");
    assert!(lines[1].contains("A="), "{table}");
    assert!(
        lines[3].starts_with("recommendation: concurrency 2: p99 "),
        "{table}"
    );

    // An unknown endpoint is named; nothing is loaded.
    let output = bench(server.url(), "--endpoint nope", None);
    expect_failure(
        &output,
        "plinth bench --endpoint nope",
        &["endpoint nope does not exist on", "ListEndpoints"],
    );
    // A URL whose endpoint does not exist: the test request's answer says why.
    let url = format!("{}/endpoints/nope/invocations", server.url());
    let output = bench(server.url(), &format!("--url {url}"), None);
    expect_failure(
        &output,
        "plinth bench --url (unknown endpoint)",
        &["refused a test request: HTTP 400", "ValidationError"],
    );
    // A variant the endpoint does not have.
    let output = bench(
        server.url(),
        "--endpoint iris --variant Z --instances 1",
        None,
    );
    expect_failure(
        &output,
        "plinth bench --variant Z",
        &["endpoint iris has no production variant Z (it has A)"],
    );
    // Bad flags.
    for (args, message) in [
        ("--concurrency 0", "--concurrency must be at least 1"),
        ("--rate 10,0", "--rate must be positive"),
        ("--instances 1,2", "--variant"),
        ("--concurrency 1 --rate 5", "cannot be used with"),
        ("--duration 0", "--duration must be a positive number"),
    ] {
        let output = bench(server.url(), &format!("--endpoint iris {args}"), None);
        expect_failure(&output, args, &[message]);
    }
    drop(server);

    // A server that does not answer.
    let nobody = format!("http://127.0.0.1:{}", closed_port());
    let output = bench(&nobody, "--endpoint iris", None);
    expect_failure(
        &output,
        "plinth bench (no server)",
        &["cannot reach", "is Plinth running there?"],
    );
    let output = bench(
        &nobody,
        &format!("--url {nobody}/endpoints/iris/invocations"),
        None,
    );
    expect_failure(
        &output,
        "plinth bench --url (no server)",
        &["does not answer", "cannot connect to"],
    );
}

#[test]
fn an_instance_sweep_recommends_a_count_and_restores_the_original() {
    let server = Server::start(BIN, &iris_config(3));
    let output = bench(
        server.url(),
        "--endpoint iris --variant A --instances 1,2 --concurrency 2 --duration 1 --warmup 0 \
         --latency-target-ms 10000 --json",
        None,
    );
    let doc = json_output(&output, "plinth bench --instances 1,2 --json");
    assert_eq!(doc["variant"], "A");
    assert_eq!(doc["original_instances"], 3);
    let runs = doc["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{doc}");
    for (run, instances) in runs.iter().zip([1, 2]) {
        assert_eq!(run["instances"], instances, "{run}");
        assert_eq!(run["concurrency"], 2, "{run}");
        assert_eq!(run["meets_target"], true, "{run}");
        check_clean_run(run);
    }
    let recommendation = &doc["recommendation"];
    assert_eq!(recommendation["met"], true, "{doc}");
    assert_eq!(recommendation["instances"], 1, "{doc}");
    assert_eq!(recommendation["percentile"], 99.0);
    assert_eq!(recommendation["target_ms"], 10000.0);
    assert!(
        recommendation["message"]
            .as_str()
            .unwrap()
            .starts_with("1 instance of variant A: p99 "),
        "{recommendation}"
    );

    // The original count is back, and the endpoint went through 1 and 2 on the way.
    let description = server.describe_settled("iris");
    assert_eq!(description["EndpointStatus"], "InService", "{description}");
    let variant = &description["ProductionVariants"][0];
    assert_eq!(variant["CurrentInstanceCount"], 3, "{description}");
    assert_eq!(variant["DesiredInstanceCount"], 3, "{description}");
    let events = server.call(
        "ListEndpointEvents",
        json!({ "EndpointName": "iris", "MaxResults": 1000 }),
    );
    let messages: Vec<&str> = events["Events"]
        .as_array()
        .expect("Events")
        .iter()
        .filter_map(|e| e["Message"].as_str())
        .filter(|m| m.starts_with("Changing weights and instance counts"))
        .collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    for (message, count) in messages.iter().zip(["x1", "x2", "x3"]) {
        assert!(message.ends_with(count), "{messages:?}");
    }
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("variant A of iris restored to 3"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn an_open_loop_at_a_rate_sends_that_many_signed_requests() {
    let credentials = credentials_toml(ACCESS_KEY_ID, SECRET_ACCESS_KEY);
    let server = Server::start_with(
        BIN,
        Options {
            config: Some(iris_config(2)),
            credentials: Some(credentials),
            ..Options::default()
        },
    );
    let args = "--endpoint iris --rate 50 --duration 1 --warmup 0 --json";
    let output = bench(server.url(), args, Some((ACCESS_KEY_ID, SECRET_ACCESS_KEY)));
    let doc = json_output(&output, "plinth bench --rate 50 --json (signed)");
    assert_eq!(doc["mode"], "open");
    let runs = doc["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{doc}");
    let run = &runs[0];
    assert_eq!(run["rate"], 50.0, "{run}");
    assert_eq!(run["concurrency"], Value::Null, "{run}");
    check_clean_run(run);
    // 50 are due in the second; allow for a slow machine at the edges.
    let requests = run["requests"].as_u64().unwrap();
    assert!((40..=60).contains(&requests), "{requests} requests: {run}");

    // Unsigned, the server refuses before any load.
    let output = bench(server.url(), args, None);
    expect_failure(
        &output,
        "plinth bench (unsigned)",
        &["DescribeEndpoint iris: MissingAuthenticationTokenException"],
    );
}
