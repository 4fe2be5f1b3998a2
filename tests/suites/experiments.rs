//! A/B experiments inside an endpoint (`PlinthExperiment` on an endpoint config): outcomes
//! recorded by inference id and attributed to the variant that served it (unknown,
//! duplicate, invalid and late outcomes refused and counted), the report with each
//! variant's mean and interval and an always-valid verdict against the control, the
//! automatic promotion of a winner through the weight-update path, Thompson-sampling
//! routing that moves traffic to the better variant, sticky assignment by key, and the
//! ledger surviving a restart.
//!
//! The statistics themselves (false-positive rate under peeking, power, regret, key
//! movement) are tested by simulation in `host/policy`; invalid `PlinthExperiment` configs
//! and DescribeExperiment without an experiment are fixture cases
//! (`tests/cases/CreateEndpointConfig/experiment-*`, `tests/cases/DescribeExperiment/`).

use plinth_tests::{header, Options, Server, StatusCode, ECHO_WASM, INVOKED_VARIANT};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// A server with model `echo` and endpoint `ab` on config `ab-config`: variants A (the
/// control) and B, weights 1:1, with `experiment` as the config's `PlinthExperiment`.
fn ab_server(experiment: Value) -> Server {
    let server = Server::start_with(BIN, Options::default());
    server.create_model("echo", ECHO_WASM, json!({}));
    ab_config(&server, "ab-config", experiment);
    let d = server.create_endpoint_settled("ab", "ab-config");
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    server
}

fn ab_config(server: &Server, name: &str, experiment: Value) {
    server.call(
        "CreateEndpointConfig",
        json!({"EndpointConfigName": name, "ProductionVariants": [
            {"VariantName": "A", "ModelName": "echo"},
            {"VariantName": "B", "ModelName": "echo"}],
            "PlinthExperiment": experiment}),
    );
}

/// Invoke `ab` with inference id `id`; the variant that served it.
fn invoke(server: &Server, id: &str, extra: &[(&str, &str)]) -> String {
    let mut headers = vec![("X-Amzn-SageMaker-Inference-Id", id)];
    headers.extend_from_slice(extra);
    let r = server.invoke("ab", "text/plain", "hi", &headers);
    assert_eq!(r.status(), StatusCode::OK);
    header(&r, INVOKED_VARIANT).unwrap()
}

fn record(server: &Server, outcomes: &[(String, f64)]) -> Value {
    let outcomes: Vec<Value> = outcomes
        .iter()
        .map(|(id, v)| json!({"InferenceId": id, "Value": v}))
        .collect();
    let mut recorded = 0;
    let mut rejected = Vec::new();
    for chunk in outcomes.chunks(1000) {
        let r = server.call(
            "RecordInferenceOutcomes",
            json!({"EndpointName": "ab", "Outcomes": chunk}),
        );
        recorded += r["Recorded"].as_u64().unwrap();
        rejected.extend(r["Rejected"].as_array().unwrap().iter().cloned());
    }
    json!({"Recorded": recorded, "Rejected": rejected})
}

fn report(server: &Server) -> Value {
    server.call("DescribeExperiment", json!({"EndpointName": "ab"}))
}

fn variant<'a>(report: &'a Value, name: &str) -> &'a Value {
    plinth_tests::json::item(report, "Variants", "VariantName", name)
}

/// Serve `n` requests and give each an outcome: 1 with probability `rates[variant]`.
fn run_traffic(
    server: &Server,
    prefix: &str,
    n: usize,
    rates: &BTreeMap<&str, f64>,
    rng: &mut impl Rng,
) -> BTreeMap<String, usize> {
    let mut served = BTreeMap::new();
    let mut outcomes = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let v = invoke(server, &id, &[]);
        let converted = rng.random::<f64>() < rates[v.as_str()];
        *served.entry(v).or_insert(0) += 1;
        outcomes.push((id, f64::from(u8::from(converted))));
    }
    let r = record(server, &outcomes);
    assert_eq!(r["Recorded"], n as u64, "{r}");
    served
}

#[test]
fn outcomes_are_attributed_compared_and_bad_ones_counted() {
    let server = ab_server(json!({"ControlVariant": "A"}));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let rates = BTreeMap::from([("A", 0.10), ("B", 0.30)]);
    let served = run_traffic(&server, "r", 1500, &rates, &mut rng);

    let r = report(&server);
    let (a, b) = (variant(&r, "A"), variant(&r, "B"));
    assert_eq!(a["Invocations"], served["A"] as u64, "{r}");
    assert_eq!(b["Invocations"], served["B"] as u64, "{r}");
    assert_eq!(a["Outcomes"], served["A"] as u64);
    assert_eq!(a["Verdict"], "Control");
    assert_eq!(b["Verdict"], "Better", "{r}");
    for (v, rate) in [(a, 0.10), (b, 0.30)] {
        let mean = v["Mean"].as_f64().unwrap();
        let interval = v["Interval"].as_array().unwrap();
        let (lo, hi) = (interval[0].as_f64().unwrap(), interval[1].as_f64().unwrap());
        assert!(lo < mean && mean < hi, "{v}");
        // Routing is random, so each run draws differently: stay far from flaky bounds
        // (about 5 standard errors at ~750 outcomes per variant).
        assert!(
            (mean - rate).abs() < 0.08,
            "mean {mean} far from the true rate {rate}: {v}"
        );
        assert!(hi - lo < 0.1, "interval too wide: {v}");
    }
    let c = &b["Comparison"];
    assert!(c["Difference"].as_f64().unwrap() > 0.1, "{c}");
    assert!(c["Sequential"]["PValue"].as_f64().unwrap() < 0.05, "{c}");
    // The sequential p-value is the more conservative of the two.
    assert!(
        c["Sequential"]["PValue"].as_f64().unwrap()
            >= c["FixedHorizon"]["PValue"].as_f64().unwrap(),
        "{c}"
    );
    assert!((variant(&r, "A")["TrafficShare"].as_f64().unwrap() - 0.5).abs() < 1e-9);

    // Unknown, duplicate and invalid outcomes are refused, counted, and change nothing.
    let bad = record(
        &server,
        &[
            ("never-served".to_string(), 1.0),
            ("r-0".to_string(), 1.0),
            ("r-1".to_string(), 1.0),
        ],
    );
    assert_eq!(bad["Recorded"], 0, "{bad}");
    let reasons: Vec<&str> = bad["Rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["Reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["Unknown", "Duplicate", "Duplicate"]);
    let id = "fresh";
    invoke(&server, id, &[]);
    let invalid = record(&server, &[(id.to_string(), 0.5)]);
    assert_eq!(invalid["Rejected"][0]["Reason"], "Invalid", "{invalid}");
    let after = report(&server);
    assert_eq!(after["RejectedOutcomes"]["Unknown"], 1);
    assert_eq!(after["RejectedOutcomes"]["Duplicate"], 2);
    assert_eq!(after["RejectedOutcomes"]["Invalid"], 1);
    assert_eq!(variant(&after, "A")["Outcomes"], served["A"] as u64);
    let metrics = server.metrics();
    assert!(
        metrics.contains(
            "plinth_experiment_outcomes_rejected_total{endpoint=\"ab\",reason=\"Duplicate\"} 2"
        ),
        "{metrics}"
    );

    // The CLI report.
    let out = std::process::Command::new(BIN)
        .args(["experiment", "ab", "--endpoint-url", server.url()])
        .output()
        .unwrap();
    let table = plinth_tests::expect_success(&out, "plinth experiment");
    assert!(
        table.contains("Better") && table.contains("Control"),
        "{table}"
    );
}

#[test]
fn a_winner_is_promoted_through_the_weight_update() {
    let server = ab_server(json!({"ControlVariant": "A", "AutoAction": "PromoteWinner"}));
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let rates = BTreeMap::from([("A", 0.05), ("B", 0.35)]);
    run_traffic(&server, "p", 1000, &rates, &mut rng);
    let deadline = Instant::now() + Duration::from_secs(10);
    let weights = loop {
        let d = server.describe_settled("ab");
        let weights: Vec<f64> = d["ProductionVariants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["CurrentWeight"].as_f64().unwrap())
            .collect();
        if weights == [0.0, 1.0] || Instant::now() > deadline {
            break weights;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(weights, [0.0, 1.0], "B was not promoted");
    for i in 0..20 {
        assert_eq!(invoke(&server, &format!("after-{i}"), &[]), "B");
    }
    let log = server.stderr();
    assert!(
        log.contains("experiment action") && log.contains("variant B is better"),
        "{log}"
    );
}

#[test]
fn a_loser_on_a_numeric_reward_is_stopped() {
    let server = ab_server(json!({
        "ControlVariant": "A", "Metric": "Numeric", "AutoAction": "StopLosers"}));
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut outcomes = Vec::new();
    for i in 0..800 {
        let id = format!("n-{i}");
        let v = invoke(&server, &id, &[]);
        // Rewards: A about 10, B about 8 (a worse variant), both with noise.
        let mean = if v == "A" { 10.0 } else { 8.0 };
        outcomes.push((id, mean + rng.random_range(-2.0..2.0)));
    }
    assert_eq!(record(&server, &outcomes)["Recorded"], 800);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = server.describe_settled("ab");
        let b = &d["ProductionVariants"][1];
        if b["CurrentWeight"] == 0.0 {
            assert_eq!(d["ProductionVariants"][0]["CurrentWeight"], 1.0, "{d}");
            break;
        }
        assert!(Instant::now() < deadline, "B was not stopped: {d}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = report(&server);
    assert_eq!(variant(&r, "B")["Verdict"], "Worse", "{r}");
    assert!(
        (variant(&r, "A")["Mean"].as_f64().unwrap() - 10.0).abs() < 0.5,
        "{r}"
    );
    assert!(
        r["RecommendedAction"]
            .as_str()
            .unwrap()
            .starts_with("stop B"),
        "{r}"
    );
}

#[test]
fn thompson_sampling_moves_traffic_to_the_better_variant() {
    let server = ab_server(json!({
        "ControlVariant": "A", "RoutingStrategy": "ThompsonSampling", "MinShare": 0.05}));
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let rates = BTreeMap::from([("A", 0.05), ("B", 0.40)]);
    let first = run_traffic(&server, "t0", 300, &rates, &mut rng);
    assert!(first["A"] > 60 && first["B"] > 60, "{first:?}");
    // Shares are recomputed every second, off the request path.
    std::thread::sleep(Duration::from_millis(1500));
    let r = report(&server);
    let share = variant(&r, "B")["TrafficShare"].as_f64().unwrap();
    assert!(share > 0.9, "{r}");
    assert!(variant(&r, "A")["TrafficShare"].as_f64().unwrap() >= 0.05 - 1e-9);
    let later = run_traffic(&server, "t1", 300, &rates, &mut rng);
    assert!(later["B"] > 240, "{later:?}");
    assert!(
        later.get("A").copied().unwrap_or(0) > 0,
        "the minimum share starves A: {later:?}"
    );
}

#[test]
fn epsilon_greedy_gives_the_best_variant_all_but_epsilon() {
    let server = ab_server(json!({
        "ControlVariant": "A", "RoutingStrategy": "EpsilonGreedy", "Epsilon": 0.2}));
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let rates = BTreeMap::from([("A", 0.05), ("B", 0.40)]);
    run_traffic(&server, "e0", 300, &rates, &mut rng);
    std::thread::sleep(Duration::from_millis(1500));
    let r = report(&server);
    // 1 - epsilon to the best mean, epsilon split evenly: 0.9 and 0.1.
    let b = variant(&r, "B")["TrafficShare"].as_f64().unwrap();
    assert!((b - 0.9).abs() < 1e-9, "{r}");
    let later = run_traffic(&server, "e1", 400, &rates, &mut rng);
    assert!(later["B"] > 320 && later["A"] > 15, "{later:?}");
}

#[test]
fn an_assignment_key_keeps_its_variant() {
    let server = ab_server(json!({"ControlVariant": "A", "AssignmentAttribute": "session"}));
    let assign = |key: &str| invoke(&server, "x", &[("X-Plinth-Assignment-Key", key)]);
    let keys: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
    let before: Vec<String> = keys.iter().map(|k| assign(k)).collect();
    for (k, v) in keys.iter().zip(&before).take(20) {
        assert_eq!(&assign(k), v, "key {k} moved without a weight change");
    }
    let b = before.iter().filter(|v| *v == "B").count();
    assert!((140..=260).contains(&b), "{b} of 400 keys on B at 1:1");
    // The custom attribute works as the key too, and agrees with the header.
    let via_attribute = invoke(
        &server,
        "y",
        &[(
            "X-Amzn-SageMaker-Custom-Attributes",
            "session=user-7,other=1",
        )],
    );
    assert_eq!(via_attribute, before[7]);
    // The target variant overrides the key.
    let targeted = invoke(
        &server,
        "z",
        &[
            ("X-Plinth-Assignment-Key", "user-1"),
            (
                "X-Amzn-SageMaker-Target-Variant",
                if before[1] == "A" { "B" } else { "A" },
            ),
        ],
    );
    assert_ne!(targeted, before[1]);

    server.call(
        "UpdateEndpointWeightsAndCapacities",
        json!({"EndpointName": "ab", "DesiredWeightsAndCapacities": [
            {"VariantName": "A", "DesiredWeight": 0.4}, {"VariantName": "B", "DesiredWeight": 0.6}]}),
    );
    let after: Vec<String> = keys.iter().map(|k| assign(k)).collect();
    let moved: Vec<usize> = (0..keys.len()).filter(|&i| before[i] != after[i]).collect();
    assert!(
        moved.len() <= 70,
        "{} of 400 keys moved for a 10% weight shift",
        moved.len()
    );
    assert!(
        moved.iter().all(|&i| before[i] == "A" && after[i] == "B"),
        "a key moved away from the growing variant"
    );
}

#[test]
fn the_ledger_survives_a_restart_and_late_outcomes_are_refused() {
    let server = ab_server(json!({"ControlVariant": "A"}));
    let ids: Vec<String> = (0..50).map(|i| format!("d-{i}")).collect();
    let served: Vec<String> = ids.iter().map(|id| invoke(&server, id, &[])).collect();
    // RecordInferenceOutcomes answers once its outcome is in the store, with the
    // invocations gathered before it: kill -9 right after the answer loses neither.
    record(&server, &[(ids[0].clone(), 1.0)]);
    let server = server.kill_and_restart().expect("restart");
    // Endpoints are restored in the background after a restart.
    server.describe_settled("ab");
    let r = report(&server);
    assert_eq!(
        variant(&r, "A")["Invocations"].as_u64().unwrap()
            + variant(&r, "B")["Invocations"].as_u64().unwrap(),
        50,
        "{r}"
    );
    let outcomes: Vec<(String, f64)> = ids[1..].iter().map(|id| (id.clone(), 1.0)).collect();
    let recorded = record(&server, &outcomes);
    assert_eq!(recorded["Recorded"], 49, "{recorded}");
    let again = record(&server, &[(ids[0].clone(), 1.0)]);
    assert_eq!(again["Rejected"][0]["Reason"], "Duplicate", "{again}");
    let r = report(&server);
    let on_a = served.iter().filter(|v| *v == "A").count() as u64;
    assert_eq!(variant(&r, "A")["Outcomes"], on_a, "{r}");

    // After the endpoint moves to another config, outcomes of the old one are late.
    let late_id = "late-1";
    invoke(&server, late_id, &[]);
    ab_config(&server, "ab-config-2", json!({"ControlVariant": "B"}));
    server.call(
        "UpdateEndpoint",
        json!({"EndpointName": "ab", "EndpointConfigName": "ab-config-2"}),
    );
    server.describe_settled("ab");
    let late = record(&server, &[(late_id.to_string(), 1.0)]);
    assert_eq!(late["Rejected"][0]["Reason"], "Late", "{late}");
    assert_eq!(report(&server)["EndpointConfigName"], "ab-config-2");
}

#[test]
fn errors_count_per_variant_and_old_outcomes_expire() {
    let server = Server::start_with(BIN, Options::default());
    server.create_model("echo", ECHO_WASM, json!({}));
    server.create_model("faults", plinth_tests::FAULTS_WASM, json!({}));
    server.call(
        "CreateEndpointConfig",
        json!({"EndpointConfigName": "ef", "ProductionVariants": [
            {"VariantName": "A", "ModelName": "echo"}, {"VariantName": "B", "ModelName": "faults"}],
            "PlinthExperiment": {"ControlVariant": "A", "OutcomeRetentionSeconds": 1}}),
    );
    server.create_endpoint_settled("ab", "ef");
    for i in 0..4 {
        let r = server.invoke(
            "ab",
            "text/plain",
            "model-error",
            &[
                ("X-Amzn-SageMaker-Target-Variant", "B"),
                ("X-Amzn-SageMaker-Inference-Id", &format!("f-{i}")),
            ],
        );
        assert_eq!(r.status().as_u16(), 424);
    }
    invoke(&server, "ok-1", &[("X-Amzn-SageMaker-Target-Variant", "A")]);
    let r = report(&server);
    assert_eq!(variant(&r, "B")["Errors"], 4, "{r}");
    assert_eq!(variant(&r, "B")["ErrorRate"], 1.0, "{r}");
    assert_eq!(variant(&r, "A")["ErrorRate"], 0.0, "{r}");
    // A failed request has no outcome to give.
    let failed = record(&server, &[("f-0".to_string(), 1.0)]);
    assert_eq!(failed["Rejected"][0]["Reason"], "Unknown", "{failed}");
    // Past the retention period an outcome is refused as expired.
    std::thread::sleep(Duration::from_millis(1200));
    let late = record(&server, &[("ok-1".to_string(), 1.0)]);
    assert_eq!(late["Rejected"][0]["Reason"], "Expired", "{late}");
    assert_eq!(report(&server)["RejectedOutcomes"]["Expired"], 1);
}
