//! Blue/green and rolling deployments (UpdateEndpoint with a `DeploymentConfig`) under load,
//! measured from the outside: every response names the endpoint config of the fleet that
//! served it (`X-Plinth-Endpoint-Config`), and every committed state change is an event
//! (`ListEndpointEvents`) with its time, so each request can be placed in the step it was
//! routed in.
//!
//! - a canary (25 %) sends a binomially consistent quarter of the traffic to the new fleet
//!   while it bakes, then everything (and the old fleet stays for the termination wait); no
//!   request fails; DescribeEndpoint shows `Updating` with the `PendingDeploymentSummary` of
//!   step 1/2 baking and echoes the `DeploymentConfig`; the events list the steps in order
//!   (and page by `AfterSequence`); `plinth_deployments_total` counts the completion;
//! - a linear rollout (25 % steps) matches 25/50/75/100 % step by step;
//! - an alarm on the new fleet's 5xx rate rolls a faulty version back within about a second
//!   of its first failure: every failure came from the new fleet, the old one never failed,
//!   the endpoint ends `InService` on the old config with a `FailureReason` naming the alarm;
//! - a rolling update moves instances in batches (the fleet is never below its size nor
//!   more than one batch above it) without a failed request;
//! - an update during a deployment and deleting an alarm a deployment watches are refused
//!   with a 400 that says why, leaving the deployment as it was (invalid deployment configs,
//!   unknown and bad alarms are fixture cases: `tests/cases/UpdateEndpoint/`,
//!   `CreateAlarm/`, each changing nothing, not even the event log);
//! - `kill -9` during a bake brings the endpoint back on the old config, saying so, and a
//!   new deployment then completes.

use plinth_tests::json::contains;
use plinth_tests::metrics::{counter, sample};
use plinth_tests::{
    assert_binomial, epoch_now, Config, Model, Options, Server, Variant, ENDPOINT_CONFIG,
    FAULTS_WASM, IRIS_MODEL_DIR, IRIS_WASM, SETOSA_ROW,
};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// The endpoint every test deploys to, and its first config (iris).
const ENDPOINT: &str = "live";
const OLD: &str = "live-config";
const NEW: &str = "v2-config";

/// The tests that put the server under load run one at a time: this machine may have two
/// cores, and the shares and the rollback's timing are measured, not assumed.
static LOAD_TESTS: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOAD_TESTS.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- Helpers ----

/// A server with endpoint `live` on config `live-config`: one variant `AllTraffic` of iris
/// with `instances` instances.
fn start_live(instances: u32) -> Server {
    let config = Config::new()
        .model(Model::iris("iris"))
        .endpoint_with_variants(
            ENDPOINT,
            vec![Variant::new("AllTraffic", "iris", instances)],
        );
    Server::start(BIN, &config.to_toml())
}

/// Model `model` of the faults plugin with `environment`, and config `config` with one
/// variant `AllTraffic` of it with `instances` instances.
fn faults_config(server: &Server, model: &str, environment: Value, config: &str, instances: u32) {
    server.create_model(model, FAULTS_WASM, environment);
    server.create_config(config, &[("AllTraffic", model, instances)]);
}

/// DescribeEndpoint of `live`.
fn describe(server: &Server) -> Value {
    server.describe_endpoint(ENDPOINT)
}

/// DescribeEndpoint of `live` once it is `InService` (through `Updating` or `RollingBack`).
fn wait_in_service(server: &Server) -> Value {
    server.wait_in_service(ENDPOINT, Duration::from_secs(90))
}

/// DescribeEndpoint once the deployment bakes step `step`.
fn wait_baking(server: &Server, step: u64) -> Value {
    server.wait_for_endpoint(ENDPOINT, Duration::from_secs(90), |d| {
        let p = &d["PendingDeploymentSummary"]["PlinthDeployment"];
        assert!(
            d["EndpointStatus"] == "Updating",
            "the deployment ended before step {step} baked: {d}"
        );
        p["Step"] == step && p["Phase"] == "Baking"
    })
}

/// Every event of `live`, oldest first.
fn events(server: &Server) -> Vec<Value> {
    let out = server.call(
        "ListEndpointEvents",
        json!({"EndpointName": ENDPOINT, "MaxResults": 1000}),
    );
    out["Events"].as_array().expect("Events is a list").clone()
}

/// The first event at or after index `from` whose message starts with `prefix`: its index
/// and the event. Panics with every message if there is none.
#[track_caller]
fn event_after(events: &[Value], from: usize, prefix: &str) -> (usize, Value) {
    events
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, e)| {
            e["Message"]
                .as_str()
                .unwrap_or_default()
                .starts_with(prefix)
        })
        .map(|(i, e)| (i, e.clone()))
        .unwrap_or_else(|| {
            panic!(
                "no event {prefix:?} after #{from} in:\n{}",
                messages(events)
            )
        })
}

fn messages(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "  {} {} {}",
                e["Sequence"], e["EndpointStatus"], e["Message"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn event_time(event: &Value) -> f64 {
    event["EventTime"]
        .as_f64()
        .unwrap_or_else(|| panic!("no EventTime: {event}"))
}

/// One request of the load: when it was sent and answered (epoch seconds), its status (0:
/// no answer), and the endpoint config named by `X-Plinth-Endpoint-Config`.
#[derive(Clone, Debug)]
struct Sample {
    start: f64,
    end: f64,
    status: u16,
    config: Option<String>,
    body: String,
}

impl Sample {
    fn on_new(&self) -> bool {
        self.config.as_deref() == Some(NEW)
    }
}

/// Client threads sending `SETOSA_ROW` to `live` without pause until stopped, recording every
/// request.
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(server: &Server, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let url = format!("{}/endpoints/{ENDPOINT}/invocations", server.url());
        let threads = (0..threads)
            .map(|_| {
                let (stop, samples, url) = (stop.clone(), samples.clone(), url.clone());
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let start = epoch_now();
                        let response = client
                            .post(&url)
                            .header("Content-Type", "text/csv")
                            .body(SETOSA_ROW)
                            .send();
                        let sample = match response {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let config = plinth_tests::header(&r, ENDPOINT_CONFIG);
                                let body = r.text().unwrap_or_default();
                                Sample {
                                    start,
                                    end: epoch_now(),
                                    status,
                                    config,
                                    body,
                                }
                            }
                            Err(e) => Sample {
                                start,
                                end: epoch_now(),
                                status: 0,
                                config: None,
                                body: e.to_string(),
                            },
                        };
                        samples.lock().unwrap().push(sample);
                    }
                })
            })
            .collect();
        Load {
            stop,
            samples,
            threads,
        }
    }

    fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a client thread panicked");
        }
        let samples = self.samples.lock().unwrap().clone();
        samples
    }
}

/// The requests sent after `from` and answered before `to` (epoch seconds): all routed by
/// the snapshot that was current between the two. `EventTime` has millisecond precision and
/// is taken before the state it records is published, hence the millisecond after `from`.
fn between(samples: &[Sample], from: f64, to: f64) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| s.start >= from + 0.001 && s.end < to)
        .collect()
}

#[track_caller]
fn assert_no_failures(samples: &[Sample]) {
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(
        samples.len() >= 100,
        "the clients hardly ran: {} requests",
        samples.len()
    );
}

fn canary(percent: u32, bake: u32) -> Value {
    json!({"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {
        "Type": "CANARY", "WaitIntervalInSeconds": bake,
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": percent}}}})
}

// ---- Tests ----

#[test]
fn canary_sends_a_quarter_then_everything_without_a_failed_request() {
    let _serial = serial();
    let server = start_live(2);
    faults_config(&server, "v2", json!({"FAULT_REPLY": "v2"}), NEW, 4);
    let mut deployment = canary(25, 2);
    deployment["BlueGreenUpdatePolicy"]["TerminationWaitInSeconds"] = json!(1);

    let load = Load::start(&server, 4);
    std::thread::sleep(Duration::from_millis(300));
    server.call(
        "UpdateEndpoint",
        json!({"EndpointName": ENDPOINT, "EndpointConfigName": NEW, "DeploymentConfig": deployment}),
    );

    // While the canary bakes: Updating, on the old config, with the pending deployment.
    let d = wait_baking(&server, 1);
    assert_eq!(d["EndpointConfigName"], OLD, "{d}");
    let pending = &d["PendingDeploymentSummary"];
    assert_eq!(pending["EndpointConfigName"], NEW, "{d}");
    assert!(pending["StartTime"].is_number(), "{d}");
    let plinth = &pending["PlinthDeployment"];
    assert!(
        contains(
            plinth,
            &json!({"Strategy": "CANARY", "Step": 1, "Steps": 2, "NewFleetTrafficPercent": 25.0,
                    "Phase": "Baking"})
        ),
        "{d}"
    );
    let bake =
        plinth["PhaseEndTime"].as_f64().unwrap() - plinth["PhaseStartTime"].as_f64().unwrap();
    assert!((bake - 2.0).abs() < 0.01, "the bake lasts {bake} s: {d}");
    let new_variant = &pending["ProductionVariants"][0];
    assert!(
        contains(
            new_variant,
            &json!({"VariantName": "AllTraffic", "ModelName": "v2", "CurrentWeight": 0.25,
                    "DesiredWeight": 1.0, "CurrentInstanceCount": 4, "DesiredInstanceCount": 4})
        ),
        "{d}"
    );
    assert_eq!(new_variant["VariantStatus"][0]["Status"], "Baking", "{d}");
    assert!(
        new_variant["VariantStatus"][0]["StatusMessage"].is_string(),
        "{d}"
    );
    assert_eq!(d["ProductionVariants"][0]["CurrentWeight"], 0.75, "{d}");
    assert!(contains(&d["LastDeploymentConfig"], &deployment), "{d}");

    let done = wait_in_service(&server);
    std::thread::sleep(Duration::from_millis(300));
    let samples = load.stop();
    assert_eq!(done["EndpointConfigName"], NEW, "{done}");
    assert!(done.get("PendingDeploymentSummary").is_none(), "{done}");
    assert!(done.get("FailureReason").is_none(), "{done}");
    assert!(
        contains(&done["LastDeploymentConfig"], &deployment),
        "{done}"
    );
    assert_no_failures(&samples);

    // The steps, in order, each with its share.
    let events = events(&server);
    let (i0, started) = event_after(
        &events,
        0,
        "Deployment to v2-config started (CANARY, 2 steps",
    );
    let (i1, _) = event_after(&events, i0 + 1, "New fleet v2-config created and warm");
    let (i2, step1) = event_after(&events, i1 + 1, "Step 1/2: 25% of traffic to the new fleet");
    let (i3, bake1) = event_after(&events, i2 + 1, "Step 1/2: baking for 2 s");
    let (i4, step2) = event_after(
        &events,
        i3 + 1,
        "Step 2/2: 100% of traffic to the new fleet",
    );
    let (i5, bake2) = event_after(&events, i4 + 1, "Step 2/2: baking for 2 s (final bake)");
    let (i6, terminating) = event_after(
        &events,
        i5 + 1,
        "All traffic on the new fleet; the old fleet stays warm for 1 s",
    );
    assert_eq!(
        terminating["DeploymentPhase"], "Terminating",
        "{terminating}"
    );
    let (_, complete) = event_after(
        &events,
        i6 + 1,
        "Deployment complete: in service on v2-config",
    );
    let waited = event_time(&complete) - event_time(&terminating);
    assert!(
        waited >= 0.99,
        "TerminationWaitInSeconds 1, waited {waited} s"
    );
    for (e, percent) in [
        (&step1, 25.0),
        (&bake1, 25.0),
        (&step2, 100.0),
        (&bake2, 100.0),
        (&terminating, 100.0),
    ] {
        assert_eq!(e["EndpointStatus"], "Updating", "{e}");
        assert_eq!(e["EndpointConfigName"], OLD, "{e}");
        assert_eq!(e["PendingEndpointConfigName"], NEW, "{e}");
        assert_eq!(e["NewFleetTrafficPercent"].as_f64(), Some(percent), "{e}");
    }
    assert_eq!(complete["EndpointStatus"], "InService", "{complete}");
    assert_eq!(complete["EndpointConfigName"], NEW, "{complete}");
    let sequences: Vec<i64> = events
        .iter()
        .map(|e| e["Sequence"].as_i64().unwrap())
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    // A negative AfterSequence gives the last events; a positive one those after it.
    let last_two = server.call(
        "ListEndpointEvents",
        json!({"EndpointName": ENDPOINT, "AfterSequence": -2}),
    )["Events"]
        .clone();
    assert_eq!(last_two, json!(events[events.len() - 2..]), "{last_two}");
    let after_started = server.call(
        "ListEndpointEvents",
        json!({"EndpointName": ENDPOINT, "AfterSequence": started["Sequence"], "MaxResults": 2}),
    )["Events"]
        .clone();
    assert_eq!(
        after_started,
        json!(events[i0 + 1..i0 + 3]),
        "{after_started}"
    );

    // Before: only the old fleet. Canary bake: a quarter. Final bake, termination wait and
    // after: the new one.
    let before: Vec<Sample> = samples
        .iter()
        .filter(|s| s.end < event_time(&started))
        .cloned()
        .collect();
    assert!(!before.is_empty() && before.iter().all(|s| s.config.as_deref() == Some(OLD)));
    let canary = between(&samples, event_time(&bake1), event_time(&step2));
    assert!(
        canary.len() >= 100,
        "only {} requests in the canary bake",
        canary.len()
    );
    let on_new = canary.iter().filter(|s| s.on_new()).count();
    assert_binomial(on_new, canary.len(), 0.25, "canary bake");
    assert!(canary.iter().all(|s| s.on_new() == (s.body == "v2")));
    let final_bake = between(&samples, event_time(&bake2), event_time(&complete));
    let after = between(&samples, event_time(&complete), f64::INFINITY);
    assert!(!final_bake.is_empty() && !after.is_empty());
    for s in final_bake.iter().chain(&after) {
        assert!(s.on_new() && s.body == "v2", "{s:?}");
    }

    let metrics = server.metrics();
    let completed = [("endpoint", ENDPOINT), ("result", "Completed")];
    assert_eq!(
        sample(&metrics, "plinth_deployments_total", &completed),
        Some(1.0),
        "{metrics}"
    );
    let rolled_back = [("endpoint", ENDPOINT), ("result", "RolledBack")];
    assert_eq!(
        counter(&metrics, "plinth_deployments_total", &rolled_back),
        0.0
    );
}

#[test]
fn linear_steps_match_the_plan_under_load() {
    let _serial = serial();
    let server = start_live(2);
    faults_config(&server, "v2", json!({"FAULT_REPLY": "v2"}), NEW, 4);
    let deployment = json!({"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {
        "Type": "LINEAR", "WaitIntervalInSeconds": 1,
        "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25}}}});

    let load = Load::start(&server, 4);
    std::thread::sleep(Duration::from_millis(200));
    server.call(
        "UpdateEndpoint",
        json!({"EndpointName": ENDPOINT, "EndpointConfigName": NEW, "DeploymentConfig": deployment}),
    );
    let d = wait_baking(&server, 2);
    assert!(
        contains(
            &d["PendingDeploymentSummary"]["PlinthDeployment"],
            &json!({"Strategy": "LINEAR", "Step": 2, "Steps": 4, "NewFleetTrafficPercent": 50.0})
        ),
        "{d}"
    );
    let done = wait_in_service(&server);
    std::thread::sleep(Duration::from_millis(200));
    let samples = load.stop();
    assert_eq!(done["EndpointConfigName"], NEW, "{done}");
    assert_no_failures(&samples);

    // Each bake window (from its "baking" event to the next step's event) carries the
    // planned share.
    let events = events(&server);
    let (mut at, _) = event_after(
        &events,
        0,
        "Deployment to v2-config started (LINEAR, 4 steps",
    );
    let mut bakes = Vec::new();
    for (k, percent) in [(1, 25), (2, 50), (3, 75), (4, 100)] {
        let (i, step) = event_after(
            &events,
            at + 1,
            &format!("Step {k}/4: {percent}% of traffic to the new fleet"),
        );
        assert_eq!(
            step["NewFleetTrafficPercent"].as_f64(),
            Some(f64::from(percent)),
            "{step}"
        );
        let (j, bake) = event_after(&events, i + 1, &format!("Step {k}/4: baking for 1 s"));
        bakes.push((percent, event_time(&bake), i));
        at = j;
    }
    let (_, complete) = event_after(
        &events,
        at + 1,
        "Deployment complete: in service on v2-config",
    );
    let mut ends: Vec<f64> = bakes
        .iter()
        .skip(1)
        .map(|&(_, _, step_index)| event_time(&events[step_index]))
        .collect();
    ends.push(event_time(&complete));
    let mut report = Vec::new();
    for (&(percent, from, _), &to) in bakes.iter().zip(&ends) {
        let window = between(&samples, from, to);
        let on_new = window.iter().filter(|s| s.on_new()).count();
        report.push(format!("{percent}%: {on_new}/{}", window.len()));
        assert!(
            window.len() >= 30,
            "only {} requests while {percent}% baked",
            window.len()
        );
        assert_binomial(
            on_new,
            window.len(),
            f64::from(percent) / 100.0,
            &format!("step at {percent}%"),
        );
    }
    eprintln!(
        "linear shares (new fleet / requests): {}",
        report.join(", ")
    );
}

#[test]
fn an_alarm_rolls_a_faulty_version_back_within_a_second() {
    let _serial = serial();
    let server = start_live(2);
    faults_config(
        &server,
        "broken",
        json!({"FAULT_DEFAULT": "model-error"}),
        NEW,
        2,
    );
    server.call(
        "CreateAlarm",
        json!({"AlarmName": "v2-errors", "EndpointName": ENDPOINT, "Scope": "NewFleet",
               "MetricName": "Invocation5XXErrors", "Statistic": "Average",
               "ComparisonOperator": "GreaterThanThreshold", "Threshold": 0.1,
               "Period": 1, "EvaluationPeriods": 1}),
    );
    let alarm = server.call("DescribeAlarm", json!({"AlarmName": "v2-errors"}));
    assert_eq!(
        alarm["StateValue"], "INSUFFICIENT_DATA",
        "no new fleet yet: {alarm}"
    );
    assert_eq!(alarm["MetricName"], "Invocation5XXErrors", "{alarm}");
    let mut deployment = canary(50, 10);
    deployment["AutoRollbackConfiguration"] = json!({"Alarms": [{"AlarmName": "v2-errors"}]});

    let load = Load::start(&server, 4);
    std::thread::sleep(Duration::from_millis(300));
    server.call(
        "UpdateEndpoint",
        json!({"EndpointName": ENDPOINT, "EndpointConfigName": NEW, "DeploymentConfig": deployment}),
    );
    let done = server.wait_for_endpoint(ENDPOINT, Duration::from_secs(60), |d| {
        d["EndpointStatus"] == "InService"
    });
    std::thread::sleep(Duration::from_millis(500));
    let samples = load.stop();

    assert_eq!(done["EndpointConfigName"], OLD, "{done}");
    assert!(done.get("PendingDeploymentSummary").is_none(), "{done}");
    let reason = done["FailureReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("v2-config was rolled back: alarm v2-errors is in ALARM"),
        "{done}"
    );

    // Every failure came from the new fleet; the old fleet never failed.
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.status != 200).collect();
    assert!(!failed.is_empty(), "the faulty fleet served nothing");
    let old_failures: Vec<&&Sample> = failed.iter().filter(|s| !s.on_new()).collect();
    assert!(
        old_failures.is_empty(),
        "not from the new fleet: {:?}",
        &old_failures[..old_failures.len().min(3)]
    );
    assert!(
        failed.iter().all(|s| s.status == 424),
        "{:?}",
        &failed[..3.min(failed.len())]
    );
    assert!(samples
        .iter()
        .filter(|s| s.on_new())
        .all(|s| s.status != 200));

    // From the first failure to the last request routed to the new fleet (answered, so
    // routed no later than that): within a second, plus slack for this machine.
    let first_failure = failed.iter().map(|s| s.end).fold(f64::INFINITY, f64::min);
    let last_on_new = failed.iter().map(|s| s.end).fold(0.0, f64::max);
    let exposure = last_on_new - first_failure;
    eprintln!(
        "rollback: {} failed requests over {exposure:.3} s",
        failed.len()
    );
    assert!(
        exposure < 1.5,
        "the new fleet kept taking requests for {exposure:.3} s after its first failure"
    );

    let events = events(&server);
    let (i, step) = event_after(&events, 0, "Step 1/2: 50% of traffic to the new fleet");
    let (j, rolling_back) =
        event_after(&events, i + 1, "Rolling back: alarm v2-errors is in ALARM");
    let (_, rolled_back) = event_after(&events, j + 1, "Rolled back: in service on live-config");
    assert_eq!(
        rolling_back["EndpointStatus"], "RollingBack",
        "{rolling_back}"
    );
    assert_eq!(
        rolling_back["NewFleetTrafficPercent"].as_f64(),
        Some(0.0),
        "{rolling_back}"
    );
    assert_eq!(rolled_back["EndpointStatus"], "InService", "{rolled_back}");
    assert_eq!(rolled_back["EndpointConfigName"], OLD, "{rolled_back}");
    assert!(
        messages(&events).find("Step 2/2").is_none(),
        "{}",
        messages(&events)
    );
    let decided = event_time(&rolling_back) - first_failure;
    assert!(
        decided < 1.5,
        "the rollback began {decided:.3} s after the first failure"
    );
    assert!(event_time(&step) <= first_failure);

    // After the rollback: the old config serves everything, successfully.
    let after = between(&samples, event_time(&rolled_back), f64::INFINITY);
    assert!(!after.is_empty());
    assert!(after
        .iter()
        .all(|s| s.status == 200 && s.config.as_deref() == Some(OLD)));

    let metrics = server.metrics();
    let rolled = [("endpoint", ENDPOINT), ("result", "RolledBack")];
    assert_eq!(
        sample(&metrics, "plinth_deployments_total", &rolled),
        Some(1.0),
        "{metrics}"
    );
    let completed = [("endpoint", ENDPOINT), ("result", "Completed")];
    assert_eq!(
        counter(&metrics, "plinth_deployments_total", &completed),
        0.0
    );
    // The deployment is over, so its alarm may be deleted.
    server.call("DeleteAlarm", json!({"AlarmName": "v2-errors"}));
}

#[test]
fn rolling_update_moves_instances_in_batches() {
    let _serial = serial();
    let server = start_live(4);
    faults_config(&server, "v2", json!({"FAULT_REPLY": "v2"}), NEW, 4);
    let deployment = json!({"RollingUpdatePolicy": {
        "MaximumBatchSize": {"Type": "CAPACITY_PERCENT", "Value": 50},
        "WaitIntervalInSeconds": 1}});

    let load = Load::start(&server, 4);
    std::thread::sleep(Duration::from_millis(200));
    server.call(
        "UpdateEndpoint",
        json!({"EndpointName": ENDPOINT, "EndpointConfigName": NEW, "DeploymentConfig": deployment}),
    );
    // (old instances, new instances, step, phase, whether the phase's planned end was still
    // ahead when DescribeEndpoint answered) as DescribeEndpoint shows them.
    let mut seen: Vec<(u64, u64, u64, String, bool)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let done = loop {
        let d = describe(&server);
        let answered = epoch_now();
        if d["EndpointStatus"] == "InService" {
            break d;
        }
        assert!(Instant::now() < deadline, "still {d}");
        let pending = &d["PendingDeploymentSummary"];
        if let Some(new) = pending["ProductionVariants"][0]["CurrentInstanceCount"].as_u64() {
            let old = d["ProductionVariants"][0]["CurrentInstanceCount"]
                .as_u64()
                .unwrap();
            let p = &pending["PlinthDeployment"];
            assert_eq!(p["Strategy"], "ROLLING", "{d}");
            assert_eq!(p["Steps"], 2, "{d}");
            let in_phase = p["PhaseEndTime"].as_f64().is_none_or(|end| answered < end);
            let state = (
                old,
                new,
                p["Step"].as_u64().unwrap(),
                p["Phase"].as_str().unwrap().to_string(),
                in_phase,
            );
            if seen.last() != Some(&state) {
                seen.push(state);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(200));
    let samples = load.stop();
    eprintln!("rolling (old, new, step, phase, before the phase's end): {seen:?}");
    assert_eq!(done["EndpointConfigName"], NEW, "{done}");
    assert_eq!(
        done["ProductionVariants"][0]["CurrentInstanceCount"], 4,
        "{done}"
    );
    assert_no_failures(&samples);

    // Never below the fleet's size, never more than one batch (2) above it.
    for (old, new, step, phase, _) in &seen {
        assert!(
            (4..=6).contains(&(old + new)),
            "{old} old + {new} new at step {step} {phase}: {seen:?}"
        );
    }
    // While a batch bakes (before its bake's end: after it, the next batch is being built
    // while the step still reads Baking), the fleets are exactly split.
    let baking = |step: u64| {
        let mut states: Vec<(u64, u64)> = seen
            .iter()
            .filter(|s| s.2 == step && s.3 == "Baking" && s.4)
            .map(|s| (s.0, s.1))
            .collect();
        states.dedup();
        states
    };
    assert_eq!(
        baking(1),
        [(2, 2)],
        "half and half while the first batch bakes: {seen:?}"
    );
    assert_eq!(
        baking(2),
        [(0, 4)],
        "all new while the last batch bakes: {seen:?}"
    );

    let events = events(&server);
    let (i, _) = event_after(
        &events,
        0,
        "Deployment to v2-config started (ROLLING, 2 steps",
    );
    let (j, bake1) = event_after(&events, i + 1, "Step 1/2: baking for 1 s");
    let (k, step2) = event_after(&events, j + 1, "Step 2/2: 100% of traffic to the new fleet");
    event_after(
        &events,
        k + 1,
        "Deployment complete: in service on v2-config",
    );
    let first_batch = between(&samples, event_time(&bake1), event_time(&step2));
    let on_new = first_batch.iter().filter(|s| s.on_new()).count();
    assert_binomial(on_new, first_batch.len(), 0.5, "first batch");
}

/// Runs `operation` expecting a 400 `code` whose message contains every fragment.
#[track_caller]
#[test]
fn a_rolling_update_rolls_back_in_batches_of_rollback_maximum_batch_size() {
    let _serial = serial();
    let server = start_live(4);
    faults_config(
        &server,
        "broken",
        json!({"FAULT_DEFAULT": "model-error"}),
        NEW,
        4,
    );
    server.call(
        "CreateAlarm",
        json!({"AlarmName": "rolling-errors", "EndpointName": ENDPOINT, "Scope": "NewFleet",
               "MetricName": "InvocationModelErrors", "Statistic": "Average",
               "ComparisonOperator": "GreaterThanThreshold", "Threshold": 0.1,
               "Period": 1, "EvaluationPeriods": 1}),
    );
    // Batches of 2 of 4 instances (50%), back in batches of 1 (25%).
    let deployment = json!({
        "RollingUpdatePolicy": {
            "MaximumBatchSize": {"Type": "CAPACITY_PERCENT", "Value": 50},
            "RollbackMaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 1},
            "WaitIntervalInSeconds": 10},
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "rolling-errors"}]}});
    let load = Load::start(&server, 4);
    std::thread::sleep(Duration::from_millis(200));
    server.call(
        "UpdateEndpoint",
        json!({"EndpointName": ENDPOINT, "EndpointConfigName": NEW, "DeploymentConfig": deployment}),
    );
    let done = server.wait_for_endpoint(ENDPOINT, Duration::from_secs(60), |d| {
        d["EndpointStatus"] == "InService"
    });
    std::thread::sleep(Duration::from_millis(300));
    let samples = load.stop();

    assert_eq!(done["EndpointConfigName"], OLD, "{done}");
    assert!(
        done["FailureReason"]
            .as_str()
            .unwrap_or_default()
            .contains("alarm rolling-errors is in ALARM"),
        "{done}"
    );
    assert_eq!(
        done["ProductionVariants"][0]["CurrentInstanceCount"], 4,
        "the old fleet is back to its size: {done}"
    );
    assert!(
        samples
            .iter()
            .filter(|s| !s.on_new())
            .all(|s| s.status == 200),
        "the old fleet failed a request"
    );
    // 50% on the new fleet when the alarm fired, then 25%, then 0%.
    let events = events(&server);
    let (i, _) = event_after(&events, 0, "Rolling back: alarm rolling-errors is in ALARM");
    let (j, quarter) = event_after(
        &events,
        i + 1,
        "Rolling back: 25% of traffic on the new fleet",
    );
    let (k, none) = event_after(
        &events,
        j + 1,
        "Rolling back: 0% of traffic on the new fleet",
    );
    event_after(&events, k + 1, "Rolled back: in service on live-config");
    assert_eq!(quarter["EndpointStatus"], "RollingBack", "{quarter}");
    assert_eq!(quarter["NewFleetTrafficPercent"], 25.0, "{quarter}");
    assert_eq!(none["NewFleetTrafficPercent"], 0.0, "{none}");
}

#[test]
fn a_deployment_in_progress_refuses_updates_and_keeps_its_alarm() {
    // (Invalid deployment configs, unknown and bad alarms are refused, changing nothing, in
    // the cases tests/cases/UpdateEndpoint/ and tests/cases/CreateAlarm/.)
    let server = start_live(1);
    faults_config(&server, "v2", json!({"FAULT_REPLY": "v2"}), NEW, 4);

    // A deployment in progress: another update, with or without a DeploymentConfig, is
    // refused, and so is deleting the alarm it watches.
    server.call(
        "CreateAlarm",
        json!({"AlarmName": "guard", "EndpointName": ENDPOINT, "Scope": "NewFleet",
               "MetricName": "Invocation5XXErrors", "Statistic": "Average",
               "ComparisonOperator": "GreaterThanThreshold", "Threshold": 0.5,
               "Period": 10, "EvaluationPeriods": 1}),
    );
    let mut deployment = canary(25, 60);
    deployment["AutoRollbackConfiguration"] = json!({"Alarms": [{"AlarmName": "guard"}]});
    server.call(
        "UpdateEndpoint",
        json!({"EndpointName": ENDPOINT, "EndpointConfigName": NEW, "DeploymentConfig": deployment}),
    );
    let baking = wait_baking(&server, 1);
    for input in [
        json!({"EndpointName": ENDPOINT, "EndpointConfigName": OLD}),
        json!({"EndpointName": ENDPOINT, "EndpointConfigName": NEW, "DeploymentConfig": canary(10, 1)}),
    ] {
        server.refused(
            "UpdateEndpoint",
            input,
            "ValidationException",
            &["Cannot update in-progress endpoint"],
        );
    }
    server.refused(
        "DeleteAlarm",
        json!({"AlarmName": "guard"}),
        "ResourceInUse",
        &["guard", "live"],
    );
    server.call("DescribeAlarm", json!({"AlarmName": "guard"}));
    let still = describe(&server);
    assert_eq!(still["EndpointStatus"], "Updating", "{still}");
    assert_eq!(
        still["PendingDeploymentSummary"]["EndpointConfigName"], NEW,
        "{still}"
    );
    assert_eq!(
        still["PendingDeploymentSummary"]["StartTime"],
        baking["PendingDeploymentSummary"]["StartTime"]
    );
    assert!(
        contains(&still["LastDeploymentConfig"], &deployment),
        "{still}"
    );
}

#[test]
fn a_restart_during_a_bake_rolls_back_to_the_old_config() {
    let server = Server::start_with(BIN, Options::default());
    server.call(
        "CreateModel",
        json!({"ModelName": "iris", "PrimaryContainer": {"Image": IRIS_WASM, "ModelDataUrl": IRIS_MODEL_DIR}}),
    );
    server.call(
        "CreateEndpointConfig",
        json!({"EndpointConfigName": OLD, "ProductionVariants": [
            {"VariantName": "AllTraffic", "ModelName": "iris"}]}),
    );
    faults_config(&server, "v2", json!({"FAULT_REPLY": "v2"}), NEW, 2);
    server.call(
        "CreateEndpoint",
        json!({"EndpointName": ENDPOINT, "EndpointConfigName": OLD}),
    );
    wait_in_service(&server);
    server.call(
        "UpdateEndpoint",
        json!({"EndpointName": ENDPOINT, "EndpointConfigName": NEW, "DeploymentConfig": canary(50, 120)}),
    );
    wait_baking(&server, 1);
    let served: Vec<String> = (0..20)
        .map(|_| {
            let r = server.invoke(ENDPOINT, "text/csv", SETOSA_ROW, &[]);
            assert_eq!(r.status(), 200);
            plinth_tests::header(&r, ENDPOINT_CONFIG).unwrap()
        })
        .collect();
    assert!(
        served.iter().any(|c| c == NEW),
        "the canary took none of {served:?}"
    );

    let server = server.kill_and_restart().expect("restart");
    let d = wait_in_service(&server);
    assert_eq!(d["EndpointConfigName"], OLD, "{d}");
    assert!(d.get("PendingDeploymentSummary").is_none(), "{d}");
    let reason = d["FailureReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("v2-config was interrupted by a restart")
            && reason.contains("serves live-config"),
        "{d}"
    );
    for _ in 0..20 {
        let r = server.invoke(ENDPOINT, "text/csv", SETOSA_ROW, &[]);
        assert_eq!(r.status(), 200);
        assert_eq!(
            plinth_tests::header(&r, ENDPOINT_CONFIG).as_deref(),
            Some(OLD)
        );
    }
    let events = events(&server);
    event_after(
        &events,
        0,
        "Restarted during the update to v2-config: rolling back to live-config",
    );

    // A new deployment works, and clears the reason.
    server.call(
        "UpdateEndpoint",
        json!({"EndpointName": ENDPOINT, "EndpointConfigName": NEW, "DeploymentConfig": canary(50, 1)}),
    );
    let d = wait_in_service(&server);
    assert_eq!(d["EndpointConfigName"], NEW, "{d}");
    assert!(d.get("FailureReason").is_none(), "{d}");
    let r = server.invoke(ENDPOINT, "text/csv", SETOSA_ROW, &[]);
    assert_eq!(r.status(), 200);
    assert_eq!(
        plinth_tests::header(&r, ENDPOINT_CONFIG).as_deref(),
        Some(NEW)
    );
    assert_eq!(r.text().unwrap(), "v2");
}
