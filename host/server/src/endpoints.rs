//! The endpoint table: an immutable snapshot of every endpoint and its variants, published
//! with arc-swap. Readers never lock; a request keeps the snapshot it started with, and a
//! new snapshot is visible to the next request. Writers (deploys, weight and capacity
//! updates) build a new snapshot and publish it with one `rcu`.

use crate::store::{EndpointRecord, VariantCapacity};
use arc_swap::ArcSwap;
use plinth_policy::config::{Model, Variant};
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
    Failed,
}

impl EndpointStatus {
    pub(crate) const ALL: [Self; 4] = [
        Self::Creating,
        Self::InService,
        Self::Updating,
        Self::Failed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "Creating",
            Self::InService => "InService",
            Self::Updating => "Updating",
            Self::Failed => "Failed",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// A change is under way (the endpoint refuses another).
    pub(crate) fn in_progress(self) -> bool {
        matches!(self, Self::Creating | Self::Updating)
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
    pub(crate) model_name: String,
    /// The model as deployed, to tell whether a new endpoint config changes it.
    pub(crate) model: Model,
    pub(crate) max_queue_length: usize,
    pub(crate) pool: Arc<VariantPool>,
    /// Its request metrics, resolved once.
    pub(crate) metrics: crate::metrics::VariantMetrics,
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
        }
    }

    /// Choose the variant for a request: the target variant if one is named; else, with an
    /// assignment key, the variant consistent hashing over the current weights gives that
    /// key; else by the experiment's bandit shares when it has them; else by weight.
    pub(crate) fn route(
        &self,
        target: Option<&str>,
        assignment_key: Option<&str>,
    ) -> Result<&Arc<LiveVariant>, RouteError> {
        let names = self.variants.iter().map(|v| v.live.name.as_str());
        let weights: Vec<f64> = self.variants.iter().map(|v| v.current_weight).collect();
        if target.is_none() {
            let sticky = assignment_key.and_then(|key| {
                let names: Vec<&str> = names.clone().collect();
                plinth_policy::sticky::assign(key, &names, &weights)
            });
            let bandit = || {
                let shares = self.experiment.as_ref()?.shares()?;
                plinth_policy::routing::pick_weighted(&shares, rand::random())
            };
            if let Some(index) = sticky.or_else(bandit) {
                return Ok(&self.variants[index].live);
            }
        }
        let index = plinth_policy::routing::choose(names, &weights, target, rand::random())?;
        Ok(&self.variants[index].live)
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
        },
    }
}
