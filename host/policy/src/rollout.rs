//! SageMaker's deployment guardrails: the `DeploymentConfig` that `UpdateEndpoint` takes
//! (blue/green all at once, canary or linear traffic shifting, rolling batches, and the
//! alarms that trigger an automatic rollback), parsed strictly with SageMaker's own field
//! names, validated as SageMaker validates it, and turned into a [`Plan`]: the traffic
//! steps to apply, how long to bake after each, and how to roll back.
//!
//! This module owns the rules and the plan. Executing a plan is decided step by step by
//! the state machine in [`rollout_machine`](super::rollout_machine) (when traffic moves, bakes, alarms, the
//! execution timeout, rolling and rollback batches); the server's driver only carries out
//! its commands (building the new fleet, resizing pools, publishing snapshots, evaluating
//! alarms, keeping time).
//!
//! Capacities ([`CapacitySize`]) are fractions of the *new* fleet: `INSTANCE_COUNT n` is
//! `n / new_fleet_instances`, `CAPACITY_PERCENT p` is `p / 100`. Limits are checked on
//! the exact fraction, so 1 of 3 instances (33.3 %) passes the 10 %–50 % rule of
//! `LinearStepSize` without rounding surprises.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

/// The longest `WaitIntervalInSeconds` and `TerminationWaitInSeconds` (one hour).
pub const MAX_WAIT_SECONDS: i64 = 3600;
/// The shortest `MaximumExecutionTimeoutInSeconds` (ten minutes).
pub const MIN_EXECUTION_TIMEOUT_SECONDS: i64 = 600;
/// The longest `MaximumExecutionTimeoutInSeconds` (eight hours).
pub const MAX_EXECUTION_TIMEOUT_SECONDS: i64 = 28800;
/// The most alarms `AutoRollbackConfiguration.Alarms` may name.
pub const MAX_ALARMS: usize = 10;
/// The longest CloudWatch alarm name.
pub const MAX_ALARM_NAME_CHARS: usize = 255;

/// `DeploymentConfig`, as `CreateEndpoint` and `UpdateEndpoint` take it. With neither
/// policy the update is blue/green, all at once, with no bake.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct DeploymentConfig {
    /// `BlueGreenUpdatePolicy`: provision the whole new fleet, then shift traffic to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green_update_policy: Option<BlueGreenUpdatePolicy>,
    /// `RollingUpdatePolicy`: replace the fleet batch by batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update_policy: Option<RollingUpdatePolicy>,
    /// `AutoRollbackConfiguration`: the alarms that roll the update back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback_configuration: Option<AutoRollbackConfiguration>,
}

/// `BlueGreenUpdatePolicy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct BlueGreenUpdatePolicy {
    /// `TrafficRoutingConfiguration` (required): how traffic moves to the new fleet.
    pub traffic_routing_configuration: TrafficRoutingConfiguration,
    /// `TerminationWaitInSeconds`: how long the old fleet is kept after the last bake,
    /// 0–3600. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_wait_in_seconds: Option<i64>,
    /// `MaximumExecutionTimeoutInSeconds`: the whole update's deadline, 600–28800.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_execution_timeout_in_seconds: Option<i64>,
}

/// `TrafficRoutingConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct TrafficRoutingConfiguration {
    /// `Type` (required).
    #[serde(rename = "Type")]
    pub kind: TrafficRoutingType,
    /// `WaitIntervalInSeconds` (required): the bake after each step, 0–3600.
    pub wait_interval_in_seconds: i64,
    /// `CanarySize`: required with `CANARY`, at most 50 % of the new fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_size: Option<CapacitySize>,
    /// `LinearStepSize`: required with `LINEAR`, 10 %–50 % of the new fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_step_size: Option<CapacitySize>,
}

/// `TrafficRoutingConfiguration.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TrafficRoutingType {
    /// `ALL_AT_ONCE`: all traffic in one step, then one bake.
    AllAtOnce,
    /// `CANARY`: `CanarySize` first, then the rest, each followed by a bake.
    Canary,
    /// `LINEAR`: steps of `LinearStepSize`, each followed by a bake.
    Linear,
}

impl TrafficRoutingType {
    /// SageMaker's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllAtOnce => "ALL_AT_ONCE",
            Self::Canary => "CANARY",
            Self::Linear => "LINEAR",
        }
    }
}

/// `RollingUpdatePolicy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct RollingUpdatePolicy {
    /// `MaximumBatchSize` (required): each batch, 5 %–50 % of the fleet.
    pub maximum_batch_size: CapacitySize,
    /// `WaitIntervalInSeconds` (required): the bake after each batch, 0–3600.
    pub wait_interval_in_seconds: i64,
    /// `MaximumExecutionTimeoutInSeconds`: the whole update's deadline, 600–28800.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_execution_timeout_in_seconds: Option<i64>,
    /// `RollbackMaximumBatchSize`: each rollback batch. Default: the whole fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_maximum_batch_size: Option<CapacitySize>,
}

/// `AutoRollbackConfiguration`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct AutoRollbackConfiguration {
    /// `Alarms`: 1–10 distinct alarms; any of them in ALARM during a bake rolls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarms: Option<Vec<Alarm>>,
}

/// One entry of `AutoRollbackConfiguration.Alarms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct Alarm {
    /// `AlarmName`.
    pub alarm_name: String,
}

/// `CapacitySize`: a part of the new fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
pub struct CapacitySize {
    /// `Type`.
    #[serde(rename = "Type")]
    pub kind: CapacitySizeType,
    /// `Value`: at least 1.
    pub value: i64,
}

/// `CapacitySize.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CapacitySizeType {
    /// `INSTANCE_COUNT`: `Value` instances.
    InstanceCount,
    /// `CAPACITY_PERCENT`: `Value` percent of the fleet.
    CapacityPercent,
}

/// How an update moves traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Strategy {
    /// Blue/green, all traffic in one step.
    AllAtOnce,
    /// Blue/green, a canary step and then the rest.
    Canary,
    /// Blue/green, equal steps.
    Linear,
    /// Rolling batches of instances.
    Rolling,
}

impl Strategy {
    /// `"ALL_AT_ONCE"`, `"CANARY"`, `"LINEAR"` or `"ROLLING"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllAtOnce => "ALL_AT_ONCE",
            Self::Canary => "CANARY",
            Self::Linear => "LINEAR",
            Self::Rolling => "ROLLING",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a [`Plan`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The fraction, in (0, 1], of the traffic on the new fleet once this step is applied.
    pub new_share: f64,
    /// How long to bake (watch the alarms) after the step before going on.
    pub bake: Duration,
}

/// A validated update, ready to execute: apply each step, bake, and roll back if an alarm
/// fires during any bake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// How traffic moves.
    pub strategy: Strategy,
    /// The steps in order; shares increase strictly and the last is always exactly 1.0.
    pub steps: Vec<Step>,
    /// How long the old fleet is kept after the last bake before it is terminated
    /// (blue/green `TerminationWaitInSeconds`; zero for rolling updates).
    pub termination_wait: Duration,
    /// The whole update's deadline (`MaximumExecutionTimeoutInSeconds`), if given.
    pub max_execution: Option<Duration>,
    /// The fraction of the traffic moved back to the old fleet per rollback step: 1.0
    /// (everything at once) except for a rolling update's `RollbackMaximumBatchSize`.
    pub rollback_step: f64,
    /// The alarm names of `AutoRollbackConfiguration`; empty means no automatic rollback.
    pub alarms: Vec<String>,
}

const BLUE_GREEN: &str = "DeploymentConfig.BlueGreenUpdatePolicy";
const ROUTING: &str = "DeploymentConfig.BlueGreenUpdatePolicy.TrafficRoutingConfiguration";
const ROLLING: &str = "DeploymentConfig.RollingUpdatePolicy";
const ALARMS: &str = "DeploymentConfig.AutoRollbackConfiguration.Alarms";

impl DeploymentConfig {
    /// [`plan`](Self::plan) for a new fleet of production variants of these instance counts:
    /// a rolling update replaces one variant only.
    pub fn plan_variants(&self, instance_counts: &[usize]) -> Result<Plan, String> {
        let plan = self.plan(instance_counts.iter().sum())?;
        if plan.strategy == Strategy::Rolling && instance_counts.len() > 1 {
            return Err(format!(
                "{ROLLING} applies to endpoint configs with one production variant; use \
                 BlueGreenUpdatePolicy for several"
            ));
        }
        Ok(plan)
    }

    /// Validate the config as SageMaker does and plan the update of a variant whose new
    /// fleet has `new_fleet_instances` instances. The error names the field and the rule.
    ///
    /// A rolling update moves whole instances: a `CAPACITY_PERCENT` batch is rounded down
    /// to whole instances (at least one), so each step's share is a multiple of
    /// `1 / new_fleet_instances` and [`split`] gives exact batches.
    pub fn plan(&self, new_fleet_instances: usize) -> Result<Plan, String> {
        let alarms = self.alarms()?;
        let fleet = new_fleet_instances;
        match (&self.blue_green_update_policy, &self.rolling_update_policy) {
            (Some(_), Some(_)) => Err(
                "DeploymentConfig may give BlueGreenUpdatePolicy or RollingUpdatePolicy, not both"
                    .into(),
            ),
            (None, None) => Ok(Plan {
                strategy: Strategy::AllAtOnce,
                steps: vec![Step {
                    new_share: 1.0,
                    bake: Duration::ZERO,
                }],
                termination_wait: Duration::ZERO,
                max_execution: None,
                rollback_step: 1.0,
                alarms,
            }),
            (Some(policy), None) => policy.plan(fleet, alarms),
            (None, Some(policy)) => policy.plan(fleet, alarms),
        }
    }

    /// The alarm names, checked: 1–10 of them, distinct and non-empty.
    fn alarms(&self) -> Result<Vec<String>, String> {
        let Some(alarms) = self
            .auto_rollback_configuration
            .as_ref()
            .and_then(|c| c.alarms.as_ref())
        else {
            return Ok(Vec::new());
        };
        if alarms.is_empty() || alarms.len() > MAX_ALARMS {
            return Err(format!(
                "{ALARMS} must name 1 to {MAX_ALARMS} alarms; it names {}",
                alarms.len()
            ));
        }
        let mut seen = HashSet::new();
        for (i, alarm) in alarms.iter().enumerate() {
            let name = &alarm.alarm_name;
            if name.trim().is_empty() {
                return Err(format!("{ALARMS}[{i}].AlarmName must not be empty"));
            }
            if name.chars().count() > MAX_ALARM_NAME_CHARS {
                return Err(format!(
                    "{ALARMS}[{i}].AlarmName must be at most {MAX_ALARM_NAME_CHARS} characters; it has {}",
                    name.chars().count()
                ));
            }
            if !seen.insert(name.as_str()) {
                return Err(format!("{ALARMS} names {name:?} more than once"));
            }
        }
        Ok(alarms.iter().map(|a| a.alarm_name.clone()).collect())
    }
}

impl BlueGreenUpdatePolicy {
    fn plan(&self, fleet: usize, alarms: Vec<String>) -> Result<Plan, String> {
        let routing = &self.traffic_routing_configuration;
        let bake = wait(
            &format!("{ROUTING}.WaitIntervalInSeconds"),
            routing.wait_interval_in_seconds,
        )?;
        let termination_wait = match self.termination_wait_in_seconds {
            Some(seconds) => wait(&format!("{BLUE_GREEN}.TerminationWaitInSeconds"), seconds)?,
            None => Duration::ZERO,
        };
        let max_execution =
            execution_timeout(BLUE_GREEN, self.maximum_execution_timeout_in_seconds)?;

        let kind = routing.kind;
        let only_with = |field: &str, allowed: TrafficRoutingType| {
            format!(
                "{ROUTING}.{field} is only allowed when Type is {}; Type is {}",
                allowed.as_str(),
                kind.as_str()
            )
        };
        if routing.canary_size.is_some() && kind != TrafficRoutingType::Canary {
            return Err(only_with("CanarySize", TrafficRoutingType::Canary));
        }
        if routing.linear_step_size.is_some() && kind != TrafficRoutingType::Linear {
            return Err(only_with("LinearStepSize", TrafficRoutingType::Linear));
        }
        let (strategy, shares) = match kind {
            TrafficRoutingType::AllAtOnce => (Strategy::AllAtOnce, vec![1.0]),
            TrafficRoutingType::Canary => {
                let path = format!("{ROUTING}.CanarySize");
                let size = routing
                    .canary_size
                    .ok_or_else(|| format!("{path} is required when Type is CANARY"))?;
                let canary = Fraction::of(&path, size, fleet)?;
                canary.check_range(&path, size, fleet, None, 50)?;
                (Strategy::Canary, vec![canary.value(), 1.0])
            }
            TrafficRoutingType::Linear => {
                let path = format!("{ROUTING}.LinearStepSize");
                let size = routing
                    .linear_step_size
                    .ok_or_else(|| format!("{path} is required when Type is LINEAR"))?;
                let step = Fraction::of(&path, size, fleet)?;
                step.check_range(&path, size, fleet, Some(10), 50)?;
                (Strategy::Linear, step.multiples())
            }
        };
        Ok(Plan {
            strategy,
            steps: steps(shares, bake),
            termination_wait,
            max_execution,
            rollback_step: 1.0,
            alarms,
        })
    }
}

impl RollingUpdatePolicy {
    fn plan(&self, fleet: usize, alarms: Vec<String>) -> Result<Plan, String> {
        let bake = wait(
            &format!("{ROLLING}.WaitIntervalInSeconds"),
            self.wait_interval_in_seconds,
        )?;
        let max_execution = execution_timeout(ROLLING, self.maximum_execution_timeout_in_seconds)?;
        if fleet == 0 {
            return Err(format!(
                "{ROLLING} needs a new fleet of at least 1 instance; it has 0"
            ));
        }
        let path = format!("{ROLLING}.MaximumBatchSize");
        let batch = Fraction::of(&path, self.maximum_batch_size, fleet)?;
        batch.check_range(&path, self.maximum_batch_size, fleet, Some(5), 50)?;
        let rollback_step = match self.rollback_maximum_batch_size {
            Some(size) => {
                let path = format!("{ROLLING}.RollbackMaximumBatchSize");
                Fraction::of(&path, size, fleet)?
                    .whole_instances(fleet)
                    .value()
            }
            None => 1.0,
        };
        Ok(Plan {
            strategy: Strategy::Rolling,
            steps: steps(batch.whole_instances(fleet).multiples(), bake),
            termination_wait: Duration::ZERO,
            max_execution,
            rollback_step,
            alarms,
        })
    }
}

fn steps(shares: Vec<f64>, bake: Duration) -> Vec<Step> {
    shares
        .into_iter()
        .map(|new_share| Step { new_share, bake })
        .collect()
}

/// A 0–3600 second wait.
fn wait(path: &str, seconds: i64) -> Result<Duration, String> {
    if !(0..=MAX_WAIT_SECONDS).contains(&seconds) {
        return Err(format!(
            "{path} must be between 0 and {MAX_WAIT_SECONDS} seconds; it is {seconds}"
        ));
    }
    Ok(Duration::from_secs(seconds as u64))
}

/// `<policy>.MaximumExecutionTimeoutInSeconds`, 600–28800 when given.
fn execution_timeout(policy: &str, seconds: Option<i64>) -> Result<Option<Duration>, String> {
    let Some(seconds) = seconds else {
        return Ok(None);
    };
    let range = MIN_EXECUTION_TIMEOUT_SECONDS..=MAX_EXECUTION_TIMEOUT_SECONDS;
    if !range.contains(&seconds) {
        return Err(format!(
            "{policy}.MaximumExecutionTimeoutInSeconds must be between {MIN_EXECUTION_TIMEOUT_SECONDS} and {MAX_EXECUTION_TIMEOUT_SECONDS} seconds; it is {seconds}"
        ));
    }
    Ok(Some(Duration::from_secs(seconds as u64)))
}

/// An exact part `num / den` of the new fleet, with `0 < num <= den`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fraction {
    num: u128,
    den: u128,
}

impl Fraction {
    /// `size` as a part of a fleet of `fleet` instances: at least 1, at most all of it.
    fn of(path: &str, size: CapacitySize, fleet: usize) -> Result<Self, String> {
        if size.value < 1 {
            return Err(format!(
                "{path}.Value must be at least 1; it is {}",
                size.value
            ));
        }
        let value = size.value as u128;
        match size.kind {
            CapacitySizeType::CapacityPercent if value > 100 => Err(format!(
                "{path} must be at most 100% of the new fleet; it is {value}%"
            )),
            CapacitySizeType::CapacityPercent => Ok(Self {
                num: value,
                den: 100,
            }),
            CapacitySizeType::InstanceCount if value > fleet as u128 => Err(format!(
                "{path} must be at most the new fleet ({}); it is {}",
                instances(fleet as u128),
                instances(value)
            )),
            CapacitySizeType::InstanceCount => Ok(Self {
                num: value,
                den: fleet as u128,
            }),
        }
    }

    /// Check `min% <= self <= max%` exactly, naming the field and the rule if not.
    fn check_range(
        self,
        path: &str,
        size: CapacitySize,
        fleet: usize,
        min: Option<u128>,
        max: u128,
    ) -> Result<(), String> {
        let too_small = min.is_some_and(|min| 100 * self.num < min * self.den);
        if !too_small && 100 * self.num <= max * self.den {
            return Ok(());
        }
        let rule = match min {
            Some(min) => format!("between {min}% and {max}%"),
            None => format!("at most {max}%"),
        };
        let actual = match size.kind {
            CapacitySizeType::InstanceCount => {
                format!("{} is {}", instances(self.num), percent(self.num, self.den))
            }
            CapacitySizeType::CapacityPercent => format!("it is {}%", self.num),
        };
        Err(format!(
            "{path} must be {rule} of the new fleet ({}); {actual}",
            instances(fleet as u128)
        ))
    }

    /// Rounded down to whole instances of a fleet of `fleet` (> 0), at least one.
    fn whole_instances(self, fleet: usize) -> Self {
        let fleet = fleet as u128;
        Self {
            num: (self.num * fleet / self.den).clamp(1, fleet),
            den: fleet,
        }
    }

    fn value(self) -> f64 {
        if self.num >= self.den {
            1.0
        } else {
            self.num as f64 / self.den as f64
        }
    }

    /// `self, 2·self, ...` up to and including exactly 1.0.
    fn multiples(self) -> Vec<f64> {
        let mut shares = Vec::new();
        let mut k = 1;
        loop {
            let step = Self {
                num: self.num * k,
                den: self.den,
            };
            shares.push(step.value());
            if step.num >= step.den {
                return shares;
            }
            k += 1;
        }
    }
}

fn instances(n: u128) -> String {
    if n == 1 {
        "1 instance".into()
    } else {
        format!("{n} instances")
    }
}

/// `num / den` as a percentage with at most two decimals: "75%", "33.33%".
fn percent(num: u128, den: u128) -> String {
    let hundredths = (num * 10_000 + den / 2) / den;
    let text = format!("{}.{:02}", hundredths / 100, hundredths % 100);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// For a rolling update of a variant of `count` instances: how many instances the new and
/// the old fleet hold once `new_share` of the traffic is on the new one, as
/// `(new, old)`. `new` is `count · new_share` rounded up (any positive share gets at
/// least one instance); a share of 0 (or less, or NaN) gives `(0, count)`, 1 or more
/// gives `(count, 0)`.
pub fn split(count: usize, new_share: f64) -> (usize, usize) {
    if new_share.is_nan() || new_share <= 0.0 || count == 0 {
        return (0, count);
    }
    let exact = count as f64 * new_share.min(1.0);
    // Shares such as 3/10 are not exact in binary: 0.3 * 10 is 3.0000000000000004.
    let new = if (exact - exact.round()).abs() < 1e-9 {
        exact.round()
    } else {
        exact.ceil()
    };
    let new = (new as usize).clamp(1, count);
    (new, count - new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(kind: CapacitySizeType, value: i64) -> CapacitySize {
        CapacitySize { kind, value }
    }
    fn count(value: i64) -> CapacitySize {
        size(CapacitySizeType::InstanceCount, value)
    }
    fn pct(value: i64) -> CapacitySize {
        size(CapacitySizeType::CapacityPercent, value)
    }

    fn blue_green(
        kind: TrafficRoutingType,
        wait: i64,
        canary: Option<CapacitySize>,
        linear: Option<CapacitySize>,
    ) -> DeploymentConfig {
        DeploymentConfig {
            blue_green_update_policy: Some(BlueGreenUpdatePolicy {
                traffic_routing_configuration: TrafficRoutingConfiguration {
                    kind,
                    wait_interval_in_seconds: wait,
                    canary_size: canary,
                    linear_step_size: linear,
                },
                termination_wait_in_seconds: None,
                maximum_execution_timeout_in_seconds: None,
            }),
            ..Default::default()
        }
    }

    fn canary(size: CapacitySize) -> DeploymentConfig {
        blue_green(TrafficRoutingType::Canary, 300, Some(size), None)
    }
    fn linear(size: CapacitySize) -> DeploymentConfig {
        blue_green(TrafficRoutingType::Linear, 60, None, Some(size))
    }
    fn rolling(batch: CapacitySize, rollback: Option<CapacitySize>) -> DeploymentConfig {
        DeploymentConfig {
            rolling_update_policy: Some(RollingUpdatePolicy {
                maximum_batch_size: batch,
                wait_interval_in_seconds: 120,
                maximum_execution_timeout_in_seconds: None,
                rollback_maximum_batch_size: rollback,
            }),
            ..Default::default()
        }
    }

    fn shares(plan: &Plan) -> Vec<f64> {
        plan.steps.iter().map(|s| s.new_share).collect()
    }

    fn err(config: &DeploymentConfig, fleet: usize) -> String {
        config.plan(fleet).unwrap_err()
    }

    fn assert_err(config: &DeploymentConfig, fleet: usize, expected: &str) {
        let e = err(config, fleet);
        assert!(e.contains(expected), "expected {expected:?} in {e:?}");
    }

    #[test]
    fn no_policy_is_all_at_once_without_bake() {
        let plan = DeploymentConfig::default().plan(3).unwrap();
        assert_eq!(plan.strategy, Strategy::AllAtOnce);
        assert_eq!(
            plan.steps,
            vec![Step {
                new_share: 1.0,
                bake: Duration::ZERO
            }]
        );
        assert_eq!(plan.termination_wait, Duration::ZERO);
        assert_eq!(plan.max_execution, None);
        assert_eq!(plan.rollback_step, 1.0);
        assert!(plan.alarms.is_empty());
    }

    #[test]
    fn all_at_once_bakes_once() {
        let mut config = blue_green(TrafficRoutingType::AllAtOnce, 600, None, None);
        let policy = config.blue_green_update_policy.as_mut().unwrap();
        policy.termination_wait_in_seconds = Some(120);
        policy.maximum_execution_timeout_in_seconds = Some(1800);
        let plan = config.plan(2).unwrap();
        assert_eq!(plan.strategy, Strategy::AllAtOnce);
        assert_eq!(
            plan.steps,
            vec![Step {
                new_share: 1.0,
                bake: Duration::from_secs(600)
            }]
        );
        assert_eq!(plan.termination_wait, Duration::from_secs(120));
        assert_eq!(plan.max_execution, Some(Duration::from_secs(1800)));
    }

    #[test]
    fn canary_by_count_and_percent() {
        let plan = canary(count(1)).plan(4).unwrap();
        assert_eq!(plan.strategy, Strategy::Canary);
        assert_eq!(shares(&plan), vec![0.25, 1.0]);
        assert!(plan
            .steps
            .iter()
            .all(|s| s.bake == Duration::from_secs(300)));

        let plan = canary(count(2)).plan(4).unwrap();
        assert_eq!(shares(&plan), vec![0.5, 1.0]);

        let plan = canary(pct(10)).plan(7).unwrap();
        assert_eq!(shares(&plan), vec![0.1, 1.0]);
        // Percentages do not depend on the fleet size, even an empty one.
        assert_eq!(shares(&canary(pct(50)).plan(0).unwrap()), vec![0.5, 1.0]);
    }

    #[test]
    fn canary_rules() {
        assert_err(
            &canary(count(3)),
            4,
            "DeploymentConfig.BlueGreenUpdatePolicy.TrafficRoutingConfiguration.CanarySize must be at most 50% of the new fleet (4 instances); 3 instances is 75%",
        );
        assert_err(
            &canary(pct(51)),
            4,
            "CanarySize must be at most 50% of the new fleet (4 instances); it is 51%",
        );
        assert_err(
            &canary(count(2)),
            3,
            "CanarySize must be at most 50% of the new fleet (3 instances); 2 instances is 66.67%",
        );
        assert_err(&canary(count(1)), 1, "(1 instance); 1 instance is 100%");
        assert_err(
            &blue_green(TrafficRoutingType::Canary, 0, None, None),
            4,
            "TrafficRoutingConfiguration.CanarySize is required when Type is CANARY",
        );
        assert_err(
            &blue_green(TrafficRoutingType::Canary, 0, Some(count(1)), Some(pct(10))),
            4,
            "TrafficRoutingConfiguration.LinearStepSize is only allowed when Type is LINEAR; Type is CANARY",
        );
    }

    #[test]
    fn linear_plans() {
        let plan = linear(pct(10)).plan(10).unwrap();
        assert_eq!(plan.strategy, Strategy::Linear);
        assert_eq!(plan.steps.len(), 10);
        for (k, step) in plan.steps.iter().enumerate() {
            assert!((step.new_share - (k + 1) as f64 / 10.0).abs() < 1e-12);
            assert_eq!(step.bake, Duration::from_secs(60));
        }
        assert_eq!(plan.steps.last().unwrap().new_share, 1.0);

        assert_eq!(
            shares(&linear(pct(20)).plan(5).unwrap()),
            vec![0.2, 0.4, 0.6, 0.8, 1.0]
        );
        assert_eq!(
            shares(&linear(pct(33)).plan(3).unwrap()),
            vec![0.33, 0.66, 0.99, 1.0]
        );
        assert_eq!(shares(&linear(pct(50)).plan(2).unwrap()), vec![0.5, 1.0]);
        // One instance of three is a third, exactly three steps.
        assert_eq!(
            shares(&linear(count(1)).plan(3).unwrap()),
            vec![1.0 / 3.0, 2.0 / 3.0, 1.0]
        );
        // 3 of 10 instances: 30%, 60%, 90%, 100%.
        assert_eq!(
            shares(&linear(count(3)).plan(10).unwrap()),
            vec![0.3, 0.6, 0.9, 1.0]
        );
    }

    #[test]
    fn linear_rules() {
        assert_err(
            &linear(pct(9)),
            10,
            "DeploymentConfig.BlueGreenUpdatePolicy.TrafficRoutingConfiguration.LinearStepSize must be between 10% and 50% of the new fleet (10 instances); it is 9%",
        );
        assert_err(
            &linear(count(1)),
            11,
            "LinearStepSize must be between 10% and 50% of the new fleet (11 instances); 1 instance is 9.09%",
        );
        assert_err(&linear(count(3)), 5, "3 instances is 60%");
        assert_err(
            &blue_green(TrafficRoutingType::Linear, 0, None, None),
            4,
            "LinearStepSize is required when Type is LINEAR",
        );
        assert_err(
            &blue_green(TrafficRoutingType::Linear, 0, Some(pct(10)), Some(pct(10))),
            4,
            "CanarySize is only allowed when Type is CANARY; Type is LINEAR",
        );
        assert_err(
            &blue_green(TrafficRoutingType::AllAtOnce, 0, None, Some(pct(10))),
            4,
            "LinearStepSize is only allowed when Type is LINEAR; Type is ALL_AT_ONCE",
        );
    }

    #[test]
    fn capacity_size_rules() {
        assert_err(
            &canary(count(0)),
            4,
            "TrafficRoutingConfiguration.CanarySize.Value must be at least 1; it is 0",
        );
        assert_err(
            &linear(pct(-5)),
            4,
            "LinearStepSize.Value must be at least 1; it is -5",
        );
        assert_err(
            &canary(pct(150)),
            4,
            "CanarySize must be at most 100% of the new fleet; it is 150%",
        );
        assert_err(
            &canary(count(5)),
            4,
            "CanarySize must be at most the new fleet (4 instances); it is 5 instances",
        );
        assert_err(
            &canary(count(1)),
            0,
            "CanarySize must be at most the new fleet (0 instances); it is 1 instance",
        );
        assert_err(
            &rolling(pct(10), Some(pct(101))),
            10,
            "RollingUpdatePolicy.RollbackMaximumBatchSize must be at most 100% of the new fleet; it is 101%",
        );
        assert_err(
            &rolling(pct(10), Some(count(11))),
            10,
            "RollbackMaximumBatchSize must be at most the new fleet (10 instances); it is 11 instances",
        );
    }

    #[test]
    fn time_rules() {
        assert_err(
            &blue_green(TrafficRoutingType::AllAtOnce, 3601, None, None),
            1,
            "DeploymentConfig.BlueGreenUpdatePolicy.TrafficRoutingConfiguration.WaitIntervalInSeconds must be between 0 and 3600 seconds; it is 3601",
        );
        assert_err(
            &blue_green(TrafficRoutingType::AllAtOnce, -1, None, None),
            1,
            "WaitIntervalInSeconds must be between 0 and 3600 seconds; it is -1",
        );
        let mut config = blue_green(TrafficRoutingType::AllAtOnce, 0, None, None);
        let policy = config.blue_green_update_policy.as_mut().unwrap();
        policy.termination_wait_in_seconds = Some(4000);
        assert_err(
            &config,
            1,
            "DeploymentConfig.BlueGreenUpdatePolicy.TerminationWaitInSeconds must be between 0 and 3600 seconds; it is 4000",
        );
        let policy = config.blue_green_update_policy.as_mut().unwrap();
        policy.termination_wait_in_seconds = Some(3600);
        policy.maximum_execution_timeout_in_seconds = Some(599);
        assert_err(
            &config,
            1,
            "DeploymentConfig.BlueGreenUpdatePolicy.MaximumExecutionTimeoutInSeconds must be between 600 and 28800 seconds; it is 599",
        );
        let policy = config.blue_green_update_policy.as_mut().unwrap();
        policy.maximum_execution_timeout_in_seconds = Some(28800);
        assert!(config.plan(1).is_ok());

        let mut config = rolling(count(1), None);
        let policy = config.rolling_update_policy.as_mut().unwrap();
        policy.wait_interval_in_seconds = 3601;
        assert_err(
            &config,
            4,
            "DeploymentConfig.RollingUpdatePolicy.WaitIntervalInSeconds must be between 0 and 3600 seconds; it is 3601",
        );
        let policy = config.rolling_update_policy.as_mut().unwrap();
        policy.wait_interval_in_seconds = 0;
        policy.maximum_execution_timeout_in_seconds = Some(28801);
        assert_err(
            &config,
            4,
            "DeploymentConfig.RollingUpdatePolicy.MaximumExecutionTimeoutInSeconds must be between 600 and 28800 seconds; it is 28801",
        );
    }

    #[test]
    fn rolling_plans() {
        let plan = rolling(count(1), None).plan(4).unwrap();
        assert_eq!(plan.strategy, Strategy::Rolling);
        assert_eq!(shares(&plan), vec![0.25, 0.5, 0.75, 1.0]);
        assert!(plan
            .steps
            .iter()
            .all(|s| s.bake == Duration::from_secs(120)));
        assert_eq!(plan.rollback_step, 1.0);
        assert_eq!(plan.termination_wait, Duration::ZERO);

        // 25% of 10 instances is rounded down to batches of 2.
        let plan = rolling(pct(25), Some(pct(50))).plan(10).unwrap();
        assert_eq!(shares(&plan), vec![0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(plan.rollback_step, 0.5);
        let splits: Vec<_> = plan.steps.iter().map(|s| split(10, s.new_share)).collect();
        assert_eq!(splits, vec![(2, 8), (4, 6), (6, 4), (8, 2), (10, 0)]);

        // 5% of 3 instances is still one instance per batch.
        let plan = rolling(pct(5), Some(count(1))).plan(3).unwrap();
        assert_eq!(shares(&plan), vec![1.0 / 3.0, 2.0 / 3.0, 1.0]);
        assert_eq!(plan.rollback_step, 1.0 / 3.0);

        let plan = rolling(pct(50), None).plan(2).unwrap();
        assert_eq!(shares(&plan), vec![0.5, 1.0]);
    }

    #[test]
    fn rolling_rules() {
        assert_err(
            &rolling(count(3), None),
            4,
            "DeploymentConfig.RollingUpdatePolicy.MaximumBatchSize must be between 5% and 50% of the new fleet (4 instances); 3 instances is 75%",
        );
        assert_err(
            &rolling(pct(4), None),
            4,
            "MaximumBatchSize must be between 5% and 50% of the new fleet (4 instances); it is 4%",
        );
        assert_err(&rolling(count(1), None), 21, "1 instance is 4.76%");
        assert_err(&rolling(pct(10), None), 0, "at least 1 instance; it has 0");
        assert!(rolling(count(1), None).plan(20).is_ok());
    }

    #[test]
    fn rolling_replaces_one_variant() {
        let plan = rolling(count(1), None).plan_variants(&[4]).unwrap();
        assert_eq!(plan, rolling(count(1), None).plan(4).unwrap());
        assert_eq!(
            rolling(count(1), None).plan_variants(&[2, 2]).unwrap_err(),
            "DeploymentConfig.RollingUpdatePolicy applies to endpoint configs with one \
             production variant; use BlueGreenUpdatePolicy for several"
        );
        // Blue/green counts the variants together.
        let plan = linear(count(1)).plan_variants(&[2, 1]).unwrap();
        assert_eq!(shares(&plan), vec![1.0 / 3.0, 2.0 / 3.0, 1.0]);
        // The config's own errors come first.
        assert_err_variants(&rolling(count(3), None), &[2, 2], "3 instances is 75%");
    }

    fn assert_err_variants(config: &DeploymentConfig, counts: &[usize], fragment: &str) {
        let error = config.plan_variants(counts).unwrap_err();
        assert!(error.contains(fragment), "{error}");
    }

    #[test]
    fn at_most_one_policy() {
        let mut config = rolling(count(1), None);
        config.blue_green_update_policy = canary(count(1)).blue_green_update_policy;
        assert_err(
            &config,
            4,
            "DeploymentConfig may give BlueGreenUpdatePolicy or RollingUpdatePolicy, not both",
        );
    }

    fn with_alarms(names: &[&str]) -> DeploymentConfig {
        DeploymentConfig {
            auto_rollback_configuration: Some(AutoRollbackConfiguration {
                alarms: Some(
                    names
                        .iter()
                        .map(|n| Alarm {
                            alarm_name: n.to_string(),
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn alarm_rules() {
        let plan = with_alarms(&["errors", "latency"]).plan(1).unwrap();
        assert_eq!(plan.alarms, vec!["errors", "latency"]);
        assert_err(
            &with_alarms(&[]),
            1,
            "DeploymentConfig.AutoRollbackConfiguration.Alarms must name 1 to 10 alarms; it names 0",
        );
        let eleven: Vec<String> = (0..11).map(|i| format!("a{i}")).collect();
        let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
        assert_err(
            &with_alarms(&eleven),
            1,
            "must name 1 to 10 alarms; it names 11",
        );
        assert!(with_alarms(&eleven[..10]).plan(1).is_ok());
        assert_err(
            &with_alarms(&["a", "b", "a"]),
            1,
            "DeploymentConfig.AutoRollbackConfiguration.Alarms names \"a\" more than once",
        );
        assert_err(
            &with_alarms(&["a", " "]),
            1,
            "DeploymentConfig.AutoRollbackConfiguration.Alarms[1].AlarmName must not be empty",
        );
        let long = "x".repeat(256);
        assert_err(
            &with_alarms(&[&long]),
            1,
            "at most 255 characters; it has 256",
        );
        // No Alarms at all: auto-rollback is inactive.
        let config = DeploymentConfig {
            auto_rollback_configuration: Some(AutoRollbackConfiguration::default()),
            ..Default::default()
        };
        assert!(config.plan(1).unwrap().alarms.is_empty());
    }

    #[test]
    fn serde_round_trip_of_sagemaker_json() {
        let json = r#"{
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {
                    "Type": "CANARY",
                    "WaitIntervalInSeconds": 600,
                    "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20}
                },
                "TerminationWaitInSeconds": 300,
                "MaximumExecutionTimeoutInSeconds": 3600
            },
            "AutoRollbackConfiguration": {
                "Alarms": [{"AlarmName": "Invocation5XXErrors"}, {"AlarmName": "ModelLatency"}]
            }
        }"#;
        let config: DeploymentConfig = serde_json::from_str(json).unwrap();
        let routing = &config
            .blue_green_update_policy
            .as_ref()
            .unwrap()
            .traffic_routing_configuration;
        assert_eq!(routing.kind, TrafficRoutingType::Canary);
        assert_eq!(routing.canary_size, Some(pct(20)));
        let value = serde_json::to_value(&config).unwrap();
        let expected: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(value, expected, "None fields are skipped");
        let back: DeploymentConfig = serde_json::from_value(value).unwrap();
        assert_eq!(back, config);

        let plan = config.plan(5).unwrap();
        assert_eq!(shares(&plan), vec![0.2, 1.0]);
        assert_eq!(plan.alarms, vec!["Invocation5XXErrors", "ModelLatency"]);
        let stored = serde_json::to_string(&plan).unwrap();
        assert!(stored.contains("\"CANARY\""), "{stored}");
        let plan_back: Plan = serde_json::from_str(&stored).unwrap();
        assert_eq!(plan_back, plan);

        let rolling_json = r#"{"RollingUpdatePolicy": {
            "MaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 1},
            "WaitIntervalInSeconds": 0,
            "MaximumExecutionTimeoutInSeconds": 600,
            "RollbackMaximumBatchSize": {"Type": "CAPACITY_PERCENT", "Value": 100}
        }}"#;
        let config: DeploymentConfig = serde_json::from_str(rolling_json).unwrap();
        let value = serde_json::to_value(&config).unwrap();
        let expected: serde_json::Value = serde_json::from_str(rolling_json).unwrap();
        assert_eq!(value, expected);
        assert_eq!(config.plan(2).unwrap().strategy.as_str(), "ROLLING");

        let empty: DeploymentConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, DeploymentConfig::default());
        assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");
    }

    #[test]
    fn unknown_fields_and_values_are_rejected() {
        for json in [
            r#"{"BlueGreenPolicy": {}}"#,
            r#"{"AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "a", "Extra": 1}]}}"#,
            r#"{"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 1, "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 1, "Unit": "x"}}}}"#,
            r#"{"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": "BLUE", "WaitIntervalInSeconds": 1}}}"#,
            r#"{"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": "canary", "WaitIntervalInSeconds": 1}}}"#,
            r#"{"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE"}}}"#,
            r#"{"RollingUpdatePolicy": {"MaximumBatchSize": {"Type": "PERCENT", "Value": 10}, "WaitIntervalInSeconds": 1}}"#,
            r#"{"blueGreenUpdatePolicy": null}"#,
        ] {
            assert!(
                serde_json::from_str::<DeploymentConfig>(json).is_err(),
                "accepted {json}"
            );
        }
    }

    #[test]
    fn split_rounds_up() {
        assert_eq!(split(4, 0.0), (0, 4));
        assert_eq!(split(4, -1.0), (0, 4));
        assert_eq!(split(4, f64::NAN), (0, 4));
        assert_eq!(split(4, 0.25), (1, 3));
        assert_eq!(split(4, 0.3), (2, 2));
        assert_eq!(split(10, 0.3), (3, 7));
        assert_eq!(split(10, 0.1 + 0.2), (3, 7));
        assert_eq!(split(3, 2.0 / 3.0), (2, 1));
        assert_eq!(split(4, 1e-12), (1, 3));
        assert_eq!(split(4, 1.0), (4, 0));
        assert_eq!(split(4, 2.0), (4, 0));
        assert_eq!(split(0, 0.5), (0, 0));
    }

    #[test]
    fn strategy_names() {
        assert_eq!(Strategy::AllAtOnce.as_str(), "ALL_AT_ONCE");
        assert_eq!(Strategy::Canary.as_str(), "CANARY");
        assert_eq!(Strategy::Linear.as_str(), "LINEAR");
        assert_eq!(Strategy::Rolling.to_string(), "ROLLING");
        for s in [
            Strategy::AllAtOnce,
            Strategy::Canary,
            Strategy::Linear,
            Strategy::Rolling,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
