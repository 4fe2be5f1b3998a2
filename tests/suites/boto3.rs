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
//! Without the venv the tests are skipped, unless `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use plinth_tests::{
    Config, Model, Options, Server, ECHO_WASM, FAULTS_WASM, IRIS_MODEL_DIR, IRIS_WASM,
    WORKSPACE_ROOT,
};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// The access key pair the control-plane test's server accepts.
const ACCESS_KEY: &str = "AKIDPLINTHTEST";
const SECRET_KEY: &str = "plinth-boto3-test-secret";

/// The venv's interpreter; `None` (after saying why) when the test should be skipped.
fn venv_python(test: &str) -> Option<PathBuf> {
    let python = Path::new(WORKSPACE_ROOT).join(".venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{} is missing; run `.ci/run` (or `tests/run`) to create the venv with boto3",
            python.display()
        );
    }
    eprintln!(
        "SKIPPED {test}: {} is missing; run `tests/run` to create it (this test fails \
         instead when CI=true)",
        python.display()
    );
    None
}

/// Run `tests/python/<script>` against `server` with `env` added; panics with the script's
/// output and the server's stderr unless it exits 0.
fn run_script(python: &Path, script: &str, server: &Server, env: &[(&str, &str)]) {
    let script = Path::new(WORKSPACE_ROOT).join("tests/python").join(script);
    let output = Command::new(python)
        .arg(&script)
        .env("PLINTH_URL", server.url())
        .envs(env.iter().copied())
        // Never pick up a developer's real AWS settings.
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
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

#[test]
fn boto3_sagemaker_runtime_client() {
    let Some(python) = venv_python("boto3_sagemaker_runtime_client") else {
        return;
    };
    let config = Config::new()
        .endpoint(Model::new("iris", IRIS_WASM).model_data(IRIS_MODEL_DIR), 1)
        .endpoint(Model::new("faults", FAULTS_WASM), 1)
        .endpoint(Model::new("echo", ECHO_WASM), 1);
    let server = Server::start(BIN, &config.to_toml());
    run_script(&python, "test_runtime_boto3.py", &server, &[]);
}

#[test]
fn boto3_sagemaker_control_plane_life_cycle() {
    let Some(python) = venv_python("boto3_sagemaker_control_plane_life_cycle") else {
        return;
    };
    let credentials = format!(
        "[[credentials]]\naccess_key_id = {}\nsecret_access_key = {}\n",
        plinth_tests::toml_string(ACCESS_KEY),
        plinth_tests::toml_string(SECRET_KEY)
    );
    let server = Server::start_with(
        BIN,
        Options {
            credentials: Some(credentials),
            ..Options::default()
        },
    );
    let scratch = tempfile::tempdir().expect("create a scratch directory");
    let scratch_path = scratch.path().display().to_string();
    run_script(
        &python,
        "test_control_boto3.py",
        &server,
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
