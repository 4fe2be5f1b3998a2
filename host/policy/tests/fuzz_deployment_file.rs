//! Property-based fuzzing of the deployment file's parsers and validators
//! (`deployment_file::parse` and, for the earlier spelling, `config::parse`), which read a
//! file an operator wrote: no text makes them panic, a file they accept holds only what TOML
//! can say (no `null` standing for a number TOML could not carry), and what
//! `DeploymentFile::to_toml` prints parses back to the same entries.
//!
//! Inputs are arbitrary text, token soups of the file's own table headers, keys and values,
//! and whole documents built as TOML tables from the file's table names and members, with
//! names from a small pool (so references resolve often) and values in and out of range.
//!
//! Each property runs `PLINTH_FUZZ_CASES` cases (100,000 unless set):
//! `PLINTH_FUZZ_CASES=1000000 cargo test -p plinth-policy --test fuzz_deployment_file`.
//! Failures are not persisted to files; proptest prints the minimal input.

use plinth_policy::{config, deployment_file};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use std::path::Path;
use toml::{Table, Value};

/// `PLINTH_FUZZ_CASES` cases (100,000 by default), no failure files in the source tree.
fn config() -> ProptestConfig {
    let cases = std::env::var("PLINTH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const FILE: &str = "/etc/plinth/plinth.toml";

/// Whether `value` holds a `null` anywhere (TOML has none).
fn has_null(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::Array(items) => items.iter().any(has_null),
        serde_json::Value::Object(map) => map.values().any(has_null),
        _ => false,
    }
}

/// Both parsers on `text`; what the current one accepts holds no `null` and prints as TOML
/// that parses back to the same file.
fn check(text: &str) -> Result<(), TestCaseError> {
    let path = Path::new(FILE);
    let _ = config::parse(path, text);
    let Ok(file) = deployment_file::parse(path, text) else {
        return Ok(());
    };
    for call in &file.calls {
        prop_assert!(
            !has_null(&call.input),
            "{} {} holds null, from {text:?}",
            call.operation,
            call.input
        );
    }
    let printed = file
        .to_toml()
        .map_err(|e| TestCaseError::fail(format!("to_toml: {e} for {text:?}")))?;
    let reread = deployment_file::parse(path, &printed)
        .map_err(|e| TestCaseError::fail(format!("{e}\nprinted:\n{printed}\nfrom:\n{text}")))?;
    prop_assert_eq!(
        &reread.calls,
        &file.calls,
        "printed:\n{}\nfrom:\n{}",
        printed,
        text
    );
    prop_assert_eq!(reread.max_payload_bytes, file.max_payload_bytes);
    prop_assert!(!reread.earlier_spelling);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Documents, built from a tape of random numbers: one `Vec<u32>` strategy per case instead of
// a tree of strategies (ten times cheaper to generate in a debug build), which proptest
// still shrinks (a shorter tape, smaller numbers; an exhausted tape reads 0, which picks
// the first, simplest choice: a member left out).
// ---------------------------------------------------------------------------------------

struct Tape {
    numbers: Vec<u32>,
    at: usize,
}

impl Tape {
    fn next(&mut self) -> u32 {
        let n = self.numbers.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        n
    }

    /// A number below `n`.
    fn below(&mut self, n: usize) -> usize {
        self.next() as usize % n.max(1)
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    /// One time in `n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == n - 1
    }

    fn int(&mut self, range: std::ops::RangeInclusive<i64>) -> i64 {
        let width = (range.end() - range.start()) as u64 + 1;
        range.start() + (u64::from(self.next()) % width) as i64
    }

    fn wide_int(&mut self) -> i64 {
        (i64::from(self.next()) << 32 | i64::from(self.next())) - i64::from(self.next())
    }

    fn float(&mut self) -> f64 {
        match self.below(4) {
            0 => f64::from(self.next()) / 1e3,
            1 => f64::from_bits(u64::from(self.next()) << 32 | u64::from(self.next())),
            _ => self.pick(&[
                0.0,
                0.5,
                1.0,
                100.0,
                1e6,
                1e300,
                -0.0,
                -1.0,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
            ]),
        }
    }
}

/// Names from a small pool, so that entries refer to each other often; some invalid.
fn name(t: &mut Tape) -> String {
    const POOL: &[&str] = &["a", "b", "iris", "A", "AllTraffic"];
    const BAD: &[&str] = &[
        "",
        "x_y",
        "-a",
        "a b",
        "\u{e9}",
        "a.b",
        "a-very-long-name-that-goes-on-and-on-and-on-past-sixty-three-characters",
    ];
    if t.one_in(8) {
        t.pick(BAD).to_owned()
    } else {
        t.pick(POOL).to_owned()
    }
}

/// The keys both spellings use, and a few they do not.
fn keys() -> &'static [String] {
    static KEYS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    KEYS.get_or_init(all_keys)
}

fn all_keys() -> Vec<String> {
    let mut keys: Vec<String> = plinth_policy::members::rows()
        .filter(|r| deployment_file::OPERATIONS.contains(&r.operation))
        .map(|r| {
            r.path
                .rsplit(['.', ']'])
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    keys.extend(
        [
            "name",
            "component",
            "model_data",
            "environment",
            "memory_mib",
            "timeout_seconds",
            "backend",
            "production_variants",
            "variant_name",
            "model_name",
            "initial_instance_count",
            "initial_variant_weight",
            "routing_strategy",
            "max_queue_length",
            "max_batch_size",
            "endpoint_config_name",
            "deployment_config",
            "max_payload_bytes",
            "server",
            "models",
            "endpoint_configs",
            "endpoints",
            "alarms",
            "CreateModel",
            "CreateEndpointConfig",
            "CreateAlarm",
            "CreateEndpoint",
            "DeleteModel",
            "LOG",
            "",
        ]
        .map(str::to_owned),
    );
    keys.sort();
    keys.dedup();
    keys
}

/// Any TOML value, nested up to `depth`.
fn any_value(t: &mut Tape, keys: &[String], depth: usize) -> Value {
    match t.below(if depth == 0 { 7 } else { 9 }) {
        0 => Value::Integer(t.wide_int()),
        1 => Value::Integer(t.pick(&[
            0,
            1,
            -1,
            2,
            10,
            100,
            256,
            257,
            1000,
            1001,
            3600,
            4096,
            1 << 40,
        ])),
        2 => Value::Float(t.float()),
        3 => Value::Boolean(t.one_in(2)),
        4 => Value::String(name(t)),
        5 => Value::String(
            t.pick(&[
                "SingleModel",
                "RANDOM",
                "Tract",
                "CANARY",
                "CAPACITY_PERCENT",
                "s3://b/k",
                "../m",
            ])
            .to_owned(),
        ),
        6 => Value::Datetime("1979-05-27T07:32:00Z".parse().expect("a datetime")),
        7 => Value::Array(
            (0..t.below(3))
                .map(|_| any_value(t, keys, depth - 1))
                .collect(),
        ),
        _ => Value::Table(
            (0..t.below(3))
                .map(|_| (t.pick(keys), any_value(t, keys, depth - 1)))
                .collect(),
        ),
    }
}

/// Builds a table member by member: each left out, given a good value, or any value.
struct Builder<'t, 'k> {
    t: &'t mut Tape,
    keys: &'k [String],
    table: Table,
}

impl<'t, 'k> Builder<'t, 'k> {
    fn new(t: &'t mut Tape, keys: &'k [String]) -> Self {
        Self {
            t,
            keys,
            table: Table::new(),
        }
    }

    fn field(&mut self, key: &str, good: impl FnOnce(&mut Tape, &[String]) -> Value) -> &mut Self {
        match self.t.below(12) {
            0 | 1 => {}
            11 => {
                let v = any_value(self.t, self.keys, 2);
                self.table.insert(key.to_owned(), v);
            }
            _ => {
                let v = good(self.t, self.keys);
                self.table.insert(key.to_owned(), v);
            }
        }
        self
    }

    fn done(&mut self) -> Value {
        if self.t.one_in(20) {
            let key = self.t.pick(self.keys);
            let v = any_value(self.t, self.keys, 1);
            self.table.insert(key, v);
        }
        Value::Table(std::mem::take(&mut self.table))
    }
}

fn int(range: std::ops::RangeInclusive<i64>) -> impl FnOnce(&mut Tape, &[String]) -> Value {
    move |t, _| {
        Value::Integer(if t.one_in(5) {
            t.int(-2..=5000)
        } else {
            t.int(range)
        })
    }
}

fn string(values: &'static [&'static str]) -> impl FnOnce(&mut Tape, &[String]) -> Value {
    move |t, _| Value::String(t.pick(values).to_owned())
}

fn name_value(t: &mut Tape, _: &[String]) -> Value {
    Value::String(name(t))
}

fn boolean(t: &mut Tape, _: &[String]) -> Value {
    Value::Boolean(t.one_in(2))
}

fn list(max: usize, item: Generate) -> impl FnOnce(&mut Tape, &[String]) -> Value {
    move |t, keys| Value::Array((0..t.below(max + 1)).map(|_| item(t, keys)).collect())
}

// ---------------------------------------------------------------------------------------
// Documents in the API's spelling.
// ---------------------------------------------------------------------------------------

fn environment(t: &mut Tape, _: &[String]) -> Value {
    Value::Table(
        (0..t.below(3))
            .map(|_| {
                (
                    t.pick(&["LOG", "A_1", "BAD-KEY", ""]).to_owned(),
                    Value::String(t.pick(&["", "1", "x"]).to_owned()),
                )
            })
            .collect(),
    )
}

fn create_model(t: &mut Tape, keys: &[String]) -> Value {
    Builder::new(t, keys)
        .field("ModelName", name_value)
        .field("PrimaryContainer", |t, keys| {
            Builder::new(t, keys)
                .field(
                    "Image",
                    string(&["iris.wasm", "/opt/c.wasm", "s3://b/c.wasm", ""]),
                )
                .field("ModelDataUrl", string(&["model", "/m", "s3://b/m.tar.gz"]))
                .field("Mode", string(&["SingleModel", "MultiModel"]))
                .field("Environment", environment)
                .done()
        })
        .field("PlinthLimits", |t, keys| {
            Builder::new(t, keys)
                .field("MemorySizeInMB", int(1..=4096))
                .field("InvocationTimeoutInSeconds", int(1..=3600))
                .field("MaxResponseSizeInMB", int(1..=1024))
                .field("AllowGraphsFromBytes", boolean)
                .done()
        })
        .field(
            "PlinthBackend",
            string(&["Auto", "Tract", "OnnxRuntime", "cuda"]),
        )
        .field("EnableNetworkIsolation", |_, _| Value::Boolean(true))
        .done()
}

fn variant(t: &mut Tape, keys: &[String]) -> Value {
    Builder::new(t, keys)
        .field("VariantName", name_value)
        .field("ModelName", name_value)
        .field("InitialInstanceCount", int(1..=1000))
        .field("InitialVariantWeight", |t, _| match t.below(3) {
            0 => Value::Integer(t.int(0..=10)),
            _ => Value::Float(t.float()),
        })
        .field("RoutingConfig", |t, keys| {
            Builder::new(t, keys)
                .field(
                    "RoutingStrategy",
                    string(&["LEAST_OUTSTANDING_REQUESTS", "RANDOM", "PREFIX"]),
                )
                .done()
        })
        .field("PlinthMaxQueueLength", int(0..=1_000_000))
        .field("PlinthMaxBatchSize", int(1..=256))
        .field("ContainerStartupHealthCheckTimeoutInSeconds", int(1..=3600))
        .field("PlinthSamplingPercentage", |t, _| {
            Value::Float(t.float() % 101.0)
        })
        .done()
}

fn create_endpoint_config(t: &mut Tape, keys: &[String]) -> Value {
    Builder::new(t, keys)
        .field("EndpointConfigName", name_value)
        .field("ProductionVariants", list(2, variant))
        .field("ShadowProductionVariants", list(1, variant))
        .done()
}

fn capacity(t: &mut Tape, keys: &[String]) -> Value {
    Builder::new(t, keys)
        .field("Type", string(&["CAPACITY_PERCENT", "INSTANCE_COUNT"]))
        .field("Value", int(1..=100))
        .done()
}

fn alarm_name(t: &mut Tape, keys: &[String]) -> Value {
    Builder::new(t, keys).field("AlarmName", name_value).done()
}

fn deployment_config(t: &mut Tape, keys: &[String]) -> Value {
    Builder::new(t, keys)
        .field("BlueGreenUpdatePolicy", |t, keys| {
            Builder::new(t, keys)
                .field("TrafficRoutingConfiguration", |t, keys| {
                    Builder::new(t, keys)
                        .field("Type", string(&["ALL_AT_ONCE", "CANARY", "LINEAR"]))
                        .field("WaitIntervalInSeconds", int(0..=3600))
                        .field("CanarySize", capacity)
                        .field("LinearStepSize", capacity)
                        .done()
                })
                .field("TerminationWaitInSeconds", int(0..=3600))
                .field("MaximumExecutionTimeoutInSeconds", int(600..=28800))
                .done()
        })
        .field("RollingUpdatePolicy", |t, keys| {
            Builder::new(t, keys)
                .field("MaximumBatchSize", capacity)
                .field("WaitIntervalInSeconds", int(0..=3600))
                .field("RollbackMaximumBatchSize", capacity)
                .done()
        })
        .field("AutoRollbackConfiguration", |t, keys| {
            Builder::new(t, keys)
                .field("Alarms", list(2, alarm_name))
                .done()
        })
        .done()
}

fn create_endpoint(t: &mut Tape, keys: &[String]) -> Value {
    Builder::new(t, keys)
        .field("EndpointName", name_value)
        .field("EndpointConfigName", name_value)
        .field("DeploymentConfig", deployment_config)
        .done()
}

fn create_alarm(t: &mut Tape, keys: &[String]) -> Value {
    Builder::new(t, keys)
        .field("AlarmName", name_value)
        .field("EndpointName", name_value)
        .field("Scope", string(&["NewFleet", "Endpoint"]))
        .field(
            "MetricName",
            string(&["Invocation5XXErrors", "ModelLatency"]),
        )
        .field("Statistic", string(&["Average", "Sum"]))
        .field(
            "ComparisonOperator",
            string(&["GreaterThanThreshold", "Bigger"]),
        )
        .field("Threshold", |t, _| match t.below(2) {
            0 => Value::Integer(t.wide_int()),
            _ => Value::Float(t.float()),
        })
        .field("Period", int(1..=60))
        .field("EvaluationPeriods", int(1..=10))
        .done()
}

/// Builds one value from the tape.
type Generate = fn(&mut Tape, &[String]) -> Value;

/// Lists of entries under their keys, those with none left out.
fn document(t: &mut Tape, keys: &[String], lists: &[(&str, usize, Generate)]) -> Table {
    let mut doc = Table::new();
    for &(key, max, item) in lists {
        if let Value::Array(entries) = list(max, item)(t, keys) {
            if !entries.is_empty() {
                doc.insert(key.to_owned(), Value::Array(entries));
            }
        }
    }
    doc
}

/// A file in the API's spelling: `[server]` and lists of each operation's entries.
fn api_document(t: &mut Tape, keys: &[String]) -> Table {
    let mut doc = document(
        t,
        keys,
        &[
            ("CreateModel", 2, create_model),
            ("CreateEndpointConfig", 2, create_endpoint_config),
            ("CreateAlarm", 1, create_alarm),
            ("CreateEndpoint", 2, create_endpoint),
        ],
    );
    if t.one_in(4) {
        let server = Builder::new(t, keys)
            .field("max_payload_bytes", int(0..=1 << 30))
            .done();
        doc.insert("server".into(), server);
    }
    doc
}

// ---------------------------------------------------------------------------------------
// Documents in the earlier spelling.
// ---------------------------------------------------------------------------------------

fn earlier_model(t: &mut Tape, keys: &[String]) -> Value {
    Builder::new(t, keys)
        .field("name", name_value)
        .field("component", string(&["iris.wasm", "/c.wasm"]))
        .field("model_data", string(&["model"]))
        .field("environment", environment)
        .field("memory_mib", int(1..=4096))
        .field("timeout_seconds", int(1..=3600))
        .field("backend", string(&["auto", "tract", "onnxruntime", "cuda"]))
        .done()
}

fn earlier_variant(t: &mut Tape, keys: &[String]) -> Value {
    Builder::new(t, keys)
        .field("variant_name", name_value)
        .field("model_name", name_value)
        .field("initial_instance_count", int(1..=1000))
        .field("initial_variant_weight", |t, _| Value::Float(t.float()))
        .field(
            "routing_strategy",
            string(&["LEAST_OUTSTANDING_REQUESTS", "RANDOM"]),
        )
        .field("max_queue_length", int(0..=1_000_000))
        .field("max_batch_size", int(1..=256))
        .done()
}

fn earlier_config(t: &mut Tape, keys: &[String]) -> Value {
    Builder::new(t, keys)
        .field("name", name_value)
        .field("production_variants", list(2, earlier_variant))
        .done()
}

fn earlier_endpoint(t: &mut Tape, keys: &[String]) -> Value {
    Builder::new(t, keys)
        .field("name", name_value)
        .field("endpoint_config_name", name_value)
        .field("deployment_config", deployment_config)
        .done()
}

fn earlier_document(t: &mut Tape, keys: &[String]) -> Table {
    document(
        t,
        keys,
        &[
            ("models", 2, earlier_model),
            ("endpoint_configs", 2, earlier_config),
            ("endpoints", 2, earlier_endpoint),
            ("alarms", 1, create_alarm),
        ],
    )
}

// ---------------------------------------------------------------------------------------
// Token soups.
// ---------------------------------------------------------------------------------------

fn soup(t: &mut Tape, keys: &[String]) -> String {
    const HEADERS: &[&str] = &[
        "[server]",
        "[[server]]",
        "[[CreateModel]]",
        "[CreateModel]",
        "[CreateModel.PrimaryContainer]",
        "[[CreateEndpointConfig]]",
        "[[CreateEndpointConfig.ProductionVariants]]",
        "[[CreateAlarm]]",
        "[[CreateEndpoint]]",
        "[CreateEndpoint.DeploymentConfig.BlueGreenUpdatePolicy]",
        "[[models]]",
        "[[endpoint_configs]]",
        "[[endpoint_configs.production_variants]]",
        "[[endpoints]]",
        "[[alarms]]",
        "[[DeleteModel]]",
    ];
    const RAW: &[&str] = &[
        "nan",
        "-inf",
        "+inf",
        "0x10",
        "1_000",
        "1e400",
        "\"\"\"a\"\"\"",
        "'lit'",
        "[",
        "{",
        "{ Image = \"c.wasm\" }",
        "[{ VariantName = \"A\", ModelName = \"a\" }]",
        "{ AlarmName = \"a\" }",
    ];
    let mut lines = Vec::new();
    for _ in 0..t.below(12) {
        lines.push(match t.below(6) {
            0 => t.pick(HEADERS).to_owned(),
            5 => (0..t.below(12))
                .map(|_| char::from_u32(t.next() % 0x3000).unwrap_or('?'))
                .collect(),
            _ => {
                let key = t.pick(keys);
                let key = if key.is_empty() {
                    "\"\"".to_owned()
                } else {
                    key
                };
                let value = if t.one_in(3) {
                    t.pick(RAW).to_owned()
                } else {
                    any_value(t, keys, 2).to_string()
                };
                format!("{key} = {value}")
            }
        });
    }
    lines.join("\n")
}

fn tape() -> impl Strategy<Value = Tape> {
    prop::collection::vec(any::<u32>(), 0..400).prop_map(|numbers| Tape { numbers, at: 0 })
}

impl std::fmt::Debug for Tape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tape({:?})", self.numbers)
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any text.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,64}|[\\[\\]{}=\"'.,a-zA-Z0-9 \n#]{0,64}") {
        check(&text)?;
    }

    /// Lines of the file's own headers, keys and values, in any order.
    #[test]
    fn token_soup_never_panics(mut t in tape()) {
        let text = soup(&mut t, keys());
        check(&text)?;
    }

    /// Whole documents in the API's spelling, printed by `toml`: accepted ones print back
    /// to the same entries.
    #[test]
    fn api_documents_round_trip(mut t in tape()) {
        let doc = api_document(&mut t, keys());
        let text = toml::to_string(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(&text)?;
    }

    /// Whole documents in the earlier spelling: accepted ones read as API inputs that print
    /// in the API's spelling and parse back the same.
    #[test]
    fn earlier_documents_round_trip(mut t in tape()) {
        let doc = earlier_document(&mut t, keys());
        let text = toml::to_string(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(&text)?;
    }
}
