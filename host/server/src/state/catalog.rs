//! Models and endpoint configs (SageMaker's CreateModel and CreateEndpointConfig): their
//! definitions as the API received them (normalized, defaults filled in), kept in memory for
//! reads and in the store for durability, and their resolution into what the runtime
//! builds. Definitions are immutable once created, as in SageMaker.

use crate::state::artifacts;
use crate::state::remote::Remote;
use crate::state::store::Definition;
use plinth_policy::config::{
    Backend, EndpointConfig, Model, Pipeline, Stage, Variant, DEFAULT_MAX_QUEUE_LENGTH,
    DEFAULT_MAX_RESPONSE_MIB, DEFAULT_MEMORY_MIB, DEFAULT_STARTUP_TIMEOUT_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
};
use plinth_policy::pipeline::Mode;
use plinth_policy::routing::RoutingStrategy;
use plinth_storage::Location;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// CreateModel's definition (everything but the name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ModelDefinition {
    /// The model's one container; `None` for an inference pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) primary_container: Option<ContainerDefinition>,
    /// An inference pipeline's containers (2 to 15), in order; empty for a model with a
    /// `PrimaryContainer`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) containers: Vec<ContainerDefinition>,
    /// How a pipeline's containers serve requests (`Mode` `Serial` or `Direct`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) inference_execution_config: Option<InferenceExecutionConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) execution_role_arn: Option<String>,
    /// Plinth's extension: the guest's memory cap, deadline, response cap and whether it
    /// may load graphs from bytes.
    #[serde(default)]
    pub(crate) plinth_limits: ModelLimits,
    /// Plinth's extension: the wasi-nn backend that runs the model's graphs (`Auto`,
    /// `Tract` or `OnnxRuntime`; default `Auto`).
    #[serde(default)]
    pub(crate) plinth_backend: Backend,
    /// Set by CreateModel, never by the caller (the member table refuses it in input): the
    /// digests of the component and artifact the model runs, kept in the data directory.
    /// Models created before digests were kept have none and run from their paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) plinth_digests: Option<Digests>,
}

/// `InferenceExecutionConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct InferenceExecutionConfig {
    pub(crate) mode: String,
}

impl ModelDefinition {
    /// Its containers, in order: the primary one alone, or a pipeline's.
    pub(crate) fn all_containers(&self) -> Vec<&ContainerDefinition> {
        match &self.primary_container {
            Some(c) => vec![c],
            None => self.containers.iter().collect(),
        }
    }

    /// The primary container, or a pipeline's first (CreateModel refuses a model with
    /// neither).
    pub(crate) fn first_container(&self) -> &ContainerDefinition {
        self.primary_container
            .as_ref()
            .or(self.containers.first())
            .expect("a model has a container")
    }

    /// For an inference pipeline, its mode and its containers' hostnames (those given, or
    /// by position).
    pub(crate) fn pipeline(&self) -> Result<Option<(Mode, Vec<String>)>, String> {
        if self.primary_container.is_some() {
            return Ok(None);
        }
        let mode = Mode::parse(
            self.inference_execution_config
                .as_ref()
                .map(|c| c.mode.as_str()),
        )?;
        let given: Vec<Option<&str>> = self
            .containers
            .iter()
            .map(|c| c.container_hostname.as_deref())
            .collect();
        Ok(Some((mode, plinth_policy::pipeline::hostnames(&given)?)))
    }

    /// The digests kept for container `index` (of [`Self::all_containers`]).
    pub(crate) fn digests_of(&self, index: usize) -> Option<&Digests> {
        let digests = self.plinth_digests.as_ref()?;
        if self.primary_container.is_some() {
            Some(digests)
        } else {
            digests.containers.get(index)
        }
    }

    /// `Mode: MultiModel`: `ModelDataUrl` is a prefix holding many models, each loaded when
    /// a request first names it (`fleet::multi_model`).
    pub(crate) fn is_multi_model(&self) -> bool {
        self.first_container().is_multi_model()
    }

    /// For a multi-model model, its prefix and whether loaded models are kept.
    pub(crate) fn multi_model(&self) -> Option<plinth_policy::config::MultiModel> {
        let c = self.first_container();
        if !self.is_multi_model() {
            return None;
        }
        Some(plinth_policy::config::MultiModel {
            prefix: c.model_data_url.clone().unwrap_or_default(),
            cache: c
                .multi_model_config
                .as_ref()
                .is_none_or(|m| m.model_cache_setting != "Disabled"),
        })
    }
}

impl ContainerDefinition {
    fn is_multi_model(&self) -> bool {
        self.mode == MULTI_MODEL
    }

    /// The container's artifact when it is remote (an `s3://` `ModelDataUrl`, or a
    /// `ModelDataSource`), or why its members do not make one.
    pub(crate) fn remote_model_data(&self) -> Result<Option<Remote>, String> {
        let c = self;
        if self.is_multi_model() {
            // A prefix: its models are fetched one at a time, when requests name them.
            return Ok(None);
        }
        match (&c.model_data_url, &c.model_data_source) {
            (Some(_), Some(_)) => Err("give ModelDataUrl or ModelDataSource, not both".to_owned()),
            (Some(url), None) if url.starts_with("s3://") => Ok(Some(Remote::Object {
                location: Location::parse(url).map_err(|e| format!("ModelDataUrl {e}"))?,
                packing: artifacts::Packing::Auto,
            })),
            (_, None) => Ok(None),
            (None, Some(source)) => source.s3_data_source.remote().map(Some),
        }
    }

    /// The container's component when `Image` is an `s3://` URI.
    pub(crate) fn remote_image(&self) -> Result<Option<Remote>, String> {
        let image = &self.image;
        if !image.starts_with("s3://") {
            return Ok(None);
        }
        let location = Location::parse(image).map_err(|e| format!("Image {e}"))?;
        Ok(Some(Remote::Component(location)))
    }
}

impl S3DataSource {
    /// What this source fetches, checked as SageMaker checks it.
    fn remote(&self) -> Result<Remote, String> {
        let uri = &self.s3_uri;
        if !uri.starts_with("s3://") {
            return Err(format!(
                "ModelDataSource.S3DataSource.S3Uri {uri:?} is not an s3:// URI"
            ));
        }
        let location =
            Location::parse(uri).map_err(|e| format!("ModelDataSource.S3DataSource.S3Uri {e}"))?;
        match (self.s3_data_type.as_str(), self.compression_type.as_str()) {
            ("S3Object", "Gzip") => Ok(Remote::Object {
                location,
                packing: artifacts::Packing::Gzip,
            }),
            ("S3Object", _) => Ok(Remote::Object {
                location,
                packing: artifacts::Packing::Plain,
            }),
            ("S3Prefix", "None") if uri.ends_with('/') => Ok(Remote::Prefix(location)),
            ("S3Prefix", "None") => Err(format!(
                "ModelDataSource.S3DataSource.S3Uri {uri:?}: an S3Prefix must end with '/'"
            )),
            ("S3Prefix", _) => Err(
                "ModelDataSource.S3DataSource: CompressionType must be None for an S3Prefix"
                    .to_owned(),
            ),
            (other, _) => Err(format!(
                "ModelDataSource.S3DataSource.S3DataType {other:?} is not S3Object or S3Prefix"
            )),
        }
    }
}

/// The content digests (`sha256:<hex>`) of what a model runs: its `Image` and its
/// `ModelDataUrl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Digests {
    /// `None` for an `s3://` `Image` (fetched per object version, `state::remote`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) model_data_url: Option<String>,
    /// An inference pipeline's: each container's, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) containers: Vec<Digests>,
}

/// `ContainerDefinition`: `Image` is the component, `ModelDataUrl` (or `ModelDataSource`)
/// the artifact; either may be local or `s3://`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerDefinition {
    /// A pipeline container's name, for `TargetContainerHostname`, metrics and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) container_hostname: Option<String>,
    pub(crate) image: String,
    /// `SingleModel` (the default) or `MultiModel`.
    #[serde(default = "single_model")]
    pub(crate) mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) multi_model_config: Option<MultiModelConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) model_data_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) model_data_source: Option<ModelDataSource>,
    #[serde(default)]
    pub(crate) environment: BTreeMap<String, String>,
}

/// `Mode`'s value for a multi-model model.
pub(crate) const MULTI_MODEL: &str = "MultiModel";

fn single_model() -> String {
    "SingleModel".to_owned()
}

/// `MultiModelConfig`: whether a multi-model model's loaded models are kept
/// (`ModelCacheSetting` `Enabled`, the default) or loaded for each request (`Disabled`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MultiModelConfig {
    #[serde(default = "enabled")]
    pub(crate) model_cache_setting: String,
}

fn enabled() -> String {
    "Enabled".to_owned()
}

/// `ModelDataSource`: the artifact as an S3 object or prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ModelDataSource {
    #[serde(rename = "S3DataSource")]
    pub(crate) s3_data_source: S3DataSource,
}

/// `S3ModelDataSource`: `S3Uri` is an object (`S3Object`: a `.tar.gz` with `CompressionType`
/// `Gzip`, or one file with `None`) or a prefix (`S3Prefix`, whose objects are the model
/// directory's files; `CompressionType` `None` only, the URI ending in `/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct S3DataSource {
    #[serde(rename = "S3Uri")]
    pub(crate) s3_uri: String,
    #[serde(rename = "S3DataType")]
    pub(crate) s3_data_type: String,
    #[serde(rename = "CompressionType")]
    pub(crate) compression_type: String,
}

/// `PlinthLimits`, defaults filled in (so DescribeModel shows every limit). A member added
/// later takes its default in a model stored before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ModelLimits {
    #[serde(rename = "MemorySizeInMB", default = "default_memory")]
    pub(crate) memory_size_in_mb: u64,
    #[serde(default = "default_timeout")]
    pub(crate) invocation_timeout_in_seconds: u64,
    /// The largest response body, in MiB.
    #[serde(rename = "MaxResponseSizeInMB", default = "default_max_response")]
    pub(crate) max_response_size_in_mb: u64,
    /// Whether the guest may load wasi-nn graphs from bytes it supplies.
    #[serde(default)]
    pub(crate) allow_graphs_from_bytes: bool,
}

fn default_memory() -> u64 {
    DEFAULT_MEMORY_MIB
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECONDS
}

fn default_max_response() -> u64 {
    DEFAULT_MAX_RESPONSE_MIB
}

impl Default for ModelLimits {
    fn default() -> Self {
        Self {
            memory_size_in_mb: default_memory(),
            invocation_timeout_in_seconds: default_timeout(),
            max_response_size_in_mb: default_max_response(),
            allow_graphs_from_bytes: false,
        }
    }
}

/// CreateEndpointConfig's definition (everything but the name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ConfigDefinition {
    pub(crate) production_variants: Vec<ProductionVariant>,
    /// Variants that receive a copy of sampled requests; their answers are compared with
    /// production's and never reach the client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) shadow_production_variants: Vec<ProductionVariant>,
    /// Plinth's extension: an A/B experiment over the variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) plinth_experiment: Option<ExperimentConfig>,
    /// The endpoint takes asynchronous requests (InvokeEndpointAsync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) async_inference_config: Option<AsyncInferenceConfig>,
    /// Sampled requests and responses written to storage (`fleet/capture.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) data_capture_config: Option<DataCaptureConfig>,
}

/// `DataCaptureConfig` as given (a local destination kept as its real path); what it means
/// is [`DataCaptureConfig::settings`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DataCaptureConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) enable_capture: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) initial_sampling_percentage: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) destination_s3_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) capture_options: Vec<CaptureOption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) capture_content_type_header: Option<CaptureContentTypeHeader>,
}

/// `DataCaptureConfig.CaptureOptions[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CaptureOption {
    pub(crate) capture_mode: String,
}

/// `DataCaptureConfig.CaptureContentTypeHeader`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CaptureContentTypeHeader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) csv_content_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) json_content_types: Option<Vec<String>>,
}

impl DataCaptureConfig {
    /// The config checked as SageMaker checks it; the error names the member.
    pub(crate) fn settings(&self) -> Result<plinth_policy::data_capture::Settings, String> {
        let header = self.capture_content_type_header.as_ref();
        fn list(l: Option<&Vec<String>>) -> Option<Vec<&str>> {
            l.map(|l| l.iter().map(String::as_str).collect())
        }
        plinth_policy::data_capture::settings(&plinth_policy::data_capture::Given {
            enable_capture: self.enable_capture,
            initial_sampling_percentage: self.initial_sampling_percentage,
            destination: self.destination_s3_uri.as_deref(),
            capture_modes: self
                .capture_options
                .iter()
                .map(|o| o.capture_mode.as_str())
                .collect(),
            csv_content_types: list(header.and_then(|h| h.csv_content_types.as_ref())),
            json_content_types: list(header.and_then(|h| h.json_content_types.as_ref())),
        })
    }
}

/// `AsyncInferenceConfig`: where asynchronous results and failures go, and how many
/// requests each instance takes at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AsyncInferenceConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) client_config: Option<AsyncClientConfig>,
    pub(crate) output_config: AsyncOutputConfig,
}

/// `AsyncInferenceConfig.ClientConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AsyncClientConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_concurrent_invocations_per_instance: Option<u64>,
}

/// `AsyncInferenceConfig.OutputConfig`: locations (`s3://`, or a directory under the
/// artifact roots).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AsyncOutputConfig {
    #[serde(
        rename = "S3OutputPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) s3_output_path: Option<String>,
    #[serde(
        rename = "S3FailurePath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) s3_failure_path: Option<String>,
    #[serde(
        rename = "NotificationConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) notification_config: Option<AsyncNotificationConfig>,
}

/// `AsyncInferenceConfig.OutputConfig.NotificationConfig`: the topics are webhook URLs
/// (`plinth_policy::async_inference::webhook`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AsyncNotificationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) success_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) include_inference_response_in: Vec<String>,
}

impl AsyncInferenceConfig {
    /// Requests each instance takes at once.
    pub(crate) fn per_instance(&self) -> usize {
        self.client_config
            .and_then(|c| c.max_concurrent_invocations_per_instance)
            .unwrap_or(plinth_policy::async_inference::CONCURRENT_INVOCATIONS_PER_INSTANCE.2)
            as usize
    }
}

/// `PlinthExperiment`: how the variants of an endpoint config are compared and routed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct ExperimentConfig {
    /// The variant the others are compared against.
    pub(crate) control_variant: String,
    /// `Binary` (converted or not) or `Numeric` (a reward).
    #[serde(default = "binary")]
    pub(crate) metric: plinth_policy::ab_test::Metric,
    /// `Static` (the configured weights), `ThompsonSampling` or `EpsilonGreedy`.
    #[serde(default)]
    pub(crate) routing_strategy: ExperimentRouting,
    /// For `EpsilonGreedy`: the share spread evenly to explore.
    #[serde(default = "default_epsilon")]
    pub(crate) epsilon: f64,
    /// For the bandits: the least share any variant gets.
    #[serde(default)]
    pub(crate) min_share: f64,
    /// Confidence of the verdicts (1 - alpha).
    #[serde(default = "default_confidence")]
    pub(crate) confidence: f64,
    /// What to do on a verdict: `None`, `PromoteWinner` (all traffic to a variant
    /// significantly better than the control) or `StopLosers` (no traffic to variants
    /// significantly worse).
    #[serde(default)]
    pub(crate) auto_action: plinth_policy::ab_test::AutoAction,
    /// A custom attribute (`name=value` in `X-Amzn-SageMaker-Custom-Attributes`) whose value
    /// is the sticky assignment key, besides the `X-Plinth-Assignment-Key` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) assignment_attribute: Option<String>,
    /// How long an inference id can receive an outcome.
    #[serde(default = "default_retention")]
    pub(crate) outcome_retention_seconds: u64,
}

fn binary() -> plinth_policy::ab_test::Metric {
    plinth_policy::ab_test::Metric::Binary
}

fn default_epsilon() -> f64 {
    0.1
}

fn default_confidence() -> f64 {
    0.95
}

fn default_retention() -> u64 {
    86_400
}

/// How an experiment routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ExperimentRouting {
    #[default]
    Static,
    ThompsonSampling,
    EpsilonGreedy,
}

impl ExperimentConfig {
    /// Check against the config's variant names.
    pub(crate) fn check(&self, variants: &[&str]) -> Result<(), String> {
        if variants.len() < 2 {
            return Err("PlinthExperiment needs at least 2 production variants".into());
        }
        if !variants.contains(&self.control_variant.as_str()) {
            return Err(format!(
                "PlinthExperiment.ControlVariant {:?} is not one of the production variants {variants:?}",
                self.control_variant
            ));
        }
        if !(0.5..1.0).contains(&self.confidence) {
            return Err("PlinthExperiment.Confidence must be in [0.5, 1)".into());
        }
        if !(1..=31_536_000).contains(&self.outcome_retention_seconds) {
            return Err(
                "PlinthExperiment.OutcomeRetentionSeconds must be between 1 and 31536000".into(),
            );
        }
        if let Some(strategy) = self.bandit() {
            plinth_policy::bandit::validate(strategy, self.min_share, variants.len())
                .map_err(|e| format!("PlinthExperiment: {e}"))?;
        }
        Ok(())
    }

    /// The bandit strategy, if routing is not static.
    pub(crate) fn bandit(&self) -> Option<plinth_policy::bandit::Strategy> {
        match self.routing_strategy {
            ExperimentRouting::Static => None,
            ExperimentRouting::ThompsonSampling => {
                Some(plinth_policy::bandit::Strategy::ThompsonSampling)
            }
            ExperimentRouting::EpsilonGreedy => {
                Some(plinth_policy::bandit::Strategy::EpsilonGreedy {
                    epsilon: self.epsilon,
                })
            }
        }
    }
}

/// `ProductionVariant`, defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ProductionVariant {
    pub(crate) variant_name: String,
    pub(crate) model_name: String,
    #[serde(default = "one")]
    pub(crate) initial_instance_count: u64,
    #[serde(default = "unit_weight")]
    pub(crate) initial_variant_weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) instance_type: Option<String>,
    #[serde(default)]
    pub(crate) routing_config: RoutingConfig,
    /// How long one instance may take to start (instantiation and `model_fn`), in seconds;
    /// echoed only when given, as SageMaker does. Without it,
    /// [`DEFAULT_STARTUP_TIMEOUT_SECONDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) container_startup_health_check_timeout_in_seconds: Option<u64>,
    /// Plinth's extension: requests that may wait for a busy variant.
    #[serde(default = "default_queue")]
    pub(crate) plinth_max_queue_length: u64,
    /// Plinth's extension: the most queued requests one call to an instance serves
    /// (`invoke-batch`); 1, the default, serves every request on its own.
    #[serde(default = "one")]
    pub(crate) plinth_max_batch_size: u64,
    /// How long fetching the model's remote (`s3://`) artifact and component may take, in
    /// seconds; echoed only when given. Without it, [`DEFAULT_DOWNLOAD_TIMEOUT_SECONDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) model_data_download_timeout_in_seconds: Option<u64>,
    /// Plinth's extension, for a shadow variant: the percentage of requests copied to it
    /// (SageMaker's `ShadowModelVariantConfig.SamplingPercentage`). Without it, the shadow's
    /// weight over the production variants' total weight, capped at 100 %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) plinth_sampling_percentage: Option<f64>,
    /// Plinth's extension, for a multi-model model: the memory its loaded models may take,
    /// in MiB. Without it, half of the host's memory
    /// (`plinth_policy::model_cache::default_budget_bytes`).
    #[serde(
        rename = "PlinthModelCacheSizeInMB",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) plinth_model_cache_size_in_mb: Option<u64>,
    /// A serverless variant: no instance count or type; instances on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) serverless_config: Option<ServerlessConfig>,
}

/// `ServerlessConfig`: each instance's memory, the most requests at once, the instances kept
/// warm, and (Plinth's) how long the others may idle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServerlessConfig {
    #[serde(rename = "MemorySizeInMB")]
    pub(crate) memory_size_in_mb: u64,
    pub(crate) max_concurrency: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) provisioned_concurrency: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) plinth_idle_timeout_in_seconds: Option<u64>,
}

impl ServerlessConfig {
    /// The policy's form.
    pub(crate) fn settings(&self) -> plinth_policy::config::Serverless {
        plinth_policy::config::Serverless {
            memory_mib: self.memory_size_in_mb,
            max_concurrency: self.max_concurrency as usize,
            provisioned_concurrency: self.provisioned_concurrency.unwrap_or(0) as usize,
            idle_timeout_seconds: self
                .plinth_idle_timeout_in_seconds
                .unwrap_or(plinth_policy::config::DEFAULT_SERVERLESS_IDLE_SECONDS),
        }
    }
}

fn one() -> u64 {
    1
}

/// How long a remote artifact may take to fetch when the variant does not say
/// (`ModelDataDownloadTimeoutInSeconds`' largest value).
pub(crate) const DEFAULT_DOWNLOAD_TIMEOUT_SECONDS: u64 = 3600;

fn unit_weight() -> f64 {
    1.0
}

fn default_queue() -> u64 {
    DEFAULT_MAX_QUEUE_LENGTH as u64
}

/// `RoutingConfig`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RoutingConfig {
    #[serde(default)]
    pub(crate) routing_strategy: RoutingStrategy,
}

/// A definition with its name and creation time (epoch seconds).
#[derive(Debug, Clone)]
pub(crate) struct Record<T> {
    pub(crate) name: String,
    pub(crate) created: f64,
    pub(crate) definition: T,
}

impl<T: Serialize> Record<T> {
    /// The stored form.
    pub(crate) fn stored(&self) -> Definition {
        Definition {
            name: self.name.clone(),
            created: self.created,
            definition: serde_json::to_value(&self.definition).expect("definitions serialize"),
        }
    }
}

impl<T: for<'de> Deserialize<'de>> Record<T> {
    fn from_stored(stored: Definition) -> Result<Self, serde_json::Error> {
        Ok(Self {
            name: stored.name,
            created: stored.created,
            definition: serde_json::from_value(stored.definition)?,
        })
    }
}

/// Every model and endpoint config, by name.
#[derive(Default)]
pub(crate) struct Catalog {
    pub(crate) models: BTreeMap<String, Record<ModelDefinition>>,
    pub(crate) configs: BTreeMap<String, Record<ConfigDefinition>>,
    pub(crate) alarms: BTreeMap<String, Record<plinth_policy::metric_alarm::AlarmDefinition>>,
}

impl Catalog {
    /// The digests (hex) of every component and artifact the models keep, or `None` while a
    /// model created before digests were kept exists (what it runs is not known by digest,
    /// so nothing may be collected).
    pub(crate) fn kept_digests(&self) -> Option<std::collections::HashSet<String>> {
        let mut kept = std::collections::HashSet::new();
        for record in self.models.values() {
            let digests = record.definition.plinth_digests.as_ref()?;
            for d in std::iter::once(digests).chain(&digests.containers) {
                for digest in d.image.iter().chain(&d.model_data_url) {
                    kept.insert(digest.trim_start_matches("sha256:").to_string());
                }
            }
        }
        Some(kept)
    }

    /// The catalog as stored.
    pub(crate) fn from_stored(
        models: Vec<Definition>,
        configs: Vec<Definition>,
        alarms: Vec<Definition>,
    ) -> Result<Self, serde_json::Error> {
        let mut catalog = Self::default();
        for m in models {
            let record = Record::from_stored(m)?;
            catalog.models.insert(record.name.clone(), record);
        }
        for c in configs {
            let record = Record::from_stored(c)?;
            catalog.configs.insert(record.name.clone(), record);
        }
        for a in alarms {
            let record = Record::from_stored(a)?;
            catalog.alarms.insert(record.name.clone(), record);
        }
        Ok(catalog)
    }

    /// A name already taken by a model (ignoring case, as SageMaker does).
    pub(crate) fn model_named(&self, name: &str) -> Option<&Record<ModelDefinition>> {
        self.models.get(name).or_else(|| {
            self.models
                .values()
                .find(|m| m.name.eq_ignore_ascii_case(name))
        })
    }

    /// A name already taken by an endpoint config (ignoring case).
    pub(crate) fn config_named(&self, name: &str) -> Option<&Record<ConfigDefinition>> {
        self.configs.get(name).or_else(|| {
            self.configs
                .values()
                .find(|c| c.name.eq_ignore_ascii_case(name))
        })
    }

    /// Endpoint config `name` with its models' definitions, for [`resolve`].
    pub(crate) fn unresolved(&self, name: &str) -> Result<Unresolved, String> {
        let config = self
            .configs
            .get(name)
            .ok_or_else(|| format!("Could not find endpoint configuration \"{name}\"."))?;
        let mut models = BTreeMap::new();
        let mut created = BTreeMap::new();
        let definition = &config.definition;
        for v in definition
            .production_variants
            .iter()
            .chain(&definition.shadow_production_variants)
        {
            let model = self.models.get(&v.model_name).ok_or_else(|| {
                format!(
                    "Could not find model \"{}\" (endpoint configuration {name}, variant {}).",
                    crate::state::identity::arn("model", &v.model_name),
                    v.variant_name
                )
            })?;
            models.insert(v.model_name.clone(), model.definition.clone());
            created.insert(v.model_name.clone(), model.created);
        }
        Ok(Unresolved {
            name: name.to_string(),
            config: config.definition.clone(),
            models,
            created,
        })
    }
}

impl Catalog {
    /// Model `model` alone, as one variant of `instances` instances under the config name
    /// `label`: what a transform job runs, with no endpoint.
    pub(crate) fn unresolved_model(
        &self,
        label: &str,
        model: &str,
        instances: usize,
    ) -> Result<Unresolved, String> {
        let record = self.models.get(model).ok_or_else(|| {
            format!(
                "Could not find model \"{}\".",
                crate::state::identity::arn("model", model)
            )
        })?;
        let config: ConfigDefinition = serde_json::from_value(serde_json::json!({
            "ProductionVariants": [{
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InitialInstanceCount": instances,
            }]
        }))
        .map_err(|e| e.to_string())?;
        Ok(Unresolved {
            name: label.to_string(),
            config,
            models: BTreeMap::from([(model.to_string(), record.definition.clone())]),
            created: BTreeMap::from([(model.to_string(), record.created)]),
        })
    }
}

/// An endpoint config and its models, taken out of the catalog to resolve without a lock.
pub(crate) struct Unresolved {
    name: String,
    config: ConfigDefinition,
    models: BTreeMap<String, ModelDefinition>,
    /// Each model's creation time: with its name, what its remote artifacts are pinned by.
    created: BTreeMap<String, f64>,
}

/// A remote artifact or component a model of a config needs.
#[derive(Debug, Clone)]
pub(crate) struct WantedRemote {
    /// The model.
    pub(crate) model: String,
    /// What it names.
    pub(crate) remote: Remote,
    /// The longest any variant of the model allows the fetch.
    pub(crate) timeout: std::time::Duration,
    /// What the model pins the version it first runs by: its name and creation time.
    pub(crate) pin: String,
}

impl Unresolved {
    /// The endpoint config's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The config's experiment, if it has one.
    pub(crate) fn experiment(&self) -> Option<ExperimentConfig> {
        self.config.plinth_experiment.clone()
    }

    /// The config's data capture, checked (at CreateEndpointConfig).
    pub(crate) fn data_capture(
        &self,
    ) -> Option<Result<plinth_policy::data_capture::Settings, String>> {
        self.config
            .data_capture_config
            .as_ref()
            .map(DataCaptureConfig::settings)
    }

    /// The config's variants, in the policy's form (artifacts not resolved), for checks.
    pub(crate) fn variants_unchecked(&self) -> Vec<Variant> {
        self.config
            .production_variants
            .iter()
            .map(|v| {
                let definition = &self.models[&v.model_name];
                variant(v, unresolved_model(&v.model_name, definition))
            })
            .collect()
    }

    /// The config's shadow variants, in the policy's form (artifacts not resolved).
    pub(crate) fn shadows_unchecked(&self) -> Vec<Variant> {
        self.config
            .shadow_production_variants
            .iter()
            .map(|v| {
                let definition = &self.models[&v.model_name];
                variant(v, unresolved_model(&v.model_name, definition))
            })
            .collect()
    }

    /// What the config's models fetch from `s3://`, once per model, with the longest
    /// download time any variant naming it allows (`ModelDataDownloadTimeoutInSeconds`).
    pub(crate) fn remote(&self) -> Result<Vec<WantedRemote>, String> {
        let mut wanted: Vec<WantedRemote> = Vec::new();
        for v in self
            .config
            .production_variants
            .iter()
            .chain(&self.config.shadow_production_variants)
        {
            let definition = &self.models[&v.model_name];
            let timeout = std::time::Duration::from_secs(
                v.model_data_download_timeout_in_seconds
                    .unwrap_or(DEFAULT_DOWNLOAD_TIMEOUT_SECONDS),
            );
            let named =
                |e: String| format!("variant {}, model {}: {e}", v.variant_name, v.model_name);
            let mut remotes = Vec::new();
            for c in definition.all_containers() {
                remotes.push(c.remote_model_data().map_err(named)?);
                remotes.push(c.remote_image().map_err(named)?);
            }
            for remote in remotes.into_iter().flatten() {
                let same = |w: &&mut WantedRemote| w.model == v.model_name && w.remote == remote;
                match wanted.iter_mut().find(same) {
                    Some(w) => w.timeout = w.timeout.max(timeout),
                    None => wanted.push(WantedRemote {
                        model: v.model_name.clone(),
                        pin: format!("{}@{}", v.model_name, self.created[&v.model_name]),
                        remote,
                        timeout,
                    }),
                }
            }
        }
        Ok(wanted)
    }

    /// Resolve every model's artifact (unpacking archives into `artifacts`; the remote ones
    /// are in `fetched`, by [`Unresolved::remote`]'s entries). Blocking.
    pub(crate) fn resolve(
        self,
        artifacts: &Path,
        fetched: &[(WantedRemote, std::path::PathBuf)],
    ) -> Result<Resolved, String> {
        let fetched_path = |model: &str, remote: &Remote| {
            fetched
                .iter()
                .find(|(w, _)| w.model == model && w.remote == *remote)
                .map(|(_, p)| p.clone())
                .ok_or_else(|| "its remote artifact was not fetched".to_owned())
        };
        let resolve_all = |list: &[ProductionVariant]| -> Result<Vec<Variant>, String> {
            list.iter()
                .map(|v| {
                    let definition = &self.models[&v.model_name];
                    let named = |e: String| {
                        format!("variant {}, model {}: {e}", v.variant_name, v.model_name)
                    };
                    // Each container's artifact directory and component.
                    let mut placed = Vec::new();
                    for (i, c) in definition.all_containers().into_iter().enumerate() {
                        let digests = definition.digests_of(i);
                        let kept = digests.and_then(|d| d.model_data_url.as_deref());
                        let url = c.model_data_url.as_deref();
                        let remote = c.remote_model_data().map_err(named)?;
                        let model_data = match (remote, kept, url) {
                            _ if c.is_multi_model() => None,
                            (Some(remote), _, _) => Some(fetched_path(&v.model_name, &remote)),
                            (None, Some(digest), _) => Some(artifacts::kept(artifacts, digest)),
                            (None, None, Some(url)) => Some(artifacts::resolve(artifacts, url)),
                            (None, None, None) => None,
                        }
                        .transpose()
                        .map_err(named)?;
                        let component = match c.remote_image().map_err(named)? {
                            Some(remote) => fetched_path(&v.model_name, &remote).map_err(named)?,
                            None => component(c, digests, Some(artifacts)),
                        };
                        placed.push((component, model_data));
                    }
                    let model = model(&v.model_name, definition, placed).map_err(named)?;
                    Ok(variant(v, model))
                })
                .collect()
        };
        let variants = resolve_all(&self.config.production_variants)?;
        let shadow_variants = resolve_all(&self.config.shadow_production_variants)?;
        let production_weight: f64 = variants.iter().map(|v| v.weight).sum();
        let shadows = self
            .config
            .shadow_production_variants
            .iter()
            .zip(shadow_variants)
            .map(|(definition, v)| {
                let sampling = match definition.plinth_sampling_percentage {
                    Some(p) => p / 100.0,
                    None if production_weight > 0.0 => (v.weight / production_weight).min(1.0),
                    None => 0.0,
                };
                (v, sampling)
            })
            .collect();
        Ok(Resolved {
            config: EndpointConfig {
                name: self.name,
                variants,
            },
            shadows,
        })
    }
}

/// An endpoint config with its artifacts in place.
pub(crate) struct Resolved {
    pub(crate) config: EndpointConfig,
    /// Shadow variants and the fraction of requests each is copied.
    pub(crate) shadows: Vec<(Variant, f64)>,
}

/// The component container `c` runs: with `artifacts` (the data directory's cache), the kept
/// copy when the model has one (`digests`), else the path `Image` names.
fn component(
    c: &ContainerDefinition,
    digests: Option<&Digests>,
    artifacts: Option<&Path>,
) -> PathBuf {
    let image = &c.image;
    let kept = digests.zip(artifacts).and_then(|(digests, cache)| {
        let digest = digests.image.as_deref()?;
        Some(artifacts::kept_component(cache, digest, image))
    });
    kept.unwrap_or_else(|| {
        artifacts::local_path("Image", image).unwrap_or_else(|_| PathBuf::from(image))
    })
}

/// The policy's model for a definition whose artifacts are not resolved (for checks).
fn unresolved_model(name: &str, d: &ModelDefinition) -> Model {
    let placed: Vec<_> = d
        .all_containers()
        .into_iter()
        .map(|c| (component(c, None, None), None))
        .collect();
    // A stored definition's pipeline was checked when it was created.
    let pipeline = pipeline_of(d, &placed).ok().flatten();
    model_of(name, d, &placed, pipeline)
}

/// The policy's model for a definition; `placed` holds each container's component and
/// resolved artifact directory, in order.
fn model(
    name: &str,
    d: &ModelDefinition,
    placed: Vec<(PathBuf, Option<PathBuf>)>,
) -> Result<Model, String> {
    let pipeline = pipeline_of(d, &placed)?;
    Ok(model_of(name, d, &placed, pipeline))
}

/// A pipeline's stages from its containers and where each one's files are.
fn pipeline_of(
    d: &ModelDefinition,
    placed: &[(PathBuf, Option<PathBuf>)],
) -> Result<Option<Pipeline>, String> {
    Ok(d.pipeline()?.map(|(mode, hostnames)| Pipeline {
        mode,
        stages: d
            .all_containers()
            .into_iter()
            .zip(hostnames)
            .zip(placed)
            .map(|((c, hostname), (component, model_data))| Stage {
                hostname,
                component: component.clone(),
                model_data: model_data.clone(),
                environment: environment(c),
            })
            .collect(),
    }))
}

fn environment(c: &ContainerDefinition) -> Vec<(String, String)> {
    c.environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn model_of(
    name: &str,
    d: &ModelDefinition,
    placed: &[(PathBuf, Option<PathBuf>)],
    pipeline: Option<Pipeline>,
) -> Model {
    let (component, model_data) = placed.first().cloned().unwrap_or_default();
    Model {
        name: name.to_string(),
        component,
        model_data,
        environment: environment(d.first_container()),
        memory_bytes: (d.plinth_limits.memory_size_in_mb as usize) << 20,
        timeout_seconds: d.plinth_limits.invocation_timeout_in_seconds,
        max_response_bytes: (d.plinth_limits.max_response_size_in_mb as usize) << 20,
        graphs_from_bytes: d.plinth_limits.allow_graphs_from_bytes,
        backend: d.plinth_backend,
        multi_model: d.multi_model(),
        pipeline,
    }
}

fn variant(v: &ProductionVariant, model: Model) -> Variant {
    let serverless = v.serverless_config.map(|c| c.settings());
    Variant {
        name: v.variant_name.clone(),
        model,
        // A serverless variant's warm instances are its provisioned concurrency.
        instance_count: serverless.map_or(v.initial_instance_count as usize, |s| {
            s.provisioned_concurrency
        }),
        weight: v.initial_variant_weight,
        routing_strategy: v.routing_config.routing_strategy,
        max_queue_length: v.plinth_max_queue_length as usize,
        max_batch_size: usize::try_from(v.plinth_max_batch_size).unwrap_or(usize::MAX),
        startup_timeout_seconds: v
            .container_startup_health_check_timeout_in_seconds
            .unwrap_or(DEFAULT_STARTUP_TIMEOUT_SECONDS),
        model_cache_bytes: v.plinth_model_cache_size_in_mb.map(|mib| mib << 20),
        download_timeout_seconds: v
            .model_data_download_timeout_in_seconds
            .unwrap_or(DEFAULT_DOWNLOAD_TIMEOUT_SECONDS),
        serverless,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::variant::variant_spec;
    use plinth_runtime::Limits;
    use serde_json::json;
    use std::time::Duration;

    /// The runtime limits of variant `A` of `config` over model `m`.
    fn limits(model_definition: &ModelDefinition, config: &ConfigDefinition) -> Limits {
        let v = variant(
            &config.production_variants[0],
            unresolved_model("m", model_definition),
        );
        variant_spec("e", &v).limits
    }

    #[test]
    fn definitions_stored_before_the_newer_limits_load_with_the_runtimes_defaults() {
        // As stored before MaxResponseSizeInMB, AllowGraphsFromBytes and
        // ContainerStartupHealthCheckTimeoutInSeconds.
        let model_definition: ModelDefinition = serde_json::from_value(json!({
            "PrimaryContainer": {"Image": "/m.wasm", "Environment": {}},
            "PlinthLimits": {"MemorySizeInMB": 256, "InvocationTimeoutInSeconds": 60},
            "PlinthBackend": "Auto",
        }))
        .unwrap();
        let config: ConfigDefinition = serde_json::from_value(json!({
            "ProductionVariants": [{
                "VariantName": "A",
                "ModelName": "m",
                "InitialInstanceCount": 1,
                "InitialVariantWeight": 1.0,
                "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
                "PlinthMaxQueueLength": 128,
                "PlinthMaxBatchSize": 1,
            }],
        }))
        .unwrap();
        assert_eq!(limits(&model_definition, &config), Limits::default());
        // DescribeModel shows every limit; DescribeEndpointConfig the startup timeout only
        // when it was given, as SageMaker does.
        assert_eq!(
            serde_json::to_value(&model_definition).unwrap()["PlinthLimits"],
            json!({
                "MemorySizeInMB": 256,
                "InvocationTimeoutInSeconds": 60,
                "MaxResponseSizeInMB": 6,
                "AllowGraphsFromBytes": false,
            })
        );
        let echoed = serde_json::to_value(&config).unwrap();
        assert_eq!(
            echoed["ProductionVariants"][0].get("ContainerStartupHealthCheckTimeoutInSeconds"),
            None
        );
    }

    #[test]
    fn a_pipelines_containers_are_kept_and_staged_in_order() {
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let definition: ModelDefinition = serde_json::from_value(json!({
            "Containers": [
                {"ContainerHostname": "pre", "Image": "/a.wasm", "Environment": {"K": "1"}},
                {"ContainerHostname": "model", "Image": "/b.wasm", "ModelDataUrl": "/m"},
            ],
            "InferenceExecutionConfig": {"Mode": "Direct"},
            "PlinthDigests": {"Containers": [
                {"Image": digest('a')},
                {"Image": digest('b'), "ModelDataUrl": digest('c')},
            ]},
        }))
        .unwrap();
        let mut catalog = Catalog::default();
        catalog.models.insert(
            "p".into(),
            Record {
                name: "p".into(),
                created: 0.0,
                definition: definition.clone(),
            },
        );
        // Every container's component and artifact is kept from collection.
        let kept = catalog.kept_digests().unwrap();
        for c in ['a', 'b', 'c'] {
            assert!(kept.contains(&c.to_string().repeat(64)), "{c}: {kept:?}");
        }
        assert_eq!(definition.digests_of(1).unwrap().image, Some(digest('b')));
        // The policy's model: one stage per container, in order, with its own environment.
        let model = unresolved_model("p", &definition);
        let pipeline = model.pipeline.expect("a pipeline");
        assert_eq!(pipeline.mode, Mode::Direct);
        assert_eq!(pipeline.hostnames(), ["pre", "model"]);
        assert_eq!(pipeline.stages[0].environment, [("K".into(), "1".into())]);
        assert_eq!(pipeline.stages[1].component, PathBuf::from("/b.wasm"));
        // A model stored before pipelines has its primary container and no pipeline.
        let single: ModelDefinition =
            serde_json::from_value(json!({"PrimaryContainer": {"Image": "/m.wasm"}})).unwrap();
        assert!(unresolved_model("s", &single).pipeline.is_none());
        assert_eq!(single.all_containers().len(), 1);
    }

    #[test]
    fn given_limits_reach_the_runtime() {
        let model_definition: ModelDefinition = serde_json::from_value(json!({
            "PrimaryContainer": {"Image": "/m.wasm"},
            "PlinthLimits": {
                "MemorySizeInMB": 64,
                "InvocationTimeoutInSeconds": 5,
                "MaxResponseSizeInMB": 1024,
                "AllowGraphsFromBytes": true,
            },
        }))
        .unwrap();
        let config: ConfigDefinition = serde_json::from_value(json!({
            "ProductionVariants": [{
                "VariantName": "A",
                "ModelName": "m",
                "ContainerStartupHealthCheckTimeoutInSeconds": 2,
                "PlinthMaxQueueLength": 3,
                "PlinthMaxBatchSize": 4,
            }],
        }))
        .unwrap();
        assert_eq!(
            limits(&model_definition, &config),
            Limits {
                memory_bytes: 64 << 20,
                deadline: Duration::from_secs(5),
                startup_deadline: Duration::from_secs(2),
                max_response_bytes: 1024 << 20,
                graphs_from_bytes: true,
                max_queue: 3,
                max_batch: 4,
            }
        );
        let echoed = serde_json::to_value(&config).unwrap();
        assert_eq!(
            echoed["ProductionVariants"][0]["ContainerStartupHealthCheckTimeoutInSeconds"],
            2
        );
    }
}
