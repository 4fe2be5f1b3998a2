//! Hostile guests (the `hostile` test plugin, `plugins/hostile`) against the real
//! `plinth serve`: every attack a component can make through its host calls is contained.
//!
//! - Attacks on requests, all against one server, one after the other, each on its own
//!   model and endpoint (one instance, the iris artifact as model data, a 2 s deadline; 30 s
//!   for the flood and the big response, 32 MiB of memory for the tensors): a 30 s host
//!   wait (`sleep`), a 100 MiB response (`big-response`), wasi-nn tensors without bound
//!   (`tensors`), a graph from guest bytes (`graph-bytes`), open files without bound
//!   (`files`), a 100 MiB stdout flood (`stdout`) and backend computation until stopped
//!   (`compute`). Each fails only its own request, with a `ModelError` (424) naming the limit
//!   it met (the flood instead succeeds, its lines dropped and counted); the next ordinary
//!   request to the same endpoint answers at once; `/ping` and a well-behaved endpoint (iris)
//!   answer while the attack runs; and the host's resident memory stays within
//!   [`RSS_HEADROOM`] of what it was before the first attack.
//! - `model_fn` attacks: a `model_fn` that spins and one that sleeps forever, each under
//!   `ContainerStartupHealthCheckTimeoutInSeconds: 2`, leave their endpoints `Failed` in
//!   time with a reason naming that member, deletable, `/ping` and iris answering meanwhile.
//! - A restart: `kill -9` with such endpoints stored; the new process answers `/ping` at
//!   once (endpoints come back in the background) and iris is `InService` again later.
//!
//! The tests take turns ([`serial`]): the timing and memory bounds are about one attack at a
//! time, not about three servers sharing two cores.

use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use plinth_tests::{
    ApiError, Options, Server, StatusCode, CUSTOM_ATTRIBUTES, HOSTILE_WASM, IRIS_MODEL_DIR,
    IRIS_WASM, SETOSA_ROW, START_TIMEOUT,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// `PlinthLimits.InvocationTimeoutInSeconds` of the attacked endpoints.
const DEADLINE_SECONDS: u64 = 2;
/// The deadline of the `stdout` endpoint: its flood is meant to complete.
const FLOOD_DEADLINE_SECONDS: u64 = 30;
/// `PlinthLimits.MemorySizeInMB` of the `tensors` endpoint.
const TENSORS_MEMORY_MIB: u64 = 32;
/// How long past its deadline an attack may take to be answered: the host's watchdog grace,
/// tearing the instance down, a loaded machine.
const ANSWER_SLACK: Duration = Duration::from_secs(3);
/// An ordinary request after an attack (it takes milliseconds).
const NORMAL_LATENCY: Duration = Duration::from_secs(1);
/// `/ping` or an iris request while an attack loads the machine.
const PROBE_LATENCY: Duration = Duration::from_secs(2);
/// How long a probe may wait for any answer at all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How far the server's resident memory may rise above its level before the first attack.
const RSS_HEADROOM: u64 = 512 << 20;
/// `ContainerStartupHealthCheckTimeoutInSeconds` of the `model_fn` attacks.
const STARTUP_SECONDS: u64 = 2;
/// How soon an endpoint whose `model_fn` never returns must be `Failed`.
const STARTUP_FAILURE_BOUND: Duration = Duration::from_secs(10);
/// How soon after a restart begins (`kill -9` included) `/ping` must answer.
const RESTART_PING: Duration = Duration::from_secs(1);
/// How soon after a restart the iris endpoint must be `InService` again.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(30);

/// The hostile guests' metric fragment: guest log lines the host dropped.
const DROPPED_LOG_LINES: &str = "guest_log_lines_dropped";

static SERIAL: Mutex<()> = Mutex::new(());

/// One test of this suite at a time (a failed one does not stop the others).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What an attack must end in.
#[derive(Clone, Copy, Debug)]
enum Expected {
    /// A 424 `ModelError` whose message (or `OriginalMessage`) contains this fragment.
    ModelError(&'static str),
    /// `200 ok`, and the host's count of dropped guest log lines grows.
    LogsDropped,
}

/// One attack of the hostile plugin, and what containing it looks like.
#[derive(Clone, Copy, Debug)]
struct Attack {
    /// The custom attribute that triggers it (the plugin's name for it).
    name: &'static str,
    /// `PlinthLimits.InvocationTimeoutInSeconds` of its model.
    deadline_seconds: u64,
    /// `PlinthLimits.MemorySizeInMB` of its model; `None`: the default.
    memory_mib: Option<u64>,
    expected: Expected,
}

/// Every attack on a request, in the order they run.
const ATTACKS: [Attack; 7] = [
    Attack {
        name: "sleep",
        deadline_seconds: DEADLINE_SECONDS,
        memory_mib: None,
        expected: Expected::ModelError("deadline"),
    },
    Attack {
        name: "big-response",
        // Building 100 MiB in a debug build on busy cores can take longer than 2 s: the
        // response limit must be what stops it, not the deadline.
        deadline_seconds: FLOOD_DEADLINE_SECONDS,
        memory_mib: None,
        expected: Expected::ModelError("MaxResponseSizeInMB"),
    },
    Attack {
        name: "tensors",
        deadline_seconds: DEADLINE_SECONDS,
        // Reached in a few dozen tensors, well before the deadline (lifting 1 MiB into the
        // host takes milliseconds in a debug build).
        memory_mib: Some(TENSORS_MEMORY_MIB),
        expected: Expected::ModelError("MemorySizeInMB"),
    },
    Attack {
        name: "graph-bytes",
        deadline_seconds: DEADLINE_SECONDS,
        memory_mib: None,
        expected: Expected::ModelError("AllowGraphsFromBytes"),
    },
    Attack {
        name: "files",
        deadline_seconds: DEADLINE_SECONDS,
        memory_mib: None,
        expected: Expected::ModelError("open files"),
    },
    Attack {
        name: "stdout",
        deadline_seconds: FLOOD_DEADLINE_SECONDS,
        memory_mib: None,
        expected: Expected::LogsDropped,
    },
    Attack {
        name: "compute",
        deadline_seconds: DEADLINE_SECONDS,
        memory_mib: None,
        expected: Expected::ModelError("deadline"),
    },
];

impl Attack {
    /// The model and the endpoint that take this attack.
    fn endpoint(&self) -> String {
        format!("hostile-{}", self.name)
    }

    /// Its model's `PlinthLimits`.
    fn limits(&self) -> Value {
        let mut limits = json!({ "InvocationTimeoutInSeconds": self.deadline_seconds });
        if let Some(mib) = self.memory_mib {
            limits["MemorySizeInMB"] = json!(mib);
        }
        limits
    }

    /// The latest the attack may be answered.
    fn answer_bound(&self) -> Duration {
        Duration::from_secs(self.deadline_seconds) + ANSWER_SLACK
    }
}

// ---- Deploying ----

/// CreateModel `name`: `image` with the iris artifact as model data, `environment`, and
/// `limits` (`PlinthLimits`) if given.
fn create_model(
    server: &Server,
    name: &str,
    image: &str,
    environment: Value,
    limits: Option<Value>,
) {
    let mut input = json!({
        "ModelName": name,
        "PrimaryContainer": {
            "Image": image,
            "ModelDataUrl": IRIS_MODEL_DIR,
            "Environment": environment,
        },
    });
    if let Some(limits) = limits {
        input["PlinthLimits"] = limits;
    }
    server.call("CreateModel", input);
}

/// Config `<endpoint>-config` with one variant `AllTraffic` of `model` (one instance, with
/// `ContainerStartupHealthCheckTimeoutInSeconds` if given), and CreateEndpoint `endpoint` on
/// it; does not wait for it.
fn create_endpoint(server: &Server, endpoint: &str, model: &str, startup_seconds: Option<u64>) {
    let config = format!("{endpoint}-config");
    let mut variant = json!({
        "VariantName": "AllTraffic",
        "ModelName": model,
        "InitialInstanceCount": 1,
    });
    if let Some(seconds) = startup_seconds {
        variant["ContainerStartupHealthCheckTimeoutInSeconds"] = json!(seconds);
    }
    server.call(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": config, "ProductionVariants": [variant] }),
    );
    server.call(
        "CreateEndpoint",
        json!({ "EndpointName": endpoint, "EndpointConfigName": config }),
    );
}

/// The well-behaved neighbour: model and endpoint `iris`, not waited for.
fn create_iris(server: &Server) {
    create_model(server, "iris", IRIS_WASM, json!({}), None);
    create_endpoint(server, "iris", "iris", None);
}

// ---- Probes ----

/// A client for probes: gives up after [`PROBE_TIMEOUT`] instead of the harness's minute.
fn probe_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .build()
        .unwrap()
}

/// `/ping` answers 200 and iris answers a setosa row, each within [`PROBE_LATENCY`]; panics
/// saying which did not (`during` says when).
#[track_caller]
fn neighbours_answer(server: &Server, client: &reqwest::blocking::Client, during: &str) {
    let started = Instant::now();
    let ping = client.get(format!("{}/ping", server.url())).send();
    let took = started.elapsed();
    match ping {
        Ok(r) if r.status() == StatusCode::OK && took <= PROBE_LATENCY => {}
        Ok(r) => panic!(
            "{during}: GET /ping answered {} after {took:?} (bound {PROBE_LATENCY:?})",
            r.status()
        ),
        Err(e) => panic!("{during}: GET /ping got no answer after {took:?}: {e}"),
    }

    let started = Instant::now();
    let iris = client
        .post(format!("{}/endpoints/iris/invocations", server.url()))
        .header("Content-Type", "text/csv")
        .body(SETOSA_ROW)
        .send();
    let took = started.elapsed();
    match iris {
        Ok(r) if r.status() == StatusCode::OK && took <= PROBE_LATENCY => {}
        Ok(r) => {
            let status = r.status();
            let text = r.text().unwrap_or_default();
            panic!(
                "{during}: the iris endpoint answered {status} after {took:?} \
                 (bound {PROBE_LATENCY:?}): {text}"
            )
        }
        Err(e) => panic!("{during}: the iris endpoint got no answer after {took:?}: {e}"),
    }
}

/// An ordinary request to the hostile `endpoint` answers `ok` within [`NORMAL_LATENCY`].
#[track_caller]
fn ordinary_request_answers(server: &Server, endpoint: &str, after: &str) {
    let started = Instant::now();
    let response = server.invoke(endpoint, "text/plain", "", &[]);
    let took = started.elapsed();
    let status = response.status();
    let text = response.text().unwrap_or_default();
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::OK, "ok"),
        "{after}: an ordinary request to {endpoint} failed after {took:?}"
    );
    assert!(
        took <= NORMAL_LATENCY,
        "{after}: an ordinary request to {endpoint} took {took:?} (bound {NORMAL_LATENCY:?})"
    );
}

/// The guest log lines the host has dropped: every sample whose metric name contains
/// [`DROPPED_LOG_LINES`], summed over its labels (0 when there is none yet).
fn dropped_log_lines(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let name_end = line.find(['{', ' '])?;
            if !line[..name_end].contains(DROPPED_LOG_LINES) {
                return None;
            }
            let value = line.rsplit_once(['}', ' '])?.1;
            Some(
                value
                    .trim()
                    .parse::<f64>()
                    .unwrap_or_else(|e| panic!("metric line {line:?}: {e}")),
            )
        })
        .sum()
}

/// The text of a caught panic.
fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(text) => *text,
        Err(panic) => match panic.downcast::<&str>() {
            Ok(text) => (*text).to_owned(),
            Err(_) => "(a panic without a message)".to_owned(),
        },
    }
}

// ---- Attacks on requests ----

/// How an attacking request was answered.
struct Answer {
    status: StatusCode,
    /// The SageMaker error, if it failed.
    error: Option<ApiError>,
    /// A successful body's length and its first characters.
    body: (usize, String),
    took: Duration,
}

impl Answer {
    fn describe(&self) -> String {
        match &self.error {
            Some(e) => format!("{} after {:?}: {}", self.status, self.took, e.body),
            None => format!(
                "{} after {:?} with a {}-byte body starting {:?}",
                self.status, self.took, self.body.0, self.body.1
            ),
        }
    }
}

/// Sends `attack` to its endpoint.
fn send_attack(server: &Server, attack: &Attack) -> Answer {
    let started = Instant::now();
    let response = server.invoke(
        &attack.endpoint(),
        "text/plain",
        "",
        &[(CUSTOM_ATTRIBUTES, attack.name)],
    );
    let status = response.status();
    if status.is_success() {
        let body = response.bytes().unwrap_or_default();
        let head: String = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        Answer {
            status,
            error: None,
            body: (body.len(), head),
            took: started.elapsed(),
        }
    } else {
        let error = ApiError::from_response(response);
        Answer {
            status,
            error: Some(error),
            body: (0, String::new()),
            took: started.elapsed(),
        }
    }
}

/// Runs `attack` while probing `/ping`, iris and the server's memory, then checks how soon it
/// was answered, the next ordinary request, that memory stayed below `rss_bound`, and last
/// what the answer says; panics with what was not contained. Gives the server's peak resident
/// memory.
fn contain(server: &Server, attack: &Attack, rss_bound: u64) -> u64 {
    let endpoint = attack.endpoint();
    let dropped_before = dropped_log_lines(&server.metrics());
    let probes = probe_client();
    let mut peak_rss = server.rss_bytes();
    let during = format!("during the {} attack", attack.name);

    let answer = std::thread::scope(|scope| {
        let request = scope.spawn(|| send_attack(server, attack));
        loop {
            neighbours_answer(server, &probes, &during);
            peak_rss = peak_rss.max(server.rss_bytes());
            if request.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        request
            .join()
            .unwrap_or_else(|p| panic!("the attacking request failed: {}", panic_text(p)))
    });

    assert!(
        answer.took <= attack.answer_bound(),
        "answered only after {:?} (bound {:?}): {}",
        answer.took,
        attack.answer_bound(),
        answer.describe()
    );

    let after = format!("after the {} attack", attack.name);
    ordinary_request_answers(server, &endpoint, &after);
    neighbours_answer(server, &probes, &after);
    peak_rss = peak_rss.max(server.rss_bytes());
    assert!(
        peak_rss <= rss_bound,
        "the server's resident memory reached {} MiB, above the bound of {} MiB",
        peak_rss >> 20,
        rss_bound >> 20
    );

    // Last, so that a failure here says that everything else held.
    match attack.expected {
        Expected::ModelError(fragment) => {
            let e = answer.error.as_ref().unwrap_or_else(|| {
                panic!(
                    "answered {} instead of a ModelError naming {fragment:?}",
                    answer.describe()
                )
            });
            assert_eq!(
                (e.status, e.code.as_str()),
                (StatusCode::FAILED_DEPENDENCY, "ModelError"),
                "answered {} instead of a ModelError naming {fragment:?}",
                answer.describe()
            );
            let original = e.original_message().unwrap_or_default();
            assert!(
                e.message.contains(fragment) || original.contains(fragment),
                "the ModelError does not name the limit ({fragment:?}): {}",
                answer.describe()
            );
        }
        Expected::LogsDropped => {
            assert!(
                answer.status == StatusCode::OK && answer.body.1 == "ok",
                "answered {} instead of 200 ok",
                answer.describe()
            );
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                let dropped = dropped_log_lines(&server.metrics());
                if dropped > dropped_before {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the host dropped no guest log lines ({DROPPED_LOG_LINES}: {dropped_before} \
                     before, {dropped} after) for 100 MiB of stdout"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    peak_rss
}

#[test]
fn every_attack_fails_only_its_own_request() {
    let _serial = serial();
    let server = Server::start_with(BIN, Options::default());
    create_iris(&server);
    for attack in &ATTACKS {
        let name = attack.endpoint();
        create_model(
            &server,
            &name,
            HOSTILE_WASM,
            json!({}),
            Some(attack.limits()),
        );
        create_endpoint(&server, &name, &name, None);
    }
    server.wait_in_service("iris", START_TIMEOUT);
    for attack in &ATTACKS {
        server.wait_in_service(&attack.endpoint(), START_TIMEOUT);
        ordinary_request_answers(&server, &attack.endpoint(), "before the attacks");
    }
    neighbours_answer(&server, &probe_client(), "before the attacks");
    let baseline = server.rss_bytes();
    let rss_bound = baseline + RSS_HEADROOM;

    // Every attack runs even when one before it was not contained, so a failure lists all
    // that were not.
    let mut failures = Vec::new();
    for attack in &ATTACKS {
        let started = Instant::now();
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| contain(&server, attack, rss_bound)));
        match outcome {
            Ok(peak_rss) => eprintln!(
                "{}: contained in {:?}, the server's RSS at most {} MiB (baseline {} MiB)",
                attack.name,
                started.elapsed(),
                peak_rss >> 20,
                baseline >> 20
            ),
            Err(panic) => failures.push(format!("- {}: {}", attack.name, panic_text(panic))),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} attacks were not contained (baseline RSS {} MiB):\n{}\nthe server's own \
         log (tail):\n{}",
        failures.len(),
        ATTACKS.len(),
        baseline >> 20,
        failures.join("\n"),
        host_log_tail(&server.stderr(), 40)
    );
}

/// The last `lines` lines of the server's `stderr` that are not the guests' own output
/// (`plinth::guest`: the stdout flood's lines would hide everything else).
fn host_log_tail(stderr: &str, lines: usize) -> String {
    let host: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.contains("plinth::guest:"))
        .collect();
    host[host.len().saturating_sub(lines)..].join("\n")
}

// ---- Attacks on model_fn ----

/// The endpoints whose `model_fn` spins or sleeps forever (`HOSTILE_MODEL_FN`).
const MODEL_FN_ATTACKS: [(&str, &str); 2] = [("hostile-loop", "loop"), ("hostile-hang", "hang")];

/// Models and endpoints for [`MODEL_FN_ATTACKS`], with `startup_seconds` if given; not waited
/// for.
fn create_model_fn_attacks(server: &Server, startup_seconds: Option<u64>) {
    for (endpoint, mode) in MODEL_FN_ATTACKS {
        create_model(
            server,
            endpoint,
            HOSTILE_WASM,
            json!({ "HOSTILE_MODEL_FN": mode }),
            None,
        );
        create_endpoint(server, endpoint, endpoint, startup_seconds);
    }
}

#[test]
fn a_model_fn_that_spins_or_hangs_fails_its_endpoint_in_time() {
    let _serial = serial();
    let server = Server::start_with(BIN, Options::default());
    create_iris(&server);
    server.wait_in_service("iris", START_TIMEOUT);
    let probes = probe_client();

    let started = Instant::now();
    create_model_fn_attacks(&server, Some(STARTUP_SECONDS));
    let mut failed: Vec<(&str, Value)> = Vec::new();
    while failed.len() < MODEL_FN_ATTACKS.len() {
        neighbours_answer(&server, &probes, "while model_fn attacks run");
        for (endpoint, _) in MODEL_FN_ATTACKS {
            if failed.iter().any(|(e, _)| *e == endpoint) {
                continue;
            }
            let d = server.describe_endpoint(endpoint);
            match d["EndpointStatus"].as_str() {
                Some("Failed") => failed.push((endpoint, d)),
                Some("Creating") => {}
                other => panic!("{endpoint} is {other:?}, not Creating then Failed: {d}"),
            }
        }
        assert!(
            started.elapsed() <= STARTUP_FAILURE_BOUND,
            "after {:?} (ContainerStartupHealthCheckTimeoutInSeconds {STARTUP_SECONDS}), only \
             {:?} of {MODEL_FN_ATTACKS:?} are Failed",
            started.elapsed(),
            failed.iter().map(|(e, _)| *e).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (endpoint, d) in &failed {
        let reason = d["FailureReason"]
            .as_str()
            .unwrap_or_else(|| panic!("{endpoint}: no FailureReason: {d}"));
        assert!(
            reason.contains("ContainerStartupHealthCheckTimeoutInSeconds"),
            "{endpoint}: the FailureReason does not name \
             ContainerStartupHealthCheckTimeoutInSeconds: {reason:?}"
        );
    }

    for (endpoint, _) in MODEL_FN_ATTACKS {
        assert_eq!(
            server.call("DeleteEndpoint", json!({ "EndpointName": endpoint })),
            json!({})
        );
        server.refused(
            "DescribeEndpoint",
            json!({ "EndpointName": endpoint }),
            "ValidationException",
            &["Could not find"],
        );
    }
    neighbours_answer(&server, &probes, "after the model_fn attacks");
}

// ---- A restart ----

#[test]
fn after_kill_9_ping_answers_at_once_and_endpoints_come_back_in_the_background() {
    let _serial = serial();
    let server = Server::start_with(BIN, Options::default());
    create_iris(&server);
    server.wait_in_service("iris", START_TIMEOUT);
    // Stored, and still Creating when the server dies: their model_fn never returns, at the
    // default startup deadline.
    create_model_fn_attacks(&server, None);

    let restarting = Instant::now();
    let server = server.kill_and_restart().unwrap_or_else(|e| {
        panic!(
            "plinth serve did not come back within {START_TIMEOUT:?} of the restart (status \
             {:?}); stderr:\n{}",
            e.status, e.stderr
        )
    });
    let ping = server.ping();
    let took = restarting.elapsed();
    assert_eq!(ping.status(), StatusCode::OK, "GET /ping after the restart");
    assert!(
        took <= RESTART_PING,
        "GET /ping answered {took:?} after the restart began (bound {RESTART_PING:?}): \
         restoring endpoints must not hold it up"
    );
    // The control plane answers while the endpoints come back.
    for (endpoint, _) in MODEL_FN_ATTACKS {
        let started = Instant::now();
        let d = server.describe_endpoint(endpoint);
        assert!(
            started.elapsed() <= NORMAL_LATENCY,
            "DescribeEndpoint {endpoint} took {:?} after the restart: {d}",
            started.elapsed()
        );
    }

    let probes = probe_client();
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    loop {
        let ping = probes.get(format!("{}/ping", server.url())).send();
        assert!(
            ping.as_ref().is_ok_and(|r| r.status() == StatusCode::OK),
            "GET /ping while endpoints come back: {ping:?}"
        );
        let d = server.describe_endpoint("iris");
        match d["EndpointStatus"].as_str() {
            Some("InService") => break,
            Some("Creating") | Some("Updating") => {}
            other => panic!("iris is {other:?} after the restart, not on its way back: {d}"),
        }
        assert!(
            Instant::now() < deadline,
            "iris is not InService {RESTORE_TIMEOUT:?} after the restart: {d}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    neighbours_answer(&server, &probes, "after the restart");
}
