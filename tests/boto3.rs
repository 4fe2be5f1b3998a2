//! Unmodified boto3 (`sagemaker-runtime` with `endpoint_url`) against the real server: runs
//! `tests/python/test_runtime_boto3.py` with the interpreter of the repository's `.venv`
//! (made by `.ci/run` or `tests/run`).
//!
//! Without the venv the test is skipped, unless `CI=true`, where it fails.

use std::path::Path;
use std::process::Command;

use plinth_tests::{
    Config, Model, Server, ECHO_WASM, FAULTS_WASM, IRIS_MODEL_DIR, IRIS_WASM, WORKSPACE_ROOT,
};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

#[test]
fn boto3_sagemaker_runtime_client() {
    let root = Path::new(WORKSPACE_ROOT);
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "{} is missing; run `.ci/run` (or `tests/run`) to create the venv with boto3",
                python.display()
            );
        }
        eprintln!(
            "SKIPPED boto3_sagemaker_runtime_client: {} is missing; run `tests/run` to create \
             it (this test fails instead when CI=true)",
            python.display()
        );
        return;
    }

    let config = Config::new()
        .endpoint(Model::new("iris", IRIS_WASM).model_data(IRIS_MODEL_DIR), 1)
        .endpoint(Model::new("faults", FAULTS_WASM), 1)
        .endpoint(Model::new("echo", ECHO_WASM), 1);
    let server = Server::start(BIN, &config.to_toml());

    let script = root.join("tests/python/test_runtime_boto3.py");
    let output = Command::new(&python)
        .arg(&script)
        .env("PLINTH_URL", server.url())
        // Never pick up a developer's real AWS settings.
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("run the boto3 script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver stderr:\n{}",
        script.display(),
        output.status,
        server.stderr()
    );
    print!("{stdout}");
}
