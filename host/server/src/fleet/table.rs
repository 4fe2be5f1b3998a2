//! The endpoint table: an immutable snapshot of every endpoint and its variants, published
//! with arc-swap. Readers never lock; a request keeps the snapshot it started with, and a
//! new snapshot is visible to the next request. Writers (deploys, weight and capacity
//! updates) build a new snapshot and publish it with one `rcu`.

use super::variant::LiveVariant;
use crate::state::store::{EndpointRecord, VariantCapacity};
use arc_swap::ArcSwap;
use plinth_policy::rollout::{DeploymentConfig, Strategy};
use plinth_policy::routing::{self, Candidate, Deploying, FleetView, RouteError};
use std::collections::HashMap;
use std::sync::Arc;

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
    pub(crate) experiment: Option<Arc<crate::fleet::ledger::Experiment>>,
    /// The shadow variants of the config it serves.
    pub(crate) shadows: Vec<Arc<crate::fleet::shadow_copies::Shadow>>,
    /// The data capture of the config it serves, if it has a `DataCaptureConfig`.
    pub(crate) capture: Option<Arc<crate::fleet::capture::Capture>>,
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
    pub(crate) experiment: Option<Arc<crate::fleet::ledger::Experiment>>,
    /// The new config's shadows: they get copies of the requests this fleet serves.
    pub(crate) shadows: Vec<Arc<crate::fleet::shadow_copies::Shadow>>,
    /// The new config's data capture: it captures the requests this fleet serves.
    pub(crate) capture: Option<Arc<crate::fleet::capture::Capture>>,
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
    pub(crate) experiment: Option<&'a Arc<crate::fleet::ledger::Experiment>>,
    /// The shadows of that fleet's config, which get a copy of the request.
    pub(crate) shadows: &'a [Arc<crate::fleet::shadow_copies::Shadow>],
    /// That fleet's config's data capture.
    pub(crate) capture: Option<&'a Arc<crate::fleet::capture::Capture>>,
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
                    serverless: v
                        .live
                        .serving
                        .elastic()
                        .map(|e| (e.max_concurrency, e.provisioned)),
                })
                .collect(),
            deployment_config: self.deployment_config.clone(),
        }
    }

    /// Choose the fleet and variant for a request: [`plinth_policy::routing::route`] over
    /// this snapshot's fleets, with the thread's random generator.
    pub(crate) fn route(
        &self,
        target: Option<&str>,
        assignment_key: Option<&str>,
    ) -> Result<Routed<'_>, RouteError> {
        let shares = self.experiment.as_ref().and_then(|e| e.shares());
        let current = FleetView {
            variants: &self.variants,
            bandit_shares: shares.as_deref().map(Vec::as_slice),
        };
        let new_shares = self
            .new_fleet
            .as_ref()
            .and_then(|n| n.experiment.as_ref())
            .and_then(|e| e.shares());
        let new = self.new_fleet.as_deref().map(|n| Deploying {
            fleet: FleetView {
                variants: &n.variants,
                bandit_shares: new_shares.as_deref().map(Vec::as_slice),
            },
            share: n.share,
        });
        let route = routing::route(
            &current,
            new.as_ref(),
            target,
            assignment_key,
            &mut rand::rng(),
        )?;
        Ok(
            match self.new_fleet.as_deref().filter(|_| route.to_new_fleet) {
                Some(new) => Routed {
                    variant: &new.variants[route.variant].live,
                    config_name: &new.config_name,
                    experiment: new.experiment.as_ref(),
                    shadows: &new.shadows,
                    capture: new.capture.as_ref(),
                },
                None => Routed {
                    variant: &self.variants[route.variant].live,
                    config_name: &self.config_name,
                    experiment: self.experiment.as_ref(),
                    shadows: &self.shadows,
                    capture: self.capture.as_ref(),
                },
            },
        )
    }

    /// Every variant that serves requests now, in both fleets during a deployment.
    pub(crate) fn serving(&self) -> impl Iterator<Item = &VariantState> {
        self.variants
            .iter()
            .chain(self.new_fleet.iter().flat_map(|n| n.variants.iter()))
    }
}

impl Candidate for VariantState {
    fn name(&self) -> &str {
        &self.live.name
    }
    fn weight(&self) -> f64 {
        self.current_weight
    }
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
