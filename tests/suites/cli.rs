//! The `plinth` command line: `validate` (good and bad configs, with the exact error text),
//! `serve` refusing components it cannot run and a `model_fn` that fails, `local` (one
//! component, one input, no server) and `invoke` (a client for a running server).

use std::path::Path;
use std::process::Output;

use plinth_tests::{
    expect_failure, expect_success, run_cli, text, Config, Model, Server, FAULTS_WASM,
    IRIS_MODEL_DIR, IRIS_WASM, WORKSPACE_ROOT,
};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// Runs `plinth ARGS` to completion (see `plinth_tests::run_cli`).
fn plinth(args: &[&str]) -> Output {
    run_cli(BIN, args, None)
}

fn write_config(dir: &Path, toml: &str) -> String {
    let path = dir.join("plinth.toml");
    std::fs::write(&path, toml).unwrap();
    path.display().to_string()
}

#[test]
fn validate_accepts_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new()
        .endpoint(Model::iris("iris"), 2)
        .endpoint(Model::new("faults", FAULTS_WASM), 1);
    let path = write_config(dir.path(), &config.to_toml());
    let output = plinth(&["validate", "--config", &path]);
    expect_success(&output, "plinth validate");
    assert_eq!(text(&output.stdout).trim(), "ok: 2 endpoints");
}

#[test]
fn validate_accepts_the_iris_example() {
    let path = Path::new(WORKSPACE_ROOT).join("examples/iris/plinth.toml");
    let output = plinth(&["validate", "--config", path.to_str().unwrap()]);
    expect_success(&output, "plinth validate examples/iris/plinth.toml");
    assert_eq!(text(&output.stdout).trim(), "ok: 1 endpoints");
}

#[test]
fn validate_rejects_a_variant_of_an_unknown_model() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"[[models]]
name = "iris"
component = {component:?}

[[endpoint_configs]]
name = "iris-config"
[[endpoint_configs.production_variants]]
variant_name = "AllTraffic"
model_name = "x"
initial_instance_count = 1
initial_variant_weight = 1.0

[[endpoints]]
name = "iris"
endpoint_config_name = "iris-config"
"#,
        component = IRIS_WASM
    );
    let path = write_config(dir.path(), &toml);
    let output = plinth(&["validate", "--config", &path]);
    expect_failure(
        &output,
        "plinth validate (unknown model)",
        &[
            &path,
            "`endpoint_configs[0].production_variants[0].model_name`: no model named \"x\"; \
             add a [[models]] entry",
        ],
    );
}

#[test]
fn validate_rejects_a_file_that_is_not_toml() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[[models]\nname = ");
    let output = plinth(&["validate", "--config", &path]);
    expect_failure(&output, "plinth validate (not TOML)", &[&path]);
}

/// `plinth serve` with `config` must exit non-zero with `expected` on stderr.
fn serve_refuses(config: &Config, started_anyway: &str, expected: &str) {
    let Err(e) = Server::try_start(BIN, &config.to_toml()) else {
        panic!("{started_anyway}");
    };
    assert!(e.status.is_some_and(|s| !s.success()), "{e:?}");
    assert!(e.stderr.contains(expected), "stderr:\n{}", e.stderr);
}

#[test]
fn serve_refuses_a_component_that_is_not_wasm() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bad.wasm");
    std::fs::write(&bogus, "this is a text file, not WebAssembly\n").unwrap();
    let config = Config::new().endpoint(Model::new("bad", &bogus), 1);
    serve_refuses(
        &config,
        "plinth serve started with a text file as its component",
        "bad.wasm is not a valid WebAssembly component",
    );
}

#[test]
fn serve_refuses_a_component_of_another_world() {
    // The smallest valid component: the preamble and nothing else, so it exports nothing.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\x00\x01\x00").unwrap();
    let config = Config::new().endpoint(Model::new("empty", &empty), 1);
    serve_refuses(
        &config,
        "plinth serve started with an empty component",
        "does not implement the plinth:model@0.2.0 `model` world",
    );
}

#[test]
fn serve_refuses_a_component_built_for_the_previous_contract() {
    // A component whose only export is an (empty) instance named as the 0.1.0 handler
    // interface: what a plugin built with the previous SDK exports, minus its functions.
    let name = b"plinth:model/handler@0.1.0";
    let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
    // Instance section: one instance, made of no exports.
    bytes.extend([5, 3, 1, 1, 0]);
    // Export section: instance 0 under `name`.
    bytes.extend([11, 6 + name.len() as u8, 1, 0, name.len() as u8]);
    bytes.extend(name);
    bytes.extend([5, 0, 0]);
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.wasm");
    std::fs::write(&old, &bytes).unwrap();
    let config = Config::new().endpoint(Model::new("old", &old), 1);
    serve_refuses(
        &config,
        "plinth serve started with a component built for plinth:model@0.1.0",
        "it was built for plinth:model@0.1.0 (it exports plinth:model/handler@0.1.0), which \
         this Plinth no longer runs; rebuild it",
    );
}

#[test]
fn serve_refuses_a_model_whose_model_fn_fails() {
    let model = Model::new("faults", FAULTS_WASM).env("FAULT_MODEL_FN", "1");
    let config = Config::new().endpoint(model, 1);
    serve_refuses(
        &config,
        "plinth serve started although model_fn fails",
        "model_fn failed: fault plugin: model_fn failed as configured",
    );
}

/// `plinth local` on the iris component and model with a `text/csv` body, plus `rest`.
fn plinth_local_iris(rest: &[&str]) -> Output {
    let mut args = vec![
        "local",
        "--component",
        IRIS_WASM,
        "--model-data",
        IRIS_MODEL_DIR,
        "--content-type",
        "text/csv",
    ];
    args.extend_from_slice(rest);
    plinth(&args)
}

#[test]
fn local_runs_one_input_through_a_component() {
    let output = plinth_local_iris(&["--body", "5.1,3.5,1.4,0.2"]);
    expect_success(&output, "plinth local (iris)");
    let stdout = text(&output.stdout);
    let body: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}"));
    assert_eq!(body["predictions"][0]["label"], "setosa", "{body}");

    // --body-file and --accept.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.csv");
    std::fs::write(&input, "6.7,3.0,5.2,2.3\n5.9,3.0,4.2,1.5\n").unwrap();
    let output = plinth_local_iris(&[
        "--accept",
        "text/csv",
        "--body-file",
        input.to_str().unwrap(),
    ]);
    expect_success(&output, "plinth local (iris, --body-file)");
    let stdout = text(&output.stdout);
    let labels: Vec<&str> = stdout
        .lines()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(labels, ["virginica", "versicolor"], "{stdout:?}");

    // --env reaches model_fn.
    let output = plinth(&[
        "local",
        "--component",
        FAULTS_WASM,
        "--env",
        "FAULT_MODEL_FN=1",
        "--body",
        "fine",
    ]);
    expect_failure(
        &output,
        "plinth local (FAULT_MODEL_FN=1)",
        &["model_fn failed"],
    );
}

#[test]
fn local_reports_a_guest_panic() {
    let output = plinth(&[
        "local",
        "--component",
        FAULTS_WASM,
        "--custom-attributes",
        "panic",
        "--body",
        "x",
    ]);
    expect_failure(
        &output,
        "plinth local (panic)",
        &["fault plugin: deliberate panic"],
    );

    let output = plinth_local_iris(&["--body", "1,2,3"]);
    expect_failure(
        &output,
        "plinth local (3 columns)",
        &["expected 4 features per row"],
    );
}

#[test]
fn invoke_talks_to_a_running_server() {
    let server = Server::start(
        BIN,
        &Config::new().endpoint(Model::iris("iris"), 1).to_toml(),
    );
    let output = plinth(&[
        "invoke",
        "--endpoint",
        "iris",
        "--endpoint-url",
        server.url(),
        "--content-type",
        "text/csv",
        "--body",
        "5.1,3.5,1.4,0.2",
    ]);
    expect_success(&output, "plinth invoke");
    assert!(
        text(&output.stdout).contains("setosa"),
        "stdout: {}",
        text(&output.stdout)
    );
    assert!(
        text(&output.stderr).contains("variant: AllTraffic"),
        "stderr: {}",
        text(&output.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(&input, "[[6.7,3.0,5.2,2.3]]").unwrap();
    let output = plinth(&[
        "invoke",
        "--endpoint",
        "iris",
        "--endpoint-url",
        server.url(),
        "--content-type",
        "application/json",
        "--accept",
        "text/csv",
        "--target-variant",
        "AllTraffic",
        "--body-file",
        input.to_str().unwrap(),
    ]);
    expect_success(&output, "plinth invoke --body-file");
    assert!(
        text(&output.stdout).starts_with("virginica,"),
        "stdout: {}",
        text(&output.stdout)
    );

    let output = plinth(&[
        "invoke",
        "--endpoint",
        "nope",
        "--endpoint-url",
        server.url(),
        "--body",
        "x",
    ]);
    expect_failure(
        &output,
        "plinth invoke (unknown endpoint)",
        &["Endpoint nope of account 123456789012 not found."],
    );

    let output = plinth(&[
        "invoke",
        "--endpoint",
        "iris",
        "--endpoint-url",
        server.url(),
        "--content-type",
        "text/csv",
        "--body",
        "1,2,3",
    ]);
    expect_failure(
        &output,
        "plinth invoke (3 columns)",
        &["expected 4 features per row"],
    );
}

/// `plinth inspect` tells a plugin author what to call a graph's inputs and outputs, of
/// which type and shape, and which backends load it; a directory without a graph says so.
#[test]
fn inspect_shows_each_graphs_inputs_outputs_and_backends() {
    let output = plinth(&["inspect", plinth_tests::IRIS_MODEL_DIR]);
    let stdout = expect_success(&output, "plinth inspect (iris)");
    for expected in [
        "graph \"model\"",
        "Graph::load_by_name(\"model\")",
        "input",
        "N,4,F32",
        "probabilities",
        "N,3,F32",
        "Tract        loads it",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }
    let empty = tempfile::tempdir().unwrap();
    let output = plinth(&["inspect", empty.path().to_str().unwrap()]);
    expect_failure(&output, "plinth inspect (no graph)", &["no *.onnx file"]);
}

/// A graph the model asks for that is not there: `model_fn`'s failure names the file it
/// looked for by its host path and the graphs the artifact does hold, and the lookup by name
/// that the SDK falls back from is not logged as a warning.
#[test]
fn a_missing_graph_names_the_host_path_and_the_graphs_there_are() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(IRIS_MODEL_DIR).join("model.onnx"),
        dir.path().join("classifier.onnx"),
    )
    .unwrap();
    let model_dir = dir.path().to_str().unwrap();
    let output = plinth(&[
        "local",
        "--component",
        plinth_tests::IRIS_SIMPLE_WASM,
        "--model-data",
        model_dir,
        "--content-type",
        "text/csv",
        "--body",
        "5.1,3.5,1.4,0.2",
    ]);
    let stderr = expect_failure(
        &output,
        "plinth local (no model.onnx)",
        &[
            "model_fn failed",
            &format!("{model_dir}/model.onnx"),
            r#"its graphs are ["classifier"]"#,
        ],
    );
    assert!(!stderr.contains("/opt/ml/model"), "{stderr}");
    assert!(
        !stderr.lines().any(|l| l.contains("WARN") && l.contains("no graph named")),
        "the fallback was logged as a warning: {stderr}"
    );
}
