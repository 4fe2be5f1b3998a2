//! The endpoint table: an immutable snapshot of every endpoint and its variants, published
//! with arc-swap. Readers never lock; a request keeps the snapshot it started with, and a
//! new snapshot is visible to the next request. Writers (deploys, weight and capacity
//! updates) build a new snapshot and publish it with one `rcu`.

use arc_swap::ArcSwap;
use plinth_policy::config::{Deployment, Endpoint, Model, Variant};
use plinth_policy::routing::RouteError;
use plinth_runtime::{Limits, LoadError, Runtime, VariantPool, VariantSpec};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// SageMaker's endpoint states that Plinth uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndpointStatus {
    InService,
    Updating,
}

impl EndpointStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::InService => "InService",
            Self::Updating => "Updating",
        }
    }
}

/// A variant's warm pool, shared by every snapshot that routes to it.
pub(crate) struct LiveVariant {
    pub(crate) name: String,
    pub(crate) model_name: String,
    /// The model as deployed, to tell whether a new endpoint config changes it.
    pub(crate) model: Model,
    pub(crate) max_queue_length: usize,
    pub(crate) pool: Arc<VariantPool>,
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
    pub(crate) status: EndpointStatus,
    /// Why the last update failed, if it did.
    pub(crate) failure_reason: Option<String>,
    pub(crate) created: SystemTime,
    pub(crate) modified: SystemTime,
    pub(crate) variants: Vec<VariantState>,
}

impl EndpointSnapshot {
    /// Choose the variant for a request.
    pub(crate) fn route(&self, target: Option<&str>) -> Result<&Arc<LiveVariant>, RouteError> {
        let names = self.variants.iter().map(|v| v.live.name.as_str());
        let weights: Vec<f64> = self.variants.iter().map(|v| v.current_weight).collect();
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

    pub(crate) fn publish_all(&self, map: EndpointMap) {
        self.current.store(Arc::new(map));
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

/// Why an endpoint could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {error}")]
pub(crate) struct BuildError {
    context: String,
    error: Box<LoadError>,
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

/// Build (load, warm) one endpoint. Blocking.
pub(crate) fn build_endpoint(
    runtime: &Runtime,
    endpoint: &Endpoint,
) -> Result<EndpointSnapshot, BuildError> {
    let mut variants = Vec::new();
    for variant in &endpoint.variants {
        let pool =
            VariantPool::new(runtime, &variant_spec(&endpoint.name, variant)).map_err(|error| {
                BuildError {
                    context: format!(
                        "endpoint {:?}, variant {:?}, model {:?}",
                        endpoint.name, variant.name, variant.model.name
                    ),
                    error: Box::new(error),
                }
            })?;
        variants.push(VariantState {
            live: Arc::new(LiveVariant {
                name: variant.name.clone(),
                model_name: variant.model.name.clone(),
                model: variant.model.clone(),
                max_queue_length: variant.max_queue_length,
                pool: Arc::new(pool),
            }),
            current_weight: variant.weight,
            desired_weight: variant.weight,
            desired_instance_count: variant.instance_count,
        });
    }
    let now = SystemTime::now();
    Ok(EndpointSnapshot {
        name: endpoint.name.clone(),
        config_name: endpoint.config_name.clone(),
        status: EndpointStatus::InService,
        failure_reason: None,
        created: now,
        modified: now,
        variants,
    })
}

/// Build every endpoint of a deployment. Blocking.
pub(crate) fn build_all(
    runtime: &Runtime,
    deployment: &Deployment,
) -> Result<EndpointMap, BuildError> {
    let mut map = EndpointMap::new();
    for endpoint in &deployment.endpoints {
        let started = std::time::Instant::now();
        let snapshot = build_endpoint(runtime, endpoint)?;
        tracing::info!(
            endpoint = %endpoint.name,
            variants = snapshot.variants.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "endpoint InService"
        );
        map.insert(endpoint.name.clone(), Arc::new(snapshot));
    }
    Ok(map)
}
