//! Models and endpoint configs known to the server (SageMaker's CreateModel and
//! CreateEndpointConfig), whether they came from the deployment file or the API. Endpoint
//! configs are immutable once created, as in SageMaker.

use plinth_policy::config::{Deployment, EndpointConfig, Model};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// A model and when it was created.
#[derive(Clone)]
pub(crate) struct ModelRecord {
    pub(crate) model: Model,
    pub(crate) created: SystemTime,
}

/// An endpoint config and when it was created.
#[derive(Clone)]
pub(crate) struct ConfigRecord {
    pub(crate) config: EndpointConfig,
    pub(crate) created: SystemTime,
}

/// Every model and endpoint config, by name.
#[derive(Default)]
pub(crate) struct Catalog {
    pub(crate) models: BTreeMap<String, ModelRecord>,
    pub(crate) configs: BTreeMap<String, ConfigRecord>,
}

impl Catalog {
    /// The catalog a deployment file describes.
    pub(crate) fn from_deployment(deployment: &Deployment) -> Self {
        let created = SystemTime::now();
        Self {
            models: deployment
                .models
                .iter()
                .map(|m| {
                    (
                        m.name.clone(),
                        ModelRecord {
                            model: m.clone(),
                            created,
                        },
                    )
                })
                .collect(),
            configs: deployment
                .endpoint_configs
                .iter()
                .map(|c| {
                    (
                        c.name.clone(),
                        ConfigRecord {
                            config: c.clone(),
                            created,
                        },
                    )
                })
                .collect(),
        }
    }
}
