//! The harness for Plinth's workspace-level integration tests (`tests/*.rs`, which are test
//! targets of `plinth-server` so that they can reach the real binary through
//! `env!("CARGO_BIN_EXE_plinth")`).
//!
//! - [`IRIS_WASM`], [`IRIS_SIMPLE_WASM`], [`ECHO_WASM`], [`FAULTS_WASM`], [`HOSTILE_WASM`], [`IRIS_MODEL_DIR`]:
//!   absolute paths of the test plugins and of the iris model, built and exported by
//!   `build.rs`; [`WORKSPACE_ROOT`] the repository root.
//! - [`Config`] / [`Model`]: a config file for `plinth serve` written from code, one
//!   endpoint per call, so each test states exactly what it deploys.
//! - [`Server`]: `plinth serve` on `127.0.0.1:0` in a temporary directory (with a
//!   deployment file, credentials, or neither: [`Options`]); waits for the `listening on`
//!   line, sends requests, keeps the child's stderr for assertions on logs, can be killed
//!   with SIGKILL and restarted on the same data directory, and is killed when dropped.
//!   Its helpers are the one copy the suites share: [`Server::call`] and [`Server::refused`]
//!   (a 400 with its error code and message fragments), [`Server::create_model`],
//!   [`Server::create_config`], [`Server::create_endpoint_settled`],
//!   [`Server::describe_endpoint`], waiting for an endpoint
//!   ([`Server::describe_settled`], [`Server::wait_in_service`],
//!   [`Server::wait_for_endpoint`]) or a busy instance ([`Server::wait_busy`]),
//!   [`Server::invoked_variants`], [`Server::metrics`], and the process's [`Server::pid`] and
//!   resident memory ([`Server::rss_bytes`]).
//! - [`ApiError`]: a SageMaker error answer, checked for shape.
//! - [`metrics`]: samples of the Prometheus text by name and labels.
//! - [`json`]: names in a list, an item of a list by name, and [`json::contains`] (also the
//!   fixture cases' matcher).
//! - [`run_cli`], [`expect_success`], [`expect_failure`], [`credentials_toml`]: the `plinth`
//!   command line as a subprocess, hermetic from the caller's AWS settings.
//! - [`onnxruntime_library`], [`venv_python`]: what optional tests need, [`skipped`] locally
//!   without it and failed under `CI=true`.
//! - [`epoch_now`], [`assert_binomial`], [`SETOSA_ROW`] and the header names
//!   ([`CUSTOM_ATTRIBUTES`], [`TARGET_VARIANT`], [`INVOKED_VARIANT`], [`ENDPOINT_CONFIG`]).
//! - [`npy_f32`] / [`parse_npy_f32`]: NPY request and response bodies, written and read by
//!   the codec the guest SDK uses (`plinth-codec`).
//! - [`s3::S3`]: an S3-compatible server (moto's, from `.venv`) with authentication
//!   enforced, one per test binary, and the environment that points `plinth serve` at it.

pub mod json;
pub mod metrics;
pub mod onnx;
pub mod s3;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub use reqwest::blocking::Response;
pub use reqwest::StatusCode;

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// How long a server may take to load its endpoints and print `listening on`.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long one HTTP request may take before the test fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// An iris row (CSV) whose species is setosa; the faults plugin answers it with its
/// `FAULT_REPLY` (it names no fault).
pub const SETOSA_ROW: &str = "5.1,3.5,1.4,0.2";

/// The request header the echo plugin reads its probes from (`env=NAME`, `ls=PATH`,
/// `read=PATH`) and the faults plugin the fault to raise.
pub const CUSTOM_ATTRIBUTES: &str = "X-Amzn-SageMaker-Custom-Attributes";

/// The request header naming the production variant to invoke.
pub const TARGET_VARIANT: &str = "X-Amzn-SageMaker-Target-Variant";

/// The response header naming the production variant that answered.
pub const INVOKED_VARIANT: &str = "x-amzn-invoked-production-variant";

/// The response header naming the endpoint config of the fleet that answered.
pub const ENDPOINT_CONFIG: &str = "x-plinth-endpoint-config";

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

    /// A model named `name` running the iris plugin on the iris model directory.
    pub fn iris(name: &str) -> Self {
        Self::new(name, IRIS_WASM).model_data(IRIS_MODEL_DIR)
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
    /// A command the server runs under (e.g. `["strace", "-f", "-o", FILE]`): the server is
    /// then its argument, and [`Server::pid`] is the wrapper's.
    pub wrapper: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            config: None,
            credentials: None,
            bind: "127.0.0.1:0".into(),
            args: Vec::new(),
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }
}

/// Application Auto Scaling's operations, which `X-Amz-Target` names with
/// `AnyScaleFrontendService.` rather than `SageMaker.`.
pub const AUTOSCALING_OPERATIONS: [&str; 7] = [
    "RegisterScalableTarget",
    "DeregisterScalableTarget",
    "DescribeScalableTargets",
    "PutScalingPolicy",
    "DescribeScalingPolicies",
    "DeleteScalingPolicy",
    "DescribeScalingActivities",
];

/// CloudWatch's operations (`X-Amz-Target` prefix `GraniteServiceVersion20100801.`).
pub const CLOUDWATCH_OPERATIONS: [&str; 11] = [
    "GetMetricStatistics",
    "GetMetricData",
    "ListMetrics",
    "PutMetricAlarm",
    "DescribeAlarms",
    "DescribeAlarmsForMetric",
    "DeleteAlarms",
    "SetAlarmState",
    "DescribeAlarmHistory",
    "EnableAlarmActions",
    "DisableAlarmActions",
];

/// `X-Amz-Target` for a control-plane operation.
pub fn target(operation: &str) -> String {
    if AUTOSCALING_OPERATIONS.contains(&operation) {
        format!("AnyScaleFrontendService.{operation}")
    } else if CLOUDWATCH_OPERATIONS.contains(&operation) {
        format!("GraniteServiceVersion20100801.{operation}")
    } else {
        format!("SageMaker.{operation}")
    }
}

/// The ONNX Runtime library the tests may use: `ORT_DYLIB_PATH` (which `tests/run` sets
/// from `.venv`); without it, [`skipped`].
pub fn onnxruntime_library(test: &str) -> Option<PathBuf> {
    match std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None => skipped(
            test,
            "ORT_DYLIB_PATH is not set",
            "set it to test ONNX Runtime (tests/run does)",
        ),
    }
}

/// For a boto3 script against S3: the venv's interpreter ([`venv_python`]), the shared S3
/// test server with `bucket` created on it, and a server of `bin` that reaches it; `None`
/// (skipped, with a note) when the venv or the S3 server is missing.
pub fn boto3_with_s3(
    bin: &str,
    test: &str,
    bucket: &str,
) -> Option<(PathBuf, &'static s3::S3, Server)> {
    let python = venv_python(test)?;
    let s3 = s3::S3::shared(test)?;
    s3.create_bucket(bucket);
    let server = Server::start_with(
        bin,
        Options {
            env: s3.server_env(),
            ..Options::default()
        },
    );
    Some((python, s3, server))
}

/// The interpreter of the repository's `.venv` (with boto3; `tests/run` and `.ci/run` make
/// it); without it, [`skipped`].
pub fn venv_python(test: &str) -> Option<PathBuf> {
    let python = Path::new(WORKSPACE_ROOT).join(".venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    skipped(
        test,
        &format!("{} is missing", python.display()),
        "run `tests/run` (or `.ci/run`) to create the venv with boto3",
    )
}

/// What a test does when something optional it needs is `missing`: locally `None`, after
/// printing that `test` is skipped and the `fix`; in CI (`CI=true`), where every test must
/// run, a panic.
pub fn skipped<T>(test: &str, missing: &str, fix: &str) -> Option<T> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {missing}; CI must run this test: {fix}");
    }
    eprintln!("SKIPPED {test}: {missing}; {fix} (under CI=true this test fails instead)");
    None
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
        kill_all(&mut self.child);
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let mut options = self.options.clone();
        change(&mut options);
        Self::launch(&self.bin.clone(), options, dir)
    }

    fn launch(bin: &str, options: Options, dir: tempfile::TempDir) -> Result<Server, StartError> {
        let mut command = match options.wrapper.split_first() {
            Some((wrapper, args)) => {
                let mut command = Command::new(wrapper);
                command.args(args).arg(bin);
                command
            }
            None => Command::new(bin),
        };
        command
            .arg("serve")
            .arg("--bind")
            .arg(&options.bind)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            // Models come from the repository (plugins, the iris model) and from the files
            // tests make in temporary directories.
            .arg("--artifact-root")
            .arg(WORKSPACE_ROOT)
            .arg("--artifact-root")
            .arg(std::env::temp_dir());
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
        // Its own process group, so that the server under a wrapper is killed with it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
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

        let stderr = collect_output(child.stderr.take().unwrap());

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
                        kill_all(&mut child);
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

    /// A control-plane call, the awsJson1_1 protocol: `POST /` with `X-Amz-Target:
    /// SageMaker.<operation>` (or `AnyScaleFrontendService.<operation>` for one of
    /// [`AUTOSCALING_OPERATIONS`]) and `input` as the JSON body.
    pub fn control(&self, operation: &str, input: &serde_json::Value) -> Response {
        self.client
            .post(format!("{}/", self.url))
            .header("X-Amz-Target", target(operation))
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

    /// Runs control-plane `operation`, which must be refused with a 400 whose error is `code`
    /// and whose message contains every one of `fragments`; gives the error.
    #[track_caller]
    pub fn refused(
        &self,
        operation: &str,
        input: serde_json::Value,
        code: &str,
        fragments: &[&str],
    ) -> ApiError {
        let e = ApiError::from_response(self.control(operation, &input));
        assert_eq!(
            (e.status, e.code.as_str()),
            (StatusCode::BAD_REQUEST, code),
            "{operation} {input}: {}",
            e.body
        );
        for fragment in fragments {
            assert!(
                e.message.contains(fragment),
                "{operation} {input}: the message lacks {fragment:?}: {:?}",
                e.message
            );
        }
        e
    }

    /// CreateModel `name` running the component at `image` (a path) with `environment` (a
    /// JSON object, `{}` for none); panics unless it succeeds.
    #[track_caller]
    pub fn create_model(&self, name: &str, image: &str, environment: serde_json::Value) {
        self.call(
            "CreateModel",
            serde_json::json!({
                "ModelName": name,
                "PrimaryContainer": { "Image": image, "Environment": environment },
            }),
        );
    }

    /// CreateEndpointConfig `name` with one production variant per `(variant, model,
    /// instances)`, each of the default weight (1); panics unless it succeeds.
    #[track_caller]
    pub fn create_config(&self, name: &str, variants: &[(&str, &str, u32)]) {
        let variants: Vec<serde_json::Value> = variants
            .iter()
            .map(|(variant, model, instances)| {
                serde_json::json!({
                    "VariantName": variant,
                    "ModelName": model,
                    "InitialInstanceCount": instances,
                })
            })
            .collect();
        self.call(
            "CreateEndpointConfig",
            serde_json::json!({ "EndpointConfigName": name, "ProductionVariants": variants }),
        );
    }

    /// DescribeEndpoint; panics unless it answers 200.
    #[track_caller]
    pub fn describe_endpoint(&self, endpoint: &str) -> serde_json::Value {
        self.call(
            "DescribeEndpoint",
            serde_json::json!({ "EndpointName": endpoint }),
        )
    }

    /// CreateEndpoint `endpoint` on `config`, then its description once it settles
    /// ([`Server::describe_settled`]: `InService` or `Failed`).
    #[track_caller]
    pub fn create_endpoint_settled(&self, endpoint: &str, config: &str) -> serde_json::Value {
        self.call(
            "CreateEndpoint",
            serde_json::json!({ "EndpointName": endpoint, "EndpointConfigName": config }),
        );
        self.describe_settled(endpoint)
    }

    /// DescribeEndpoint, polled every 20 ms, once `done` holds for the description; panics
    /// with the last description if that takes longer than `timeout`, or if DescribeEndpoint
    /// fails.
    #[track_caller]
    pub fn wait_for_endpoint(
        &self,
        endpoint: &str,
        timeout: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let description = self.describe_endpoint(endpoint);
            if done(&description) {
                return description;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting for endpoint {endpoint} after {timeout:?}: {description}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// DescribeEndpoint once the endpoint is neither `Creating` nor `Updating` (for up to
    /// [`START_TIMEOUT`]): `InService`, `Failed`, or `RollingBack`.
    #[track_caller]
    pub fn describe_settled(&self, endpoint: &str) -> serde_json::Value {
        self.wait_for_endpoint(endpoint, START_TIMEOUT, |d| {
            !matches!(
                d["EndpointStatus"].as_str(),
                Some("Creating") | Some("Updating")
            )
        })
    }

    /// DescribeEndpoint once the endpoint is `InService`, waiting while it is `Creating`,
    /// `Updating` or `RollingBack` for up to `timeout`; panics at once on any other status
    /// (`Failed` stays until a new update).
    #[track_caller]
    pub fn wait_in_service(&self, endpoint: &str, timeout: Duration) -> serde_json::Value {
        self.wait_for_endpoint(endpoint, timeout, |d| match d["EndpointStatus"].as_str() {
            Some("InService") => true,
            Some("Creating") | Some("Updating") | Some("RollingBack") => false,
            other => panic!("endpoint {endpoint} is {other:?}, not on its way to InService: {d}"),
        })
    }

    /// Waits up to `timeout` until variant `variant` of `endpoint` has a busy instance
    /// (`plinth_variant_instances_busy` at least 1).
    #[track_caller]
    pub fn wait_busy(&self, endpoint: &str, variant: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let labels = metrics::of_variant(endpoint, variant);
        while metrics::counter(&self.metrics(), "plinth_variant_instances_busy", &labels) < 1.0 {
            assert!(
                Instant::now() < deadline,
                "no instance of {endpoint}/{variant} became busy within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `body` to `endpoint` `n` times, one after the other, each of which must answer
    /// 200 with the invoked-variant header; how many each variant answered.
    #[track_caller]
    pub fn invoked_variants(
        &self,
        endpoint: &str,
        content_type: &str,
        body: &str,
        n: usize,
    ) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let response = self.invoke(endpoint, content_type, body, &[]);
            let status = response.status();
            let variant = header(&response, INVOKED_VARIANT);
            let text = response.text().unwrap_or_default();
            assert_eq!(status, StatusCode::OK, "{endpoint}: {text}");
            let variant =
                variant.unwrap_or_else(|| panic!("{endpoint}: no {INVOKED_VARIANT} header"));
            *seen.entry(variant).or_default() += 1;
        }
        seen
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

    /// Run `tests/python/<script>` with `python` against this server (`PLINTH_URL`), with
    /// `env` added and the developer's own AWS settings removed; panics with the script's
    /// output and the server's stderr unless it exits 0.
    pub fn run_python(&self, python: &Path, script: &str, env: &[(&str, &str)]) {
        let script = Path::new(WORKSPACE_ROOT).join("tests/python").join(script);
        let output = Command::new(python)
            .arg(&script)
            .env("PLINTH_URL", self.url())
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
            self.stderr()
        );
        print!("{stdout}");
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

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory in bytes (`VmRSS` of `/proc/<pid>/status`, Linux only);
    /// panics if the process is gone or the line is missing.
    pub fn rss_bytes(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {path}: {e} (has the server exited?)"));
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS line in kB in {path}:\n{status}"));
        kib << 10
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        kill_all(&mut self.child);
    }
}

/// Kill `child` and everything in its process group (it leads one: a wrapper such as
/// `strace` and the server under it, which killing the wrapper alone would leave running),
/// and reap it.
fn kill_all(child: &mut std::process::Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals the process group the child leads;
        // no memory is touched.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `bin ARGS` (the `plinth` binary) to completion, with none of the caller's AWS or
/// Plinth settings (`AWS_*` keys and region, `PLINTH_ENDPOINT_URL`, `PLINTH_CONFIG`,
/// `PLINTH_CREDENTIALS`), signing with `credentials` (access key id, secret) if given.
pub fn run_cli(bin: &str, args: &[&str], credentials: Option<(&str, &str)>) -> Output {
    let mut command = Command::new(bin);
    command.args(args).env("RUST_BACKTRACE", "0");
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "PLINTH_ENDPOINT_URL",
        "PLINTH_CONFIG",
        "PLINTH_CREDENTIALS",
    ] {
        command.env_remove(var);
    }
    if let Some((id, secret)) = credentials {
        command
            .env("AWS_ACCESS_KEY_ID", id)
            .env("AWS_SECRET_ACCESS_KEY", secret);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("failed to run {bin}: {e}"))
}

/// Everything `pipe` (a child's stderr) writes, gathered as text by a thread of its own
/// until the pipe closes.
pub(crate) fn collect_output(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

/// `len` bytes that do not compress (xorshift from a fixed seed): model weights for tests
/// that need a large artifact.
pub fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A credentials file (`--credentials`) with one key pair.
pub fn credentials_toml(access_key_id: &str, secret_access_key: &str) -> String {
    format!(
        "[[credentials]]\naccess_key_id = {}\nsecret_access_key = {}\n",
        toml_string(access_key_id),
        toml_string(secret_access_key)
    )
}

/// Seconds since the Unix epoch, as SageMaker's timestamps and `EventTime` count them.
pub fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// `count` of `n` is consistent with a binomial(`n`, `p`): within 5 standard deviations of
/// the mean (and exact when `p` is 0 or 1). A false alarm is about one in 1.7 million.
#[track_caller]
pub fn assert_binomial(count: usize, n: usize, p: f64, what: &str) {
    assert!(n > 0, "{what}: no requests to measure");
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let deviation = (count as f64 - mean).abs();
    assert!(
        deviation <= 5.0 * sd + 1e-9,
        "{what}: {count} of {n} ({:.1}%) where {:.0}% was planned (mean {mean:.1}, sd {sd:.2})",
        100.0 * count as f64 / n as f64,
        100.0 * p
    );
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
