//! UpdateEndpoint under load: variants are added, replaced with a new model version and
//! removed while clients keep sending requests; no request fails, and after each update the
//! endpoint routes only to the new config's variants. A config whose component cannot load
//! leaves the old config serving and says why. (An unknown config or endpoint is a fixture
//! case: `tests/cases/UpdateEndpoint/`.)

use plinth_tests::json::names;
use plinth_tests::{
    Config, Model, Server, Variant, ECHO_WASM, IRIS_MODEL_DIR, IRIS_WASM, SETOSA_ROW,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// A variant in a planned endpoint config: (name, model, instances, weight).
type PlannedVariant = (&'static str, &'static str, u32, f64);

/// DescribeEndpoint of `live` once it is `InService`.
fn wait_in_service(server: &Server) -> Value {
    server.wait_in_service("live", Duration::from_secs(60))
}

/// How many of `n` requests each variant of `live` answered.
fn served_by(server: &Server, n: usize) -> BTreeMap<String, usize> {
    server.invoked_variants("live", "text/csv", SETOSA_ROW, n)
}

#[test]
fn variants_are_added_replaced_and_removed_under_load() {
    let config = Config::new()
        .model(Model::iris("iris"))
        .endpoint_with_variants("live", vec![Variant::new("A", "iris", 1)]);
    let server = Arc::new(Server::start(BIN, &config.to_toml()));
    server.call("CreateModel",
        json!({"ModelName": "iris-v2", "PrimaryContainer": {"Image": format!("file://{IRIS_WASM}"), "ModelDataUrl": IRIS_MODEL_DIR}}),
    );
    server.call(
        "CreateModel",
        json!({"ModelName": "echo", "PrimaryContainer": {"Image": ECHO_WASM}}),
    );

    // Clients send requests without pause until the updates are done.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (server, stop, sent, failures) =
                (server.clone(), stop.clone(), sent.clone(), failures.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = server.invoke("live", "text/csv", SETOSA_ROW, &[]);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if r.status() != 200 {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{} {:?}", r.status(), r.text()));
                    }
                }
            })
        })
        .collect();

    let plan: &[(&str, &[PlannedVariant])] = &[
        ("add-b", &[("A", "iris", 1, 1.0), ("B", "echo", 1, 1.0)]),
        (
            "replace-a",
            &[("A", "iris-v2", 2, 1.0), ("B", "echo", 1, 1.0)],
        ),
        ("remove-a", &[("B", "echo", 2, 1.0)]),
        ("add-c", &[("B", "echo", 1, 1.0), ("C", "iris", 1, 3.0)]),
        ("back-to-a", &[("A", "iris", 1, 1.0)]),
    ];
    for (name, variants) in plan {
        let production: Vec<Value> = variants
            .iter()
            .map(|(v, m, n, w)| json!({"VariantName": v, "ModelName": m, "InitialInstanceCount": n, "InitialVariantWeight": w}))
            .collect();
        server.call(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": name, "ProductionVariants": production}),
        );
        server.call(
            "UpdateEndpoint",
            json!({"EndpointName": "live", "EndpointConfigName": name}),
        );
        let d = wait_in_service(&server);
        assert_eq!(d["EndpointConfigName"], *name, "{d}");
        assert!(d.get("FailureReason").is_none(), "{d}");
        let described: BTreeSet<String> = names(&d, "ProductionVariants", "VariantName")
            .into_iter()
            .collect();
        let expected: BTreeSet<String> = variants.iter().map(|v| v.0.to_string()).collect();
        assert_eq!(described, expected);
        // The next requests go only to the new config's variants, and to all of them.
        let seen = served_by(&server, 100);
        let seen_names: BTreeSet<String> = seen.keys().cloned().collect();
        assert_eq!(seen_names, expected, "after {name}: {seen:?}");
    }

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        sent.load(Ordering::Relaxed),
        &failures[..failures.len().min(5)]
    );
    assert!(sent.load(Ordering::Relaxed) > 100, "the clients hardly ran");
}

#[test]
fn a_config_that_cannot_load_leaves_the_old_one_serving() {
    let config = Config::new()
        .model(Model::iris("iris"))
        .endpoint_with_variants("live", vec![Variant::new("A", "iris", 1)]);
    let server = Server::start(BIN, &config.to_toml());
    let bad = server.dir().join("bad.wasm");
    std::fs::write(&bad, "this is not wasm").unwrap();
    server.create_model("broken", &bad.display().to_string(), json!({}));
    server.call(
        "CreateEndpointConfig",
        json!({"EndpointConfigName": "broken-config", "ProductionVariants": [
            {"VariantName": "A", "ModelName": "iris"},
            {"VariantName": "B", "ModelName": "broken"}]}),
    );
    server.call(
        "UpdateEndpoint",
        json!({"EndpointName": "live", "EndpointConfigName": "broken-config"}),
    );
    let d = wait_in_service(&server);
    assert_eq!(d["EndpointConfigName"], "live-config", "{d}");
    let reason = d["FailureReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("variant B") && reason.contains("not a valid WebAssembly component"),
        "{d}"
    );
    assert_eq!(served_by(&server, 20).keys().collect::<Vec<_>>(), ["A"]);
}
