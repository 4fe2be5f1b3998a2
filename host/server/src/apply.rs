//! The deployment file (a list of Create* inputs, [`plinth_policy::deployment_file`]) as a
//! client of the control-plane operations, so that there is one code path for every
//! change. `plinth serve --config` applies the file in process; `plinth apply` applies it
//! over HTTP; `plinth validate` applies it to a server in memory.

use crate::state::catalog::{ConfigDefinition, ModelDefinition};
use anyhow::{bail, Context};
use plinth_policy::deployment_file::{name_member, Call, DeploymentFile};
use plinth_policy::metric_alarm::AlarmDefinition;
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

/// What the API adds to a definition in its Describe output.
const DESCRIBED: &[&str] = &[
    "ModelArn",
    "EndpointConfigArn",
    "AlarmArn",
    "CreationTime",
    "StateValue",
    "StateReason",
    "Datapoints",
    "PlinthDigests",
];

/// Whether `current` (a Describe output) holds the same definition as `desired` (a Create
/// input), both read as `T` so that defaults count as given.
fn same_definition<T>(current: Value, desired: &Value, name_member: &str) -> anyhow::Result<bool>
where
    T: serde::de::DeserializeOwned + PartialEq,
{
    let mut fields = DESCRIBED.to_vec();
    fields.push(name_member);
    let current: T = serde_json::from_value(strip(current, &fields))?;
    let desired: T = serde_json::from_value(strip(desired.clone(), &[name_member]))?;
    Ok(current == desired)
}

/// A model exists under `name`: the files the deployment file names for it must still hold
/// the bytes it runs (its digests), or the change would silently not happen.
fn check_model_bytes(name: &str, current: &Value, desired: &Value) -> anyhow::Result<()> {
    use crate::state::artifacts::{component_digest, digest};
    // Each container with its kept digests: the primary one, or a pipeline's in order.
    let kept = &current["PlinthDigests"];
    let mut each = vec![(&desired["PrimaryContainer"], kept)];
    if let (Some(containers), Some(digests)) = (
        desired["Containers"].as_array(),
        kept["Containers"].as_array(),
    ) {
        each = containers.iter().zip(digests).collect();
    }
    let pairs = [
        (
            "Image",
            component_digest as fn(&str) -> Result<String, String>,
        ),
        ("ModelDataUrl", digest),
    ];
    for (container, kept) in each {
        for (member, digest_of) in pairs {
            let (Some(was), Some(path)) = (kept[member].as_str(), container[member].as_str())
            else {
                continue;
            };
            let now = digest_of(path).map_err(|e| anyhow::anyhow!("model {name:?}: {e}"))?;
            if now != was {
                bail!(
                    "model {name:?} runs {member} {was}, but {path} now holds {now}; models \
                     are immutable: give the changed one a new name (and point what uses it \
                     at the new name)"
                );
            }
        }
    }
    Ok(())
}

/// Apply `file`: each model, endpoint config and alarm it lists is created if missing (and
/// must match if present: they are immutable, as in SageMaker); each endpoint is created,
/// or updated to the file's config; then the endpoints are awaited. Returns one line per
/// change made.
pub(crate) fn apply(
    control: &mut impl Control,
    file: &DeploymentFile,
) -> anyhow::Result<Vec<String>> {
    let mut changes = Vec::new();
    for call in file
        .calls
        .iter()
        .filter(|c| c.operation != "CreateEndpoint")
    {
        let (operation, name) = (call.operation, call.name());
        let resource = operation.trim_start_matches("Create");
        let name_member = name_member(operation);
        let described = control.call(&format!("Describe{resource}"), json!({ name_member: name }));
        let what = match operation {
            "CreateModel" => "model",
            "CreateEndpointConfig" => "endpoint config",
            _ => "alarm",
        };
        match described {
            Ok(current) => {
                if operation == "CreateModel" {
                    check_model_bytes(name, &current, &call.input)?;
                }
                let same = match operation {
                    "CreateModel" => {
                        same_definition::<ModelDefinition>(current, &call.input, name_member)
                    }
                    "CreateEndpointConfig" => {
                        same_definition::<ConfigDefinition>(current, &call.input, name_member)
                    }
                    _ => same_definition::<AlarmDefinition>(current, &call.input, name_member),
                }
                .with_context(|| format!("{what} {name:?}"))?;
                if !same {
                    bail!(
                        "{what} {name:?} differs from the {what} of that name Plinth already \
                         has; {what}s are immutable: give the changed one a new name (and point \
                         what uses it at the new name)"
                    );
                }
            }
            Err(e) if e.is_not_found() => {
                control
                    .call(operation, call.input.clone())
                    .with_context(|| format!("{what} {name:?}"))?;
                changes.push(format!("created {what} {name}"));
            }
            Err(e) => return Err(e).with_context(|| format!("{what} {name:?}")),
        }
    }
    let endpoints: Vec<&Call> = file.of("CreateEndpoint").collect();
    for endpoint in &endpoints {
        let name = endpoint.name();
        let config_name = &endpoint.input["EndpointConfigName"];
        let input = endpoint.input.clone();
        let describe = json!({ "EndpointName": name });
        match control.call("DescribeEndpoint", describe.clone()) {
            Ok(current) if current["EndpointConfigName"] == *config_name => {
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
                    config_name.as_str().unwrap_or_default()
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
    for endpoint in &endpoints {
        let name = endpoint.name();
        let config_name = &endpoint.input["EndpointConfigName"];
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
        if current["EndpointConfigName"] != *config_name {
            bail!(
                "endpoint {name:?} could not move to endpoint config {config_name}; it still \
                 serves {}: {reason}",
                current["EndpointConfigName"]
            );
        }
    }
    Ok(changes)
}
