//! Multi-model endpoints (`Mode: MultiModel`) against the real server: many iris-like models
//! under one prefix (each answers with its own number, `plinth_tests::onnx::iris_like`),
//! loaded on first use by `TargetModel`: 50 models through boto3; concurrent first requests
//! load a model once; a budget of about 10 models under 16 connections cycling through 100
//! (no failure, the cache within its budget, the hit ratio the cycles imply); every bad input
//! with SageMaker's error; `TargetVariant` with `TargetModel`; caching disabled; an `s3://`
//! prefix; `plinth models`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use plinth_tests::metrics::{counter, of_variant, sample};
use plinth_tests::s3::S3;
use plinth_tests::{Options, Server, IRIS_SIMPLE_WASM, SETOSA_ROW};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");
const TARGET_MODEL: &str = "X-Amzn-SageMaker-Target-Model";

/// The `.tar.gz` of a model directory holding `model.onnx` = `onnx`.
fn tar_gz(onnx: &[u8]) -> Vec<u8> {
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(onnx.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive
        .append_data(&mut header, "model.onnx", onnx)
        .unwrap();
    archive.into_inner().unwrap().finish().unwrap()
}

/// Model `i`'s graph: every row's answer is `[i, 0.5, -1]`.
fn model_bytes(i: usize) -> Vec<u8> {
    plinth_tests::onnx::iris_like([i as f32, 0.5, -1.0])
}

/// A prefix of `n` models: `m-<i>.tar.gz` for even `i`, a directory `m-<i>` for odd.
fn prefix(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        if i.is_multiple_of(2) {
            std::fs::write(dir.join(format!("m-{i}.tar.gz")), tar_gz(&model_bytes(i))).unwrap();
        } else {
            let model = dir.join(format!("m-{i}"));
            std::fs::create_dir_all(&model).unwrap();
            std::fs::write(model.join("model.onnx"), model_bytes(i)).unwrap();
        }
    }
}

fn target(i: usize) -> String {
    if i.is_multiple_of(2) {
        format!("m-{i}.tar.gz")
    } else {
        format!("m-{i}")
    }
}

/// Which model answered: the first number of the first row.
fn answered_by(body: &str) -> usize {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let mut first = &value;
    while let Some(inner) = first.as_array().and_then(|a| a.first()).or_else(|| {
        first
            .as_object()
            .and_then(|o| o.values().find(|v| v.is_array() || v.is_object()))
    }) {
        first = inner;
    }
    first.as_f64().unwrap_or_else(|| panic!("no number in {body}")) as usize
}

/// A multi-model model over `prefix` and an endpoint of one variant serving it (`variant`:
/// members added to the variant), settled.
fn multi_model_endpoint(server: &Server, name: &str, prefix: &str, model: Value, variant: Value) {
    let mut container = json!({
        "Image": IRIS_SIMPLE_WASM,
        "Mode": "MultiModel",
        "ModelDataUrl": prefix,
    });
    for (key, value) in model.as_object().unwrap() {
        container[key] = value.clone();
    }
    server.call(
        "CreateModel",
        json!({ "ModelName": name, "PrimaryContainer": container }),
    );
    let mut v = json!({ "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1 });
    for (key, value) in variant.as_object().unwrap() {
        v[key] = value.clone();
    }
    server.call(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": name, "ProductionVariants": [v] }),
    );
    let described = server.create_endpoint_settled(name, name);
    assert_eq!(described["EndpointStatus"], "InService", "{described}");
}

fn invoke_model(server: &Server, endpoint: &str, model: &str) -> reqwest::blocking::Response {
    server.invoke(endpoint, "text/csv", SETOSA_ROW, &[(TARGET_MODEL, model)])
}

/// The error code and message of a refused invocation, checking its status.
fn refused(response: reqwest::blocking::Response, status: u16) -> (String, String) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().unwrap();
    (
        body["__type"]
            .as_str()
            .or(body["code"].as_str())
            .unwrap_or_default()
            .rsplit('#')
            .next()
            .unwrap()
            .to_owned(),
        body["message"]
            .as_str()
            .or(body["Message"].as_str())
            .unwrap_or_default()
            .to_owned(),
    )
}

fn loaded(server: &Server, endpoint: &str) -> Value {
    server.call("ListLoadedModels", json!({ "EndpointName": endpoint }))["Variants"][0].clone()
}

/// boto3's `sagemaker` and `sagemaker-runtime` clients create a multi-model endpoint over 50
/// models and invoke each by `TargetModel`: every answer comes from the model named.
#[test]
fn boto3_fifty_models_each_answer_as_themselves() {
    let Some(python) = plinth_tests::venv_python("boto3_fifty_models_each_answer_as_themselves")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    prefix(&dir.path().join("models"), 50);
    let server = Server::start_with(BIN, Options::default());
    let prefix = dir.path().join("models").display().to_string();
    server.run_python(
        &python,
        "test_multi_model_boto3.py",
        &[("IRIS_SIMPLE_WASM", IRIS_SIMPLE_WASM), ("MODELS_PREFIX", &prefix)],
    );
}

/// Sixteen requests at once for one cold model: one load, and every request answered by it.
#[test]
fn concurrent_first_requests_load_a_model_once() {
    let dir = tempfile::tempdir().unwrap();
    prefix(dir.path(), 4);
    let server = Server::start_with(BIN, Options::default());
    let url = dir.path().display().to_string();
    multi_model_endpoint(&server, "mm-once", &url, json!({}), json!({}));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    let response = invoke_model(&server, "mm-once", "m-2.tar.gz");
                    assert_eq!(response.status(), 200);
                    answered_by(&response.text().unwrap())
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 2);
        }
    });
    let metrics = server.metrics();
    let labels = of_variant("mm-once", "AllTraffic");
    assert_eq!(
        counter(&metrics, "plinth_model_loading_time_seconds_count", &labels),
        1.0,
        "one load for 16 concurrent first requests"
    );
    assert_eq!(
        sample(&metrics, "plinth_loaded_model_count", &labels),
        Some(1.0)
    );
    let hits = counter(&metrics, "plinth_model_cache_hit_total", &labels);
    let misses = counter(&metrics, "plinth_model_cache_miss_total", &labels);
    assert_eq!(hits + misses, 16.0, "every request counted once");
    // A later request hits.
    assert_eq!(invoke_model(&server, "mm-once", "m-2.tar.gz").status(), 200);
    let metrics = server.metrics();
    assert_eq!(
        counter(&metrics, "plinth_model_cache_hit_total", &labels),
        hits + 1.0
    );
    let variant = loaded(&server, "mm-once");
    assert_eq!(variant["LoadedModelCount"], 1);
    let model = &variant["Models"][0];
    assert_eq!(model["TargetModel"], "m-2.tar.gz");
    assert!(model["SizeInBytes"].as_u64().unwrap() > 0, "{model}");
    assert_eq!(model["Hits"], 17, "{model}");

    // `plinth models` shows it.
    let output = std::process::Command::new(BIN)
        .args(["models", "mm-once", "--endpoint-url", server.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("variant AllTraffic: 1 models"), "{text}");
    assert!(text.contains("m-2.tar.gz"), "{text}");
}

/// A budget of about ten models, 16 connections cycling through 100 models: no request
/// fails, the cache never holds more than its budget, and the hit ratio is the cycle's: a
/// cycle longer than the cache (least recently used) almost never hits; one that fits
/// almost always does.
#[test]
fn a_budget_of_ten_models_serves_a_cycle_of_a_hundred_without_failures() {
    let dir = tempfile::tempdir().unwrap();
    prefix(dir.path(), 100);
    let server = Server::start_with(BIN, Options::default());
    let url = dir.path().display().to_string();
    // One model's size, measured on a first endpoint.
    multi_model_endpoint(&server, "mm-size", &url, json!({}), json!({}));
    assert_eq!(invoke_model(&server, "mm-size", "m-1").status(), 200);
    let size = loaded(&server, "mm-size")["Models"][0]["SizeInBytes"]
        .as_u64()
        .unwrap();
    let budget_mib = (10 * size).div_ceil(1 << 20);
    let budget = budget_mib << 20;
    let holds = (budget / size) as usize;
    assert!((10..=12).contains(&holds), "size {size}, budget {budget}");
    multi_model_endpoint(
        &server,
        "mm-cycle",
        &url,
        json!({}),
        json!({ "PlinthModelCacheSizeInMB": budget_mib }),
    );
    let labels = of_variant("mm-cycle", "AllTraffic");

    let run = |models: usize, requests: usize| {
        let next = AtomicUsize::new(0);
        let failures = Mutex::new(Vec::new());
        let done = AtomicBool::new(false);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            // The cache, watched while the load runs.
            s.spawn(|| {
                while !done.load(Ordering::SeqCst) {
                    let v = loaded(&server, "mm-cycle");
                    let used = v["UsedBytes"].as_u64().unwrap();
                    assert!(used <= budget, "{used} bytes used of {budget}");
                    most.fetch_max(v["LoadedModelCount"].as_u64().unwrap() as usize, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let workers: Vec<_> = (0..16)
                .map(|_| {
                    s.spawn(|| loop {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        if n >= requests {
                            return;
                        }
                        let i = n % models;
                        let response = invoke_model(&server, "mm-cycle", &target(i));
                        let status = response.status().as_u16();
                        let body = response.text().unwrap();
                        if status != 200 {
                            failures.lock().unwrap().push(format!("{status} {body}"));
                        } else if answered_by(&body) != i {
                            failures.lock().unwrap().push(format!("model {i} answered {body}"));
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().unwrap();
            }
            done.store(true, Ordering::SeqCst);
        });
        let failures = failures.into_inner().unwrap();
        assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
        most.into_inner()
    };
    let hits_misses = || {
        let m = server.metrics();
        (
            counter(&m, "plinth_model_cache_hit_total", &labels),
            counter(&m, "plinth_model_cache_miss_total", &labels),
        )
    };

    // 100 models, 3 cycles: the cache thrashes, as least-recently-used does on a cycle
    // longer than it holds.
    let most = run(100, 300);
    assert!(most <= holds, "{most} models loaded at once; the budget holds {holds}");
    let (hits, misses) = hits_misses();
    assert_eq!(hits + misses, 300.0);
    assert!(hits / 300.0 < 0.2, "hit ratio {} on a cycle of 100", hits / 300.0);

    // 8 models, 50 cycles: once loaded, they stay.
    run(8, 400);
    let (hits_after, misses_after) = hits_misses();
    let (hits, misses) = (hits_after - hits, misses_after - misses);
    assert_eq!(hits + misses, 400.0);
    assert!(hits / 400.0 > 0.95, "hit ratio {} on a cycle of 8", hits / 400.0);
    let v = loaded(&server, "mm-cycle");
    assert!(v["UsedBytes"].as_u64().unwrap() <= budget, "{v}");
}

/// Every bad input gets SageMaker's error naming what is wrong, and the endpoint serves on.
#[test]
fn bad_targets_and_broken_models_get_sagemaker_s_errors() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    prefix(&models, 2);
    std::fs::write(models.join("corrupt.tar.gz"), b"\x1f\x8b\x08 not really gzip").unwrap();
    std::fs::create_dir_all(models.join("no-graph")).unwrap();
    std::fs::write(models.join("no-graph/readme.txt"), b"no model.onnx here").unwrap();
    let server = Server::start_with(BIN, Options::default());
    let url = models.display().to_string();
    multi_model_endpoint(&server, "mm-bad", &url, json!({}), json!({}));

    // No TargetModel on a multi-model endpoint.
    let (code, message) = refused(server.invoke("mm-bad", "text/csv", SETOSA_ROW, &[]), 400);
    assert_eq!(code, "ValidationError");
    assert!(message.contains("give TargetModel"), "{message}");
    // Paths that leave the prefix.
    for escape in ["../models/m-1", "/etc/passwd", "m-1/../../x", "a//b"] {
        let (code, message) = refused(invoke_model(&server, "mm-bad", escape), 400);
        assert_eq!(code, "ValidationError", "{escape}");
        assert!(message.contains("relative to the model's ModelDataUrl"), "{escape}: {message}");
    }
    // A model that does not exist.
    let (code, message) = refused(invoke_model(&server, "mm-bad", "m-404.tar.gz"), 400);
    assert_eq!(code, "ValidationError");
    assert!(message.contains("Could not find model m-404.tar.gz"), "{message}");
    // Added to the prefix afterwards, it is found by the next request.
    std::fs::write(models.join("m-404.tar.gz"), tar_gz(&model_bytes(404))).unwrap();
    let response = invoke_model(&server, "mm-bad", "m-404.tar.gz");
    assert_eq!(response.status(), 200);
    assert_eq!(answered_by(&response.text().unwrap()), 404);
    // A corrupt archive, and a model whose model_fn fails: ModelError, and the failure is
    // kept for a back-off rather than loaded again on every request.
    for (bad, says) in [("corrupt.tar.gz", "corrupt.tar.gz"), ("no-graph", "no-graph")] {
        let (code, message) = refused(invoke_model(&server, "mm-bad", bad), 424);
        assert_eq!(code, "ModelError", "{bad}: {message}");
        assert!(message.contains(says), "{message}");
        // A load is a miss (the request waited for it): the back-off answers without one.
        let misses = || {
            counter(
                &server.metrics(),
                "plinth_model_cache_miss_total",
                &of_variant("mm-bad", "AllTraffic"),
            )
        };
        let before = misses();
        let (code, again) = refused(invoke_model(&server, "mm-bad", bad), 424);
        assert_eq!(code, "ModelError");
        assert!(again.contains("tried again in"), "{again}");
        assert_eq!(misses(), before, "no second load within the back-off");
    }
    // A link out of the prefix, as the model or inside a model's directory, is refused.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("model.onnx"), model_bytes(66)).unwrap();
    std::os::unix::fs::symlink(&outside, models.join("escape")).unwrap();
    let (code, message) = refused(invoke_model(&server, "mm-bad", "escape"), 400);
    assert_eq!(code, "ValidationError");
    assert!(message.contains("outside ModelDataUrl"), "{message}");
    std::fs::create_dir_all(models.join("linked")).unwrap();
    std::os::unix::fs::symlink(outside.join("model.onnx"), models.join("linked/model.onnx"))
        .unwrap();
    let (code, message) = refused(invoke_model(&server, "mm-bad", "linked"), 424);
    assert_eq!(code, "ModelError");
    assert!(message.contains("link"), "{message}");
    // The endpoint still serves the good ones.
    let response = invoke_model(&server, "mm-bad", "m-1");
    assert_eq!(response.status(), 200);
    assert_eq!(answered_by(&response.text().unwrap()), 1);

    // A model larger than a variant's whole budget is refused, and the models that fit
    // still load after it.
    let small = dir.path().join("small");
    prefix(&small, 2);
    std::fs::create_dir_all(small.join("big")).unwrap();
    std::fs::write(
        small.join("big/model.onnx"),
        plinth_tests::onnx::iris_like_padded([9.0, 0.5, -1.0], 2 << 20),
    )
    .unwrap();
    multi_model_endpoint(
        &server,
        "mm-small",
        &small.display().to_string(),
        json!({}),
        json!({ "PlinthModelCacheSizeInMB": 4 }),
    );
    let (code, message) = refused(invoke_model(&server, "mm-small", "big"), 503);
    assert_eq!(code, "ServiceUnavailable");
    assert!(message.contains("PlinthModelCacheSizeInMB"), "{message}");
    for i in [1, 0, 1] {
        let response = invoke_model(&server, "mm-small", &target(i));
        assert_eq!(response.status(), 200);
        assert_eq!(answered_by(&response.text().unwrap()), i);
    }

    // TargetModel on a single-model endpoint.
    server.call(
        "CreateModel",
        json!({ "ModelName": "single", "PrimaryContainer": {
            "Image": IRIS_SIMPLE_WASM, "ModelDataUrl": models.join("m-1").display().to_string() } }),
    );
    server.call(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": "single", "ProductionVariants": [
            { "VariantName": "AllTraffic", "ModelName": "single", "InitialInstanceCount": 1 }] }),
    );
    server.create_endpoint_settled("single", "single");
    let (code, message) = refused(invoke_model(&server, "single", "m-1"), 400);
    assert_eq!(code, "ValidationError");
    assert!(message.contains("serves a single model"), "{message}");

    // A prefix that does not exist; a prefix that is a file; ModelDataSource.
    for (url, says) in [
        (dir.path().join("absent").display().to_string(), "ModelDataUrl"),
        (models.join("corrupt.tar.gz").display().to_string(), "must be a directory"),
    ] {
        let response = server.control(
            "CreateModel",
            &json!({ "ModelName": "mm-wrong", "PrimaryContainer": {
                "Image": IRIS_SIMPLE_WASM, "Mode": "MultiModel", "ModelDataUrl": url } }),
        );
        assert_eq!(response.status(), 400);
        let text = response.text().unwrap();
        assert!(text.contains(says), "{text}");
    }
    // Settings that only apply to multi-model variants.
    let response = server.control(
        "CreateEndpointConfig",
        &json!({ "EndpointConfigName": "single-budget", "ProductionVariants": [
            { "VariantName": "A", "ModelName": "single", "InitialInstanceCount": 1,
              "PlinthModelCacheSizeInMB": 64 }] }),
    );
    assert_eq!(response.status(), 400);
    assert!(response.text().unwrap().contains("PlinthModelCacheSizeInMB applies only"));
    let response = server.control(
        "CreateEndpointConfig",
        &json!({ "EndpointConfigName": "mm-shadow", "ProductionVariants": [
            { "VariantName": "A", "ModelName": "mm-bad", "InitialInstanceCount": 1 }],
            "ShadowProductionVariants": [
            { "VariantName": "S", "ModelName": "mm-bad", "InitialInstanceCount": 1 }] }),
    );
    assert_eq!(response.status(), 400);
    assert!(response.text().unwrap().contains("shadow variants do not support"));
    // ListLoadedModels on a single-model endpoint.
    let response = server.control("ListLoadedModels", &json!({ "EndpointName": "single" }));
    assert_eq!(response.status(), 400);
    assert!(response.text().unwrap().contains("not a multi-model endpoint"));
}

/// `TargetVariant` picks the variant and `TargetModel` the model under that variant's prefix;
/// with caching disabled each request loads its model and nothing stays loaded.
#[test]
fn target_variant_and_target_model_combine_and_caching_can_be_disabled() {
    let dir = tempfile::tempdir().unwrap();
    prefix(&dir.path().join("a"), 2);
    // Variant B's prefix: the same names, other answers (10 + i).
    let b = dir.path().join("b");
    std::fs::create_dir_all(b.join("m-1")).unwrap();
    std::fs::write(b.join("m-1/model.onnx"), model_bytes(11)).unwrap();
    let server = Server::start_with(BIN, Options::default());
    for (name, path, cache) in [
        ("mm-a", dir.path().join("a"), "Enabled"),
        ("mm-b", b.clone(), "Disabled"),
    ] {
        server.call(
            "CreateModel",
            json!({ "ModelName": name, "PrimaryContainer": {
                "Image": IRIS_SIMPLE_WASM, "Mode": "MultiModel",
                "ModelDataUrl": path.display().to_string(),
                "MultiModelConfig": { "ModelCacheSetting": cache } } }),
        );
    }
    server.call(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": "mm-two", "ProductionVariants": [
            { "VariantName": "A", "ModelName": "mm-a", "InitialInstanceCount": 1 },
            { "VariantName": "B", "ModelName": "mm-b", "InitialInstanceCount": 2 }] }),
    );
    server.create_endpoint_settled("mm-two", "mm-two");
    for (variant, answer) in [("A", 1), ("B", 11), ("A", 1), ("B", 11), ("B", 11)] {
        let response = server.invoke(
            "mm-two",
            "text/csv",
            SETOSA_ROW,
            &[(TARGET_MODEL, "m-1"), (plinth_tests::TARGET_VARIANT, variant)],
        );
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()[plinth_tests::INVOKED_VARIANT],
            variant
        );
        assert_eq!(answered_by(&response.text().unwrap()), answer);
    }
    let metrics = server.metrics();
    // B loaded its model for each of its three requests and kept none.
    assert_eq!(
        counter(&metrics, "plinth_model_loading_time_seconds_count", &of_variant("mm-two", "B")),
        3.0
    );
    assert_eq!(
        sample(&metrics, "plinth_loaded_model_count", &of_variant("mm-two", "B")),
        Some(0.0)
    );
    assert_eq!(
        counter(&metrics, "plinth_model_loading_time_seconds_count", &of_variant("mm-two", "A")),
        1.0
    );
    let listed = server.call("ListLoadedModels", json!({ "EndpointName": "mm-two" }));
    let a = &listed["Variants"][0];
    assert_eq!(a["VariantName"], "A");
    assert_eq!(a["LoadedModelCount"], 1);
    assert_eq!(listed["Variants"][1]["LoadedModelCount"], 0);
    // Capacity changes reach every loaded model.
    server.call(
        "UpdateEndpointWeightsAndCapacities",
        json!({ "EndpointName": "mm-two", "DesiredWeightsAndCapacities": [
            { "VariantName": "A", "DesiredInstanceCount": 3 }] }),
    );
    let described = server.wait_in_service("mm-two", Duration::from_secs(30));
    assert_eq!(described["ProductionVariants"][0]["CurrentInstanceCount"], 3, "{described}");
    let response = server.invoke(
        "mm-two",
        "text/csv",
        SETOSA_ROW,
        &[(TARGET_MODEL, "m-0.tar.gz"), (plinth_tests::TARGET_VARIANT, "A")],
    );
    assert_eq!(response.status(), 200);
    assert_eq!(answered_by(&response.text().unwrap()), 0);
    let a = &server.call("ListLoadedModels", json!({ "EndpointName": "mm-two" }))["Variants"][0];
    assert_eq!(a["LoadedModelCount"], 2, "{a}");
    for model in a["Models"].as_array().unwrap() {
        assert_eq!(model["Instances"], 3, "{model}");
    }
}

/// An `s3://` prefix: each model fetched from the S3 server when first named; a model that
/// is not there is `ValidationError`.
#[test]
fn an_s3_prefix_serves_its_models() {
    let Some(s3) = S3::shared("an_s3_prefix_serves_its_models") else {
        return;
    };
    let bucket = format!("mm-{}", std::process::id());
    s3.create_bucket(&bucket);
    for i in 0..3 {
        s3.put_bytes(&bucket, &format!("models/m-{i}.tar.gz"), &tar_gz(&model_bytes(i)));
    }
    let server = Server::start_with(
        BIN,
        Options {
            env: s3.server_env(),
            ..Options::default()
        },
    );
    multi_model_endpoint(
        &server,
        "mm-s3",
        &format!("s3://{bucket}/models/"),
        json!({}),
        json!({}),
    );
    for i in [2, 0, 1, 2] {
        let response = invoke_model(&server, "mm-s3", &format!("m-{i}.tar.gz"));
        assert_eq!(response.status(), 200);
        assert_eq!(answered_by(&response.text().unwrap()), i);
    }
    let (code, message) = refused(invoke_model(&server, "mm-s3", "m-9.tar.gz"), 400);
    assert_eq!(code, "ValidationError");
    assert!(message.contains("Could not find model m-9.tar.gz"), "{message}");
    assert_eq!(loaded(&server, "mm-s3")["LoadedModelCount"], 3);
}

/// A blue/green canary deployment from one multi-model config to another under load: the
/// new fleet loads its models on demand, no request fails, and every answer comes from the
/// prefix of the config that served it (`X-Plinth-Endpoint-Config`).
#[test]
fn a_blue_green_deployment_loads_the_new_fleet_s_models_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    for (prefix, offset) in [(&old, 0), (&new, 100)] {
        for i in 0..4 {
            let model = prefix.join(format!("m-{i}"));
            std::fs::create_dir_all(&model).unwrap();
            std::fs::write(model.join("model.onnx"), model_bytes(offset + i)).unwrap();
        }
    }
    let server = Server::start_with(BIN, Options::default());
    multi_model_endpoint(&server, "mm-bg", &old.display().to_string(), json!({}), json!({}));
    server.call(
        "CreateModel",
        json!({ "ModelName": "mm-bg-new", "PrimaryContainer": {
            "Image": IRIS_SIMPLE_WASM, "Mode": "MultiModel",
            "ModelDataUrl": new.display().to_string() } }),
    );
    server.call(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": "mm-bg-new", "ProductionVariants": [
            { "VariantName": "AllTraffic", "ModelName": "mm-bg-new", "InitialInstanceCount": 1 }] }),
    );
    let done = AtomicBool::new(false);
    let served = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut n = 0;
                while !done.load(Ordering::SeqCst) {
                    let i = n % 4;
                    n += 1;
                    let response = invoke_model(&server, "mm-bg", &format!("m-{i}"));
                    let status = response.status().as_u16();
                    let config = response
                        .headers()
                        .get(plinth_tests::ENDPOINT_CONFIG)
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    let body = response.text().unwrap();
                    assert_eq!(status, 200, "{body}");
                    served.lock().unwrap().push((config, i, answered_by(&body)));
                }
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        server.call(
            "UpdateEndpoint",
            json!({ "EndpointName": "mm-bg", "EndpointConfigName": "mm-bg-new",
                "DeploymentConfig": { "BlueGreenUpdatePolicy": {
                    "TerminationWaitInSeconds": 0,
                    "TrafficRoutingConfiguration": { "Type": "CANARY", "WaitIntervalInSeconds": 1,
                        "CanarySize": { "Type": "CAPACITY_PERCENT", "Value": 50 } } } } }),
        );
        let described = server.wait_in_service("mm-bg", Duration::from_secs(60));
        assert_eq!(described["EndpointConfigName"], "mm-bg-new", "{described}");
        std::thread::sleep(Duration::from_millis(200));
        done.store(true, Ordering::SeqCst);
    });
    let served = served.into_inner().unwrap();
    for (config, i, answer) in &served {
        let expected = if config == "mm-bg-new" { 100 + i } else { *i };
        assert_eq!(*answer, expected, "config {config} model m-{i}");
    }
    assert!(served.iter().any(|(c, ..)| c == "mm-bg"));
    assert!(served.iter().any(|(c, ..)| c == "mm-bg-new"));
    assert!(loaded(&server, "mm-bg")["LoadedModelCount"].as_u64().unwrap() >= 1);
}

/// When every instance the server has room for is taken (`--max-instances`), a load unloads
/// an idle model to start its own: ten models through room for four serve without failure.
#[test]
fn models_beyond_the_server_s_instance_room_unload_idle_ones() {
    let dir = tempfile::tempdir().unwrap();
    prefix(dir.path(), 10);
    let server = Server::start_with(
        BIN,
        Options {
            args: vec!["--max-instances".into(), "4".into()],
            ..Options::default()
        },
    );
    multi_model_endpoint(&server, "mm-room", &dir.path().display().to_string(), json!({}), json!({}));
    for round in 0..2 {
        for i in 0..10 {
            let response = invoke_model(&server, "mm-room", &target(i));
            let status = response.status();
            let body = response.text().unwrap();
            assert_eq!(status, 200, "round {round}, model {i}: {body}");
            assert_eq!(answered_by(&body), i);
        }
    }
    let count = loaded(&server, "mm-room")["LoadedModelCount"].as_u64().unwrap();
    assert!((1..=4).contains(&count), "{count} models loaded with room for 4 instances");
}
