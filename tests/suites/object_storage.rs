//! `s3://` model artifacts and components against a real S3-compatible server (moto's, from
//! the project's virtualenv, started by the harness with authentication on), written with
//! boto3: models created from `ModelDataUrl`, `ModelDataSource` (`S3Object` and `S3Prefix`)
//! and an `s3://` `Image` serve; two models on one object fetch it once; a wrong key, a wrong
//! bucket, wrong credentials, a truncated object and a store that never answers each leave
//! the endpoint `Failed` with a reason naming the object (and the S3 error code).

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use plinth_tests::s3::S3;
use plinth_tests::{Options, Server, IRIS_MODEL_DIR, IRIS_SIMPLE_WASM, IRIS_WASM, SETOSA_ROW};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// A bucket name of this test's own (the server is shared by the suite).
fn bucket(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// The iris model directory as SageMaker's `model.tar.gz`.
fn iris_tar_gz() -> Vec<u8> {
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    archive
        .append_path_with_name(Path::new(IRIS_MODEL_DIR).join("model.onnx"), "model.onnx")
        .unwrap();
    archive.into_inner().unwrap().finish().unwrap()
}

fn server(env: Vec<(String, Option<String>)>) -> Server {
    Server::start_with(
        BIN,
        Options {
            env,
            ..Options::default()
        },
    )
}

fn create_model(server: &Server, name: &str, container: Value) {
    server.call(
        "CreateModel",
        json!({ "ModelName": name, "PrimaryContainer": container }),
    );
}

/// An endpoint of one variant of `model` (with `variant` members added), settled.
fn endpoint(server: &Server, name: &str, model: &str, variant: Value) -> Value {
    let mut v = json!({ "VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1 });
    for (key, value) in variant.as_object().unwrap() {
        v[key] = value.clone();
    }
    server.call(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": name, "ProductionVariants": [v] }),
    );
    server.create_endpoint_settled(name, name)
}

fn assert_setosa(server: &Server, endpoint: &str) {
    let response = server.invoke(endpoint, "text/csv", SETOSA_ROW, &[]);
    assert_eq!(response.status(), 200);
    let body = response.text().unwrap();
    assert!(body.contains("setosa"), "{body}");
}

/// The endpoint failed, and its reason has every fragment.
fn assert_failed(described: &Value, fragments: &[&str]) {
    assert_eq!(described["EndpointStatus"], "Failed", "{described}");
    let reason = described["FailureReason"].as_str().unwrap_or_default();
    for fragment in fragments {
        assert!(reason.contains(fragment), "{fragment:?} not in {reason:?}");
    }
}

/// How many times the server logged fetching `location`.
fn fetches(server: &Server, location: &str) -> usize {
    server
        .stderr()
        .lines()
        .filter(|l| l.contains("fetched") && l.contains(&format!("location={location} ")))
        .count()
}

#[test]
fn models_from_s3_serve_and_one_object_is_fetched_once() {
    let Some(s3) = S3::shared("object_storage::models_from_s3_serve") else {
        return;
    };
    let bucket = bucket("serve");
    s3.create_bucket(&bucket);
    s3.put_bytes(&bucket, "iris/model.tar.gz", &iris_tar_gz());
    let onnx = std::fs::read(Path::new(IRIS_MODEL_DIR).join("model.onnx")).unwrap();
    s3.put_bytes(&bucket, "prefix/model.onnx", &onnx);
    s3.put_bytes(&bucket, "single/model.onnx", &onnx);
    s3.put_file(&bucket, "components/iris.wasm", Path::new(IRIS_WASM));
    let server = server(s3.server_env());
    let stderr = server.stderr();
    assert!(
        stderr.contains("s3:// locations: credentials") && !stderr.contains(&s3.secret_access_key),
        "the credentials in use are logged, never the secret: {stderr}"
    );

    // Two models, one object: two variants of one endpoint.
    let url = format!("s3://{bucket}/iris/model.tar.gz");
    for name in ["tarball-a", "tarball-b"] {
        create_model(&server, name, json!({ "Image": IRIS_WASM, "ModelDataUrl": url }));
    }
    server.create_config("two", &[("A", "tarball-a", 1), ("B", "tarball-b", 1)]);
    let described = server.create_endpoint_settled("two", "two");
    assert_eq!(described["EndpointStatus"], "InService", "{described}");
    for variant in ["A", "B"] {
        let response = server.invoke(
            "two",
            "text/csv",
            SETOSA_ROW,
            &[(plinth_tests::TARGET_VARIANT, variant)],
        );
        assert_eq!(response.status(), 200);
    }
    // A third model on the same object, on its own endpoint: still one fetch.
    create_model(&server, "tarball-c", json!({ "Image": IRIS_WASM, "ModelDataUrl": url }));
    let described = endpoint(&server, "third", "tarball-c", json!({}));
    assert_eq!(described["EndpointStatus"], "InService", "{described}");
    assert_eq!(fetches(&server, &url), 1, "{}", server.stderr());

    // ModelDataSource: a prefix, and a single uncompressed object with an s3:// component.
    create_model(
        &server,
        "prefix",
        json!({ "Image": IRIS_WASM, "ModelDataSource": { "S3DataSource": {
            "S3Uri": format!("s3://{bucket}/prefix/"), "S3DataType": "S3Prefix", "CompressionType": "None" } } }),
    );
    let described = endpoint(&server, "prefix", "prefix", json!({}));
    assert_eq!(described["EndpointStatus"], "InService", "{described}");
    assert_setosa(&server, "prefix");
    create_model(
        &server,
        "remote-component",
        json!({ "Image": format!("s3://{bucket}/components/iris.wasm"),
                "ModelDataSource": { "S3DataSource": {
            "S3Uri": format!("s3://{bucket}/single/model.onnx"), "S3DataType": "S3Object", "CompressionType": "None" } } }),
    );
    let described = endpoint(&server, "remote", "remote-component", json!({}));
    assert_eq!(described["EndpointStatus"], "InService", "{described}");
    assert_setosa(&server, "remote");

    // Malformed sources are refused at CreateModel, naming the member.
    let refused = [
        (
            json!({ "Image": IRIS_WASM, "ModelDataSource": { "S3DataSource": {
                "S3Uri": format!("s3://{bucket}/prefix/"), "S3DataType": "S3Prefix", "CompressionType": "Gzip" } } }),
            "CompressionType must be None",
        ),
        (
            json!({ "Image": IRIS_WASM, "ModelDataUrl": url, "ModelDataSource": { "S3DataSource": {
                "S3Uri": url, "S3DataType": "S3Object", "CompressionType": "Gzip" } } }),
            "not both",
        ),
        (
            json!({ "Image": IRIS_WASM, "ModelDataUrl": "s3://Not_A_Bucket/m.tar.gz" }),
            "ModelDataUrl",
        ),
    ];
    for (i, (container, expected)) in refused.into_iter().enumerate() {
        server.refused(
            "CreateModel",
            json!({ "ModelName": format!("bad-{i}"), "PrimaryContainer": container }),
            "ValidationException",
            &[expected],
        );
    }
}

#[test]
fn a_missing_key_or_bucket_or_a_truncated_object_fails_the_endpoint_naming_it() {
    let Some(s3) = S3::shared("object_storage::failures") else {
        return;
    };
    let bucket = bucket("failures");
    s3.create_bucket(&bucket);
    let whole = iris_tar_gz();
    s3.put_bytes(&bucket, "truncated.tar.gz", &whole[..whole.len() / 2]);
    let server = server(s3.server_env());
    let cases = [
        ("no-key", format!("s3://{bucket}/missing.tar.gz"), "NoSuchKey"),
        (
            "no-bucket",
            format!("s3://{bucket}-absent/model.tar.gz"),
            "NoSuchBucket",
        ),
        ("truncated", format!("s3://{bucket}/truncated.tar.gz"), ""),
    ];
    for (name, url, code) in &cases {
        create_model(&server, name, json!({ "Image": IRIS_WASM, "ModelDataUrl": url }));
        let described = endpoint(&server, name, name, json!({}));
        assert_failed(&described, &[url, code]);
    }
    // The server serves on: a good endpoint still comes up.
    s3.put_bytes(&bucket, "good.tar.gz", &whole);
    let url = format!("s3://{bucket}/good.tar.gz");
    create_model(&server, "good", json!({ "Image": IRIS_WASM, "ModelDataUrl": url }));
    let described = endpoint(&server, "good", "good", json!({}));
    assert_eq!(described["EndpointStatus"], "InService", "{described}");
    assert_setosa(&server, "good");
}

#[test]
fn wrong_credentials_fail_the_endpoint_with_the_store_s_code() {
    let Some(s3) = S3::shared("object_storage::wrong_credentials") else {
        return;
    };
    let bucket = bucket("credentials");
    s3.create_bucket(&bucket);
    s3.put_bytes(&bucket, "model.tar.gz", &iris_tar_gz());
    let server = server(s3.server_env_with_wrong_secret());
    let url = format!("s3://{bucket}/model.tar.gz");
    create_model(&server, "m", json!({ "Image": IRIS_WASM, "ModelDataUrl": url }));
    let described = endpoint(&server, "m", "m", json!({}));
    assert_failed(&described, &[&url]);
    let reason = described["FailureReason"].as_str().unwrap();
    assert!(
        ["SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"]
            .iter()
            .any(|code| reason.contains(code)),
        "{reason}"
    );
}

/// A store that accepts connections and never answers: the fetch gives up at the variant's
/// ModelDataDownloadTimeoutInSeconds (its least, 60 s) and the endpoint fails saying so.
#[test]
fn a_store_that_never_answers_fails_the_endpoint_at_the_download_timeout() {
    let Some(s3) = S3::shared("object_storage::timeout") else {
        return;
    };
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        // Keep every connection open, unanswered, until the test ends.
        let mut open = Vec::new();
        for stream in silent.incoming().flatten() {
            let _ = (&stream).flush();
            open.push(stream);
        }
    });
    let mut env = s3.server_env();
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL_S3");
    env.push(("AWS_ENDPOINT_URL_S3".into(), Some(format!("http://{address}"))));
    let server = server(env);
    let url = "s3://silent-bucket/model.tar.gz";
    create_model(&server, "slow", json!({ "Image": IRIS_WASM, "ModelDataUrl": url }));
    server.call(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": "slow", "ProductionVariants": [{
            "VariantName": "AllTraffic", "ModelName": "slow", "InitialInstanceCount": 1,
            "ModelDataDownloadTimeoutInSeconds": 60 }] }),
    );
    server.call(
        "CreateEndpoint",
        json!({ "EndpointName": "slow", "EndpointConfigName": "slow" }),
    );
    let described = server.wait_for_endpoint("slow", Duration::from_secs(150), |d| {
        d["EndpointStatus"] != "Creating"
    });
    assert_failed(
        &described,
        &[url, "ModelDataDownloadTimeoutInSeconds (60 s)"],
    );
    // The member is range-checked as SageMaker does.
    server.refused(
        "CreateEndpointConfig",
        json!({ "EndpointConfigName": "too-short", "ProductionVariants": [{
            "VariantName": "AllTraffic", "ModelName": "slow", "InitialInstanceCount": 1,
            "ModelDataDownloadTimeoutInSeconds": 59 }] }),
        "ValidationException",
        &["ModelDataDownloadTimeoutInSeconds"],
    );
    drop(server);
    drop(held);
}

/// A server killed (SIGKILL) while it downloads an artifact leaves only hidden partial files,
/// which the restarted server does not trust: it fetches the object again, whole, and the
/// endpoint serves.
#[test]
fn a_fetch_killed_midway_leaves_nothing_a_restart_trusts() {
    let Some(s3) = S3::shared("object_storage::a_fetch_killed_midway") else {
        return;
    };
    let bucket = bucket("killed");
    s3.create_bucket(&bucket);
    // 64 MiB of incompressible weights and the iris graph, as an uncompressed tar: long
    // enough to download that the kill lands in the middle.
    let dir = tempfile::tempdir().unwrap();
    let weights_len = 64usize << 20;
    let weights = plinth_tests::noise(weights_len);
    let archive_path = dir.path().join("big.tar");
    {
        let mut archive = tar::Builder::new(std::fs::File::create(&archive_path).unwrap());
        archive
            .append_path_with_name(Path::new(IRIS_MODEL_DIR).join("model.onnx"), "model.onnx")
            .unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_size(weights.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive
            .append_data(&mut header, "weights.bin", &weights[..])
            .unwrap();
        archive.finish().unwrap();
    }
    s3.put_file(&bucket, "big.tar", &archive_path);
    let url = format!("s3://{bucket}/big.tar");

    let server = server(s3.server_env());
    create_model(&server, "big", json!({ "Image": IRIS_WASM, "ModelDataUrl": url }));
    server.create_config("big", &[("AllTraffic", "big", 1)]);
    server.call(
        "CreateEndpoint",
        json!({ "EndpointName": "big", "EndpointConfigName": "big" }),
    );
    let objects = server.dir().join("data/artifacts/s3/objects");
    let partial = || {
        std::fs::read_dir(&objects).ok().and_then(|entries| {
            entries.flatten().find(|e| {
                e.file_name().to_string_lossy().starts_with(".partial-")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while partial().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no download in progress seen: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let server = server.kill_and_restart().expect("the server restarts");
    let index = server.dir().join("data/artifacts/s3/index");
    let described = server.wait_in_service("big", Duration::from_secs(120));
    assert_eq!(described["EndpointStatus"], "InService", "{described}");
    assert_setosa(&server, "big");
    assert_eq!(fetches(&server, &url), 1, "{}", server.stderr());
    // One index entry, pointing at the whole artifact.
    let entries: Vec<_> = std::fs::read_dir(&index)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let digest = std::fs::read_to_string(entries[0].path()).unwrap();
    let kept = server.dir().join("data/artifacts/s3").join(digest.trim());
    assert_eq!(std::fs::read(kept.join("weights.bin")).unwrap(), weights);
}

/// A model runs the object version it first ran: with the object replaced in S3, the model
/// keeps its copy through restarts, even with the store unreachable; a model created after
/// the replacement runs the new version.
#[test]
fn a_model_keeps_the_object_version_it_first_ran() {
    let Some(s3) = S3::shared("object_storage::a_model_keeps_the_object_version") else {
        return;
    };
    let bucket = bucket("pinned");
    s3.create_bucket(&bucket);
    s3.put_file(&bucket, "classifier.wasm", Path::new(IRIS_WASM));
    s3.put_bytes(&bucket, "model.tar.gz", &iris_tar_gz());
    let container = json!({
        "Image": format!("s3://{bucket}/classifier.wasm"),
        "ModelDataUrl": format!("s3://{bucket}/model.tar.gz"),
    });
    let server = server(s3.server_env());
    create_model(&server, "first", container.clone());
    let described = endpoint(&server, "first", "first", json!({}));
    assert_eq!(described["EndpointStatus"], "InService", "{described}");
    let labelled = |server: &Server, endpoint: &str| {
        let response = server.invoke(endpoint, "text/csv", SETOSA_ROW, &[]);
        assert_eq!(response.status(), 200);
        response.text().unwrap().contains(r#""label":"setosa""#)
    };
    assert!(labelled(&server, "first"));

    // The component is replaced (iris-simple answers with bare probabilities).
    s3.put_file(&bucket, "classifier.wasm", Path::new(IRIS_SIMPLE_WASM));
    let unreachable = |o: &mut Options| {
        o.env.retain(|(k, _)| k != "AWS_ENDPOINT_URL_S3");
        o.env
            .push(("AWS_ENDPOINT_URL_S3".into(), Some("http://127.0.0.1:1".into())));
    };
    let server = server.kill_and_restart_with(unreachable).expect("restarts");
    let described = server.wait_in_service("first", Duration::from_secs(60));
    assert_eq!(described["EndpointStatus"], "InService", "{described}");
    assert!(labelled(&server, "first"), "the pinned version serves, S3 unreachable");

    let reachable = |o: &mut Options| o.env = s3.server_env();
    let server = server.kill_and_restart_with(reachable).expect("restarts");
    server.wait_in_service("first", Duration::from_secs(60));
    assert!(labelled(&server, "first"), "still the version the model first ran");
    create_model(&server, "second", container);
    let described = endpoint(&server, "second", "second", json!({}));
    assert_eq!(described["EndpointStatus"], "InService", "{described}");
    assert!(!labelled(&server, "second"), "a new model runs the new version");
}
