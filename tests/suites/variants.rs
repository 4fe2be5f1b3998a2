//! Production variants of the real `plinth serve`: the weighted split (chi-square goodness of
//! fit), live weight and capacity changes under load without a lost request, TargetVariant,
//! the control plane (DescribeEndpoint, UpdateEndpointWeightsAndCapacities; a refused update
//! leaving the routing alone, an update during an update refused), throttling above a
//! variant's queue bound, and the per-variant metrics.
//!
//! Invalid UpdateEndpointWeightsAndCapacities inputs, unknown endpoints and variants are
//! fixture cases (`tests/cases/UpdateEndpointWeightsAndCapacities/`, `DescribeEndpoint/`,
//! `InvokeEndpoint/`).
//!
//! Each test starts its own server on `127.0.0.1:0` (see `plinth_tests::Server`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use plinth_tests::metrics::{counter, of_variant, sample};
use plinth_tests::{
    header, ApiError, Config, Model, Server, StatusCode, Variant, ECHO_WASM, FAULTS_WASM,
    INVOKED_VARIANT, TARGET_VARIANT,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// The client timeout of the load generators: nothing may hang longer than this.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a capacity change may keep an endpoint `Updating`.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(30);

fn echo() -> Model {
    Model::new("echo", ECHO_WASM)
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap()
}

fn invocations_url(server: &Server, endpoint: &str) -> String {
    format!("{}/endpoints/{endpoint}/invocations", server.url())
}

/// Sends `body` (text/plain); gives the status, the invoked variant and the body.
fn send(
    client: &reqwest::blocking::Client,
    url: &str,
    body: &str,
    target: Option<&str>,
) -> Result<(StatusCode, Option<String>, String), String> {
    let mut request = client
        .post(url)
        .header("Content-Type", "text/plain")
        .body(body.to_owned());
    if let Some(target) = target {
        request = request.header(TARGET_VARIANT, target);
    }
    let response = request
        .send()
        .map_err(|e| format!("transport error: {e}"))?;
    let status = response.status();
    let variant = header(&response, INVOKED_VARIANT);
    let text = response
        .text()
        .map_err(|e| format!("reading the body: {e}"))?;
    Ok((status, variant, text))
}

/// Pearson's statistic of `observed` against shares proportional to `weights`, over the
/// variants with a positive weight (the others must have observed nothing; checked by the
/// callers).
fn chi_square(observed: &[u64], weights: &[f64]) -> f64 {
    let total_weight: f64 = weights.iter().filter(|w| **w > 0.0).sum();
    let n: u64 = observed
        .iter()
        .zip(weights)
        .filter(|(_, w)| **w > 0.0)
        .map(|(o, _)| o)
        .sum();
    observed
        .iter()
        .zip(weights)
        .filter(|(_, w)| **w > 0.0)
        .map(|(o, w)| {
            let expected = n as f64 * w / total_weight;
            (*o as f64 - expected).powi(2) / expected
        })
        .sum()
}

/// The chi-square critical value at alpha = 0.001 for `df` degrees of freedom.
fn critical_0_001(df: usize) -> f64 {
    match df {
        1 => 10.828,
        2 => 13.816,
        3 => 16.266,
        _ => panic!("no critical value for {df} degrees of freedom"),
    }
}

/// A small deterministic generator (xorshift64*), so that a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

// ---- control plane -------------------------------------------------------------------------

fn update(server: &Server, endpoint: &str, changes: Value) -> plinth_tests::Response {
    server.control(
        "UpdateEndpointWeightsAndCapacities",
        &json!({ "EndpointName": endpoint, "DesiredWeightsAndCapacities": changes }),
    )
}

/// An update that must be accepted; gives the `EndpointArn` it answers.
fn update_ok(server: &Server, endpoint: &str, changes: Value) -> String {
    let response = update(server, endpoint, changes.clone());
    let status = response.status();
    let text = response.text().unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "update {changes} was refused: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    body["EndpointArn"]
        .as_str()
        .unwrap_or_else(|| panic!("no EndpointArn in {text}"))
        .to_owned()
}

/// The description's variant `name`.
fn variant<'a>(description: &'a Value, name: &str) -> &'a Value {
    plinth_tests::json::item(description, "ProductionVariants", "VariantName", name)
}

/// Asserts a variant's current and desired weight and instance count.
fn assert_variant(description: &Value, name: &str, weight: f64, instances: u64) {
    let v = variant(description, name);
    assert_eq!(v["CurrentWeight"].as_f64(), Some(weight), "{name}: {v}");
    assert_eq!(v["DesiredWeight"].as_f64(), Some(weight), "{name}: {v}");
    assert_eq!(
        v["CurrentInstanceCount"].as_u64(),
        Some(instances),
        "{name}: {v}"
    );
    assert_eq!(
        v["DesiredInstanceCount"].as_u64(),
        Some(instances),
        "{name}: {v}"
    );
}

// ---- 1. the split ---------------------------------------------------------------------------

/// Sends `total` untargeted requests from `threads` keep-alive clients; counts the invoked
/// variants. Every response must be 200.
fn count_split(
    server: &Server,
    endpoint: &str,
    total: usize,
    threads: usize,
) -> HashMap<String, u64> {
    let url = invocations_url(server, endpoint);
    let counts = Mutex::new(HashMap::new());
    std::thread::scope(|s| {
        for t in 0..threads {
            let (url, counts) = (&url, &counts);
            s.spawn(move || {
                let client = client();
                let mut mine: HashMap<String, u64> = HashMap::new();
                let share = total / threads + usize::from(t < total % threads);
                for _ in 0..share {
                    let (status, variant, body) =
                        send(&client, url, "x", None).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(status, StatusCode::OK, "{body}");
                    assert_eq!(body, "x");
                    *mine
                        .entry(variant.expect("no invoked-variant header"))
                        .or_default() += 1;
                }
                let mut counts = counts.lock().unwrap();
                for (k, v) in mine {
                    *counts.entry(k).or_default() += v;
                }
            });
        }
    });
    counts.into_inner().unwrap()
}

#[test]
fn split_matches_weights_chi_square() {
    const N: usize = 10_000;
    let config = Config::new()
        .model(echo())
        .endpoint_with_variants(
            "even",
            vec![Variant::new("A", "echo", 1), Variant::new("B", "echo", 1)],
        )
        .endpoint_with_variants(
            "skewed",
            vec![
                Variant::new("A", "echo", 1),
                Variant::new("B", "echo", 1).weight(3.0),
            ],
        );
    let server = Server::start(BIN, &config.to_toml());

    for (endpoint, weights, wrong) in [
        ("even", [1.0, 1.0], [1.0, 3.0]),
        ("skewed", [1.0, 3.0], [1.0, 1.0]),
    ] {
        let started = Instant::now();
        let counts = count_split(&server, endpoint, N, 8);
        eprintln!(
            "{endpoint}: {N} requests in {:?}: {counts:?}",
            started.elapsed()
        );
        assert_eq!(
            counts.keys().filter(|k| *k != "A" && *k != "B").count(),
            0,
            "{counts:?}"
        );
        let observed = [
            counts.get("A").copied().unwrap_or(0),
            counts.get("B").copied().unwrap_or(0),
        ];
        assert_eq!(observed.iter().sum::<u64>(), N as u64);
        let fit = chi_square(&observed, &weights);
        assert!(
            fit < critical_0_001(1),
            "{endpoint}: split {observed:?} does not fit weights {weights:?}: chi-square {fit:.2} >= 10.828"
        );
        // The test can tell a wrong split: against the other ratio the statistic is huge
        // (about 1,667 or 2,500 for 10,000 requests).
        let misfit = chi_square(&observed, &wrong);
        assert!(
            misfit > 500.0,
            "{endpoint}: split {observed:?} fits the wrong weights {wrong:?} too (chi-square {misfit:.2})"
        );
    }
}

// ---- 2. live changes under load -------------------------------------------------------------

const NAMES: [&str; 3] = ["A", "B", "C"];

/// What the load generators and the controller share.
struct Live {
    /// The last change that has fully taken effect (its call returned, and for a capacity
    /// change the endpoint is InService again).
    generation: AtomicUsize,
    stop: AtomicBool,
    /// Per generation read before sending: the successful responses per variant.
    counts: Mutex<Vec<[u64; 3]>>,
    failures: Mutex<(u64, Vec<String>)>,
}

impl Live {
    fn fail(&self, what: String) {
        let mut f = self.failures.lock().unwrap();
        f.0 += 1;
        if f.1.len() < 20 {
            f.1.push(what);
        }
    }

    fn snapshot(&self, generation: usize) -> [u64; 3] {
        self.counts.lock().unwrap()[generation]
    }
}

/// Stops the load generators when the controller finishes, panics included.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn load_generator(live: &Live, url: &str) {
    let client = client();
    while !live.stop.load(Ordering::SeqCst) {
        let generation = live.generation.load(Ordering::SeqCst);
        match send(&client, url, "x", None) {
            Ok((StatusCode::OK, Some(v), _)) => match NAMES.iter().position(|n| *n == v) {
                Some(i) => live.counts.lock().unwrap()[generation][i] += 1,
                None => live.fail(format!("200 from unknown variant {v:?}")),
            },
            Ok((status, variant, body)) => {
                live.fail(format!("{status} from {variant:?}: {body}"));
            }
            Err(e) => live.fail(e),
        }
    }
}

#[test]
fn live_changes_under_load_lose_no_request() {
    const CHANGES: usize = 100;
    const THREADS: usize = 16;
    const FINAL_CHECKS: usize = 5;
    let variants = NAMES
        .iter()
        .map(|n| Variant::new(n, "echo", 1).max_queue_length(10_000))
        .collect();
    let config = Config::new()
        .model(echo())
        .endpoint_with_variants("live", variants);
    let server = Server::start(BIN, &config.to_toml());
    let url = invocations_url(&server, "live");

    let seed = std::env::var("PLINTH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_CAFE_u64);
    eprintln!("seed {seed:#x} (set PLINTH_TEST_SEED to replay)");
    let mut rng = Rng(seed);

    let live = Live {
        generation: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        counts: Mutex::new(vec![[0; 3]; CHANGES + 1]),
        failures: Mutex::new((0, Vec::new())),
    };
    // weights[g] and instances[g]: the endpoint after change g (0: as deployed).
    let mut weights: Vec<[f64; 3]> = vec![[1.0; 3]];
    let mut instances: Vec<[u64; 3]> = vec![[1; 3]];
    let started = Instant::now();
    let deadline = started + Duration::from_secs(100);
    let mut capacity_changes = 0;
    let mut parks = 0;

    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let (live, url) = (&live, &url);
            s.spawn(move || load_generator(live, url));
        }
        let _stop = StopOnDrop(&live.stop);
        let mut parked: Option<usize> = None;
        for g in 1..=CHANGES {
            let (mut w, mut n) = (weights[g - 1], instances[g - 1]);
            let mut changes = Vec::new();
            let is_final = g > CHANGES - FINAL_CHECKS;
            if g % 25 == 12 && parked.is_none() {
                // Take a variant out: weight 0 and no instances, keeping another weight > 0.
                let v = rng.below(3) as usize;
                w[v] = 0.0;
                n[v] = 0;
                if w.iter().all(|x| *x == 0.0) {
                    w[(v + 1) % 3] = 1.0;
                    changes.push(json!({"VariantName": NAMES[(v + 1) % 3], "DesiredWeight": 1.0}));
                }
                changes.push(json!({"VariantName": NAMES[v], "DesiredWeight": 0.0, "DesiredInstanceCount": 0}));
                parked = Some(v);
                parks += 1;
            } else if g % 25 == 18 && parked.is_some() {
                let v = parked.take().unwrap();
                w[v] = (50 + rng.below(251)) as f64 / 100.0;
                n[v] = 1;
                changes.push(json!({"VariantName": NAMES[v], "DesiredWeight": w[v], "DesiredInstanceCount": 1}));
            } else if g % 10 == 4 {
                // An instance-count change (1-3) of a variant that has instances.
                let candidates: Vec<usize> = (0..3).filter(|v| n[*v] > 0).collect();
                let v = candidates[rng.below(candidates.len() as u64) as usize];
                n[v] = 1 + (n[v] + rng.below(2)) % 3; // always different from before
                changes.push(json!({"VariantName": NAMES[v], "DesiredInstanceCount": n[v]}));
            } else {
                // New weights for the variants with instances, zeros included, never all zero.
                loop {
                    for v in 0..3 {
                        if n[v] == 0 {
                            continue;
                        }
                        w[v] = if !is_final && rng.unit() < 0.3 {
                            0.0
                        } else {
                            (10 + rng.below(391)) as f64 / 100.0
                        };
                    }
                    if w.iter().any(|x| *x > 0.0) {
                        break;
                    }
                }
                for v in (0..3).filter(|v| n[*v] > 0) {
                    changes.push(json!({"VariantName": NAMES[v], "DesiredWeight": w[v]}));
                }
            }
            weights.push(w);
            instances.push(n);

            let resizes = n != instances[g - 1];
            update_ok(&server, "live", Value::Array(changes.clone()));
            let d = if resizes {
                capacity_changes += 1;
                server.wait_in_service("live", UPDATE_TIMEOUT)
            } else {
                // Weight-only: in effect when the call returns, and no Updating.
                let d = server.describe_endpoint("live");
                assert_eq!(d["EndpointStatus"], "InService", "after {changes:?}: {d}");
                d
            };
            for v in 0..3 {
                assert_variant(&d, NAMES[v], w[v], n[v]);
            }
            live.generation.store(g, Ordering::SeqCst);

            // Wait for traffic routed by exactly these weights: requests that read
            // generation g and completed before change g + 1 starts.
            let wanted = if is_final { 2_000 } else { 200 };
            let counted = loop {
                let counted = live.snapshot(g);
                if counted.iter().sum::<u64>() >= wanted {
                    break counted;
                }
                assert!(
                    Instant::now() < deadline,
                    "change {g}: only {counted:?} requests after {:?}; failures so far {:?}",
                    started.elapsed(),
                    live.failures.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(5));
            };
            for v in 0..3 {
                assert!(
                    w[v] > 0.0 || counted[v] == 0,
                    "change {g} ({changes:?}) returned, yet {} requests sent afterwards went to \
                     {} whose weight is 0 (weights {w:?}, split {counted:?})",
                    counted[v],
                    NAMES[v]
                );
            }
            let total: u64 = counted.iter().sum();
            let weight_sum: f64 = w.iter().sum();
            if is_final {
                let positive = w.iter().filter(|x| **x > 0.0).count();
                if positive > 1 {
                    let fit = chi_square(&counted, &w);
                    assert!(
                        fit < critical_0_001(positive - 1),
                        "change {g}: split {counted:?} does not fit weights {w:?}: chi-square {fit:.2}"
                    );
                }
            } else {
                // Roughly: within 0.2 of each share (over 5 standard deviations at n = 200).
                for v in 0..3 {
                    let share = counted[v] as f64 / total as f64;
                    let expected = w[v] / weight_sum;
                    assert!(
                        (share - expected).abs() < 0.2,
                        "change {g}: {} got share {share:.3}, expected {expected:.3} (weights {w:?}, split {counted:?})",
                        NAMES[v]
                    );
                }
            }
        }
    });

    let elapsed = started.elapsed();
    let counts = live.counts.into_inner().unwrap();
    let total: u64 = counts.iter().flatten().sum();
    let (failed, examples) = live.failures.into_inner().unwrap();
    eprintln!(
        "{CHANGES} changes ({capacity_changes} with capacity, {parks} parks) under {THREADS} \
         clients: {total} requests in {elapsed:?}, {failed} failed"
    );
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during live changes, e.g. {examples:#?}",
        total + failed
    );
    // Every request, including those that overlapped the next change: a variant whose weight
    // was 0 both in the generation the request saw and in the one that followed never served it.
    for (g, counted) in counts.iter().enumerate() {
        for v in 0..3 {
            let next = weights.get(g + 1).map_or(0.0, |w| w[v]);
            assert!(
                counted[v] == 0 || weights[g][v] > 0.0 || next > 0.0,
                "generation {g}: {} requests went to {} with weight 0 (weights {:?} then {:?})",
                counted[v],
                NAMES[v],
                weights[g],
                weights.get(g + 1)
            );
        }
    }
}

// ---- 3. TargetVariant and DescribeEndpoint --------------------------------------------------

#[test]
fn target_variant_and_describe() {
    let config = Config::new().model(echo()).endpoint_with_variants(
        "tv",
        vec![
            Variant::new("A", "echo", 2),
            Variant::new("B", "echo", 1)
                .weight(0.0)
                .routing_strategy("RANDOM"),
        ],
    );
    let server = Server::start(BIN, &config.to_toml());
    let url = invocations_url(&server, "tv");
    let client = client();

    // Weight 0: never chosen by weight, yet reachable by name.
    for _ in 0..50 {
        let (status, v, body) = send(&client, &url, "hi", None).unwrap();
        assert_eq!(
            (status, v.as_deref()),
            (StatusCode::OK, Some("A")),
            "{body}"
        );
    }
    for _ in 0..10 {
        let (status, v, body) = send(&client, &url, "hi", Some("B")).unwrap();
        assert_eq!(
            (status, v.as_deref()),
            (StatusCode::OK, Some("B")),
            "{body}"
        );
        assert_eq!(body, "hi");
    }
    // (An unknown TargetVariant is the case InvokeEndpoint/unknown-target-variant.)

    let d0 = server.describe_endpoint("tv");
    assert_eq!(d0["EndpointName"], "tv", "{d0}");
    assert_eq!(d0["EndpointConfigName"], "tv-config", "{d0}");
    assert_eq!(d0["EndpointStatus"], "InService", "{d0}");
    let arn = d0["EndpointArn"].as_str().expect("EndpointArn").to_owned();
    assert!(
        arn.starts_with("arn:aws:sagemaker:") && arn.ends_with(":endpoint/tv"),
        "{arn}"
    );
    let created = d0["CreationTime"].as_f64().expect("CreationTime");
    let modified0 = d0["LastModifiedTime"].as_f64().expect("LastModifiedTime");
    assert!(created > 1.6e9 && modified0 >= created, "{d0}");
    assert_eq!(
        d0["ProductionVariants"].as_array().unwrap().len(),
        2,
        "{d0}"
    );
    assert_variant(&d0, "A", 1.0, 2);
    assert_variant(&d0, "B", 0.0, 1);
    for (name, strategy) in [("A", "LEAST_OUTSTANDING_REQUESTS"), ("B", "RANDOM")] {
        let v = variant(&d0, name);
        assert_eq!(v["ModelName"], "echo", "{v}");
        assert_eq!(v["RoutingConfig"]["RoutingStrategy"], strategy, "{v}");
    }

    // Weight only: in effect when the call returns, still InService.
    std::thread::sleep(Duration::from_millis(20));
    let answered = update_ok(
        &server,
        "tv",
        json!([{"VariantName": "B", "DesiredWeight": 3.0}]),
    );
    assert_eq!(answered, arn);
    let d1 = server.describe_endpoint("tv");
    assert_eq!(d1["EndpointStatus"], "InService", "{d1}");
    assert_variant(&d1, "A", 1.0, 2);
    assert_variant(&d1, "B", 3.0, 1);
    assert_eq!(d1["CreationTime"].as_f64(), Some(created), "{d1}");
    assert!(
        d1["LastModifiedTime"].as_f64().unwrap() > modified0,
        "{d0}\n{d1}"
    );
    let mut seen = HashMap::<String, u64>::new();
    for _ in 0..400 {
        let (status, v, _) = send(&client, &url, "hi", None).unwrap();
        assert_eq!(status, StatusCode::OK);
        *seen.entry(v.unwrap()).or_default() += 1;
    }
    let (a, b) = (
        seen.get("A").copied().unwrap_or(0),
        seen.get("B").copied().unwrap_or(0),
    );
    assert_eq!(a + b, 400, "{seen:?}");
    assert!(a > 40 && b > 2 * a, "1:3 split looks like {seen:?}");

    // Weight and capacity: Updating, then InService with both applied.
    update_ok(
        &server,
        "tv",
        json!([{"VariantName": "A", "DesiredWeight": 2.0, "DesiredInstanceCount": 3}]),
    );
    let d2 = server.wait_in_service("tv", UPDATE_TIMEOUT);
    assert_variant(&d2, "A", 2.0, 3);
    assert_variant(&d2, "B", 3.0, 1);
    assert_eq!(
        variant(&d2, "A")["RoutingConfig"]["RoutingStrategy"],
        "LEAST_OUTSTANDING_REQUESTS"
    );
    assert_eq!(
        variant(&d2, "B")["RoutingConfig"]["RoutingStrategy"],
        "RANDOM"
    );

    // No instances (allowed with weight 0): TargetVariant gets 503 ServiceUnavailable.
    update_ok(
        &server,
        "tv",
        json!([{"VariantName": "B", "DesiredWeight": 0.0, "DesiredInstanceCount": 0}]),
    );
    let d3 = server.wait_in_service("tv", UPDATE_TIMEOUT);
    assert_variant(&d3, "B", 0.0, 0);
    let e =
        ApiError::from_response(server.invoke("tv", "text/plain", "hi", &[(TARGET_VARIANT, "B")]));
    assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE, "{}", e.body);
    assert_eq!(e.code, "ServiceUnavailable", "{}", e.body);
    for _ in 0..20 {
        let (status, v, _) = send(&client, &url, "hi", None).unwrap();
        assert_eq!((status, v.as_deref()), (StatusCode::OK, Some("A")));
    }
    // And back.
    update_ok(
        &server,
        "tv",
        json!([{"VariantName": "B", "DesiredInstanceCount": 1}]),
    );
    let d4 = server.wait_in_service("tv", UPDATE_TIMEOUT);
    assert_variant(&d4, "B", 0.0, 1);
    let (status, v, body) = send(&client, &url, "back", Some("B")).unwrap();
    assert_eq!(
        (status, v.as_deref(), body.as_str()),
        (StatusCode::OK, Some("B"), "back")
    );
}

// ---- 4. invalid updates ---------------------------------------------------------------------

/// The parts of a description an update changes (the timestamps included).
fn state_of(description: &Value) -> Value {
    json!({
        "status": description["EndpointStatus"],
        "modified": description["LastModifiedTime"],
        "variants": description["ProductionVariants"],
    })
}

#[test]
fn a_refused_update_leaves_the_routing_alone_and_updates_run_one_at_a_time() {
    // (Each invalid update, refused with its message, leaving the description unchanged and
    // both variants serving, is a case in tests/cases/UpdateEndpointWeightsAndCapacities/;
    // here one of them, and the split after it.)
    let config = Config::new().model(echo()).endpoint_with_variants(
        "bad",
        vec![Variant::new("A", "echo", 1), Variant::new("B", "echo", 1)],
    );
    let server = Server::start(BIN, &config.to_toml());
    let before = state_of(&server.describe_endpoint("bad"));

    // A valid change next to an invalid one: nothing of it applies.
    let changes = json!([
        {"VariantName": "B", "DesiredWeight": 5.0, "DesiredInstanceCount": 2},
        {"VariantName": "A", "DesiredWeight": -3.0},
    ]);
    let e = ApiError::from_response(update(&server, "bad", changes.clone()));
    assert_eq!(
        (e.status, e.code.as_str()),
        (StatusCode::BAD_REQUEST, "ValidationException"),
        "{changes}: {}",
        e.body
    );
    let now = server.describe_endpoint("bad");
    assert_eq!(state_of(&now), before, "{changes} changed the endpoint");
    // Routing is unchanged too: both variants still serve.
    let url = invocations_url(&server, "bad");
    let client = client();
    let mut seen = HashMap::<String, u64>::new();
    for _ in 0..100 {
        let (status, v, _) = send(&client, &url, "x", None).unwrap();
        assert_eq!(status, StatusCode::OK);
        *seen.entry(v.unwrap()).or_default() += 1;
    }
    assert!(
        seen.get("A").copied().unwrap_or(0) > 10 && seen.get("B").copied().unwrap_or(0) > 10,
        "{seen:?}"
    );

    // An update while another is in progress. Growing to many instances keeps the endpoint
    // Updating for a while; if it finished before the second call, shrink and try again.
    let mut refused = None;
    for attempt in 0..5 {
        let count = 60 + 60 * attempt;
        update_ok(
            &server,
            "bad",
            json!([{"VariantName": "A", "DesiredInstanceCount": count}]),
        );
        let second = update(
            &server,
            "bad",
            json!([{"VariantName": "B", "DesiredWeight": 7.0}]),
        );
        if second.status() == StatusCode::OK {
            // Not caught Updating: undo both and grow further.
            server.wait_in_service("bad", UPDATE_TIMEOUT);
            update_ok(
                &server,
                "bad",
                json!([{"VariantName": "A", "DesiredInstanceCount": 1}, {"VariantName": "B", "DesiredWeight": 1.0}]),
            );
            server.wait_in_service("bad", UPDATE_TIMEOUT);
            continue;
        }
        eprintln!("caught Updating while growing A to {count} (attempt {attempt})");
        refused = Some((count, ApiError::from_response(second)));
        break;
    }
    let (count, e) =
        refused.expect("never caught the endpoint Updating to test a concurrent update");
    assert_eq!(e.status, StatusCode::BAD_REQUEST, "{}", e.body);
    assert_eq!(e.code, "ValidationException", "{}", e.body);
    assert!(
        e.message.starts_with("Cannot update in-progress endpoint") && e.message.contains("bad"),
        "{:?}",
        e.message
    );
    let after = server.wait_in_service("bad", UPDATE_TIMEOUT);
    assert_variant(&after, "A", 1.0, count);
    assert_variant(&after, "B", 1.0, 1);
}

// ---- 5. throttling --------------------------------------------------------------------------

#[test]
fn burst_above_capacity_is_throttled_not_hung() {
    const BURST: usize = 20;
    const QUEUE: u64 = 2;
    let config = Config::new()
        .model(Model::new("faults", FAULTS_WASM).timeout_seconds(2))
        .endpoint_with_variants(
            "busy",
            vec![Variant::new("V", "faults", 1).max_queue_length(QUEUE)],
        );
    let server = Server::start(BIN, &config.to_toml());
    let url = invocations_url(&server, "busy");
    let barrier = Barrier::new(BURST);

    std::thread::scope(|s| {
        // Hold the only instance for ~2 s.
        let holder = s.spawn(|| {
            let started = Instant::now();
            let result = send(&client(), &url, "loop", None);
            (result, started.elapsed())
        });
        server.wait_busy("busy", "V", Duration::from_secs(5));

        let burst: Vec<_> = (0..BURST)
            .map(|_| {
                let (barrier, url) = (&barrier, &url);
                s.spawn(move || {
                    let client = client();
                    barrier.wait();
                    let started = Instant::now();
                    let result = send(&client, url, "ok", None);
                    (result, started.elapsed())
                })
            })
            .collect();
        let mut served = 0;
        let mut throttled = 0;
        for handle in burst {
            let (result, elapsed) = handle.join().unwrap();
            let (status, variant, body) = result.unwrap_or_else(|e| panic!("burst request: {e}"));
            assert_eq!(variant.as_deref(), Some("V"), "{status} {body}");
            if status == StatusCode::OK {
                assert_eq!(body, "ok");
                served += 1;
            } else {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
                let b: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(b["__type"], "ThrottlingException", "{body}");
                assert!(
                    elapsed < Duration::from_secs(1),
                    "a throttled request took {elapsed:?}"
                );
                throttled += 1;
            }
        }
        assert_eq!(
            (served, throttled),
            (QUEUE as usize, BURST - QUEUE as usize),
            "with one busy instance and max_queue_length {QUEUE}, {QUEUE} may wait"
        );
        let (result, elapsed) = holder.join().unwrap();
        let (status, _, body) = result.unwrap();
        assert_eq!(status, StatusCode::FAILED_DEPENDENCY, "{body}");
        assert!(body.contains("timed out"), "{body}");
        assert!(
            elapsed < Duration::from_secs(8),
            "the loop took {elapsed:?}"
        );

        let m = server.metrics();
        let get = |name| counter(&m, name, &of_variant("busy", "V"));
        assert_eq!(
            get("plinth_throttled_requests_total"),
            throttled as f64,
            "{m}"
        );
        assert_eq!(get("plinth_invocations_total"), (BURST + 1) as f64, "{m}");
        assert_eq!(
            get("plinth_invocation_4xx_errors_total"),
            throttled as f64,
            "{m}"
        );
        assert_eq!(get("plinth_invocation_5xx_errors_total"), 1.0, "{m}");
        assert_eq!(get("plinth_invocation_model_errors_total"), 1.0, "{m}");
        assert_eq!(get("plinth_variant_queue_depth"), 0.0, "{m}");
        assert_eq!(get("plinth_variant_instances_busy"), 0.0, "{m}");
    });

    let (status, _, body) = send(&client(), &url, "ok", None).unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

// ---- 6. metrics -----------------------------------------------------------------------------

#[test]
fn metrics_count_by_variant() {
    let config = Config::new()
        .model(echo())
        .model(Model::new("faults", FAULTS_WASM))
        .endpoint_with_variants(
            "m",
            vec![
                Variant::new("Good", "echo", 2),
                Variant::new("Bad", "faults", 1),
            ],
        );
    let server = Server::start(BIN, &config.to_toml());
    let url = invocations_url(&server, "m");
    let client = client();
    let call = |target: &str, body: &str, expected: StatusCode| {
        let (status, v, text) = send(&client, &url, body, Some(target)).unwrap();
        assert_eq!(status, expected, "{target} {body}: {text}");
        assert_eq!(v.as_deref(), Some(target));
    };
    for _ in 0..5 {
        call("Good", "hello", StatusCode::OK);
    }
    for _ in 0..3 {
        call("Bad", "fine", StatusCode::OK);
    }
    call("Bad", "model-error", StatusCode::FAILED_DEPENDENCY);
    call("Bad", "model-error", StatusCode::FAILED_DEPENDENCY);
    call("Bad", "bad-request", StatusCode::FAILED_DEPENDENCY);
    call("Bad", "panic", StatusCode::FAILED_DEPENDENCY);
    let e =
        ApiError::from_response(server.invoke("m", "text/plain", "x", &[(TARGET_VARIANT, "Nope")]));
    assert_eq!(e.status, StatusCode::BAD_REQUEST);

    let m = server.metrics();
    let get = |name: &str, v: &str| counter(&m, name, &of_variant("m", v));
    // (metric, Good, Bad)
    for (name, good, bad) in [
        ("plinth_invocations_total", 5.0, 7.0),
        ("plinth_invocation_4xx_errors_total", 0.0, 1.0),
        ("plinth_invocation_5xx_errors_total", 0.0, 3.0),
        ("plinth_invocation_model_errors_total", 0.0, 4.0),
        ("plinth_throttled_requests_total", 0.0, 0.0),
        ("plinth_invocations_per_instance_total", 2.5, 7.0),
        ("plinth_model_latency_seconds_count", 5.0, 3.0),
        ("plinth_overhead_latency_seconds_count", 5.0, 3.0),
        ("plinth_variant_instances", 2.0, 1.0),
        ("plinth_variant_instances_busy", 0.0, 0.0),
        ("plinth_variant_queue_depth", 0.0, 0.0),
        ("plinth_variant_instances_replaced", 0.0, 1.0),
    ] {
        assert_eq!(
            (get(name, "Good"), get(name, "Bad")),
            (good, bad),
            "{name}:\n{m}"
        );
    }
    for gauge in [
        "plinth_variant_instances",
        "plinth_variant_instances_busy",
        "plinth_variant_queue_depth",
        "plinth_variant_instances_replaced",
    ] {
        for v in ["Good", "Bad"] {
            assert!(
                sample(&m, gauge, &of_variant("m", v)).is_some(),
                "no {gauge} for {v}:\n{m}"
            );
        }
    }
    for name in [
        "plinth_model_latency_seconds",
        "plinth_overhead_latency_seconds",
    ] {
        let sum =
            sample(&m, &format!("{name}_sum"), &of_variant("m", "Good")).expect("histogram sum");
        assert!(sum > 0.0 && sum < 5.0, "{name}_sum {sum}");
    }
    // The unroutable request has no variant.
    assert_eq!(get("plinth_invocation_4xx_errors_total", ""), 1.0, "{m}");

    // Gauges follow a capacity change.
    update_ok(
        &server,
        "m",
        json!([{"VariantName": "Good", "DesiredInstanceCount": 3}]),
    );
    server.wait_in_service("m", UPDATE_TIMEOUT);
    let m = server.metrics();
    assert_eq!(
        sample(&m, "plinth_variant_instances", &of_variant("m", "Good")),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "plinth_variant_instances", &of_variant("m", "Bad")),
        Some(1.0),
        "{m}"
    );
    call("Good", "again", StatusCode::OK);
    let m = server.metrics();
    assert_eq!(
        counter(&m, "plinth_invocations_total", &of_variant("m", "Good")),
        6.0,
        "{m}"
    );
    let per_instance = counter(
        &m,
        "plinth_invocations_per_instance_total",
        &of_variant("m", "Good"),
    );
    assert!(
        (per_instance - (2.5 + 1.0 / 3.0)).abs() < 1e-9,
        "{per_instance}"
    );
}
