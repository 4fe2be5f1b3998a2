//! The endpoint table: an immutable snapshot of every endpoint and its variants, published
//! with arc-swap. Readers never lock; a request keeps the snapshot it started with, and a
//! new snapshot is visible to the next request.

use arc_swap::ArcSwap;
use plinth_policy::config::{Deployment, Endpoint, Variant};
use plinth_runtime::{Limits, LoadError, Runtime, VariantPool, VariantSpec};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A variant that is serving.
pub(crate) struct LiveVariant {
    pub(crate) name: String,
    pub(crate) weight: f64,
    pub(crate) pool: VariantPool,
}

/// One endpoint, as of one configuration.
pub(crate) struct EndpointSnapshot {
    pub(crate) name: String,
    pub(crate) variants: Vec<Arc<LiveVariant>>,
    weights: Vec<f64>,
}

impl EndpointSnapshot {
    /// Choose the variant for a request.
    pub(crate) fn route(
        &self,
        target: Option<&str>,
    ) -> Result<&Arc<LiveVariant>, plinth_policy::routing::RouteError> {
        let names = self.variants.iter().map(|v| v.name.as_str());
        let index = plinth_policy::routing::choose(names, &self.weights, target, rand::random())?;
        Ok(&self.variants[index])
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

    pub(crate) fn publish(&self, map: EndpointMap) {
        self.current.store(Arc::new(map));
    }

    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.current.load().keys().cloned().collect();
        names.sort();
        names
    }
}

/// Why an endpoint could not be built.
#[derive(Debug, thiserror::Error)]
#[error("endpoint {endpoint:?}, variant {variant:?}, model {model:?}: {source}")]
pub(crate) struct BuildError {
    endpoint: String,
    variant: String,
    model: String,
    source: LoadError,
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
        limits: Limits {
            memory_bytes: model.memory_bytes,
            deadline: Duration::from_secs(model.timeout_seconds),
            ..Limits::default()
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
        let pool = VariantPool::new(runtime, &variant_spec(&endpoint.name, variant)).map_err(
            |source| BuildError {
                endpoint: endpoint.name.clone(),
                variant: variant.name.clone(),
                model: variant.model.name.clone(),
                source,
            },
        )?;
        variants.push(Arc::new(LiveVariant {
            name: variant.name.clone(),
            weight: variant.weight,
            pool,
        }));
    }
    let weights = variants.iter().map(|v| v.weight).collect();
    Ok(EndpointSnapshot {
        name: endpoint.name.clone(),
        variants,
        weights,
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
