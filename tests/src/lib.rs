//! The harness for Plinth's workspace-level integration tests (`tests/*.rs`, which are test
//! targets of `plinth-server` so that they can reach the real binary through
//! `env!("CARGO_BIN_EXE_plinth")`).
//!
//! - [`IRIS_WASM`], [`ECHO_WASM`], [`FAULTS_WASM`], [`IRIS_MODEL_DIR`]: absolute paths of the
//!   test plugins and of the iris model, built and exported by `build.rs`; [`WORKSPACE_ROOT`]
//!   the repository root.
//! - [`Config`] / [`Model`]: a config file for `plinth serve` written from code, one
//!   endpoint per call, so each test states exactly what it deploys.
//! - [`Server`]: `plinth serve` on `127.0.0.1:0` in a temporary directory (with a
//!   deployment file, credentials, or neither: [`Options`]); waits for the `listening on`
//!   line, sends requests, keeps the child's stderr for assertions on logs, can be killed
//!   with SIGKILL and restarted on the same data directory, and is killed when dropped.
//! - [`npy_f32`] / [`parse_npy_f32`]: NPY request and response bodies, written and read by
//!   the codec the guest SDK uses (`plinth-codec`).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use reqwest::blocking::Response;
pub use reqwest::StatusCode;

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// How long a server may take to load its endpoints and print `listening on`.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long one HTTP request may take before the test fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One `[[models]]` entry.
#[derive(Clone, Debug)]
pub struct Model {
    name: String,
    component: PathBuf,
    model_data: Option<PathBuf>,
    environment: Vec<(String, String)>,
    memory_mib: Option<u64>,
    timeout_seconds: Option<u64>,
    backend: Option<String>,
}

impl Model {
    /// A model named `name` running the component at `component`, with every limit at its
    /// default.
    pub fn new(name: &str, component: impl AsRef<Path>) -> Self {
        Self {
            name: name.to_owned(),
            component: component.as_ref().to_owned(),
            model_data: None,
            environment: Vec::new(),
            memory_mib: None,
            timeout_seconds: None,
            backend: None,
        }
    }

    /// Mounts `dir` read-only at `/opt/ml/model`.
    pub fn model_data(mut self, dir: impl AsRef<Path>) -> Self {
        self.model_data = Some(dir.as_ref().to_owned());
        self
    }

    /// Adds `key=value` to the guest's environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.environment.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Caps each instance's linear memory.
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_mib = Some(mib);
        self
    }

    /// Caps each invocation's run time.
    pub fn timeout_seconds(mut self, seconds: u64) -> Self {
        self.timeout_seconds = Some(seconds);
        self
    }

    /// Sets the wasi-nn `backend` (`"auto"`, `"tract"`, `"onnxruntime"`).
    pub fn backend(mut self, backend: &str) -> Self {
        self.backend = Some(backend.to_owned());
        self
    }
}

/// One production variant of an endpoint.
#[derive(Clone, Debug)]
pub struct Variant {
    /// `variant_name`.
    pub name: String,
    /// `model_name`: a [`Model`] added to the same [`Config`].
    pub model: String,
    /// `initial_instance_count`.
    pub instances: u32,
    /// `initial_variant_weight`.
    pub weight: f64,
    /// `routing_strategy` (`LEAST_OUTSTANDING_REQUESTS` or `RANDOM`); `None`: not written,
    /// so the server's default applies.
    pub routing_strategy: Option<String>,
    /// `max_queue_length`; `None`: not written, so the server's default applies.
    pub max_queue_length: Option<u64>,
    /// `max_batch_size`; `None`: not written (no batching).
    pub max_batch_size: Option<u64>,
}

impl Variant {
    /// A variant `name` of `model` with `instances` instances and weight 1.
    pub fn new(name: &str, model: &str, instances: u32) -> Self {
        Self {
            name: name.to_owned(),
            model: model.to_owned(),
            instances,
            weight: 1.0,
            routing_strategy: None,
            max_queue_length: None,
            max_batch_size: None,
        }
    }

    /// Sets `initial_variant_weight`.
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// Sets `routing_strategy`, e.g. `"RANDOM"`.
    pub fn routing_strategy(mut self, strategy: &str) -> Self {
        self.routing_strategy = Some(strategy.to_owned());
        self
    }

    /// Sets `max_queue_length`.
    pub fn max_queue_length(mut self, length: u64) -> Self {
        self.max_queue_length = Some(length);
        self
    }

    /// Sets `max_batch_size`.
    pub fn max_batch_size(mut self, size: u64) -> Self {
        self.max_batch_size = Some(size);
        self
    }
}

/// A `plinth serve` config file, built from code.
#[derive(Clone, Debug, Default)]
pub struct Config {
    max_payload_bytes: Option<u64>,
    models: Vec<Model>,
    endpoints: Vec<(String, Vec<Variant>)>,
}

impl Config {
    /// An empty config.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `[server] max_payload_bytes`.
    pub fn max_payload_bytes(mut self, bytes: u64) -> Self {
        self.max_payload_bytes = Some(bytes);
        self
    }

    /// Adds `model` and an endpoint named like it with one variant `AllTraffic` of
    /// `instances` instances: the common case.
    pub fn endpoint(self, model: Model, instances: u32) -> Self {
        let name = model.name.clone();
        self.model(model)
            .endpoint_with_variants(&name, vec![Variant::new("AllTraffic", &name, instances)])
    }

    /// Adds a `[[models]]` entry.
    pub fn model(mut self, model: Model) -> Self {
        self.models.push(model);
        self
    }

    /// Adds an endpoint `name` with config `<name>-config` holding `variants`.
    pub fn endpoint_with_variants(mut self, name: &str, variants: Vec<Variant>) -> Self {
        self.endpoints.push((name.to_owned(), variants));
        self
    }

    /// The config as TOML text.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        if let Some(bytes) = self.max_payload_bytes {
            writeln!(out, "[server]\nmax_payload_bytes = {bytes}\n").unwrap();
        }
        for m in &self.models {
            writeln!(out, "[[models]]").unwrap();
            writeln!(out, "name = {}", toml_string(&m.name)).unwrap();
            writeln!(out, "component = {}", toml_path(&m.component)).unwrap();
            if let Some(dir) = &m.model_data {
                writeln!(out, "model_data = {}", toml_path(dir)).unwrap();
            }
            if !m.environment.is_empty() {
                let pairs: Vec<String> = m
                    .environment
                    .iter()
                    .map(|(k, v)| format!("{} = {}", toml_string(k), toml_string(v)))
                    .collect();
                writeln!(out, "environment = {{ {} }}", pairs.join(", ")).unwrap();
            }
            if let Some(mib) = m.memory_mib {
                writeln!(out, "memory_mib = {mib}").unwrap();
            }
            if let Some(s) = m.timeout_seconds {
                writeln!(out, "timeout_seconds = {s}").unwrap();
            }
            if let Some(backend) = &m.backend {
                writeln!(out, "backend = {}", toml_string(backend)).unwrap();
            }
            out.push('\n');
        }
        for (name, variants) in &self.endpoints {
            writeln!(out, "[[endpoint_configs]]").unwrap();
            writeln!(out, "name = {}", toml_string(&format!("{name}-config"))).unwrap();
            for v in variants {
                writeln!(out, "[[endpoint_configs.production_variants]]").unwrap();
                writeln!(out, "variant_name = {}", toml_string(&v.name)).unwrap();
                writeln!(out, "model_name = {}", toml_string(&v.model)).unwrap();
                writeln!(out, "initial_instance_count = {}", v.instances).unwrap();
                writeln!(out, "initial_variant_weight = {:?}", v.weight).unwrap();
                if let Some(strategy) = &v.routing_strategy {
                    writeln!(out, "routing_strategy = {}", toml_string(strategy)).unwrap();
                }
                if let Some(length) = v.max_queue_length {
                    writeln!(out, "max_queue_length = {length}").unwrap();
                }
                if let Some(size) = v.max_batch_size {
                    writeln!(out, "max_batch_size = {size}").unwrap();
                }
            }
            out.push('\n');
        }
        for (name, _) in &self.endpoints {
            writeln!(out, "[[endpoints]]").unwrap();
            writeln!(out, "name = {}", toml_string(name)).unwrap();
            writeln!(
                out,
                "endpoint_config_name = {}\n",
                toml_string(&format!("{name}-config"))
            )
            .unwrap();
        }
        out
    }
}

/// `s` as a TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => write!(out, "\\u{:04X}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_path(p: &Path) -> String {
    toml_string(&p.display().to_string())
}

/// Why `plinth serve` did not come up.
#[derive(Debug)]
pub struct StartError {
    /// The exit status, if the process exited (`None`: it was killed after [`START_TIMEOUT`]).
    pub status: Option<ExitStatus>,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// How to start `plinth serve`.
#[derive(Clone, Debug)]
pub struct Options {
    /// A deployment file (TOML text) for `--config`; none: serve what the data dir holds.
    pub config: Option<String>,
    /// A credentials file (TOML text) for `--credentials`.
    pub credentials: Option<String>,
    /// `--bind`.
    pub bind: String,
    /// More arguments for `plinth serve`, e.g. `["--onnxruntime", PATH]`.
    pub args: Vec<String>,
    /// Environment changes for the server: `(name, Some(value))` sets, `(name, None)`
    /// removes (e.g. `ORT_DYLIB_PATH`, which the server otherwise inherits).
    pub env: Vec<(String, Option<String>)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            config: None,
            credentials: None,
            bind: "127.0.0.1:0".into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// The ONNX Runtime library the tests may use: `ORT_DYLIB_PATH` (which `tests/run` sets
/// from `.venv`). Without it, `None` after printing that `test` is skipped, except in CI
/// (`CI=true`), where ONNX Runtime must be tested: there it panics.
pub fn onnxruntime_library(test: &str) -> Option<PathBuf> {
    match std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: ORT_DYLIB_PATH is not set; CI must test ONNX Runtime (see tests/run)")
        }
        None => {
            eprintln!("{test}: skipped: set ORT_DYLIB_PATH to test ONNX Runtime (tests/run does)");
            None
        }
    }
}

/// A running `plinth serve`, killed on drop.
pub struct Server {
    child: Child,
    url: String,
    port: u16,
    stderr: Arc<Mutex<String>>,
    client: reqwest::blocking::Client,
    dir: tempfile::TempDir,
    bin: String,
    options: Options,
}

impl Server {
    /// Writes `config` (TOML text) to a fresh temporary directory and runs
    /// `BIN serve --config plinth.toml --bind 127.0.0.1:0 --data-dir data` there; panics with
    /// the server's stderr if it does not print `listening on` within [`START_TIMEOUT`].
    pub fn start(bin: &str, config: &str) -> Server {
        match Self::try_start(bin, config) {
            Ok(server) => server,
            Err(e) => panic!(
                "plinth serve did not start (status {:?}); config:\n{config}\nstderr:\n{}",
                e.status, e.stderr
            ),
        }
    }

    /// Like [`Server::start`], but returns how it failed instead of panicking.
    pub fn try_start(bin: &str, config: &str) -> Result<Server, StartError> {
        Self::try_start_with(
            bin,
            Options {
                config: Some(config.to_string()),
                ..Options::default()
            },
        )
    }

    /// `plinth serve` with `options`; panics with the server's stderr if it does not start.
    pub fn start_with(bin: &str, options: Options) -> Server {
        match Self::try_start_with(bin, options) {
            Ok(server) => server,
            Err(e) => panic!(
                "plinth serve did not start (status {:?}); stderr:\n{}",
                e.status, e.stderr
            ),
        }
    }

    /// Like [`Server::start_with`], but returns how it failed instead of panicking.
    pub fn try_start_with(bin: &str, options: Options) -> Result<Server, StartError> {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        Self::launch(bin, options, dir)
    }

    /// Kill the server with SIGKILL (no shutdown of any kind) and start it again with the
    /// same options on the same data directory.
    pub fn kill_and_restart(self) -> Result<Server, StartError> {
        self.kill_and_restart_with(|_| {})
    }

    /// Like [`Server::kill_and_restart`], with the options changed by `change` (e.g. another
    /// environment).
    pub fn kill_and_restart_with(
        mut self,
        change: impl FnOnce(&mut Options),
    ) -> Result<Server, StartError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let mut options = self.options.clone();
        change(&mut options);
        Self::launch(&self.bin.clone(), options, dir)
    }

    fn launch(bin: &str, options: Options, dir: tempfile::TempDir) -> Result<Server, StartError> {
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .arg("--bind")
            .arg(&options.bind)
            .arg("--data-dir")
            .arg(dir.path().join("data"));
        if let Some(config) = &options.config {
            let config_path = dir.path().join("plinth.toml");
            std::fs::write(&config_path, config).expect("write the config");
            command.arg("--config").arg(&config_path);
        }
        if let Some(credentials) = &options.credentials {
            let path = dir.path().join("credentials.toml");
            std::fs::write(&path, credentials).expect("write the credentials");
            command.arg("--credentials").arg(&path);
        }
        command.args(&options.args);
        for (name, value) in &options.env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let mut child = command
            .current_dir(dir.path())
            .env("RUST_BACKTRACE", "0")
            .env_remove("PLINTH_CONFIG")
            .env_remove("PLINTH_CREDENTIALS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to run {bin}: {e}"));

        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });

        let (tx, rx) = mpsc::channel();
        let out_pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(out_pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.trim().strip_prefix("listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_owned());
                    }
                }
            }
        });

        let url = match rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => url,
            Err(timeout_or_exit) => {
                let status = match timeout_or_exit {
                    mpsc::RecvTimeoutError::Timeout => {
                        let _ = child.kill();
                        let _ = child.wait();
                        None
                    }
                    mpsc::RecvTimeoutError::Disconnected => child.wait().ok(),
                };
                // Let the stderr reader drain the pipe.
                std::thread::sleep(Duration::from_millis(200));
                let stderr = stderr.lock().unwrap().clone();
                return Err(StartError { status, stderr });
            }
        };
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no port in the listening line's URL {url:?}"));
        let client = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap();
        Ok(Server {
            child,
            url: url.trim_end_matches('/').to_owned(),
            port,
            stderr,
            client,
            dir,
            bin: bin.to_string(),
            options,
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding the config (`plinth.toml`) and the data dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The HTTP client the helpers use (with [`REQUEST_TIMEOUT`]).
    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    /// `GET /ping`.
    pub fn ping(&self) -> Response {
        self.client
            .get(format!("{}/ping", self.url))
            .send()
            .expect("GET /ping")
    }

    /// `POST /endpoints/{endpoint}/invocations` with `Content-Type: content_type` (none if
    /// empty), `body`, and `headers` (e.g. `Accept`, `X-Amzn-SageMaker-Custom-Attributes`).
    pub fn invoke(
        &self,
        endpoint: &str,
        content_type: &str,
        body: impl Into<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut request = self
            .client
            .post(format!("{}/endpoints/{endpoint}/invocations", self.url))
            .body(body.into());
        if !content_type.is_empty() {
            request = request.header("Content-Type", content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
            .send()
            .unwrap_or_else(|e| panic!("POST to endpoint {endpoint}: {e}"))
    }

    /// A control-plane call, SageMaker's awsJson1_1 protocol: `POST /` with
    /// `X-Amz-Target: SageMaker.<operation>` and `input` as the JSON body.
    pub fn control(&self, operation: &str, input: &serde_json::Value) -> Response {
        self.client
            .post(format!("{}/", self.url))
            .header("X-Amz-Target", format!("SageMaker.{operation}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .body(input.to_string())
            .send()
            .unwrap_or_else(|e| panic!("POST / ({operation}): {e}"))
    }

    /// Runs control-plane `operation` and returns its output; panics unless it answers 200
    /// with a JSON object.
    #[track_caller]
    pub fn call(&self, operation: &str, input: serde_json::Value) -> serde_json::Value {
        let response = self.control(operation, &input);
        let status = response.status();
        let text = response.text().unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "{operation} {input}: {text}");
        let output: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{operation}: output is not JSON ({e}): {text:?}"));
        assert!(
            output.is_object(),
            "{operation}: output is not an object: {output}"
        );
        output
    }

    /// DescribeEndpoint once the endpoint is neither `Creating` nor `Updating` (polling every
    /// 20 ms for up to [`START_TIMEOUT`]); panics if DescribeEndpoint fails.
    pub fn describe_settled(&self, endpoint: &str) -> serde_json::Value {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let response = self.control(
                "DescribeEndpoint",
                &serde_json::json!({ "EndpointName": endpoint }),
            );
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "DescribeEndpoint {endpoint}"
            );
            let description: serde_json::Value = response.json().expect("DescribeEndpoint JSON");
            let status = description["EndpointStatus"].as_str().unwrap_or_default();
            if status != "Creating" && status != "Updating" {
                return description;
            }
            assert!(
                Instant::now() < deadline,
                "endpoint {endpoint} is still {status}: {description}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET /metrics` as text; panics unless it answers 200.
    pub fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .expect("GET /metrics");
        assert_eq!(response.status(), StatusCode::OK, "GET /metrics");
        response.text().expect("metrics text")
    }

    /// Everything the server has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for stderr to satisfy `pred`; gives the stderr either way.
    pub fn wait_for_stderr(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.stderr();
            if pred(&text) {
                return Ok(text);
            }
            if Instant::now() >= deadline {
                return Err(text);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's output stream as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Panics with both streams unless `output` succeeded; gives stdout.
#[track_caller]
pub fn expect_success(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Panics unless `output` failed with every fragment on stderr; gives stderr.
#[track_caller]
pub fn expect_failure(output: &Output, what: &str, fragments: &[&str]) -> String {
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success(),
        "{what} should fail but exited 0:\nstdout:\n{}\nstderr:\n{stderr}",
        text(&output.stdout)
    );
    for fragment in fragments {
        assert!(
            stderr.contains(fragment),
            "{what}: stderr lacks {fragment:?}:\n{stderr}"
        );
    }
    stderr
}

/// A SageMaker-style error answer, checked for shape: a JSON body whose `__type` equals the
/// `x-amzn-ErrorType` header.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// `__type` (and `x-amzn-ErrorType`), e.g. `ModelError`.
    pub code: String,
    /// `message`.
    pub message: String,
    /// The whole body.
    pub body: serde_json::Value,
}

impl ApiError {
    /// Reads `response` as an error; panics (with the body) if it is not one.
    pub fn from_response(response: Response) -> Self {
        let status = response.status();
        let header = response
            .headers()
            .get("x-amzn-ErrorType")
            .map(|v| v.to_str().unwrap_or("<not text>").to_owned());
        let text = response.text().unwrap_or_default();
        assert!(
            !status.is_success(),
            "expected an error, got {status} with body {text:?}"
        );
        let body: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("error body ({status}) is not JSON ({e}): {text:?}"));
        let code = body["__type"]
            .as_str()
            .unwrap_or_else(|| panic!("error body has no string __type: {body}"))
            .to_owned();
        let message = body["message"]
            .as_str()
            .unwrap_or_else(|| panic!("error body has no string message: {body}"))
            .to_owned();
        let header = header.unwrap_or_else(|| panic!("no x-amzn-ErrorType header; body {body}"));
        // The header may carry a `:<url>` suffix the way AWS services do; the code comes first.
        assert_eq!(
            header.split(':').next().unwrap(),
            code,
            "x-amzn-ErrorType header and __type disagree; body {body}"
        );
        Self {
            status,
            code,
            message,
            body,
        }
    }

    /// `OriginalStatusCode` of a `ModelError`.
    pub fn original_status(&self) -> Option<u64> {
        self.body["OriginalStatusCode"].as_u64()
    }

    /// `OriginalMessage` of a `ModelError`.
    pub fn original_message(&self) -> Option<&str> {
        self.body["OriginalMessage"].as_str()
    }
}

/// A header of `response` as text, if present.
pub fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("header is text").to_owned())
}

/// An NPY (format 1.0) body holding `data` as little-endian `f32` in C order with `shape`:
/// what the guest SDK's codec writes (`plinth_codec::encode_npy`).
pub fn npy_f32(data: &[f32], shape: &[usize]) -> Vec<u8> {
    let tensor = plinth_codec::Tensor::new(data.to_vec(), shape.to_vec())
        .unwrap_or_else(|e| panic!("data does not fit the shape: {e}"));
    plinth_codec::encode_npy(&tensor)
}

/// Parses an NPY body of little-endian `f32` (`<f4`) values: `(data, shape)`, read by the
/// guest SDK's codec (`plinth_codec::decode_npy`). Panics with the reason if it is anything
/// else.
pub fn parse_npy_f32(body: &[u8]) -> (Vec<f32>, Vec<usize>) {
    let (header, _) = plinth_codec::npy::read_header(body)
        .unwrap_or_else(|e| panic!("not an NPY body ({e}): {body:?}"));
    assert_eq!(
        header.descr, "<f4",
        "expected descr '<f4' in the NPY header {header:?}"
    );
    let tensor = plinth_codec::decode_npy(body).unwrap_or_else(|e| panic!("{e}"));
    (tensor.data, tensor.shape)
}
