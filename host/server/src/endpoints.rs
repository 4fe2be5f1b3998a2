//! The endpoint table: an immutable snapshot of every endpoint and its variants, published
//! with arc-swap. Readers never lock; a request keeps the snapshot it started with, and a
//! new snapshot is visible to the next request. Writers (deploys, weight and capacity
//! updates) build a new snapshot and publish it with one `rcu`.

use crate::store::{EndpointRecord, VariantCapacity};
use arc_swap::ArcSwap;
use plinth_policy::config::{Model, Variant};
use plinth_policy::rollout::{DeploymentConfig, Strategy};
use plinth_policy::routing::RouteError;
use plinth_runtime::{Limits, VariantPool, VariantSpec};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// SageMaker's endpoint states that Plinth uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndpointStatus {
    Creating,
    InService,
    Updating,
    RollingBack,
    Failed,
}

impl EndpointStatus {
    pub(crate) const ALL: [Self; 5] = [
        Self::Creating,
        Self::InService,
        Self::Updating,
        Self::RollingBack,
        Self::Failed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "Creating",
            Self::InService => "InService",
            Self::Updating => "Updating",
            Self::RollingBack => "RollingBack",
            Self::Failed => "Failed",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// A change is under way (the endpoint refuses another).
    pub(crate) fn in_progress(self) -> bool {
        matches!(self, Self::Creating | Self::Updating | Self::RollingBack)
    }
}

/// Now, in epoch seconds to the millisecond (SageMaker's timestamps).
pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as f64 / 1000.0)
        .unwrap_or(0.0)
}

/// A variant's warm pool, shared by every snapshot that routes to it.
pub(crate) struct LiveVariant {
    pub(crate) name: String,
    /// `name` as the value of a response's `x-Amzn-Invoked-Production-Variant`, made once.
    pub(crate) name_header: axum::http::HeaderValue,
    pub(crate) model_name: String,
    /// The model as deployed, to tell whether a new endpoint config changes it.
    pub(crate) model: Model,
    pub(crate) max_queue_length: usize,
    pub(crate) max_batch_size: usize,
    pub(crate) pool: Arc<VariantPool>,
    /// Its request metrics, resolved once.
    pub(crate) metrics: crate::metrics::VariantMetrics,
    /// Its recent requests, for alarms.
    pub(crate) recent: plinth_policy::alarm::Window,
}

/// A variant as one snapshot sees it.
#[derive(Clone)]
pub(crate) struct VariantState {
    pub(crate) live: Arc<LiveVariant>,
    /// The weight requests are routed by now.
    pub(crate) current_weight: f64,
    /// The weight an update in progress is moving to.
    pub(crate) desired_weight: f64,
    /// The instance count an update in progress is moving to.
    pub(crate) desired_instance_count: usize,
}

/// One endpoint, as of one moment.
#[derive(Clone)]
pub(crate) struct EndpointSnapshot {
    pub(crate) name: String,
    pub(crate) config_name: String,
    /// The config an update in progress moves to.
    pub(crate) pending_config: Option<String>,
    pub(crate) status: EndpointStatus,
    /// Why the last change failed, if it did.
    pub(crate) failure_reason: Option<String>,
    /// Epoch seconds.
    pub(crate) created: f64,
    pub(crate) modified: f64,
    /// Empty until the endpoint is first `InService`, and when `Failed`.
    pub(crate) variants: Vec<VariantState>,
    /// The A/B experiment of the config it serves, if that config has one.
    pub(crate) experiment: Option<Arc<crate::experiments::Experiment>>,
    /// The shadow variants of the config it serves.
    pub(crate) shadows: Vec<Arc<crate::shadows::Shadow>>,
    /// The fleet a blue/green deployment in progress is moving to.
    pub(crate) new_fleet: Option<Arc<NewFleet>>,
    /// The `DeploymentConfig` of the last CreateEndpoint or UpdateEndpoint that gave one
    /// (SageMaker's `LastDeploymentConfig`; `RetainDeploymentConfig` reuses it).
    pub(crate) deployment_config: Option<DeploymentConfig>,
}

/// The fleet a deployment moves traffic to, and how far it has got.
#[derive(Clone)]
pub(crate) struct NewFleet {
    pub(crate) config_name: String,
    /// Empty while it is being built.
    pub(crate) variants: Vec<VariantState>,
    pub(crate) experiment: Option<Arc<crate::experiments::Experiment>>,
    /// The new config's shadows: they get copies of the requests this fleet serves.
    pub(crate) shadows: Vec<Arc<crate::shadows::Shadow>>,
    /// The fraction of requests it receives.
    pub(crate) share: f64,
    pub(crate) strategy: Strategy,
    /// 1-based; 0 while it is being built.
    pub(crate) step: usize,
    pub(crate) steps: usize,
    pub(crate) phase: Phase,
    /// Epoch seconds.
    pub(crate) started: f64,
    pub(crate) phase_started: f64,
    /// When the current bake or termination wait ends.
    pub(crate) phase_end: Option<f64>,
}

/// Where a deployment is (SageMaker's `VariantStatus`, plus the wait before the old fleet
/// is released).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Creating,
    ActivatingTraffic,
    Baking,
    Terminating,
    RollingBack,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Creating => "Creating",
            Phase::ActivatingTraffic => "ActivatingTraffic",
            Phase::Baking => "Baking",
            Phase::Terminating => "Terminating",
            Phase::RollingBack => "RollingBack",
        }
    }
}

/// Where [`EndpointSnapshot::route`] sent a request.
pub(crate) struct Routed<'a> {
    pub(crate) variant: &'a Arc<LiveVariant>,
    /// The endpoint config of the fleet that serves it.
    pub(crate) config_name: &'a str,
    pub(crate) experiment: Option<&'a Arc<crate::experiments::Experiment>>,
    /// The shadows of that fleet's config, which get a copy of the request.
    pub(crate) shadows: &'a [Arc<crate::shadows::Shadow>],
}

impl EndpointSnapshot {
    /// What the store keeps of this snapshot.
    pub(crate) fn record(&self) -> EndpointRecord {
        EndpointRecord {
            name: self.name.clone(),
            config_name: self.config_name.clone(),
            pending_config: self.pending_config.clone(),
            status: self.status.as_str().to_string(),
            failure_reason: self.failure_reason.clone(),
            created: self.created,
            modified: self.modified,
            capacities: self
                .variants
                .iter()
                .map(|v| VariantCapacity {
                    variant: v.live.name.clone(),
                    weight: v.desired_weight,
                    instance_count: v.desired_instance_count,
                })
                .collect(),
            deployment_config: self.deployment_config.clone(),
        }
    }

    /// Choose the variant for a request. During a deployment the fleet comes first: the new
    /// one takes its share of requests (by the assignment key when there is one, so a key
    /// stays on one fleet; a target variant only one fleet has goes there). Within a fleet:
    /// the target variant if one is named; else, with an assignment key, the variant
    /// consistent hashing over the current weights gives that key; else by the experiment's
    /// bandit shares when it has them; else by weight.
    pub(crate) fn route(
        &self,
        target: Option<&str>,
        assignment_key: Option<&str>,
    ) -> Result<Routed<'_>, RouteError> {
        if let Some(new) = self.new_fleet.as_deref().filter(|n| !n.variants.is_empty()) {
            let has =
                |variants: &[VariantState], t: &str| variants.iter().any(|v| v.live.name == t);
            let to_new = match target {
                Some(t) if !has(&self.variants, t) => has(&new.variants, t),
                Some(t) if !has(&new.variants, t) => false,
                _ => match assignment_key {
                    Some(key) => {
                        plinth_policy::sticky::assign(
                            key,
                            &["current", "new"],
                            &[1.0 - new.share, new.share],
                        ) == Some(1)
                    }
                    None => rand::random::<f64>() < new.share,
                },
            };
            if to_new {
                let variant = route_fleet(
                    &new.variants,
                    new.experiment.as_ref(),
                    target,
                    assignment_key,
                )?;
                return Ok(Routed {
                    variant,
                    config_name: &new.config_name,
                    experiment: new.experiment.as_ref(),
                    shadows: &new.shadows,
                });
            }
        }
        let variant = route_fleet(
            &self.variants,
            self.experiment.as_ref(),
            target,
            assignment_key,
        )?;
        Ok(Routed {
            variant,
            config_name: &self.config_name,
            experiment: self.experiment.as_ref(),
            shadows: &self.shadows,
        })
    }

    /// Every variant that serves requests now, in both fleets during a deployment.
    pub(crate) fn serving(&self) -> impl Iterator<Item = &VariantState> {
        self.variants
            .iter()
            .chain(self.new_fleet.iter().flat_map(|n| n.variants.iter()))
    }
}

/// Choose a variant within one fleet (see [`EndpointSnapshot::route`]).
fn route_fleet<'a>(
    variants: &'a [VariantState],
    experiment: Option<&Arc<crate::experiments::Experiment>>,
    target: Option<&str>,
    assignment_key: Option<&str>,
) -> Result<&'a Arc<LiveVariant>, RouteError> {
    let names = variants.iter().map(|v| v.live.name.as_str());
    let weights: Vec<f64> = variants.iter().map(|v| v.current_weight).collect();
    if target.is_none() {
        let sticky = assignment_key.and_then(|key| {
            let names: Vec<&str> = names.clone().collect();
            plinth_policy::sticky::assign(key, &names, &weights)
        });
        let bandit = || {
            let shares = experiment?.shares()?;
            plinth_policy::routing::pick_weighted(&shares, rand::random())
        };
        if let Some(index) = sticky.or_else(bandit) {
            return Ok(&variants[index].live);
        }
    }
    let index = plinth_policy::routing::choose(names, &weights, target, rand::random())?;
    Ok(&variants[index].live)
}

/// Every endpoint, by name.
pub(crate) type EndpointMap = HashMap<String, Arc<EndpointSnapshot>>;

/// The published table.
#[derive(Default)]
pub(crate) struct EndpointTable {
    current: ArcSwap<EndpointMap>,
}

impl EndpointTable {
    pub(crate) fn get(&self, name: &str) -> Option<Arc<EndpointSnapshot>> {
        self.current.load().get(name).cloned()
    }

    pub(crate) fn all(&self) -> Arc<EndpointMap> {
        self.current.load_full()
    }

    /// Take an endpoint out of the table; requests that already hold it finish.
    pub(crate) fn remove(&self, name: &str) {
        self.current.rcu(|map| {
            let mut next = EndpointMap::clone(map);
            next.remove(name);
            next
        });
    }

    /// Publish a new version of one endpoint.
    pub(crate) fn publish(&self, snapshot: EndpointSnapshot) {
        let snapshot = Arc::new(snapshot);
        self.current.rcu(|map| {
            let mut next = EndpointMap::clone(map);
            next.insert(snapshot.name.clone(), snapshot.clone());
            next
        });
    }

    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.current.load().keys().cloned().collect();
        names.sort();
        names
    }
}

/// The runtime spec for one variant of an endpoint.
pub(crate) fn variant_spec(endpoint: &str, variant: &Variant) -> VariantSpec {
    let model = &variant.model;
    VariantSpec {
        endpoint: endpoint.to_string(),
        variant: variant.name.clone(),
        component: model.component.clone(),
        model_dir: model.model_data.clone(),
        environment: model.environment.clone(),
        instance_count: variant.instance_count,
        routing: variant.routing_strategy,
        limits: Limits {
            memory_bytes: model.memory_bytes,
            deadline: Duration::from_secs(model.timeout_seconds),
            max_queue: variant.max_queue_length,
            max_batch: variant.max_batch_size,
        },
        backend: model.backend,
    }
}
