//! A deployment (UpdateEndpoint with a `DeploymentConfig`) as a pure state machine:
//! `(state, event) -> commands`. Policy decides, the server carries out.
//!
//! [`Rollout`] holds the [`Plan`](crate::rollout::Plan), both fleets' sizes and where the
//! deployment is (step, share, phase, when the phase started). [`Rollout::next`] takes one
//! [`Event`] (what happened) and the time since the deployment started, and answers the
//! [`Command`]s to carry out, in order. Every decision is here: when traffic moves and by
//! how much, when to bake and for how long, how often alarms are evaluated, when the
//! execution timeout or an alarm rolls back, rolling batches and rollback batches, the
//! termination wait, every message of `ListEndpointEvents` and every `FailureReason`. The
//! server's driver (`fleet/rollout_driver.rs`) owns the clock, the pools, the store and the
//! alarms' windows; it decides nothing.
//!
//! # The protocol
//!
//! The first event is [`Event::Started`], at time zero. An answer's commands are carried
//! out in order; only its last command can lead to the next event:
//!
//! | command | the event it leads to |
//! |---|---|
//! | [`Command::BuildNewFleet`] | [`Event::FleetBuilt`] or [`Event::BuildFailed`] |
//! | [`Command::Grow`] | [`Event::Grown`] or [`Event::GrowFailed`] |
//! | [`Command::EvaluateAlarms`] | [`Event::AlarmsQuiet`] or [`Event::AlarmFiring`] |
//! | [`Command::WaitUntil`] | [`Event::Tick`] |
//! | [`Command::Drain`] | [`Event::Drained`] |
//! | [`Command::Finish`] | none: the deployment is over |
//!
//! [`Command::Publish`], [`Command::Shrink`] and [`Command::RollBack`] lead to no event. An
//! event the machine does not await is a broken driver: [`Rollout::next`] panics.
//!
//! # The timeline
//!
//! Created (the whole new fleet; a rolling update's first batch), then for each step of
//! the plan: (rolling: the new fleet grows to its share of instances first) the share is
//! published, (rolling: the old fleet shrinks to the rest) and the step bakes. A bake
//! evaluates the alarms at once, then every [`ALARM_TICK`] and once more at its end; at
//! each evaluation an alarm in `ALARM`, else a deployment past
//! `MaximumExecutionTimeoutInSeconds`, rolls back. After the last bake, the termination
//! wait (no evaluation), then the new fleet becomes the endpoint. A rollback publishes
//! share 0 at once (blue/green) or moves back in batches of `RollbackMaximumBatchSize`
//! (rolling: the old fleet grows by a batch, takes its share back, and the new fleet
//! shrinks by as much), then waits up to [`DRAIN_LIMIT`] for the new fleet's requests
//! before the old config serves alone.
//!
//! Times are [`Duration`]s since the deployment started: a phase starts at the time of the
//! event that began it, and a bake or wait ends exactly its length later.

use crate::rollout::{split, Plan, Strategy};
use std::time::Duration;

/// How often a bake evaluates its alarms (100 ms).
pub const ALARM_TICK: Duration = Duration::from_millis(100);

/// How long a rollback waits for the new fleet's requests in flight before the old config
/// serves alone (30 s).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// One production variant of a fleet: its full size and the instances it has now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantSize {
    /// The variant's name.
    pub variant: String,
    /// The instance count its config asks for (`DesiredInstanceCount`).
    pub desired: usize,
    /// The instances its pool holds (0 for a new fleet not built yet).
    pub instances: usize,
}

/// One side of a deployment: an endpoint config and its production variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// The endpoint config's name.
    pub config: String,
    /// Its production variants, in the config's order.
    pub variants: Vec<VariantSize>,
}

/// Which fleet a command acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The fleet the endpoint serves now (its current config).
    Old,
    /// The fleet being deployed (the pending config).
    New,
}

/// The endpoint's status while a deployment runs (SageMaker's `EndpointStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `Updating`: moving to the new fleet.
    Updating,
    /// `RollingBack`: moving back to the old fleet.
    RollingBack,
}

/// Where a deployment is (SageMaker's `VariantStatus`, plus the wait before the old fleet
/// is released).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The new fleet is being built and warmed.
    Creating,
    /// A step's traffic is moving (rolling: its batch is growing).
    ActivatingTraffic,
    /// A step bakes under the alarms.
    Baking,
    /// All traffic is on the new fleet; the old one stays warm for the termination wait.
    Terminating,
    /// Traffic is moving back to the old fleet.
    RollingBack,
}

/// What [`Command::Publish`] commits: the deployment's state as `DescribeEndpoint` shows it,
/// and the event (`ListEndpointEvents`) that says why it changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The endpoint's status.
    pub status: Status,
    /// The deployment's phase.
    pub phase: Phase,
    /// The step, 1-based; 0 while the new fleet is being created.
    pub step: usize,
    /// The fraction of requests the new fleet receives, in [0, 1].
    pub share: f64,
    /// When the phase started, since the deployment started.
    pub phase_started: Duration,
    /// When the phase's bake or wait ends, since the deployment started; none for phases
    /// that end on an event.
    pub phase_end: Option<Duration>,
    /// The event's message.
    pub message: String,
}

/// How a deployment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The new fleet serves.
    Completed,
    /// An alarm, the execution timeout or a failed growth turned the deployment back.
    RolledBack,
    /// The new fleet could not be built.
    Failed,
}

impl Outcome {
    /// `"Completed"`, `"RolledBack"` or `"Failed"` (the `result` label of
    /// `plinth_deployments_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "Completed",
            Self::RolledBack => "RolledBack",
            Self::Failed => "Failed",
        }
    }

    /// The fleet the endpoint serves afterwards.
    pub fn serves(self) -> Side {
        match self {
            Self::Completed => Side::New,
            Self::RolledBack | Self::Failed => Side::Old,
        }
    }
}

/// What the driver must do, in order. See the module docs for the event each leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Commit the endpoint with this progress (and the new fleet as built so far), with its
    /// event, then publish it.
    Publish(Progress),
    /// Build and warm the new fleet: each variant with `instances` instances now, its full
    /// size `desired`. Leads to [`Event::FleetBuilt`] or [`Event::BuildFailed`].
    BuildNewFleet {
        /// The pending config's variants, in its order.
        variants: Vec<VariantSize>,
    },
    /// Grow one variant's pool to `instances` (warm before they take a request). Leads to
    /// [`Event::Grown`] or [`Event::GrowFailed`].
    Grow {
        /// The fleet of the variant.
        fleet: Side,
        /// The variant's name.
        variant: String,
        /// Its instance count afterwards.
        instances: usize,
    },
    /// Shrink one variant's pool to `instances` (the surplus finishes its requests). It
    /// cannot fail and leads to no event.
    Shrink {
        /// The fleet of the variant.
        fleet: Side,
        /// The variant's name.
        variant: String,
        /// Its instance count afterwards.
        instances: usize,
    },
    /// Evaluate these alarms now, over the live windows. Leads to [`Event::AlarmsQuiet`] or
    /// [`Event::AlarmFiring`] (the first in `ALARM`).
    EvaluateAlarms {
        /// The alarm names of `AutoRollbackConfiguration`, in order.
        alarms: Vec<String>,
    },
    /// Wait until this time since the deployment started. Leads to [`Event::Tick`].
    WaitUntil(Duration),
    /// The deployment turns back, for this reason (the driver logs it; the next
    /// [`Command::Publish`] says it).
    RollBack {
        /// Why, without a final period.
        reason: String,
    },
    /// Wait until the new fleet holds no request in flight or queued, or until this time
    /// since the deployment started. Leads to [`Event::Drained`].
    Drain {
        /// The latest time to stop waiting.
        until: Duration,
    },
    /// The deployment is over: count it, and commit the endpoint `InService` on the fleet
    /// [`Outcome::serves`] names, with the pending config and the other fleet gone.
    Finish {
        /// How it ended.
        outcome: Outcome,
        /// The endpoint's `FailureReason` afterwards.
        failure_reason: Option<String>,
        /// The event's message.
        message: String,
    },
}

impl Command {
    /// Whether carrying this command out leads to the next event.
    pub fn leads_to_event(&self) -> bool {
        matches!(
            self,
            Self::BuildNewFleet { .. }
                | Self::Grow { .. }
                | Self::EvaluateAlarms { .. }
                | Self::WaitUntil(_)
                | Self::Drain { .. }
        )
    }
}

/// What happened, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The deployment was accepted (the first event, at time zero).
    Started,
    /// [`Command::BuildNewFleet`] succeeded: the new fleet is built and warm.
    FleetBuilt,
    /// [`Command::BuildNewFleet`] failed, for this reason.
    BuildFailed(String),
    /// [`Command::Grow`] succeeded.
    Grown,
    /// [`Command::Grow`] failed: the pool kept its instances.
    GrowFailed(String),
    /// [`Command::EvaluateAlarms`]: none is in `ALARM`.
    AlarmsQuiet,
    /// [`Command::EvaluateAlarms`]: this alarm is in `ALARM`.
    AlarmFiring {
        /// The alarm's name.
        alarm: String,
        /// Its evaluation's reason.
        reason: String,
    },
    /// The time of [`Command::WaitUntil`] has come.
    Tick,
    /// [`Command::Drain`] is over.
    Drained,
}

/// The event a [`Rollout`] waits for next.
#[derive(Debug, Clone, PartialEq)]
enum Awaiting {
    Start,
    Build,
    /// A rolling step: the new fleet's variant `variant` growing to `instances`.
    NewGrowth {
        variant: usize,
        instances: usize,
    },
    /// A bake until `until`: the alarms' evaluation.
    Evaluation {
        until: Duration,
    },
    /// A bake until `until`: the wait before the next evaluation.
    Bake {
        until: Duration,
    },
    TerminationWait,
    /// A rolling rollback's batch back to `share`: the old fleet's variant `variant`
    /// growing to `instances`.
    OldGrowth {
        share: f64,
        variant: usize,
        instances: usize,
    },
    Drain,
    Finished,
}

/// A deployment in progress: plain data, driven by [`Rollout::next`].
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    plan: Plan,
    old: Fleet,
    new: Fleet,
    awaiting: Awaiting,
    status: Status,
    phase: Phase,
    /// 1-based; 0 while the new fleet is being created.
    step: usize,
    /// The share last published.
    share: f64,
    phase_started: Duration,
    phase_end: Option<Duration>,
    /// Why it rolls back, once it does.
    reason: Option<String>,
}

impl Rollout {
    /// A deployment of `plan` from `old` (the fleet the endpoint serves, with its pools'
    /// instance counts) to `new` (the pending config's variants; their `instances` are
    /// ignored: nothing is built yet). It waits for [`Event::Started`].
    pub fn new(plan: Plan, old: Fleet, mut new: Fleet) -> Self {
        for v in &mut new.variants {
            v.instances = 0;
        }
        Self {
            plan,
            old,
            new,
            awaiting: Awaiting::Start,
            status: Status::Updating,
            phase: Phase::Creating,
            step: 0,
            share: 0.0,
            phase_started: Duration::ZERO,
            phase_end: None,
            reason: None,
        }
    }

    /// Take `event`, which happened `now` (since the deployment started), and answer what to
    /// do next, in order (see the module docs for the protocol).
    ///
    /// # Panics
    ///
    /// If the rollout does not await `event` (after [`Command::Finish`], or an event that
    /// does not answer the last command): the driver broke the protocol.
    pub fn next(&mut self, now: Duration, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        match (std::mem::replace(&mut self.awaiting, Awaiting::Finished), event) {
            (Awaiting::Start, Event::Started) => self.start(now, &mut out),
            (Awaiting::Build, Event::FleetBuilt) => {
                let batch = self.first_batch();
                for (v, built) in self.new.variants.iter_mut().zip(batch) {
                    v.instances = built.instances;
                }
                let message = format!("New fleet {} created and warm", self.new.config);
                out.push(self.publish(message));
                self.begin_step(now, 0, &mut out);
            }
            (Awaiting::Build, Event::BuildFailed(reason)) => {
                let message = format!(
                    "Deployment of {} failed, {} keeps serving: {reason}",
                    self.new.config, self.old.config
                );
                self.finish(Outcome::Failed, Some(reason), message, &mut out);
            }
            (Awaiting::NewGrowth { variant, instances }, Event::Grown) => {
                self.new.variants[variant].instances = instances;
                self.grow_new(now, variant + 1, &mut out);
            }
            (Awaiting::NewGrowth { variant, .. }, Event::GrowFailed(error)) => {
                let reason = format!(
                    "variant {}: cannot grow the new fleet: {error}",
                    self.new.variants[variant].variant
                );
                self.roll_back(now, reason, &mut out);
            }
            (Awaiting::Evaluation { .. }, Event::AlarmFiring { alarm, reason }) => {
                self.roll_back(now, format!("alarm {alarm} is in ALARM: {reason}"), &mut out);
            }
            (Awaiting::Evaluation { until }, Event::AlarmsQuiet) => {
                self.alarms_quiet(now, until, &mut out)
            }
            (Awaiting::Bake { until }, Event::Tick) => self.evaluate(until, &mut out),
            (Awaiting::TerminationWait, Event::Tick) => self.complete(&mut out),
            (
                Awaiting::OldGrowth {
                    share,
                    variant,
                    instances,
                },
                Event::Grown,
            ) => {
                self.old.variants[variant].instances = instances;
                self.roll_back_to(now, share, variant + 1, &mut out);
            }
            // The old fleet keeps the instances it has; the next batch tries again.
            (Awaiting::OldGrowth { share, variant, .. }, Event::GrowFailed(_)) => {
                self.roll_back_to(now, share, variant + 1, &mut out);
            }
            (Awaiting::Drain, Event::Drained) => {
                let reason = self.reason.clone().unwrap_or_default();
                let failure = format!(
                    "The deployment of endpoint configuration {} was rolled back: {reason}. \
                     The endpoint serves {}.",
                    self.new.config, self.old.config
                );
                let message = format!("Rolled back: in service on {}", self.old.config);
                self.finish(Outcome::RolledBack, Some(failure), message, &mut out);
            }
            (awaiting, event) => panic!(
                "a rollout awaiting {awaiting:?} cannot take {event:?}: the driver broke the \
                 protocol"
            ),
        }
        out
    }

    /// Whether the deployment is over ([`Command::Finish`] was answered).
    pub fn finished(&self) -> bool {
        self.awaiting == Awaiting::Finished
    }

    fn rolling(&self) -> bool {
        self.plan.strategy == Strategy::Rolling
    }

    /// The share of the current step.
    fn target(&self) -> f64 {
        self.plan.steps[self.step - 1].new_share
    }

    /// What is built first: the whole new fleet, or (rolling) the first batch, at least one
    /// instance per variant.
    fn first_batch(&self) -> Vec<VariantSize> {
        let rolling = self.rolling();
        let first = self.plan.steps[0].new_share;
        self.new
            .variants
            .iter()
            .map(|v| VariantSize {
                instances: if rolling {
                    split(v.desired, first).0.max(1)
                } else {
                    v.desired
                },
                ..v.clone()
            })
            .collect()
    }

    fn enter(&mut self, phase: Phase, now: Duration, end: Option<Duration>) {
        self.phase = phase;
        self.phase_started = now;
        self.phase_end = end;
    }

    fn publish(&self, message: String) -> Command {
        Command::Publish(Progress {
            status: self.status,
            phase: self.phase,
            step: self.step,
            share: self.share,
            phase_started: self.phase_started,
            phase_end: self.phase_end,
            message,
        })
    }

    fn start(&mut self, now: Duration, out: &mut Vec<Command>) {
        let steps = self.plan.steps.len();
        self.enter(Phase::Creating, now, None);
        out.push(self.publish(format!(
            "Deployment to {} started ({}, {steps} step{}{}): creating the new fleet",
            self.new.config,
            self.plan.strategy.as_str(),
            if steps == 1 { "" } else { "s" },
            if self.plan.alarms.is_empty() {
                String::new()
            } else {
                format!(", rollback alarms {}", self.plan.alarms.join(", "))
            }
        )));
        out.push(Command::BuildNewFleet {
            variants: self.first_batch(),
        });
        self.awaiting = Awaiting::Build;
    }

    /// Step `index` (0-based): rolling, the new fleet grows first, so that the share never
    /// routes to instances that do not exist yet.
    fn begin_step(&mut self, now: Duration, index: usize, out: &mut Vec<Command>) {
        self.step = index + 1;
        if self.rolling() {
            self.enter(Phase::ActivatingTraffic, now, None);
            let message = format!(
                "Step {}/{}: growing the new fleet",
                self.step,
                self.plan.steps.len()
            );
            out.push(self.publish(message));
            self.grow_new(now, 0, out);
        } else {
            self.shift(now, out);
        }
    }

    /// Grow the new fleet's variants from `from` on to the step's share, one at a time;
    /// then shift the traffic.
    fn grow_new(&mut self, now: Duration, from: usize, out: &mut Vec<Command>) {
        let share = self.target();
        for (i, v) in self.new.variants.iter().enumerate().skip(from) {
            let (instances, _) = split(v.desired, share);
            if instances > v.instances {
                out.push(Command::Grow {
                    fleet: Side::New,
                    variant: v.variant.clone(),
                    instances,
                });
                self.awaiting = Awaiting::NewGrowth {
                    variant: i,
                    instances,
                };
                return;
            }
        }
        self.shift(now, out);
    }

    /// Publish the step's share (rolling: then shrink the old fleet to the rest), then bake.
    fn shift(&mut self, now: Duration, out: &mut Vec<Command>) {
        self.share = self.target();
        self.enter(Phase::ActivatingTraffic, now, None);
        let message = format!(
            "Step {}/{}: {}% of traffic to the new fleet",
            self.step,
            self.plan.steps.len(),
            percent(self.share)
        );
        out.push(self.publish(message));
        if self.rolling() {
            let share = self.share;
            for v in &mut self.old.variants {
                let (_, instances) = split(v.desired, share);
                if instances < v.instances {
                    out.push(Command::Shrink {
                        fleet: Side::Old,
                        variant: v.variant.clone(),
                        instances,
                    });
                    v.instances = instances;
                }
            }
        }
        let steps = self.plan.steps.len();
        let bake = self.plan.steps[self.step - 1].bake;
        let until = now + bake;
        self.enter(Phase::Baking, now, Some(until));
        let message = format!(
            "Step {}/{steps}: baking for {} s{}",
            self.step,
            bake.as_secs(),
            if self.step == steps {
                " (final bake)"
            } else {
                ""
            }
        );
        out.push(self.publish(message));
        self.evaluate(until, out);
    }

    fn evaluate(&mut self, until: Duration, out: &mut Vec<Command>) {
        out.push(Command::EvaluateAlarms {
            alarms: self.plan.alarms.clone(),
        });
        self.awaiting = Awaiting::Evaluation { until };
    }

    /// No alarm fired: the execution timeout, else the bake's end, else the next tick.
    fn alarms_quiet(&mut self, now: Duration, until: Duration, out: &mut Vec<Command>) {
        if let Some(limit) = self.plan.max_execution {
            if now > limit {
                let reason = format!(
                    "the deployment ran past MaximumExecutionTimeoutInSeconds ({} s)",
                    limit.as_secs()
                );
                return self.roll_back(now, reason, out);
            }
        }
        if now >= until {
            return self.after_bake(now, out);
        }
        out.push(Command::WaitUntil((now + ALARM_TICK).min(until)));
        self.awaiting = Awaiting::Bake { until };
    }

    /// The next step, else the termination wait, else completion.
    fn after_bake(&mut self, now: Duration, out: &mut Vec<Command>) {
        if self.step < self.plan.steps.len() {
            return self.begin_step(now, self.step, out);
        }
        let wait = self.plan.termination_wait;
        if wait.is_zero() {
            return self.complete(out);
        }
        let until = now + wait;
        self.enter(Phase::Terminating, now, Some(until));
        out.push(self.publish(format!(
            "All traffic on the new fleet; the old fleet stays warm for {} s",
            wait.as_secs()
        )));
        out.push(Command::WaitUntil(until));
        self.awaiting = Awaiting::TerminationWait;
    }

    fn complete(&mut self, out: &mut Vec<Command>) {
        let message = format!("Deployment complete: in service on {}", self.new.config);
        self.finish(Outcome::Completed, None, message, out);
    }

    /// Turn back: blue/green, all traffic to the old fleet in one snapshot; rolling, in
    /// batches of the plan's `rollback_step`. Then drain the new fleet.
    fn roll_back(&mut self, now: Duration, reason: String, out: &mut Vec<Command>) {
        let reason = reason.trim_end_matches('.').to_string();
        out.push(Command::RollBack {
            reason: reason.clone(),
        });
        self.status = Status::RollingBack;
        self.enter(Phase::RollingBack, now, None);
        if self.rolling() {
            out.push(self.publish(format!("Rolling back: {reason}")));
            self.reason = Some(reason);
            if self.share > 0.0 {
                let share = self.rollback_share();
                self.roll_back_to(now, share, 0, out);
            } else {
                self.drain(now, out);
            }
        } else {
            self.share = 0.0;
            out.push(self.publish(format!(
                "Rolling back: {reason}; all traffic returns to the old fleet"
            )));
            self.reason = Some(reason);
            self.drain(now, out);
        }
    }

    /// The share one rollback batch below the current one; float residue counts as 0.
    fn rollback_share(&self) -> f64 {
        let share = (self.share - self.plan.rollback_step).max(0.0);
        if share < 1e-9 {
            0.0
        } else {
            share
        }
    }

    /// A rolling rollback's batch back to `share`: the old fleet's variants from `from` on
    /// grow to their part, one at a time; then the share is published and the new fleet
    /// shrinks to its part; then the next batch, until the share is 0, then the drain.
    fn roll_back_to(&mut self, now: Duration, mut share: f64, mut from: usize, out: &mut Vec<Command>) {
        loop {
            for (i, v) in self.old.variants.iter().enumerate().skip(from) {
                let (_, instances) = split(v.desired, share);
                if instances > v.instances {
                    out.push(Command::Grow {
                        fleet: Side::Old,
                        variant: v.variant.clone(),
                        instances,
                    });
                    self.awaiting = Awaiting::OldGrowth {
                        share,
                        variant: i,
                        instances,
                    };
                    return;
                }
            }
            self.share = share;
            out.push(self.publish(format!(
                "Rolling back: {}% of traffic on the new fleet",
                percent(share)
            )));
            for v in &mut self.new.variants {
                let (instances, _) = split(v.desired, share);
                if instances < v.instances {
                    out.push(Command::Shrink {
                        fleet: Side::New,
                        variant: v.variant.clone(),
                        instances,
                    });
                    v.instances = instances;
                }
            }
            if share <= 0.0 {
                return self.drain(now, out);
            }
            share = self.rollback_share();
            from = 0;
        }
    }

    fn drain(&mut self, now: Duration, out: &mut Vec<Command>) {
        out.push(Command::Drain {
            until: now + DRAIN_LIMIT,
        });
        self.awaiting = Awaiting::Drain;
    }

    fn finish(
        &mut self,
        outcome: Outcome,
        failure_reason: Option<String>,
        message: String,
        out: &mut Vec<Command>,
    ) {
        out.push(Command::Finish {
            outcome,
            failure_reason,
            message,
        });
        self.awaiting = Awaiting::Finished;
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
