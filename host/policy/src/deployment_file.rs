//! The deployment file: a list of control-plane inputs, in TOML, with the API's own shapes.
//!
//! ```toml
//! [server]
//! max_payload_bytes = 6291456
//!
//! [[CreateModel]]
//! ModelName = "iris"
//! PrimaryContainer = { Image = "iris.wasm", ModelDataUrl = "model" }
//!
//! [[CreateEndpointConfig]]
//! EndpointConfigName = "iris-config"
//! ProductionVariants = [{ VariantName = "AllTraffic", ModelName = "iris", InitialInstanceCount = 2 }]
//!
//! [[CreateEndpoint]]
//! EndpointName = "iris"
//! EndpointConfigName = "iris-config"
//! ```
//!
//! Each `[[Operation]]` entry is that operation's input exactly as the API takes it, so
//! everything the API can express the file can too; the one addition is path resolution
//! (`PrimaryContainer.Image` and `PrimaryContainer.ModelDataUrl` relative to the file). Every
//! entry is checked against the member table ([`crate::members`]) here; the operations
//! check the rest when the file is applied, in process or over HTTP.
//!
//! Files in the earlier spelling (`[[models]]`, `[[endpoint_configs]]`, `[[endpoints]]`,
//! `[[alarms]]`, snake_case keys) are still read, through [`crate::config`], and turned into
//! the same inputs; [`DeploymentFile::to_toml`] prints them in this spelling.

use crate::config::{self, ConfigError};
use crate::members;
use serde_json::{json, Map, Value};
use std::path::Path;

/// The operations a file may list, in the order they are applied.
pub const OPERATIONS: &[&str] = &[
    "CreateModel",
    "CreateEndpointConfig",
    "CreateAlarm",
    "CreateEndpoint",
];

/// One entry: an operation and its input.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The operation, e.g. `CreateModel`.
    pub operation: &'static str,
    /// Its input, paths resolved.
    pub input: Value,
}

impl Call {
    /// The name the input gives its resource (`ModelName`, `EndpointConfigName`,
    /// `AlarmName`, `EndpointName`).
    pub fn name(&self) -> &str {
        self.input[name_member(self.operation)]
            .as_str()
            .unwrap_or_default()
    }
}

/// The member naming the resource an operation creates.
pub fn name_member(operation: &str) -> &'static str {
    match operation {
        "CreateModel" => "ModelName",
        "CreateEndpointConfig" => "EndpointConfigName",
        "CreateAlarm" => "AlarmName",
        _ => "EndpointName",
    }
}

/// A parsed deployment file.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentFile {
    /// `[server] max_payload_bytes`: the largest InvokeEndpoint body.
    pub max_payload_bytes: usize,
    /// The entries, grouped by operation in [`OPERATIONS`] order, each group in file order.
    pub calls: Vec<Call>,
    /// The file used the earlier spelling.
    pub earlier_spelling: bool,
}

impl DeploymentFile {
    /// The entries of one operation.
    pub fn of<'a>(&'a self, operation: &'a str) -> impl Iterator<Item = &'a Call> + 'a {
        self.calls.iter().filter(move |c| c.operation == operation)
    }

    /// The file in this module's spelling, operations in [`OPERATIONS`] order (paths as
    /// resolved: absolute). An input TOML cannot hold is an error naming its entry.
    pub fn to_toml(&self) -> Result<String, String> {
        let mut parts = Vec::new();
        if self.max_payload_bytes != config::DEFAULT_MAX_PAYLOAD_BYTES {
            parts.push(format!(
                "[server]\nmax_payload_bytes = {}\n",
                self.max_payload_bytes
            ));
        }
        for operation in OPERATIONS {
            let entries = self
                .of(operation)
                .map(|c| {
                    toml::Value::try_from(without_nulls(&c.input))
                        .map_err(|e| format!("{operation} {:?}: {e}", c.name()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !entries.is_empty() {
                let mut table = toml::Table::new();
                table.insert(operation.to_string(), toml::Value::Array(entries));
                parts.push(toml::to_string(&table).map_err(|e| e.to_string())?);
            }
        }
        Ok(parts.join("\n"))
    }
}

/// The first float in `value` that JSON cannot hold (NaN, an infinity), with its path
/// (`.PlinthLimits.X`, `[0]`): converted, it would be `null`, which counts as absent.
fn non_finite(value: &toml::Value) -> Option<(String, f64)> {
    match value {
        toml::Value::Float(x) if !x.is_finite() => Some((String::new(), *x)),
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| non_finite(v).map(|(path, x)| (format!("[{i}]{path}"), x))),
        toml::Value::Table(table) => table
            .iter()
            .find_map(|(k, v)| non_finite(v).map(|(path, x)| (format!(".{k}{path}"), x))),
        _ => None,
    }
}

/// `value` without its null members (TOML has no null; a null member counts as absent).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Parse a deployment file's text. `file` is used in errors and its directory resolves
/// relative paths.
pub fn parse(file: &Path, text: &str) -> Result<DeploymentFile, ConfigError> {
    let err = |key: String, message: String| ConfigError {
        file: file.to_path_buf(),
        key,
        message,
    };
    let root: toml::Table = toml::from_str(text)
        .map_err(|e| err(String::new(), e.to_string().trim_end().to_string()))?;
    const EARLIER: &[&str] = &["models", "endpoint_configs", "endpoints", "alarms"];
    if root.keys().any(|k| EARLIER.contains(&k.as_str())) {
        if let Some(k) = root.keys().find(|k| OPERATIONS.contains(&k.as_str())) {
            return Err(err(
                k.clone(),
                format!(
                    "the file mixes the earlier spelling ({}) with operation entries; use \
                     `[[CreateModel]]`, `[[CreateEndpointConfig]]`, `[[CreateEndpoint]]` and \
                     `[[CreateAlarm]]` only (`plinth validate --print` turns a file in the earlier spelling into \
                     these)",
                    EARLIER.join(", ")
                ),
            ));
        }
        let earlier = from_earlier(&config::parse(file, text)?);
        // The same member checks as the current spelling (ranges the earlier one lacks).
        for call in &earlier.calls {
            members::check_input(call.operation, &call.input)
                .map_err(|e| err(format!("{} {:?}", call.operation, call.name()), e.message))?;
        }
        return Ok(earlier);
    }
    let base = file.parent().unwrap_or(Path::new("."));
    let mut max_payload_bytes = config::DEFAULT_MAX_PAYLOAD_BYTES;
    let mut calls = Vec::new();
    for (key, value) in &root {
        if key == "server" {
            let server: config::ServerSection = value
                .clone()
                .try_into()
                .map_err(|e| err("server".into(), e.to_string().trim_end().to_string()))?;
            if let Some(bytes) = server.max_payload_bytes {
                if bytes == 0 {
                    return Err(err(
                        "server.max_payload_bytes".into(),
                        "must be at least 1 byte".into(),
                    ));
                }
                max_payload_bytes = bytes;
            }
            continue;
        }
        let Some(&operation) = OPERATIONS.iter().find(|o| **o == key) else {
            return Err(err(
                key.clone(),
                format!(
                    "not an operation a deployment file can list; use one of server, {}",
                    OPERATIONS.join(", ")
                ),
            ));
        };
        let entries = value.as_array().ok_or_else(|| {
            err(
                key.clone(),
                format!("write `[[{key}]]` tables: a list of {key} inputs"),
            )
        })?;
        let mut seen = std::collections::HashSet::new();
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("{key}[{i}]");
            if let Some((path, x)) = non_finite(entry) {
                return Err(err(
                    format!("{at}{path}"),
                    format!("{x} is not a number an API input can hold; write a finite number"),
                ));
            }
            let mut input =
                serde_json::to_value(entry).map_err(|e| err(at.clone(), e.to_string()))?;
            if !input.is_object() {
                return Err(err(at, format!("each `[[{key}]]` entry is a table")));
            }
            if operation == "CreateModel" {
                resolve_paths(&mut input, base);
            }
            members::check_input(operation, &input)
                .map_err(|e| err(format!("{at}.{}", e.path), e.message))?;
            let call = Call { operation, input };
            let name = call.name();
            if name.is_empty() {
                return Err(err(
                    at,
                    format!(
                        "give {} (each entry names its resource)",
                        name_member(operation)
                    ),
                ));
            }
            if !seen.insert(name.to_ascii_lowercase()) {
                return Err(err(
                    format!("{at}.{}", name_member(operation)),
                    format!("{name:?} is listed twice; give each {key} entry a unique name"),
                ));
            }
            calls.push(call);
        }
    }
    calls.sort_by_key(|c| OPERATIONS.iter().position(|o| *o == c.operation));
    check_references(&calls).map_err(|(key, message)| err(key, message))?;
    Ok(DeploymentFile {
        max_payload_bytes,
        calls,
        earlier_spelling: false,
    })
}

/// Every name an entry refers to is defined by another entry of the file, so that a bad
/// file is refused before anything of it is applied: variants' `ModelName`, endpoints'
/// `EndpointConfigName`, and the alarms a `DeploymentConfig` watches.
fn check_references(calls: &[Call]) -> Result<(), (String, String)> {
    let defined = |operation: &str, name: &str| {
        calls
            .iter()
            .any(|c| c.operation == operation && c.name() == name)
    };
    let mut index = std::collections::HashMap::<&str, usize>::new();
    for call in calls {
        let i = index.entry(call.operation).or_default();
        let at = format!("{}[{i}]", call.operation);
        *i += 1;
        match call.operation {
            "CreateEndpointConfig" => {
                for list in ["ProductionVariants", "ShadowProductionVariants"] {
                    let variants = call.input[list].as_array().into_iter().flatten();
                    for (j, variant) in variants.enumerate() {
                        let model = variant["ModelName"].as_str().unwrap_or_default();
                        if !defined("CreateModel", model) {
                            return Err((
                                format!("{at}.{list}[{j}].ModelName"),
                                format!("no model named {model:?}; add a [[CreateModel]] entry"),
                            ));
                        }
                    }
                }
            }
            "CreateEndpoint" => {
                let config = call.input["EndpointConfigName"]
                    .as_str()
                    .unwrap_or_default();
                if !defined("CreateEndpointConfig", config) {
                    return Err((
                        format!("{at}.EndpointConfigName"),
                        format!(
                            "no endpoint config named {config:?}; add a [[CreateEndpointConfig]] entry"
                        ),
                    ));
                }
                let alarms = call.input["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
                    .as_array()
                    .into_iter()
                    .flatten();
                for (j, alarm) in alarms.enumerate() {
                    let name = alarm["AlarmName"].as_str().unwrap_or_default();
                    if !defined("CreateAlarm", name) {
                        return Err((
                            format!(
                                "{at}.DeploymentConfig.AutoRollbackConfiguration.Alarms[{j}].AlarmName"
                            ),
                            format!("no alarm named {name:?}; add a [[CreateAlarm]] entry"),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// `Image` and `ModelDataUrl` of `PrimaryContainer` and of each of `Containers` relative to
/// `base`, unless absolute or a URL.
fn resolve_paths(input: &mut Value, base: &Path) {
    let Some(input) = input.as_object_mut() else {
        return;
    };
    let mut containers: Vec<&mut Value> = Vec::new();
    for (key, value) in input.iter_mut() {
        match (key.as_str(), value) {
            ("PrimaryContainer", value) => containers.push(value),
            ("Containers", Value::Array(list)) => containers.extend(list.iter_mut()),
            _ => {}
        }
    }
    for container in containers {
        let Some(container) = container.as_object_mut() else {
            continue;
        };
        for member in ["Image", "ModelDataUrl"] {
            if let Some(Value::String(path)) = container.get_mut(member) {
                if !path.contains("://") && !Path::new(path.as_str()).is_absolute() {
                    *path = base.join(path.as_str()).display().to_string();
                }
            }
        }
    }
}

/// The inputs a file in the earlier spelling stands for.
fn from_earlier(d: &config::Deployment) -> DeploymentFile {
    let mut calls = Vec::new();
    for m in &d.models {
        let mut container = Map::new();
        container.insert("Image".into(), json!(m.component.display().to_string()));
        if let Some(data) = &m.model_data {
            container.insert("ModelDataUrl".into(), json!(data.display().to_string()));
        }
        if !m.environment.is_empty() {
            let environment: Map<String, Value> = m
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            container.insert("Environment".into(), Value::Object(environment));
        }
        calls.push(Call {
            operation: "CreateModel",
            input: json!({
                "ModelName": m.name,
                "PrimaryContainer": container,
                "PlinthLimits": {
                    "MemorySizeInMB": m.memory_bytes >> 20,
                    "InvocationTimeoutInSeconds": m.timeout_seconds,
                    "MaxResponseSizeInMB": m.max_response_bytes >> 20,
                    "AllowGraphsFromBytes": m.graphs_from_bytes,
                },
                "PlinthBackend": m.backend.as_str(),
            }),
        });
    }
    for c in &d.endpoint_configs {
        let variants: Vec<Value> = c
            .variants
            .iter()
            .map(|v| {
                json!({
                    "VariantName": v.name,
                    "ModelName": v.model.name,
                    "InitialInstanceCount": v.instance_count,
                    "InitialVariantWeight": v.weight,
                    "RoutingConfig": { "RoutingStrategy": v.routing_strategy.as_str() },
                    "PlinthMaxQueueLength": v.max_queue_length,
                    "PlinthMaxBatchSize": v.max_batch_size,
                    "ContainerStartupHealthCheckTimeoutInSeconds": v.startup_timeout_seconds,
                })
            })
            .collect();
        calls.push(Call {
            operation: "CreateEndpointConfig",
            input: json!({ "EndpointConfigName": c.name, "ProductionVariants": variants }),
        });
    }
    for (name, definition) in &d.alarms {
        let mut input = serde_json::to_value(definition).unwrap_or_else(|_| json!({}));
        input["AlarmName"] = json!(name);
        calls.push(Call {
            operation: "CreateAlarm",
            input,
        });
    }
    for e in &d.endpoints {
        let mut input = json!({ "EndpointName": e.name, "EndpointConfigName": e.config_name });
        if let Some(deployment) = &e.deployment_config {
            input["DeploymentConfig"] = serde_json::to_value(deployment).unwrap_or_default();
        }
        calls.push(Call {
            operation: "CreateEndpoint",
            input,
        });
    }
    DeploymentFile {
        max_payload_bytes: d.max_payload_bytes,
        calls,
        earlier_spelling: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/plinth/plinth.toml";

    fn parse_str(text: &str) -> Result<DeploymentFile, ConfigError> {
        parse(Path::new(FILE), text)
    }

    const NEW: &str = r#"
[server]
max_payload_bytes = 1000

[[CreateEndpoint]]
EndpointName = "iris"
EndpointConfigName = "iris-config"

[[CreateModel]]
ModelName = "iris"
PrimaryContainer = { Image = "iris.wasm", ModelDataUrl = "model", Environment = { LOG = "1" } }
PlinthLimits = { MemorySizeInMB = 128, MaxResponseSizeInMB = 16, AllowGraphsFromBytes = true }

[[CreateEndpointConfig]]
EndpointConfigName = "iris-config"
[[CreateEndpointConfig.ProductionVariants]]
VariantName = "AllTraffic"
ModelName = "iris"
InitialInstanceCount = 2
PlinthMaxBatchSize = 8
ContainerStartupHealthCheckTimeoutInSeconds = 5
"#;

    #[test]
    fn entries_are_api_inputs_in_apply_order_with_paths_resolved() {
        let file = parse_str(NEW).unwrap();
        assert_eq!(file.max_payload_bytes, 1000);
        assert!(!file.earlier_spelling);
        let order: Vec<&str> = file.calls.iter().map(|c| c.operation).collect();
        assert_eq!(
            order,
            ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
        );
        assert_eq!(
            file.calls[0].input,
            json!({
                "ModelName": "iris",
                "PrimaryContainer": {
                    "Image": "/etc/plinth/iris.wasm",
                    "ModelDataUrl": "/etc/plinth/model",
                    "Environment": { "LOG": "1" },
                },
                "PlinthLimits": {
                    "MemorySizeInMB": 128,
                    "MaxResponseSizeInMB": 16,
                    "AllowGraphsFromBytes": true,
                },
            })
        );
        assert_eq!(file.calls[1].name(), "iris-config");
        assert_eq!(
            file.calls[1].input["ProductionVariants"][0]["PlinthMaxBatchSize"],
            8
        );
        assert_eq!(
            file.calls[1].input["ProductionVariants"][0]
                ["ContainerStartupHealthCheckTimeoutInSeconds"],
            5
        );
    }

    #[test]
    fn urls_and_absolute_paths_are_kept() {
        let text = r#"
[[CreateModel]]
ModelName = "m"
PrimaryContainer = { Image = "/opt/c.wasm", ModelDataUrl = "s3://bucket/model.tar.gz" }
"#;
        let file = parse_str(text).unwrap();
        assert_eq!(
            file.calls[0].input["PrimaryContainer"]["Image"],
            "/opt/c.wasm"
        );
        assert_eq!(
            file.calls[0].input["PrimaryContainer"]["ModelDataUrl"],
            "s3://bucket/model.tar.gz"
        );
    }

    #[test]
    fn members_are_checked_by_the_api_table_and_errors_name_the_entry() {
        let cases = [
            (
                "[[CreateEndpointConfig]]\nEndpointConfigName = \"c\"\nExplainerConfig = { ClarifyExplainerConfig = {} }\nProductionVariants = []\n",
                "/etc/plinth/plinth.toml: `CreateEndpointConfig[0].ExplainerConfig`: ExplainerConfig is not supported by Plinth; leave it out",
            ),
            (
                "[[CreateModel]]\nModelName = \"m\"\nPrimaryContainer = { Image = \"c.wasm\", Mode = \"Hybrid\" }\n",
                "/etc/plinth/plinth.toml: `CreateModel[0].PrimaryContainer.Mode`: PrimaryContainer.Mode value \"Hybrid\" is not supported; Plinth supports SingleModel, MultiModel",
            ),
            (
                "[[CreateModel]]\nModelName = \"m\"\nPrimaryContainer = { Image = \"c.wasm\" }\nPlinthLimits = { AllowGraphsFromBytes = \"yes\" }\n",
                "/etc/plinth/plinth.toml: `CreateModel[0].PlinthLimits.AllowGraphsFromBytes`: PlinthLimits.AllowGraphsFromBytes must be a boolean; got a string",
            ),
            (
                "[[CreateModel]]\nModelName = \"m\"\nPrimaryContainer = { Image = \"c.wasm\" }\nPlinthLimits = { MaxResponseSizeInMB = 1025 }\n",
                "/etc/plinth/plinth.toml: `CreateModel[0].PlinthLimits.MaxResponseSizeInMB`: PlinthLimits.MaxResponseSizeInMB must be a whole number between 1 and 1024; got 1025",
            ),
            (
                "[[CreateEndpointConfig]]\nEndpointConfigName = \"c\"\nProductionVariants = [{ VariantName = \"A\", ModelName = \"m\", ContainerStartupHealthCheckTimeoutInSeconds = 0 }]\n",
                "/etc/plinth/plinth.toml: `CreateEndpointConfig[0].ProductionVariants[0].ContainerStartupHealthCheckTimeoutInSeconds`: ProductionVariants[0].ContainerStartupHealthCheckTimeoutInSeconds must be a whole number between 1 and 3600; got 0",
            ),
            (
                "[[CreateModel]]\nPrimaryContainer = { Image = \"c.wasm\" }\n",
                "/etc/plinth/plinth.toml: `CreateModel[0]`: give ModelName (each entry names its resource)",
            ),
            (
                "[[CreateEndpoint]]\nEndpointName = \"e\"\nEndpointConfigName = \"c\"\n[[CreateEndpoint]]\nEndpointName = \"E\"\nEndpointConfigName = \"c\"\n",
                "/etc/plinth/plinth.toml: `CreateEndpoint[1].EndpointName`: \"E\" is listed twice; give each CreateEndpoint entry a unique name",
            ),
            (
                "[[DeleteModel]]\nModelName = \"m\"\n",
                "/etc/plinth/plinth.toml: `DeleteModel`: not an operation a deployment file can list; use one of server, CreateModel, CreateEndpointConfig, CreateAlarm, CreateEndpoint",
            ),
            (
                "[server]\nmax_payload_bytes = 0\n",
                "/etc/plinth/plinth.toml: `server.max_payload_bytes`: must be at least 1 byte",
            ),
            (
                "[[CreateEndpointConfig]]\nEndpointConfigName = \"c\"\nProductionVariants = [{ VariantName = \"A\", ModelName = \"m\" }]\n",
                "/etc/plinth/plinth.toml: `CreateEndpointConfig[0].ProductionVariants[0].ModelName`: no model named \"m\"; add a [[CreateModel]] entry",
            ),
            (
                "[[CreateEndpoint]]\nEndpointName = \"e\"\nEndpointConfigName = \"c\"\n",
                "/etc/plinth/plinth.toml: `CreateEndpoint[0].EndpointConfigName`: no endpoint config named \"c\"; add a [[CreateEndpointConfig]] entry",
            ),
            // Found by `tests/fuzz_deployment_file.rs`: NaN and infinities became `null`,
            // which counts as absent, so `InitialVariantWeight = nan` took the default.
            (
                "[[CreateEndpointConfig]]\nEndpointConfigName = \"c\"\nProductionVariants = [{ VariantName = \"A\", ModelName = \"m\", InitialVariantWeight = nan }]\n",
                "/etc/plinth/plinth.toml: `CreateEndpointConfig[0].ProductionVariants[0].InitialVariantWeight`: NaN is not a number an API input can hold; write a finite number",
            ),
            (
                "[[CreateAlarm]]\nAlarmName = \"a\"\nThreshold = -inf\n",
                "/etc/plinth/plinth.toml: `CreateAlarm[0].Threshold`: -inf is not a number an API input can hold",
            ),
            (
                "CreateModel = 3\n",
                "/etc/plinth/plinth.toml: `CreateModel`: write `[[CreateModel]]` tables: a list of CreateModel inputs",
            ),
            (
                "[[models]]\nname = \"m\"\ncomponent = \"c.wasm\"\n[[CreateEndpoint]]\nEndpointName = \"e\"\nEndpointConfigName = \"c\"\n",
                "/etc/plinth/plinth.toml: `CreateEndpoint`: the file mixes the earlier spelling",
            ),
        ];
        for (text, expected) in cases {
            let e = parse_str(text).unwrap_err().to_string();
            assert!(e.starts_with(expected), "expected {expected:?}, got {e:?}");
        }
    }

    const EARLIER: &str = r#"
[[models]]
name = "iris"
component = "iris.wasm"
model_data = "model"
environment = { LOG = "1" }

[[endpoint_configs]]
name = "iris-config"
[[endpoint_configs.production_variants]]
variant_name = "AllTraffic"
model_name = "iris"
initial_instance_count = 2
max_batch_size = 8

[[endpoints]]
name = "iris"
endpoint_config_name = "iris-config"
"#;

    #[test]
    fn the_earlier_spelling_reads_as_the_same_inputs_and_prints_in_the_new_one() {
        let earlier = parse_str(EARLIER).unwrap();
        assert!(earlier.earlier_spelling);
        let printed = earlier.to_toml().unwrap();
        assert!(printed.contains("[[CreateModel]]"), "{printed}");
        let reread = parse_str(&printed).unwrap();
        assert!(!reread.earlier_spelling);
        assert_eq!(reread.calls, earlier.calls);
        assert_eq!(
            earlier.calls[0].input["PrimaryContainer"]["Image"],
            "/etc/plinth/iris.wasm"
        );
        // Every setting of the model and variant, those the earlier spelling has no key for
        // at their defaults.
        assert_eq!(
            earlier.calls[0].input["PlinthLimits"],
            json!({
                "MemorySizeInMB": 256,
                "InvocationTimeoutInSeconds": 60,
                "MaxResponseSizeInMB": 6,
                "AllowGraphsFromBytes": false,
            })
        );
        assert_eq!(
            earlier.calls[1].input["ProductionVariants"][0]
                ["ContainerStartupHealthCheckTimeoutInSeconds"],
            60
        );
        assert_eq!(
            earlier.calls[1].input["ProductionVariants"][0]["PlinthMaxBatchSize"],
            8
        );
        // A number the earlier spelling let through is refused by the member table.
        let e = parse_str(&EARLIER.replace(
            "max_batch_size = 8",
            "max_batch_size = 8\nmax_queue_length = 5000000",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`CreateEndpointConfig \"iris-config\"`: ProductionVariants[0].PlinthMaxQueueLength must be a whole number between 0 and 1000000"),
            "{e}"
        );
        // The earlier spelling keeps its own checks and messages.
        let e = parse_str(&EARLIER.replace("model_name = \"iris\"", "model_name = \"irs\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no model named \"irs\""), "{e}");
    }
    #[test]
    fn the_readme_example_is_a_valid_file() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
                .expect("README.md");
        let section = &readme[readme.find("## The deployment file").expect("the section")..];
        let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let file = parse_str(example).unwrap();
        let order: Vec<&str> = file.calls.iter().map(|c| c.operation).collect();
        assert_eq!(
            order,
            [
                "CreateModel",
                "CreateEndpointConfig",
                "CreateAlarm",
                "CreateEndpoint"
            ]
        );
    }
}
