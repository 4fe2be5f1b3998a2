//! The deployment file as a client of the control-plane operations, so that there is one
//! code path for every change: each model and endpoint config the file names is created if
//! missing (and must match if present: they are immutable, as in SageMaker); each endpoint
//! is created, or updated to the file's config; then the endpoints are awaited. `plinth serve
//! --config` applies the file in process; `plinth apply` applies it over HTTP.

use crate::state::catalog::{self, ConfigDefinition, ModelDefinition};
use anyhow::{bail, Context};
use plinth_policy::config::Deployment;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A control-plane error: SageMaker's error code and message.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub(crate) struct CallError {
    pub(crate) code: String,
    pub(crate) message: String,
}

impl CallError {
    /// SageMaker's answer for a missing resource.
    fn is_not_found(&self) -> bool {
        self.code == "ValidationException" && self.message.starts_with("Could not find")
    }
}

/// Something that runs control-plane operations.
pub(crate) trait Control {
    fn call(&mut self, operation: &str, input: Value) -> Result<Value, CallError>;
}

/// A Describe output without the fields the API adds to a definition.
fn strip(mut value: Value, fields: &[&str]) -> Value {
    if let Some(object) = value.as_object_mut() {
        for field in fields {
            object.remove(*field);
        }
    }
    value
}

/// How long an endpoint may take to come up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Apply `deployment`; returns one line per change made.
pub(crate) fn apply(
    control: &mut impl Control,
    deployment: &Deployment,
) -> anyhow::Result<Vec<String>> {
    let mut changes = Vec::new();
    for model in &deployment.models {
        let desired = catalog::model_definition(model);
        let name = &model.name;
        match control.call("DescribeModel", json!({ "ModelName": name })) {
            Ok(current) => {
                let current: ModelDefinition = serde_json::from_value(current)
                    .with_context(|| format!("DescribeModel {name}"))?;
                if current != desired {
                    bail!(
                        "model {name:?} differs from the model of that name Plinth already has; \
                         models are immutable: give the changed model a new name (and point \
                         its endpoint config at it)"
                    );
                }
            }
            Err(e) if e.is_not_found() => {
                let mut input = serde_json::to_value(&desired)?;
                input["ModelName"] = json!(name);
                control
                    .call("CreateModel", input)
                    .with_context(|| format!("model {name:?}"))?;
                changes.push(format!("created model {name}"));
            }
            Err(e) => return Err(e).with_context(|| format!("model {name:?}")),
        }
    }
    for config in &deployment.endpoint_configs {
        let desired = catalog::config_definition(config);
        let name = &config.name;
        match control.call(
            "DescribeEndpointConfig",
            json!({ "EndpointConfigName": name }),
        ) {
            Ok(current) => {
                let current: ConfigDefinition = serde_json::from_value(current)
                    .with_context(|| format!("DescribeEndpointConfig {name}"))?;
                if current != desired {
                    bail!(
                        "endpoint config {name:?} differs from the endpoint config of that name \
                         Plinth already has; endpoint configs are immutable: give the changed \
                         one a new name and point the endpoint at it"
                    );
                }
            }
            Err(e) if e.is_not_found() => {
                let mut input = serde_json::to_value(&desired)?;
                input["EndpointConfigName"] = json!(name);
                control
                    .call("CreateEndpointConfig", input)
                    .with_context(|| format!("endpoint config {name:?}"))?;
                changes.push(format!("created endpoint config {name}"));
            }
            Err(e) => return Err(e).with_context(|| format!("endpoint config {name:?}")),
        }
    }
    for (name, desired) in &deployment.alarms {
        match control.call("DescribeAlarm", json!({ "AlarmName": name })) {
            Ok(current) => {
                let current: plinth_policy::metric_alarm::AlarmDefinition = serde_json::from_value(strip(
                    current,
                    &[
                        "AlarmName",
                        "AlarmArn",
                        "CreationTime",
                        "StateValue",
                        "StateReason",
                        "Datapoints",
                    ],
                ))
                .with_context(|| format!("DescribeAlarm {name}"))?;
                if current != *desired {
                    bail!(
                        "alarm {name:?} differs from the alarm of that name Plinth already has; \
                         alarms are immutable: give the changed alarm a new name"
                    );
                }
            }
            Err(e) if e.is_not_found() => {
                let mut input = serde_json::to_value(desired)?;
                input["AlarmName"] = json!(name);
                control
                    .call("CreateAlarm", input)
                    .with_context(|| format!("alarm {name:?}"))?;
                changes.push(format!("created alarm {name}"));
            }
            Err(e) => return Err(e).with_context(|| format!("alarm {name:?}")),
        }
    }
    for endpoint in &deployment.endpoints {
        let name = &endpoint.name;
        let mut input = json!({ "EndpointName": name, "EndpointConfigName": endpoint.config_name });
        if let Some(d) = &endpoint.deployment_config {
            input["DeploymentConfig"] = serde_json::to_value(d)?;
        }
        let describe = json!({ "EndpointName": name });
        match control.call("DescribeEndpoint", describe.clone()) {
            Ok(current) if current["EndpointConfigName"] == json!(endpoint.config_name) => {
                if current["EndpointStatus"] == "Failed" {
                    bail!(
                        "endpoint {name:?} is Failed ({}); delete it to create it again",
                        current["FailureReason"]
                            .as_str()
                            .unwrap_or("no reason given")
                    );
                }
            }
            Ok(_) => {
                control
                    .call("UpdateEndpoint", input)
                    .with_context(|| format!("endpoint {name:?}"))?;
                changes.push(format!(
                    "updated endpoint {name} to endpoint config {}",
                    endpoint.config_name
                ));
            }
            Err(e) if e.is_not_found() => {
                control
                    .call("CreateEndpoint", input)
                    .with_context(|| format!("endpoint {name:?}"))?;
                changes.push(format!("created endpoint {name}"));
            }
            Err(e) => return Err(e).with_context(|| format!("endpoint {name:?}")),
        }
    }
    for endpoint in &deployment.endpoints {
        let name = &endpoint.name;
        let started = Instant::now();
        let current = loop {
            let current = control.call("DescribeEndpoint", json!({ "EndpointName": name }))?;
            let status = current["EndpointStatus"].as_str().unwrap_or_default();
            if !matches!(status, "Creating" | "Updating" | "RollingBack") {
                break current;
            }
            if started.elapsed() > SETTLE_TIMEOUT {
                bail!("endpoint {name:?} is still {status} after {SETTLE_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let reason = current["FailureReason"]
            .as_str()
            .unwrap_or("no reason given");
        if current["EndpointStatus"] != "InService" {
            bail!(
                "endpoint {name:?} is {}: {reason}",
                current["EndpointStatus"].as_str().unwrap_or_default()
            );
        }
        if current["EndpointConfigName"] != json!(endpoint.config_name) {
            bail!(
                "endpoint {name:?} could not move to endpoint config {:?}; it still serves {}: \
                 {reason}",
                endpoint.config_name,
                current["EndpointConfigName"]
            );
        }
    }
    Ok(changes)
}
