//! Which request members Plinth serves, refuses or adds: the member tree of every
//! control-plane operation's input (SageMaker's, Plinth's own, and Application Auto
//! Scaling's) and InvokeEndpoint's headers, as one static table, and the checks that keep a
//! request inside it.
//!
//! Every member of an operation's input has a [`State`]:
//!
//! * [`State::Served`]: a SageMaker member Plinth implements. A served member may name the
//!   values Plinth supports of a SageMaker enumeration (`PrimaryContainer.Mode` is served
//!   for `SingleModel` only) or boolean (`EnableNetworkIsolation`: `true` only) and, if
//!   numeric, the inclusive [`Range`] Plinth accepts: inside SageMaker's, unless the member
//!   names SageMaker's own ([`Member::sagemaker_range`]) because Plinth accepts more.
//! * [`State::Refused`]: a SageMaker member Plinth does not implement. A request that gives
//!   it is answered `ValidationException` "`ExplainerConfig` is not supported" rather
//!   than accepted and ignored. When a later change implements it, it moves to `Served`
//!   here and in the README's "SageMaker members" tables (a test keeps the two equal).
//! * [`State::Extension`]: Plinth's own (`PlinthLimits`, `PlinthMaxQueueLength`, every
//!   member of `CreateAlarm`...).
//!
//! Application Auto Scaling's operations (botocore's `application-autoscaling`:
//! `RegisterScalableTarget`, `PutScalingPolicy`...) are in the table too, under the same
//! states and checks, for SageMaker variants only: `ServiceNamespace` is served for
//! `sagemaker` and `ScalableDimension` for a variant's two dimensions, `PolicyType` for
//! `TargetTrackingScaling`; step and predictive scaling are refused. Each operation names its
//! [`Service`]; [`operations`] lists SageMaker's and Plinth's own, [`autoscaling_operations`]
//! Application Auto Scaling's, [`cloudwatch_operations`] CloudWatch's (over the metrics
//! Plinth publishes), and [`check_input`] knows them all (the names are disjoint).
//!
//! [`check_input`] walks a request body against the table: a refused member, an
//! unsupported value, a key that is in neither SageMaker's model nor Plinth's extensions,
//! a number outside its range (or not a number, or not a whole number where one is
//! required), a boolean given as anything but `true` or `false` (`"yes"`, `1`, `"true"`), or
//! a structure or list given as something else is an error that names the member by its path
//! (`ProductionVariants[0].CoreDumpConfig`). A member given as JSON `null` counts as
//! absent, as botocore and serde treat it, so `"ExplainerConfig": null` passes. A string
//! member given another type is left to the server's parse, which reports it. Free-form
//! maps (`PrimaryContainer.Environment`) are not looked into.
//!
//! [`check_invoke_headers`] does the same for InvokeEndpoint's headers: a header SageMaker
//! defines and Plinth does not implement (`X-Amzn-SageMaker-Target-Container-Hostname`) is an error;
//! any other header is HTTP's business and passes.
//!
//! Both run on every call, so both allocate only when they fail: the table is static, and
//! a header is compared with it only when its name starts with `x-amzn-sagemaker-`.
//!
//! [`rows`] and [`invoke_members`] expose the table for documentation; the tests check it
//! against botocore's service models (every SageMaker and Application Auto Scaling member at
//! every level the table describes is in it, and nothing that is not) and against the
//! README's "SageMaker members" and "Application Auto Scaling members" sections.

use crate::capacity::MAX_INSTANCE_COUNT;
use crate::config::{MAX_BATCH_SIZE, STARTUP_TIMEOUT_SECONDS};
use crate::model_limits;
use serde_json::{Map, Value};
use std::fmt;

/// What Plinth does with a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// A SageMaker member Plinth implements.
    Served,
    /// A SageMaker member Plinth does not implement: giving it is an error.
    Refused,
    /// A member of Plinth's own, not SageMaker's.
    Extension,
}

impl State {
    /// How the README's tables name the state.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Served => "served",
            State::Refused => "refused",
            State::Extension => "Plinth extension",
        }
    }
}

/// The numbers a numeric member accepts, bounds included unless said otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    /// A whole number (written without a fraction or exponent) in `[min, max]`.
    Integer {
        /// The least value.
        min: i64,
        /// The greatest value.
        max: i64,
    },
    /// Any JSON number in `[min, max]`, or `[min, max)` when `max_excluded`. JSON cannot
    /// carry infinities or NaN, so every accepted value is finite.
    Number {
        /// The least value.
        min: f64,
        /// The greatest value (or the bound below it, when `max_excluded`).
        max: f64,
        /// Whether `max` itself is refused.
        max_excluded: bool,
    },
}

impl Range {
    /// Whether `value` is a number this range accepts.
    fn accepts(&self, value: &Value) -> bool {
        let Value::Number(n) = value else {
            return false;
        };
        match *self {
            Range::Integer { min, max } => n.as_i64().is_some_and(|i| (min..=max).contains(&i)),
            Range::Number {
                min,
                max,
                max_excluded,
            } => n
                .as_f64()
                .is_some_and(|x| x >= min && (x < max || (!max_excluded && x == max))),
        }
    }

    /// Whether the range is every finite number.
    fn is_unbounded(&self) -> bool {
        matches!(*self, Range::Number { min, max, .. } if min == f64::MIN && max == f64::MAX)
    }

    /// "between 0 and 1000000", as error messages say it.
    fn describe(&self) -> String {
        match *self {
            _ if self.is_unbounded() => "a number".into(),
            Range::Integer { min, max } => format!("a whole number between {min} and {max}"),
            Range::Number {
                min,
                max,
                max_excluded: false,
            } => format!("between {} and {}", short(min), short(max)),
            Range::Number { min, max, .. } => {
                format!("at least {} and less than {}", short(min), short(max))
            }
        }
    }
}

impl fmt::Display for Range {
    /// As the README writes it: `0 to 1,000,000`, `0.5 to less than 1`, `any number`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            _ if self.is_unbounded() => f.write_str("any number"),
            Range::Integer { min, max } => write!(f, "{} to {}", grouped(min), grouped(max)),
            Range::Number {
                min,
                max,
                max_excluded,
            } => {
                let number = |x: f64| {
                    if x.fract() == 0.0 && x.abs() < 1e18 {
                        grouped(x as i64)
                    } else {
                        short(x)
                    }
                };
                let less = if max_excluded { "less than " } else { "" };
                write!(f, "{} to {less}{}", number(min), number(max))
            }
        }
    }
}

/// `x` as Rust writes it, but in exponent form (`8.51592e-109`, `6.174271e307`) when its
/// magnitude is 1e18 or more, or below 1e-6 and not 0, rather than in hundreds of digits.
fn short(x: f64) -> String {
    if x != 0.0 && !(1e-6..1e18).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

/// `1000000` as `1,000,000` (numbers below 10,000 stay as they are).
fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    if digits.len() <= 4 {
        return n.to_string();
    }
    let mut out = String::new();
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What a member holds, as far as the checks look into it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Form {
    /// A string (or a list of strings: `ResourceIds`), not looked into.
    Value,
    /// A free-form map: neither keys nor values are checked.
    Map,
    /// A number in a range.
    Number(Range),
    /// A string of which Plinth supports only these values.
    OneOf(&'static [&'static str]),
    /// A JSON boolean (`true` or `false`, not a string or number); with `Some(value)`,
    /// Plinth supports only that value.
    Boolean(Option<bool>),
    /// A structure whose members the table lists.
    Structure(&'static Shape),
    /// A list of structures whose members the table lists.
    List(&'static Shape),
}

/// A structure: its name (botocore's, or Plinth's for its own) and its members.
#[derive(Debug, PartialEq)]
pub struct Shape {
    /// The structure's name, as messages and the README's cross-references use it.
    pub name: &'static str,
    /// Its members.
    pub members: &'static [Member],
}

/// One member of a structure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Member {
    /// The member's name, exactly as the JSON key is spelled (case matters).
    pub name: &'static str,
    /// What Plinth does with it.
    pub state: State,
    /// What it holds.
    pub form: Form,
    /// SageMaker's range, for a served number whose range Plinth widens: the README shows
    /// both, and the tests check this one against botocore's. `None`: the range is inside
    /// SageMaker's.
    pub sagemaker_range: Option<Range>,
}

impl Member {
    const fn new(name: &'static str, state: State) -> Self {
        Self {
            name,
            state,
            form: Form::Value,
            sagemaker_range: None,
        }
    }

    const fn form(self, form: Form) -> Self {
        Self {
            name: self.name,
            state: self.state,
            form,
            sagemaker_range: self.sagemaker_range,
        }
    }

    const fn int(self, min: i64, max: i64) -> Self {
        self.form(Form::Number(Range::Integer { min, max }))
    }

    const fn number(self, min: f64, max: f64) -> Self {
        self.form(Form::Number(Range::Number {
            min,
            max,
            max_excluded: false,
        }))
    }

    const fn one_of(self, values: &'static [&'static str]) -> Self {
        self.form(Form::OneOf(values))
    }

    const fn boolean(self) -> Self {
        self.form(Form::Boolean(None))
    }

    const fn boolean_only(self, value: bool) -> Self {
        self.form(Form::Boolean(Some(value)))
    }

    /// SageMaker's whole-number range, which Plinth's (given with [`Member::int`]) widens.
    const fn sagemaker_int(self, min: i64, max: i64) -> Self {
        Self {
            sagemaker_range: Some(Range::Integer { min, max }),
            ..self
        }
    }

    const fn map(self) -> Self {
        self.form(Form::Map)
    }

    const fn structure(self, shape: &'static Shape) -> Self {
        self.form(Form::Structure(shape))
    }

    const fn list(self, shape: &'static Shape) -> Self {
        self.form(Form::List(shape))
    }
}

const fn served(name: &'static str) -> Member {
    Member::new(name, State::Served)
}

const fn refused(name: &'static str) -> Member {
    Member::new(name, State::Refused)
}

const fn extension(name: &'static str) -> Member {
    Member::new(name, State::Extension)
}

// ---------------------------------------------------------------------------------------
// Ranges. SageMaker's documented range (botocore's min/max) intersected with what Plinth
// holds; the tests check that each served range lies inside botocore's.
// ---------------------------------------------------------------------------------------

/// The largest relative weight of a variant. SageMaker sets no maximum; Plinth bounds it so
/// that the sum over 10 variants is far from overflowing and shares stay exact.
const MAX_WEIGHT: f64 = 1_000_000.0;
/// The largest `PlinthMaxQueueLength`: a queue slot costs memory before any request
/// arrives, and a bounded queue is the point of the setting.
const MAX_QUEUE_LENGTH: i64 = crate::config::MAX_QUEUE_LENGTH as i64;
/// List timestamps (epoch seconds): from 1970 to the end of year 9999, the last instant
/// botocore's datetime can write.
const MAX_TIMESTAMP: f64 = 253_402_300_799.0;
/// The largest integer a JSON client holding numbers as doubles writes exactly (2^53 - 1).
const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;
/// The largest magnitude of an outcome's `Value`: its square, summed over the ledger's
/// outcomes, stays far from overflowing.
const MAX_OUTCOME: f64 = 1e12;

// ---------------------------------------------------------------------------------------
// The table.
// ---------------------------------------------------------------------------------------

const TAG: Shape = Shape {
    name: "Tag",
    members: &[served("Key"), served("Value")],
};

const CONTAINER: Shape = Shape {
    name: "ContainerDefinition",
    members: &[
        served("ContainerHostname"),
        served("Image"),
        refused("ImageConfig"),
        served("Mode").one_of(&["SingleModel", "MultiModel"]),
        served("ModelDataUrl"),
        served("ModelDataSource").structure(&MODEL_DATA_SOURCE),
        refused("AdditionalModelDataSources"),
        served("Environment").map(),
        refused("ModelPackageName"),
        refused("InferenceSpecificationName"),
        served("MultiModelConfig").structure(&MULTI_MODEL_CONFIG),
        refused("ContainerMetricsConfig"),
    ],
};

const SERVERLESS_CONFIG: Shape = Shape {
    name: "ProductionVariantServerlessConfig",
    members: &[
        served("MemorySizeInMB").int(1024, 6144),
        served("MaxConcurrency").int(1, 200),
        served("ProvisionedConcurrency").int(1, 200),
        extension("PlinthIdleTimeoutInSeconds").int(1, 86_400),
    ],
};

const SERVERLESS_UPDATE_CONFIG: Shape = Shape {
    name: "ProductionVariantServerlessUpdateConfig",
    members: &[
        served("MaxConcurrency").int(1, 200),
        served("ProvisionedConcurrency").int(1, 200),
    ],
};

const MULTI_MODEL_CONFIG: Shape = Shape {
    name: "MultiModelConfig",
    members: &[served("ModelCacheSetting").one_of(&["Enabled", "Disabled"])],
};

const MODEL_DATA_SOURCE: Shape = Shape {
    name: "ModelDataSource",
    members: &[served("S3DataSource").structure(&S3_MODEL_DATA_SOURCE)],
};

const S3_MODEL_DATA_SOURCE: Shape = Shape {
    name: "S3ModelDataSource",
    members: &[
        served("S3Uri"),
        served("S3DataType").one_of(&["S3Prefix", "S3Object"]),
        served("CompressionType").one_of(&["None", "Gzip"]),
        refused("ModelAccessConfig"),
        refused("HubAccessConfig"),
        refused("ManifestS3Uri"),
        refused("ETag"),
        refused("ManifestEtag"),
    ],
};

const PLINTH_LIMITS: Shape = Shape {
    name: "PlinthLimits",
    members: &[
        extension("MemorySizeInMB").int(
            *model_limits::MEMORY_MIB.start() as i64,
            *model_limits::MEMORY_MIB.end() as i64,
        ),
        extension("InvocationTimeoutInSeconds").int(
            *model_limits::TIMEOUT_SECONDS.start() as i64,
            *model_limits::TIMEOUT_SECONDS.end() as i64,
        ),
        extension("MaxResponseSizeInMB").int(
            *model_limits::MAX_RESPONSE_MIB.start() as i64,
            *model_limits::MAX_RESPONSE_MIB.end() as i64,
        ),
        extension("AllowGraphsFromBytes").boolean(),
    ],
};

const CREATE_MODEL: Shape = Shape {
    name: "CreateModelInput",
    members: &[
        served("ModelName"),
        served("PrimaryContainer").structure(&CONTAINER),
        served("Containers").list(&CONTAINER),
        served("InferenceExecutionConfig").structure(&INFERENCE_EXECUTION_CONFIG),
        served("ExecutionRoleArn"),
        served("Tags").list(&TAG),
        refused("VpcConfig"),
        // Guests have no sockets: every model is network-isolated.
        served("EnableNetworkIsolation").boolean_only(true),
        extension("PlinthLimits").structure(&PLINTH_LIMITS),
        extension("PlinthBackend"),
    ],
};

const INFERENCE_EXECUTION_CONFIG: Shape = Shape {
    name: "InferenceExecutionConfig",
    members: &[served("Mode").one_of(&["Serial", "Direct"])],
};

const MODEL_NAME: Shape = Shape {
    name: "ModelNameInput",
    members: &[served("ModelName")],
};

const LIST: Shape = Shape {
    name: "ListInput",
    members: &[
        served("SortBy"),
        served("SortOrder"),
        served("NextToken"),
        served("MaxResults").int(1, 100),
        served("NameContains"),
        served("CreationTimeBefore").number(0.0, MAX_TIMESTAMP),
        served("CreationTimeAfter").number(0.0, MAX_TIMESTAMP),
    ],
};

const LIST_ENDPOINTS: Shape = Shape {
    name: "ListEndpointsInput",
    members: &[
        served("SortBy"),
        served("SortOrder"),
        served("NextToken"),
        served("MaxResults").int(1, 100),
        served("NameContains"),
        served("CreationTimeBefore").number(0.0, MAX_TIMESTAMP),
        served("CreationTimeAfter").number(0.0, MAX_TIMESTAMP),
        served("LastModifiedTimeBefore").number(0.0, MAX_TIMESTAMP),
        served("LastModifiedTimeAfter").number(0.0, MAX_TIMESTAMP),
        served("StatusEquals"),
    ],
};

const MODEL_CLIENT_CONFIG: Shape = Shape {
    name: "ModelClientConfig",
    members: &[
        served("InvocationsTimeoutInSeconds").int(
            crate::batch_transform::INVOCATIONS_TIMEOUT_SECONDS.0 as i64,
            crate::batch_transform::INVOCATIONS_TIMEOUT_SECONDS.1 as i64,
        ),
        served("InvocationsMaxRetries")
            .int(0, crate::batch_transform::INVOCATIONS_MAX_RETRIES.0 as i64),
    ],
};

const TRANSFORM_S3_DATA_SOURCE: Shape = Shape {
    name: "TransformS3DataSource",
    members: &[
        served("S3DataType").one_of(&["S3Prefix", "ManifestFile"]),
        served("S3Uri"),
    ],
};

const TRANSFORM_DATA_SOURCE: Shape = Shape {
    name: "TransformDataSource",
    members: &[served("S3DataSource").structure(&TRANSFORM_S3_DATA_SOURCE)],
};

const TRANSFORM_INPUT: Shape = Shape {
    name: "TransformInput",
    members: &[
        served("DataSource").structure(&TRANSFORM_DATA_SOURCE),
        served("ContentType"),
        served("CompressionType").one_of(&["None", "Gzip"]),
        served("SplitType").one_of(&["None", "Line"]),
    ],
};

const TRANSFORM_OUTPUT: Shape = Shape {
    name: "TransformOutput",
    members: &[
        served("S3OutputPath"),
        served("Accept"),
        served("AssembleWith").one_of(&["None", "Line"]),
        refused("KmsKeyId"),
    ],
};

const DATA_PROCESSING: Shape = Shape {
    name: "DataProcessing",
    members: &[
        served("InputFilter"),
        served("OutputFilter"),
        served("JoinSource").one_of(&["Input", "None"]),
    ],
};

const TRANSFORM_RESOURCES: Shape = Shape {
    name: "TransformResources",
    members: &[
        served("InstanceType"),
        served("InstanceCount").int(1, crate::batch_transform::MAX_INSTANCE_COUNT as i64),
        refused("VolumeKmsKeyId"),
        refused("TransformAmiVersion"),
    ],
};

const CREATE_TRANSFORM_JOB: Shape = Shape {
    name: "CreateTransformJobInput",
    members: &[
        served("TransformJobName"),
        served("ModelName"),
        served("MaxConcurrentTransforms").int(
            0,
            crate::batch_transform::MAX_CONCURRENT_TRANSFORMS.1 as i64,
        ),
        served("ModelClientConfig").structure(&MODEL_CLIENT_CONFIG),
        served("MaxPayloadInMB").int(0, crate::batch_transform::MAX_PAYLOAD_MB.1 as i64),
        served("BatchStrategy").one_of(&["MultiRecord", "SingleRecord"]),
        refused("Environment"),
        served("TransformInput").structure(&TRANSFORM_INPUT),
        served("TransformOutput").structure(&TRANSFORM_OUTPUT),
        refused("DataCaptureConfig"),
        served("TransformResources").structure(&TRANSFORM_RESOURCES),
        served("DataProcessing").structure(&DATA_PROCESSING),
        served("Tags").list(&TAG),
        refused("ExperimentConfig"),
        extension("PlinthCompareModels"),
    ],
};

const TRANSFORM_JOB_NAME: Shape = Shape {
    name: "TransformJobNameInput",
    members: &[served("TransformJobName")],
};

const LIST_TRANSFORM_JOBS: Shape = Shape {
    name: "ListTransformJobsInput",
    members: &[
        served("CreationTimeAfter").number(0.0, MAX_TIMESTAMP),
        served("CreationTimeBefore").number(0.0, MAX_TIMESTAMP),
        served("LastModifiedTimeAfter").number(0.0, MAX_TIMESTAMP),
        served("LastModifiedTimeBefore").number(0.0, MAX_TIMESTAMP),
        served("NameContains"),
        served("StatusEquals"),
        served("SortBy"),
        served("SortOrder"),
        served("NextToken"),
        served("MaxResults").int(1, 100),
    ],
};

const ROUTING_CONFIG: Shape = Shape {
    name: "ProductionVariantRoutingConfig",
    members: &[
        served("RoutingStrategy").one_of(&["LEAST_OUTSTANDING_REQUESTS", "RANDOM"]),
        refused("PrefixAwareRoutingConfig"),
    ],
};

const PRODUCTION_VARIANT: Shape = Shape {
    name: "ProductionVariant",
    members: &[
        served("VariantName"),
        served("ModelName"),
        served("InitialInstanceCount").int(1, MAX_INSTANCE_COUNT),
        // Accepted (boto3 scripts always give one), kept and echoed; it has no effect.
        served("InstanceType"),
        refused("InstancePools"),
        refused("VariantInstanceProvisionTimeoutInSeconds"),
        served("InitialVariantWeight").number(0.0, MAX_WEIGHT),
        refused("AcceleratorType"),
        refused("CoreDumpConfig"),
        served("ServerlessConfig").structure(&SERVERLESS_CONFIG),
        refused("VolumeSizeInGB"),
        served("ModelDataDownloadTimeoutInSeconds").int(60, 3600),
        // SageMaker's least is 60 s; a Plinth instance starts in milliseconds, and tests use
        // short deadlines.
        served("ContainerStartupHealthCheckTimeoutInSeconds")
            .int(
                *STARTUP_TIMEOUT_SECONDS.start() as i64,
                *STARTUP_TIMEOUT_SECONDS.end() as i64,
            )
            .sagemaker_int(60, 3600),
        refused("EnableSSMAccess"),
        refused("ManagedInstanceScaling"),
        served("RoutingConfig").structure(&ROUTING_CONFIG),
        refused("InferenceAmiVersion"),
        refused("CapacityReservationConfig"),
        refused("AcceleratorPartitionLayouts"),
        extension("PlinthMaxQueueLength").int(0, MAX_QUEUE_LENGTH),
        extension("PlinthMaxBatchSize").int(1, MAX_BATCH_SIZE as i64),
        // Only for a multi-model model; the server says so for another.
        extension("PlinthModelCacheSizeInMB").int(1, crate::model_cache::MAX_BUDGET_MIB as i64),
        // Only on shadow variants; the server says so for a production variant.
        extension("PlinthSamplingPercentage").number(0.0, 100.0),
    ],
};

const PLINTH_EXPERIMENT: Shape = Shape {
    name: "PlinthExperiment",
    members: &[
        extension("ControlVariant"),
        extension("Metric"),
        extension("RoutingStrategy"),
        extension("Epsilon").number(0.0, 1.0),
        // At most 1/2: an experiment has at least 2 variants (the server checks 1/n).
        extension("MinShare").number(0.0, 0.5),
        extension("Confidence").form(Form::Number(Range::Number {
            min: 0.5,
            max: 1.0,
            max_excluded: true,
        })),
        extension("AutoAction"),
        extension("AssignmentAttribute"),
        extension("OutcomeRetentionSeconds").int(1, 31_536_000),
    ],
};

const ASYNC_CLIENT_CONFIG: Shape = Shape {
    name: "AsyncInferenceClientConfig",
    members: &[served("MaxConcurrentInvocationsPerInstance").int(
        crate::async_inference::CONCURRENT_INVOCATIONS_PER_INSTANCE.0 as i64,
        crate::async_inference::CONCURRENT_INVOCATIONS_PER_INSTANCE.1 as i64,
    )],
};

const ASYNC_NOTIFICATION_CONFIG: Shape = Shape {
    name: "AsyncInferenceNotificationConfig",
    members: &[
        served("SuccessTopic"),
        served("ErrorTopic"),
        served("IncludeInferenceResponseIn"),
    ],
};

const ASYNC_OUTPUT_CONFIG: Shape = Shape {
    name: "AsyncInferenceOutputConfig",
    members: &[
        refused("KmsKeyId"),
        served("S3OutputPath"),
        served("NotificationConfig").structure(&ASYNC_NOTIFICATION_CONFIG),
        served("S3FailurePath"),
    ],
};

const ASYNC_INFERENCE_CONFIG: Shape = Shape {
    name: "AsyncInferenceConfig",
    members: &[
        served("ClientConfig").structure(&ASYNC_CLIENT_CONFIG),
        served("OutputConfig").structure(&ASYNC_OUTPUT_CONFIG),
    ],
};

const CAPTURE_OPTION: Shape = Shape {
    name: "CaptureOption",
    members: &[served("CaptureMode").one_of(&["Input", "Output", "InputAndOutput"])],
};

const CAPTURE_CONTENT_TYPE_HEADER: Shape = Shape {
    name: "CaptureContentTypeHeader",
    members: &[served("CsvContentTypes"), served("JsonContentTypes")],
};

const DATA_CAPTURE_CONFIG: Shape = Shape {
    name: "DataCaptureConfig",
    members: &[
        served("EnableCapture").boolean(),
        served("InitialSamplingPercentage").int(0, 100),
        served("DestinationS3Uri"),
        refused("KmsKeyId"),
        served("CaptureOptions").list(&CAPTURE_OPTION),
        served("CaptureContentTypeHeader").structure(&CAPTURE_CONTENT_TYPE_HEADER),
    ],
};

const CREATE_ENDPOINT_CONFIG: Shape = Shape {
    name: "CreateEndpointConfigInput",
    members: &[
        served("EndpointConfigName"),
        served("ProductionVariants").list(&PRODUCTION_VARIANT),
        served("DataCaptureConfig").structure(&DATA_CAPTURE_CONFIG),
        served("Tags").list(&TAG),
        refused("KmsKeyId"),
        served("AsyncInferenceConfig").structure(&ASYNC_INFERENCE_CONFIG),
        refused("ExplainerConfig"),
        served("ShadowProductionVariants").list(&PRODUCTION_VARIANT),
        refused("ExecutionRoleArn"),
        refused("VpcConfig"),
        served("EnableNetworkIsolation").boolean_only(true),
        refused("MetricsConfig"),
        refused("TracingConfig"),
        refused("CrossRegionTrafficConfig"),
        extension("PlinthExperiment").structure(&PLINTH_EXPERIMENT),
    ],
};

const ENDPOINT_CONFIG_NAME: Shape = Shape {
    name: "EndpointConfigNameInput",
    members: &[served("EndpointConfigName")],
};

const CAPACITY_SIZE: Shape = Shape {
    name: "CapacitySize",
    members: &[
        served("Type"),
        // INSTANCE_COUNT: at most the new fleet (at most 1000 instances);
        // CAPACITY_PERCENT: at most 100.
        served("Value").int(1, MAX_INSTANCE_COUNT),
    ],
};

const TRAFFIC_ROUTING: Shape = Shape {
    name: "TrafficRoutingConfig",
    members: &[
        served("Type"),
        served("WaitIntervalInSeconds").int(0, crate::rollout::MAX_WAIT_SECONDS),
        served("CanarySize").structure(&CAPACITY_SIZE),
        served("LinearStepSize").structure(&CAPACITY_SIZE),
    ],
};

const EXECUTION_TIMEOUT: (i64, i64) = (
    crate::rollout::MIN_EXECUTION_TIMEOUT_SECONDS,
    crate::rollout::MAX_EXECUTION_TIMEOUT_SECONDS,
);

const BLUE_GREEN: Shape = Shape {
    name: "BlueGreenUpdatePolicy",
    members: &[
        served("TrafficRoutingConfiguration").structure(&TRAFFIC_ROUTING),
        served("TerminationWaitInSeconds").int(0, crate::rollout::MAX_WAIT_SECONDS),
        served("MaximumExecutionTimeoutInSeconds").int(EXECUTION_TIMEOUT.0, EXECUTION_TIMEOUT.1),
    ],
};

const ROLLING: Shape = Shape {
    name: "RollingUpdatePolicy",
    members: &[
        served("MaximumBatchSize").structure(&CAPACITY_SIZE),
        served("WaitIntervalInSeconds").int(0, crate::rollout::MAX_WAIT_SECONDS),
        served("MaximumExecutionTimeoutInSeconds").int(EXECUTION_TIMEOUT.0, EXECUTION_TIMEOUT.1),
        served("RollbackMaximumBatchSize").structure(&CAPACITY_SIZE),
    ],
};

const ALARM: Shape = Shape {
    name: "Alarm",
    members: &[served("AlarmName")],
};

const AUTO_ROLLBACK: Shape = Shape {
    name: "AutoRollbackConfig",
    members: &[served("Alarms").list(&ALARM)],
};

const DEPLOYMENT_CONFIG: Shape = Shape {
    name: "DeploymentConfig",
    members: &[
        served("BlueGreenUpdatePolicy").structure(&BLUE_GREEN),
        served("RollingUpdatePolicy").structure(&ROLLING),
        served("AutoRollbackConfiguration").structure(&AUTO_ROLLBACK),
    ],
};

const CREATE_ENDPOINT: Shape = Shape {
    name: "CreateEndpointInput",
    members: &[
        served("EndpointName"),
        served("EndpointConfigName"),
        served("DeploymentConfig").structure(&DEPLOYMENT_CONFIG),
        served("Tags").list(&TAG),
    ],
};

const ENDPOINT_NAME: Shape = Shape {
    name: "EndpointNameInput",
    members: &[served("EndpointName")],
};

const UPDATE_ENDPOINT: Shape = Shape {
    name: "UpdateEndpointInput",
    members: &[
        served("EndpointName"),
        served("EndpointConfigName"),
        // The new config's weights and instance counts always apply.
        served("RetainAllVariantProperties").boolean_only(false),
        refused("ExcludeRetainedVariantProperties"),
        served("DeploymentConfig").structure(&DEPLOYMENT_CONFIG),
        served("RetainDeploymentConfig").boolean(),
    ],
};

const DESIRED_WEIGHT_AND_CAPACITY: Shape = Shape {
    name: "DesiredWeightAndCapacity",
    members: &[
        served("VariantName"),
        served("DesiredWeight").number(0.0, MAX_WEIGHT),
        served("DesiredInstanceCount").int(0, MAX_INSTANCE_COUNT),
        served("ServerlessUpdateConfig").structure(&SERVERLESS_UPDATE_CONFIG),
    ],
};

const UPDATE_WEIGHTS: Shape = Shape {
    name: "UpdateEndpointWeightsAndCapacitiesInput",
    members: &[
        served("EndpointName"),
        served("DesiredWeightsAndCapacities").list(&DESIRED_WEIGHT_AND_CAPACITY),
    ],
};

const OUTCOME: Shape = Shape {
    name: "Outcome",
    members: &[
        extension("InferenceId"),
        extension("Value").number(-MAX_OUTCOME, MAX_OUTCOME),
    ],
};

const RECORD_OUTCOMES: Shape = Shape {
    name: "RecordInferenceOutcomesInput",
    members: &[
        extension("EndpointName"),
        extension("Outcomes").list(&OUTCOME),
    ],
};

const PLINTH_ENDPOINT_NAME: Shape = Shape {
    name: "PlinthEndpointNameInput",
    members: &[extension("EndpointName")],
};

const CREATE_ALARM: Shape = Shape {
    name: "CreateAlarmInput",
    members: &[
        extension("AlarmName"),
        extension("EndpointName"),
        extension("VariantName"),
        extension("Scope"),
        extension("MetricName"),
        extension("Statistic"),
        extension("ExtendedStatistic"),
        extension("ComparisonOperator"),
        extension("Threshold").number(f64::MIN, f64::MAX),
        extension("Period").int(1, crate::metric_alarm::MAX_PERIOD as i64),
        // Period × EvaluationPeriods ≤ a day and Period ≥ 1 (the server checks the product).
        extension("EvaluationPeriods").int(1, crate::metric_alarm::MAX_LOOKBACK as i64),
        extension("DatapointsToAlarm").int(1, crate::metric_alarm::MAX_LOOKBACK as i64),
        extension("TreatMissingData"),
        extension("AlarmDescription"),
        extension("Namespace"),
    ],
};

const ALARM_NAME: Shape = Shape {
    name: "AlarmNameInput",
    members: &[extension("AlarmName")],
};

const LIST_ALARMS: Shape = Shape {
    name: "ListAlarmsInput",
    members: &[
        extension("SortBy"),
        extension("SortOrder"),
        extension("NextToken"),
        extension("MaxResults").int(1, 100),
        extension("NameContains"),
        extension("CreationTimeBefore").number(0.0, MAX_TIMESTAMP),
        extension("CreationTimeAfter").number(0.0, MAX_TIMESTAMP),
        extension("LastModifiedTimeBefore").number(0.0, MAX_TIMESTAMP),
        extension("LastModifiedTimeAfter").number(0.0, MAX_TIMESTAMP),
    ],
};

const LIST_ENDPOINT_EVENTS: Shape = Shape {
    name: "ListEndpointEventsInput",
    members: &[
        extension("EndpointName"),
        // Negative: the last |n| events.
        extension("AfterSequence").int(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
        extension("MaxResults").int(1, 1000),
    ],
};

const PROMOTE_SHADOW: Shape = Shape {
    name: "PromoteShadowVariantInput",
    members: &[
        extension("EndpointName"),
        extension("ShadowVariantName"),
        extension("EndpointConfigName"),
        extension("DeploymentConfig").structure(&DEPLOYMENT_CONFIG),
    ],
};

// Application Auto Scaling, for SageMaker variants only. A scalable target is a variant
// (`ResourceId` "endpoint/E/variant/V"); the server checks the ID's form.

const SERVICE_NAMESPACE: Member = served("ServiceNamespace").one_of(&["sagemaker"]);

const SCALABLE_DIMENSION: Member = served("ScalableDimension").one_of(&[
    "sagemaker:variant:DesiredInstanceCount",
    "sagemaker:variant:DesiredProvisionedConcurrency",
]);

/// `MaxResults` of Application Auto Scaling's Describe operations (its documented 1 to 50).
const AUTOSCALING_MAX_RESULTS: Member = served("MaxResults").int(1, 50);
/// DescribeScalingPolicies' `MaxResults` (its documented 1 to 10).
const POLICIES_MAX_RESULTS: Member = served("MaxResults").int(1, 10);

/// The longest `ScaleOutCooldown` and `ScaleInCooldown`.
const MAX_COOLDOWN: i64 = crate::target_tracking::MAX_COOLDOWN_SECONDS as i64;

const SUSPENDED_STATE: Shape = Shape {
    name: "SuspendedState",
    members: &[
        served("DynamicScalingInSuspended").boolean(),
        served("DynamicScalingOutSuspended").boolean(),
        served("ScheduledScalingSuspended").boolean(),
    ],
};

const REGISTER_SCALABLE_TARGET: Shape = Shape {
    name: "RegisterScalableTargetRequest",
    members: &[
        SERVICE_NAMESPACE,
        served("ResourceId"),
        SCALABLE_DIMENSION,
        served("MinCapacity").int(0, MAX_INSTANCE_COUNT),
        served("MaxCapacity").int(0, MAX_INSTANCE_COUNT),
        served("RoleARN"),
        served("SuspendedState").structure(&SUSPENDED_STATE),
        // Plinth has no tagging operations for scalable targets.
        refused("Tags"),
    ],
};

const DEREGISTER_SCALABLE_TARGET: Shape = Shape {
    name: "DeregisterScalableTargetRequest",
    members: &[SERVICE_NAMESPACE, served("ResourceId"), SCALABLE_DIMENSION],
};

const DESCRIBE_SCALABLE_TARGETS: Shape = Shape {
    name: "DescribeScalableTargetsRequest",
    members: &[
        SERVICE_NAMESPACE,
        // A list of strings: its items' type is the server's parse's to check.
        served("ResourceIds"),
        SCALABLE_DIMENSION,
        AUTOSCALING_MAX_RESULTS,
        served("NextToken"),
    ],
};

const PREDEFINED_METRIC: Shape = Shape {
    name: "PredefinedMetricSpecification",
    members: &[
        served("PredefinedMetricType").one_of(&[
            "SageMakerVariantInvocationsPerInstance",
            "SageMakerVariantProvisionedConcurrencyUtilization",
        ]),
        refused("ResourceLabel"),
    ],
};

const METRIC_DIMENSION: Shape = Shape {
    name: "MetricDimension",
    members: &[served("Name"), served("Value")],
};

const CUSTOMIZED_METRIC: Shape = Shape {
    name: "CustomizedMetricSpecification",
    members: &[
        served("MetricName"),
        served("Namespace"),
        served("Dimensions").list(&METRIC_DIMENSION),
        served("Statistic").one_of(&["Average", "Minimum", "Maximum", "SampleCount", "Sum"]),
        served("Unit"),
        refused("Metrics"),
    ],
};

const TARGET_TRACKING: Shape = Shape {
    name: "TargetTrackingScalingPolicyConfiguration",
    members: &[
        // Application Auto Scaling's documented range.
        served("TargetValue").number(8.515920e-109, 6.174271e+307),
        served("PredefinedMetricSpecification").structure(&PREDEFINED_METRIC),
        served("CustomizedMetricSpecification").structure(&CUSTOMIZED_METRIC),
        served("ScaleOutCooldown").int(0, MAX_COOLDOWN),
        served("ScaleInCooldown").int(0, MAX_COOLDOWN),
        served("DisableScaleIn").boolean(),
    ],
};

const PUT_SCALING_POLICY: Shape = Shape {
    name: "PutScalingPolicyRequest",
    members: &[
        served("PolicyName"),
        SERVICE_NAMESPACE,
        served("ResourceId"),
        SCALABLE_DIMENSION,
        served("PolicyType").one_of(&["TargetTrackingScaling"]),
        refused("StepScalingPolicyConfiguration"),
        served("TargetTrackingScalingPolicyConfiguration").structure(&TARGET_TRACKING),
        refused("PredictiveScalingPolicyConfiguration"),
    ],
};

const DESCRIBE_SCALING_POLICIES: Shape = Shape {
    name: "DescribeScalingPoliciesRequest",
    members: &[
        // A list of strings, as `ResourceIds`.
        served("PolicyNames"),
        SERVICE_NAMESPACE,
        served("ResourceId"),
        SCALABLE_DIMENSION,
        POLICIES_MAX_RESULTS,
        served("NextToken"),
    ],
};

const DELETE_SCALING_POLICY: Shape = Shape {
    name: "DeleteScalingPolicyRequest",
    members: &[
        served("PolicyName"),
        SERVICE_NAMESPACE,
        served("ResourceId"),
        SCALABLE_DIMENSION,
    ],
};

const DESCRIBE_SCALING_ACTIVITIES: Shape = Shape {
    name: "DescribeScalingActivitiesRequest",
    members: &[
        SERVICE_NAMESPACE,
        served("ResourceId"),
        SCALABLE_DIMENSION,
        AUTOSCALING_MAX_RESULTS,
        served("NextToken"),
        served("IncludeNotScaledActivities").boolean(),
    ],
};

/// Whose API an operation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// SageMaker's (botocore's `sagemaker`), served on the SageMaker endpoint.
    SageMaker,
    /// Plinth's own, served beside SageMaker's.
    Plinth,
    /// Application Auto Scaling's (botocore's `application-autoscaling`, target prefix
    /// `AnyScaleFrontendService`), for SageMaker variants only.
    ApplicationAutoScaling,
    /// CloudWatch's (botocore's `cloudwatch`, target prefix `GraniteServiceVersion20100801`),
    /// over the metrics Plinth publishes.
    CloudWatch,
}

/// An operation and its input.
struct Operation {
    name: &'static str,
    /// Whose operation it is; SageMaker's and Application Auto Scaling's are checked against
    /// botocore.
    service: Service,
    input: &'static Shape,
}

const fn sagemaker(name: &'static str, input: &'static Shape) -> Operation {
    Operation {
        name,
        service: Service::SageMaker,
        input,
    }
}

const fn plinth(name: &'static str, input: &'static Shape) -> Operation {
    Operation {
        name,
        service: Service::Plinth,
        input,
    }
}

const fn autoscaling(name: &'static str, input: &'static Shape) -> Operation {
    Operation {
        name,
        service: Service::ApplicationAutoScaling,
        input,
    }
}

const fn cloudwatch(name: &'static str, input: &'static Shape) -> Operation {
    Operation {
        name,
        service: Service::CloudWatch,
        input,
    }
}

// CloudWatch's operations over the metrics Plinth publishes
// (`plinth_policy::metric_data`); the server checks what the table cannot (periods,
// statistics, datapoints, dimensions' count).

const CLOUDWATCH_DIMENSION: Shape = Shape {
    name: "Dimension",
    members: &[served("Name"), served("Value")],
};

const DIMENSION_FILTER: Shape = Shape {
    name: "DimensionFilter",
    members: &[served("Name"), served("Value")],
};

const CLOUDWATCH_UNIT: Member = served("Unit").one_of(crate::metric_data::UNITS);

const GET_METRIC_STATISTICS: Shape = Shape {
    name: "GetMetricStatisticsInput",
    members: &[
        served("Namespace"),
        served("MetricName"),
        served("Dimensions").list(&CLOUDWATCH_DIMENSION),
        served("StartTime").number(0.0, MAX_TIMESTAMP),
        served("EndTime").number(0.0, MAX_TIMESTAMP),
        served("Period").int(1, MAX_SAFE_INTEGER),
        // Lists of strings: the server checks each name.
        served("Statistics"),
        served("ExtendedStatistics"),
        CLOUDWATCH_UNIT,
    ],
};

const METRIC: Shape = Shape {
    name: "Metric",
    members: &[
        served("Namespace"),
        served("MetricName"),
        served("Dimensions").list(&CLOUDWATCH_DIMENSION),
    ],
};

const METRIC_STAT: Shape = Shape {
    name: "MetricStat",
    members: &[
        served("Metric").structure(&METRIC),
        served("Period").int(1, MAX_SAFE_INTEGER),
        served("Stat"),
        CLOUDWATCH_UNIT,
    ],
};

const METRIC_DATA_QUERY: Shape = Shape {
    name: "MetricDataQuery",
    members: &[
        served("Id"),
        served("MetricStat").structure(&METRIC_STAT),
        // Metric math.
        refused("Expression"),
        served("Label"),
        served("ReturnData").boolean(),
        served("Period").int(1, MAX_SAFE_INTEGER),
        // Cross-account observability.
        refused("AccountId"),
    ],
};

const GET_METRIC_DATA: Shape = Shape {
    name: "GetMetricDataInput",
    members: &[
        served("MetricDataQueries").list(&METRIC_DATA_QUERY),
        served("StartTime").number(0.0, MAX_TIMESTAMP),
        served("EndTime").number(0.0, MAX_TIMESTAMP),
        served("NextToken"),
        served("ScanBy").one_of(&["TimestampDescending", "TimestampAscending"]),
        served("MaxDatapoints").int(1, crate::metric_data::MAX_DATA_DATAPOINTS as i64),
        // Dynamic labels' time zone: Plinth's labels are plain.
        refused("LabelOptions"),
    ],
};

const ALARM_STATISTIC: Member =
    served("Statistic").one_of(&["SampleCount", "Average", "Sum", "Minimum", "Maximum"]);

const ALARM_STATE_VALUE: Member =
    served("StateValue").one_of(&["OK", "ALARM", "INSUFFICIENT_DATA"]);

const PUT_METRIC_ALARM: Shape = Shape {
    name: "PutMetricAlarmInput",
    members: &[
        served("AlarmName"),
        served("AlarmDescription"),
        served("ActionsEnabled").boolean(),
        // Plinth has no SNS, Auto Scaling or EC2 actions to run.
        refused("OKActions"),
        refused("AlarmActions"),
        refused("InsufficientDataActions"),
        served("MetricName"),
        served("Namespace"),
        ALARM_STATISTIC,
        served("ExtendedStatistic"),
        served("Dimensions").list(&CLOUDWATCH_DIMENSION),
        // Period × EvaluationPeriods at most a day (the server checks the product).
        served("Period").int(1, crate::metric_alarm::MAX_PERIOD as i64),
        CLOUDWATCH_UNIT,
        served("EvaluationPeriods").int(1, crate::metric_alarm::MAX_LOOKBACK as i64),
        served("DatapointsToAlarm").int(1, crate::metric_alarm::MAX_LOOKBACK as i64),
        served("Threshold").number(f64::MIN, f64::MAX),
        served("ComparisonOperator").one_of(crate::metric_alarm::COMPARISON_OPERATORS),
        // Strings in botocore: the server checks them (TreatMissingData's four values;
        // EvaluateLowSampleCountPercentile `evaluate` only: low-sample percentiles are
        // always evaluated).
        served("TreatMissingData"),
        served("EvaluateLowSampleCountPercentile"),
        // Metric math alarms.
        refused("Metrics"),
        refused("Tags"),
        refused("ThresholdMetricId"),
        refused("EvaluationWindow"),
        refused("WarmUpConfiguration"),
        refused("EvaluationCriteria"),
        refused("EvaluationInterval"),
        refused("ActionConfiguration"),
    ],
};

const DESCRIBE_ALARMS: Shape = Shape {
    name: "DescribeAlarmsInput",
    members: &[
        served("AlarmNames"),
        served("AlarmNamePrefix"),
        served("AlarmTypes"),
        // Composite alarms.
        refused("ChildrenOfAlarmName"),
        refused("ParentsOfAlarmName"),
        ALARM_STATE_VALUE,
        served("ActionPrefix"),
        served("MaxRecords").int(1, 100),
        served("NextToken"),
    ],
};

const DESCRIBE_ALARMS_FOR_METRIC: Shape = Shape {
    name: "DescribeAlarmsForMetricInput",
    members: &[
        served("MetricName"),
        served("Namespace"),
        ALARM_STATISTIC,
        served("ExtendedStatistic"),
        served("Dimensions").list(&CLOUDWATCH_DIMENSION),
        served("Period").int(1, MAX_SAFE_INTEGER),
        CLOUDWATCH_UNIT,
    ],
};

const ALARM_NAMES: Shape = Shape {
    name: "AlarmNamesInput",
    members: &[served("AlarmNames")],
};

const SET_ALARM_STATE: Shape = Shape {
    name: "SetAlarmStateInput",
    members: &[
        served("AlarmName"),
        ALARM_STATE_VALUE,
        served("StateReason"),
        served("StateReasonData"),
    ],
};

const DESCRIBE_ALARM_HISTORY: Shape = Shape {
    name: "DescribeAlarmHistoryInput",
    members: &[
        served("AlarmName"),
        // Contributor insights.
        refused("AlarmContributorId"),
        served("AlarmTypes"),
        served("HistoryItemType").one_of(&["ConfigurationUpdate", "StateUpdate", "Action"]),
        served("StartDate").number(0.0, MAX_TIMESTAMP),
        served("EndDate").number(0.0, MAX_TIMESTAMP),
        served("MaxRecords").int(1, 100),
        served("NextToken"),
        served("ScanBy").one_of(&["TimestampDescending", "TimestampAscending"]),
    ],
};

const LIST_METRICS: Shape = Shape {
    name: "ListMetricsInput",
    members: &[
        served("Namespace"),
        served("MetricName"),
        served("Dimensions").list(&DIMENSION_FILTER),
        served("NextToken"),
        served("RecentlyActive").one_of(&["PT3H"]),
        // One account: there are no linked ones.
        served("IncludeLinkedAccounts").boolean_only(false),
        refused("OwningAccount"),
    ],
};

const MODEL_QUALITY_APP_SPECIFICATION: Shape = Shape {
    name: "ModelQualityAppSpecification",
    members: &[
        served("ImageUri"),
        refused("ContainerEntrypoint"),
        refused("ContainerArguments"),
        refused("RecordPreprocessorSourceUri"),
        refused("PostAnalyticsProcessorSourceUri"),
        served("ProblemType").one_of(&[
            "BinaryClassification",
            "MulticlassClassification",
            "Regression",
        ]),
        refused("Environment"),
    ],
};

const MONITORING_ENDPOINT_INPUT: Shape = Shape {
    name: "EndpointInput",
    members: &[
        served("EndpointName"),
        served("LocalPath"),
        served("S3InputMode").one_of(&["File"]),
        served("S3DataDistributionType").one_of(&["FullyReplicated"]),
        refused("FeaturesAttribute"),
        served("InferenceAttribute"),
        served("ProbabilityAttribute"),
        served("ProbabilityThresholdAttribute").number(0.0, 1.0),
        served("StartTimeOffset"),
        served("EndTimeOffset"),
        refused("ExcludeFeaturesAttribute"),
    ],
};

const MONITORING_GROUND_TRUTH: Shape = Shape {
    name: "MonitoringGroundTruthS3Input",
    members: &[served("S3Uri")],
};

const MODEL_QUALITY_JOB_INPUT: Shape = Shape {
    name: "ModelQualityJobInput",
    members: &[
        served("EndpointInput").structure(&MONITORING_ENDPOINT_INPUT),
        refused("BatchTransformInput"),
        served("GroundTruthS3Input").structure(&MONITORING_GROUND_TRUTH),
    ],
};

const MONITORING_S3_OUTPUT: Shape = Shape {
    name: "MonitoringS3Output",
    members: &[
        served("S3Uri"),
        served("LocalPath"),
        served("S3UploadMode").one_of(&["EndOfJob"]),
    ],
};

const MONITORING_OUTPUT: Shape = Shape {
    name: "MonitoringOutput",
    members: &[served("S3Output").structure(&MONITORING_S3_OUTPUT)],
};

const MONITORING_OUTPUT_CONFIG: Shape = Shape {
    name: "MonitoringOutputConfig",
    members: &[
        served("MonitoringOutputs").list(&MONITORING_OUTPUT),
        refused("KmsKeyId"),
    ],
};

const MONITORING_CLUSTER_CONFIG: Shape = Shape {
    name: "MonitoringClusterConfig",
    members: &[
        served("InstanceCount").int(1, 100),
        served("InstanceType"),
        served("VolumeSizeInGB").int(1, 16_384),
        refused("VolumeKmsKeyId"),
    ],
};

const MONITORING_RESOURCES: Shape = Shape {
    name: "MonitoringResources",
    members: &[served("ClusterConfig").structure(&MONITORING_CLUSTER_CONFIG)],
};

const MONITORING_CONSTRAINTS_RESOURCE: Shape = Shape {
    name: "MonitoringConstraintsResource",
    members: &[served("S3Uri")],
};

const MODEL_QUALITY_BASELINE_CONFIG: Shape = Shape {
    name: "ModelQualityBaselineConfig",
    members: &[
        refused("BaseliningJobName"),
        served("ConstraintsResource").structure(&MONITORING_CONSTRAINTS_RESOURCE),
    ],
};

const MONITORING_STOPPING_CONDITION: Shape = Shape {
    name: "MonitoringStoppingCondition",
    members: &[served("MaxRuntimeInSeconds").int(1, 86_400)],
};

const CREATE_MODEL_QUALITY_JOB_DEFINITION: Shape = Shape {
    name: "CreateModelQualityJobDefinitionRequest",
    members: &[
        served("JobDefinitionName"),
        served("ModelQualityBaselineConfig").structure(&MODEL_QUALITY_BASELINE_CONFIG),
        served("ModelQualityAppSpecification").structure(&MODEL_QUALITY_APP_SPECIFICATION),
        served("ModelQualityJobInput").structure(&MODEL_QUALITY_JOB_INPUT),
        served("ModelQualityJobOutputConfig").structure(&MONITORING_OUTPUT_CONFIG),
        served("JobResources").structure(&MONITORING_RESOURCES),
        refused("NetworkConfig"),
        served("RoleArn"),
        served("StoppingCondition").structure(&MONITORING_STOPPING_CONDITION),
        served("Tags").list(&TAG),
    ],
};

const JOB_DEFINITION_NAME: Shape = Shape {
    name: "DescribeModelQualityJobDefinitionRequest",
    members: &[served("JobDefinitionName")],
};

const LIST_MODEL_QUALITY_JOB_DEFINITIONS: Shape = Shape {
    name: "ListModelQualityJobDefinitionsRequest",
    members: &[
        served("EndpointName"),
        served("SortBy"),
        served("SortOrder"),
        served("NextToken"),
        served("MaxResults").int(1, 100),
        served("NameContains"),
        served("CreationTimeBefore").number(0.0, MAX_TIMESTAMP),
        served("CreationTimeAfter").number(0.0, MAX_TIMESTAMP),
    ],
};

const SCHEDULE_CONFIG: Shape = Shape {
    name: "ScheduleConfig",
    members: &[
        served("ScheduleExpression"),
        served("DataAnalysisStartTime"),
        served("DataAnalysisEndTime"),
    ],
};

const MONITORING_SCHEDULE_CONFIG: Shape = Shape {
    name: "MonitoringScheduleConfig",
    members: &[
        served("ScheduleConfig").structure(&SCHEDULE_CONFIG),
        refused("MonitoringJobDefinition"),
        served("MonitoringJobDefinitionName"),
        served("MonitoringType").one_of(&["ModelQuality"]),
    ],
};

const CREATE_MONITORING_SCHEDULE: Shape = Shape {
    name: "CreateMonitoringScheduleRequest",
    members: &[
        served("MonitoringScheduleName"),
        served("MonitoringScheduleConfig").structure(&MONITORING_SCHEDULE_CONFIG),
        served("Tags").list(&TAG),
    ],
};

const MONITORING_SCHEDULE_NAME: Shape = Shape {
    name: "DescribeMonitoringScheduleRequest",
    members: &[served("MonitoringScheduleName")],
};

const LIST_MONITORING_SCHEDULES: Shape = Shape {
    name: "ListMonitoringSchedulesRequest",
    members: &[
        served("EndpointName"),
        served("SortBy"),
        served("SortOrder"),
        served("NextToken"),
        served("MaxResults").int(1, 100),
        served("NameContains"),
        served("CreationTimeBefore").number(0.0, MAX_TIMESTAMP),
        served("CreationTimeAfter").number(0.0, MAX_TIMESTAMP),
        served("LastModifiedTimeBefore").number(0.0, MAX_TIMESTAMP),
        served("LastModifiedTimeAfter").number(0.0, MAX_TIMESTAMP),
        served("StatusEquals"),
        served("MonitoringJobDefinitionName"),
        served("MonitoringTypeEquals"),
    ],
};

const LIST_MONITORING_EXECUTIONS: Shape = Shape {
    name: "ListMonitoringExecutionsRequest",
    members: &[
        served("MonitoringScheduleName"),
        served("EndpointName"),
        served("SortBy"),
        served("SortOrder"),
        served("NextToken"),
        served("MaxResults").int(1, 100),
        served("ScheduledTimeBefore").number(0.0, MAX_TIMESTAMP),
        served("ScheduledTimeAfter").number(0.0, MAX_TIMESTAMP),
        served("CreationTimeBefore").number(0.0, MAX_TIMESTAMP),
        served("CreationTimeAfter").number(0.0, MAX_TIMESTAMP),
        served("LastModifiedTimeBefore").number(0.0, MAX_TIMESTAMP),
        served("LastModifiedTimeAfter").number(0.0, MAX_TIMESTAMP),
        served("StatusEquals"),
        served("MonitoringJobDefinitionName"),
        served("MonitoringTypeEquals"),
    ],
};

/// Every control-plane operation Plinth serves, in the server's order: SageMaker's,
/// Plinth's own, then Application Auto Scaling's.
const OPERATIONS: &[Operation] = &[
    sagemaker("CreateModel", &CREATE_MODEL),
    sagemaker("DescribeModel", &MODEL_NAME),
    sagemaker("DeleteModel", &MODEL_NAME),
    sagemaker("ListModels", &LIST),
    sagemaker("CreateEndpointConfig", &CREATE_ENDPOINT_CONFIG),
    sagemaker("DescribeEndpointConfig", &ENDPOINT_CONFIG_NAME),
    sagemaker("DeleteEndpointConfig", &ENDPOINT_CONFIG_NAME),
    sagemaker("ListEndpointConfigs", &LIST),
    sagemaker("CreateEndpoint", &CREATE_ENDPOINT),
    sagemaker("DescribeEndpoint", &ENDPOINT_NAME),
    sagemaker("UpdateEndpoint", &UPDATE_ENDPOINT),
    sagemaker("UpdateEndpointWeightsAndCapacities", &UPDATE_WEIGHTS),
    sagemaker("DeleteEndpoint", &ENDPOINT_NAME),
    sagemaker("ListEndpoints", &LIST_ENDPOINTS),
    sagemaker("CreateTransformJob", &CREATE_TRANSFORM_JOB),
    sagemaker("DescribeTransformJob", &TRANSFORM_JOB_NAME),
    sagemaker("ListTransformJobs", &LIST_TRANSFORM_JOBS),
    sagemaker("StopTransformJob", &TRANSFORM_JOB_NAME),
    sagemaker(
        "CreateModelQualityJobDefinition",
        &CREATE_MODEL_QUALITY_JOB_DEFINITION,
    ),
    sagemaker("DescribeModelQualityJobDefinition", &JOB_DEFINITION_NAME),
    sagemaker("DeleteModelQualityJobDefinition", &JOB_DEFINITION_NAME),
    sagemaker(
        "ListModelQualityJobDefinitions",
        &LIST_MODEL_QUALITY_JOB_DEFINITIONS,
    ),
    sagemaker("CreateMonitoringSchedule", &CREATE_MONITORING_SCHEDULE),
    sagemaker("DescribeMonitoringSchedule", &MONITORING_SCHEDULE_NAME),
    sagemaker("ListMonitoringSchedules", &LIST_MONITORING_SCHEDULES),
    sagemaker("StopMonitoringSchedule", &MONITORING_SCHEDULE_NAME),
    sagemaker("StartMonitoringSchedule", &MONITORING_SCHEDULE_NAME),
    sagemaker("DeleteMonitoringSchedule", &MONITORING_SCHEDULE_NAME),
    sagemaker("ListMonitoringExecutions", &LIST_MONITORING_EXECUTIONS),
    plinth("RecordInferenceOutcomes", &RECORD_OUTCOMES),
    plinth("DescribeExperiment", &PLINTH_ENDPOINT_NAME),
    plinth("CreateAlarm", &CREATE_ALARM),
    plinth("DescribeAlarm", &ALARM_NAME),
    plinth("DeleteAlarm", &ALARM_NAME),
    plinth("ListAlarms", &LIST_ALARMS),
    plinth("ListEndpointEvents", &LIST_ENDPOINT_EVENTS),
    plinth("DescribeShadowVariants", &PLINTH_ENDPOINT_NAME),
    plinth("PromoteShadowVariant", &PROMOTE_SHADOW),
    plinth("ListLoadedModels", &PLINTH_ENDPOINT_NAME),
    plinth("DescribeAsyncQueue", &PLINTH_ENDPOINT_NAME),
    autoscaling("RegisterScalableTarget", &REGISTER_SCALABLE_TARGET),
    autoscaling("DeregisterScalableTarget", &DEREGISTER_SCALABLE_TARGET),
    autoscaling("DescribeScalableTargets", &DESCRIBE_SCALABLE_TARGETS),
    autoscaling("PutScalingPolicy", &PUT_SCALING_POLICY),
    autoscaling("DescribeScalingPolicies", &DESCRIBE_SCALING_POLICIES),
    autoscaling("DeleteScalingPolicy", &DELETE_SCALING_POLICY),
    autoscaling("DescribeScalingActivities", &DESCRIBE_SCALING_ACTIVITIES),
    cloudwatch("GetMetricStatistics", &GET_METRIC_STATISTICS),
    cloudwatch("GetMetricData", &GET_METRIC_DATA),
    cloudwatch("ListMetrics", &LIST_METRICS),
    cloudwatch("PutMetricAlarm", &PUT_METRIC_ALARM),
    cloudwatch("DescribeAlarms", &DESCRIBE_ALARMS),
    cloudwatch("DescribeAlarmsForMetric", &DESCRIBE_ALARMS_FOR_METRIC),
    cloudwatch("DeleteAlarms", &ALARM_NAMES),
    cloudwatch("SetAlarmState", &SET_ALARM_STATE),
    cloudwatch("DescribeAlarmHistory", &DESCRIBE_ALARM_HISTORY),
    cloudwatch("EnableAlarmActions", &ALARM_NAMES),
    cloudwatch("DisableAlarmActions", &ALARM_NAMES),
];

/// One member of InvokeEndpoint's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvokeMember {
    /// botocore's member name (`TargetModel`), or Plinth's.
    pub member: &'static str,
    /// The header that carries it; `None` for the path's `EndpointName` and the body.
    pub header: Option<&'static str>,
    /// What Plinth does with it.
    pub state: State,
}

const fn invoke(member: &'static str, header: &'static str, state: State) -> InvokeMember {
    InvokeMember {
        member,
        header: Some(header),
        state,
    }
}

/// InvokeEndpoint's members (botocore's `sagemaker-runtime`) and Plinth's header.
const INVOKE: &[InvokeMember] = &[
    InvokeMember {
        member: "EndpointName",
        header: None,
        state: State::Served,
    },
    InvokeMember {
        member: "Body",
        header: None,
        state: State::Served,
    },
    invoke("ContentType", "Content-Type", State::Served),
    invoke("Accept", "Accept", State::Served),
    invoke(
        "CustomAttributes",
        "X-Amzn-SageMaker-Custom-Attributes",
        State::Served,
    ),
    invoke(
        "TargetModel",
        "X-Amzn-SageMaker-Target-Model",
        State::Served,
    ),
    invoke(
        "TargetVariant",
        "X-Amzn-SageMaker-Target-Variant",
        State::Served,
    ),
    invoke(
        "TargetContainerHostname",
        "X-Amzn-SageMaker-Target-Container-Hostname",
        State::Served,
    ),
    invoke(
        "InferenceId",
        "X-Amzn-SageMaker-Inference-Id",
        State::Served,
    ),
    invoke(
        "EnableExplanations",
        "X-Amzn-SageMaker-Enable-Explanations",
        State::Refused,
    ),
    invoke(
        "InferenceComponentName",
        "X-Amzn-SageMaker-Inference-Component",
        State::Refused,
    ),
    invoke("SessionId", "X-Amzn-SageMaker-Session-Id", State::Refused),
    invoke(
        "PrefixAwareId",
        "X-Amzn-SageMaker-Prefix-Aware-Id",
        State::Refused,
    ),
    invoke("AssignmentKey", "X-Plinth-Assignment-Key", State::Extension),
];

// ---------------------------------------------------------------------------------------
// Checks.
// ---------------------------------------------------------------------------------------

/// What is wrong with a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A SageMaker member Plinth does not implement.
    Refused,
    /// A value of a served member that Plinth does not implement.
    Value,
    /// Neither a SageMaker member nor a Plinth extension.
    Unknown,
    /// A number out of range, or not a (whole) number.
    Range,
}

/// A request member Plinth refuses, by its path, and the whole message to answer with
/// (`ValidationException` on the control plane, `ValidationError` on InvokeEndpoint).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MemberError {
    /// The member's path: `ExplainerConfig`, `ProductionVariants[0].CoreDumpConfig`, or
    /// for InvokeEndpoint the member's name (`TargetModel`).
    pub path: String,
    /// What is wrong.
    pub problem: Problem,
    /// The user-facing text, naming the member and what to do.
    pub message: String,
}

/// One step of a path.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// A failure on its way up: the steps from the member to the top (innermost first) and
/// the message's tail, which needs no path.
struct Fault<'a> {
    steps: Vec<Step<'a>>,
    problem: Problem,
    /// For `Unknown`: the shape the key is not in.
    shape: Option<&'static Shape>,
    detail: String,
}

impl<'a> Fault<'a> {
    fn new(problem: Problem, detail: String) -> Self {
        Self {
            steps: Vec::new(),
            problem,
            shape: None,
            detail,
        }
    }

    fn within(mut self, step: Step<'a>) -> Self {
        self.steps.push(step);
        self
    }
}

/// `steps` (innermost first) as `ProductionVariants[0].CoreDumpConfig`. A key that is
/// not a plain name (an unknown one: empty, or with spaces, dots or brackets) is written as
/// a JSON string, so that the path still names it: `PlinthLimits."a.b"`, `""`.
fn path(steps: &[Step<'_>]) -> String {
    let mut out = String::new();
    for step in steps.iter().rev() {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let plain = !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if plain {
                    out.push_str(key);
                } else {
                    out.push_str(&Value::from(*key).to_string());
                }
            }
            Step::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// Check a control-plane request body against the table for `operation`.
///
/// An operation the table does not know, or a body that is not a JSON object, passes: the
/// server reports those itself. A member whose value is JSON `null` counts as absent and
/// passes. The error names the first member at fault (members of an object are visited
/// in key order):
///
/// * a refused member: "`ProductionVariants[0].CoreDumpConfig` is not supported by
///   Plinth; leave it out";
/// * an unsupported value of a served member: "`RoutingConfig.RoutingStrategy` value
///   \"PREFIX_AWARE\" is not supported; Plinth supports LEAST_OUTSTANDING_REQUESTS, RANDOM";
/// * a key that is neither SageMaker's nor Plinth's, naming the members Plinth accepts
///   there;
/// * a numeric member out of range, or given as a string, or with a fraction where a whole
///   number is required: "`ProductionVariants[0].PlinthMaxQueueLength` must be a whole
///   number between 0 and 1000000; got 1e+30".
///
/// It allocates only to report an error.
pub fn check_input(operation: &str, input: &Value) -> Result<(), MemberError> {
    let Some(op) = OPERATIONS.iter().find(|o| o.name == operation) else {
        return Ok(());
    };
    let Some(object) = input.as_object() else {
        return Ok(());
    };
    walk(op.input, object).map_err(|fault| {
        let path = path(&fault.steps);
        let message = match fault.problem {
            Problem::Refused => format!("{path} is not supported by Plinth; leave it out"),
            Problem::Unknown => {
                let shape = fault.shape.expect("an unknown member names its shape");
                let parent = path_of_parent(&fault.steps);
                let place = if parent.is_empty() {
                    format!("{operation}'s input")
                } else if parent == shape.name {
                    parent
                } else {
                    format!("{parent} ({})", shape.name)
                };
                format!(
                    "{path} is not a member of {place}; Plinth accepts {} (names are \
                     case-sensitive)",
                    fault.detail
                )
            }
            Problem::Value | Problem::Range => format!("{path} {}", fault.detail),
        };
        MemberError {
            path,
            problem: fault.problem,
            message,
        }
    })
}

fn path_of_parent(steps: &[Step<'_>]) -> String {
    path(steps.get(1..).unwrap_or_default())
}

fn walk<'a>(shape: &'static Shape, object: &'a Map<String, Value>) -> Result<(), Fault<'a>> {
    for (key, value) in object {
        let Some(member) = shape.members.iter().find(|m| m.name == key) else {
            let accepted: Vec<&str> = shape
                .members
                .iter()
                .filter(|m| m.state != State::Refused)
                .map(|m| m.name)
                .collect();
            let mut fault = Fault::new(Problem::Unknown, accepted.join(", "));
            fault.shape = Some(shape);
            return Err(fault.within(Step::Key(key)));
        };
        if value.is_null() {
            continue;
        }
        check_member(member, value).map_err(|f| f.within(Step::Key(key)))?;
    }
    Ok(())
}

fn check_member<'a>(member: &'static Member, value: &'a Value) -> Result<(), Fault<'a>> {
    if member.state == State::Refused {
        return Err(Fault::new(Problem::Refused, String::new()));
    }
    match member.form {
        Form::Value | Form::Map => Ok(()),
        Form::OneOf(allowed) => {
            let given = match value {
                Value::String(s) => s.as_str(),
                other => {
                    return Err(Fault::new(
                        Problem::Value,
                        format!(
                            "must be one of {}; got {}",
                            allowed.join(", "),
                            kind_of(other)
                        ),
                    ))
                }
            };
            if allowed.contains(&given) {
                Ok(())
            } else {
                Err(Fault::new(
                    Problem::Value,
                    format!(
                        "value {value} is not supported; Plinth supports {}",
                        allowed.join(", ")
                    ),
                ))
            }
        }
        Form::Boolean(only) => match (value, only) {
            (Value::Bool(given), Some(supported)) if *given != supported => Err(Fault::new(
                Problem::Value,
                format!("value {value} is not supported; Plinth supports {supported}"),
            )),
            (Value::Bool(_), _) => Ok(()),
            (other, _) => Err(Fault::new(
                Problem::Value,
                format!("must be a boolean; got {}", kind_of(other)),
            )),
        },
        Form::Number(range) => {
            if range.accepts(value) {
                return Ok(());
            }
            let got = match value {
                Value::Number(n) => n.to_string(),
                other => kind_of(other).to_string(),
            };
            Err(Fault::new(
                Problem::Range,
                format!("must be {}; got {got}", range.describe()),
            ))
        }
        Form::Structure(shape) => match value.as_object() {
            Some(object) => walk(shape, object),
            None => Err(Fault::new(
                Problem::Value,
                format!("must be a structure; got {}", kind_of(value)),
            )),
        },
        Form::List(shape) => {
            let Some(items) = value.as_array() else {
                return Err(Fault::new(
                    Problem::Value,
                    format!("must be a list; got {}", kind_of(value)),
                ));
            };
            for (i, item) in items.iter().enumerate() {
                if let Some(object) = item.as_object() {
                    walk(shape, object).map_err(|f| f.within(Step::Index(i)))?;
                }
            }
            Ok(())
        }
    }
}

/// What a JSON value is, in an error message.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Bool(_) => "a boolean",
        Value::Array(_) => "a list",
        Value::Object(_) => "a structure",
        Value::Null => "null",
    }
}

/// The lower-case prefix of the SageMaker headers that [`check_invoke_headers`] looks at.
const SAGEMAKER_HEADER_PREFIX: &[u8] = b"x-amzn-sagemaker-";

/// The refused InvokeEndpoint member that header `name` carries, if any (any case). A
/// name that does not start with `x-amzn-sagemaker-` is not compared with the table. For
/// a server that already visits each header once: call this in that loop.
pub fn refused_header(name: &str) -> Option<&'static InvokeMember> {
    let bytes = name.as_bytes();
    let prefix = bytes.get(..SAGEMAKER_HEADER_PREFIX.len())?;
    if bytes.len() == prefix.len() || !prefix.eq_ignore_ascii_case(SAGEMAKER_HEADER_PREFIX) {
        return None;
    }
    INVOKE.iter().find(|m| {
        m.state == State::Refused && m.header.is_some_and(|h| h.eq_ignore_ascii_case(name))
    })
}

/// Check InvokeEndpoint's header names: one that carries a member SageMaker defines and
/// Plinth does not implement is an error, "EnableExplanations
/// (X-Amzn-SageMaker-Enable-Explanations) is not supported by Plinth; leave the header
/// out". Names match in any case; other
/// headers pass. Allocates only to report an error.
pub fn check_invoke_headers<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), MemberError> {
    for name in names {
        if let Some(m) = refused_header(name) {
            return Err(invoke_error(m));
        }
    }
    Ok(())
}

/// The error for a refused InvokeEndpoint member (see [`refused_header`]).
pub fn invoke_error(member: &InvokeMember) -> MemberError {
    let header = member.header.unwrap_or("the request");
    MemberError {
        path: member.member.to_string(),
        problem: Problem::Refused,
        message: format!(
            "{} ({header}) is not supported by Plinth; leave the header out",
            member.member
        ),
    }
}

// ---------------------------------------------------------------------------------------
// The table, for documentation.
// ---------------------------------------------------------------------------------------

/// One member of one operation's input, as [`rows`] lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The operation (`CreateEndpointConfig`).
    pub operation: &'static str,
    /// Whose operation it is.
    pub service: Service,
    /// The member's path; list items are `[]`: `ProductionVariants[].CoreDumpConfig`.
    pub path: String,
    /// What Plinth does with it.
    pub state: State,
    /// What it holds (for a list or structure, its members are rows of their own).
    pub form: Form,
    /// SageMaker's range, where Plinth widens it ([`Member::sagemaker_range`]).
    pub sagemaker_range: Option<Range>,
}

impl Row {
    /// The range of a numeric member.
    pub fn range(&self) -> Option<Range> {
        match self.form {
            Form::Number(range) => Some(range),
            _ => None,
        }
    }
}

/// Every member of every operation's input (SageMaker's, Plinth's own and Application Auto
/// Scaling's, told apart by [`Row::service`]), depth first in the table's order: members of
/// structures and of list items follow their parent. Refused members are not looked into.
pub fn rows() -> impl Iterator<Item = Row> {
    let mut out = Vec::new();
    for op in OPERATIONS {
        collect(op, op.input, "", &mut out);
    }
    out.into_iter()
}

fn collect(operation: &'static Operation, shape: &'static Shape, prefix: &str, out: &mut Vec<Row>) {
    for m in shape.members {
        let path = format!("{prefix}{}", m.name);
        out.push(Row {
            operation: operation.name,
            service: operation.service,
            path: path.clone(),
            state: m.state,
            form: m.form,
            sagemaker_range: m.sagemaker_range,
        });
        match m.form {
            Form::Structure(inner) => collect(operation, inner, &format!("{path}."), out),
            Form::List(inner) => collect(operation, inner, &format!("{path}[]."), out),
            _ => {}
        }
    }
}

/// SageMaker's and Plinth's own operations, in the server's order: those the SageMaker
/// endpoint answers (not Application Auto Scaling's; see [`autoscaling_operations`]).
pub fn operations() -> impl Iterator<Item = &'static str> {
    OPERATIONS
        .iter()
        .filter(|o| matches!(o.service, Service::SageMaker | Service::Plinth))
        .map(|o| o.name)
}

/// What the member at `path` (member names from the operation's input, list items left
/// out: `["MetricDataQueries", "MetricStat", "Period"]`) of `operation` holds; `None` for a
/// path the table does not have. Protocols without types on the wire (CloudWatch's
/// `query`) read values by it.
pub fn member_form(operation: &str, path: &[&str]) -> Option<Form> {
    let mut shape = OPERATIONS.iter().find(|o| o.name == operation)?.input;
    let (last, parents) = path.split_last()?;
    for name in parents {
        shape = match shape.members.iter().find(|m| m.name == *name)?.form {
            Form::Structure(inner) | Form::List(inner) => inner,
            _ => return None,
        };
    }
    shape
        .members
        .iter()
        .find(|m| m.name == *last)
        .map(|m| m.form)
}

/// CloudWatch's operations (`GetMetricStatistics`, `GetMetricData`...), in the server's
/// order.
pub fn cloudwatch_operations() -> impl Iterator<Item = &'static str> {
    OPERATIONS
        .iter()
        .filter(|o| o.service == Service::CloudWatch)
        .map(|o| o.name)
}

/// Application Auto Scaling's operations (`RegisterScalableTarget`, `PutScalingPolicy`...),
/// in the server's order.
pub fn autoscaling_operations() -> impl Iterator<Item = &'static str> {
    OPERATIONS
        .iter()
        .filter(|o| o.service == Service::ApplicationAutoScaling)
        .map(|o| o.name)
}

/// InvokeEndpoint's members: served, refused, and Plinth's header.
pub fn invoke_members() -> &'static [InvokeMember] {
    INVOKE
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn error(operation: &str, input: Value) -> MemberError {
        check_input(operation, &input)
            .err()
            .unwrap_or_else(|| panic!("{operation} {input} was accepted"))
    }

    /// Every `(operation, input)` passes the checks.
    fn all_pass(cases: impl IntoIterator<Item = (&'static str, Value)>) {
        for (operation, input) in cases {
            assert_eq!(
                check_input(operation, &input),
                Ok(()),
                "{operation} {input}"
            );
        }
    }

    fn variant() -> Value {
        json!({
            "VariantName": "A",
            "ModelName": "m",
            "InitialInstanceCount": 2,
            "InitialVariantWeight": 0.5,
            "InstanceType": "ml.m5.large",
            "RoutingConfig": {"RoutingStrategy": "RANDOM"},
            "PlinthMaxQueueLength": 128,
            "PlinthMaxBatchSize": 8,
            "ContainerStartupHealthCheckTimeoutInSeconds": 5,
        })
    }

    #[test]
    fn served_inputs_pass() {
        let cases = [
            (
                "CreateModel",
                json!({
                    "ModelName": "m",
                    "ExecutionRoleArn": "arn:aws:iam::123456789012:role/r",
                    "PrimaryContainer": {
                        "Image": "iris.wasm",
                        "ModelDataUrl": "model",
                        "Mode": "SingleModel",
                        "Environment": {"ANY_KEY": "x", "CoreDumpConfig": "not checked"},
                    },
                    "Tags": [{"Key": "team", "Value": "ml"}],
                    "EnableNetworkIsolation": true,
                    "PlinthLimits": {
                        "MemorySizeInMB": 512,
                        "InvocationTimeoutInSeconds": 30,
                        "MaxResponseSizeInMB": 16,
                        "AllowGraphsFromBytes": false,
                    },
                    "PlinthBackend": "Tract",
                }),
            ),
            (
                "CreateEndpointConfig",
                json!({
                    "EndpointConfigName": "c",
                    "ProductionVariants": [variant(), variant()],
                    "ShadowProductionVariants": [{"VariantName": "S", "ModelName": "m", "PlinthSamplingPercentage": 100}],
                    "PlinthExperiment": {"ControlVariant": "A", "Confidence": 0.95, "MinShare": 0.1, "OutcomeRetentionSeconds": 86400},
                    "ExplainerConfig": null,
                    "DataCaptureConfig": {
                        "EnableCapture": true,
                        "InitialSamplingPercentage": 100,
                        "DestinationS3Uri": "s3://b/capture",
                        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                        "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]},
                    },
                }),
            ),
            (
                "UpdateEndpoint",
                json!({
                    "EndpointName": "e",
                    "EndpointConfigName": "c",
                    "RetainAllVariantProperties": false,
                    "RetainDeploymentConfig": true,
                    "DeploymentConfig": {
                        "BlueGreenUpdatePolicy": {
                            "TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 60, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}},
                            "MaximumExecutionTimeoutInSeconds": 600,
                        },
                        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "a"}]},
                    },
                }),
            ),
            (
                "UpdateEndpointWeightsAndCapacities",
                json!({"EndpointName": "e", "DesiredWeightsAndCapacities": [{"VariantName": "A", "DesiredWeight": 0, "DesiredInstanceCount": 0}]}),
            ),
            (
                "ListEndpoints",
                json!({"MaxResults": 100, "CreationTimeAfter": 1700000000.5, "StatusEquals": "InService"}),
            ),
            (
                "ListEndpointEvents",
                json!({"EndpointName": "e", "AfterSequence": -10}),
            ),
            (
                "CreateAlarm",
                json!({"AlarmName": "a", "EndpointName": "e", "MetricName": "ModelLatency", "ExtendedStatistic": "p99", "ComparisonOperator": "GreaterThanThreshold", "Threshold": -1e300, "Period": 10, "EvaluationPeriods": 3}),
            ),
            (
                "RecordInferenceOutcomes",
                json!({"EndpointName": "e", "Outcomes": [{"InferenceId": "i", "Value": 1}]}),
            ),
            (
                "CreateTransformJob",
                json!({"TransformJobName": "t", "ModelName": "m", "MaxConcurrentTransforms": 0, "MaxPayloadInMB": 6, "BatchStrategy": "MultiRecord", "ModelClientConfig": {"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 3}, "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in"}}, "ContentType": "text/csv", "CompressionType": "Gzip", "SplitType": "Line"}, "TransformOutput": {"S3OutputPath": "s3://b/out", "Accept": "text/csv", "AssembleWith": "Line"}, "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 2}}),
            ),
            // Not in the table: the server answers UnknownOperationException.
            ("CreateCompilationJob", json!({"Anything": 1})),
            // Not an object: the server answers SerializationException.
            ("CreateModel", json!([1, 2])),
        ];
        all_pass(cases);
    }

    #[test]
    fn a_refused_member_is_named_at_top_level_and_in_list_items() {
        let e = error(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": "c", "ProductionVariants": [variant()], "ExplainerConfig": {"ClarifyExplainerConfig": {}}}),
        );
        assert_eq!(e.path, "ExplainerConfig");
        assert_eq!(e.problem, Problem::Refused);
        assert_eq!(
            e.message,
            "ExplainerConfig is not supported by Plinth; leave it out"
        );

        let e = error(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": "c", "ProductionVariants": [variant()], "DataCaptureConfig": {"InitialSamplingPercentage": 10, "KmsKeyId": "k", "DestinationS3Uri": "s3://b/c", "CaptureOptions": [{"CaptureMode": "Input"}]}}),
        );
        assert_eq!(e.path, "DataCaptureConfig.KmsKeyId");
        assert_eq!(e.problem, Problem::Refused);
        let e = error(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": "c", "ProductionVariants": [variant()], "DataCaptureConfig": {"InitialSamplingPercentage": 101}}),
        );
        assert_eq!(e.path, "DataCaptureConfig.InitialSamplingPercentage");
        assert_eq!(e.problem, Problem::Range);
        let e = error(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": "c", "ProductionVariants": [variant()], "DataCaptureConfig": {"CaptureOptions": [{"CaptureMode": "Both"}]}}),
        );
        assert_eq!(e.path, "DataCaptureConfig.CaptureOptions[0].CaptureMode");

        let mut core_dump = variant();
        core_dump["CoreDumpConfig"] = json!({"DestinationS3Uri": "s3://b/dumps"});
        let e = error(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": "c", "ProductionVariants": [variant(), core_dump]}),
        );
        assert_eq!(e.path, "ProductionVariants[1].CoreDumpConfig");
        assert!(
            e.message
                .starts_with("ProductionVariants[1].CoreDumpConfig is not supported"),
            "{}",
            e.message
        );

        // Refused whatever the value, even SageMaker's default.
        let e = error(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": "c", "ProductionVariants": [{"VariantName": "A", "EnableSSMAccess": false}]}),
        );
        assert_eq!(e.path, "ProductionVariants[0].EnableSSMAccess");
        let e = error(
            "UpdateEndpoint",
            json!({"EndpointName": "e", "EndpointConfigName": "c", "ExcludeRetainedVariantProperties": []}),
        );
        assert_eq!(e.path, "ExcludeRetainedVariantProperties");
        let e = error(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": "c", "ProductionVariants": [{"VariantName": "A", "RoutingConfig": {"RoutingStrategy": "RANDOM", "PrefixAwareRoutingConfig": {}}}]}),
        );
        assert_eq!(
            e.path,
            "ProductionVariants[0].RoutingConfig.PrefixAwareRoutingConfig"
        );
        let e = error(
            "UpdateEndpointWeightsAndCapacities",
            json!({"EndpointName": "e", "DesiredWeightsAndCapacities": [{"VariantName": "A", "ServerlessUpdateConfig": {"MaxConcurrency": 1, "Memory": 2}}]}),
        );
        assert_eq!(
            e.path,
            "DesiredWeightsAndCapacities[0].ServerlessUpdateConfig.Memory"
        );
    }

    #[test]
    fn the_issue_s_examples_are_refused() {
        let e = error(
            "CreateModel",
            json!({"ModelName": "m", "PrimaryContainer": {"Image": "x.wasm", "Mode": "Hybrid"}}),
        );
        assert_eq!(e.path, "PrimaryContainer.Mode");
        assert_eq!(e.problem, Problem::Value);
        assert_eq!(
            e.message,
            "PrimaryContainer.Mode value \"Hybrid\" is not supported; Plinth supports SingleModel, MultiModel"
        );
        let mut v = variant();
        v["CoreDumpConfig"] = json!({});
        assert_eq!(
            error(
                "CreateEndpointConfig",
                json!({"EndpointConfigName": "c", "ProductionVariants": [v]})
            )
            .path,
            "ProductionVariants[0].CoreDumpConfig"
        );
        assert_eq!(
            check_invoke_headers(["x-amzn-sagemaker-enable-explanations"])
                .unwrap_err()
                .path,
            "EnableExplanations"
        );
    }

    #[test]
    fn unsupported_values_of_served_members_are_named() {
        let e = error(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": "c", "ProductionVariants": [{"VariantName": "A", "RoutingConfig": {"RoutingStrategy": "PREFIX_AWARE"}}]}),
        );
        assert_eq!(
            e.message,
            "ProductionVariants[0].RoutingConfig.RoutingStrategy value \"PREFIX_AWARE\" is not \
             supported; Plinth supports LEAST_OUTSTANDING_REQUESTS, RANDOM"
        );
        let e = error(
            "UpdateEndpoint",
            json!({"EndpointName": "e", "EndpointConfigName": "c", "RetainAllVariantProperties": true}),
        );
        assert_eq!(
            e.message,
            "RetainAllVariantProperties value true is not supported; Plinth supports false"
        );
        let e = error(
            "CreateModel",
            json!({"ModelName": "m", "EnableNetworkIsolation": false}),
        );
        assert_eq!(e.path, "EnableNetworkIsolation");
        // A value of another type is named with what was allowed.
        let e = error(
            "UpdateEndpoint",
            json!({"EndpointName": "e", "EndpointConfigName": "c", "RetainAllVariantProperties": 1}),
        );
        assert_eq!(
            e.message,
            "RetainAllVariantProperties must be a boolean; got a number"
        );
        // A string member given another type.
        let e = error(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": "c", "ProductionVariants": [{"VariantName": "A", "RoutingConfig": {"RoutingStrategy": true}}]}),
        );
        assert_eq!(
            e.message,
            "ProductionVariants[0].RoutingConfig.RoutingStrategy must be one of \
             LEAST_OUTSTANDING_REQUESTS, RANDOM; got a boolean"
        );
        // So is a structure or a list given as something else.
        let e = error(
            "CreateModel",
            json!({"ModelName": "m", "PrimaryContainer": "echo"}),
        );
        assert_eq!(
            e.message,
            "PrimaryContainer must be a structure; got a string"
        );
        let e = error(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": "c", "ProductionVariants": {"VariantName": "A"}}),
        );
        assert_eq!(
            e.message,
            "ProductionVariants must be a list; got a structure"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_the_members_plinth_accepts() {
        let e = error("CreateModel", json!({"ModelName": "m", "modelName": "m"}));
        assert_eq!(e.path, "modelName");
        assert_eq!(e.problem, Problem::Unknown);
        assert_eq!(
            e.message,
            "modelName is not a member of CreateModel's input; Plinth accepts ModelName, \
             PrimaryContainer, Containers, InferenceExecutionConfig, ExecutionRoleArn, Tags, \
             EnableNetworkIsolation, PlinthLimits, PlinthBackend (names are case-sensitive)"
        );
        // In an extension shape.
        let e = error(
            "CreateModel",
            json!({"ModelName": "m", "PlinthLimits": {"MemorySizeInMB": 64, "MemoryMiB": 64}}),
        );
        assert_eq!(e.path, "PlinthLimits.MemoryMiB");
        assert_eq!(
            e.message,
            "PlinthLimits.MemoryMiB is not a member of PlinthLimits; Plinth accepts \
             MemorySizeInMB, InvocationTimeoutInSeconds, MaxResponseSizeInMB, \
             AllowGraphsFromBytes (names are case-sensitive)"
        );
        let mut v = variant();
        v["PlinthQueue"] = json!(1);
        let e = error(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": "c", "ProductionVariants": [v]}),
        );
        assert_eq!(e.path, "ProductionVariants[0].PlinthQueue");
        assert!(
            e.message
                .contains("is not a member of ProductionVariants[0] (ProductionVariant)"),
            "{}",
            e.message
        );
        // Plinth's own operations.
        let e = error("CreateAlarm", json!({"AlarmName": "a", "Dimensions": []}));
        assert_eq!(e.path, "Dimensions");
        let e = error(
            "RecordInferenceOutcomes",
            json!({"EndpointName": "e", "Outcomes": [{"InferenceId": "i", "Value": 1, "Weight": 2}]}),
        );
        assert_eq!(e.path, "Outcomes[0].Weight");
        // Found by `tests/fuzz_members.rs`: an empty key was named by an empty path, and
        // the message began " is not a member". Keys that are not plain names are quoted.
        let e = error("CreateModel", json!({"": 1}));
        assert_eq!(e.path, "\"\"");
        assert!(
            e.message
                .starts_with("\"\" is not a member of CreateModel's input"),
            "{}",
            e.message
        );
        let e = error(
            "CreateModel",
            json!({"PlinthLimits": {"Memory Size.In[MB]": 1}}),
        );
        assert_eq!(e.path, "PlinthLimits.\"Memory Size.In[MB]\"");
        // StatusEquals belongs to ListEndpoints only.
        assert_eq!(
            error("ListModels", json!({"StatusEquals": "InService"})).path,
            "StatusEquals"
        );
    }

    #[test]
    fn numbers_are_range_checked() {
        let mut v = variant();
        v["PlinthMaxQueueLength"] = json!(18_446_744_073_709_551_615u64);
        let e = error(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": "c", "ProductionVariants": [v]}),
        );
        assert_eq!(e.path, "ProductionVariants[0].PlinthMaxQueueLength");
        assert_eq!(e.problem, Problem::Range);
        assert_eq!(
            e.message,
            "ProductionVariants[0].PlinthMaxQueueLength must be a whole number between 0 and \
             1000000; got 18446744073709551615"
        );
        for (bad, got) in [
            (json!(1e30), "got 1e+30"),
            (json!(-1), "got -1"),
            (json!(2.5), "got 2.5"),
            (json!(4.0), "got 4.0"),
            (json!("12"), "got a string"),
            (json!(true), "got a boolean"),
        ] {
            let mut v = variant();
            v["PlinthMaxBatchSize"] = bad.clone();
            let e = error(
                "CreateEndpointConfig",
                json!({"EndpointConfigName": "c", "ProductionVariants": [v]}),
            );
            assert_eq!(
                e.message,
                format!(
                    "ProductionVariants[0].PlinthMaxBatchSize must be a whole number between 1 \
                     and 256; {got}"
                ),
                "{bad}"
            );
        }
        let e = error(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": "c", "ProductionVariants": [variant()], "PlinthExperiment": {"Confidence": 1.0}}),
        );
        assert_eq!(
            e.message,
            "PlinthExperiment.Confidence must be at least 0.5 and less than 1; got 1.0"
        );
        let e = error(
            "UpdateEndpointWeightsAndCapacities",
            json!({"EndpointName": "e", "DesiredWeightsAndCapacities": [{"VariantName": "A", "DesiredWeight": -0.5}]}),
        );
        assert_eq!(
            e.message,
            "DesiredWeightsAndCapacities[0].DesiredWeight must be between 0 and 1000000; got -0.5"
        );
        let e = error(
            "UpdateEndpoint",
            json!({"EndpointName": "e", "EndpointConfigName": "c", "DeploymentConfig": {"RollingUpdatePolicy": {"MaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 0}, "WaitIntervalInSeconds": 0}}}),
        );
        assert_eq!(
            e.path,
            "DeploymentConfig.RollingUpdatePolicy.MaximumBatchSize.Value"
        );
        let e = error(
            "CreateAlarm",
            json!({"AlarmName": "a", "Threshold": "high"}),
        );
        assert_eq!(e.message, "Threshold must be a number; got a string");
        let e = error(
            "ListEndpointEvents",
            json!({"EndpointName": "e", "AfterSequence": i64::MIN}),
        );
        assert_eq!(e.path, "AfterSequence");
        // Bounds are inclusive.
        for (operation, input) in [
            (
                "CreateModel",
                json!({"PlinthLimits": {"MemorySizeInMB": 4096, "InvocationTimeoutInSeconds": 1}}),
            ),
            ("ListModels", json!({"MaxResults": 1})),
            ("ListEndpointEvents", json!({"MaxResults": 1000})),
        ] {
            assert_eq!(check_input(operation, &input), Ok(()), "{input}");
        }
    }

    #[test]
    fn booleans_are_typed() {
        let model = |limits: Value| json!({"ModelName": "m", "PlinthLimits": limits});
        for ok in [json!(true), json!(false), Value::Null] {
            let input = model(json!({ "AllowGraphsFromBytes": ok }));
            assert_eq!(check_input("CreateModel", &input), Ok(()), "{input}");
        }
        for (bad, got) in [
            (json!("yes"), "a string"),
            (json!("true"), "a string"),
            (json!(1), "a number"),
            (json!(0), "a number"),
            (json!([true]), "a list"),
            (json!({}), "a structure"),
        ] {
            let e = error("CreateModel", model(json!({ "AllowGraphsFromBytes": bad })));
            assert_eq!(e.path, "PlinthLimits.AllowGraphsFromBytes");
            assert_eq!(e.problem, Problem::Value);
            assert_eq!(
                e.message,
                format!("PlinthLimits.AllowGraphsFromBytes must be a boolean; got {got}"),
                "{bad}"
            );
        }
        // A boolean Plinth supports one value of: the other value, and the right one as a
        // string, are refused.
        let e = error(
            "CreateModel",
            json!({"ModelName": "m", "EnableNetworkIsolation": "true"}),
        );
        assert_eq!(
            e.message,
            "EnableNetworkIsolation must be a boolean; got a string"
        );
        let e = error(
            "CreateEndpointConfig",
            json!({"EndpointConfigName": "c", "EnableNetworkIsolation": false}),
        );
        assert_eq!(
            e.message,
            "EnableNetworkIsolation value false is not supported; Plinth supports true"
        );
        let e = error(
            "UpdateEndpoint",
            json!({"EndpointName": "e", "EndpointConfigName": "c", "RetainDeploymentConfig": "yes"}),
        );
        assert_eq!(e.path, "RetainDeploymentConfig");
    }

    #[test]
    fn a_range_wider_than_sagemakers_names_sagemakers() {
        let rows: Vec<Row> = rows().collect();
        let startup = rows
            .iter()
            .find(|r| {
                r.operation == "CreateEndpointConfig"
                    && r.path == "ProductionVariants[].ContainerStartupHealthCheckTimeoutInSeconds"
            })
            .expect("the startup timeout's row");
        assert_eq!(startup.state, State::Served);
        assert_eq!(startup.range(), Some(Range::Integer { min: 1, max: 3600 }));
        assert_eq!(
            startup.sagemaker_range,
            Some(Range::Integer { min: 60, max: 3600 })
        );
        for (value, ok) in [
            (1, true),
            (59, true),
            (3600, true),
            (0, false),
            (3601, false),
        ] {
            let mut v = variant();
            v["ContainerStartupHealthCheckTimeoutInSeconds"] = json!(value);
            let input = json!({"EndpointConfigName": "c", "ShadowProductionVariants": [v]});
            match check_input("CreateEndpointConfig", &input) {
                Ok(()) => assert!(ok, "{value} was accepted"),
                Err(e) => {
                    assert!(!ok, "{value}: {}", e.message);
                    assert_eq!(
                        e.message,
                        format!(
                            "ShadowProductionVariants[0].ContainerStartupHealthCheckTimeoutInSeconds \
                             must be a whole number between 1 and 3600; got {value}"
                        )
                    );
                }
            }
        }
        // Only served numbers widen SageMaker's ranges.
        for r in &rows {
            if r.sagemaker_range.is_some() {
                assert_eq!(r.state, State::Served, "{r:?}");
                assert!(r.range().is_some(), "{r:?}");
            }
        }
    }

    #[test]
    fn refused_headers_are_named_in_any_case() {
        assert_eq!(
            check_invoke_headers([
                "content-type",
                "accept",
                "x-amzn-sagemaker-custom-attributes",
                "x-amzn-sagemaker-target-variant",
                "x-amzn-sagemaker-inference-id",
                "x-plinth-assignment-key",
                "x-amzn-sagemaker-something-new",
                "x-amzn-sagemaker-",
                "x-amz-date",
                "authorization",
            ]),
            Ok(())
        );
        for name in [
            "x-amzn-sagemaker-enable-explanations",
            "X-Amzn-SageMaker-Enable-Explanations",
            "X-AMZN-SAGEMAKER-ENABLE-EXPLANATIONS",
        ] {
            let e = check_invoke_headers(["content-type", name]).unwrap_err();
            assert_eq!(e.path, "EnableExplanations");
            assert_eq!(
                e.message,
                "EnableExplanations (X-Amzn-SageMaker-Enable-Explanations) is not \
                 supported by Plinth; leave the header out"
            );
        }
        assert_eq!(
            refused_header("x-amzn-sagemaker-target-container-hostname"),
            None
        );
        for (header, member) in [
            ("x-amzn-sagemaker-enable-explanations", "EnableExplanations"),
            (
                "x-amzn-sagemaker-inference-component",
                "InferenceComponentName",
            ),
            ("x-amzn-sagemaker-session-id", "SessionId"),
            ("x-amzn-sagemaker-prefix-aware-id", "PrefixAwareId"),
        ] {
            assert_eq!(refused_header(header).map(|m| m.member), Some(member));
        }
        assert_eq!(refused_header("x-amzn-sagemaker-inference-id"), None);
        assert_eq!(refused_header("x-amzn"), None);
        assert_eq!(refused_header("é-amzn-sagemaker-target-model"), None);
    }

    #[test]
    fn rows_list_nested_members_by_path() {
        let rows: Vec<Row> = rows().collect();
        let find = |op: &str, path: &str| {
            rows.iter()
                .find(|r| r.operation == op && r.path == path)
                .unwrap_or_else(|| panic!("no row {op} {path}"))
        };
        assert_eq!(
            find(
                "CreateEndpointConfig",
                "ProductionVariants[].CoreDumpConfig"
            )
            .state,
            State::Refused
        );
        assert_eq!(
            find(
                "CreateEndpointConfig",
                "ShadowProductionVariants[].PlinthMaxQueueLength"
            )
            .range(),
            Some(Range::Integer {
                min: 0,
                max: 1_000_000
            })
        );
        assert_eq!(
            find(
                "UpdateEndpoint",
                "DeploymentConfig.BlueGreenUpdatePolicy.TrafficRoutingConfiguration.CanarySize.Value"
            )
            .state,
            State::Served
        );
        assert_eq!(
            find("CreateModel", "PrimaryContainer.Environment").form,
            Form::Map
        );
        let operations: Vec<&str> = operations().collect();
        assert_eq!(operations.len(), 40);
        let autoscaling: Vec<&str> = autoscaling_operations().collect();
        assert_eq!(autoscaling.len(), 7);
        let cloudwatch: Vec<&str> = cloudwatch_operations().collect();
        assert_eq!(cloudwatch.len(), 11);
        for op in &operations {
            assert!(
                rows.iter().any(|r| r.operation == *op
                    && matches!(r.service, Service::SageMaker | Service::Plinth)),
                "{op}"
            );
        }
        for op in &cloudwatch {
            assert!(
                !operations.contains(op) && !autoscaling.contains(op),
                "{op} twice"
            );
        }
        for op in &autoscaling {
            assert!(!operations.contains(op), "{op} is listed twice");
            assert!(
                rows.iter()
                    .any(|r| r.operation == *op && r.service == Service::ApplicationAutoScaling),
                "{op}"
            );
        }
        // Every member of Plinth's own operations is Plinth's (nested SageMaker shapes
        // aside), Application Auto Scaling's have no extensions at all, and no shape names a
        // member twice.
        for op in OPERATIONS {
            if op.service == Service::Plinth {
                assert!(op.input.members.iter().all(|m| m.state == State::Extension));
            }
        }
        for r in &rows {
            if matches!(
                r.service,
                Service::ApplicationAutoScaling | Service::CloudWatch
            ) {
                assert_ne!(r.state, State::Extension, "{r:?}");
            }
        }
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            assert!(seen.insert((r.operation, r.path.clone())), "{r:?} twice");
        }
    }

    /// SageMaker's documentation's example: a variant scaled between 1 and 8 instances on
    /// invocations per instance.
    fn variant_target() -> Value {
        json!({
            "ServiceNamespace": "sagemaker",
            "ResourceId": "endpoint/MyEndpoint/variant/MyVariant",
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        })
    }

    fn with(mut base: Value, more: Value) -> Value {
        let object = base.as_object_mut().expect("an object");
        for (k, v) in more.as_object().expect("an object") {
            object.insert(k.clone(), v.clone());
        }
        base
    }

    fn scaling_policy(configuration: Value) -> Value {
        with(
            variant_target(),
            json!({
                "PolicyName": "Invocations-ScalingPolicy",
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": configuration,
            }),
        )
    }

    #[test]
    fn autoscaling_inputs_for_sagemaker_variants_pass() {
        let cases = [
            (
                "RegisterScalableTarget",
                with(
                    variant_target(),
                    json!({"MinCapacity": 1, "MaxCapacity": 8}),
                ),
            ),
            (
                "RegisterScalableTarget",
                with(
                    variant_target(),
                    json!({
                        "ScalableDimension": "sagemaker:variant:DesiredProvisionedConcurrency",
                        "MinCapacity": 0,
                        "MaxCapacity": 1000,
                        "RoleARN": "arn:aws:iam::123456789012:role/r",
                        "SuspendedState": {"DynamicScalingInSuspended": true, "ScheduledScalingSuspended": false},
                        "Tags": null,
                    }),
                ),
            ),
            (
                "PutScalingPolicy",
                scaling_policy(json!({
                    "TargetValue": 70.0,
                    "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                    "ScaleInCooldown": 600,
                    "ScaleOutCooldown": 300,
                })),
            ),
            (
                "PutScalingPolicy",
                scaling_policy(json!({
                    "TargetValue": 5,
                    "CustomizedMetricSpecification": {
                        "MetricName": "ModelLatency",
                        "Namespace": "AWS/SageMaker",
                        "Dimensions": [{"Name": "EndpointName", "Value": "MyEndpoint"}],
                        "Statistic": "Average",
                        "Unit": "Microseconds",
                    },
                    "ScaleInCooldown": 0,
                    "ScaleOutCooldown": 3600,
                    "DisableScaleIn": true,
                })),
            ),
            ("DeregisterScalableTarget", variant_target()),
            (
                "DeleteScalingPolicy",
                with(variant_target(), json!({"PolicyName": "p"})),
            ),
            (
                "DescribeScalableTargets",
                json!({"ServiceNamespace": "sagemaker", "ResourceIds": ["endpoint/E/variant/V"], "MaxResults": 50, "NextToken": "t"}),
            ),
            (
                "DescribeScalingPolicies",
                json!({"ServiceNamespace": "sagemaker", "PolicyNames": ["p"], "MaxResults": 1}),
            ),
            (
                "DescribeScalingActivities",
                with(
                    variant_target(),
                    json!({"IncludeNotScaledActivities": true}),
                ),
            ),
        ];
        all_pass(cases);
    }

    #[test]
    fn autoscaling_inputs_are_checked_as_strictly_as_sagemaker_s() {
        // An unknown key, at the top and within a policy's configuration.
        let e = error(
            "RegisterScalableTarget",
            with(variant_target(), json!({"MinCapacty": 1})),
        );
        assert_eq!(e.path, "MinCapacty");
        assert_eq!(e.problem, Problem::Unknown);
        assert_eq!(
            e.message,
            "MinCapacty is not a member of RegisterScalableTarget's input; Plinth accepts \
             ServiceNamespace, ResourceId, ScalableDimension, MinCapacity, MaxCapacity, RoleARN, \
             SuspendedState (names are case-sensitive)"
        );
        let e = error(
            "PutScalingPolicy",
            scaling_policy(json!({"TargetValue": 70, "Cooldown": 60})),
        );
        assert_eq!(e.path, "TargetTrackingScalingPolicyConfiguration.Cooldown");
        assert_eq!(e.problem, Problem::Unknown);

        // Step and predictive scaling are refused, by value and by member.
        let e = error(
            "PutScalingPolicy",
            with(
                variant_target(),
                json!({"PolicyName": "p", "PolicyType": "StepScaling"}),
            ),
        );
        assert_eq!(e.path, "PolicyType");
        assert_eq!(e.problem, Problem::Value);
        assert_eq!(
            e.message,
            "PolicyType value \"StepScaling\" is not supported; Plinth supports \
             TargetTrackingScaling"
        );
        for member in [
            "StepScalingPolicyConfiguration",
            "PredictiveScalingPolicyConfiguration",
        ] {
            let e = error(
                "PutScalingPolicy",
                with(
                    variant_target(),
                    json!({"PolicyName": "p", member: {"AdjustmentType": "ChangeInCapacity"}}),
                ),
            );
            assert_eq!(e.path, member);
            assert_eq!(e.problem, Problem::Refused);
            assert_eq!(
                e.message,
                format!("{member} is not supported by Plinth; leave it out")
            );
        }

        // Only SageMaker variants.
        let e = error(
            "RegisterScalableTarget",
            with(variant_target(), json!({"ServiceNamespace": "ecs"})),
        );
        assert_eq!(e.path, "ServiceNamespace");
        assert_eq!(e.problem, Problem::Value);
        assert_eq!(
            e.message,
            "ServiceNamespace value \"ecs\" is not supported; Plinth supports sagemaker"
        );
        let e = error(
            "DescribeScalingActivities",
            with(
                variant_target(),
                json!({"ScalableDimension": "sagemaker:inference-component:DesiredCopyCount"}),
            ),
        );
        assert_eq!(e.path, "ScalableDimension");
        let e = error(
            "PutScalingPolicy",
            scaling_policy(
                json!({"PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance", "ResourceLabel": "x"}}),
            ),
        );
        assert_eq!(
            e.path,
            "TargetTrackingScalingPolicyConfiguration.PredefinedMetricSpecification.ResourceLabel"
        );
        assert_eq!(e.problem, Problem::Refused);
        let e = error(
            "RegisterScalableTarget",
            with(variant_target(), json!({"Tags": {"team": "ml"}})),
        );
        assert_eq!(e.path, "Tags");
        assert_eq!(e.problem, Problem::Refused);

        // Numbers and booleans.
        let e = error(
            "PutScalingPolicy",
            scaling_policy(json!({"TargetValue": 70, "ScaleInCooldown": 3601})),
        );
        assert_eq!(
            e.path,
            "TargetTrackingScalingPolicyConfiguration.ScaleInCooldown"
        );
        assert_eq!(e.problem, Problem::Range);
        assert_eq!(
            e.message,
            "TargetTrackingScalingPolicyConfiguration.ScaleInCooldown must be a whole number \
             between 0 and 3600; got 3601"
        );
        let e = error(
            "PutScalingPolicy",
            scaling_policy(json!({"TargetValue": 0})),
        );
        assert_eq!(
            e.message,
            "TargetTrackingScalingPolicyConfiguration.TargetValue must be between 8.51592e-109 \
             and 6.174271e307; got 0"
        );
        let e = error(
            "RegisterScalableTarget",
            with(variant_target(), json!({"MaxCapacity": 1001})),
        );
        assert_eq!(e.path, "MaxCapacity");
        let e = error(
            "DescribeScalableTargets",
            json!({"ServiceNamespace": "sagemaker", "MaxResults": 51}),
        );
        assert_eq!(e.path, "MaxResults");
        let e = error(
            "RegisterScalableTarget",
            with(
                variant_target(),
                json!({"SuspendedState": {"DynamicScalingInSuspended": "true"}}),
            ),
        );
        assert_eq!(
            e.message,
            "SuspendedState.DynamicScalingInSuspended must be a boolean; got a string"
        );
    }

    // ---- botocore ----

    /// Dumps, for each `service/Operation` named on the command line (`sagemaker/CreateModel`,
    /// `application-autoscaling/PutScalingPolicy`), its input member tree by the operation's
    /// name: `{"type", "min"?, "max"?, "enum"?, "members"?}`, with `members` for structures
    /// and lists of structures (maps and lists of strings are leaves); and InvokeEndpoint's
    /// members with the header that carries each.
    const BOTOCORE_DUMP: &str = r#"
import json, sys
import botocore.session

session = botocore.session.get_session()

def tree(shape, depth=0):
    node = {"type": shape.type_name}
    for key in ("min", "max"):
        if key in shape.metadata:
            node[key] = shape.metadata[key]
    if getattr(shape, "enum", None):
        node["enum"] = list(shape.enum)
    target = shape
    if shape.type_name == "list" and shape.member.type_name == "structure":
        target = shape.member
    if target.type_name == "structure" and depth < 12:
        node["members"] = {n: tree(m, depth + 1) for n, m in target.members.items()}
    return node

models = {}

def operation(service, op):
    if service not in models:
        models[service] = session.get_service_model(service)
    return models[service].operation_model(op)

runtime = session.get_service_model("sagemaker-runtime")
invoke = runtime.operation_model("InvokeEndpoint").input_shape
print(json.dumps({
    "botocore": __import__("botocore").__version__,
    "operations": {
        op: tree(operation(service, op).input_shape)
        for service, op in (arg.split("/", 1) for arg in sys.argv[1:])
    },
    "invoke": {
        n: (m.serialization.get("name") if m.serialization.get("location") == "header" else None)
        for n, m in invoke.members.items()
    },
}))
"#;

    /// The botocore service model an operation of `service` is in; `None` for Plinth's own.
    fn botocore_service(service: Service) -> Option<&'static str> {
        match service {
            Service::SageMaker => Some("sagemaker"),
            Service::ApplicationAutoScaling => Some("application-autoscaling"),
            Service::CloudWatch => Some("cloudwatch"),
            Service::Plinth => None,
        }
    }

    fn workspace_root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// botocore's trees, or `None` (with a note) where the project's virtualenv is
    /// missing; under `CI=true` a missing virtualenv fails.
    fn botocore() -> Option<Value> {
        let python = workspace_root().join(".venv/bin/python");
        if !python.exists() {
            let note = format!(
                "{} is missing: create it with `python3 -m venv .venv && .venv/bin/pip \
                 install boto3` to check the member table against botocore",
                python.display()
            );
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{note}");
            eprintln!("skipped: {note}");
            return None;
        }
        let ops: Vec<String> = OPERATIONS
            .iter()
            .filter_map(|o| Some(format!("{}/{}", botocore_service(o.service)?, o.name)))
            .collect();
        let output = std::process::Command::new(&python)
            .arg("-c")
            .arg(BOTOCORE_DUMP)
            .args(&ops)
            .output()
            .expect("run the virtualenv's python");
        assert!(
            output.status.success(),
            "botocore dump failed (is boto3 installed in .venv?): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(serde_json::from_slice(&output.stdout).expect("the dump is JSON"))
    }

    /// Compare `shape` with botocore's `node` (a structure, or a list of structures),
    /// collecting every difference.
    fn compare(shape: &'static Shape, node: &Value, at: &str, problems: &mut Vec<String>) {
        let Some(boto) = node["members"].as_object() else {
            problems.push(format!("{at}: botocore has no members here"));
            return;
        };
        for name in boto.keys() {
            if !shape.members.iter().any(|m| m.name == name) {
                problems.push(format!(
                    "{at}{name}: in botocore, not in the table (add it, Refused or Served)"
                ));
            }
        }
        for m in shape.members {
            let Some(b) = boto.get(m.name) else {
                if m.state != State::Extension {
                    problems.push(format!(
                        "{at}{}: {:?} in the table, not in botocore",
                        m.name, m.state
                    ));
                }
                continue;
            };
            if m.state == State::Extension {
                problems.push(format!(
                    "{at}{}: a botocore member marked Extension",
                    m.name
                ));
                continue;
            }
            let path = format!("{at}{}", m.name);
            match m.form {
                Form::Structure(inner) | Form::List(inner) => {
                    let (want, suffix) = match m.form {
                        Form::List(_) => ("list", "[]."),
                        _ => ("structure", "."),
                    };
                    if b["type"] != want {
                        problems.push(format!("{path}: botocore's type is {}", b["type"]));
                    } else {
                        compare(inner, b, &format!("{path}{suffix}"), problems);
                    }
                }
                Form::Number(range) if m.state == State::Served => {
                    let bounds = |range: Range| match range {
                        Range::Integer { min, max } => (min as f64, max as f64),
                        Range::Number { min, max, .. } => (min, max),
                    };
                    // A widened range names SageMaker's, which must be botocore's; the
                    // range that must lie inside botocore's is then that one.
                    if let Some(sagemaker) = m.sagemaker_range {
                        let (smin, smax) = bounds(sagemaker);
                        if b["min"].as_f64() != Some(smin) || b["max"].as_f64() != Some(smax) {
                            problems.push(format!(
                                "{path}: SageMaker's range is {smin} to {smax} in the table, \
                                 {} to {} in botocore",
                                b["min"], b["max"]
                            ));
                        }
                    }
                    let (min, max) = bounds(m.sagemaker_range.unwrap_or(range));
                    if !matches!(
                        b["type"].as_str(),
                        Some("integer" | "long" | "float" | "double" | "timestamp")
                    ) {
                        problems.push(format!("{path}: botocore's type is {}", b["type"]));
                    }
                    if b["min"].as_f64().is_some_and(|bmin| min < bmin) {
                        problems.push(format!(
                            "{path}: {min} is below botocore's min {}",
                            b["min"]
                        ));
                    }
                    if b["max"].as_f64().is_some_and(|bmax| max > bmax) {
                        problems.push(format!(
                            "{path}: {max} is above botocore's max {}",
                            b["max"]
                        ));
                    }
                }
                Form::OneOf(_) if b["type"] != "string" => {
                    problems.push(format!(
                        "{path}: values of a string in the table; botocore's type is {}",
                        b["type"]
                    ));
                }
                Form::OneOf(values) => {
                    for v in values {
                        let known = b["enum"]
                            .as_array()
                            .is_some_and(|e| e.iter().any(|x| x == v));
                        if !known {
                            problems.push(format!("{path}: {v:?} is not in botocore's enum"));
                        }
                    }
                }
                Form::Map if b["type"] != "map" => {
                    problems.push(format!("{path}: botocore's type is {}", b["type"]));
                }
                Form::Boolean(_) if b["type"] != "boolean" => {
                    problems.push(format!(
                        "{path}: a boolean in the table; botocore's type is {}",
                        b["type"]
                    ));
                }
                Form::Value if b["type"] == "boolean" && m.state == State::Served => {
                    problems.push(format!(
                        "{path}: a boolean in botocore; type it with .boolean() (or \
                         .boolean_only) so that \"yes\" and 1 are refused"
                    ));
                }
                _ => {}
            }
        }
    }

    #[test]
    fn the_table_matches_botocore() {
        let Some(dump) = botocore() else {
            return;
        };
        let mut problems = Vec::new();
        for op in OPERATIONS
            .iter()
            .filter(|o| botocore_service(o.service).is_some())
        {
            compare(
                op.input,
                &dump["operations"][op.name],
                &format!("{}: ", op.name),
                &mut problems,
            );
        }
        let invoke = dump["invoke"]
            .as_object()
            .expect("InvokeEndpoint's members");
        for (name, header) in invoke {
            match INVOKE.iter().find(|m| m.member == name) {
                None => problems.push(format!(
                    "InvokeEndpoint: {name} ({header}) is in botocore, not in the table"
                )),
                Some(m) if m.header != header.as_str() => problems.push(format!(
                    "InvokeEndpoint: {name} is carried by {header}, not {:?}",
                    m.header
                )),
                Some(m) if m.state == State::Extension => {
                    problems.push(format!("InvokeEndpoint: {name} is botocore's"))
                }
                Some(_) => {}
            }
        }
        for m in INVOKE {
            if m.state != State::Extension && !invoke.contains_key(m.member) {
                problems.push(format!(
                    "InvokeEndpoint: {} is in the table, not in botocore",
                    m.member
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "the member table and botocore {} differ:\n{}",
            dump["botocore"],
            problems.join("\n")
        );
    }

    // ---- README ----

    /// The README's tables for the operations of `services`, as the table renders them: one
    /// per group of operations with the same input, members by path; a structure already
    /// listed in these tables (a shadow variant, a `DeploymentConfig` taken by several
    /// operations) is referred to, not repeated.
    fn readme_tables(services: &[Service]) -> String {
        let mut out = String::new();
        let mut listed: BTreeMap<&str, (&str, String)> = BTreeMap::new();
        let mut done: Vec<&str> = Vec::new();
        let operations = || OPERATIONS.iter().filter(|o| services.contains(&o.service));
        for op in operations() {
            if done.contains(&op.input.name) {
                continue;
            }
            done.push(op.input.name);
            let group: Vec<&str> = operations()
                .filter(|o| o.input.name == op.input.name)
                .map(|o| o.name)
                .collect();
            out.push_str(&format!("\n### {}\n\n", group.join(", ")));
            out.push_str("| member | state | range or values |\n|---|---|---|\n");
            render(op.name, op.input, "", &mut listed, &mut out);
        }
        out
    }

    fn render<'a>(
        operation: &'a str,
        shape: &'static Shape,
        prefix: &str,
        listed: &mut BTreeMap<&'static str, (&'a str, String)>,
        out: &mut String,
    ) {
        for m in shape.members {
            let path = format!("{prefix}{}", m.name);
            let mut nested = None;
            let what = match m.form {
                Form::Value => String::new(),
                Form::Map => "map; not checked".into(),
                Form::Number(range) => match m.sagemaker_range {
                    Some(sagemaker) => format!("{range} (SageMaker: {sagemaker})"),
                    None => range.to_string(),
                },
                Form::OneOf(values) => {
                    let values: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
                    format!("{} only", values.join(", "))
                }
                Form::Boolean(None) => "`true` or `false`".into(),
                Form::Boolean(Some(value)) => format!("`{value}` only"),
                Form::Structure(inner) | Form::List(inner) => {
                    let items = if matches!(m.form, Form::List(_)) {
                        "items"
                    } else {
                        "members"
                    };
                    match listed.get(inner.name) {
                        Some((op, at)) if *op == operation => format!("{items} as `{at}`"),
                        Some((op, at)) => format!("{items} as `{at}` in {op}"),
                        None => {
                            let at = match m.form {
                                Form::List(_) => format!("{path}[]"),
                                _ => path.clone(),
                            };
                            listed.insert(inner.name, (operation, at.clone()));
                            nested = Some((inner, format!("{at}.")));
                            String::new()
                        }
                    }
                }
            };
            let what = if m.state == State::Refused {
                String::new()
            } else {
                what
            };
            let what = if what.is_empty() {
                what
            } else {
                format!(" {what}")
            };
            out.push_str(&format!("| `{path}` | {} |{what} |\n", m.state.as_str()));
            if let (Some((inner, prefix)), true) = (nested, m.state != State::Refused) {
                render(operation, inner, &prefix, listed, out);
            }
        }
    }

    fn invoke_table() -> String {
        let mut out =
            String::from("\n### InvokeEndpoint\n\n| member | header | state |\n|---|---|---|\n");
        for m in INVOKE {
            let header = match (m.header, m.member) {
                (Some(h), _) => format!("`{h}`"),
                (None, "EndpointName") => "(the path)".into(),
                (None, _) => "(the body)".into(),
            };
            out.push_str(&format!(
                "| `{}` | {header} | {} |\n",
                m.member,
                m.state.as_str()
            ));
        }
        out
    }

    /// The README's section under `heading`, up to the next `## ` heading.
    fn readme_section<'a>(readme: &'a str, heading: &str) -> &'a str {
        let start = readme
            .find(&format!("\n## {heading}\n"))
            .unwrap_or_else(|| panic!("README.md has a section \"## {heading}\""));
        let rest = &readme[start + 1..];
        let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
        &rest[..end]
    }

    /// Check that README.md's section `heading` holds `expected` (the tables of the
    /// operations of `services`), and that every row of those operations is in its
    /// operation's table.
    fn check_readme_section(heading: &str, services: &[Service], expected: &str) {
        let readme =
            std::fs::read_to_string(workspace_root().join("README.md")).expect("read README.md");
        let section = readme_section(&readme, heading);
        assert!(
            section.contains(expected),
            "README.md's \"{heading}\" tables differ from the table in \
             host/policy/src/members.rs; they should read:\n{expected}"
        );
        // And every row is in its operation's table: its own line, or beneath a
        // structure that refers to where its members are listed.
        for row in rows().filter(|r| services.contains(&r.service)) {
            let block = section
                .split("\n### ")
                .find(|b| {
                    b.lines()
                        .next()
                        .is_some_and(|h| h.split(", ").any(|o| o == row.operation))
                })
                .unwrap_or_else(|| {
                    panic!(
                        "README.md's \"{heading}\" has no table for {}",
                        row.operation
                    )
                });
            let line = |path: &str| {
                let start = format!("| `{path}` | ");
                block.lines().find(|l| l.starts_with(&start))
            };
            let own = line(&row.path).is_some_and(|l| {
                l.starts_with(&format!("| `{}` | {} |", row.path, row.state.as_str()))
            });
            let referred = row
                .path
                .match_indices('.')
                .map(|(i, _)| row.path[..i].trim_end_matches("[]"))
                .any(|ancestor| line(ancestor).is_some_and(|l| l.contains(" as `")));
            assert!(
                own || referred,
                "{} {} ({}) is not in README.md's \"{heading}\"",
                row.operation,
                row.path,
                row.state.as_str()
            );
        }
    }

    #[test]
    fn the_readme_lists_every_member() {
        let services = [Service::SageMaker, Service::Plinth];
        let expected = format!("{}{}", readme_tables(&services), invoke_table());
        check_readme_section("SageMaker members", &services, &expected);
    }

    #[test]
    fn member_forms_are_found_by_path() {
        assert!(matches!(
            member_form(
                "GetMetricData",
                &["MetricDataQueries", "MetricStat", "Period"]
            ),
            Some(Form::Number(_))
        ));
        assert!(matches!(
            member_form("GetMetricData", &["MetricDataQueries", "ReturnData"]),
            Some(Form::Boolean(None))
        ));
        assert!(matches!(
            member_form("GetMetricStatistics", &["Dimensions"]),
            Some(Form::List(_))
        ));
        assert_eq!(
            member_form("GetMetricStatistics", &["Dimensions", "Value"]),
            Some(Form::Value)
        );
        assert_eq!(member_form("GetMetricStatistics", &["Nope"]), None);
        assert_eq!(member_form("Nope", &["Namespace"]), None);
    }

    #[test]
    fn the_readme_lists_every_cloudwatch_member() {
        let services = [Service::CloudWatch];
        check_readme_section("CloudWatch members", &services, &readme_tables(&services));
    }

    #[test]
    fn the_readme_lists_every_autoscaling_member() {
        let services = [Service::ApplicationAutoScaling];
        check_readme_section(
            "Application Auto Scaling members",
            &services,
            &readme_tables(&services),
        );
    }
}
