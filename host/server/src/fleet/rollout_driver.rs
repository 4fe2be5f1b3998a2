//! Blue/green and rolling deployments (UpdateEndpoint with a `DeploymentConfig`), carried
//! out. Policy decides, this module carries out.
//!
//! Every decision is [`plinth_policy::rollout_machine::Rollout`]'s: when traffic moves and
//! by how much, the bakes and how often their alarms are evaluated, rollback on an alarm,
//! the execution timeout or a failed growth, rolling and rollback batches, the termination
//! wait, every event's message and the `FailureReason`. This module owns what the machine
//! cannot: the clock (tokio timers; times are given to it as durations since the deployment
//! started), the pools (building the new fleet with [`build`], resizing), the alarms' live
//! windows ([`crate::fleet::alarm_watch::firing`]), the store and the endpoint table. Its
//! loop feeds the machine one [`Event`] at a time and carries out the [`Command`]s it
//! answers, in order, until [`Command::Finish`].
//!
//! Every state is committed before it is published, with an event. The store never holds
//! a half-applied mix as the endpoint's config: until the deployment completes, the record
//! names the old config and the pending one, so a restart rolls back to the old config.
//!
//! The loop is a background [`Job`]: its commits check, under `Fleet::changes`, that the
//! endpoint was not deleted meanwhile (DeleteEndpoint cancels the deployment and drops the
//! new fleet), and a panic in it rolls the endpoint back to the old fleet, regrown to its
//! size, `InService` with a `FailureReason` naming the panic.

use crate::fleet::assemble::{build, commit, Refused};
use crate::fleet::background::Job;
use crate::fleet::deployer::Fleet;
use crate::fleet::table::{EndpointSnapshot, EndpointStatus, NewFleet, Phase};
use crate::state::catalog::Unresolved;
use crate::state::now;
use crate::state::store::VariantCapacity;
use plinth_policy::rollout::{DeploymentConfig, Plan};
use plinth_policy::rollout_machine::{
    self as machine, Command, Event, Outcome, Progress, Rollout, Side, VariantSize,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a drain looks at the new fleet's requests in flight.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Check a `DeploymentConfig` against the config it deploys and the alarms that exist; the
/// plan it gives.
pub(crate) fn check(
    state: &Fleet,
    deployment: &DeploymentConfig,
    config: &Unresolved,
) -> Result<Plan, Refused> {
    let variants = config.variants_unchecked();
    if let Some(v) = variants.iter().find(|v| v.serverless.is_some()) {
        return Err(serverless_refused(&v.name));
    }
    let counts: Vec<usize> = variants.iter().map(|v| v.instance_count).collect();
    let plan = deployment
        .plan_variants(&counts)
        .map_err(Refused::Invalid)?;
    let catalog = state.catalog();
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

/// Deployments shift traffic between fleets of instances, or replace instances in batches;
/// a serverless variant has neither (SageMaker's guardrails exclude serverless endpoints).
pub(crate) fn serverless_refused(variant: &str) -> Refused {
    Refused::Invalid(format!(
        "DeploymentConfig: variant {variant} is serverless, and blue/green and rolling \
         deployments do not apply to serverless variants; update without a DeploymentConfig"
    ))
}

/// Start a deployment of `config` to `endpoint` (which is `InService`): commit what the
/// machine publishes first (`Updating`, creating the new fleet; a store failure refuses the
/// update), then run the rest in the background.
pub(crate) fn start(
    state: &Arc<Fleet>,
    endpoint: &EndpointSnapshot,
    config: Unresolved,
    deployment: DeploymentConfig,
    plan: Plan,
) -> Result<(), Refused> {
    let epoch = now();
    let started = Instant::now();
    let config_name = config.name().to_string();
    let old = machine::Fleet {
        config: endpoint.config_name.clone(),
        variants: endpoint
            .variants
            .iter()
            .map(|v| VariantSize {
                variant: v.live.name.clone(),
                desired: v.desired_instance_count,
                instances: v.live.serving.instances(),
            })
            .collect(),
    };
    let new = machine::Fleet {
        config: config_name.clone(),
        variants: config
            .variants_unchecked()
            .iter()
            .map(|v| VariantSize {
                variant: v.name.clone(),
                desired: v.instance_count,
                instances: 0,
            })
            .collect(),
    };
    let mut updating = endpoint.clone();
    updating.status = EndpointStatus::Updating;
    updating.pending_config = Some(config_name.clone());
    updating.failure_reason = None;
    updating.modified = epoch;
    updating.deployment_config = Some(deployment);
    updating.new_fleet = Some(Arc::new(NewFleet {
        config_name,
        variants: Vec::new(),
        experiment: None,
        shadows: Vec::new(),
        capture: None,
        share: 0.0,
        strategy: plan.strategy,
        step: 0,
        steps: plan.steps.len(),
        phase: Phase::Creating,
        started: epoch,
        phase_started: epoch,
        phase_end: None,
    }));
    let mut deployment = Deployment {
        job: Job::claim(state, &endpoint.name),
        snapshot: updating,
        rollout: Rollout::new(plan, old, new),
        config: Some(config),
        started,
        epoch,
    };
    let mut commands = deployment
        .rollout
        .next(Duration::ZERO, Event::Started)
        .into_iter()
        .peekable();
    while let Some(Command::Publish(progress)) =
        commands.next_if(|c| matches!(c, Command::Publish(_)))
    {
        deployment.apply(&progress);
        if let Err(e) = commit(state, deployment.snapshot.clone(), &progress.message) {
            // Refused before anything ran: the claim goes with it.
            state.tasks.cancel(&endpoint.name);
            return Err(e.into());
        }
    }
    let commands: Vec<Command> = commands.collect();
    let before = deployment.snapshot.clone();
    let job = deployment.job.clone();
    job.spawn(deployment.run(commands), |job, panic| async move {
        roll_back_after_panic(&job, before, &panic).await;
    });
    Ok(())
}

/// The deployment's task panicked: back to the old fleet (`before`, the endpoint as the
/// deployment started), regrown to its size if a rolling update had shrunk it, `InService`
/// with a `FailureReason` naming the panic. The new fleet is dropped.
async fn roll_back_after_panic(job: &Job, before: EndpointSnapshot, panic: &str) {
    let mut back = before;
    let mut regrow = String::new();
    for v in &back.variants {
        if v.live.serving.instances() < v.desired_instance_count {
            if let Err(e) = v.live.serving.resize(v.desired_instance_count).await {
                regrow = format!(
                    " (variant {} could not get back to {} instances: {e})",
                    v.live.name, v.desired_instance_count
                );
            }
        }
    }
    back.status = EndpointStatus::InService;
    back.pending_config = None;
    back.new_fleet = None;
    back.modified = now();
    back.failure_reason = Some(format!(
        "The deployment stopped on an internal error and was rolled back: its task panicked: \
         {panic}{regrow}"
    ));
    job.commit(back, "Deployment stopped on an internal error: rolled back")
        .await;
}

/// A deployment in progress: the machine that decides it, and the endpoint as it last
/// committed it (plus the new fleet once built).
struct Deployment {
    /// The background task's hold on the endpoint: its commits go through it.
    job: Job,
    snapshot: EndpointSnapshot,
    rollout: Rollout,
    /// The pending config, until the new fleet is built from it.
    config: Option<Unresolved>,
    /// When the deployment started: the machine's time zero.
    started: Instant,
    /// The same moment, in epoch seconds.
    epoch: f64,
}

impl Deployment {
    fn fleet(&self) -> &NewFleet {
        self.snapshot
            .new_fleet
            .as_deref()
            .expect("a deployment has a new fleet")
    }

    /// Feed the machine the event each answer leads to, carrying out its commands, until
    /// it finishes.
    async fn run(mut self, mut commands: Vec<Command>) {
        loop {
            let mut event = None;
            for command in commands {
                event = self.carry_out(command).await.or(event);
            }
            let Some(event) = event else { return };
            if self.job.is_cancelled() {
                return;
            }
            commands = self.rollout.next(self.started.elapsed(), event);
        }
    }

    /// Carry out one command; the event it leads to, if any.
    async fn carry_out(&mut self, command: Command) -> Option<Event> {
        match command {
            Command::Publish(progress) => {
                self.apply(&progress);
                self.job
                    .commit(self.snapshot.clone(), &progress.message)
                    .await;
                None
            }
            Command::BuildNewFleet { variants } => Some(self.build(variants).await),
            Command::Grow {
                fleet,
                variant,
                instances,
            } => Some(match self.resize(fleet, &variant, instances).await {
                Ok(()) => Event::Grown,
                Err(error) => {
                    tracing::error!(endpoint = %self.snapshot.name, %variant, ?fleet, %error, "cannot grow the fleet");
                    Event::GrowFailed(error)
                }
            }),
            Command::Shrink {
                fleet,
                variant,
                instances,
            } => {
                // Shrinking only stops routing to the surplus; it cannot fail.
                let _ = self.resize(fleet, &variant, instances).await;
                None
            }
            Command::EvaluateAlarms { alarms } => {
                // An evaluation may store a change of state: off the async workers.
                let (state, endpoint) = (self.job.state().clone(), self.snapshot.name.clone());
                let fired = tokio::task::spawn_blocking(move || {
                    crate::fleet::alarm_watch::firing(&state, &endpoint, &alarms)
                })
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "an alarm evaluation failed");
                    None
                });
                Some(match fired {
                    Some((alarm, reason)) => Event::AlarmFiring { alarm, reason },
                    None => Event::AlarmsQuiet,
                })
            }
            Command::WaitUntil(at) => {
                tokio::time::sleep_until((self.started + at).into()).await;
                Some(Event::Tick)
            }
            Command::RollBack { reason } => {
                tracing::warn!(endpoint = %self.snapshot.name, %reason, "rolling back");
                None
            }
            Command::Drain { until } => {
                self.drain(until).await;
                Some(Event::Drained)
            }
            Command::Finish {
                outcome,
                failure_reason,
                message,
            } => {
                self.finish(outcome, failure_reason, &message).await;
                None
            }
        }
    }

    /// The snapshot with the machine's progress (the new fleet's share, step and phase, the
    /// endpoint's status), not yet committed.
    fn apply(&mut self, progress: &Progress) {
        let mut fleet = self.fleet().clone();
        fleet.share = progress.share;
        fleet.step = progress.step;
        fleet.phase = match progress.phase {
            machine::Phase::Creating => Phase::Creating,
            machine::Phase::ActivatingTraffic => Phase::ActivatingTraffic,
            machine::Phase::Baking => Phase::Baking,
            machine::Phase::Terminating => Phase::Terminating,
            machine::Phase::RollingBack => Phase::RollingBack,
        };
        fleet.phase_started = self.epoch + progress.phase_started.as_secs_f64();
        fleet.phase_end = progress.phase_end.map(|end| self.epoch + end.as_secs_f64());
        self.snapshot.status = match progress.status {
            machine::Status::Updating => EndpointStatus::Updating,
            machine::Status::RollingBack => EndpointStatus::RollingBack,
        };
        self.snapshot.new_fleet = Some(Arc::new(fleet));
        self.snapshot.modified = now();
    }

    /// Build and warm the new fleet with the machine's instance counts (the config's
    /// weights), and keep it in the snapshot for the next publish.
    async fn build(&mut self, sizes: Vec<VariantSize>) -> Event {
        let config = self
            .config
            .take()
            .expect("the machine builds the new fleet once");
        let capacities: Vec<VariantCapacity> = config
            .variants_unchecked()
            .iter()
            .filter_map(|v| {
                let size = sizes.iter().find(|s| s.variant == v.name)?;
                Some(VariantCapacity {
                    variant: v.name.clone(),
                    weight: v.weight,
                    instance_count: size.instances,
                    serverless: v
                        .serverless
                        .map(|s| (s.max_concurrency, s.provisioned_concurrency)),
                })
            })
            .collect();
        let built = match build(
            self.job.state(),
            &self.snapshot.name,
            config,
            &[],
            &capacities,
        )
        .await
        {
            Ok(built) => built,
            Err(reason) => return Event::BuildFailed(reason),
        };
        let mut fleet = self.fleet().clone();
        fleet.variants = built.variants;
        for v in &mut fleet.variants {
            if let Some(size) = sizes.iter().find(|s| s.variant == v.live.name) {
                v.desired_instance_count = size.desired;
            }
        }
        fleet.experiment = built.experiment;
        fleet.shadows = built.shadows;
        fleet.capture = built.capture;
        self.snapshot.new_fleet = Some(Arc::new(fleet));
        Event::FleetBuilt
    }

    /// Resize one variant's pool, of the old fleet (the endpoint's variants) or the new.
    async fn resize(&self, fleet: Side, variant: &str, instances: usize) -> Result<(), String> {
        let variants = match fleet {
            Side::Old => &self.snapshot.variants,
            Side::New => &self.fleet().variants,
        };
        let Some(v) = variants.iter().find(|v| v.live.name == variant) else {
            return Err(format!("no variant {variant} in the {fleet:?} fleet"));
        };
        let pool = v.live.serving.clone();
        pool.resize(instances).await.map_err(|e| e.to_string())
    }

    /// Wait until the new fleet holds no request (running or queued), or until `until`.
    async fn drain(&self, until: Duration) {
        let deadline = self.started + until;
        while Instant::now() < deadline
            && self.fleet().variants.iter().any(|v| {
                let stats = v.live.serving.stats();
                stats.busy + stats.queued > 0
            })
        {
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    /// Count the deployment and commit the endpoint `InService` on the fleet the outcome
    /// names; the other one is released as its requests finish.
    async fn finish(&self, outcome: Outcome, failure_reason: Option<String>, message: &str) {
        if !self.job.is_cancelled() {
            self.job
                .state()
                .metrics
                .deployments
                .with_label_values(&[self.snapshot.name.as_str(), outcome.as_str()])
                .inc();
        }
        let fleet = self.fleet().clone();
        let mut done = self.snapshot.clone();
        done.status = EndpointStatus::InService;
        done.pending_config = None;
        done.new_fleet = None;
        done.modified = now();
        done.failure_reason = failure_reason;
        match outcome.serves() {
            Side::New => {
                done.config_name = fleet.config_name;
                done.variants = fleet.variants;
                done.experiment = fleet.experiment;
                done.shadows = fleet.shadows;
                done.capture = fleet.capture;
            }
            Side::Old => {}
        }
        self.job.commit(done, message).await;
    }
}
