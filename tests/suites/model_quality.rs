//! Model quality (Model Monitor) against the real server, through unmodified boto3: two
//! variants of different accuracy under data capture, ground truth as SageMaker takes it,
//! model quality job definitions for each problem type on monitoring schedules, and each
//! execution's `statistics.json` compared with scikit-learn's metrics on the same
//! predictions (`python/test_model_quality_boto3.py`).

use plinth_tests::{Options, Server, IRIS_MODEL_DIR, IRIS_WASM, SCALER_WASM};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

#[test]
fn boto3_model_quality_matches_scikit_learn_per_variant() {
    let Some(python) = plinth_tests::venv_python("model_quality::boto3_model_quality") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        BIN,
        Options {
            args: vec!["--data-capture-roll-seconds".into(), "1".into()],
            ..Options::default()
        },
    );
    server.run_python(
        &python,
        "test_model_quality_boto3.py",
        &[
            ("IRIS_WASM", IRIS_WASM),
            ("SCALER_WASM", SCALER_WASM),
            ("IRIS_MODEL_DIR", IRIS_MODEL_DIR),
            ("WORK", work.path().to_str().unwrap()),
        ],
    );
    // `plinth quality`: the variants side by side, the good one significantly better.
    let output = std::process::Command::new(BIN)
        .args(["quality", "quality", "--schedule", "labels", "--endpoint-url", server.url()])
        .output()
        .unwrap();
    let text = plinth_tests::expect_success(&output, "plinth quality");
    for fragment in [
        "labels on quality: CompletedWithViolations (MulticlassClassification)",
        "good (n=",
        "degraded (n=",
        "endpoint (n=600)",
        "accuracy: good better than degraded, significantly",
    ] {
        assert!(
            text.contains(fragment),
            "{fragment:?} not in:\n{text}\n{}",
            plinth_tests::text(
                &std::process::Command::new(BIN)
                    .args(["quality", "quality", "--json", "--schedule", "labels"])
                    .args(["--endpoint-url", server.url()])
                    .output()
                    .unwrap()
                    .stdout
            )
        );
    }
    let json = std::process::Command::new(BIN)
        .args(["quality", "quality", "--json", "--endpoint-url", server.url()])
        .output()
        .unwrap();
    let execution: serde_json::Value =
        serde_json::from_str(&plinth_tests::expect_success(&json, "plinth quality --json")).unwrap();
    assert!(execution["PlinthVariants"]["good"]["Metrics"].is_object(), "{execution}");
    let missing = std::process::Command::new(BIN)
        .args(["quality", "nowhere", "--endpoint-url", server.url()])
        .output()
        .unwrap();
    plinth_tests::expect_failure(&missing, "plinth quality nowhere", &["has no completed monitoring execution"]);
}
