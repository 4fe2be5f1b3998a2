//! Blue/green and rolling deployments: UpdateEndpoint with a `DeploymentConfig`.
//!
//! The new config is built as a new fleet and warmed before it takes a request (a rolling
//! update builds its first batch). Traffic then moves in the plan's steps (all at once,
//! canary, linear, or rolling batches): each step publishes one snapshot with the new
//! fleet's share, then bakes for `WaitIntervalInSeconds` while the deployment's alarms are
//! evaluated every [`TICK`]. An alarm in `ALARM` (or the execution timeout) rolls back: one
//! snapshot sends every request to the old fleet again, requests already on the new fleet
//! finish there, and the endpoint returns to `InService` on the old config with a
//! `FailureReason` naming the alarm. After the last bake and `TerminationWaitInSeconds`, the
//! new fleet becomes the endpoint and the old one is released as its requests finish.
//!
//! Every state is committed before it is published, with an event. The store never holds
//! a half-applied mix as the endpoint's config: until the deployment completes, the record
//! names the old config and the pending one, so a restart rolls back to the old config.

use crate::fleet::assemble::{build, commit, commit_logged, Refused};
use crate::fleet::table::{EndpointSnapshot, EndpointStatus, NewFleet, Phase};
use crate::fleet::Fleet;
use crate::state::catalog::Unresolved;
use crate::state::now;
use crate::state::store::VariantCapacity;
use plinth_policy::rollout::{split, DeploymentConfig, Plan, Strategy};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often alarms are evaluated during a bake.
const TICK: Duration = Duration::from_millis(100);

/// How long a rollback waits for the new fleet's requests in flight before releasing it.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Check a `DeploymentConfig` against the config it deploys and the alarms that exist; the
/// plan it gives.
pub(crate) fn check(
    state: &Fleet,
    deployment: &DeploymentConfig,
    config: &Unresolved,
) -> Result<Plan, Refused> {
    let variants = config.variants_unchecked();
    let instances: usize = variants.iter().map(|v| v.instance_count).sum();
    let plan = deployment.plan(instances).map_err(Refused::Invalid)?;
    if plan.strategy == Strategy::Rolling && variants.len() > 1 {
        return Err(Refused::Invalid(
            "DeploymentConfig.RollingUpdatePolicy applies to endpoint configs with one \
             production variant; use BlueGreenUpdatePolicy for several"
                .into(),
        ));
    }
    let catalog = state.catalog.lock().unwrap_or_else(|e| e.into_inner());
    for alarm in &plan.alarms {
        if !catalog.alarms.contains_key(alarm) {
            return Err(Refused::Invalid(format!(
                "DeploymentConfig.AutoRollbackConfiguration.Alarms: could not find alarm \
                 \"{}\"; create it with CreateAlarm first.",
                crate::state::arn("alarm", alarm)
            )));
        }
    }
    Ok(plan)
}

/// Start a deployment of `config` to `endpoint` (which is `InService`): commit `Updating`,
/// then run the plan in the background.
pub(crate) fn start(
    state: &Arc<Fleet>,
    endpoint: &EndpointSnapshot,
    config: Unresolved,
    deployment: DeploymentConfig,
    plan: Plan,
) -> Result<(), Refused> {
    let t = now();
    let config_name = config.name().to_string();
    let mut updating = endpoint.clone();
    updating.status = EndpointStatus::Updating;
    updating.pending_config = Some(config_name.clone());
    updating.failure_reason = None;
    updating.modified = t;
    updating.deployment_config = Some(deployment);
    updating.new_fleet = Some(Arc::new(NewFleet {
        config_name: config_name.clone(),
        variants: Vec::new(),
        experiment: None,
        shadows: Vec::new(),
        share: 0.0,
        strategy: plan.strategy,
        step: 0,
        steps: plan.steps.len(),
        phase: Phase::Creating,
        started: t,
        phase_started: t,
        phase_end: None,
    }));
    commit(
        state,
        updating.clone(),
        &format!(
            "Deployment to {config_name} started ({}, {} step{}{}): creating the new fleet",
            plan.strategy.as_str(),
            plan.steps.len(),
            if plan.steps.len() == 1 { "" } else { "s" },
            if plan.alarms.is_empty() {
                String::new()
            } else {
                format!(", rollback alarms {}", plan.alarms.join(", "))
            }
        ),
    )?;
    let state = state.clone();
    let before = updating.clone();
    let deployment = tokio::spawn(
        Deployment {
            state: state.clone(),
            snapshot: updating,
            plan,
            started: Instant::now(),
        }
        .run(config),
    );
    // A deployment that panics must not leave the endpoint `Updating` for ever.
    tokio::spawn(async move {
        if let Err(e) = deployment.await {
            tracing::error!(endpoint = %before.name, error = %e, "the deployment task failed");
            let mut back = before;
            back.status = EndpointStatus::InService;
            back.pending_config = None;
            back.new_fleet = None;
            back.modified = now();
            back.failure_reason = Some(format!(
                "The deployment stopped on an internal error and was rolled back: {e}"
            ));
            commit_logged(
                &state,
                back,
                "Deployment stopped on an internal error: rolled back",
            );
        }
    });
    Ok(())
}

/// A deployment in progress: the endpoint as it last committed it.
struct Deployment {
    state: Arc<Fleet>,
    snapshot: EndpointSnapshot,
    plan: Plan,
    started: Instant,
}

/// Why a deployment stopped short.
enum Stop {
    /// An alarm fired or the time ran out: roll back.
    RollBack(String),
}

impl Deployment {
    fn fleet(&self) -> &NewFleet {
        self.snapshot
            .new_fleet
            .as_deref()
            .expect("a deployment has a new fleet")
    }

    /// Change the new fleet, commit and publish, with an event.
    fn update(&mut self, message: &str, change: impl FnOnce(&mut NewFleet)) {
        let mut fleet = self.fleet().clone();
        change(&mut fleet);
        self.snapshot.new_fleet = Some(Arc::new(fleet));
        self.snapshot.modified = now();
        commit_logged(&self.state, self.snapshot.clone(), message);
    }

    fn enter(&mut self, phase: Phase, length: Option<Duration>, message: &str) {
        let t = now();
        self.update(message, |f| {
            f.phase = phase;
            f.phase_started = t;
            f.phase_end = length.map(|l| t + l.as_secs_f64());
        });
    }

    async fn run(mut self, config: Unresolved) {
        let name = self.snapshot.name.clone();
        let config_name = self.fleet().config_name.clone();
        // The full instance counts, and (rolling) the first batch to build.
        let full: Vec<(String, usize, f64)> = config
            .variants_unchecked()
            .iter()
            .map(|v| (v.name.clone(), v.instance_count, v.weight))
            .collect();
        let first = if self.plan.strategy == Strategy::Rolling {
            full.iter()
                .map(|(variant, count, weight)| VariantCapacity {
                    variant: variant.clone(),
                    weight: *weight,
                    instance_count: split(*count, self.plan.steps[0].new_share).0.max(1),
                })
                .collect()
        } else {
            Vec::new()
        };
        let built = match build(&self.state, &name, config, &[], &first).await {
            Ok(built) => built,
            Err(reason) => return self.fail(&reason),
        };
        let mut variants = built.variants;
        for v in &mut variants {
            if let Some((_, count, _)) = full.iter().find(|(n, _, _)| *n == v.live.name) {
                v.desired_instance_count = *count;
            }
        }
        self.update(&format!("New fleet {config_name} created and warm"), |f| {
            f.variants = variants;
            f.experiment = built.experiment;
            f.shadows = built.shadows;
        });
        let steps = self.plan.steps.clone();
        for (i, step) in steps.iter().enumerate() {
            if let Err(Stop::RollBack(reason)) = self.step(i, step).await {
                return self.roll_back(&reason).await;
            }
        }
        let wait = self.plan.termination_wait;
        if !wait.is_zero() {
            self.enter(
                Phase::Terminating,
                Some(wait),
                &format!(
                    "All traffic on the new fleet; the old fleet stays warm for {} s",
                    wait.as_secs()
                ),
            );
            tokio::time::sleep(wait).await;
        }
        self.complete();
    }

    /// Step `i`: move the new fleet's share to `step.new_share` (rolling: resize both
    /// fleets around the switch), then bake under the alarms.
    async fn step(&mut self, i: usize, step: &plinth_policy::rollout::Step) -> Result<(), Stop> {
        let rolling = self.plan.strategy == Strategy::Rolling;
        let steps = self.plan.steps.len();
        if rolling {
            self.update(
                &format!("Step {}/{steps}: growing the new fleet", i + 1),
                |f| {
                    f.step = i + 1;
                    f.phase = Phase::ActivatingTraffic;
                    f.phase_started = now();
                    f.phase_end = None;
                },
            );
            // Grow the new fleet first, so that the share never routes to instances that do
            // not exist yet.
            for v in &self.fleet().variants {
                let (new, _) = split(v.desired_instance_count, step.new_share);
                if new > v.live.pool.instances() {
                    v.live.pool.resize(new).await.map_err(|e| {
                        Stop::RollBack(format!(
                            "variant {}: cannot grow the new fleet: {e}",
                            v.live.name
                        ))
                    })?;
                }
            }
        }
        self.update(
            &format!(
                "Step {}/{steps}: {}% of traffic to the new fleet",
                i + 1,
                percent(step.new_share)
            ),
            |f| {
                f.share = step.new_share;
                f.step = i + 1;
                f.phase = Phase::ActivatingTraffic;
                f.phase_started = now();
                f.phase_end = None;
            },
        );
        if rolling {
            for v in &self.snapshot.variants {
                let (_, old) = split(v.desired_instance_count, step.new_share);
                if old < v.live.pool.instances() {
                    // Shrinking only stops routing to the surplus; it cannot fail.
                    let _ = v.live.pool.resize(old).await;
                }
            }
        }
        let last = i + 1 == steps;
        self.enter(
            Phase::Baking,
            Some(step.bake),
            &format!(
                "Step {}/{steps}: baking for {} s{}",
                i + 1,
                step.bake.as_secs(),
                if last { " (final bake)" } else { "" }
            ),
        );
        self.bake(step.bake).await
    }

    /// Wait `length`, evaluating the alarms every tick (at least once).
    async fn bake(&self, length: Duration) -> Result<(), Stop> {
        let end = Instant::now() + length;
        loop {
            if let Some((alarm, reason)) = crate::fleet::alarm_watch::firing(
                &self.state,
                &self.snapshot.name,
                &self.plan.alarms,
            ) {
                return Err(Stop::RollBack(format!(
                    "alarm {alarm} is in ALARM: {reason}"
                )));
            }
            if let Some(limit) = self.plan.max_execution {
                if self.started.elapsed() > limit {
                    return Err(Stop::RollBack(format!(
                        "the deployment ran past MaximumExecutionTimeoutInSeconds ({} s)",
                        limit.as_secs()
                    )));
                }
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            tokio::time::sleep(left.min(TICK)).await;
        }
    }

    /// Send every request to the old fleet again, let the new fleet finish what it holds,
    /// release it, and serve the old config with the reason as `FailureReason`.
    async fn roll_back(mut self, reason: &str) {
        let reason = reason.trim_end_matches('.');
        let config_name = self.fleet().config_name.clone();
        tracing::warn!(endpoint = %self.snapshot.name, %reason, "rolling back");
        self.snapshot.status = EndpointStatus::RollingBack;
        if self.plan.strategy == Strategy::Rolling {
            // In batches of RollbackMaximumBatchSize: the old fleet grows back by a batch,
            // takes its share back, and the new fleet shrinks by as much.
            self.enter(Phase::RollingBack, None, &format!("Rolling back: {reason}"));
            let mut share = self.fleet().share;
            while share > 0.0 {
                share = (share - self.plan.rollback_step).max(0.0);
                if share < 1e-9 {
                    share = 0.0;
                }
                for v in &self.snapshot.variants {
                    let (_, old) = split(v.desired_instance_count, share);
                    if let Err(e) = v.live.pool.resize(old.max(v.live.pool.instances())).await {
                        tracing::error!(variant = %v.live.name, error = %e, "cannot grow the old fleet back");
                    }
                }
                self.update(
                    &format!(
                        "Rolling back: {}% of traffic on the new fleet",
                        percent(share)
                    ),
                    |f| f.share = share,
                );
                for v in &self.fleet().variants {
                    let (new, _) = split(v.desired_instance_count, share);
                    if new < v.live.pool.instances() {
                        let _ = v.live.pool.resize(new).await;
                    }
                }
            }
        } else {
            self.update(
                &format!("Rolling back: {reason}; all traffic returns to the old fleet"),
                |f| {
                    f.share = 0.0;
                    f.phase = Phase::RollingBack;
                    f.phase_started = now();
                    f.phase_end = None;
                },
            );
        }
        let drained = Instant::now() + DRAIN_LIMIT;
        while Instant::now() < drained
            && self.fleet().variants.iter().any(|v| {
                let stats = v.live.pool.stats();
                stats.busy + stats.queued > 0
            })
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.state
            .metrics
            .deployments
            .with_label_values(&[self.snapshot.name.as_str(), "RolledBack"])
            .inc();
        let mut done = self.snapshot;
        done.status = EndpointStatus::InService;
        done.pending_config = None;
        done.new_fleet = None;
        done.modified = now();
        done.failure_reason = Some(format!(
            "The deployment of endpoint configuration {config_name} was rolled back: {reason}. \
             The endpoint serves {}.",
            done.config_name
        ));
        let message = format!("Rolled back: in service on {}", done.config_name);
        commit_logged(&self.state, done, &message);
    }

    /// The new fleet could not be built: the old config keeps serving.
    fn fail(self, reason: &str) {
        self.state
            .metrics
            .deployments
            .with_label_values(&[self.snapshot.name.as_str(), "Failed"])
            .inc();
        let config_name = self.fleet().config_name.clone();
        let mut done = self.snapshot;
        done.status = EndpointStatus::InService;
        done.pending_config = None;
        done.new_fleet = None;
        done.modified = now();
        done.failure_reason = Some(reason.to_string());
        let message = format!(
            "Deployment of {config_name} failed, {} keeps serving: {reason}",
            done.config_name
        );
        commit_logged(&self.state, done, &message);
    }

    /// The new fleet becomes the endpoint; the old one is released as its requests finish.
    fn complete(self) {
        self.state
            .metrics
            .deployments
            .with_label_values(&[self.snapshot.name.as_str(), "Completed"])
            .inc();
        let fleet = self.fleet().clone();
        let mut done = self.snapshot;
        done.status = EndpointStatus::InService;
        done.pending_config = None;
        done.new_fleet = None;
        done.config_name = fleet.config_name;
        done.variants = fleet.variants;
        done.experiment = fleet.experiment;
        done.shadows = fleet.shadows;
        done.modified = now();
        let message = format!("Deployment complete: in service on {}", done.config_name);
        commit_logged(&self.state, done, &message);
    }
}

/// A share as a percentage for messages: `33.3`, `50`.
fn percent(share: f64) -> String {
    let p = (share * 1000.0).round() / 10.0;
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p:.1}")
    }
}
