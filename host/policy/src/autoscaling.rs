//! Application Auto Scaling for SageMaker variants: what a scalable target and a
//! target-tracking policy may be (checked as Application Auto Scaling checks them, naming the
//! member at fault), the datapoint a policy's metric gives for one minute of a variant's
//! requests, and the one change several policies on a target agree on.
//!
//! A scalable target is a variant (`endpoint/<EndpointName>/variant/<VariantName>`) and one
//! of its two [`Dimension`]s, with `MinCapacity` and `MaxCapacity`; the decision for one
//! policy is [`crate::target_tracking`]'s.

use crate::async_inference::{Backlog, BacklogMetric};
use crate::capacity::MAX_INSTANCE_COUNT;
use crate::metric_alarm::{Metric, Statistic, Stats, METRICS, STATISTICS};
use crate::names;
use crate::target_tracking::{self, Alarm, Decision, Invalid, TargetTracking};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The only `ServiceNamespace` Plinth serves.
pub const NAMESPACE: &str = "sagemaker";

/// The CloudWatch namespace of SageMaker's endpoint metrics, the one a customized metric
/// may name.
pub const METRIC_NAMESPACE: &str = "AWS/SageMaker";

/// The largest `ProvisionedConcurrency` (and `MaxConcurrency`) of a serverless variant.
pub const MAX_PROVISIONED_CONCURRENCY: u32 = 200;

/// What a scalable target scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Dimension {
    /// `sagemaker:variant:DesiredInstanceCount`: an instance variant's instance count.
    InstanceCount,
    /// `sagemaker:variant:DesiredProvisionedConcurrency`: a serverless variant's
    /// `ProvisionedConcurrency`.
    ProvisionedConcurrency,
}

impl Dimension {
    /// Both, in the order the API lists them.
    pub const ALL: [Dimension; 2] = [Dimension::InstanceCount, Dimension::ProvisionedConcurrency];

    /// Application Auto Scaling's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::InstanceCount => "sagemaker:variant:DesiredInstanceCount",
            Dimension::ProvisionedConcurrency => "sagemaker:variant:DesiredProvisionedConcurrency",
        }
    }

    /// The dimension called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// The predefined metric that tracks this dimension.
    pub fn predefined_metric(self) -> &'static str {
        match self {
            Dimension::InstanceCount => "SageMakerVariantInvocationsPerInstance",
            Dimension::ProvisionedConcurrency => {
                "SageMakerVariantProvisionedConcurrencyUtilization"
            }
        }
    }

    /// The largest capacity Plinth holds for it.
    pub fn ceiling(self) -> u32 {
        match self {
            Dimension::InstanceCount => MAX_INSTANCE_COUNT as u32,
            Dimension::ProvisionedConcurrency => MAX_PROVISIONED_CONCURRENCY,
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Dimension {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        Self::from_name(&name).ok_or_else(|| format!("unknown ScalableDimension {name:?}"))
    }
}

impl From<Dimension> for String {
    fn from(d: Dimension) -> String {
        d.as_str().to_owned()
    }
}

/// A SageMaker variant as Application Auto Scaling names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceId {
    pub endpoint: String,
    pub variant: String,
}

impl ResourceId {
    /// `endpoint/<EndpointName>/variant/<VariantName>`, each name a valid SageMaker name.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let invalid = || {
            Invalid(format!(
                "ResourceId {text:?} does not name a SageMaker variant: use \
                 endpoint/<EndpointName>/variant/<VariantName>"
            ))
        };
        let rest = text.strip_prefix("endpoint/").ok_or_else(invalid)?;
        let (endpoint, variant) = rest.split_once("/variant/").ok_or_else(invalid)?;
        for (what, name) in [("EndpointName", endpoint), ("VariantName", variant)] {
            if !names::is_valid(name) {
                return Err(Invalid(format!(
                    "ResourceId {text:?}: {what} {name:?} is not a valid name ({})",
                    names::RULE
                )));
            }
        }
        Ok(Self {
            endpoint: endpoint.to_owned(),
            variant: variant.to_owned(),
        })
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint/{}/variant/{}", self.endpoint, self.variant)
    }
}

impl TryFrom<String> for ResourceId {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text).map_err(|e| e.0)
    }
}

impl From<ResourceId> for String {
    fn from(r: ResourceId) -> String {
        r.to_string()
    }
}

/// `SuspendedState`: which kinds of scaling are paused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SuspendedState {
    #[serde(default)]
    pub dynamic_scaling_in_suspended: bool,
    #[serde(default)]
    pub dynamic_scaling_out_suspended: bool,
    /// Kept and echoed; Plinth has no scheduled actions to suspend.
    #[serde(default)]
    pub scheduled_scaling_suspended: bool,
}

/// `SuspendedState` as RegisterScalableTarget gives it: a member left out keeps its value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SuspendedUpdate {
    pub dynamic_scaling_in_suspended: Option<bool>,
    pub dynamic_scaling_out_suspended: Option<bool>,
    pub scheduled_scaling_suspended: Option<bool>,
}

/// A registered scalable target, as DescribeScalableTargets shows it (the server adds
/// `ScalableTargetARN` and `CreationTime`) and as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScalableTarget {
    pub service_namespace: String,
    pub resource_id: ResourceId,
    pub scalable_dimension: Dimension,
    pub min_capacity: u32,
    pub max_capacity: u32,
    #[serde(rename = "RoleARN")]
    pub role_arn: String,
    pub suspended_state: SuspendedState,
}

/// RegisterScalableTarget's input, after the member table has checked its members.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Registration {
    pub min_capacity: Option<u32>,
    pub max_capacity: Option<u32>,
    #[serde(rename = "RoleARN")]
    pub role_arn: Option<String>,
    pub suspended_state: Option<SuspendedUpdate>,
}

impl ScalableTarget {
    /// The bounds.
    pub fn bounds(&self) -> target_tracking::Bounds {
        target_tracking::Bounds {
            min: self.min_capacity,
            max: self.max_capacity,
        }
    }
}

/// RegisterScalableTarget: a new target (which needs both capacities), or `existing`
/// updated with what `registration` gives. `ceiling` is the most the variant can take (a
/// serverless variant's `MaxConcurrency` for its provisioned concurrency); `default_role`
/// the role a target registered without `RoleARN` gets. `floor` is the least `MinCapacity`:
/// 0 for an asynchronous endpoint's instance count (its queue waits while it has none), else
/// 1.
pub fn register(
    existing: Option<&ScalableTarget>,
    resource_id: ResourceId,
    dimension: Dimension,
    registration: Registration,
    (floor, ceiling): (u32, u32),
    default_role: &str,
) -> Result<ScalableTarget, Invalid> {
    let (min, max) = match (
        existing,
        registration.min_capacity,
        registration.max_capacity,
    ) {
        (Some(t), min, max) => (min.unwrap_or(t.min_capacity), max.unwrap_or(t.max_capacity)),
        (None, Some(min), Some(max)) => (min, max),
        (None, _, _) => {
            return Err(Invalid(format!(
                "MinCapacity and MaxCapacity are required to register a new scalable target \
                 ({resource_id}, {dimension})"
            )))
        }
    };
    let bounds = target_tracking::Bounds { min, max };
    bounds.validate(floor)?;
    let ceiling = ceiling.min(dimension.ceiling());
    if max > ceiling {
        let what = match dimension {
            Dimension::InstanceCount => "the most instances a variant may have".to_owned(),
            Dimension::ProvisionedConcurrency => {
                format!("the variant's MaxConcurrency ({ceiling})")
            }
        };
        return Err(Invalid(format!(
            "MaxCapacity {max} must not be greater than {ceiling}, {what}"
        )));
    }
    let old = existing.map(|t| t.suspended_state).unwrap_or_default();
    let given = registration.suspended_state.unwrap_or_default();
    let suspended_state = SuspendedState {
        dynamic_scaling_in_suspended: given
            .dynamic_scaling_in_suspended
            .unwrap_or(old.dynamic_scaling_in_suspended),
        dynamic_scaling_out_suspended: given
            .dynamic_scaling_out_suspended
            .unwrap_or(old.dynamic_scaling_out_suspended),
        scheduled_scaling_suspended: given
            .scheduled_scaling_suspended
            .unwrap_or(old.scheduled_scaling_suspended),
    };
    let role_arn = registration
        .role_arn
        .or_else(|| existing.map(|t| t.role_arn.clone()))
        .unwrap_or_else(|| default_role.to_owned());
    Ok(ScalableTarget {
        service_namespace: NAMESPACE.to_owned(),
        resource_id,
        scalable_dimension: dimension,
        min_capacity: min,
        max_capacity: max,
        role_arn,
        suspended_state,
    })
}

/// `PredefinedMetricSpecification`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PredefinedMetric {
    pub predefined_metric_type: String,
}

/// One of `CustomizedMetricSpecification.Dimensions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetricDimension {
    pub name: String,
    pub value: String,
}

/// `CustomizedMetricSpecification`: one of SageMaker's endpoint metrics that Plinth records,
/// for one variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomizedMetric {
    #[serde(default)]
    pub metric_name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub dimensions: Vec<MetricDimension>,
    #[serde(default)]
    pub statistic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// `TargetTrackingScalingPolicyConfiguration`, as PutScalingPolicy takes it and
/// DescribeScalingPolicies shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetTrackingConfiguration {
    pub target_value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predefined_metric_specification: Option<PredefinedMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customized_metric_specification: Option<CustomizedMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_out_cooldown: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_in_cooldown: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_scale_in: Option<bool>,
}

/// A scaling policy, as DescribeScalingPolicies shows it (the server adds `PolicyARN`,
/// `Alarms` and `CreationTime`) and as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScalingPolicy {
    pub policy_name: String,
    pub service_namespace: String,
    pub resource_id: ResourceId,
    pub scalable_dimension: Dimension,
    pub policy_type: String,
    pub target_tracking_scaling_policy_configuration: TargetTrackingConfiguration,
}

/// What a policy's metric is, read from the variant's recorded requests.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyMetric {
    /// `SageMakerVariantInvocationsPerInstance`: the target variant's invocations in the
    /// minute, per instance.
    InvocationsPerInstance,
    /// `SageMakerVariantProvisionedConcurrencyUtilization`: the target variant's average
    /// concurrency over the minute (the time its requests spent in the model, over the
    /// minute), over its provisioned concurrency.
    ProvisionedConcurrencyUtilization,
    /// A customized metric: a statistic of one of SageMaker's endpoint metrics, of the
    /// variant its dimensions name.
    Custom {
        endpoint: String,
        variant: String,
        metric: Metric,
        statistic: Statistic,
    },
    /// A customized metric on an asynchronous endpoint's queue: a statistic of the backlog's
    /// samples over the minute.
    Backlog {
        endpoint: String,
        metric: BacklogMetric,
        statistic: Statistic,
    },
}

/// A policy checked and ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub tracking: TargetTracking,
    pub metric: PolicyMetric,
}

/// The unit CloudWatch gives SageMaker's metric.
fn unit_of(metric: Metric) -> &'static str {
    if metric.is_latency() {
        "Microseconds"
    } else {
        "None"
    }
}

impl ScalingPolicy {
    /// Check the policy as PutScalingPolicy does, and make what the controller runs.
    pub fn compile(&self) -> Result<Compiled, Invalid> {
        let config = &self.target_tracking_scaling_policy_configuration;
        let tracking = TargetTracking {
            target_value: config.target_value,
            scale_out_cooldown: config
                .scale_out_cooldown
                .unwrap_or(target_tracking::DEFAULT_COOLDOWN_SECONDS),
            scale_in_cooldown: config
                .scale_in_cooldown
                .unwrap_or(target_tracking::DEFAULT_COOLDOWN_SECONDS),
            disable_scale_in: config.disable_scale_in.unwrap_or(false),
        };
        tracking.validate()?;
        let dimension = self.scalable_dimension;
        let metric = match (
            &config.predefined_metric_specification,
            &config.customized_metric_specification,
        ) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(Invalid(
                    "TargetTrackingScalingPolicyConfiguration needs exactly one of \
                     PredefinedMetricSpecification and CustomizedMetricSpecification"
                        .into(),
                ))
            }
            (Some(predefined), None) => {
                let name = predefined.predefined_metric_type.as_str();
                if name != dimension.predefined_metric() {
                    let fits = Dimension::ALL
                        .into_iter()
                        .find(|d| d.predefined_metric() == name)
                        .map_or("no SageMaker variant dimension".to_owned(), |d| {
                            d.to_string()
                        });
                    return Err(Invalid(format!(
                        "PredefinedMetricType {name} scales {fits}, not {dimension}; use {}",
                        dimension.predefined_metric()
                    )));
                }
                match dimension {
                    Dimension::InstanceCount => PolicyMetric::InvocationsPerInstance,
                    Dimension::ProvisionedConcurrency => {
                        PolicyMetric::ProvisionedConcurrencyUtilization
                    }
                }
            }
            (None, Some(custom)) => custom.compile()?,
        };
        Ok(Compiled { tracking, metric })
    }
}

impl CustomizedMetric {
    fn compile(&self) -> Result<PolicyMetric, Invalid> {
        let at = "CustomizedMetricSpecification";
        if self.namespace != METRIC_NAMESPACE {
            return Err(Invalid(format!(
                "{at}.Namespace {:?} is not recorded by Plinth; use {METRIC_NAMESPACE}",
                self.namespace
            )));
        }
        let statistic = Statistic::from_name(&self.statistic).ok_or_else(|| {
            Invalid(format!(
                "{at}.Statistic {:?} is not valid; use one of {}",
                self.statistic,
                STATISTICS.join(", ")
            ))
        })?;
        if let Some(backlog) = BacklogMetric::from_name(&self.metric_name) {
            return self.compile_backlog(backlog, statistic);
        }
        let metric = Metric::from_name(&self.metric_name).ok_or_else(|| {
            Invalid(format!(
                "{at}.MetricName {:?} is not one Plinth records; use one of {}, {}",
                self.metric_name,
                METRICS.join(", "),
                BacklogMetric::ALL.map(BacklogMetric::as_str).join(", ")
            ))
        })?;
        if let Some(unit) = &self.unit {
            if unit != unit_of(metric) {
                return Err(Invalid(format!(
                    "{at}.Unit {unit:?} is not {metric}'s unit, {}",
                    unit_of(metric)
                )));
            }
        }
        let mut endpoint = None;
        let mut variant = None;
        for d in &self.dimensions {
            let slot = match d.name.as_str() {
                "EndpointName" => &mut endpoint,
                "VariantName" => &mut variant,
                other => {
                    return Err(Invalid(format!(
                        "{at}.Dimensions: {other:?} is not a dimension of SageMaker's endpoint \
                         metrics; give EndpointName and VariantName"
                    )))
                }
            };
            if slot.replace(d.value.clone()).is_some() {
                return Err(Invalid(format!(
                    "{at}.Dimensions: {} is given twice",
                    d.name
                )));
            }
        }
        let (Some(endpoint), Some(variant)) = (endpoint, variant) else {
            return Err(Invalid(format!(
                "{at}.Dimensions must give EndpointName and VariantName: a policy tracks one \
                 variant's metric"
            )));
        };
        Ok(PolicyMetric::Custom {
            endpoint,
            variant,
            metric,
            statistic,
        })
    }

    /// A policy on an asynchronous endpoint's backlog: dimension `EndpointName` alone, as
    /// SageMaker's backlog metrics have.
    fn compile_backlog(
        &self,
        metric: BacklogMetric,
        statistic: Statistic,
    ) -> Result<PolicyMetric, Invalid> {
        let at = "CustomizedMetricSpecification";
        if let Some(unit) = &self.unit {
            if unit != metric.unit() {
                return Err(Invalid(format!(
                    "{at}.Unit {unit:?} is not {}'s unit, {}",
                    metric.as_str(),
                    metric.unit()
                )));
            }
        }
        if metric == BacklogMetric::HasBacklogWithoutCapacity {
            return Err(Invalid(format!(
                "{at}.MetricName HasBacklogWithoutCapacity is 0 whenever an instance runs, so \
                 tracking a target on it would scale in and out in turn; track \
                 ApproximateBacklogSizePerInstance, which asks for an instance whenever \
                 there is a backlog and none"
            )));
        }
        match self.dimensions.as_slice() {
            [d] if d.name == "EndpointName" => Ok(PolicyMetric::Backlog {
                endpoint: d.value.clone(),
                metric,
                statistic,
            }),
            _ => Err(Invalid(format!(
                "{at}.Dimensions must be EndpointName alone: {} is an asynchronous endpoint's \
                 metric",
                metric.as_str()
            ))),
        }
    }
}

impl PolicyMetric {
    /// One minute's datapoint: `stats` are the requests recorded in the minute (by the
    /// target variant, or for a customized metric by the variant it names), `capacity` the
    /// target's capacity, `minute_seconds` the minute's length. `None`: no datapoint (a
    /// statistic of no samples).
    pub fn datapoint(&self, stats: &Stats, capacity: u32, minute_seconds: f64) -> Option<f64> {
        match self {
            PolicyMetric::InvocationsPerInstance => {
                // With no instance, the invocations themselves: any traffic asks for one.
                Some(stats.count as f64 / f64::from(capacity.max(1)))
            }
            PolicyMetric::ProvisionedConcurrencyUtilization => {
                let busy_seconds = stats.model_latency.sum_micros().unwrap_or(0.0) / 1e6;
                Some(busy_seconds / minute_seconds / f64::from(capacity.max(1)))
            }
            PolicyMetric::Custom {
                metric, statistic, ..
            } => stats.value(*metric, *statistic),
            // Sampled, not recorded per request: see [`PolicyMetric::backlog_datapoint`].
            PolicyMetric::Backlog { .. } => None,
        }
    }

    /// A backlog metric's datapoint: its statistic over the minute's samples of the queue
    /// (`None` without samples, or for a metric that is not the backlog's).
    pub fn backlog_datapoint(&self, samples: &[Backlog]) -> Option<f64> {
        let PolicyMetric::Backlog {
            metric, statistic, ..
        } = self
        else {
            return None;
        };
        if samples.is_empty() {
            return None;
        }
        let values = samples.iter().map(|b| metric.value(b));
        let n = samples.len() as f64;
        Some(match statistic {
            Statistic::Average => values.sum::<f64>() / n,
            Statistic::Sum => values.sum(),
            Statistic::SampleCount => n,
            Statistic::Minimum => values.fold(f64::INFINITY, f64::min),
            Statistic::Maximum => values.fold(f64::NEG_INFINITY, f64::max),
            Statistic::Percentile(p) => {
                let mut sorted: Vec<f64> = values.collect();
                sorted.sort_by(f64::total_cmp);
                let rank = ((p / 100.0) * n).ceil().max(1.0) as usize;
                sorted[rank.min(sorted.len()) - 1]
            }
        })
    }
}

/// Whether a policy on `metric` may scale the target on `resource` whose least capacity is
/// `min_capacity`, `queued` telling whether the target's endpoint is asynchronous: a backlog
/// metric must be the target's own endpoint's, and that endpoint asynchronous; a target that
/// may go to 0 instances is scaled by backlog metrics only (with no instance an endpoint
/// records no invocations or latencies, so no other metric could ever scale it out again).
pub fn check_metric(
    metric: &PolicyMetric,
    resource: &ResourceId,
    min_capacity: u32,
    queued: bool,
) -> Result<(), Invalid> {
    match metric {
        PolicyMetric::Backlog {
            endpoint, metric, ..
        } => {
            if !endpoint.eq_ignore_ascii_case(&resource.endpoint) {
                return Err(Invalid(format!(
                    "{} is endpoint {endpoint}'s metric; a policy on {resource} may track its own \
                     endpoint's backlog only (EndpointName {})",
                    metric.as_str(),
                    resource.endpoint
                )));
            }
            if !queued {
                return Err(Invalid(format!(
                    "{} is an asynchronous endpoint's metric; endpoint {} has no \
                     AsyncInferenceConfig",
                    metric.as_str(),
                    resource.endpoint
                )));
            }
            Ok(())
        }
        _ if min_capacity == 0 => Err(Invalid(format!(
            "{resource} may scale to 0 instances (MinCapacity 0), where it records no \
             invocations: scale it on its backlog (ApproximateBacklogSizePerInstance or \
             ApproximateBacklogSize, Dimensions EndpointName), or give it MinCapacity 1"
        ))),
        _ => Ok(()),
    }
}

/// Why a policy did not scale although its alarm fired (DescribeScalingActivities'
/// `NotScaledReasons`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotScaled {
    AlreadyAtMaxCapacity,
    AlreadyAtMinCapacity,
}

impl NotScaled {
    pub fn as_str(self) -> &'static str {
        match self {
            NotScaled::AlreadyAtMaxCapacity => "AlreadyAtMaxCapacity",
            NotScaled::AlreadyAtMinCapacity => "AlreadyAtMinCapacity",
        }
    }
}

/// Whether the policy's alarm asks for capacity beyond the bounds the target is already
/// at: Application Auto Scaling's not-scaled activity.
pub fn not_scaled(
    policy: &TargetTracking,
    bounds: target_tracking::Bounds,
    capacity: u32,
    minutes: &[Option<f64>],
) -> Option<NotScaled> {
    match target_tracking::alarm(policy, minutes) {
        Alarm::High if capacity >= bounds.max => Some(NotScaled::AlreadyAtMaxCapacity),
        Alarm::Low if capacity <= bounds.min && !policy.disable_scale_in => {
            Some(NotScaled::AlreadyAtMinCapacity)
        }
        _ => None,
    }
}

/// The one change several policies on a target agree on, as Application Auto Scaling
/// combines them: the largest scale-out any of them asks for; a scale-in only when every
/// policy asks for one, to the largest capacity they ask for (so that none is left short).
/// `suspended` drops the kind of scaling it pauses.
pub fn combine(decisions: &[Decision], capacity: u32, suspended: SuspendedState) -> Decision {
    let out = decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Scale { capacity: c, cause } if *c > capacity => Some((*c, cause)),
            _ => None,
        })
        .max_by_key(|(c, _)| *c);
    if let Some((c, cause)) = out {
        if suspended.dynamic_scaling_out_suspended {
            return Decision::Hold;
        }
        return Decision::Scale {
            capacity: c,
            cause: cause.clone(),
        };
    }
    let ins: Vec<(u32, &String)> = decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Scale { capacity: c, cause } if *c < capacity => Some((*c, cause)),
            _ => None,
        })
        .collect();
    if ins.is_empty() || ins.len() < decisions.len() || suspended.dynamic_scaling_in_suspended {
        return Decision::Hold;
    }
    let (c, cause) = ins.into_iter().max_by_key(|(c, _)| *c).expect("not empty");
    Decision::Scale {
        capacity: c,
        cause: cause.clone(),
    }
}

/// UpdateEndpoint's check for a variant under autoscaling, as SageMaker makes it: the update
/// may change the variant's model, not its instance type. `scaled` are the variants with a
/// scalable target; `old` and `new` each config's variants with their `InstanceType`.
pub fn check_update(
    scaled: &[&str],
    old: &[(&str, Option<&str>)],
    new: &[(&str, Option<&str>)],
) -> Result<(), Invalid> {
    for variant in scaled {
        let before = old.iter().find(|(n, _)| n == variant).map(|(_, t)| *t);
        let after = new.iter().find(|(n, _)| n == variant).map(|(_, t)| *t);
        if let (Some(before), Some(after)) = (before, after) {
            if before != after {
                return Err(Invalid(format!(
                    "Variant {variant} is a scalable target of Application Auto Scaling, and \
                     the update changes its InstanceType ({} to {}): delete its scaling \
                     policies and deregister it (DeregisterScalableTarget) before the update, \
                     then register it again",
                    before.unwrap_or("none"),
                    after.unwrap_or("none")
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric_alarm::{Outcome, Sample, Window};
    use std::time::Duration;

    const ROLE: &str = "arn:aws:iam::123456789012:role/service";

    fn resource() -> ResourceId {
        ResourceId::parse("endpoint/my-endpoint/variant/AllTraffic").unwrap()
    }

    fn registration(min: Option<u32>, max: Option<u32>) -> Registration {
        Registration {
            min_capacity: min,
            max_capacity: max,
            ..Registration::default()
        }
    }

    #[test]
    fn resource_ids_name_a_variant() {
        let r = resource();
        assert_eq!(
            (r.endpoint.as_str(), r.variant.as_str()),
            ("my-endpoint", "AllTraffic")
        );
        assert_eq!(r.to_string(), "endpoint/my-endpoint/variant/AllTraffic");
        for bad in [
            "",
            "endpoint/e",
            "service/default/sample-webapp",
            "endpoint/e/variants/v",
            "endpoint//variant/v",
            "endpoint/e/variant/",
            "endpoint/e_1/variant/v",
            "endpoint/e/variant/v/extra",
        ] {
            let e = ResourceId::parse(bad).unwrap_err();
            assert!(e.0.contains("ResourceId"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_new_target_needs_both_capacities_and_an_update_keeps_what_it_leaves_out() {
        let e = register(
            None,
            resource(),
            Dimension::InstanceCount,
            registration(Some(1), None),
            (1, 1000),
            ROLE,
        )
        .unwrap_err();
        assert!(
            e.0.contains("MinCapacity and MaxCapacity are required"),
            "{e}"
        );
        let t = register(
            None,
            resource(),
            Dimension::InstanceCount,
            registration(Some(1), Some(4)),
            (1, 1000),
            ROLE,
        )
        .unwrap();
        assert_eq!((t.min_capacity, t.max_capacity), (1, 4));
        assert_eq!(t.role_arn, ROLE);
        assert_eq!(t.suspended_state, SuspendedState::default());
        let update = Registration {
            max_capacity: Some(8),
            suspended_state: Some(SuspendedUpdate {
                dynamic_scaling_in_suspended: Some(true),
                ..SuspendedUpdate::default()
            }),
            ..Registration::default()
        };
        let u = register(
            Some(&t),
            resource(),
            Dimension::InstanceCount,
            update,
            (1, 1000),
            "other",
        )
        .unwrap();
        assert_eq!((u.min_capacity, u.max_capacity), (1, 8));
        assert_eq!(u.role_arn, ROLE, "the role is kept");
        assert!(u.suspended_state.dynamic_scaling_in_suspended);
        assert!(!u.suspended_state.dynamic_scaling_out_suspended);
        // min > max, even through an update of one side.
        let e = register(
            Some(&u),
            resource(),
            Dimension::InstanceCount,
            registration(Some(9), None),
            (1, 1000),
            ROLE,
        )
        .unwrap_err();
        assert!(
            e.0.contains("MinCapacity 9 must not be greater than MaxCapacity 8"),
            "{e}"
        );
        let e = register(
            None,
            resource(),
            Dimension::InstanceCount,
            registration(Some(0), Some(2)),
            (1, 1000),
            ROLE,
        )
        .unwrap_err();
        assert!(e.0.contains("MinCapacity 0 must be at least 1"), "{e}");
        // An asynchronous endpoint's instance count may go to zero.
        let t = register(
            None,
            resource(),
            Dimension::InstanceCount,
            registration(Some(0), Some(2)),
            (0, 1000),
            ROLE,
        )
        .unwrap();
        assert_eq!((t.min_capacity, t.max_capacity), (0, 2));
    }

    #[test]
    fn provisioned_concurrency_is_bounded_by_max_concurrency() {
        let e = register(
            None,
            resource(),
            Dimension::ProvisionedConcurrency,
            registration(Some(1), Some(12)),
            (1, 10),
            ROLE,
        )
        .unwrap_err();
        assert!(
            e.0.contains(
                "MaxCapacity 12 must not be greater than 10, the variant's MaxConcurrency"
            ),
            "{e}"
        );
        register(
            None,
            resource(),
            Dimension::ProvisionedConcurrency,
            registration(Some(1), Some(10)),
            (1, 10),
            ROLE,
        )
        .unwrap();
        let e = register(
            None,
            resource(),
            Dimension::InstanceCount,
            registration(Some(1), Some(1001)),
            (1, u32::MAX),
            ROLE,
        )
        .unwrap_err();
        assert!(
            e.0.contains("MaxCapacity 1001 must not be greater than 1000"),
            "{e}"
        );
    }

    fn policy(dimension: Dimension, config: serde_json::Value) -> ScalingPolicy {
        serde_json::from_value(serde_json::json!({
            "PolicyName": "p",
            "ServiceNamespace": "sagemaker",
            "ResourceId": "endpoint/my-endpoint/variant/AllTraffic",
            "ScalableDimension": dimension.as_str(),
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": config,
        }))
        .unwrap()
    }

    #[test]
    fn the_documented_policy_compiles_with_its_defaults() {
        let p = policy(
            Dimension::InstanceCount,
            serde_json::json!({
                "TargetValue": 70.0,
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                },
                "ScaleInCooldown": 600
            }),
        );
        let c = p.compile().unwrap();
        assert_eq!(c.metric, PolicyMetric::InvocationsPerInstance);
        assert_eq!(c.tracking.target_value, 70.0);
        assert_eq!(c.tracking.scale_in_cooldown, 600);
        assert_eq!(c.tracking.scale_out_cooldown, 300);
        assert!(!c.tracking.disable_scale_in);
        // Stored and read back unchanged.
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<ScalingPolicy>(&text).unwrap(), p);
    }

    #[test]
    fn bad_policies_name_the_member() {
        let cases = [
            (
                Dimension::ProvisionedConcurrency,
                serde_json::json!({"TargetValue": 70.0, "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}),
                "PredefinedMetricType SageMakerVariantInvocationsPerInstance scales \
                 sagemaker:variant:DesiredInstanceCount, not \
                 sagemaker:variant:DesiredProvisionedConcurrency",
            ),
            (
                Dimension::InstanceCount,
                serde_json::json!({"TargetValue": 70.0}),
                "needs exactly one of PredefinedMetricSpecification and \
                 CustomizedMetricSpecification",
            ),
            (
                Dimension::InstanceCount,
                serde_json::json!({"TargetValue": 0.0, "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}),
                "TargetValue 0 must be between",
            ),
            (
                Dimension::InstanceCount,
                serde_json::json!({"TargetValue": 1.0, "CustomizedMetricSpecification": {
                    "MetricName": "CPUUtilization", "Namespace": "/aws/sagemaker/Endpoints",
                    "Statistic": "Average", "Dimensions": []}}),
                "CustomizedMetricSpecification.Namespace \"/aws/sagemaker/Endpoints\" is not recorded by Plinth",
            ),
            (
                Dimension::InstanceCount,
                serde_json::json!({"TargetValue": 1.0, "CustomizedMetricSpecification": {
                    "MetricName": "CPUUtilization", "Namespace": "AWS/SageMaker",
                    "Statistic": "Average", "Dimensions": []}}),
                "CustomizedMetricSpecification.MetricName \"CPUUtilization\" is not one Plinth records",
            ),
            (
                Dimension::InstanceCount,
                serde_json::json!({"TargetValue": 1.0, "CustomizedMetricSpecification": {
                    "MetricName": "ModelLatency", "Namespace": "AWS/SageMaker",
                    "Statistic": "Average", "Unit": "Seconds", "Dimensions": [
                        {"Name": "EndpointName", "Value": "e"},
                        {"Name": "VariantName", "Value": "v"}]}}),
                "CustomizedMetricSpecification.Unit \"Seconds\" is not ModelLatency's unit, Microseconds",
            ),
            (
                Dimension::InstanceCount,
                serde_json::json!({"TargetValue": 1.0, "CustomizedMetricSpecification": {
                    "MetricName": "ModelLatency", "Namespace": "AWS/SageMaker",
                    "Statistic": "Average", "Dimensions": [
                        {"Name": "EndpointName", "Value": "e"}]}}),
                "CustomizedMetricSpecification.Dimensions must give EndpointName and VariantName",
            ),
            (
                Dimension::InstanceCount,
                serde_json::json!({"TargetValue": 1.0, "CustomizedMetricSpecification": {
                    "MetricName": "ModelLatency", "Namespace": "AWS/SageMaker",
                    "Statistic": "Average", "Dimensions": [
                        {"Name": "EndpointName", "Value": "e"},
                        {"Name": "Host", "Value": "h"}]}}),
                "\"Host\" is not a dimension of SageMaker's endpoint metrics",
            ),
            (
                Dimension::InstanceCount,
                serde_json::json!({"TargetValue": 1.0, "ScaleOutCooldown": 4000,
                    "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}),
                "ScaleOutCooldown 4000 must be between 0 and 3600 seconds",
            ),
        ];
        for (dimension, config, wanted) in cases {
            let e = policy(dimension, config.clone()).compile().unwrap_err();
            assert!(e.0.contains(wanted), "{config}: {e}");
        }
        let ok = policy(
            Dimension::InstanceCount,
            serde_json::json!({"TargetValue": 20000.0, "CustomizedMetricSpecification": {
                "MetricName": "ModelLatency", "Namespace": "AWS/SageMaker",
                "Statistic": "Average", "Unit": "Microseconds", "Dimensions": [
                    {"Name": "VariantName", "Value": "v"},
                    {"Name": "EndpointName", "Value": "e"}]}}),
        )
        .compile()
        .unwrap();
        assert_eq!(
            ok.metric,
            PolicyMetric::Custom {
                endpoint: "e".into(),
                variant: "v".into(),
                metric: Metric::ModelLatency,
                statistic: Statistic::Average
            }
        );
    }

    #[test]
    fn backlog_policies_track_an_asynchronous_endpoint_s_queue() {
        let spec = |dimensions: serde_json::Value| {
            policy(
                Dimension::InstanceCount,
                serde_json::json!({"TargetValue": 5.0, "CustomizedMetricSpecification": {
                    "MetricName": "ApproximateBacklogSizePerInstance",
                    "Namespace": "AWS/SageMaker", "Statistic": "Average",
                    "Dimensions": dimensions}}),
            )
            .compile()
        };
        let c = spec(serde_json::json!([{"Name": "EndpointName", "Value": "e"}])).unwrap();
        assert_eq!(
            c.metric,
            PolicyMetric::Backlog {
                endpoint: "e".into(),
                metric: BacklogMetric::SizePerInstance,
                statistic: Statistic::Average
            }
        );
        let e = spec(serde_json::json!([
            {"Name": "EndpointName", "Value": "e"},
            {"Name": "VariantName", "Value": "v"}
        ]))
        .unwrap_err();
        assert!(e.0.contains("must be EndpointName alone"), "{e}");
        // Samples over the minute: 0 instances and 3 queued asks for capacity.
        let samples = [
            Backlog {
                size: 0,
                instances: 0,
                oldest_age_seconds: 0.0,
            },
            Backlog {
                size: 3,
                instances: 0,
                oldest_age_seconds: 2.0,
            },
            Backlog {
                size: 9,
                instances: 1,
                oldest_age_seconds: 4.0,
            },
        ];
        assert_eq!(c.metric.backlog_datapoint(&samples), Some(4.0));
        assert_eq!(c.metric.backlog_datapoint(&[]), None);
        let flapping = policy(
            Dimension::InstanceCount,
            serde_json::json!({"TargetValue": 1.0, "CustomizedMetricSpecification": {
                "MetricName": "HasBacklogWithoutCapacity", "Namespace": "AWS/SageMaker",
                "Statistic": "Maximum",
                "Dimensions": [{"Name": "EndpointName", "Value": "e"}]}}),
        )
        .compile()
        .unwrap_err();
        assert!(
            flapping.0.contains("scale in and out in turn"),
            "{flapping}"
        );
        // Only on its own, asynchronous endpoint; a target that may go to 0 needs it.
        let own = ResourceId::parse("endpoint/e/variant/v").unwrap();
        let other = ResourceId::parse("endpoint/f/variant/v").unwrap();
        assert!(check_metric(&c.metric, &own, 0, true).is_ok());
        let e = check_metric(&c.metric, &other, 1, true).unwrap_err();
        assert!(e.0.contains("its own endpoint's backlog only"), "{e}");
        let e = check_metric(&c.metric, &own, 1, false).unwrap_err();
        assert!(e.0.contains("has no AsyncInferenceConfig"), "{e}");
        let invocations = PolicyMetric::InvocationsPerInstance;
        assert!(check_metric(&invocations, &own, 1, true).is_ok());
        let e = check_metric(&invocations, &own, 0, true).unwrap_err();
        assert!(e.0.contains("MinCapacity 0"), "{e}");
        let max = PolicyMetric::Backlog {
            endpoint: "e".into(),
            metric: BacklogMetric::HasBacklogWithoutCapacity,
            statistic: Statistic::Maximum,
        };
        assert_eq!(max.backlog_datapoint(&samples), Some(1.0));
        let p50 = PolicyMetric::Backlog {
            endpoint: "e".into(),
            metric: BacklogMetric::AgeOfOldestRequest,
            statistic: Statistic::Percentile(50.0),
        };
        assert_eq!(p50.backlog_datapoint(&samples), Some(2.0));
        // From zero capacity, a backlog asks for one instance.
        assert_eq!(
            target_tracking::wanted(
                &c.tracking,
                0,
                &[c.metric.backlog_datapoint(&samples[1..2])]
            ),
            1
        );
    }

    fn minute_of(requests: u64, latency: Duration) -> Stats {
        let mut window = Window::new();
        for i in 0..requests {
            window.record_at(
                i % 60,
                &Sample {
                    outcome: Outcome::Success,
                    model_error: false,
                    model_latency: Some(latency),
                    overhead_latency: Duration::from_micros(10),
                },
            );
        }
        window.stats(0, 59)
    }

    #[test]
    fn datapoints_are_per_instance_and_per_provisioned_unit() {
        let stats = minute_of(280, Duration::from_millis(150));
        assert_eq!(
            PolicyMetric::InvocationsPerInstance.datapoint(&stats, 4, 60.0),
            Some(70.0)
        );
        assert_eq!(
            PolicyMetric::InvocationsPerInstance.datapoint(&stats, 0, 60.0),
            Some(280.0)
        );
        // 280 requests of 150 ms in 60 s: 0.7 busy on average; over 2 provisioned, 0.35
        // (the latency histogram keeps 2^(1/8) buckets, so within a bucket's width).
        let u = PolicyMetric::ProvisionedConcurrencyUtilization
            .datapoint(&stats, 2, 60.0)
            .unwrap();
        assert!((u - 0.35).abs() < 0.35 * 0.05, "{u}");
        let quiet = minute_of(0, Duration::ZERO);
        assert_eq!(
            PolicyMetric::InvocationsPerInstance.datapoint(&quiet, 3, 60.0),
            Some(0.0)
        );
        let latency = PolicyMetric::Custom {
            endpoint: "e".into(),
            variant: "v".into(),
            metric: Metric::ModelLatency,
            statistic: Statistic::Average,
        };
        assert_eq!(
            latency.datapoint(&quiet, 3, 60.0),
            None,
            "no samples, no datapoint"
        );
        let mean = latency.datapoint(&stats, 3, 60.0).unwrap();
        assert!((mean - 150_000.0).abs() < 150_000.0 * 0.05, "{mean}");
    }

    fn scale(capacity: u32) -> Decision {
        Decision::Scale {
            capacity,
            cause: format!("to {capacity}"),
        }
    }

    #[test]
    fn policies_combine_out_by_any_and_in_by_all() {
        let none = SuspendedState::default();
        assert_eq!(
            combine(&[scale(6), Decision::Hold, scale(8)], 4, none),
            scale(8)
        );
        assert_eq!(
            combine(&[scale(2), Decision::Hold], 4, none),
            Decision::Hold
        );
        assert_eq!(combine(&[scale(2), scale(3)], 4, none), scale(3));
        assert_eq!(combine(&[scale(2), scale(6)], 4, none), scale(6));
        assert_eq!(combine(&[], 4, none), Decision::Hold);
        let no_in = SuspendedState {
            dynamic_scaling_in_suspended: true,
            ..none
        };
        assert_eq!(combine(&[scale(2)], 4, no_in), Decision::Hold);
        assert_eq!(combine(&[scale(6)], 4, no_in), scale(6));
        let no_out = SuspendedState {
            dynamic_scaling_out_suspended: true,
            ..none
        };
        assert_eq!(combine(&[scale(6)], 4, no_out), Decision::Hold);
        assert_eq!(combine(&[scale(2)], 4, no_out), scale(2));
    }

    #[test]
    fn an_update_may_change_a_scaled_variant_s_model_not_its_instance_type() {
        let old = [("A", Some("ml.m5.large")), ("B", Some("ml.m5.large"))];
        let same = [("A", Some("ml.m5.large")), ("B", Some("ml.c5.xlarge"))];
        assert_eq!(check_update(&["A"], &old, &same), Ok(()), "B is not scaled");
        let e = check_update(&["A", "B"], &old, &same).unwrap_err();
        assert!(
            e.0.starts_with(
                "Variant B is a scalable target of Application Auto Scaling, and \
                 the update changes its InstanceType (ml.m5.large to ml.c5.xlarge)"
            ),
            "{e}"
        );
        let dropped = [("A", None)];
        assert!(
            check_update(&["A"], &old, &dropped).is_err(),
            "a type given, then none"
        );
        assert_eq!(
            check_update(&["B"], &old, &dropped),
            Ok(()),
            "B leaves the endpoint"
        );
    }

    #[test]
    fn an_alarm_at_a_bound_is_a_not_scaled_activity() {
        let p = TargetTracking {
            target_value: 70.0,
            scale_out_cooldown: 300,
            scale_in_cooldown: 300,
            disable_scale_in: false,
        };
        let bounds = target_tracking::Bounds { min: 1, max: 4 };
        let high = vec![Some(200.0); 3];
        assert_eq!(
            not_scaled(&p, bounds, 4, &high),
            Some(NotScaled::AlreadyAtMaxCapacity)
        );
        assert_eq!(not_scaled(&p, bounds, 3, &high), None, "it can still scale");
        let low = vec![Some(1.0); 15];
        assert_eq!(
            not_scaled(&p, bounds, 1, &low),
            Some(NotScaled::AlreadyAtMinCapacity)
        );
        let keep = TargetTracking {
            disable_scale_in: true,
            ..p
        };
        assert_eq!(not_scaled(&keep, bounds, 1, &low), None);
        assert_eq!(not_scaled(&p, bounds, 2, &[Some(70.0); 15]), None);
    }
}
