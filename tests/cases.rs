//! The API's protocol and validation cases, run in process: each folder under
//! `tests/cases/` is one test, found when the suite starts (a new folder needs no other
//! change). Every case gets a fresh server on an in-memory store, built by
//! `plinth_server::serve::start`, and its requests go through the real router with
//! `tower::ServiceExt::oneshot`: no process, no socket, no data directory.
//!
//! A control-plane or runtime case is `tests/cases/<Operation>/<case>/`:
//!
//! - `setup.json` (optional): `[[Operation, Input], ...]`, run first; each must succeed, and
//!   after a `CreateEndpoint`, `UpdateEndpoint`, `UpdateEndpointWeightsAndCapacities` or
//!   `PromoteShadowVariant` the case waits until the endpoint settles (neither `Creating` nor
//!   `Updating`).
//! - `request.json`: for a control-plane operation, the request body, sent as its bytes (so
//!   a case can send JSON that does not parse); for `InvokeEndpoint` and
//!   `InvokeEndpointAsync`, an object `{"EndpointName", "Headers": {...}, "Body": "..."}`.
//! - `headers.json` (optional, control plane): headers to set (a string) or leave out
//!   (`null`) instead of the defaults `X-Amz-Target: SageMaker.<Operation>` (for an
//!   Application Auto Scaling operation, `AnyScaleFrontendService.<Operation>`) and
//!   `Content-Type: application/x-amz-json-1.1`.
//! - `expected.json`: `{"Status": 400, "ErrorCode": "...", "Message": "..."}` for an error
//!   (the message exactly; `MessageContains` for a fragment, or a list of fragments), or
//!   `{"Status": 200, "Output": {...}}` where `Output` must be contained in the answer as
//!   `plinth_tests::json::contains` says (objects may have more keys; `"<any>"` matches any
//!   value; `null` a missing key). `Headers` (optional) names response headers and values;
//!   `Body` (optional) the whole body as text. A successful `CreateEndpoint` or update (as in
//!   `setup.json`) settles before `then.json` runs.
//! - `then.json` (optional): `[[Operation, Input, Output], ...]` run after the request, each
//!   answering 200 with `Output` contained in its answer: what the request must have left
//!   (or not left) behind. `"<unchanged>"` as `Output`: the answer must equal the one the
//!   same call gave just before the request (after the setup).
//!
//! In `setup.json` and `then.json` an `InvokeEndpoint` step's input is a request as above;
//! its optional third element is in `expected.json`'s form (without it: any 200).
//!
//! An invalid deployment file is `tests/cases/deployment-files/<case>/plinth.toml` with the
//! exact error text `plinth validate --config plinth.toml` must give in `expected.txt` (what
//! the binary prints after `error: `; the command runs in process).
//!
//! In every file, `{{ECHO_WASM}}`, `{{IRIS_WASM}}`, `{{FAULTS_WASM}}` and
//! `{{IRIS_MODEL_DIR}}` stand for the test components' and model's paths, and `{{DIR}}` for
//! the case's own folder.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use libtest_mimic::{Arguments, Failed, Trial};
use plinth_server::cli::Cli;
use plinth_server::serve::{start, Settings, StateLocation};
use plinth_tests::json::contains;
use plinth_tests::{ECHO_WASM, FAULTS_WASM, IRIS_MODEL_DIR, IRIS_WASM, WORKSPACE_ROOT};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// How long a setup endpoint may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let args = Arguments::from_args();
    let root = Path::new(WORKSPACE_ROOT).join("tests/cases");
    let mut trials = Vec::new();
    for group in folders(&root) {
        let group_name = file_name(&group);
        for case in folders(&group) {
            let name = format!("{group_name}/{}", file_name(&case));
            let trial = if group_name == "deployment-files" {
                Trial::test(name, move || deployment_file(&case))
            } else {
                let operation = group_name.clone();
                Trial::test(name, move || api_case(&operation, &case))
            };
            trials.push(trial);
        }
    }
    assert!(!trials.is_empty(), "no cases under {}", root.display());
    libtest_mimic::run(&args, trials).exit();
}

/// The folders in `dir`, sorted.
fn folders(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    found.sort();
    found
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// A case file with the placeholders replaced; `None` if it does not exist.
fn read(case: &Path, file: &str) -> Option<String> {
    let text = std::fs::read_to_string(case.join(file)).ok()?;
    let mut text = text;
    for (name, value) in [
        ("ECHO_WASM", ECHO_WASM),
        ("IRIS_WASM", IRIS_WASM),
        ("FAULTS_WASM", FAULTS_WASM),
        ("IRIS_MODEL_DIR", IRIS_MODEL_DIR),
        ("DIR", case.to_str().expect("a UTF-8 path")),
    ] {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    Some(text)
}

fn read_json(case: &Path, file: &str) -> Result<Option<Value>, Failed> {
    read(case, file)
        .map(|text| {
            serde_json::from_str(&text).map_err(|e| format!("{file} is not JSON: {e}").into())
        })
        .transpose()
}

/// An invalid deployment file and its exact error: `plinth validate --config FILE` run in
/// process (`plinth_server::cli`), its error as the binary prints it after `error: `.
fn deployment_file(case: &Path) -> Result<(), Failed> {
    // The file with its placeholders replaced, in a directory of its own; errors name it as
    // `{{DIR}}/plinth.toml`.
    let text = read(case, "plinth.toml").ok_or("the case has no plinth.toml")?;
    let expected = read(case, "expected.txt").ok_or("the case has no expected.txt")?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("plinth.toml");
    std::fs::write(&file, text)?;
    let shown = |e: &anyhow::Error| {
        format!("{e:#}").replace(
            dir.path().to_str().unwrap_or_default(),
            case.to_str().unwrap_or_default(),
        )
    };
    let file = file.to_str().ok_or("a UTF-8 path")?;
    let cli = Cli::try_parse_from(["plinth", "validate", "--config", file])?;
    match plinth_server::cli::run(cli) {
        Ok(()) => Err("the file was accepted".into()),
        Err(e) if shown(&e) == expected.trim_end() => Ok(()),
        Err(e) => Err(format!("expected:\n{}\ngot:\n{}", expected.trim_end(), shown(&e)).into()),
    }
}

/// One control-plane or runtime case on a fresh in-memory server.
fn api_case(operation: &str, case: &Path) -> Result<(), Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let artifacts = tempfile::tempdir()?;
        let server = start(
            StateLocation::InMemory {
                artifacts: artifacts.path().to_path_buf(),
            },
            Settings::default(),
        )
        .await
        .map_err(|e| format!("the server did not start: {e:#}"))?;
        let app = plinth_server::http::app(server);
        let client = Client { app };

        if let Some(setup) = read_json(case, "setup.json")? {
            for step in steps(&setup, "setup.json")? {
                client.step("setup", step, None).await?;
            }
        }

        // The answers that `"<unchanged>"` steps of then.json compare with.
        let then = read_json(case, "then.json")?;
        let then = match &then {
            Some(then) => steps(then, "then.json")?,
            None => Vec::new(),
        };
        let mut before = Vec::new();
        for step in &then {
            before.push(if step.2.is_some_and(|w| w == UNCHANGED) {
                Some(client.ok(step.0, step.1).await?)
            } else {
                None
            });
        }

        let expected = read_json(case, "expected.json")?.ok_or("the case has no expected.json")?;
        let response = if is_invocation(operation) {
            let request = read_json(case, "request.json")?.ok_or("no request.json")?;
            client.invoke(operation, &request).await?
        } else {
            let body = read(case, "request.json").ok_or("no request.json")?;
            let headers = read_json(case, "headers.json")?.unwrap_or(Value::Null);
            let response = client.send(operation, body.clone(), &headers).await?;
            if response.status == StatusCode::OK && settles(operation) {
                let input: Value = serde_json::from_str(&body)?;
                client.settle(&input["EndpointName"]).await?;
            }
            response
        };
        check(&expected, &response)?;

        for (step, before) in then.into_iter().zip(&before) {
            client.step("then", step, before.as_ref()).await?;
        }
        Ok(())
    })
}

/// Whether `operation` is a runtime call (InvokeEndpoint, InvokeEndpointAsync) rather than
/// a control-plane one.
fn is_invocation(operation: &str) -> bool {
    matches!(operation, "InvokeEndpoint" | "InvokeEndpointAsync")
}

/// `then.json`'s `Output` for "the same answer as before the request".
const UNCHANGED: &str = "<unchanged>";

/// Whether a successful `operation` leaves its endpoint `Creating` or `Updating` for a while.
fn settles(operation: &str) -> bool {
    matches!(
        operation,
        "CreateEndpoint"
            | "UpdateEndpoint"
            | "UpdateEndpointWeightsAndCapacities"
            | "PromoteShadowVariant"
    )
}

/// One `[Operation, Input, Output?]` of `setup.json` or `then.json`.
type Step<'a> = (&'a str, &'a Value, Option<&'a Value>);

/// `[[Operation, Input, Output?], ...]`.
fn steps<'a>(list: &'a Value, file: &str) -> Result<Vec<Step<'a>>, Failed> {
    let invalid = || format!("{file} must be a list of [Operation, Input, Output?]");
    list.as_array()
        .ok_or_else(invalid)?
        .iter()
        .map(|step| {
            let parts = step.as_array().ok_or_else(invalid)?;
            let operation = parts.first().and_then(Value::as_str).ok_or_else(invalid)?;
            let input = parts.get(1).ok_or_else(invalid)?;
            Ok((operation, input, parts.get(2)))
        })
        .collect::<Result<_, String>>()
        .map_err(Failed::from)
}

/// A response as the case sees it.
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The router, called in process.
struct Client {
    app: axum::Router,
}

impl Client {
    async fn call(&self, request: Request<Body>) -> Result<Answer, Failed> {
        let response = self.app.clone().oneshot(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
        Ok(Answer {
            status,
            headers,
            body: body.to_vec(),
        })
    }

    /// A control-plane request with the default headers, changed by `headers`.
    async fn send(&self, operation: &str, body: String, headers: &Value) -> Result<Answer, Failed> {
        let mut names = vec![
            (
                "x-amz-target".to_string(),
                Some(plinth_tests::target(operation)),
            ),
            (
                "content-type".to_string(),
                Some("application/x-amz-json-1.1".to_string()),
            ),
        ];
        if let Some(headers) = headers.as_object() {
            for (name, value) in headers {
                let name = name.to_ascii_lowercase();
                names.retain(|(n, _)| *n != name);
                names.push((name, value.as_str().map(str::to_string)));
            }
        }
        let mut request = Request::post("/");
        for (name, value) in names {
            if let Some(value) = value {
                request = request.header(name, value);
            }
        }
        self.call(request.body(Body::from(body))?).await
    }

    /// A control-plane call: its status and JSON answer.
    async fn control(&self, operation: &str, body: String) -> Result<(StatusCode, Value), Failed> {
        let answer = self.send(operation, body, &Value::Null).await?;
        Ok((answer.status, answer.json()))
    }

    /// A control-plane call that must answer 200: its JSON answer.
    async fn ok(&self, operation: &str, input: &Value) -> Result<Value, Failed> {
        let (status, output) = self.control(operation, input.to_string()).await?;
        if status != StatusCode::OK {
            return Err(format!("{operation} {input}: {status} {output}").into());
        }
        Ok(output)
    }

    /// One step of `setup.json` or `then.json` (`file`): `InvokeEndpoint` checked like
    /// `expected.json`, any other operation answering 200 with its output containing the
    /// step's (or, for `"<unchanged>"`, equal to `before`); an endpoint it changes settles.
    async fn step(&self, file: &str, step: Step<'_>, before: Option<&Value>) -> Result<(), Failed> {
        let (operation, input, wanted) = step;
        if is_invocation(operation) {
            let answer = self.invoke(operation, input).await?;
            let expected = wanted
                .cloned()
                .unwrap_or(serde_json::json!({ "Status": 200 }));
            return check(&expected, &answer).map_err(|e| {
                let why = e.message().unwrap_or_default();
                format!("{file} InvokeEndpoint {input}: {why}").into()
            });
        }
        let output = self
            .ok(operation, input)
            .await
            .map_err(|e| format!("{file}: {}", e.message().unwrap_or_default()))?;
        let matches = match (wanted, before) {
            (_, Some(before)) => output == *before,
            (Some(wanted), None) => contains(&output, wanted),
            (None, None) => true,
        };
        if !matches {
            let wanted = before.or(wanted).unwrap_or(&Value::Null);
            return Err(format!(
                "{file} {operation} {input} answered {output}, expected {}{wanted}",
                if before.is_some() {
                    "it unchanged: "
                } else {
                    "it to contain "
                }
            )
            .into());
        }
        if settles(operation) {
            self.settle(&input["EndpointName"]).await?;
        }
        Ok(())
    }

    /// InvokeEndpoint from `{"EndpointName", "Headers", "Body"}`.
    async fn invoke(&self, operation: &str, request: &Value) -> Result<Answer, Failed> {
        let name = request["EndpointName"]
            .as_str()
            .ok_or("request.json needs EndpointName")?;
        let path = if operation == "InvokeEndpointAsync" {
            "async-invocations"
        } else {
            "invocations"
        };
        let mut builder = Request::post(format!("/endpoints/{name}/{path}"));
        if let Some(headers) = request["Headers"].as_object() {
            for (header, value) in headers {
                builder =
                    builder.header(header, value.as_str().ok_or("header values are strings")?);
            }
        }
        let body = request["Body"].as_str().unwrap_or_default().to_string();
        self.call(builder.body(Body::from(body))?).await
    }

    /// Wait until `endpoint` is neither Creating, Updating nor RollingBack.
    async fn settle(&self, endpoint: &Value) -> Result<(), Failed> {
        let started = Instant::now();
        let input = serde_json::json!({ "EndpointName": endpoint }).to_string();
        loop {
            let (_, output) = self.control("DescribeEndpoint", input.clone()).await?;
            let status = output["EndpointStatus"].as_str().unwrap_or_default();
            if !matches!(status, "Creating" | "Updating" | "RollingBack") {
                return Ok(());
            }
            if started.elapsed() > SETTLE_TIMEOUT {
                return Err(format!("endpoint {endpoint} still {status}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The answer against `expected.json`.
fn check(expected: &Value, answer: &Answer) -> Result<(), Failed> {
    let body = String::from_utf8_lossy(&answer.body);
    let fail = |what: String| -> Result<(), Failed> {
        Err(format!("{what}\nstatus {}, body: {body}", answer.status).into())
    };
    let status = expected["Status"]
        .as_u64()
        .ok_or("expected.json needs Status")?;
    if u64::from(answer.status.as_u16()) != status {
        return fail(format!("expected status {status}"));
    }
    let json = answer.json();
    if let Some(code) = expected["ErrorCode"].as_str() {
        let header = answer
            .headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok());
        if json["__type"].as_str() != Some(code) || header != Some(code) {
            return fail(format!(
                "expected error {code} (in __type and x-amzn-ErrorType; header {header:?})"
            ));
        }
    }
    if let Some(message) = expected["Message"].as_str() {
        if json["message"].as_str() != Some(message) {
            return fail(format!("expected the message {message:?}"));
        }
    }
    let fragments: Vec<&str> = match &expected["MessageContains"] {
        Value::String(fragment) => vec![fragment.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    for fragment in fragments {
        if !json["message"]
            .as_str()
            .is_some_and(|m| m.contains(fragment))
        {
            return fail(format!("expected a message containing {fragment:?}"));
        }
    }
    if let Some(output) = expected.get("Output") {
        if !contains(&json, output) {
            return fail(format!("expected the output to contain {output}"));
        }
    }
    if let Some(text) = expected["Body"].as_str() {
        if body != text {
            return fail(format!("expected the body {text:?}"));
        }
    }
    if let Some(headers) = expected["Headers"].as_object() {
        for (name, value) in headers {
            let got = answer.headers.get(name).and_then(|v| v.to_str().ok());
            if got != value.as_str() {
                return fail(format!("expected header {name}: {value}, got {got:?}"));
            }
        }
    }
    Ok(())
}
