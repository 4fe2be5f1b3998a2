//! Shadow variants (`ShadowProductionVariants`): a shadow gets a copy of a sampled share of
//! the requests after production has answered, its answers are compared with production's,
//! and nothing it does reaches the client.
//!
//! - a shadow running the same model agrees exactly (and numerically, and on the predicted
//!   class) on every request it answered, while every client answer names the production
//!   variant; the Prometheus counters say the same;
//! - a shadow answering differently shows no exact agreement, with the numeric and argmax
//!   comparisons null when neither side is numeric (and argmax counted as a disagreement
//!   when only production predicts a class);
//! - a shadow that traps on every request fails every copy (error rate 1) while production
//!   answers every request and the host keeps serving;
//! - a slow shadow with a short queue does not slow production down: the copies it cannot
//!   take are dropped and counted (`Dropped`, `plinth_shadow_dropped_total`), and the counts
//!   add up once it drains;
//! - `PlinthSamplingPercentage` 30 samples a binomially consistent 30 %; without it the
//!   share is the shadow's weight over production's, capped at 100 %;
//! - PromoteShadowVariant makes the shadow the production variant of a generated config
//!   (the other shadows stay shadows) and requests are then served by it;
//!
//! Invalid shadow configs and promotions, refused with a 400 that says why and creating
//! nothing, are fixture cases (`tests/cases/CreateEndpointConfig/shadow-*`,
//! `tests/cases/PromoteShadowVariant/`).

use plinth_tests::metrics::{counter, sample};
use plinth_tests::{
    assert_binomial, Options, Server, StatusCode, ENDPOINT_CONFIG, FAULTS_WASM, INVOKED_VARIANT,
    IRIS_MODEL_DIR, IRIS_WASM, SETOSA_ROW,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

// ---- Helpers ----

/// A server without a deployment file, with models `iris` and `iris-copy` (the same files
/// under another name).
fn start() -> Server {
    let server = Server::start_with(BIN, Options::default());
    for name in ["iris", "iris-copy"] {
        server.call(
            "CreateModel",
            json!({"ModelName": name, "PrimaryContainer": {"Image": IRIS_WASM, "ModelDataUrl": IRIS_MODEL_DIR}}),
        );
    }
    server
}

/// A faults model `name` with `environment`.
fn faults_model(server: &Server, name: &str, environment: Value) {
    server.create_model(name, FAULTS_WASM, environment);
}

/// A variant `name` of `model` with one instance and weight 1, plus `extra` fields.
fn variant(name: &str, model: &str, extra: Value) -> Value {
    let mut v = json!({"VariantName": name, "ModelName": model, "InitialInstanceCount": 1,
                       "InitialVariantWeight": 1.0});
    for (k, x) in extra.as_object().expect("extra fields are an object") {
        v[k] = x.clone();
    }
    v
}

/// Config `<endpoint>-config` with `production` and `shadows`, and endpoint `endpoint` on it,
/// `InService`.
fn endpoint(server: &Server, endpoint: &str, production: Vec<Value>, shadows: Vec<Value>) {
    let config = format!("{endpoint}-config");
    server.call(
        "CreateEndpointConfig",
        json!({"EndpointConfigName": config, "ProductionVariants": production,
               "ShadowProductionVariants": shadows}),
    );
    let d = server.create_endpoint_settled(endpoint, &config);
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
}

/// What a client got: status, invoked variant, serving config, body.
struct Answer {
    status: u16,
    variant: String,
    config: String,
    body: String,
}

fn invoke(server: &Server, endpoint: &str) -> Answer {
    let r = server.invoke(endpoint, "text/csv", SETOSA_ROW, &[]);
    let status = r.status().as_u16();
    let variant = plinth_tests::header(&r, INVOKED_VARIANT).unwrap_or_default();
    let config = plinth_tests::header(&r, ENDPOINT_CONFIG).unwrap_or_default();
    let body = r.text().unwrap_or_default();
    Answer {
        status,
        variant,
        config,
        body,
    }
}

/// `n` requests in sequence, each answered 200 by production variant `production`; the
/// bodies.
#[track_caller]
fn invoke_n(server: &Server, endpoint: &str, n: usize, production: &str) -> Vec<String> {
    (0..n)
        .map(|_| {
            let a = invoke(server, endpoint);
            assert_eq!(a.status, 200, "{}", a.body);
            assert_eq!(
                a.variant, production,
                "the client got another variant's answer"
            );
            a.body
        })
        .collect()
}

/// DescribeShadowVariants' entry for shadow `shadow` of `endpoint`.
fn report(server: &Server, endpoint: &str, shadow: &str) -> Value {
    let out = server.call("DescribeShadowVariants", json!({"EndpointName": endpoint}));
    plinth_tests::json::item(&out, "ShadowProductionVariants", "VariantName", shadow).clone()
}

/// The shadow's report once every sampled copy is answered or dropped.
fn drained(server: &Server, endpoint: &str, shadow: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = report(server, endpoint, shadow);
        let count = |k: &str| {
            r[k].as_u64()
                .unwrap_or_else(|| panic!("{k} is not a count: {r}"))
        };
        if count("Invocations") + count("Dropped") == count("Sampled") {
            return r;
        }
        assert!(Instant::now() < deadline, "the shadow never drained: {r}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count: {report}"))
}

// ---- Tests ----

#[test]
fn a_shadow_of_the_same_model_agrees_on_every_request() {
    let server = start();
    endpoint(
        &server,
        "live",
        vec![variant("Production", "iris", json!({}))],
        vec![variant(
            "Shadow",
            "iris-copy",
            json!({"PlinthSamplingPercentage": 100}),
        )],
    );
    let d = server.call("DescribeEndpoint", json!({"EndpointName": "live"}));
    assert_eq!(
        d["ShadowProductionVariants"][0]["VariantName"], "Shadow",
        "{d}"
    );
    assert_eq!(
        d["ShadowProductionVariants"][0]["PlinthSamplingPercentage"], 100.0,
        "{d}"
    );
    assert_eq!(d["ProductionVariants"].as_array().unwrap().len(), 1, "{d}");

    let n = 200;
    let bodies = invoke_n(&server, "live", n, "Production");
    assert!(bodies.iter().all(|b| b.contains("setosa")), "{}", bodies[0]);
    let r = drained(&server, "live", "Shadow");
    assert_eq!(count(&r, "Sampled"), n as u64, "{r}");
    let answered = count(&r, "Invocations");
    assert!(
        count(&r, "Dropped") <= n as u64 / 10,
        "sequential requests and a queue of 128: {r}"
    );
    assert_eq!(answered + count(&r, "Dropped"), n as u64, "{r}");
    assert_eq!(r["ModelName"], "iris-copy", "{r}");
    assert_eq!(r["SamplingPercentage"], 100.0, "{r}");
    assert_eq!(count(&r, "Errors"), 0, "{r}");
    assert_eq!(r["ErrorRate"], 0.0, "{r}");
    for (compared, agreement) in [
        ("Compared", "ExactAgreement"),
        ("NumericComparisons", "NumericAgreement"),
        ("ArgmaxComparisons", "ArgmaxAgreement"),
    ] {
        assert_eq!(count(&r, compared), answered, "{compared}: {r}");
        assert_eq!(r[agreement], 1.0, "{agreement}: {r}");
    }
    assert_eq!(
        r["Recent"]["Invocations"].as_f64(),
        Some(answered as f64),
        "{r}"
    );
    assert_eq!(r["Recent"]["ErrorRate"], 0.0, "{r}");

    let shadows = server.call("DescribeShadowVariants", json!({"EndpointName": "live"}));
    let production = &shadows["ProductionVariants"][0];
    assert_eq!(production["VariantName"], "Production", "{shadows}");
    assert_eq!(
        production["Recent"]["Invocations"].as_f64(),
        Some(n as f64),
        "{shadows}"
    );

    let metrics = server.metrics();
    for kind in ["exact", "close", "argmax"] {
        let labels = [("endpoint", "live"), ("variant", "Shadow"), ("kind", kind)];
        let compared = sample(&metrics, "plinth_shadow_comparisons_total", &labels);
        let agreed = sample(&metrics, "plinth_shadow_agreements_total", &labels);
        assert_eq!(compared, Some(answered as f64), "{kind}:\n{metrics}");
        assert_eq!(agreed, Some(answered as f64), "{kind}:\n{metrics}");
    }
}

#[test]
fn a_shadow_that_answers_differently_never_agrees() {
    let server = start();
    faults_model(&server, "says-v1", json!({"FAULT_REPLY": "v1"}));
    faults_model(&server, "says-v2", json!({"FAULT_REPLY": "v2"}));
    // Text against text: no numbers on either side.
    endpoint(
        &server,
        "text",
        vec![variant("Production", "says-v1", json!({}))],
        vec![variant("Shadow", "says-v2", json!({}))],
    );
    // Iris's probabilities against text: only production predicts a class.
    endpoint(
        &server,
        "iris",
        vec![variant("Production", "iris", json!({}))],
        vec![variant("Shadow", "says-v2", json!({}))],
    );
    let n = 50;
    let bodies = invoke_n(&server, "text", n, "Production");
    assert!(
        bodies.iter().all(|b| b == "v1"),
        "the client got the shadow's answer: {bodies:?}"
    );
    invoke_n(&server, "iris", n, "Production");

    let text = drained(&server, "text", "Shadow");
    assert_eq!(
        count(&text, "Sampled"),
        n as u64,
        "weight 1 over 1 samples everything: {text}"
    );
    assert_eq!(text["SamplingPercentage"], 100.0, "{text}");
    let answered = count(&text, "Invocations");
    assert!(answered > 0, "{text}");
    assert_eq!(count(&text, "Errors"), 0, "{text}");
    assert_eq!(count(&text, "Compared"), answered, "{text}");
    assert_eq!(text["ExactAgreement"], 0.0, "{text}");
    assert_eq!(count(&text, "NumericComparisons"), 0, "{text}");
    assert_eq!(text["NumericAgreement"], Value::Null, "{text}");
    assert_eq!(count(&text, "ArgmaxComparisons"), 0, "{text}");
    assert_eq!(text["ArgmaxAgreement"], Value::Null, "{text}");

    let iris = drained(&server, "iris", "Shadow");
    let answered = count(&iris, "Invocations");
    assert_eq!(count(&iris, "Compared"), answered, "{iris}");
    assert_eq!(iris["ExactAgreement"], 0.0, "{iris}");
    assert_eq!(
        iris["NumericAgreement"],
        Value::Null,
        "different formats, one not numeric: {iris}"
    );
    assert_eq!(count(&iris, "ArgmaxComparisons"), answered, "{iris}");
    assert_eq!(
        iris["ArgmaxAgreement"], 0.0,
        "only production predicts a class: {iris}"
    );

    let metrics = server.metrics();
    let exact = [
        ("endpoint", "text"),
        ("variant", "Shadow"),
        ("kind", "exact"),
    ];
    assert_eq!(
        sample(&metrics, "plinth_shadow_comparisons_total", &exact),
        Some(count(&text, "Compared") as f64),
        "{metrics}"
    );
    assert_eq!(
        counter(&metrics, "plinth_shadow_agreements_total", &exact),
        0.0
    );
}

#[test]
fn a_shadow_that_traps_on_every_request_costs_production_nothing() {
    let mut server = start();
    faults_model(&server, "panics", json!({"FAULT_DEFAULT": "panic"}));
    endpoint(
        &server,
        "live",
        vec![variant("Production", "iris", json!({}))],
        vec![variant(
            "Shadow",
            "panics",
            json!({"PlinthSamplingPercentage": 100}),
        )],
    );
    let n = 40;
    invoke_n(&server, "live", n, "Production");
    let r = drained(&server, "live", "Shadow");
    assert_eq!(count(&r, "Sampled"), n as u64, "{r}");
    let answered = count(&r, "Invocations");
    assert!(answered > 0, "{r}");
    assert_eq!(count(&r, "Errors"), answered, "{r}");
    assert_eq!(r["ErrorRate"], 1.0, "{r}");
    assert_eq!(count(&r, "Compared"), 0, "{r}");
    assert_eq!(r["ExactAgreement"], Value::Null, "{r}");
    assert_eq!(r["Recent"]["ErrorRate"], 1.0, "{r}");

    // The host keeps serving, production and shadow copies alike.
    assert_eq!(server.ping().status(), StatusCode::OK);
    invoke_n(&server, "live", 10, "Production");
    let r = drained(&server, "live", "Shadow");
    assert_eq!(count(&r, "Sampled"), n as u64 + 10, "{r}");
    assert_eq!(count(&r, "Errors"), count(&r, "Invocations"), "{r}");
    assert!(server.is_running());
}

#[test]
fn a_slow_shadow_drops_copies_instead_of_slowing_production() {
    let server = start();
    faults_model(&server, "slow", json!({"FAULT_DELAY_MS": "200"}));
    endpoint(
        &server,
        "live",
        vec![variant("Production", "iris", json!({}))],
        vec![variant(
            "Shadow",
            "slow",
            json!({"PlinthSamplingPercentage": 100, "PlinthMaxQueueLength": 2}),
        )],
    );
    let n = 100;
    let started = Instant::now();
    invoke_n(&server, "live", n, "Production");
    let elapsed = started.elapsed();
    let burst = report(&server, "live", "Shadow");
    eprintln!("slow shadow: {n} requests in {elapsed:?}; then {burst}");
    // At the shadow's pace, 100 requests would take 20 s.
    assert!(
        elapsed < Duration::from_secs(5),
        "100 requests took {elapsed:?}: production waited for the shadow"
    );
    assert_eq!(count(&burst, "Sampled"), n as u64, "{burst}");
    let dropped = count(&burst, "Dropped");
    assert!(dropped > 0, "{burst}");
    // Taken copies: what one instance finished at 200 ms each, one in flight, one waiting
    // for it, two in the queue (and one of slack).
    let taken = n as u64 - dropped;
    let most = (elapsed.as_secs_f64() / 0.2).ceil() as u64 + 5;
    assert!(
        taken <= most,
        "the shadow took {taken} copies in {elapsed:?}: {burst}"
    );
    assert!(count(&burst, "Invocations") <= taken, "{burst}");

    let r = drained(&server, "live", "Shadow");
    assert_eq!(
        count(&r, "Dropped"),
        dropped,
        "nothing more is dropped without requests: {r}"
    );
    assert_eq!(count(&r, "Invocations"), taken, "{r}");
    assert_eq!(count(&r, "Errors"), 0, "{r}");
    // The shadow's latency is its own; production's is not the shadow's.
    let shadow_p50 = r["Recent"]["ModelLatencyP50"]
        .as_f64()
        .expect("shadow latency (µs)");
    assert!(shadow_p50 >= 150_000.0, "{r}");
    let all = server.call("DescribeShadowVariants", json!({"EndpointName": "live"}));
    let production_p99 = all["ProductionVariants"][0]["Recent"]["ModelLatencyP99"]
        .as_f64()
        .unwrap();
    assert!(production_p99 < 150_000.0, "{all}");

    let metrics = server.metrics();
    let labels = [("endpoint", "live"), ("variant", "Shadow")];
    assert_eq!(
        sample(&metrics, "plinth_shadow_dropped_total", &labels),
        Some(dropped as f64),
        "{metrics}"
    );
}

#[test]
fn sampling_takes_the_configured_share() {
    let server = std::sync::Arc::new(start());
    endpoint(
        &server,
        "live",
        vec![variant("Production", "iris", json!({}))],
        vec![variant(
            "Shadow",
            "iris-copy",
            json!({"PlinthSamplingPercentage": 30}),
        )],
    );
    let (threads, per_thread) = (4, 300);
    let clients: Vec<_> = (0..threads)
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || {
                invoke_n(&server, "live", per_thread, "Production");
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client failed");
    }
    let n = threads * per_thread;
    let r = drained(&server, "live", "Shadow");
    assert_eq!(r["SamplingPercentage"], 30.0, "{r}");
    let sampled = count(&r, "Sampled") as usize;
    assert_binomial(
        sampled,
        n,
        0.3,
        &format!("sampled with 30% configured: {r}"),
    );
    assert_eq!(count(&r, "Compared"), count(&r, "Invocations"), "{r}");
    assert_eq!(r["ExactAgreement"], 1.0, "{r}");

    // Without PlinthSamplingPercentage: the shadow's weight over production's total,
    // capped at 100%.
    endpoint(
        &server,
        "weighted",
        vec![
            variant("A", "iris", json!({"InitialVariantWeight": 3.0})),
            variant("B", "iris", json!({"InitialVariantWeight": 1.0})),
        ],
        vec![
            variant("Quarter", "iris-copy", json!({})),
            variant("Capped", "iris-copy", json!({"InitialVariantWeight": 9.0})),
        ],
    );
    assert_eq!(
        report(&server, "weighted", "Quarter")["SamplingPercentage"],
        25.0
    );
    assert_eq!(
        report(&server, "weighted", "Capped")["SamplingPercentage"],
        100.0
    );
    let d = server.call("DescribeEndpoint", json!({"EndpointName": "weighted"}));
    let shadows = d["ShadowProductionVariants"].as_array().unwrap();
    let percents: Vec<&Value> = shadows
        .iter()
        .map(|s| &s["PlinthSamplingPercentage"])
        .collect();
    assert_eq!(percents, [&json!(25.0), &json!(100.0)], "{d}");
}

#[test]
fn promoting_a_shadow_makes_it_the_production_variant() {
    let server = start();
    faults_model(&server, "candidate", json!({"FAULT_REPLY": "candidate"}));
    endpoint(
        &server,
        "live",
        vec![variant("Production", "iris", json!({}))],
        vec![
            variant(
                "Candidate",
                "candidate",
                json!({"PlinthSamplingPercentage": 100}),
            ),
            variant(
                "Other",
                "iris-copy",
                json!({"PlinthSamplingPercentage": 50}),
            ),
        ],
    );
    invoke_n(&server, "live", 10, "Production");

    let out = server.call(
        "PromoteShadowVariant",
        json!({"EndpointName": "live", "ShadowVariantName": "Candidate"}),
    );
    let generated = out["EndpointConfigName"]
        .as_str()
        .expect("the generated config's name")
        .to_string();
    assert_eq!(generated, "live-config-promoted-Candidate", "{out}");
    assert!(
        out["EndpointArn"]
            .as_str()
            .unwrap()
            .ends_with(":endpoint/live"),
        "{out}"
    );

    let d = server.describe_settled("live");
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    assert_eq!(d["EndpointConfigName"], generated, "{d}");
    assert!(d.get("FailureReason").is_none(), "{d}");
    let production = d["ProductionVariants"].as_array().unwrap();
    assert_eq!(production.len(), 1, "{d}");
    assert_eq!(production[0]["VariantName"], "Candidate", "{d}");
    assert_eq!(production[0]["ModelName"], "candidate", "{d}");
    let shadows = d["ShadowProductionVariants"]
        .as_array()
        .expect("Other stays a shadow");
    assert_eq!(shadows.len(), 1, "{d}");
    assert_eq!(shadows[0]["VariantName"], "Other", "{d}");

    let config = server.call(
        "DescribeEndpointConfig",
        json!({"EndpointConfigName": generated}),
    );
    assert_eq!(
        config["ProductionVariants"][0]["VariantName"], "Candidate",
        "{config}"
    );
    assert_eq!(
        config["ShadowProductionVariants"][0]["VariantName"], "Other",
        "{config}"
    );

    for _ in 0..20 {
        let a = invoke(&server, "live");
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.variant, "Candidate");
        assert_eq!(a.config, generated);
        assert_eq!(a.body, "candidate");
    }
    let report = server.call("DescribeShadowVariants", json!({"EndpointName": "live"}));
    assert_eq!(
        report["ProductionVariants"][0]["VariantName"], "Candidate",
        "{report}"
    );

    // A promotion may name the config it creates.
    let again = server.call(
        "PromoteShadowVariant",
        json!({"EndpointName": "live", "ShadowVariantName": "Other", "EndpointConfigName": "back-to-iris"}),
    );
    assert_eq!(again["EndpointConfigName"], "back-to-iris", "{again}");
    let d = server.describe_settled("live");
    assert_eq!(d["EndpointConfigName"], "back-to-iris", "{d}");
    assert!(d.get("ShadowProductionVariants").is_none(), "{d}");
    let a = invoke(&server, "live");
    assert_eq!((a.status, a.variant.as_str()), (200, "Other"), "{}", a.body);
}
