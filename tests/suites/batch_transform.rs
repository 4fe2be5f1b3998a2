//! Batch transform (CreateTransformJob and the rest) against the real server: boto3 end to
//! end against the S3 test server (a 10,000-row CSV validation set split by line, packed
//! into MultiRecord requests, the outputs equal to synchronous answers row for row; Gzip
//! inputs sent one record at a time; the waiter; listing; failures with SageMaker's
//! messages; refused settings), a job interrupted by kill -9 that resumes and ends with
//! exactly one whole output per input, and a stopped job that keeps its completed outputs.

use std::path::Path;
use std::time::{Duration, Instant};

use plinth_tests::{Options, Server, FAULTS_WASM, IRIS_MODEL_DIR, IRIS_WASM};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_plinth");

#[test]
fn boto3_transform_jobs_over_s3_match_synchronous_answers() {
    let bucket = format!("transform-{}", std::process::id());
    let Some((python, s3, server)) = plinth_tests::boto3_with_s3(
        BIN,
        "batch_transform::boto3_transform_jobs_over_s3",
        &bucket,
    ) else {
        return;
    };
    server.run_python(
        &python,
        "test_transform_boto3.py",
        &[
            [
                ("IRIS_WASM", IRIS_WASM),
                ("IRIS_MODEL_DIR", IRIS_MODEL_DIR),
                ("FAULTS_WASM", FAULTS_WASM),
            ]
            .as_slice(),
            &s3.python_env(&bucket),
        ]
        .concat(),
    );
}

/// `n` input files of `rows` lines each under `dir/in`, and an empty `dir/out`.
fn inputs(dir: &Path, n: usize, rows: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let (input, out) = (dir.join("in"), dir.join("out"));
    std::fs::create_dir_all(input.join("sub")).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    for i in 0..n {
        // Some in a folder: their outputs keep it.
        let name = if i % 2 == 0 {
            format!("part-{i:02}.txt")
        } else {
            format!("sub/part-{i:02}.txt")
        };
        let text: String = (0..rows).map(|r| format!("row {r} of {i}\n")).collect();
        std::fs::write(input.join(name), text).unwrap();
    }
    (input, out)
}

/// How many whole outputs (`.out`) are under `dir` (outputs being written are staged
/// beside them as `.partial-*`).
fn outputs(dir: &Path) -> usize {
    files(dir).iter().filter(|f| f.ends_with(".out")).count()
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, found);
            } else {
                found.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found);
    found.sort();
    found
}

fn create_job(server: &Server, name: &str, model: &str, input: &Path, out: &Path, extra: Value) {
    let mut job = json!({
        "TransformJobName": name,
        "ModelName": model,
        "BatchStrategy": "SingleRecord",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input.display().to_string()}},
            "ContentType": "text/plain",
            "SplitType": "Line",
        },
        "TransformOutput": {"S3OutputPath": out.display().to_string(), "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    });
    for (k, v) in extra.as_object().unwrap() {
        job[k] = v.clone();
    }
    server.call("CreateTransformJob", job);
}

fn wait_for(server: &Server, name: &str, statuses: &[&str], within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let d = server.call("DescribeTransformJob", json!({ "TransformJobName": name }));
        if statuses.iter().any(|s| d["TransformJobStatus"] == *s) {
            return d;
        }
        assert!(start.elapsed() < within, "{name} not {statuses:?}: {d}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 20 inputs of 5 records, each record 20 ms; the server killed (-9) twice while the job
/// runs: the job resumes from the inputs not yet complete and ends Completed with exactly
/// one whole output per input and nothing else in the output path. An object put under the
/// prefix after the job started is not one of its inputs.
#[test]
fn a_job_interrupted_by_kill_9_resumes_and_writes_each_output_once() {
    let work = tempfile::tempdir().unwrap();
    let (input, out) = inputs(work.path(), 20, 5);
    let server = Server::start_with(BIN, Options::default());
    server.create_model("slow", FAULTS_WASM, json!({ "FAULT_DELAY_MS": "20" }));
    create_job(&server, "resumed", "slow", &input, &out, json!({}));
    let mut server = server;
    for _ in 0..2 {
        // Kill once a few inputs are done, not all.
        let start = Instant::now();
        let before = outputs(&out);
        while outputs(&out) < before + 3 {
            assert!(start.elapsed() < Duration::from_secs(30), "no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(outputs(&out) < 20, "the kill must come while the job runs");
        server = server.kill_and_restart().expect("restart");
        std::fs::write(input.join("late.txt"), "came after the job was created\n").unwrap();
        server
            .wait_for_stderr(Duration::from_secs(10), |log| {
                log.contains("a transform job a stop interrupted goes on")
            })
            .expect("the job resumed");
    }
    let described = wait_for(&server, "resumed", &["Completed"], Duration::from_secs(60));
    assert_eq!(described["PlinthProgress"]["InputsCompleted"], 20, "{described}");
    assert_eq!(described["PlinthProgress"]["RecordsCompleted"], 100, "{described}");
    let outputs = files(&out);
    let expected: Vec<String> = files(&input)
        .iter()
        .filter(|f| *f != "late.txt")
        .map(|f| format!("{f}.out"))
        .collect();
    assert_eq!(expected.len(), 20);
    assert_eq!(outputs, expected, "one output per input, nothing else");
    for name in &outputs {
        let text = std::fs::read_to_string(out.join(name)).unwrap();
        assert_eq!(text, "ok\n".repeat(5), "{name} is whole");
    }
}

/// StopTransformJob stops a running job within a second: `Stopped`, the outputs of the
/// inputs completed before it in place, no output for the others.
#[test]
fn a_stopped_job_keeps_its_completed_outputs() {
    let work = tempfile::tempdir().unwrap();
    let (input, out) = inputs(work.path(), 6, 10);
    let server = Server::start_with(BIN, Options::default());
    server.create_model("slow", FAULTS_WASM, json!({ "FAULT_DELAY_MS": "50" }));
    create_job(&server, "stopped", "slow", &input, &out, json!({}));
    let start = Instant::now();
    while outputs(&out) == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its model cannot be deleted while it runs.
    let response = server.control("DeleteModel", &json!({ "ModelName": "slow" }));
    assert_eq!(response.status(), 400);
    let text = response.text().unwrap();
    assert!(text.contains("transform job stopped (InProgress) runs it"), "{text}");
    server.call("StopTransformJob", json!({ "TransformJobName": "stopped" }));
    let stopping = Instant::now();
    let d = wait_for(&server, "stopped", &["Stopped"], Duration::from_secs(5));
    assert!(stopping.elapsed() < Duration::from_secs(1), "{:?}", stopping.elapsed());
    assert!(d["TransformEndTime"].is_number(), "{d}");
    let done = d["PlinthProgress"]["InputsCompleted"].as_u64().unwrap();
    assert!((1..6).contains(&done), "{d}");
    assert_eq!(files(&out).len() as u64, done, "{:?}", files(&out));
    // A stop does not wait for a request in flight: a model that takes 5 s a record
    // stops within a second of being asked.
    server.create_model("slower", FAULTS_WASM, json!({ "FAULT_DELAY_MS": "5000" }));
    let (input2, out2) = inputs(&work.path().join("slower"), 1, 3);
    create_job(&server, "interrupted", "slower", &input2, &out2, json!({}));
    std::thread::sleep(Duration::from_millis(1500));
    server.call("StopTransformJob", json!({ "TransformJobName": "interrupted" }));
    let stopping = Instant::now();
    wait_for(&server, "interrupted", &["Stopped"], Duration::from_secs(5));
    assert!(stopping.elapsed() < Duration::from_secs(1), "{:?}", stopping.elapsed());
    assert!(files(&out2).is_empty(), "{:?}", files(&out2));
    // Stopping an ended job is refused.
    let response = server.control("StopTransformJob", &json!({ "TransformJobName": "stopped" }));
    assert_eq!(response.status(), 400);
    assert!(response.text().unwrap().contains("already ended (Stopped)"));
}

/// A record larger than MaxPayloadInMB fails the job with SageMaker's message, without an
/// output for its input; a model error fails it after the retries with the model's message;
/// more instances than the server's limit are refused at once; a manifest's key that leaves
/// its prefix fails the job; so does an empty prefix.
#[test]
fn failures_name_their_input_and_cause() {
    let work = tempfile::tempdir().unwrap();
    let (input, out) = inputs(work.path(), 1, 1);
    std::fs::write(input.join("part-00.txt"), vec![b'x'; (1 << 20) + 10]).unwrap();
    let server = Server::start_with(
        BIN,
        Options {
            args: vec!["--max-instances".into(), "50".into()],
            ..Options::default()
        },
    );
    server.create_model("echo", FAULTS_WASM, json!({}));
    create_job(&server, "huge", "echo", &input, &out, json!({"MaxPayloadInMB": 1}));
    let d = wait_for(&server, "huge", &["Failed"], Duration::from_secs(30));
    let reason = d["FailureReason"].as_str().unwrap();
    assert!(reason.contains("Too much data for max payload size"), "{reason}");
    assert!(reason.contains("part-00.txt"), "{reason}");
    assert!(files(&out).is_empty(), "{:?}", files(&out));

    server.create_model(
        "broken",
        FAULTS_WASM,
        json!({ "FAULT_DEFAULT": "model-error" }),
    );
    let (input, out) = inputs(&work.path().join("b"), 1, 2);
    create_job(
        &server,
        "broken",
        "broken",
        &input,
        &out,
        json!({"ModelClientConfig": {"InvocationsMaxRetries": 1}}),
    );
    let d = wait_for(&server, "broken", &["Failed"], Duration::from_secs(30));
    let reason = d["FailureReason"].as_str().unwrap();
    assert!(reason.contains("after 2 tries"), "{reason}");
    assert!(files(&out).is_empty());

    // An object that is not what CompressionType says: the job fails naming it.
    let (plain, plain_out) = inputs(&work.path().join("g"), 1, 3);
    create_job(
        &server,
        "not-gzip",
        "echo",
        &plain,
        &plain_out,
        json!({"TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": plain.display().to_string()}},
            "CompressionType": "Gzip", "SplitType": "Line"}}),
    );
    let d = wait_for(&server, "not-gzip", &["Failed"], Duration::from_secs(30));
    let reason = d["FailureReason"].as_str().unwrap();
    assert!(reason.contains("part-00.txt"), "{reason}");
    assert!(reason.contains("is not gzip data"), "{reason}");

    // More instances than the server may run: refused at once, naming the field.
    let mut job = json!({
        "TransformJobName": "too-big", "ModelName": "echo",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input.display().to_string()}}},
        "TransformOutput": {"S3OutputPath": out.display().to_string()},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 100},
    });
    let response = server.control("CreateTransformJob", &job);
    assert_eq!(response.status(), 400);
    let text = response.text().unwrap();
    assert!(text.contains("ResourceLimitExceeded"), "{text}");
    assert!(text.contains("TransformResources.InstanceCount 100"), "{text}");
    // A manifest's key may not leave the prefix.
    std::fs::write(
        work.path().join("manifest.json"),
        json!([{"prefix": input.display().to_string()}, "/etc/hostname"]).to_string(),
    )
    .unwrap();
    job["TransformJobName"] = json!("escape");
    job["TransformResources"]["InstanceCount"] = json!(1);
    job["TransformInput"]["DataSource"]["S3DataSource"] = json!({
        "S3DataType": "ManifestFile",
        "S3Uri": work.path().join("manifest.json").display().to_string(),
    });
    server.call("CreateTransformJob", job);
    let d = wait_for(&server, "escape", &["Failed"], Duration::from_secs(30));
    assert!(
        d["FailureReason"].as_str().unwrap().contains("is not a relative key"),
        "{d}"
    );

    // Nothing under the prefix.
    let empty = work.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    create_job(&server, "empty", "echo", &empty, &out, json!({}));
    let d = wait_for(&server, "empty", &["Failed"], Duration::from_secs(30));
    assert!(
        d["FailureReason"]
            .as_str()
            .unwrap()
            .starts_with("No S3 objects found under S3 URL"),
        "{d}"
    );
}

/// `plinth batch` runs a job with no server (`--component`) and on a running one
/// (`--model`): the outputs written, the summary printed, exit status 0; a job that fails
/// exits 1 with its reason.
#[test]
fn plinth_batch_runs_a_job_with_and_without_a_server() {
    let work = tempfile::tempdir().unwrap();
    let (input, out) = inputs(work.path(), 3, 4);
    let output = std::process::Command::new(BIN)
        .args(["batch", "--component", FAULTS_WASM, "--content-type", "text/plain"])
        .args(["--cache-dir", &work.path().join("cache").display().to_string()])
        .args(["--input", &input.display().to_string()])
        .args(["--output", &out.display().to_string()])
        .args(["--batch-strategy", "SingleRecord", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let described: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(described["TransformJobStatus"], "Completed", "{described}");
    assert_eq!(described["PlinthProgress"]["RecordsCompleted"], 12, "{described}");
    assert_eq!(
        files(&out),
        vec!["part-00.txt.out", "part-02.txt.out", "sub/part-01.txt.out"]
    );

    let server = Server::start_with(BIN, Options::default());
    server.create_model("broken", FAULTS_WASM, json!({ "FAULT_DEFAULT": "model-error" }));
    let out2 = work.path().join("out2");
    std::fs::create_dir(&out2).unwrap();
    let output = std::process::Command::new(BIN)
        .args(["batch", "--model", "broken", "--endpoint-url", server.url()])
        .args(["--content-type", "text/plain", "--name", "from-cli"])
        .args(["--input", &input.display().to_string()])
        .args(["--output", &out2.display().to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.starts_with("transform job from-cli: Failed"), "{stdout}");
    assert!(stderr.contains("transform job from-cli ended Failed"), "{stderr}");
    let d = server.call("DescribeTransformJob", json!({ "TransformJobName": "from-cli" }));
    assert_eq!(d["TransformJobStatus"], "Failed");
}

/// A job that compares models (`PlinthCompareModels`): every request goes to each, each
/// model's outputs under a prefix of its own, and the agreement with the job's model
/// counted record by record: a copy of the same model agrees on every record, a model that
/// answers something else on none.
#[test]
fn a_job_compares_models_record_by_record() {
    let work = tempfile::tempdir().unwrap();
    let (input, out) = (work.path().join("in"), work.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    for (file, rows) in [("a.csv", 0..20), ("b.csv", 20..45)] {
        let text: String = rows
            .map(|i| format!("{:.1},3.0,{:.1},1.0\n", 4.5 + (i % 30) as f64 / 10.0, 1.0 + (i % 50) as f64 / 10.0))
            .collect();
        std::fs::write(input.join(file), text).unwrap();
    }
    let server = Server::start_with(BIN, Options::default());
    for name in ["iris-a", "iris-b"] {
        server.call(
            "CreateModel",
            json!({"ModelName": name, "PrimaryContainer": {"Image": IRIS_WASM, "ModelDataUrl": IRIS_MODEL_DIR}}),
        );
    }
    server.create_model("constant", FAULTS_WASM, json!({ "FAULT_REPLY": "setosa,1,0,0" }));
    server.call(
        "CreateTransformJob",
        json!({
            "TransformJobName": "compared", "ModelName": "iris-a",
            "PlinthCompareModels": ["iris-b", "constant"],
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input.display().to_string()}},
                "ContentType": "text/csv", "SplitType": "Line"},
            "TransformOutput": {"S3OutputPath": out.display().to_string(), "Accept": "text/csv", "AssembleWith": "Line"},
            "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        }),
    );
    let d = wait_for(&server, "compared", &["Completed"], Duration::from_secs(60));
    let comparison = &d["PlinthProgress"]["Comparison"];
    assert_eq!(comparison[0]["ModelName"], "iris-b", "{d}");
    assert_eq!(
        (comparison[0]["Records"].as_u64(), comparison[0]["Exact"].as_u64()),
        (Some(45), Some(45)),
        "{d}"
    );
    assert_eq!(comparison[0]["SameClassShare"], 1.0, "{d}");
    assert_eq!(comparison[1]["ModelName"], "constant", "{d}");
    assert_eq!(comparison[1]["Records"], 45, "{d}");
    assert_eq!(comparison[1]["Exact"], 0, "{d}");
    assert_eq!(
        files(&out),
        [
            "constant/a.csv.out",
            "constant/b.csv.out",
            "iris-a/a.csv.out",
            "iris-a/b.csv.out",
            "iris-b/a.csv.out",
            "iris-b/b.csv.out"
        ]
    );
    let a = std::fs::read_to_string(out.join("iris-a/b.csv.out")).unwrap();
    assert_eq!(a.lines().count(), 25);
    assert_eq!(a, std::fs::read_to_string(out.join("iris-b/b.csv.out")).unwrap());
    // An InputFilter alone leaves the model's answers as it wrote them: one JSON answer
    // for a request of many rows.
    let with_ids = work.path().join("ids");
    let filtered = work.path().join("filtered");
    std::fs::create_dir_all(&with_ids).unwrap();
    std::fs::create_dir_all(&filtered).unwrap();
    std::fs::write(with_ids.join("rows.csv"), "a,5.1,3.5,1.4,0.2\nb,6.7,3.0,5.2,2.3\n").unwrap();
    server.call(
        "CreateTransformJob",
        json!({
            "TransformJobName": "filtered", "ModelName": "iris-a",
            "DataProcessing": {"InputFilter": "$[1:]"},
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": with_ids.display().to_string()}},
                "ContentType": "text/csv", "SplitType": "Line"},
            "TransformOutput": {"S3OutputPath": filtered.display().to_string(), "Accept": "application/json"},
            "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        }),
    );
    wait_for(&server, "filtered", &["Completed"], Duration::from_secs(60));
    let answer: Value =
        serde_json::from_str(&std::fs::read_to_string(filtered.join("rows.csv.out")).unwrap())
            .unwrap();
    assert_eq!(answer["predictions"].as_array().map(Vec::len), Some(2), "{answer}");
    // A compared model is one of the job's: it cannot be named twice, nor be unknown.
    for (models, expected) in [
        (json!(["iris-a"]), "names model iris-a twice"),
        (json!(["nobody"]), "Could not find model"),
    ] {
        let response = server.control(
            "CreateTransformJob",
            &json!({
                "TransformJobName": "refused", "ModelName": "iris-a", "PlinthCompareModels": models,
                "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input.display().to_string()}}},
                "TransformOutput": {"S3OutputPath": out.display().to_string()},
                "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
            }),
        );
        assert_eq!(response.status(), 400);
        let text = response.text().unwrap();
        assert!(text.contains(expected), "{text}");
    }
}
