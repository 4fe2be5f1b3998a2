//! The deployment file in its earlier spelling (`[[models]]`, `[[endpoint_configs]]`,
//! `[[endpoints]]`, `[[alarms]]`, snake_case keys), still read by
//! [`deployment_file`](super::deployment_file), which turns it into API inputs; and what both spellings and
//! the server share: the resolved [`Model`] and [`Variant`] the runtime builds, [`Backend`],
//! and the limits' defaults. Parsing is strict (unknown keys are errors) and every error
//! names the file, the key and what to do about it.
//!
//! The earlier spelling is frozen: settings added after it (`PlinthLimits.MaxResponseSizeInMB`
//! and `AllowGraphsFromBytes`, a variant's `ContainerStartupHealthCheckTimeoutInSeconds`) have
//! no key here and take their defaults; a file that needs them uses the API's spelling
//! (`plinth validate --print` rewrites a file in it).

use crate::model_limits::{self, ModelField};
use crate::names;
use crate::routing::RoutingStrategy;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// The largest number of production variants an endpoint config may hold (SageMaker's).
pub const MAX_VARIANTS: usize = 10;
/// The default request payload limit: 6 MiB, SageMaker's.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// The default invocation deadline in seconds: 60, SageMaker's.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 60;
/// The default bound on requests waiting for a busy variant.
pub const DEFAULT_MAX_QUEUE_LENGTH: usize = 128;
/// The largest bound a variant may ask for (`PlinthMaxQueueLength`).
pub const MAX_QUEUE_LENGTH: usize = 1_000_000;
/// Default batch size of a variant: 1, no batching.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 1;
/// The largest batch a variant may ask for.
pub const MAX_BATCH_SIZE: usize = 256;
/// The default memory cap per instance in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// The default cap on a response body in MiB: 6, SageMaker's real-time cap
/// (`PlinthLimits.MaxResponseSizeInMB`; its range is [`model_limits::MAX_RESPONSE_MIB`]).
pub const DEFAULT_MAX_RESPONSE_MIB: u64 = 6;
/// The default time an instance may take to start (instantiating the component and its
/// `model_fn`), in seconds: 60 (`ContainerStartupHealthCheckTimeoutInSeconds`).
pub const DEFAULT_STARTUP_TIMEOUT_SECONDS: u64 = 60;
/// The startup timeouts a variant may ask for, in seconds. SageMaker allows 60-3600; a
/// Plinth instance starts in milliseconds, so Plinth allows down to 1 (tests use short ones).
pub const STARTUP_TIMEOUT_SECONDS: RangeInclusive<u64> = 1..=3600;

/// The file as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeploymentFile {
    /// Server-wide settings.
    #[serde(default)]
    pub server: ServerSection,
    /// `[[models]]`.
    #[serde(default)]
    pub models: Vec<ModelSection>,
    /// `[[endpoint_configs]]`.
    #[serde(default)]
    pub endpoint_configs: Vec<EndpointConfigSection>,
    /// `[[endpoints]]`.
    #[serde(default)]
    pub endpoints: Vec<EndpointSection>,
    /// `[[alarms]]`: CreateAlarm's input, with the API's (PascalCase) keys.
    #[serde(default)]
    pub alarms: Vec<toml::Table>,
}

/// `[server]`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Largest request body accepted, in bytes. Default: 6 MiB.
    pub max_payload_bytes: Option<usize>,
}

/// `[[models]]`: SageMaker's CreateModel.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `ModelName`.
    pub name: String,
    /// `PrimaryContainer.Image`: the component file, relative to this file.
    pub component: PathBuf,
    /// `PrimaryContainer.ModelDataUrl`: the artifact directory, relative to this file.
    pub model_data: Option<PathBuf>,
    /// `PrimaryContainer.Environment`: the only environment the guest sees.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Memory cap per instance in MiB. Default: 256.
    pub memory_mib: Option<u64>,
    /// Invocation deadline in seconds. Default: 60.
    pub timeout_seconds: Option<u64>,
    /// The wasi-nn backend that runs the model's graphs (`PlinthBackend`): `"auto"`
    /// (default: ONNX Runtime when the server has its library, tract otherwise), `"tract"`
    /// or `"onnxruntime"`.
    pub backend: Option<Backend>,
}

/// Which wasi-nn backend runs a model's graphs: Plinth's `PlinthBackend` model setting.
///
/// Spelled `Auto`, `Tract` and `OnnxRuntime` in the API; any case is accepted (the deployment
/// file's `backend = "onnxruntime"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// ONNX Runtime when the server found its library at start, tract otherwise.
    #[default]
    Auto,
    /// tract-onnx: pure Rust, always available.
    Tract,
    /// ONNX Runtime, loaded from the library given at start (`--onnxruntime` or
    /// `ORT_DYLIB_PATH`).
    OnnxRuntime,
}

impl Backend {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "Auto",
            Self::Tract => "Tract",
            Self::OnnxRuntime => "OnnxRuntime",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Auto, Self::Tract, Self::OnnxRuntime]
            .into_iter()
            .find(|b| b.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown backend {s:?}; use Auto, Tract or OnnxRuntime"))
    }
}

impl<'de> Deserialize<'de> for Backend {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Backend {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `[[endpoint_configs]]`: SageMaker's CreateEndpointConfig.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfigSection {
    /// `EndpointConfigName`.
    pub name: String,
    /// `ProductionVariants`.
    pub production_variants: Vec<VariantSection>,
}

/// One `ProductionVariant`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct VariantSection {
    /// `VariantName`.
    pub variant_name: String,
    /// `ModelName`.
    pub model_name: String,
    /// `InitialInstanceCount`. Default: 1.
    #[serde(default = "one")]
    pub initial_instance_count: usize,
    /// `InitialVariantWeight`. Default: 1.0.
    #[serde(default = "one_f")]
    pub initial_variant_weight: f64,
    /// `RoutingConfig.RoutingStrategy`: `LEAST_OUTSTANDING_REQUESTS` (default) or `RANDOM`.
    #[serde(default)]
    pub routing_strategy: RoutingStrategy,
    /// Requests that may wait when every instance is busy; more are throttled.
    /// Default: 128.
    pub max_queue_length: Option<usize>,
    /// The most queued requests one call to an instance serves (`invoke-batch`), 1-256.
    /// Default: 1, every request on its own.
    pub max_batch_size: Option<usize>,
}

fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}

/// `[[endpoints]]`: SageMaker's CreateEndpoint.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct EndpointSection {
    /// `EndpointName`.
    pub name: String,
    /// `EndpointConfigName`.
    pub endpoint_config_name: String,
    /// `DeploymentConfig`, with the API's (PascalCase) keys: how an update of the endpoint
    /// to another config moves traffic.
    pub deployment_config: Option<crate::rollout::DeploymentConfig>,
}

/// A validated model: paths are absolute (resolved against the file's directory).
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Name.
    pub name: String,
    /// Component path.
    pub component: PathBuf,
    /// Artifact directory.
    pub model_data: Option<PathBuf>,
    /// Guest environment.
    pub environment: Vec<(String, String)>,
    /// Memory cap per instance in bytes.
    pub memory_bytes: usize,
    /// Invocation deadline in seconds.
    pub timeout_seconds: u64,
    /// The largest response body an invocation may return, in bytes.
    pub max_response_bytes: usize,
    /// Whether the guest may load wasi-nn graphs from bytes it supplies.
    pub graphs_from_bytes: bool,
    /// The wasi-nn backend asked for.
    pub backend: Backend,
    /// For a multi-model model (`Mode: MultiModel`): its prefix and cache setting; its
    /// `model_data` is then `None`.
    pub multi_model: Option<MultiModel>,
    /// For a model with `Containers` (an inference pipeline): its mode and stages; the
    /// model's own `component`, `model_data` and `environment` are then its first stage's.
    pub pipeline: Option<Pipeline>,
}

/// An inference pipeline's containers, in order, and how requests run them.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// `InferenceExecutionConfig.Mode`.
    pub mode: crate::pipeline::Mode,
    /// Its containers, in order.
    pub stages: Vec<Stage>,
}

/// One container of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// `ContainerHostname` (or the one given by position).
    pub hostname: String,
    /// Component path.
    pub component: PathBuf,
    /// Artifact directory.
    pub model_data: Option<PathBuf>,
    /// Guest environment.
    pub environment: Vec<(String, String)>,
}

impl Pipeline {
    /// Its containers' hostnames, in order.
    pub fn hostnames(&self) -> Vec<String> {
        self.stages.iter().map(|s| s.hostname.clone()).collect()
    }
}

/// A multi-model model's prefix and cache setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiModel {
    /// `ModelDataUrl`: a local directory or an `s3://` prefix; each `TargetModel` is a path
    /// under it.
    pub prefix: String,
    /// `MultiModelConfig.ModelCacheSetting` `Enabled`: loaded models are kept (until
    /// evicted); `Disabled`: each request loads its model and unloads it after.
    pub cache: bool,
}

/// A validated production variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Name.
    pub name: String,
    /// The model it serves.
    pub model: Model,
    /// Instances (parallelism).
    pub instance_count: usize,
    /// Weight (share = weight / sum of weights).
    pub weight: f64,
    /// How requests are spread over instances.
    pub routing_strategy: RoutingStrategy,
    /// Requests that may wait when every instance is busy.
    pub max_queue_length: usize,
    /// The most queued requests one call to an instance serves (1: no batching).
    pub max_batch_size: usize,
    /// How long one instance may take to start (instantiation and `model_fn`), in seconds.
    pub startup_timeout_seconds: u64,
    /// For a multi-model model: the bytes its loaded models may take (`None`: the default,
    /// half of the host's memory).
    pub model_cache_bytes: Option<u64>,
    /// How long fetching a remote artifact may take, in seconds.
    pub download_timeout_seconds: u64,
    /// For a serverless variant (`ServerlessConfig`): instances on demand instead of
    /// `instance_count`, which is then its provisioned concurrency.
    pub serverless: Option<Serverless>,
}

impl Variant {
    /// The instances the variant may hold, for the server's instance limit: its count, or a
    /// serverless variant's `MaxConcurrency`; an inference pipeline holds that many of each
    /// of its containers.
    pub fn reserved_instances(&self) -> usize {
        let containers = self.model.pipeline.as_ref().map_or(1, |p| p.stages.len());
        self.serverless
            .map_or(self.instance_count, |s| s.max_concurrency)
            * containers
    }
}

/// A serverless variant's settings (`ServerlessConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serverless {
    /// `MemorySizeInMB`: each instance's memory limit.
    pub memory_mib: u64,
    /// `MaxConcurrency`: requests served at once; more are throttled at once.
    pub max_concurrency: usize,
    /// `ProvisionedConcurrency`: instances kept warm (0: none).
    pub provisioned_concurrency: usize,
    /// `PlinthIdleTimeoutInSeconds`: how long an instance beyond the provisioned ones may
    /// stay idle before it is dropped.
    pub idle_timeout_seconds: u64,
}

/// A serverless instance's idle time before it is dropped, when the variant does not say.
pub const DEFAULT_SERVERLESS_IDLE_SECONDS: u64 = 300;

/// A validated endpoint with its config resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Name.
    pub name: String,
    /// The endpoint config's name.
    pub config_name: String,
    /// Its production variants.
    pub variants: Vec<Variant>,
    /// How an update moves traffic to a new config.
    pub deployment_config: Option<crate::rollout::DeploymentConfig>,
}

/// A validated endpoint config: its variants with their models resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// Name.
    pub name: String,
    /// Its production variants.
    pub variants: Vec<Variant>,
}

/// A validated deployment file.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// Largest request body, in bytes.
    pub max_payload_bytes: usize,
    /// Every model.
    pub models: Vec<Model>,
    /// Every endpoint config.
    pub endpoint_configs: Vec<EndpointConfig>,
    /// Endpoints to serve.
    pub endpoints: Vec<Endpoint>,
    /// Alarms, by name.
    pub alarms: Vec<(String, crate::metric_alarm::AlarmDefinition)>,
}

/// A problem in a deployment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The key, e.g. `endpoint_configs[0].production_variants[1].model_name`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: `{}`: {}",
                self.file.display(),
                self.key,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parse and validate a deployment file's text. `file` is used in errors and its directory
/// resolves relative paths.
pub fn parse(file: &Path, text: &str) -> Result<Deployment, ConfigError> {
    let parsed: DeploymentFile = toml::from_str(text).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        message: format!(
            "{}; see the `[[models]]`, `[[endpoint_configs]]` and `[[endpoints]]` tables in the guide",
            e.to_string().trim_end()
        ),
    })?;
    validate(file, parsed)
}

/// Validate a parsed file.
pub fn validate(file: &Path, parsed: DeploymentFile) -> Result<Deployment, ConfigError> {
    let base = file.parent().unwrap_or(Path::new("."));
    let err = |key: String, message: String| ConfigError {
        file: file.to_path_buf(),
        key,
        message,
    };
    let check_name = |key: String, name: &str| {
        if names::is_valid(name) {
            Ok(())
        } else {
            Err(err(
                key,
                format!("{name:?} is not a valid name: {}", names::RULE),
            ))
        }
    };

    let mut models = BTreeMap::new();
    for (i, m) in parsed.models.iter().enumerate() {
        check_name(format!("models[{i}].name"), &m.name)?;
        // Names are unique ignoring case, as the API's (and the current spelling's) are.
        if models
            .keys()
            .any(|k: &String| k.eq_ignore_ascii_case(&m.name))
        {
            return Err(err(
                format!("models[{i}].name"),
                format!(
                    "model {:?} is defined twice; give each model a unique name",
                    m.name
                ),
            ));
        }
        let memory_mib = m.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
        let timeout_seconds = m.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        let settings = model_limits::ModelSettings {
            memory_mib,
            timeout_seconds,
            max_response_mib: DEFAULT_MAX_RESPONSE_MIB,
            environment: &m.environment,
        };
        if let Err(problem) = model_limits::check(&settings) {
            let key = match problem.field() {
                ModelField::Memory => ".memory_mib",
                ModelField::Timeout => ".timeout_seconds",
                ModelField::Environment => ".environment",
                // No key in this spelling (the default is in range): the model as a whole.
                ModelField::MaxResponse => "",
            };
            return Err(err(format!("models[{i}]{key}"), problem.to_string()));
        }
        models.insert(
            m.name.clone(),
            Model {
                name: m.name.clone(),
                component: base.join(&m.component),
                model_data: m.model_data.as_ref().map(|p| base.join(p)),
                environment: m.environment.clone().into_iter().collect(),
                memory_bytes: (memory_mib as usize) << 20,
                timeout_seconds,
                max_response_bytes: (DEFAULT_MAX_RESPONSE_MIB as usize) << 20,
                graphs_from_bytes: false,
                backend: m.backend.unwrap_or_default(),
                multi_model: None,
                pipeline: None,
            },
        );
    }

    let mut configs = BTreeMap::new();
    let mut endpoint_configs = Vec::new();
    for (i, c) in parsed.endpoint_configs.iter().enumerate() {
        check_name(format!("endpoint_configs[{i}].name"), &c.name)?;
        if configs
            .keys()
            .any(|k: &String| k.eq_ignore_ascii_case(&c.name))
        {
            return Err(err(
                format!("endpoint_configs[{i}].name"),
                format!(
                    "endpoint config {:?} is defined twice; give each a unique name",
                    c.name
                ),
            ));
        }
        let mut variants = Vec::new();
        for (j, v) in c.production_variants.iter().enumerate() {
            let model = models.get(&v.model_name).ok_or_else(|| {
                err(
                    format!("endpoint_configs[{i}].production_variants[{j}].model_name"),
                    format!(
                        "no model named {:?}; add a [[models]] entry with name = {:?} or use one of {:?}",
                        v.model_name,
                        v.model_name,
                        models.keys().collect::<Vec<_>>()
                    ),
                )
            })?;
            variants.push(Variant {
                name: v.variant_name.clone(),
                model: model.clone(),
                instance_count: v.initial_instance_count,
                weight: v.initial_variant_weight,
                routing_strategy: v.routing_strategy,
                max_queue_length: v.max_queue_length.unwrap_or(DEFAULT_MAX_QUEUE_LENGTH),
                max_batch_size: v.max_batch_size.unwrap_or(DEFAULT_MAX_BATCH_SIZE),
                startup_timeout_seconds: DEFAULT_STARTUP_TIMEOUT_SECONDS,
                model_cache_bytes: None,
                download_timeout_seconds: 3600,
                serverless: None,
            });
        }
        check_variants(&c.name, &variants).map_err(|p| {
            let field = match p.field {
                VariantField::List => String::new(),
                VariantField::Name => ".variant_name".into(),
                VariantField::InstanceCount => ".initial_instance_count".into(),
                VariantField::Weight => ".initial_variant_weight".into(),
                VariantField::BatchSize => ".max_batch_size".into(),
            };
            let at = p.index.map(|j| format!("[{j}]")).unwrap_or_default();
            err(
                format!("endpoint_configs[{i}].production_variants{at}{field}"),
                p.message,
            )
        })?;
        endpoint_configs.push(EndpointConfig {
            name: c.name.clone(),
            variants: variants.clone(),
        });
        configs.insert(c.name.clone(), variants);
    }

    let mut endpoints = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in parsed.endpoints.iter().enumerate() {
        check_name(format!("endpoints[{i}].name"), &e.name)?;
        if !seen.insert(e.name.to_ascii_lowercase()) {
            return Err(err(
                format!("endpoints[{i}].name"),
                format!(
                    "endpoint {:?} is defined twice; give each endpoint a unique name",
                    e.name
                ),
            ));
        }
        let variants = configs.get(&e.endpoint_config_name).ok_or_else(|| {
            err(
                format!("endpoints[{i}].endpoint_config_name"),
                format!(
                    "no endpoint config named {:?}; add an [[endpoint_configs]] entry with that name or use one of {:?}",
                    e.endpoint_config_name,
                    configs.keys().collect::<Vec<_>>()
                ),
            )
        })?;
        if let Some(d) = &e.deployment_config {
            let instances = variants.iter().map(|v| v.instance_count).sum();
            d.plan(instances)
                .map_err(|m| err(format!("endpoints[{i}].deployment_config"), m))?;
        }
        endpoints.push(Endpoint {
            name: e.name.clone(),
            config_name: e.endpoint_config_name.clone(),
            variants: variants.clone(),
            deployment_config: e.deployment_config.clone(),
        });
    }

    let mut alarms = Vec::new();
    for (i, table) in parsed.alarms.iter().enumerate() {
        let mut table = table.clone();
        let name = match table.remove("AlarmName") {
            Some(toml::Value::String(name)) => name,
            _ => {
                return Err(err(
                    format!("alarms[{i}].AlarmName"),
                    "every alarm needs an AlarmName (a string)".into(),
                ))
            }
        };
        check_name(format!("alarms[{i}].AlarmName"), &name)?;
        if alarms
            .iter()
            .any(|(n, _): &(String, _)| n.eq_ignore_ascii_case(&name))
        {
            return Err(err(
                format!("alarms[{i}].AlarmName"),
                format!("alarm {name:?} is defined twice; give each alarm a unique name"),
            ));
        }
        let definition: crate::metric_alarm::AlarmDefinition = toml::Value::Table(table)
            .try_into()
            .map_err(|e| err(format!("alarms[{i}]"), e.to_string()))?;
        definition
            .compile()
            .map_err(|m| err(format!("alarms[{i}]"), m))?;
        alarms.push((name, definition));
    }
    for (i, e) in endpoints.iter().enumerate() {
        let named = e
            .deployment_config
            .iter()
            .filter_map(|d| d.auto_rollback_configuration.as_ref())
            .flat_map(|r| r.alarms.iter().flatten());
        for a in named {
            if !alarms.iter().any(|(n, _)| *n == a.alarm_name) {
                return Err(err(
                    format!("endpoints[{i}].deployment_config"),
                    format!(
                        "alarm {:?} is not defined; add an [[alarms]] entry with AlarmName = {:?}",
                        a.alarm_name, a.alarm_name
                    ),
                ));
            }
        }
    }

    let max_payload_bytes = parsed
        .server
        .max_payload_bytes
        .unwrap_or(DEFAULT_MAX_PAYLOAD_BYTES);
    if max_payload_bytes == 0 {
        return Err(err(
            "server.max_payload_bytes".into(),
            "must be at least 1 byte".into(),
        ));
    }
    Ok(Deployment {
        max_payload_bytes,
        models: models.into_values().collect(),
        endpoint_configs,
        endpoints,
        alarms,
    })
}

/// Which part of a production-variant list a [`VariantProblem`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VariantField {
    /// The list as a whole.
    List,
    /// `VariantName`.
    Name,
    /// `InitialInstanceCount`.
    InstanceCount,
    /// `InitialVariantWeight`.
    Weight,
    /// `PlinthMaxBatchSize`.
    BatchSize,
}

/// Why a list of production variants is invalid.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantProblem {
    /// The variant's position, when the problem is one variant's.
    pub index: Option<usize>,
    /// The field at fault.
    pub field: VariantField,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The rules every endpoint config's variants obey, from a file or from
/// CreateEndpointConfig: 1-10 variants, valid unique names, 1-1000 instances, weights
/// >= 0 and not all 0.
pub fn check_variants(config_name: &str, variants: &[Variant]) -> Result<(), VariantProblem> {
    let problem = |index, field, message| VariantProblem {
        index,
        field,
        message,
    };
    let n = variants.len();
    if n == 0 || n > MAX_VARIANTS {
        return Err(problem(
            None,
            VariantField::List,
            format!("has {n} variants; an endpoint config needs 1-{MAX_VARIANTS}"),
        ));
    }
    let mut seen = HashSet::new();
    for (j, v) in variants.iter().enumerate() {
        if !names::is_valid(&v.name) {
            return Err(problem(
                Some(j),
                VariantField::Name,
                format!("{:?} is not a valid name: {}", v.name, names::RULE),
            ));
        }
        if !seen.insert(v.name.as_str()) {
            return Err(problem(
                Some(j),
                VariantField::Name,
                format!(
                    "variant {:?} appears twice in {config_name:?}; variant names must be unique within an endpoint config",
                    v.name
                ),
            ));
        }
        // A serverless variant's count is its provisioned concurrency, checked with it.
        if v.serverless.is_none() && !(1..=1000).contains(&v.instance_count) {
            return Err(problem(
                Some(j),
                VariantField::InstanceCount,
                format!("{} is out of range; use 1-1000", v.instance_count),
            ));
        }
        if !v.weight.is_finite() || v.weight < 0.0 {
            return Err(problem(
                Some(j),
                VariantField::Weight,
                format!("{} is not a weight; use a number >= 0", v.weight),
            ));
        }
    }
    if let Some((j, v)) = variants
        .iter()
        .enumerate()
        .find(|(_, v)| !(1..=MAX_BATCH_SIZE).contains(&v.max_batch_size))
    {
        return Err(problem(
            Some(j),
            VariantField::BatchSize,
            format!(
                "max batch size {} is out of range; use 1-{MAX_BATCH_SIZE} (1: no batching)",
                v.max_batch_size
            ),
        ));
    }
    if variants.iter().all(|v| v.weight == 0.0) {
        return Err(problem(
            None,
            VariantField::List,
            "every initial_variant_weight is 0, so no request could be routed; give at least one variant a positive weight".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[models]]
name = "iris"
component = "iris.wasm"
model_data = "model"
environment = { LOG = "1" }

[[endpoint_configs]]
name = "iris-config"
[[endpoint_configs.production_variants]]
variant_name = "A"
model_name = "iris"
initial_instance_count = 2
[[endpoint_configs.production_variants]]
variant_name = "B"
model_name = "iris"
initial_variant_weight = 3.0

[[endpoints]]
name = "iris"
endpoint_config_name = "iris-config"
"#;

    fn parse_str(text: &str) -> Result<Deployment, ConfigError> {
        parse(Path::new("/etc/plinth/plinth.toml"), text)
    }

    #[test]
    fn good_file_resolves_paths_and_defaults() {
        let d = parse_str(GOOD).unwrap();
        assert_eq!(d.max_payload_bytes, 6 * 1024 * 1024);
        let e = &d.endpoints[0];
        assert_eq!(e.variants.len(), 2);
        assert_eq!(e.variants[0].instance_count, 2);
        assert_eq!(e.variants[0].weight, 1.0);
        assert_eq!(e.variants[1].instance_count, 1);
        assert_eq!(e.variants[1].weight, 3.0);
        let m = &e.variants[0].model;
        assert_eq!(m.component, Path::new("/etc/plinth/iris.wasm"));
        assert_eq!(
            m.model_data.as_deref(),
            Some(Path::new("/etc/plinth/model"))
        );
        assert_eq!(m.environment, vec![("LOG".to_string(), "1".to_string())]);
        assert_eq!(m.timeout_seconds, 60);
        assert_eq!(m.memory_bytes, 256 << 20);
        assert_eq!(m.max_response_bytes, 6 << 20);
        assert!(!m.graphs_from_bytes);
        assert_eq!(m.backend, Backend::Auto);
        assert_eq!(e.variants[0].startup_timeout_seconds, 60);
    }

    #[test]
    fn backend_is_read_in_any_case_and_unknown_ones_are_named() {
        for (written, backend) in [
            ("onnxruntime", Backend::OnnxRuntime),
            ("OnnxRuntime", Backend::OnnxRuntime),
            ("tract", Backend::Tract),
            ("AUTO", Backend::Auto),
        ] {
            let text = GOOD.replace(
                "model_data = \"model\"",
                &format!("model_data = \"model\"\nbackend = \"{written}\""),
            );
            let d = parse_str(&text).unwrap();
            assert_eq!(d.models[0].backend, backend, "{written}");
        }
        let text = GOOD.replace(
            "model_data = \"model\"",
            "model_data = \"model\"\nbackend = \"cuda\"",
        );
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(
            e.contains("unknown backend \"cuda\"; use Auto, Tract or OnnxRuntime"),
            "{e}"
        );
        assert_eq!(
            serde_json::to_value(Backend::OnnxRuntime).unwrap(),
            "OnnxRuntime"
        );
        assert_eq!(
            serde_json::from_value::<Backend>("tract".into()).unwrap(),
            Backend::Tract
        );
    }

    /// Each case: a change to the good file, and the text its error must contain.
    #[test]
    fn bad_files_name_file_key_and_fix() {
        let cases: &[(&str, &str, &str)] = &[
            ("name = \"iris\"\ncomponent", "name = \"iris\"\ncolour = 1\ncomponent", "unknown field `colour`"),
            ("model_name = \"iris\"\ninitial_instance_count = 2", "model_name = \"irs\"\ninitial_instance_count = 2", "`endpoint_configs[0].production_variants[0].model_name`: no model named \"irs\"; add a [[models]] entry"),
            ("variant_name = \"B\"", "variant_name = \"A\"", "`endpoint_configs[0].production_variants[1].variant_name`: variant \"A\" appears twice"),
            ("initial_variant_weight = 3.0", "initial_variant_weight = -1.0", "`endpoint_configs[0].production_variants[1].initial_variant_weight`: -1 is not a weight"),
            ("endpoint_config_name = \"iris-config\"", "endpoint_config_name = \"nope\"", "`endpoints[0].endpoint_config_name`: no endpoint config named \"nope\""),
            ("name = \"iris\"\nendpoint", "name = \"iris_1\"\nendpoint", "`endpoints[0].name`: \"iris_1\" is not a valid name"),
            ("initial_instance_count = 2", "initial_instance_count = 0", "initial_instance_count`: 0 is out of range"),
            ("initial_instance_count = 2", "initial_instance_count = 2\nmax_batch_size = 0", "`endpoint_configs[0].production_variants[0].max_batch_size`: max batch size 0 is out of range; use 1-256"),
            ("environment = { LOG = \"1\" }", "environment = { LOG = \"1\" }\nmemory_mib = 8192", "`models[0].memory_mib`: 8192 MiB is out of range; use 1-4096 MiB"),
            ("environment = { LOG = \"1\" }", "environment = { LOG = \"1\" }\ntimeout_seconds = 0", "`models[0].timeout_seconds`: 0 seconds is out of range; use 1-3600 seconds"),
            ("environment = { LOG = \"1\" }", "environment = { \"BAD-KEY\" = \"1\" }", "`models[0].environment`: key \"BAD-KEY\" must match [a-zA-Z_][a-zA-Z0-9_]*"),
        ];
        for (from, to, expected) in cases {
            assert!(GOOD.contains(from), "case pattern {from:?} not in GOOD");
            let text = GOOD.replacen(from, to, 1);
            let e = parse_str(&text).unwrap_err().to_string();
            assert!(e.starts_with("/etc/plinth/plinth.toml: "), "{e}");
            assert!(e.contains(expected), "expected {expected:?} in {e:?}");
        }
    }

    /// Found by `tests/fuzz_deployment_file.rs`: models "a" and "A" passed here but the
    /// same file printed in the API's spelling (`plinth validate --print`) was refused, as
    /// the API refuses it: names are unique ignoring case in both spellings.
    #[test]
    fn names_differing_only_in_case_are_defined_twice() {
        let text = GOOD.replacen(
            "[[endpoint_configs]]",
            "[[models]]\nname = \"IRIS\"\ncomponent = \"c.wasm\"\n\n[[endpoint_configs]]",
            1,
        );
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(
            e.contains("`models[1].name`: model \"IRIS\" is defined twice"),
            "{e}"
        );
        let text = GOOD.to_string()
            + "\n[[endpoints]]\nname = \"Iris\"\nendpoint_config_name = \"iris-config\"\n";
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(
            e.contains("`endpoints[1].name`: endpoint \"Iris\" is defined twice"),
            "{e}"
        );
    }

    #[test]
    fn all_zero_weights_are_rejected() {
        let text = GOOD
            .replace(
                "initial_variant_weight = 3.0",
                "initial_variant_weight = 0.0",
            )
            .replace(
                "initial_instance_count = 2",
                "initial_instance_count = 2\ninitial_variant_weight = 0",
            );
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(e.contains("every initial_variant_weight is 0"), "{e}");
    }

    #[test]
    fn too_many_variants_are_rejected() {
        let mut text = GOOD.to_string();
        for i in 0..9 {
            text = text.replacen(
                "[[endpoints]]",
                &format!("[[endpoint_configs.production_variants]]\nvariant_name = \"V{i}\"\nmodel_name = \"iris\"\n\n[[endpoints]]"),
                1,
            );
        }
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(
            e.contains("has 11 variants; an endpoint config needs 1-10"),
            "{e}"
        );
    }
}
