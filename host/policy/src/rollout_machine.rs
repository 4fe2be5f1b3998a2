//! A deployment (UpdateEndpoint with a `DeploymentConfig`) as a pure state machine:
//! `(state, event) -> commands`. Policy decides, the server carries out.
//!
//! [`Rollout`] holds the [`Plan`], both fleets' sizes and where the
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
        match (
            std::mem::replace(&mut self.awaiting, Awaiting::Finished),
            event,
        ) {
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
                self.roll_back(
                    now,
                    format!("alarm {alarm} is in ALARM: {reason}"),
                    &mut out,
                );
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
    fn roll_back_to(
        &mut self,
        now: Duration,
        mut share: f64,
        mut from: usize,
        out: &mut Vec<Command>,
    ) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::DeploymentConfig;

    const V: &str = "AllTraffic";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn plan(json: &str, instances: usize) -> Plan {
        serde_json::from_str::<DeploymentConfig>(json)
            .unwrap()
            .plan(instances)
            .unwrap()
    }

    fn sizes(variants: &[(&str, usize)]) -> Vec<VariantSize> {
        variants
            .iter()
            .map(|&(variant, desired)| VariantSize {
                variant: variant.into(),
                desired,
                instances: desired,
            })
            .collect()
    }

    /// A deployment of `json` from config `v1` (`old`, its pools at full size) to `v2`
    /// (`new`), started.
    fn started(
        json: &str,
        old: &[(&str, usize)],
        new: &[(&str, usize)],
    ) -> (Rollout, Vec<Command>) {
        let plan = plan(json, new.iter().map(|v| v.1).sum());
        let mut r = Rollout::new(
            plan,
            Fleet {
                config: "v1".into(),
                variants: sizes(old),
            },
            Fleet {
                config: "v2".into(),
                variants: sizes(new),
            },
        );
        let commands = feed(&mut r, Duration::ZERO, Event::Started);
        (r, commands)
    }

    /// `r.next`, checking the protocol: only the last command of an answer leads to an
    /// event or finishes, and every answer ends with one that does.
    #[track_caller]
    fn feed(r: &mut Rollout, at: Duration, event: Event) -> Vec<Command> {
        let commands = r.next(at, event);
        let (last, before) = commands.split_last().expect("an answer");
        for c in before {
            assert!(
                !c.leads_to_event() && !matches!(c, Command::Finish { .. }),
                "{c:?} before the end of {commands:?}"
            );
        }
        let finish = matches!(last, Command::Finish { .. });
        assert!(
            last.leads_to_event() || finish,
            "{commands:?} leads nowhere"
        );
        assert_eq!(r.finished(), finish);
        commands
    }

    fn progress(
        status: Status,
        phase: Phase,
        step: usize,
        share: f64,
        started: Duration,
        end: Option<Duration>,
        message: &str,
    ) -> Command {
        Command::Publish(Progress {
            status,
            phase,
            step,
            share,
            phase_started: started,
            phase_end: end,
            message: message.into(),
        })
    }

    fn updating(
        phase: Phase,
        step: usize,
        share: f64,
        started: Duration,
        end: Option<Duration>,
        message: &str,
    ) -> Command {
        progress(Status::Updating, phase, step, share, started, end, message)
    }

    fn rolling_back(step: usize, share: f64, started: Duration, message: &str) -> Command {
        progress(
            Status::RollingBack,
            Phase::RollingBack,
            step,
            share,
            started,
            None,
            message,
        )
    }

    fn evaluate(alarms: &[&str]) -> Command {
        Command::EvaluateAlarms {
            alarms: alarms.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn grow(fleet: Side, instances: usize) -> Command {
        Command::Grow {
            fleet,
            variant: V.into(),
            instances,
        }
    }

    fn shrink(fleet: Side, instances: usize) -> Command {
        Command::Shrink {
            fleet,
            variant: V.into(),
            instances,
        }
    }

    fn build(variants: &[(&str, usize, usize)]) -> Command {
        Command::BuildNewFleet {
            variants: variants
                .iter()
                .map(|&(variant, desired, instances)| VariantSize {
                    variant: variant.into(),
                    desired,
                    instances,
                })
                .collect(),
        }
    }

    fn completed() -> Command {
        Command::Finish {
            outcome: Outcome::Completed,
            failure_reason: None,
            message: "Deployment complete: in service on v2".into(),
        }
    }

    fn rolled_back(reason: &str) -> Command {
        Command::Finish {
            outcome: Outcome::RolledBack,
            failure_reason: Some(format!(
                "The deployment of endpoint configuration v2 was rolled back: {reason}. The \
                 endpoint serves v1."
            )),
            message: "Rolled back: in service on v1".into(),
        }
    }

    /// A bake from `from` (its first evaluation, just answered) to `until` with no alarm:
    /// a wait of one tick after each evaluation (the last one shorter, to the bake's end),
    /// an evaluation after each wait. The answer to the evaluation at `until`.
    #[track_caller]
    fn bake_quietly(
        r: &mut Rollout,
        from: Duration,
        until: Duration,
        alarms: &[&str],
    ) -> Vec<Command> {
        let mut now = from;
        loop {
            let answer = feed(r, now, Event::AlarmsQuiet);
            if now >= until {
                return answer;
            }
            let next = (now + ALARM_TICK).min(until);
            assert_eq!(answer, [Command::WaitUntil(next)], "at {now:?}");
            now = next;
            assert_eq!(feed(r, now, Event::Tick), [evaluate(alarms)], "at {now:?}");
        }
    }

    const CANARY: &str = r#"{
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 2,
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 25}},
            "TerminationWaitInSeconds": 1,
            "MaximumExecutionTimeoutInSeconds": 600},
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "errors"}, {"AlarmName": "latency"}]}}"#;
    const ALARMS: &[&str] = &["errors", "latency"];

    #[test]
    fn canary_bakes_a_quarter_then_everything_then_waits_for_termination() {
        let (mut r, answer) = started(CANARY, &[(V, 2)], &[(V, 4)]);
        assert_eq!(
            answer,
            [
                updating(
                    Phase::Creating,
                    0,
                    0.0,
                    Duration::ZERO,
                    None,
                    "Deployment to v2 started (CANARY, 2 steps, rollback alarms errors, \
                     latency): creating the new fleet"
                ),
                build(&[(V, 4, 4)]),
            ]
        );
        assert_eq!(
            feed(&mut r, ms(1500), Event::FleetBuilt),
            [
                updating(
                    Phase::Creating,
                    0,
                    0.0,
                    Duration::ZERO,
                    None,
                    "New fleet v2 created and warm"
                ),
                updating(
                    Phase::ActivatingTraffic,
                    1,
                    0.25,
                    ms(1500),
                    None,
                    "Step 1/2: 25% of traffic to the new fleet"
                ),
                updating(
                    Phase::Baking,
                    1,
                    0.25,
                    ms(1500),
                    Some(ms(3500)),
                    "Step 1/2: baking for 2 s"
                ),
                evaluate(ALARMS),
            ]
        );
        assert_eq!(
            bake_quietly(&mut r, ms(1500), ms(3500), ALARMS),
            [
                updating(
                    Phase::ActivatingTraffic,
                    2,
                    1.0,
                    ms(3500),
                    None,
                    "Step 2/2: 100% of traffic to the new fleet"
                ),
                updating(
                    Phase::Baking,
                    2,
                    1.0,
                    ms(3500),
                    Some(ms(5500)),
                    "Step 2/2: baking for 2 s (final bake)"
                ),
                evaluate(ALARMS),
            ]
        );
        // The termination wait evaluates no alarm.
        assert_eq!(
            bake_quietly(&mut r, ms(3500), ms(5500), ALARMS),
            [
                updating(
                    Phase::Terminating,
                    2,
                    1.0,
                    ms(5500),
                    Some(ms(6500)),
                    "All traffic on the new fleet; the old fleet stays warm for 1 s"
                ),
                Command::WaitUntil(ms(6500)),
            ]
        );
        assert_eq!(feed(&mut r, ms(6500), Event::Tick), [completed()]);
    }

    #[test]
    fn linear_moves_equal_steps_of_every_variant_without_resizing() {
        let json = r#"{"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {
            "Type": "LINEAR", "WaitIntervalInSeconds": 0,
            "LinearStepSize": {"Type": "INSTANCE_COUNT", "Value": 1}}}}"#;
        let (mut r, answer) = started(json, &[(V, 1)], &[("A", 2), ("B", 1)]);
        assert_eq!(
            answer,
            [
                updating(
                    Phase::Creating,
                    0,
                    0.0,
                    Duration::ZERO,
                    None,
                    "Deployment to v2 started (LINEAR, 3 steps): creating the new fleet"
                ),
                build(&[("A", 2, 2), ("B", 1, 1)]),
            ]
        );
        let step = |k: usize, share: f64, percent: &str, at: Duration, last: bool| {
            [
                updating(
                    Phase::ActivatingTraffic,
                    k,
                    share,
                    at,
                    None,
                    &format!("Step {k}/3: {percent}% of traffic to the new fleet"),
                ),
                updating(
                    Phase::Baking,
                    k,
                    share,
                    at,
                    Some(at),
                    &format!(
                        "Step {k}/3: baking for 0 s{}",
                        if last { " (final bake)" } else { "" }
                    ),
                ),
                evaluate(&[]),
            ]
        };
        let mut first = vec![updating(
            Phase::Creating,
            0,
            0.0,
            Duration::ZERO,
            None,
            "New fleet v2 created and warm",
        )];
        first.extend(step(1, 1.0 / 3.0, "33.3", ms(10), false));
        assert_eq!(feed(&mut r, ms(10), Event::FleetBuilt), first);
        // A bake of 0 s still evaluates the alarms once.
        assert_eq!(
            feed(&mut r, ms(11), Event::AlarmsQuiet),
            step(2, 2.0 / 3.0, "66.7", ms(11), false)
        );
        assert_eq!(
            feed(&mut r, ms(12), Event::AlarmsQuiet),
            step(3, 1.0, "100", ms(12), true)
        );
        // No termination wait: complete at once.
        assert_eq!(feed(&mut r, ms(13), Event::AlarmsQuiet), [completed()]);
    }

    #[test]
    fn all_at_once_without_a_policy_is_one_step_and_no_bake() {
        let (mut r, answer) = started("{}", &[(V, 1)], &[(V, 2)]);
        assert_eq!(
            answer,
            [
                updating(
                    Phase::Creating,
                    0,
                    0.0,
                    Duration::ZERO,
                    None,
                    "Deployment to v2 started (ALL_AT_ONCE, 1 step): creating the new fleet"
                ),
                build(&[(V, 2, 2)]),
            ]
        );
        assert_eq!(
            feed(&mut r, ms(5), Event::FleetBuilt),
            [
                updating(
                    Phase::Creating,
                    0,
                    0.0,
                    Duration::ZERO,
                    None,
                    "New fleet v2 created and warm"
                ),
                updating(
                    Phase::ActivatingTraffic,
                    1,
                    1.0,
                    ms(5),
                    None,
                    "Step 1/1: 100% of traffic to the new fleet"
                ),
                updating(
                    Phase::Baking,
                    1,
                    1.0,
                    ms(5),
                    Some(ms(5)),
                    "Step 1/1: baking for 0 s (final bake)"
                ),
                evaluate(&[]),
            ]
        );
        assert_eq!(feed(&mut r, ms(6), Event::AlarmsQuiet), [completed()]);
    }

    #[test]
    fn a_bake_evaluates_at_its_start_every_tick_after_each_evaluation_and_at_its_end() {
        let json = r#"{"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {
            "Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 1}}}"#;
        let (mut r, _) = started(json, &[(V, 1)], &[(V, 1)]);
        let answer = feed(&mut r, Duration::ZERO, Event::FleetBuilt);
        assert_eq!(answer.last(), Some(&evaluate(&[])));
        // Evaluations that take 30 ms, then 5 ms: the tick counts from each one's end.
        let mut now = ms(30);
        let mut waits = Vec::new();
        loop {
            let answer = feed(&mut r, now, Event::AlarmsQuiet);
            let [Command::WaitUntil(at)] = answer[..] else {
                assert_eq!(answer, [completed()]);
                break;
            };
            waits.push(at.as_millis());
            assert_eq!(feed(&mut r, at, Event::Tick), [evaluate(&[])]);
            now = at + ms(5);
            if at == ms(1000) {
                now = at;
            }
        }
        let mut expected = vec![130];
        while *expected.last().unwrap() + 105 < 1000 {
            expected.push(expected.last().unwrap() + 105);
        }
        expected.push(1000);
        assert_eq!(waits, expected);
    }

    #[test]
    fn an_alarm_during_a_bake_sends_all_traffic_back_and_drains() {
        let (mut r, _) = started(CANARY, &[(V, 2)], &[(V, 4)]);
        feed(&mut r, ms(1000), Event::FleetBuilt);
        assert_eq!(
            feed(&mut r, ms(1001), Event::AlarmsQuiet),
            [Command::WaitUntil(ms(1101))]
        );
        assert_eq!(feed(&mut r, ms(1101), Event::Tick), [evaluate(ALARMS)]);
        let reason = "alarm latency is in ALARM: Threshold Crossed: 1 datapoint [0.5] was \
                      greater than the threshold (0.1)";
        assert_eq!(
            feed(
                &mut r,
                ms(1102),
                Event::AlarmFiring {
                    alarm: "latency".into(),
                    reason: "Threshold Crossed: 1 datapoint [0.5] was greater than the \
                             threshold (0.1)."
                        .into(),
                }
            ),
            [
                Command::RollBack {
                    reason: reason.into()
                },
                rolling_back(
                    1,
                    0.0,
                    ms(1102),
                    &format!("Rolling back: {reason}; all traffic returns to the old fleet")
                ),
                Command::Drain {
                    until: ms(1102) + DRAIN_LIMIT
                },
            ]
        );
        assert_eq!(
            feed(&mut r, ms(1500), Event::Drained),
            [rolled_back(reason)]
        );
    }

    #[test]
    fn the_execution_timeout_rolls_back_at_the_first_evaluation_past_it() {
        let json = r#"{"BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 3600},
            "MaximumExecutionTimeoutInSeconds": 600}}"#;
        let (mut r, _) = started(json, &[(V, 1)], &[(V, 1)]);
        feed(&mut r, ms(10_000), Event::FleetBuilt);
        // At the limit exactly it goes on.
        assert_eq!(
            feed(&mut r, ms(600_000), Event::AlarmsQuiet),
            [Command::WaitUntil(ms(600_100))]
        );
        assert_eq!(feed(&mut r, ms(600_100), Event::Tick), [evaluate(&[])]);
        let reason = "the deployment ran past MaximumExecutionTimeoutInSeconds (600 s)";
        assert_eq!(
            feed(&mut r, ms(600_101), Event::AlarmsQuiet),
            [
                Command::RollBack {
                    reason: reason.into()
                },
                rolling_back(
                    1,
                    0.0,
                    ms(600_101),
                    &format!("Rolling back: {reason}; all traffic returns to the old fleet")
                ),
                Command::Drain { until: ms(630_101) },
            ]
        );
        assert_eq!(
            feed(&mut r, ms(601_000), Event::Drained),
            [rolled_back(reason)]
        );
    }

    #[test]
    fn the_execution_timeout_is_checked_at_evaluations_and_an_alarm_comes_first() {
        let json = r#"{"BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 60},
            "MaximumExecutionTimeoutInSeconds": 600},
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "errors"}]}}"#;
        // A build that outlasts the timeout still publishes its step: the timeout rolls
        // back at the bake's first evaluation.
        let (mut r, _) = started(json, &[(V, 1)], &[(V, 1)]);
        let answer = feed(&mut r, ms(700_000), Event::FleetBuilt);
        assert_eq!(answer.len(), 4, "{answer:?}");
        assert_eq!(answer[3], evaluate(&["errors"]));
        let answer = feed(&mut r, ms(700_001), Event::AlarmsQuiet);
        assert_eq!(
            answer[0],
            Command::RollBack {
                reason: "the deployment ran past MaximumExecutionTimeoutInSeconds (600 s)".into()
            }
        );
        // Past the timeout, an alarm in ALARM is the reason given.
        let (mut r, _) = started(json, &[(V, 1)], &[(V, 1)]);
        feed(&mut r, ms(700_000), Event::FleetBuilt);
        let answer = feed(
            &mut r,
            ms(700_001),
            Event::AlarmFiring {
                alarm: "errors".into(),
                reason: "high".into(),
            },
        );
        assert_eq!(
            answer[0],
            Command::RollBack {
                reason: "alarm errors is in ALARM: high".into()
            }
        );
    }

    const ROLLING_HALVES: &str = r#"{"RollingUpdatePolicy": {
        "MaximumBatchSize": {"Type": "CAPACITY_PERCENT", "Value": 50},
        "WaitIntervalInSeconds": 1}}"#;

    #[test]
    fn rolling_grows_the_new_fleet_then_shifts_then_shrinks_the_old_one() {
        let (mut r, answer) = started(ROLLING_HALVES, &[(V, 4)], &[(V, 4)]);
        assert_eq!(
            answer,
            [
                updating(
                    Phase::Creating,
                    0,
                    0.0,
                    Duration::ZERO,
                    None,
                    "Deployment to v2 started (ROLLING, 2 steps): creating the new fleet"
                ),
                // The first batch only.
                build(&[(V, 4, 2)]),
            ]
        );
        assert_eq!(
            feed(&mut r, ms(1000), Event::FleetBuilt),
            [
                updating(
                    Phase::Creating,
                    0,
                    0.0,
                    Duration::ZERO,
                    None,
                    "New fleet v2 created and warm"
                ),
                updating(
                    Phase::ActivatingTraffic,
                    1,
                    0.0,
                    ms(1000),
                    None,
                    "Step 1/2: growing the new fleet"
                ),
                // Built at its size: nothing to grow.
                updating(
                    Phase::ActivatingTraffic,
                    1,
                    0.5,
                    ms(1000),
                    None,
                    "Step 1/2: 50% of traffic to the new fleet"
                ),
                shrink(Side::Old, 2),
                updating(
                    Phase::Baking,
                    1,
                    0.5,
                    ms(1000),
                    Some(ms(2000)),
                    "Step 1/2: baking for 1 s"
                ),
                evaluate(&[]),
            ]
        );
        assert_eq!(
            bake_quietly(&mut r, ms(1000), ms(2000), &[]),
            [
                updating(
                    Phase::ActivatingTraffic,
                    2,
                    0.5,
                    ms(2000),
                    None,
                    "Step 2/2: growing the new fleet"
                ),
                grow(Side::New, 4),
            ]
        );
        assert_eq!(
            feed(&mut r, ms(2300), Event::Grown),
            [
                updating(
                    Phase::ActivatingTraffic,
                    2,
                    1.0,
                    ms(2300),
                    None,
                    "Step 2/2: 100% of traffic to the new fleet"
                ),
                shrink(Side::Old, 0),
                updating(
                    Phase::Baking,
                    2,
                    1.0,
                    ms(2300),
                    Some(ms(3300)),
                    "Step 2/2: baking for 1 s (final bake)"
                ),
                evaluate(&[]),
            ]
        );
        // A rolling update has no termination wait.
        assert_eq!(bake_quietly(&mut r, ms(2300), ms(3300), &[]), [completed()]);
    }

    /// A rolling update of 4 instances in batches of 1, rolled back in batches of
    /// `rollback`, up to step `step`'s bake (grown and shifted, its alarms evaluating).
    fn rolling_quarters(rollback: &str, step: usize) -> Rollout {
        let json = format!(
            r#"{{"RollingUpdatePolicy": {{
                "MaximumBatchSize": {{"Type": "INSTANCE_COUNT", "Value": 1}},
                "WaitIntervalInSeconds": 0{rollback}}},
                "AutoRollbackConfiguration": {{"Alarms": [{{"AlarmName": "errors"}}]}}}}"#
        );
        let (mut r, answer) = started(&json, &[(V, 4)], &[(V, 4)]);
        assert_eq!(answer[1], build(&[(V, 4, 1)]));
        let answer = feed(&mut r, ms(1000), Event::FleetBuilt);
        assert_eq!(answer[3], shrink(Side::Old, 3));
        for k in 2..=step {
            let at = ms(1000 + 100 * k as u64);
            let answer = feed(&mut r, at, Event::AlarmsQuiet);
            assert_eq!(answer[1], grow(Side::New, k), "{answer:?}");
            let answer = feed(&mut r, at, Event::Grown);
            assert_eq!(answer[1], shrink(Side::Old, 4 - k), "{answer:?}");
            assert_eq!(answer.last(), Some(&evaluate(&["errors"])));
        }
        r
    }

    fn firing() -> Event {
        Event::AlarmFiring {
            alarm: "errors".into(),
            reason: "Threshold Crossed: 1 datapoint [0.5] was greater than the threshold (0.1)."
                .into(),
        }
    }
    const FIRED: &str = "alarm errors is in ALARM: Threshold Crossed: 1 datapoint [0.5] was \
                         greater than the threshold (0.1)";

    #[test]
    fn a_rolling_update_rolls_back_in_batches_of_rollback_maximum_batch_size() {
        let mut r = rolling_quarters(
            r#", "RollbackMaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 2}"#,
            3,
        );
        // 75% on the new fleet (1 old, 3 new): back to 25% (3, 1), then 0% (4, 0); each
        // batch grows the old fleet before its share moves back.
        assert_eq!(
            feed(&mut r, ms(2000), firing()),
            [
                Command::RollBack {
                    reason: FIRED.into()
                },
                rolling_back(3, 0.75, ms(2000), &format!("Rolling back: {FIRED}")),
                grow(Side::Old, 3),
            ]
        );
        assert_eq!(
            feed(&mut r, ms(2100), Event::Grown),
            [
                rolling_back(
                    3,
                    0.25,
                    ms(2000),
                    "Rolling back: 25% of traffic on the new fleet"
                ),
                shrink(Side::New, 1),
                grow(Side::Old, 4),
            ]
        );
        assert_eq!(
            feed(&mut r, ms(2200), Event::Grown),
            [
                rolling_back(
                    3,
                    0.0,
                    ms(2000),
                    "Rolling back: 0% of traffic on the new fleet"
                ),
                shrink(Side::New, 0),
                Command::Drain {
                    until: ms(2200) + DRAIN_LIMIT
                },
            ]
        );
        assert_eq!(feed(&mut r, ms(2300), Event::Drained), [rolled_back(FIRED)]);
    }

    #[test]
    fn a_rolling_update_without_rollback_batches_rolls_back_at_once() {
        let mut r = rolling_quarters("", 2);
        assert_eq!(
            feed(&mut r, ms(3000), firing()),
            [
                Command::RollBack {
                    reason: FIRED.into()
                },
                rolling_back(2, 0.5, ms(3000), &format!("Rolling back: {FIRED}")),
                grow(Side::Old, 4),
            ]
        );
        assert_eq!(
            feed(&mut r, ms(3100), Event::Grown),
            [
                rolling_back(
                    2,
                    0.0,
                    ms(3000),
                    "Rolling back: 0% of traffic on the new fleet"
                ),
                shrink(Side::New, 0),
                Command::Drain {
                    until: ms(3100) + DRAIN_LIMIT
                },
            ]
        );
    }

    #[test]
    fn a_rolling_rollback_in_thirds_takes_three_batches() {
        let json = r#"{"RollingUpdatePolicy": {
            "MaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 1},
            "RollbackMaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 1},
            "WaitIntervalInSeconds": 0}}"#;
        let (mut r, _) = started(json, &[(V, 3)], &[(V, 3)]);
        feed(&mut r, ms(1), Event::FleetBuilt);
        for k in 2..=3 {
            assert_eq!(
                feed(&mut r, ms(1), Event::AlarmsQuiet)[1],
                grow(Side::New, k)
            );
            feed(&mut r, ms(1), Event::Grown);
        }
        // In the final bake (all 3 on the new fleet), a failed growth cannot happen; an
        // alarm can: a driver reporting one.
        let answer = feed(&mut r, ms(2), firing());
        assert_eq!(answer[2], grow(Side::Old, 1));
        let mut published = Vec::new();
        let mut answer = feed(&mut r, ms(3), Event::Grown);
        loop {
            let Command::Publish(p) = &answer[0] else {
                panic!("{answer:?}")
            };
            published.push(p.message.clone());
            match answer.last() {
                Some(Command::Grow { .. }) => answer = feed(&mut r, ms(3), Event::Grown),
                _ => break,
            }
        }
        // 1 - 1/3 - 1/3 - 1/3 is not 0 in binary: the residue counts as 0.
        assert_eq!(
            published,
            [
                "Rolling back: 66.7% of traffic on the new fleet",
                "Rolling back: 33.3% of traffic on the new fleet",
                "Rolling back: 0% of traffic on the new fleet",
            ]
        );
        assert_eq!(
            answer[1..],
            [
                shrink(Side::New, 0),
                Command::Drain {
                    until: ms(3) + DRAIN_LIMIT
                }
            ]
        );
    }

    #[test]
    fn a_failed_growth_of_the_new_fleet_rolls_back() {
        let mut r = rolling_quarters("", 1);
        assert_eq!(
            feed(&mut r, ms(2000), Event::AlarmsQuiet)[1],
            grow(Side::New, 2)
        );
        let reason = "variant AllTraffic: cannot grow the new fleet: out of memory";
        assert_eq!(
            feed(&mut r, ms(2100), Event::GrowFailed("out of memory".into())),
            [
                Command::RollBack {
                    reason: reason.into()
                },
                // Step 2 had not moved its share yet.
                rolling_back(2, 0.25, ms(2100), &format!("Rolling back: {reason}")),
                grow(Side::Old, 4),
            ]
        );
        let answer = feed(&mut r, ms(2200), Event::Grown);
        assert_eq!(answer[1], shrink(Side::New, 0));
        assert_eq!(
            feed(&mut r, ms(2300), Event::Drained),
            [rolled_back(reason)]
        );
    }

    #[test]
    fn a_failed_growth_of_the_old_fleet_moves_on_and_the_next_batch_grows_it_again() {
        let mut r = rolling_quarters(
            r#", "RollbackMaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 1}"#,
            2,
        );
        assert_eq!(feed(&mut r, ms(3000), firing())[2], grow(Side::Old, 3));
        assert_eq!(
            feed(&mut r, ms(3100), Event::GrowFailed("out of memory".into())),
            [
                rolling_back(
                    2,
                    0.25,
                    ms(3000),
                    "Rolling back: 25% of traffic on the new fleet"
                ),
                shrink(Side::New, 1),
                // Still 2 instances: grown to the next batch's 4 directly.
                grow(Side::Old, 4),
            ]
        );
    }

    #[test]
    fn a_build_failure_keeps_the_old_config() {
        let (mut r, _) = started(CANARY, &[(V, 2)], &[(V, 4)]);
        let reason = "variant AllTraffic, model v2: the component does not load";
        assert_eq!(
            feed(&mut r, ms(700), Event::BuildFailed(reason.into())),
            [Command::Finish {
                outcome: Outcome::Failed,
                failure_reason: Some(reason.into()),
                message: format!("Deployment of v2 failed, v1 keeps serving: {reason}"),
            }]
        );
    }

    #[test]
    #[should_panic(expected = "cannot take Tick: the driver broke the protocol")]
    fn an_event_out_of_turn_is_a_broken_driver() {
        let (mut r, _) = started(CANARY, &[(V, 2)], &[(V, 4)]);
        r.next(ms(1), Event::Tick);
    }

    #[test]
    #[should_panic(expected = "cannot take Drained")]
    fn nothing_follows_the_finish() {
        let (mut r, _) = started(CANARY, &[(V, 2)], &[(V, 4)]);
        feed(&mut r, ms(1), Event::BuildFailed("no".into()));
        r.next(ms(2), Event::Drained);
    }

    #[test]
    fn outcomes() {
        assert_eq!(Outcome::Completed.as_str(), "Completed");
        assert_eq!(Outcome::RolledBack.as_str(), "RolledBack");
        assert_eq!(Outcome::Failed.as_str(), "Failed");
        assert_eq!(Outcome::Completed.serves(), Side::New);
        assert_eq!(Outcome::RolledBack.serves(), Side::Old);
        assert_eq!(Outcome::Failed.serves(), Side::Old);
    }

    #[test]
    fn percentages_in_messages() {
        assert_eq!(percent(0.25), "25");
        assert_eq!(percent(1.0), "100");
        assert_eq!(percent(0.0), "0");
        assert_eq!(percent(1.0 / 3.0), "33.3");
        assert_eq!(percent(2.0 / 3.0), "66.7");
        assert_eq!(percent(0.125), "12.5");
    }

    /// A driver over simulated pools of one variant per fleet: it carries out every command
    /// and checks, after each, what a deployment must never do.
    struct Sim {
        old: usize,
        new: usize,
        /// The most instances one step or rollback batch may add.
        batch: usize,
        now: Duration,
        published: Vec<Progress>,
    }

    impl Sim {
        /// Run `plan` from a fleet of `desired` to one of `desired`, an alarm firing at the
        /// first evaluation of step `fire_at`; the outcome.
        fn run(plan: Plan, desired: usize, fire_at: Option<usize>) -> (Self, Outcome) {
            let batch = [plan.steps[0].new_share, plan.rollback_step]
                .into_iter()
                .map(|s| split(desired, s).0)
                .max()
                .unwrap();
            let fleet = |config: &str| Fleet {
                config: config.into(),
                variants: sizes(&[(V, desired)]),
            };
            let mut r = Rollout::new(plan.clone(), fleet("v1"), fleet("v2"));
            let mut sim = Sim {
                old: desired,
                new: 0,
                batch,
                now: Duration::ZERO,
                published: Vec::new(),
            };
            let mut event = Event::Started;
            loop {
                let mut next = None;
                for command in feed(&mut r, sim.now, event) {
                    match command {
                        Command::Publish(p) => {
                            // The share never routes to instances that do not exist.
                            if p.share > 0.0 {
                                assert!(sim.new >= split(desired, p.share).0, "{p:?}");
                            }
                            assert!(sim.old >= split(desired, p.share).1, "{p:?}");
                            if let Some(end) = p.phase_end {
                                assert_eq!(
                                    end - p.phase_started,
                                    match p.phase {
                                        Phase::Baking => plan.steps[p.step - 1].bake,
                                        _ => plan.termination_wait,
                                    }
                                );
                            }
                            sim.published.push(p);
                        }
                        Command::BuildNewFleet { variants } => {
                            sim.new = variants[0].instances;
                            next = Some(Event::FleetBuilt);
                        }
                        Command::Grow {
                            fleet, instances, ..
                        } => {
                            let pool = match fleet {
                                Side::Old => &mut sim.old,
                                Side::New => &mut sim.new,
                            };
                            assert!(instances > *pool);
                            *pool = instances;
                            next = Some(Event::Grown);
                        }
                        Command::Shrink {
                            fleet, instances, ..
                        } => {
                            let pool = match fleet {
                                Side::Old => &mut sim.old,
                                Side::New => &mut sim.new,
                            };
                            assert!(instances < *pool);
                            *pool = instances;
                        }
                        Command::EvaluateAlarms { .. } => {
                            let step = sim.published.last().unwrap().step;
                            next = Some(if fire_at == Some(step) {
                                firing()
                            } else {
                                Event::AlarmsQuiet
                            });
                            sim.now += ms(1);
                        }
                        Command::WaitUntil(at) => {
                            assert!(at > sim.now);
                            sim.now = at;
                            next = Some(Event::Tick);
                        }
                        Command::RollBack { .. } => {}
                        Command::Drain { until } => {
                            assert_eq!(until, sim.now + DRAIN_LIMIT);
                            next = Some(Event::Drained);
                        }
                        Command::Finish { outcome, .. } => return (sim, outcome),
                    }
                    if plan.strategy == Strategy::Rolling {
                        // Never below the fleet's size once built, never more than a batch
                        // above it.
                        let total = sim.old + sim.new;
                        if sim.new > 0 {
                            assert!(total >= desired, "{} + {}", sim.old, sim.new);
                        }
                        assert!(total <= desired + sim.batch, "{} + {}", sim.old, sim.new);
                    }
                }
                event = next.expect("an answer that leads to an event");
            }
        }

        fn shares(&self) -> Vec<f64> {
            let mut shares: Vec<f64> = self.published.iter().map(|p| p.share).collect();
            shares.dedup();
            shares
        }
    }

    #[test]
    fn every_plan_completes_or_rolls_back_within_its_bounds() {
        let blue_green = |kind: &str, size: &str| {
            format!(
                r#"{{"BlueGreenUpdatePolicy": {{"TrafficRoutingConfiguration": {{
                    "Type": "{kind}", "WaitIntervalInSeconds": 1{size}}},
                    "TerminationWaitInSeconds": 2}}}}"#
            )
        };
        let rolling = |batch: usize, rollback: usize| {
            format!(
                r#"{{"RollingUpdatePolicy": {{
                    "MaximumBatchSize": {{"Type": "CAPACITY_PERCENT", "Value": {batch}}},
                    "RollbackMaximumBatchSize": {{"Type": "CAPACITY_PERCENT", "Value": {rollback}}},
                    "WaitIntervalInSeconds": 1}}}}"#
            )
        };
        let mut configs = vec![
            blue_green("ALL_AT_ONCE", ""),
            blue_green(
                "CANARY",
                r#", "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}"#,
            ),
            blue_green(
                "LINEAR",
                r#", "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 20}"#,
            ),
        ];
        for batch in [5, 10, 25, 34, 50] {
            for rollback in [5, 30, 50, 100] {
                configs.push(rolling(batch, rollback));
            }
        }
        let mut runs = 0;
        for json in &configs {
            for desired in 1..=12 {
                let plan = plan(json, desired);
                let steps = plan.steps.len();
                let (sim, outcome) = Sim::run(plan.clone(), desired, None);
                assert_eq!(outcome, Outcome::Completed);
                // Rolling moves the instances; blue/green leaves the old fleet to the driver.
                let rolling = plan.strategy == Strategy::Rolling;
                let untouched = if rolling { 0 } else { desired };
                assert_eq!((sim.old, sim.new), (untouched, desired), "{json} {desired}");
                let mut expected = vec![0.0];
                expected.extend(plan.steps.iter().map(|s| s.new_share));
                assert_eq!(sim.shares(), expected, "{json} {desired}");
                let bakes = sim.published.iter().filter(|p| p.phase == Phase::Baking);
                assert_eq!(bakes.count(), steps);
                for fire_at in 1..=steps {
                    let (sim, outcome) = Sim::run(plan.clone(), desired, Some(fire_at));
                    assert_eq!(outcome, Outcome::RolledBack);
                    assert_eq!((sim.old, sim.new), (desired, untouched), "{json} {desired}");
                    // Up to the step's share, then back down to 0.
                    let shares = sim.shares();
                    let top = shares
                        .iter()
                        .position(|&s| s == plan.steps[fire_at - 1].new_share)
                        .unwrap();
                    assert!(shares[..=top].windows(2).all(|w| w[0] < w[1]), "{shares:?}");
                    assert!(shares[top..].windows(2).all(|w| w[0] > w[1]), "{shares:?}");
                    assert_eq!(shares.last(), Some(&0.0));
                    runs += 1;
                }
            }
        }
        assert!(runs > 1000, "{runs}");
    }
}
