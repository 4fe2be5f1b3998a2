//! Unmodified boto3 against the real server, with `endpoint_url`, each test running one
//! script under `tests/python/` with the interpreter of the repository's `.venv` (made by
//! `.ci/run` or `tests/run`):
//!
//! - `boto3_sagemaker_runtime_client`: `sagemaker-runtime` against endpoints from a
//!   deployment file, without credentials (`test_runtime_boto3.py`).
//! - `boto3_sagemaker_control_plane_life_cycle`: the `sagemaker` control plane and
//!   `sagemaker-runtime` against a server started with one SigV4 credential pair and no
//!   deployment file: models (one from a `.tar.gz`), endpoint configs, endpoints with
//!   boto3's waiters, weights and capacities, UpdateEndpoint, paginated and filtered lists,
//!   `ResourceInUse` and `ValidationException` refusals, signature refusals (wrong secret,
//!   unknown key, unsigned, tampered, malformed, clock skew) that change nothing, and
//!   deletion (`test_control_boto3.py`).
//!
//! - `boto3_over_https`: a server started with `--tls-cert`/`--tls-key`, a certificate for
//!   127.0.0.1 made by the test (rcgen); boto3 trusting only it creates, deploys and invokes;
//!   untrusted, it refuses the server; plain HTTP gets no answer (`test_tls_boto3.py`).
//!
//! Without the venv the tests are skipped, unless `CI=true`, where they fail.

use plinth_tests::{
    Config, Model, Options, Server, ECHO_WASM, FAULTS_WASM, IRIS_MODEL_DIR, IRIS_WASM,
};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// The access key pair the control-plane test's server accepts.
const ACCESS_KEY: &str = "AKIDPLINTHTEST";
const SECRET_KEY: &str = "plinth-boto3-test-secret";

#[test]
fn boto3_sagemaker_runtime_client() {
    let Some(python) = plinth_tests::venv_python("boto3_sagemaker_runtime_client") else {
        return;
    };
    let config = Config::new()
        .endpoint(Model::new("iris", IRIS_WASM).model_data(IRIS_MODEL_DIR), 1)
        .endpoint(Model::new("faults", FAULTS_WASM), 1)
        .endpoint(Model::new("echo", ECHO_WASM), 1);
    let server = Server::start(BIN, &config.to_toml());
    server.run_python(&python, "test_runtime_boto3.py", &[]);
}

#[test]
fn boto3_sagemaker_control_plane_life_cycle() {
    let Some(python) = plinth_tests::venv_python("boto3_sagemaker_control_plane_life_cycle") else {
        return;
    };
    let credentials = plinth_tests::credentials_toml(ACCESS_KEY, SECRET_KEY);
    let server = Server::start_with(
        BIN,
        Options {
            credentials: Some(credentials),
            ..Options::default()
        },
    );
    let scratch = tempfile::tempdir().expect("create a scratch directory");
    let scratch_path = scratch.path().display().to_string();
    server.run_python(
        &python,
        "test_control_boto3.py",
        &[
            ("PLINTH_ACCESS_KEY", ACCESS_KEY),
            ("PLINTH_SECRET_KEY", SECRET_KEY),
            ("IRIS_WASM", IRIS_WASM),
            ("IRIS_MODEL_DIR", IRIS_MODEL_DIR),
            ("ECHO_WASM", ECHO_WASM),
            ("PLINTH_SCRATCH", &scratch_path),
        ],
    );
}

#[test]
fn boto3_over_https() {
    let Some(python) = plinth_tests::venv_python("boto3_over_https") else {
        return;
    };
    let dir = tempfile::tempdir().expect("create a scratch directory");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .expect("make a certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let server = Server::start_with(
        BIN,
        Options {
            credentials: Some(plinth_tests::credentials_toml(ACCESS_KEY, SECRET_KEY)),
            args: vec![
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
            ],
            ..Options::default()
        },
    );
    assert!(server.url().starts_with("https://"), "{}", server.url());
    server.run_python(
        &python,
        "test_tls_boto3.py",
        &[
            ("PLINTH_CA", cert.to_str().unwrap()),
            ("PLINTH_ACCESS_KEY", ACCESS_KEY),
            ("PLINTH_SECRET_KEY", SECRET_KEY),
            ("PLINTH_ECHO_WASM", ECHO_WASM),
        ],
    );
}
