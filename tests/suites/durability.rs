//! Durable state: models, endpoint configs, endpoints and their weights survive a restart,
//! and `kill -9` in the middle of a burst of control-plane calls (creates, updates, weight
//! changes) leaves a consistent state: everything acknowledged is there, every endpoint comes
//! back `InService` serving exactly one committed config (never a mix), and nothing
//! half-applied. A restart listens at once: the stored endpoints are restored in the
//! background, each on its own, so one whose `model_fn` never returns is `Creating` (refusing
//! invocations, deletable) while the others serve.

use plinth_tests::json::names;
use plinth_tests::{ApiError, Options, Server, StatusCode, ECHO_WASM, HOSTILE_WASM};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// The variants that answer `n` requests to `endpoint`.
fn served_by(server: &Server, endpoint: &str, n: usize) -> BTreeSet<String> {
    server
        .invoked_variants(endpoint, "text/plain", "hi", n)
        .into_keys()
        .collect()
}

/// The names of a description's production variants.
fn variant_names(description: &Value) -> BTreeSet<String> {
    names(description, "ProductionVariants", "VariantName")
        .into_iter()
        .collect()
}

/// An echo model, and an endpoint config `config` with one variant `variant` of it.
fn echo_config(server: &Server, model: &str, config: &str, variants: &[&str]) {
    if server
        .control("DescribeModel", &json!({"ModelName": model}))
        .status()
        != StatusCode::OK
    {
        server.create_model(model, ECHO_WASM, json!({}));
    }
    let variants: Vec<(&str, &str, u32)> = variants.iter().map(|v| (*v, model, 1)).collect();
    server.create_config(config, &variants);
}

#[test]
fn state_survives_a_restart() {
    let server = Server::start_with(BIN, Options::default());
    echo_config(&server, "echo", "two", &["A", "B"]);
    let d = server.create_endpoint_settled("live", "two");
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    server.call(
        "UpdateEndpointWeightsAndCapacities",
        json!({"EndpointName": "live", "DesiredWeightsAndCapacities": [
            {"VariantName": "A", "DesiredWeight": 0.0},
            {"VariantName": "B", "DesiredInstanceCount": 2}]}),
    );
    let before = server.describe_settled("live");
    let created = before["CreationTime"].clone();

    let server = server.kill_and_restart().expect("restart");
    let after = server.describe_settled("live");
    assert_eq!(after["EndpointStatus"], "InService", "{after}");
    assert_eq!(after["EndpointConfigName"], "two");
    assert_eq!(after["CreationTime"], created);
    let variants = after["ProductionVariants"].as_array().unwrap();
    assert_eq!(variants[0]["CurrentWeight"], 0.0, "{after}");
    assert_eq!(variants[1]["CurrentInstanceCount"], 2, "{after}");
    assert_eq!(served_by(&server, "live", 20), BTreeSet::from(["B".into()]));
    let models = server.call("ListModels", json!({}));
    assert_eq!(models["Models"][0]["ModelName"], "echo");
    server.call(
        "DescribeEndpointConfig",
        json!({"EndpointConfigName": "two"}),
    );
}

/// What the burst got acknowledged before the kill.
#[derive(Default)]
struct Acknowledged {
    models: Vec<String>,
    configs: Vec<String>,
    endpoints: Vec<String>,
    /// Configs `live` was asked to move to (sent, answered or not).
    live_requested: Vec<String>,
}

/// Control-plane calls as fast as they go until the server dies: new models, configs and
/// endpoints, updates of `live` between configs, and weight changes.
fn burst(url: String, stop: Arc<AtomicBool>, acknowledged: Arc<Mutex<Acknowledged>>, round: u32) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let call = |op: &str, input: Value| -> Option<(StatusCode, Value)> {
        let response = client
            .post(format!("{url}/"))
            .header("X-Amz-Target", format!("SageMaker.{op}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .body(input.to_string())
            .send()
            .ok()?;
        let status = response.status();
        Some((status, response.json().unwrap_or_default()))
    };
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let model = format!("m{round}-{i}");
        let config = format!("c{round}-{i}");
        let endpoint = format!("e{round}-{i}");
        let Some((s, _)) = call(
            "CreateModel",
            json!({"ModelName": model, "PrimaryContainer": {"Image": ECHO_WASM}}),
        ) else {
            return;
        };
        if s.is_success() {
            acknowledged.lock().unwrap().models.push(model.clone());
        }
        let variant = format!("V{i}");
        let Some((s, _)) = call(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": config, "ProductionVariants": [
                {"VariantName": variant, "ModelName": model}]}),
        ) else {
            return;
        };
        if s.is_success() {
            acknowledged.lock().unwrap().configs.push(config.clone());
        }
        let step = match i % 3 {
            0 => call(
                "CreateEndpoint",
                json!({"EndpointName": endpoint, "EndpointConfigName": config}),
            )
            .map(|(s, _)| (s, Some(endpoint.clone()))),
            1 => {
                acknowledged
                    .lock()
                    .unwrap()
                    .live_requested
                    .push(config.clone());
                call(
                    "UpdateEndpoint",
                    json!({"EndpointName": "live", "EndpointConfigName": config}),
                )
                .map(|(s, _)| (s, None))
            }
            _ => call(
                "UpdateEndpointWeightsAndCapacities",
                json!({"EndpointName": "live", "DesiredWeightsAndCapacities": [
                    {"VariantName": "A", "DesiredInstanceCount": 1 + (i % 2)}]}),
            )
            .map(|(s, _)| (s, None)),
        };
        let Some((s, created)) = step else {
            return;
        };
        if s.is_success() {
            acknowledged.lock().unwrap().endpoints.extend(created);
        }
    }
}

#[test]
fn kill_9_during_a_burst_of_control_calls_leaves_a_consistent_state() {
    let mut server = Server::start_with(BIN, Options::default());
    echo_config(&server, "echo", "base", &["A"]);
    server.create_endpoint_settled("live", "base");
    let mut requested = BTreeSet::from(["base".to_string()]);

    for (round, after_ms) in [(0u32, 150u64), (1, 400), (2, 900)] {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
        let worker = {
            let (url, stop, acknowledged) =
                (server.url().to_string(), stop.clone(), acknowledged.clone());
            std::thread::spawn(move || burst(url, stop, acknowledged, round))
        };
        std::thread::sleep(Duration::from_millis(after_ms));
        server = server
            .kill_and_restart()
            .unwrap_or_else(|e| panic!("round {round}: no restart after kill -9: {}", e.stderr));
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
        let a = acknowledged.lock().unwrap();
        eprintln!(
            "round {round}: killed after {} models, {} configs, {} endpoints acknowledged, {} updates of live sent",
            a.models.len(),
            a.configs.len(),
            a.endpoints.len(),
            a.live_requested.len()
        );
        assert!(
            !a.models.is_empty(),
            "round {round}: the burst made no call before the kill"
        );

        // Everything acknowledged is there.
        for model in &a.models {
            server.call("DescribeModel", json!({"ModelName": model}));
        }
        for config in &a.configs {
            server.call(
                "DescribeEndpointConfig",
                json!({"EndpointConfigName": config}),
            );
        }
        // Every endpoint, acknowledged or not, is InService on one committed config,
        // serving exactly that config's variants.
        let mut names = BTreeSet::new();
        let mut input = json!({"MaxResults": 100});
        loop {
            let page = server.call("ListEndpoints", input.clone());
            for e in page["Endpoints"].as_array().unwrap() {
                names.insert(e["EndpointName"].as_str().unwrap().to_string());
            }
            match page.get("NextToken") {
                Some(token) => input["NextToken"] = token.clone(),
                None => break,
            }
        }
        for endpoint in &a.endpoints {
            assert!(names.contains(endpoint), "round {round}: {endpoint} lost");
        }
        for name in &names {
            let d = server.describe_settled(name);
            assert_eq!(d["EndpointStatus"], "InService", "round {round}: {d}");
            assert!(d.get("PendingDeploymentSummary").is_none(), "{d}");
            let config = server.call(
                "DescribeEndpointConfig",
                json!({"EndpointConfigName": d["EndpointConfigName"]}),
            );
            let expected = variant_names(&config);
            assert_eq!(variant_names(&d), expected, "round {round}: {d}");
            let served = served_by(&server, name, 5);
            assert!(
                served.is_subset(&expected),
                "round {round}: {name} served {served:?}"
            );
        }
        // `live` serves its original config or one it was asked to move to.
        requested.extend(a.live_requested.iter().cloned());
        let live = server.describe_settled("live");
        let config = live["EndpointConfigName"].as_str().unwrap().to_string();
        assert!(
            requested.contains(&config),
            "round {round}: live serves {config}, which no call asked for"
        );
        let reason = live["FailureReason"].as_str().unwrap_or_default();
        if !reason.is_empty() {
            assert!(
                reason.contains("interrupted by a restart") || reason.contains("variant"),
                "{live}"
            );
        }
    }
}

#[test]
fn a_restart_listens_at_once_while_an_endpoint_that_never_comes_up_is_restored() {
    let server = Server::start_with(BIN, Options::default());
    echo_config(&server, "echo", "quick", &["A"]);
    let d = server.create_endpoint_settled("quick", "quick");
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    // An endpoint whose model_fn never returns: Creating for as long as it hangs, and stored
    // so, to be restored by the next start.
    server.create_model("hangs", HOSTILE_WASM, json!({"HOSTILE_MODEL_FN": "hang"}));
    server.create_config("stuck", &[("A", "hangs", 1)]);
    server.call(
        "CreateEndpoint",
        json!({"EndpointName": "stuck", "EndpointConfigName": "stuck"}),
    );
    let d = server.describe_endpoint("stuck");
    assert_eq!(d["EndpointStatus"], "Creating", "{d}");

    let restarted = Instant::now();
    let server = server
        .kill_and_restart()
        .unwrap_or_else(|e| panic!("no restart with an endpoint that hangs: {}", e.stderr));
    // Listening at once: /ping and the control plane answer while both are restored.
    assert!(
        restarted.elapsed() < Duration::from_secs(30),
        "the restart took {:?} to listen",
        restarted.elapsed()
    );
    assert_eq!(server.ping().status(), StatusCode::OK);
    let listed = server.call("ListEndpoints", json!({}));
    assert_eq!(
        names(&listed, "Endpoints", "EndpointName").len(),
        2,
        "{listed}"
    );
    let d = server.describe_endpoint("stuck");
    assert_eq!(d["EndpointStatus"], "Creating", "{d}");
    assert_eq!(d["EndpointConfigName"], "stuck", "{d}");

    // The other endpoint comes up on its own, and serves, while "stuck" is still Creating.
    let d = server.wait_in_service("quick", Duration::from_secs(60));
    assert_eq!(d["ProductionVariants"][0]["VariantName"], "A", "{d}");
    assert_eq!(served_by(&server, "quick", 5), BTreeSet::from(["A".into()]));
    let d = server.describe_endpoint("stuck");
    assert_eq!(d["EndpointStatus"], "Creating", "{d}");

    // Invoking it is refused at once, with the reason.
    let asked = Instant::now();
    let e = ApiError::from_response(server.invoke("stuck", "text/plain", "hi", &[]));
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        (e.status, e.code.as_str()),
        (StatusCode::BAD_REQUEST, "ValidationError"),
        "{}",
        e.body
    );
    assert!(
        e.message.contains("is Creating, not InService"),
        "{}",
        e.body
    );

    // It can be deleted while Creating: gone at once, and it stays gone.
    server.call("DeleteEndpoint", json!({"EndpointName": "stuck"}));
    let gone = server.control("DescribeEndpoint", &json!({"EndpointName": "stuck"}));
    assert_eq!(gone.status(), StatusCode::BAD_REQUEST);
    std::thread::sleep(Duration::from_millis(300));
    let listed = server.call("ListEndpoints", json!({}));
    assert_eq!(
        names(&listed, "Endpoints", "EndpointName"),
        ["quick"],
        "{listed}"
    );
    assert_eq!(served_by(&server, "quick", 5), BTreeSet::from(["A".into()]));

    // And the delete lasted: the next start has only "quick".
    let server = server.kill_and_restart().expect("restart");
    let listed = server.call("ListEndpoints", json!({}));
    assert_eq!(
        names(&listed, "Endpoints", "EndpointName"),
        ["quick"],
        "{listed}"
    );
    server.wait_in_service("quick", Duration::from_secs(60));
}

/// A model runs the bytes it was created with, kept in the data directory by digest:
/// DescribeModel shows the digests, and replacing the component file under the same path
/// changes nothing, not even after a restart (it used to be served from then on).
#[test]
fn a_model_runs_the_bytes_it_was_created_with() {
    let files = tempfile::tempdir().unwrap();
    let component = files.path().join("model.wasm");
    std::fs::copy(ECHO_WASM, &component).unwrap();
    let server = Server::start_with(BIN, Options::default());
    server.create_model("kept", component.to_str().unwrap(), json!({}));
    server.create_config("kept", &[("AllTraffic", "kept", 1)]);
    let d = server.create_endpoint_settled("kept", "kept");
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    let echoed = |server: &Server| {
        let r = server.invoke("kept", "text/plain", "same bytes", &[]);
        (r.status(), r.text().unwrap_or_default())
    };
    assert_eq!(echoed(&server), (StatusCode::OK, "same bytes".to_string()));

    let described = server.call("DescribeModel", json!({"ModelName": "kept"}));
    let sha256 = std::process::Command::new("sha256sum")
        .arg(&component)
        .output()
        .unwrap();
    let hex = String::from_utf8_lossy(&sha256.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        described["PlinthDigests"]["Image"],
        format!("sha256:{hex}"),
        "{described}"
    );

    // The file is rebuilt as another component (one that fails every request).
    std::fs::copy(plinth_tests::FAULTS_WASM, &component).unwrap();
    let server = server.kill_and_restart().expect("restart");
    let d = server.describe_settled("kept");
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    assert_eq!(
        echoed(&server),
        (StatusCode::OK, "same bytes".to_string()),
        "after a restart the model ran the new bytes"
    );
}

/// What no model keeps any more is removed when a model is deleted: its artifact, its
/// component (once no model uses the same bytes) and the component's compiled form.
#[test]
fn what_no_model_keeps_is_collected() {
    let server = Server::start_with(BIN, Options::default());
    let data = server.dir().join("data");
    let entries = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(data.join(dir))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let with_artifact = |name: &str, weights: &[u8]| {
        let dir = server.dir().join(format!("artifact-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("weights.bin"), weights).unwrap();
        let mut input = json!({"ModelName": name, "PrimaryContainer": {
            "Image": ECHO_WASM, "ModelDataUrl": dir.to_str().unwrap()}});
        input["PrimaryContainer"]["Environment"] = json!({});
        server.call("CreateModel", input);
        server.call("DescribeModel", json!({"ModelName": name}))["PlinthDigests"].clone()
    };
    let a = with_artifact("a", b"one");
    let b = with_artifact("b", b"two");
    let hex = |d: &Value| {
        d.as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string()
    };
    assert!(entries("artifacts").contains(&hex(&a["ModelDataUrl"])));
    assert!(entries("artifacts").contains(&hex(&b["ModelDataUrl"])));
    assert_eq!(a["Image"], b["Image"], "the same component, kept once");
    // b runs once, so its component is compiled into the cache.
    server.create_config("b", &[("AllTraffic", "b", 1)]);
    let d = server.create_endpoint_settled("b", "b");
    assert_eq!(d["EndpointStatus"], "InService", "{d}");
    let compiled = |image: &Value| {
        entries("compiled")
            .iter()
            .filter(|f| f.starts_with(&hex(image)))
            .count()
    };
    assert_eq!(compiled(&b["Image"]), 1);

    server.call("DeleteModel", json!({"ModelName": "a"}));
    let artifacts = entries("artifacts");
    assert!(
        !artifacts.contains(&hex(&a["ModelDataUrl"])),
        "{artifacts:?}"
    );
    assert!(
        artifacts.contains(&hex(&b["ModelDataUrl"])),
        "{artifacts:?}"
    );
    assert!(entries("artifacts/components").contains(&hex(&b["Image"])));
    assert_eq!(compiled(&b["Image"]), 1, "b still uses the component");

    server.call("DeleteEndpoint", json!({"EndpointName": "b"}));
    server.call("DeleteEndpointConfig", json!({"EndpointConfigName": "b"}));
    server.call("DeleteModel", json!({"ModelName": "b"}));
    assert!(!entries("artifacts").contains(&hex(&b["ModelDataUrl"])));
    assert!(entries("artifacts/components").is_empty());
    assert_eq!(compiled(&b["Image"]), 0);
}

/// Every change sent, in order: the resource name, whether it creates (else deletes), and
/// whether it was acknowledged (answered 200).
type Acknowledgements = Arc<Mutex<Vec<(String, bool, bool)>>>;

/// Creates and deletes of models and endpoint configs, as fast as they go, until the server
/// dies; each is recorded before it is sent, and marked when it is answered 200.
fn churn(url: String, round: u32, acknowledged: Acknowledgements) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let ok = |op: &str, input: Value| -> Option<bool> {
        let response = client
            .post(format!("{url}/"))
            .header("X-Amz-Target", format!("SageMaker.{op}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .body(input.to_string())
            .send()
            .ok()?;
        Some(response.status().is_success())
    };
    for i in 0.. {
        let model = format!("k{round}-{i}");
        let config = format!("kc{round}-{i}");
        let steps: [(&str, Value, &str, bool); 4] = [
            (
                "CreateModel",
                json!({"ModelName": model, "PrimaryContainer": {"Image": ECHO_WASM}}),
                &model,
                true,
            ),
            (
                "CreateEndpointConfig",
                json!({"EndpointConfigName": config, "ProductionVariants": [
                    {"VariantName": "A", "ModelName": model}]}),
                &config,
                true,
            ),
            (
                "DeleteEndpointConfig",
                json!({"EndpointConfigName": config}),
                &config,
                false,
            ),
            ("DeleteModel", json!({"ModelName": model}), &model, false),
        ];
        // Every other pair is kept, so that creates are checked after restarts too.
        let steps = if i % 2 == 0 { &steps[..] } else { &steps[..2] };
        for (op, input, name, creates) in steps {
            let index = {
                let mut sent = acknowledged.lock().unwrap();
                sent.push((name.to_string(), *creates, false));
                sent.len() - 1
            };
            match ok(op, input.clone()) {
                Some(true) => acknowledged.lock().unwrap()[index].2 = true,
                Some(false) => {}
                None => return,
            }
        }
    }
}

/// kill -9 at 50 moments of a burst of creates and deletes: after each restart, every
/// acknowledged create is there and every acknowledged delete is not (a 200 means the change
/// is on disk). `PLINTH_DURABILITY_KILLS` sets how many kills (50 by default).
#[test]
fn fifty_kills_lose_no_acknowledged_write() {
    let kills: u32 = std::env::var("PLINTH_DURABILITY_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut server = Server::start_with(BIN, Options::default());
    let mut checked = 0;
    for round in 0..kills {
        let acknowledged: Acknowledgements = Arc::default();
        let worker = {
            let (url, acknowledged) = (server.url().to_string(), acknowledged.clone());
            std::thread::spawn(move || churn(url, round, acknowledged))
        };
        // Pseudo-random moments between 20 and 220 ms into the burst.
        let after = 20 + (u64::from(round) * 7919) % 200;
        std::thread::sleep(Duration::from_millis(after));
        server = server
            .kill_and_restart()
            .unwrap_or_else(|e| panic!("round {round}: no restart after kill -9: {}", e.stderr));
        worker.join().unwrap();
        let sent = acknowledged.lock().unwrap();
        // The last change sent for a name decides, if it was acknowledged; one the kill cut
        // off may or may not have happened.
        let mut last = std::collections::BTreeMap::new();
        for (name, creates, acknowledged) in sent.iter() {
            last.insert(name.clone(), acknowledged.then_some(*creates));
        }
        for (name, exists) in last {
            let Some(exists) = exists else { continue };
            let (op, input) = if name.starts_with("kc") {
                (
                    "DescribeEndpointConfig",
                    json!({"EndpointConfigName": name}),
                )
            } else {
                ("DescribeModel", json!({"ModelName": name}))
            };
            let status = server.control(op, &input).status();
            assert_eq!(
                status == StatusCode::OK,
                exists,
                "round {round} (killed after {after} ms): {name} was acknowledged {} but is {}",
                if exists { "created" } else { "deleted" },
                if status == StatusCode::OK {
                    "there"
                } else {
                    "gone"
                }
            );
            checked += 1;
        }
    }
    assert!(
        checked >= kills as usize,
        "only {checked} acknowledged changes were checked over {kills} kills"
    );
}

/// Each acknowledged change costs at least one fsync of the database (its write-ahead log):
/// kill -9 alone cannot tell whether the durability settings were weakened (a crash of the
/// process, unlike one of the machine, loses nothing the kernel holds), this can. The server
/// runs under `strace`, counting fsync and fdatasync on the database's files.
#[test]
fn every_acknowledged_change_is_synced_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("syncs.trace");
    let server = Server::start_with(
        BIN,
        Options {
            wrapper: [
                "strace",
                "-f",
                "-y",
                "-e",
                "trace=fsync,fdatasync",
                "-o",
                trace.to_str().unwrap(),
            ]
            .map(String::from)
            .to_vec(),
            ..Options::default()
        },
    );
    let syncs = || {
        std::fs::read_to_string(&trace)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("plinth.db") && !l.contains("resumed"))
            .count()
    };
    server.create_model("synced", ECHO_WASM, json!({}));
    let before = syncs();
    let changes = 20;
    for i in 0..changes {
        server.create_config(&format!("synced-{i}"), &[("A", "synced", 1)]);
    }
    let per_change = (syncs() - before) as f64 / changes as f64;
    assert!(
        per_change >= 1.0,
        "{per_change} fsyncs of the database per acknowledged change: an answer came before \
         its write was on disk"
    );
}
