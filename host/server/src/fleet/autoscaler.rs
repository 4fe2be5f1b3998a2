//! The Application Auto Scaling controller, off the request path. Six times a minute it
//! looks at every scalable target (`state::scaling`): capacity outside the target's bounds is
//! brought inside at once; at the end of each minute every policy gets the minute's datapoint
//! from the variants' recent-request windows (`recent.rs`), or for a policy on an
//! asynchronous endpoint's backlog from the queue's samples taken at each step (`async_jobs`);
//! then the target's policies decide
//! (`plinth_policy::target_tracking::decide`, combined by
//! `plinth_policy::autoscaling::combine`) and a change goes through the path
//! UpdateEndpointWeightsAndCapacities takes (`deploy::update_weights_and_capacities`).
//!
//! A target whose endpoint is not `InService` (being created, in a deployment, changing
//! capacity) is left alone until it is again: scaling pauses during a deployment and resumes
//! after it, with the datapoints recorded meanwhile. Every activity is stored with its cause:
//! `InProgress` when the change starts, then `Successful` or `Failed` once the endpoint has
//! settled; an alarm that cannot act because the target is at a bound is a not-scaled
//! activity, recorded once until the reason changes. The cooldowns count from the stored
//! activities, so they hold across a restart; the datapoints start afresh.
//!
//! The minute is 60 seconds, or shorter for tests and demos (`plinth serve
//! --autoscaling-minute`): datapoints, alarms and cooldowns are then all counted in the
//! shorter minute.

use super::deploy;
use super::deployer::Fleet;
use super::recent::current_second;
use super::table::{EndpointSnapshot, EndpointStatus};
use crate::state::scaling::TargetKey;
use crate::state::store::{ActivityKind, StoredActivity};
use futures::FutureExt;
use plinth_policy::async_inference::Backlog;
use plinth_policy::autoscaling::{
    self, Compiled, Dimension, NotScaled, PolicyMetric, ResourceId, ScalableTarget,
};
use plinth_policy::capacity::{Change, ServerlessUpdate};
use plinth_policy::metric_alarm::Stats;
use plinth_policy::target_tracking::{self, Decision, LastActivity, LOW_DATAPOINTS};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Evaluations per minute.
const TICKS_PER_MINUTE: u64 = 6;

/// Run the controller until the process ends; `minute` is the length of its minute (1 to 60
/// seconds).
pub(crate) async fn run(state: Arc<Fleet>, minute: Duration) {
    let minute_seconds = minute.as_secs().clamp(1, 60);
    let mut controller = Controller::new(minute_seconds, current_second());
    controller.resume(&state);
    let mut tick = tokio::time::interval(Duration::from_millis(
        minute_seconds * 1000 / TICKS_PER_MINUTE,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let step = std::panic::AssertUnwindSafe(controller.step(&state)).catch_unwind();
        if let Err(panic) = step.await {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            tracing::error!(%message, "the autoscaling controller's step panicked; it goes on at the next one");
        }
    }
}

/// A policy's datapoints' key: its target, its name and its metric.
type HistoryKey = (TargetKey, String, String);

fn history_key(key: &TargetKey, name: &str, compiled: &Compiled) -> HistoryKey {
    (
        key.clone(),
        name.to_owned(),
        format!("{:?}", compiled.metric),
    )
}

/// A change started and not yet settled.
struct Pending {
    seq: i64,
    activity: Value,
    wanted: u32,
    kind: ActivityKind,
}

/// What the controller remembers between steps.
struct Controller {
    minute_seconds: u64,
    /// The first second (on `recent.rs`' clock) of the minute being recorded.
    minute_start: u64,
    /// Minutes recorded since the controller started.
    minutes_done: u64,
    /// Each policy's datapoints, oldest first, at most [`LOW_DATAPOINTS`], by target, policy
    /// name and metric (a policy put again with another metric starts afresh).
    history: HashMap<HistoryKey, VecDeque<Option<f64>>>,
    /// The minute (of `minutes_done`) each target last acted in: a target acts at most once
    /// on the same datapoints.
    acted: HashMap<TargetKey, u64>,
    /// The description of each target's last failed change, recorded once until it changes.
    failed: HashMap<TargetKey, String>,
    /// When each target last scaled, in the controller's seconds (see [`Controller::seconds`]).
    last: HashMap<TargetKey, LastActivity>,
    pending: HashMap<TargetKey, Pending>,
    /// The not-scaled reason last recorded for a target, until it changes.
    not_scaled: HashMap<TargetKey, NotScaled>,
    /// Samples of each asynchronous endpoint's backlog in the minute being recorded, for
    /// the policies on backlog metrics (one per step).
    backlog: HashMap<String, Vec<Backlog>>,
}

/// A target as one step sees it: its registration and its runnable policies.
struct Target {
    key: TargetKey,
    target: ScalableTarget,
    policies: Vec<(String, Compiled)>,
}

impl Controller {
    fn new(minute_seconds: u64, now_second: u64) -> Self {
        Self {
            minute_seconds,
            minute_start: now_second,
            minutes_done: 0,
            history: HashMap::new(),
            acted: HashMap::new(),
            failed: HashMap::new(),
            last: HashMap::new(),
            pending: HashMap::new(),
            not_scaled: HashMap::new(),
            backlog: HashMap::new(),
        }
    }

    /// Epoch seconds on the controller's clock: real seconds stretched by 60 / the minute, so
    /// that cooldowns given in seconds count in the controller's minutes.
    fn seconds(&self, epoch: f64) -> u64 {
        (epoch * 60.0 / self.minute_seconds as f64) as u64
    }

    /// Take back the changes a restart interrupted: each settles, as any other, once its
    /// endpoint is restored (with the capacity it was committed with, or not).
    fn resume(&mut self, state: &Fleet) {
        let interrupted = match state.stored.store.activities_in_progress() {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "the scaling activities in progress could not be read");
                return;
            }
        };
        for StoredActivity {
            seq,
            resource_id,
            dimension,
            kind,
            activity,
        } in interrupted
        {
            let key = ResourceId::parse(&resource_id)
                .ok()
                .zip(Dimension::from_name(&dimension));
            // "Setting desired instance count to 3."
            let wanted = activity["Description"]
                .as_str()
                .and_then(|d| d.trim_end_matches('.').rsplit(' ').next())
                .and_then(|n| n.parse::<u32>().ok());
            if let (Some(key), Some(wanted)) = (key, wanted) {
                self.pending.insert(
                    key,
                    Pending {
                        seq,
                        activity,
                        wanted,
                        kind,
                    },
                );
            }
        }
    }

    async fn step(&mut self, state: &Arc<Fleet>) {
        let targets: Vec<Target> = {
            let scaling = state.stored.scaling();
            scaling
                .targets
                .iter()
                .map(|(key, record)| Target {
                    key: key.clone(),
                    target: record.target.clone(),
                    policies: record
                        .policies
                        .iter()
                        .filter_map(|(name, p)| Some((name.clone(), p.compiled.clone().ok()?)))
                        .collect(),
                })
                .collect()
        };
        self.history.retain(|k, _| {
            targets.iter().any(|t| {
                t.key == k.0
                    && t.policies
                        .iter()
                        .any(|(n, c)| history_key(&t.key, n, c) == *k)
            })
        });
        self.not_scaled
            .retain(|key, _| targets.iter().any(|t| t.key == *key));

        // The backlog is a level, not a count of requests: sampled at each step.
        let queues: std::collections::BTreeSet<&str> = targets
            .iter()
            .flat_map(|t| &t.policies)
            .filter_map(|(_, c)| match &c.metric {
                PolicyMetric::Backlog { endpoint, .. } => Some(endpoint.as_str()),
                _ => None,
            })
            .collect();
        self.backlog.retain(|e, _| queues.contains(e.as_str()));
        for endpoint in queues {
            if let Some(sample) = super::async_jobs::backlog(state, endpoint) {
                self.backlog
                    .entry(endpoint.to_owned())
                    .or_default()
                    .push(sample);
            }
        }

        let second = current_second();
        while second >= self.minute_start + self.minute_seconds {
            let (first, last) = (
                self.minute_start,
                self.minute_start + self.minute_seconds - 1,
            );
            for t in &targets {
                let capacity = current(state, &t.key).map(|(_, c)| c);
                for (name, compiled) in &t.policies {
                    let datapoint = match &compiled.metric {
                        PolicyMetric::Backlog { endpoint, .. } => compiled
                            .metric
                            .backlog_datapoint(self.backlog.get(endpoint).map_or(&[], |v| v)),
                        _ => datapoint(
                            state,
                            &t.key,
                            &compiled.metric,
                            capacity,
                            first,
                            last,
                            self.minute_seconds,
                        ),
                    };
                    let minutes = self
                        .history
                        .entry(history_key(&t.key, name, compiled))
                        .or_default();
                    minutes.push_back(datapoint);
                    while minutes.len() > LOW_DATAPOINTS {
                        minutes.pop_front();
                    }
                }
            }
            self.minute_start += self.minute_seconds;
            self.minutes_done += 1;
            self.backlog.values_mut().for_each(Vec::clear);
        }

        self.settle(state);
        let now = self.seconds(crate::state::now());
        for t in targets {
            self.evaluate(state, t, now).await;
        }
    }

    /// Finish the activities whose endpoint has settled.
    fn settle(&mut self, state: &Fleet) {
        let done: Vec<TargetKey> = self
            .pending
            .keys()
            .filter(|key| {
                state
                    .endpoints
                    .get(&key.0.endpoint)
                    .is_none_or(|e| !e.status.in_progress())
            })
            .cloned()
            .collect();
        for key in done {
            let Some(mut p) = self.pending.remove(&key) else {
                continue;
            };
            let what = what(key.1);
            let capacity = current(state, &key).map(|(_, c)| c);
            // Cooldowns count from when an activity completes.
            let now = self.seconds(crate::state::now());
            let last = self.last.entry(key.clone()).or_default();
            match p.kind {
                ActivityKind::ScaleIn => last.scale_in = Some(now),
                _ => last.scale_out = Some(now),
            }
            if capacity == Some(p.wanted) {
                p.activity["StatusCode"] = json!("Successful");
                p.activity["StatusMessage"] = json!(format!(
                    "Successfully set {what} to {}. Change successfully fulfilled by sagemaker.",
                    p.wanted
                ));
            } else {
                let endpoint = state.endpoints.get(&key.0.endpoint);
                match (capacity, endpoint.and_then(|e| e.failure_reason.clone())) {
                    (Some(capacity), None) => {
                        p.activity["StatusCode"] = json!("Overridden");
                        p.activity["StatusMessage"] = json!(format!(
                            "Another change set the {what} to {capacity} before this one \
                             completed"
                        ));
                    }
                    (_, reason) => {
                        let reason =
                            reason.unwrap_or_else(|| "the endpoint or variant is gone".to_owned());
                        p.activity["StatusCode"] = json!("Failed");
                        p.activity["StatusMessage"] =
                            json!(format!("Failed to set {what} to {}: {reason}", p.wanted));
                    }
                }
            }
            p.activity["EndTime"] = json!(crate::state::now());
            tracing::info!(
                endpoint = %key.0.endpoint,
                variant = %key.0.variant,
                status = %p.activity["StatusCode"],
                "scaling activity finished"
            );
            self.write(state, Some(p.seq), &key, p.kind, &p.activity);
        }
    }

    /// Store an activity; its sequence number.
    fn write(
        &self,
        state: &Fleet,
        seq: Option<i64>,
        key: &TargetKey,
        kind: ActivityKind,
        activity: &Value,
    ) -> Option<i64> {
        match state.stored.store.put_activity(
            seq,
            &key.0.to_string(),
            key.1.as_str(),
            kind,
            activity,
        ) {
            Ok(seq) => Some(seq),
            Err(e) => {
                tracing::error!(endpoint = %key.0.endpoint, variant = %key.0.variant, error = %e, "a scaling activity could not be stored");
                None
            }
        }
    }

    /// When `key` last scaled, from the store the first time it is asked.
    fn last_activity(&mut self, state: &Fleet, key: &TargetKey) -> LastActivity {
        if let Some(last) = self.last.get(key) {
            return *last;
        }
        let read = |kind| {
            state
                .stored
                .store
                .last_activity(&key.0.to_string(), key.1.as_str(), kind)
                .ok()
                .flatten()
                .map(|t| self.seconds(t))
        };
        let last = LastActivity {
            scale_out: read(ActivityKind::ScaleOut),
            scale_in: read(ActivityKind::ScaleIn),
        };
        self.last.insert(key.clone(), last);
        last
    }

    async fn evaluate(&mut self, state: &Arc<Fleet>, t: Target, now: u64) {
        if self.pending.contains_key(&t.key) {
            return;
        }
        let Some((endpoint, capacity)) = current(state, &t.key) else {
            return;
        };
        if !serving_steadily(&endpoint) {
            return;
        }
        // Once a target has acted, it waits for a datapoint the change could affect.
        if self
            .acted
            .get(&t.key)
            .is_some_and(|m| *m >= self.minutes_done)
        {
            return;
        }
        let bounds = t.target.bounds();
        let last = self.last_activity(state, &t.key);
        let decision = match target_tracking::out_of_bounds(bounds, capacity) {
            Some(Decision::Scale { capacity, cause }) => Decision::Scale {
                capacity,
                cause: format!("the scalable target's bounds: {cause}"),
            },
            _ => {
                let empty = VecDeque::new();
                let minutes = |name: &String, c: &Compiled| -> Vec<Option<f64>> {
                    let m = self
                        .history
                        .get(&history_key(&t.key, name, c))
                        .unwrap_or(&empty);
                    m.iter().copied().collect()
                };
                let decisions: Vec<Decision> = t
                    .policies
                    .iter()
                    .map(|(name, c)| {
                        match target_tracking::decide(
                            &c.tracking,
                            bounds,
                            capacity,
                            &minutes(name, c),
                            now,
                            last,
                        ) {
                            Decision::Scale { capacity, cause } => Decision::Scale {
                                capacity,
                                cause: format!("policy {name}: {cause}"),
                            },
                            Decision::Hold => Decision::Hold,
                        }
                    })
                    .collect();
                let decision = autoscaling::combine(&decisions, capacity, t.target.suspended_state);
                let reason = t.policies.iter().find_map(|(name, c)| {
                    autoscaling::not_scaled(&c.tracking, bounds, capacity, &minutes(name, c))
                        .map(|r| (name.clone(), r))
                });
                if decision == Decision::Hold {
                    self.record_not_scaled(state, &t, capacity, reason);
                }
                decision
            }
        };
        if let Decision::Scale {
            capacity: wanted,
            cause,
        } = decision
        {
            self.act(state, &t.key, capacity, wanted, cause, now).await;
        }
    }

    /// A not-scaled activity for `reason`, once until the reason changes.
    fn record_not_scaled(
        &mut self,
        state: &Fleet,
        t: &Target,
        capacity: u32,
        reason: Option<(String, NotScaled)>,
    ) {
        let Some((policy, reason)) = reason else {
            self.not_scaled.remove(&t.key);
            return;
        };
        if self.not_scaled.get(&t.key) == Some(&reason) {
            return;
        }
        self.not_scaled.insert(t.key.clone(), reason);
        let direction = match reason {
            NotScaled::AlreadyAtMaxCapacity => "out",
            NotScaled::AlreadyAtMinCapacity => "in",
        };
        let now = crate::state::now();
        let activity = json!({
            "ActivityId": uuid::Uuid::new_v4().to_string(),
            "ServiceNamespace": autoscaling::NAMESPACE,
            "ResourceId": t.key.0.to_string(),
            "ScalableDimension": t.key.1.as_str(),
            "Description": format!("Attempting to scale {direction} the {}.", what(t.key.1)),
            "Cause": format!("policy {policy}: its alarm fired, and the target is at its bound"),
            "StartTime": now,
            "EndTime": now,
            "StatusCode": "Failed",
            "StatusMessage": format!("Not scaled: {}", reason.as_str()),
            "NotScaledReasons": [{
                "Code": reason.as_str(),
                "MaxCapacity": t.target.max_capacity,
                "MinCapacity": t.target.min_capacity,
                "CurrentCapacity": capacity,
            }],
        });
        self.write(state, None, &t.key, ActivityKind::NotScaled, &activity);
    }

    /// Change `key`'s capacity from `from` to `to`, recording the activity.
    async fn act(
        &mut self,
        state: &Arc<Fleet>,
        key: &TargetKey,
        from: u32,
        to: u32,
        cause: String,
        now: u64,
    ) {
        let (resource, dimension) = key;
        let _exclusive = state.changes.lock().await;
        // What the decision saw may have changed while it waited for the lock: the
        // endpoint, or the target (deregistered, or new bounds).
        match current(state, key) {
            Some((endpoint, capacity)) if capacity == from && serving_steadily(&endpoint) => {}
            _ => return,
        }
        let within = state
            .stored
            .scaling()
            .targets
            .get(key)
            .is_some_and(|t| (t.target.min_capacity..=t.target.max_capacity).contains(&to));
        if !within {
            return;
        }
        self.acted.insert(key.clone(), self.minutes_done);
        let kind = if to > from {
            ActivityKind::ScaleOut
        } else {
            ActivityKind::ScaleIn
        };
        // A change counts for the cooldowns whether or not it succeeds, so that a failing
        // one is not retried at every step.
        let last = self.last.entry(key.clone()).or_default();
        match kind {
            ActivityKind::ScaleOut => last.scale_out = Some(now),
            _ => last.scale_in = Some(now),
        }
        self.not_scaled.remove(key);
        let description = format!("Setting {} to {to}.", what(*dimension));
        let mut activity = json!({
            "ActivityId": uuid::Uuid::new_v4().to_string(),
            "ServiceNamespace": autoscaling::NAMESPACE,
            "ResourceId": resource.to_string(),
            "ScalableDimension": dimension.as_str(),
            "Description": description,
            "Cause": cause,
            "StartTime": crate::state::now(),
            "StatusCode": "InProgress",
        });
        tracing::info!(endpoint = %resource.endpoint, variant = %resource.variant, dimension = %dimension, from, to, cause = %activity["Cause"], "scaling");
        // The same change failed last time: tried again (once a minute), recorded only if it
        // starts this time.
        let repeat = self.failed.get(key).is_some_and(|d| *d == description);
        let mut seq = None;
        if !repeat {
            seq = self.write(state, None, key, kind, &activity);
            if seq.is_none() {
                return;
            }
        }
        let result =
            deploy::update_weights_and_capacities(state, &resource.endpoint, &[change_of(key, to)]);
        match (result, seq) {
            (Ok(()), seq) => {
                self.failed.remove(key);
                let seq = match seq {
                    Some(seq) => seq,
                    None => match self.write(state, None, key, kind, &activity) {
                        Some(seq) => seq,
                        None => return,
                    },
                };
                self.pending.insert(
                    key.clone(),
                    Pending {
                        seq,
                        activity,
                        wanted: to,
                        kind,
                    },
                );
            }
            (Err(e), None) => {
                tracing::debug!(endpoint = %resource.endpoint, variant = %resource.variant, error = %e, "scaling failed again");
            }
            (Err(e), Some(seq)) => {
                tracing::warn!(endpoint = %resource.endpoint, variant = %resource.variant, error = %e, "scaling failed");
                activity["StatusCode"] = json!("Failed");
                activity["StatusMessage"] =
                    json!(format!("Failed to set {} to {to}: {e}", what(*dimension)));
                activity["EndTime"] = json!(crate::state::now());
                self.failed.insert(key.clone(), description);
                self.write(state, Some(seq), key, kind, &activity);
            }
        }
    }
}

/// The change that sets `key`'s capacity to `to`.
fn change_of(key: &TargetKey, to: u32) -> Change {
    let (resource, dimension) = key;
    match dimension {
        Dimension::InstanceCount => Change {
            variant: resource.variant.clone(),
            weight: None,
            instance_count: Some(i64::from(to)),
            serverless: None,
        },
        Dimension::ProvisionedConcurrency => Change {
            variant: resource.variant.clone(),
            weight: None,
            instance_count: None,
            serverless: Some(ServerlessUpdate {
                max_concurrency: None,
                provisioned_concurrency: Some(i64::from(to)),
            }),
        },
    }
}

/// What a dimension sets, as activities say it.
fn what(dimension: Dimension) -> &'static str {
    match dimension {
        Dimension::InstanceCount => "desired instance count",
        Dimension::ProvisionedConcurrency => "desired provisioned concurrency",
    }
}

/// In service with no deployment under way: the only state the controller changes.
fn serving_steadily(endpoint: &EndpointSnapshot) -> bool {
    endpoint.status == EndpointStatus::InService && endpoint.new_fleet.is_none()
}

/// The endpoint a target's variant is in and the variant's capacity in the target's
/// dimension, or `None` when the endpoint or the variant is gone, or the variant no longer
/// fits the dimension (an UpdateEndpoint made it serverless, or not).
fn current(state: &Fleet, key: &TargetKey) -> Option<(Arc<EndpointSnapshot>, u32)> {
    let endpoint = state.endpoints.get(&key.0.endpoint)?;
    let variant = endpoint
        .variants
        .iter()
        .find(|v| v.live.name == key.0.variant)?;
    let elastic = variant.live.serving.elastic();
    let capacity = match (key.1, elastic) {
        (Dimension::InstanceCount, None) => variant.desired_instance_count,
        (Dimension::ProvisionedConcurrency, Some(e)) => e.provisioned,
        _ => return None,
    };
    let capacity = u32::try_from(capacity).unwrap_or(u32::MAX);
    Some((endpoint, capacity))
}

/// A policy's datapoint for seconds `first..=last`: from the target's variant (or the one a
/// customized metric names), in both fleets during a deployment. `None` when the variant is
/// not serving.
fn datapoint(
    state: &Fleet,
    key: &TargetKey,
    metric: &PolicyMetric,
    capacity: Option<u32>,
    first: u64,
    last: u64,
    minute_seconds: u64,
) -> Option<f64> {
    let (endpoint, variant) = match metric {
        PolicyMetric::Custom {
            endpoint, variant, ..
        } => (endpoint.as_str(), variant.as_str()),
        _ => (key.0.endpoint.as_str(), key.0.variant.as_str()),
    };
    let snapshot = state.endpoints.get(endpoint)?;
    let mut stats = Stats::default();
    let mut found = false;
    for v in snapshot.serving().filter(|v| v.live.name == variant) {
        stats.merge(&v.live.recent.stats(first, last));
        found = true;
    }
    if !found {
        return None;
    }
    let capacity = match metric {
        PolicyMetric::Custom { .. } => capacity.unwrap_or(0),
        _ => capacity?,
    };
    metric.datapoint(&stats, capacity, minute_seconds as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Instant;

    /// A server in memory with endpoint `e` (variant `A`, one echo instance).
    async fn fleet() -> (Arc<Fleet>, tempfile::TempDir) {
        let (fleet, artifacts) = crate::serve::in_memory_fleet().await;
        for (operation, input) in [
            (
                "CreateModel",
                json!({"ModelName": "echo", "PrimaryContainer": {"Image": plinth_tests::ECHO_WASM}}),
            ),
            (
                "CreateEndpointConfig",
                json!({"EndpointConfigName": "c", "ProductionVariants": [
                    {"VariantName": "A", "ModelName": "echo", "InitialInstanceCount": 1}]}),
            ),
            (
                "CreateEndpoint",
                json!({"EndpointName": "e", "EndpointConfigName": "c"}),
            ),
        ] {
            call(&fleet, operation, input).await;
        }
        settled(&fleet).await;
        (fleet, artifacts)
    }

    async fn call(fleet: &Arc<Fleet>, operation: &str, input: Value) -> Value {
        let result = if operation.contains("Scal") {
            crate::ops::autoscaling::call(fleet, operation, input.clone()).await
        } else {
            crate::ops::call(fleet, operation, input.clone()).await
        };
        result.unwrap_or_else(|e| panic!("{operation} {input}: {}", e.message()))
    }

    async fn settled(fleet: &Fleet) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while fleet
            .endpoints
            .get("e")
            .is_none_or(|e| e.status.in_progress())
        {
            assert!(Instant::now() < deadline, "e never settled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn key() -> TargetKey {
        (
            ResourceId::parse("endpoint/e/variant/A").unwrap(),
            Dimension::InstanceCount,
        )
    }

    fn capacity(fleet: &Fleet) -> u32 {
        current(fleet, &key()).unwrap().1
    }

    fn activities(fleet: &Fleet) -> Vec<Value> {
        fleet
            .stored
            .store
            .activities(None, None, true, i64::MAX, 100)
            .unwrap()
            .into_iter()
            .map(|(_, a)| a)
            .collect()
    }

    /// Activities a restart interrupted settle once their endpoint is back: successful where
    /// the capacity is what they set, failed where the endpoint is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn activities_a_restart_interrupted_are_settled() {
        let (fleet, _dir) = fleet().await;
        for (resource, wanted) in [("endpoint/e/variant/A", 1), ("endpoint/gone/variant/A", 2)] {
            let activity = json!({
                "ActivityId": resource, "ServiceNamespace": "sagemaker", "ResourceId": resource,
                "ScalableDimension": Dimension::InstanceCount.as_str(),
                "Description": format!("Setting desired instance count to {wanted}."),
                "Cause": "a test", "StartTime": 1.0, "StatusCode": "InProgress",
            });
            fleet
                .stored
                .store
                .put_activity(
                    None,
                    resource,
                    Dimension::InstanceCount.as_str(),
                    ActivityKind::ScaleOut,
                    &activity,
                )
                .unwrap();
        }
        let mut controller = Controller::new(60, current_second());
        controller.resume(&fleet);
        assert_eq!(controller.pending.len(), 2);
        controller.step(&fleet).await;
        let statuses: Vec<(String, String)> = activities(&fleet)
            .iter()
            .map(|a| {
                assert!(a["EndTime"].is_number(), "{a}");
                (
                    a["ResourceId"].as_str().unwrap().to_string(),
                    a["StatusCode"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            statuses,
            vec![
                ("endpoint/gone/variant/A".to_string(), "Failed".to_string()),
                ("endpoint/e/variant/A".to_string(), "Successful".to_string()),
            ]
        );
        assert!(controller.pending.is_empty());
    }

    /// With no cooldown, a target acts once on a minute's datapoints: the next change waits
    /// for a datapoint taken at the new capacity, rather than multiplying the same one again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_target_acts_once_on_the_same_datapoints() {
        let (fleet, _dir) = fleet().await;
        let target = json!({"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/e/variant/A",
                            "ScalableDimension": Dimension::InstanceCount.as_str()});
        let mut register = target.clone();
        register["MinCapacity"] = json!(1);
        register["MaxCapacity"] = json!(20);
        call(&fleet, "RegisterScalableTarget", register).await;
        let mut policy = target.clone();
        policy["PolicyName"] = json!("p");
        policy["PolicyType"] = json!("TargetTrackingScaling");
        policy["TargetTrackingScalingPolicyConfiguration"] = json!({
            "TargetValue": 70.0, "ScaleOutCooldown": 0, "ScaleInCooldown": 0,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}});
        call(&fleet, "PutScalingPolicy", policy).await;
        // A 60-second minute: no minute ends during the test, so the datapoints are these.
        let mut controller = Controller::new(60, current_second());
        let compiled = fleet.stored.scaling().targets[&key()].policies["p"]
            .compiled
            .clone()
            .unwrap();
        controller.history.insert(
            history_key(&key(), "p", &compiled),
            VecDeque::from(vec![Some(200.0); 3]),
        );
        controller.step(&fleet).await;
        assert_eq!(capacity(&fleet), 3, "ceil(1 x 200 / 70)");
        for _ in 0..5 {
            settled(&fleet).await;
            controller.step(&fleet).await;
        }
        assert_eq!(
            capacity(&fleet),
            3,
            "not ceil(3 x 200 / 70) on the same minute"
        );
        let recorded = activities(&fleet);
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        assert_eq!(recorded[0]["StatusCode"], "Successful", "{recorded:?}");
    }
}
