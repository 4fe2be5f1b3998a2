//! A/B experiments on endpoints (an endpoint config's `PlinthExperiment`): the ledger of
//! which variant served each inference id (bounded, with a retention period, flushed to the
//! store), outcomes attributed to the variant that served them, per-variant statistics with
//! always-valid comparisons against the control, bandit traffic shares recomputed off the
//! request path and published as a snapshot, and the automatic actions on a verdict.

use crate::state::catalog::ExperimentConfig;
use crate::state::now;
use crate::state::store::{ArmRow, Served, Store};
use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use plinth_policy::ab_test::{
    self, Arm, AutoAction, Comparison, Metric, Monitor, SequentialConfig, Standing, Verdict,
};
use plinth_policy::bandit;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The most inference ids tracked at once, all experiments together; beyond it the oldest
/// are forgotten.
pub(crate) const MAX_TRACKED: usize = 1_000_000;

/// Why an outcome was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Rejection {
    /// No experiment served this id (never, or forgotten long ago).
    Unknown,
    /// Served, but the outcome came after the retention period.
    Expired,
    /// An outcome for this id was already recorded.
    Duplicate,
    /// Served under an endpoint config the endpoint no longer serves.
    Late,
    /// Not a valid outcome for the experiment's metric.
    Invalid,
}

impl Rejection {
    pub(crate) const ALL: [Self; 5] = [
        Self::Unknown,
        Self::Expired,
        Self::Duplicate,
        Self::Late,
        Self::Invalid,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Expired => "Expired",
            Self::Duplicate => "Duplicate",
            Self::Late => "Late",
            Self::Invalid => "Invalid",
        }
    }
}

/// One variant's counts.
#[derive(Debug, Clone, Copy, Default)]
struct ArmState {
    /// Successful invocations.
    invocations: u64,
    /// Failed invocations.
    errors: u64,
    /// Model latency summed over the successful invocations, in seconds.
    latency_sum: f64,
    outcomes: Arm,
}

/// One experiment: an endpoint serving one endpoint config that has a `PlinthExperiment`.
pub(crate) struct Experiment {
    pub(crate) endpoint: String,
    pub(crate) config_name: String,
    pub(crate) config: ExperimentConfig,
    pub(crate) variants: Vec<String>,
    arms: Mutex<Vec<ArmState>>,
    /// Per variant, the running minimum of the sequential p-value over every look and the
    /// first decisive verdict (what makes looking early safe).
    monitors: Mutex<Vec<Monitor>>,
    /// Bandit traffic shares, in `variants` order; `None` for static routing.
    shares: ArcSwapOption<Vec<f64>>,
    /// The automatic action has been taken.
    acted: AtomicBool,
    rejected: [AtomicU64; 5],
}

impl Experiment {
    /// The published bandit shares, if this experiment routes by a bandit.
    pub(crate) fn shares(&self) -> Option<Arc<Vec<f64>>> {
        self.shares.load_full()
    }

    /// The assignment key in `custom_attributes`, when the experiment takes it from there
    /// ([`plinth_policy::sticky::key_in_attributes`]).
    pub(crate) fn assignment_key<'a>(&self, custom_attributes: Option<&'a str>) -> Option<&'a str> {
        let name = self.config.assignment_attribute.as_deref()?;
        plinth_policy::sticky::key_in_attributes(custom_attributes?, name)
    }

    fn index(&self, variant: &str) -> Option<usize> {
        self.variants.iter().position(|v| v == variant)
    }

    fn arms(&self) -> Vec<ArmState> {
        self.arms.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn rows(&self) -> Vec<ArmRow> {
        self.arms()
            .iter()
            .zip(&self.variants)
            .map(|(a, v)| ArmRow {
                endpoint: self.endpoint.clone(),
                config: self.config_name.clone(),
                variant: v.clone(),
                invocations: a.invocations,
                errors: a.errors,
                latency_sum: a.latency_sum,
                n: a.outcomes.n,
                sum: a.outcomes.sum,
                sum_sq: a.outcomes.sum_sq,
            })
            .collect()
    }

    fn sequential(&self) -> SequentialConfig {
        SequentialConfig {
            alpha: 1.0 - self.config.confidence,
            ..SequentialConfig::default()
        }
    }

    /// One look at the experiment: the arms, each treatment against the control (`None` for
    /// the control and where there is too little data), and the monitors updated with this
    /// look.
    fn look(&self) -> (Vec<ArmState>, Vec<Option<Comparison>>, Vec<Monitor>) {
        let arms = self.arms();
        let comparisons = self.comparisons(&arms);
        let mut monitors = self.monitors.lock().unwrap_or_else(|e| e.into_inner());
        for (m, c) in monitors.iter_mut().zip(&comparisons) {
            if let Some(c) = c {
                m.observe(c);
            }
        }
        (arms, comparisons, monitors.clone())
    }

    fn comparisons(&self, arms: &[ArmState]) -> Vec<Option<Comparison>> {
        let control = self.index(&self.config.control_variant).unwrap_or(0);
        let sequential = self.sequential();
        arms.iter()
            .enumerate()
            .map(|(i, a)| {
                (i != control).then(|| {
                    ab_test::compare(
                        &arms[control].outcomes,
                        &a.outcomes,
                        self.config.metric,
                        &sequential,
                    )
                })?
            })
            .collect()
    }

    /// Recompute the bandit shares from the outcomes so far.
    fn update_shares(&self, rng: &mut impl rand::Rng) {
        let Some(strategy) = self.config.bandit() else {
            return;
        };
        let outcomes: Vec<Arm> = self.arms().iter().map(|a| a.outcomes).collect();
        let shares = bandit::shares(
            strategy,
            self.config.metric,
            &outcomes,
            self.config.min_share,
            rng,
        );
        self.shares.store(Some(Arc::new(shares)));
    }

    /// The experiment as the policy's automatic action and advice see it.
    fn standing<'a>(
        &'a self,
        comparisons: &'a [Option<Comparison>],
        monitors: &'a [Monitor],
    ) -> Standing<'a> {
        Standing {
            variants: &self.variants,
            control: &self.config.control_variant,
            confidence: self.config.confidence,
            comparisons,
            monitors,
        }
    }

    /// The weights the automatic action wants, once, if a verdict calls for one
    /// ([`ab_test::auto_action`]).
    pub(crate) fn action(&self) -> Option<(Vec<f64>, String)> {
        if self.config.auto_action == AutoAction::None
            || self.config.bandit().is_some()
            || self.acted.load(Ordering::Relaxed)
        {
            return None;
        }
        let (_, comparisons, monitors) = self.look();
        let action = ab_test::auto_action(
            self.config.auto_action,
            &self.standing(&comparisons, &monitors),
        )?;
        self.acted.store(true, Ordering::Relaxed);
        Some((action.weights, action.reason))
    }

    /// DescribeExperiment's output; `weights` are the variants' current routing weights.
    pub(crate) fn report(&self, weights: &[f64]) -> Value {
        let (arms, comparisons, monitors) = self.look();
        let shares = self.shares();
        let total: f64 = weights.iter().sum();
        let variants: Vec<Value> = self
            .variants
            .iter()
            .zip(&arms)
            .enumerate()
            .map(|(i, (name, a))| {
                let share = match &shares {
                    Some(s) => s.get(i).copied().unwrap_or(0.0),
                    None if total > 0.0 => weights.get(i).copied().unwrap_or(0.0) / total,
                    None => 0.0,
                };
                let attempts = a.invocations + a.errors;
                let mut v = json!({
                    "VariantName": name,
                    "Invocations": a.invocations,
                    "Errors": a.errors,
                    "ErrorRate": if attempts > 0 { a.errors as f64 / attempts as f64 } else { 0.0 },
                    "Outcomes": a.outcomes.n,
                    "TrafficShare": share,
                });
                if a.invocations > 0 {
                    v["MeanModelLatencyMs"] = json!(a.latency_sum / a.invocations as f64 * 1e3);
                }
                if let Some(mean) = a.outcomes.mean() {
                    v["Mean"] = json!(mean);
                }
                if let Some((lo, hi)) =
                    a.outcomes
                        .interval(self.config.metric, self.config.confidence)
                {
                    v["Interval"] = json!([lo, hi]);
                }
                if let Some(c) = &comparisons[i] {
                    v["Comparison"] = json!({
                        "Difference": c.difference,
                        "Sequential": {
                            "PValue": monitors[i].p_value,
                            "ThisLookPValue": c.sequential.p_value,
                            "Interval": [c.sequential.interval.0, c.sequential.interval.1],
                            "Looks": monitors[i].looks,
                        },
                        "FixedHorizon": {"PValue": c.fixed_horizon.p_value, "Interval": [c.fixed_horizon.interval.0, c.fixed_horizon.interval.1]},
                    });
                }
                v["Verdict"] = json!(if *name == self.config.control_variant {
                    "Control"
                } else {
                    match monitors[i].verdict {
                        Verdict::Better => "Better",
                        Verdict::Worse => "Worse",
                        Verdict::NotYetKnown => "NotYetKnown",
                    }
                });
                v
            })
            .collect();
        let rejected: serde_json::Map<String, Value> = Rejection::ALL
            .iter()
            .zip(&self.rejected)
            .map(|(r, n)| (r.as_str().to_string(), json!(n.load(Ordering::Relaxed))))
            .collect();
        json!({
            "EndpointName": self.endpoint,
            "EndpointConfigName": self.config_name,
            "Experiment": self.config,
            "Variants": variants,
            "RecommendedAction": ab_test::recommendation(&self.standing(&comparisons, &monitors), self.acted.load(Ordering::Relaxed)),
            "RejectedOutcomes": rejected,
        })
    }
}

/// One tracked inference.
#[derive(Debug, Clone)]
struct Entry {
    config: String,
    variant: String,
    served: f64,
    expires: f64,
    outcome: bool,
}

/// What the next flush writes.
#[derive(Default)]
struct Pending {
    served: Vec<Served>,
    outcomes: Vec<(String, String)>,
}

/// Every experiment and the ledger.
pub(crate) struct Experiments {
    ledger: DashMap<(String, String), Entry>,
    /// Ledger keys by age, to forget the oldest past [`MAX_TRACKED`].
    order: Mutex<VecDeque<(String, String)>>,
    pending: Mutex<Pending>,
    /// Every experiment started since this process began, by (endpoint, config).
    live: Mutex<HashMap<(String, String), Arc<Experiment>>>,
    /// Arms as stored at start, to restore experiments from.
    stored: Mutex<HashMap<(String, String, String), ArmRow>>,
    /// Something changed since the last flush.
    dirty: AtomicBool,
    /// Held for a whole flush: whoever gets it next finds everything gathered before it
    /// either written or in its own batch.
    flushing: Mutex<()>,
}

impl Experiments {
    /// The ledger and arms as stored.
    pub(crate) fn load(store: &Store) -> anyhow::Result<Self> {
        let ledger = DashMap::new();
        let mut order = VecDeque::new();
        for s in store.load_inferences()? {
            let key = (s.endpoint, s.id);
            order.push_back(key.clone());
            ledger.insert(
                key,
                Entry {
                    config: s.config,
                    variant: s.variant,
                    served: s.served,
                    expires: s.expires,
                    outcome: s.outcome,
                },
            );
        }
        let stored = store
            .load_arms()?
            .into_iter()
            .map(|a| ((a.endpoint.clone(), a.config.clone(), a.variant.clone()), a))
            .collect();
        Ok(Self {
            ledger,
            order: Mutex::new(order),
            pending: Mutex::default(),
            live: Mutex::default(),
            stored: Mutex::new(stored),
            // Expired entries loaded from the store are dropped by the first flush.
            dirty: AtomicBool::new(true),
            flushing: Mutex::default(),
        })
    }

    /// The experiment of `endpoint` serving `config_name`, resumed where it was.
    pub(crate) fn start(
        &self,
        endpoint: &str,
        config_name: &str,
        config: ExperimentConfig,
        variants: Vec<String>,
    ) -> Arc<Experiment> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let key = (endpoint.to_string(), config_name.to_string());
        if let Some(e) = live.get(&key).filter(|e| e.variants == variants) {
            return e.clone();
        }
        let stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
        let arms = variants
            .iter()
            .map(|v| {
                stored
                    .get(&(endpoint.to_string(), config_name.to_string(), v.clone()))
                    .map(|a| ArmState {
                        invocations: a.invocations,
                        errors: a.errors,
                        latency_sum: a.latency_sum,
                        outcomes: Arm {
                            n: a.n,
                            sum: a.sum,
                            sum_sq: a.sum_sq,
                        },
                    })
                    .unwrap_or_default()
            })
            .collect();
        let monitors = Mutex::new(vec![Monitor::default(); variants.len()]);
        let experiment = Arc::new(Experiment {
            monitors,
            endpoint: endpoint.to_string(),
            config_name: config_name.to_string(),
            config,
            variants,
            arms: Mutex::new(arms),
            shares: ArcSwapOption::empty(),
            acted: AtomicBool::new(false),
            rejected: Default::default(),
        });
        experiment.update_shares(&mut rand::rng());
        live.insert(key, experiment.clone());
        experiment
    }

    /// A request to `experiment` routed to `variant` failed.
    pub(crate) fn failed(&self, experiment: &Experiment, variant: &str) {
        if let Some(i) = experiment.index(variant) {
            experiment.arms.lock().unwrap_or_else(|e| e.into_inner())[i].errors += 1;
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// A request to `experiment` was served by `variant` under `inference_id`, with
    /// `model_latency`.
    pub(crate) fn served(
        &self,
        experiment: &Experiment,
        variant: &str,
        inference_id: &str,
        model_latency: std::time::Duration,
    ) {
        let Some(i) = experiment.index(variant) else {
            return;
        };
        {
            let mut arms = experiment.arms.lock().unwrap_or_else(|e| e.into_inner());
            arms[i].invocations += 1;
            arms[i].latency_sum += model_latency.as_secs_f64();
        }
        let served = now();
        let expires = served + experiment.config.outcome_retention_seconds as f64;
        let key = (experiment.endpoint.clone(), inference_id.to_string());
        self.ledger.insert(
            key.clone(),
            Entry {
                config: experiment.config_name.clone(),
                variant: variant.to_string(),
                served,
                expires,
                outcome: false,
            },
        );
        let forgotten = {
            let mut order = self.order.lock().unwrap_or_else(|e| e.into_inner());
            order.push_back(key.clone());
            if order.len() > MAX_TRACKED {
                order.pop_front()
            } else {
                None
            }
        };
        if let Some(old) = forgotten {
            self.ledger.remove(&old);
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .served
            .push(Served {
                endpoint: key.0,
                id: key.1,
                config: experiment.config_name.clone(),
                variant: variant.to_string(),
                served,
                expires,
                outcome: false,
            });
        // After the push, so that a flush that clears the flag also takes the entry.
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Record an outcome for `inference_id` of `endpoint`, whose current experiment is
    /// `current`; gives the variant it was attributed to.
    pub(crate) fn outcome(
        &self,
        endpoint: &str,
        current: Option<&Arc<Experiment>>,
        inference_id: &str,
        value: f64,
    ) -> Result<String, Rejection> {
        let result = self.attribute(endpoint, current, inference_id, value);
        if let (Err(r), Some(e)) = (&result, current) {
            let i = Rejection::ALL.iter().position(|x| x == r).unwrap_or(0);
            e.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn attribute(
        &self,
        endpoint: &str,
        current: Option<&Arc<Experiment>>,
        inference_id: &str,
        value: f64,
    ) -> Result<String, Rejection> {
        let key = (endpoint.to_string(), inference_id.to_string());
        let mut entry = self.ledger.get_mut(&key).ok_or(Rejection::Unknown)?;
        if now() > entry.expires {
            return Err(Rejection::Expired);
        }
        if entry.outcome {
            return Err(Rejection::Duplicate);
        }
        let experiment = current
            .filter(|e| e.config_name == entry.config)
            .ok_or(Rejection::Late)?;
        let valid = match experiment.config.metric {
            Metric::Binary => value == 0.0 || value == 1.0,
            Metric::Numeric => value.is_finite(),
        };
        if !valid {
            return Err(Rejection::Invalid);
        }
        let i = experiment.index(&entry.variant).ok_or(Rejection::Late)?;
        experiment.arms.lock().unwrap_or_else(|e| e.into_inner())[i]
            .outcomes
            .record(value);
        entry.outcome = true;
        let variant = entry.variant.clone();
        drop(entry);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .outcomes
            .push(key);
        self.dirty.store(true, Ordering::Relaxed);
        Ok(variant)
    }

    /// Every experiment started since this process began.
    fn all(&self) -> Vec<Arc<Experiment>> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Write what was gathered since the last flush (nothing when nothing changed), and
    /// forget entries whose tombstone time has passed. When it returns `Ok`, everything
    /// gathered before the call is in the store (committed and synced): flushes are one at a
    /// time, so data an earlier flush took is written by then. On an error nothing is lost:
    /// the batch goes back for the next flush.
    pub(crate) fn flush(&self, store: &Store) -> Result<(), String> {
        let _one_at_a_time = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let experiments = self.all();
        let arms: Vec<ArmRow> = experiments.iter().flat_map(|e| e.rows()).collect();
        let t = now();
        if let Err(e) = store.flush_experiments(&pending.served, &pending.outcomes, &arms, t) {
            tracing::error!(error = %e, "cannot write the experiments' ledger; will retry");
            let mut back = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let newer = std::mem::replace(&mut *back, pending);
            back.served.extend(newer.served);
            back.outcomes.extend(newer.outcomes);
            self.dirty.store(true, Ordering::SeqCst);
            return Err(format!("cannot write the experiments' ledger: {e}"));
        }
        self.ledger
            .retain(|_, entry| 2.0 * entry.expires - entry.served >= t);
        Ok(())
    }

    /// Off the request path, every second: new bandit shares, and automatic actions due.
    pub(crate) fn tick(&self) -> Vec<(Arc<Experiment>, Vec<f64>, String)> {
        let experiments = self.all();
        let mut rng = rand::rng();
        let mut actions = Vec::new();
        for e in experiments {
            e.update_shares(&mut rng);
            if let Some((weights, why)) = e.action() {
                actions.push((e, weights, why));
            }
        }
        actions
    }
}
