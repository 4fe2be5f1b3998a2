//! CreateModel, DescribeModel, DeleteModel, ListModels: a model names its component
//! (`Image`) and artifact (`ModelDataUrl` or `ModelDataSource`); models are immutable once
//! created. Local files are kept by digest at CreateModel; `s3://` ones are fetched when an
//! endpoint first needs them (`state::remote`).

use super::common::{
    check_name, described, in_use, internal, model_not_found, parse, store_error, validation,
};
use super::endpoint_configs::endpoint_configs_of;
use super::listing::{list, Listed};
use crate::error::ApiError;
use crate::fleet::table::EndpointTable;
use crate::state::catalog::{Digests, ModelDefinition, Record};
use crate::state::store::{Kind, StoreError};
use crate::state::Stored;
use crate::state::{arn, now};
use plinth_policy::model_limits::{self, ModelField, ModelSettings};
use plinth_runtime::Runtime;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateModelInput {
    model_name: String,
    primary_container: Option<Value>,
    containers: Option<Value>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// A container's local files, found under the artifact roots.
struct Local {
    /// `Image`, as given.
    image: String,
    /// Where a local `Image` is.
    image_path: Option<String>,
    /// Where a local `ModelDataUrl` is (not for a multi-model prefix).
    url_path: Option<String>,
}

/// CreateModel. The artifacts are read and unpacked before `changes` is taken (other
/// changes go on meanwhile); the name is checked and the model committed under it. A model
/// has a `PrimaryContainer` or, as an inference pipeline, `Containers` (2 to 15).
pub(crate) async fn create_model(
    stored: &Stored,
    runtime: &Runtime,
    changes: &tokio::sync::Mutex<()>,
    input: Value,
) -> Result<Value, ApiError> {
    let input: CreateModelInput = parse(input)?;
    let name = input.model_name;
    check_name("modelName", &name)?;
    let mut fields = input.rest;
    match (input.primary_container, input.containers) {
        (Some(_), Some(_)) => {
            return Err(validation(
                "Give PrimaryContainer or Containers, not both: PrimaryContainer for a model \
                 with one container, Containers for an inference pipeline",
            ))
        }
        (None, None) => return Err(validation("PrimaryContainer or Containers is required")),
        (Some(c), None) => fields.insert("PrimaryContainer".into(), c),
        (None, Some(c)) => fields.insert("Containers".into(), c),
    };
    let mut definition: ModelDefinition = parse(Value::Object(fields))?;
    check_pipeline(&definition)?;
    check_multi_model(&definition)?;
    let pipeline = definition.primary_container.is_none();
    let mut locals = Vec::new();
    for (i, c) in definition.all_containers().into_iter().enumerate() {
        let at = if pipeline {
            format!("Containers[{i}].")
        } else {
            String::new()
        };
        let named = |e: String| validation(format!("{at}{e}"));
        // `s3://` ones are fetched when an endpoint first needs them (a failure then sets
        // the endpoint Failed, as SageMaker does); here they are only checked for form.
        let remote_image = c.remote_image().map_err(named)?.is_some();
        let remote_data = c.remote_model_data().map_err(named)?.is_some();
        // Where the local files are, and only if they are under the artifact roots (checked
        // before anything else looks at them).
        let image_path = (!remote_image)
            .then(|| stored.roots.check("Image", &c.image))
            .transpose()
            .map_err(named)?;
        let url_path = c
            .model_data_url
            .as_deref()
            .filter(|url| !remote_data && !url.starts_with("s3://"))
            .map(|url| stored.roots.check("ModelDataUrl", url))
            .transpose()
            .map_err(named)?;
        // A multi-model prefix is read when requests name its models, not kept here.
        let url_path = match url_path {
            Some(path) if definition.is_multi_model() => {
                if !std::path::Path::new(&path).is_dir() {
                    return Err(validation(format!(
                        "ModelDataUrl {path:?}: the prefix of a MultiModel model must be a \
                         directory (or an s3:// prefix)"
                    )));
                }
                None
            }
            other => other,
        };
        if image_path
            .as_deref()
            .is_some_and(|p| !std::path::Path::new(p).is_file())
        {
            return Err(validation(format!(
                "{at}Image {:?}: no component file there",
                c.image
            )));
        }
        locals.push(Local {
            image: c.image.clone(),
            image_path,
            url_path,
        });
    }
    check_model(&definition)?;
    runtime
        .backend_for(definition.plinth_backend)
        .map_err(|e| validation(format!("PlinthBackend {}: {e}", definition.plinth_backend)))?;
    let exists = || {
        stored
            .catalog()
            .model_named(&name)
            .map(|_| store_error(StoreError::Exists(name.clone()), "model", &name))
    };
    if let Some(taken) = exists() {
        return Err(taken);
    }
    // Keep each component and artifact (unpacked) in the data directory, by digest: a bad
    // one is reported here, not at deploy time, and the model runs exactly these bytes for
    // its whole life, whatever becomes of the files it names.
    let locals = std::sync::Arc::new(locals);
    let keep_all = {
        let cache = stored.artifacts.clone();
        let locals = locals.clone();
        move || {
            use crate::state::artifacts::{keep, keep_component};
            let mut each = Vec::new();
            for local in locals.iter() {
                each.push(Digests {
                    image: local
                        .image_path
                        .as_deref()
                        .map(|path| keep_component(&cache, &local.image, path))
                        .transpose()?,
                    model_data_url: local
                        .url_path
                        .as_deref()
                        .map(|url| keep(&cache, url))
                        .transpose()?,
                    containers: Vec::new(),
                });
            }
            Ok::<_, String>(each)
        }
    };
    let digests = tokio::task::spawn_blocking(keep_all.clone())
        .await
        .map_err(internal)?
        .map_err(validation)?;
    let _exclusive = changes.lock().await;
    // Another CreateModel of the same name may have committed while this one unpacked.
    if let Some(taken) = exists() {
        return Err(taken);
    }
    // A DeleteModel may have collected what this one kept before it held the lock (its
    // digests were in no model yet): keep it again, now that no collection can run.
    let missing = digests.iter().zip(locals.iter()).any(|(d, local)| {
        d.image.as_deref().is_some_and(|d| {
            !crate::state::artifacts::kept_component(&stored.artifacts, d, &local.image).is_file()
        }) || d
            .model_data_url
            .as_deref()
            .is_some_and(|d| crate::state::artifacts::kept(&stored.artifacts, d).is_err())
    });
    if missing {
        tokio::task::spawn_blocking(keep_all)
            .await
            .map_err(internal)?
            .map_err(validation)?;
    }
    definition.plinth_digests = Some(if pipeline {
        Digests {
            image: None,
            model_data_url: None,
            containers: digests,
        }
    } else {
        digests.into_iter().next().expect("one container")
    });
    let record = Record {
        name: name.clone(),
        created: now(),
        definition,
    };
    stored
        .store
        .insert(Kind::Model, &record.stored())
        .map_err(|e| store_error(e, "model", &name))?;
    stored.catalog().models.insert(name.clone(), record);
    tracing::info!(model = %name, "model created");
    Ok(json!({ "ModelArn": arn("model", &name) }))
}

/// An inference pipeline's containers: 2 to 15, hostnames for all or none and unique, a
/// known `Mode`; each container a single model; `InferenceExecutionConfig` only with them.
fn check_pipeline(d: &ModelDefinition) -> Result<(), ApiError> {
    if d.primary_container.is_some() {
        if d.inference_execution_config.is_some() {
            return Err(validation(
                "InferenceExecutionConfig applies only to a model with Containers (an \
                 inference pipeline)",
            ));
        }
        return Ok(());
    }
    d.pipeline().map_err(validation)?;
    for (i, c) in d.containers.iter().enumerate() {
        if c.mode != "SingleModel" || c.multi_model_config.is_some() {
            return Err(validation(format!(
                "Containers[{i}].Mode: the containers of an inference pipeline serve one \
                 model each (SingleModel); a MultiModel container needs a model of its own"
            )));
        }
    }
    let environment: usize = d
        .containers
        .iter()
        .flat_map(|c| &c.environment)
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if environment > plinth_policy::pipeline::MAX_ENVIRONMENT_BYTES {
        return Err(validation(format!(
            "Containers[].Environment: the containers' environments hold {environment} bytes \
             of keys and values together; the limit is {} bytes",
            plinth_policy::pipeline::MAX_ENVIRONMENT_BYTES
        )));
    }
    Ok(())
}

/// `Mode: MultiModel` takes its models from a `ModelDataUrl` prefix; `MultiModelConfig`
/// only with it.
fn check_multi_model(d: &ModelDefinition) -> Result<(), ApiError> {
    let c = d.first_container();
    if !d.is_multi_model() {
        if c.multi_model_config.is_some() {
            return Err(validation(
                "PrimaryContainer.MultiModelConfig applies only with Mode MultiModel",
            ));
        }
        return Ok(());
    }
    if c.model_data_source.is_some() {
        return Err(validation(
            "PrimaryContainer.ModelDataSource: a MultiModel model takes its models from a \
             ModelDataUrl prefix; give ModelDataUrl instead",
        ));
    }
    if let Some(url) = c
        .model_data_url
        .as_deref()
        .filter(|u| u.starts_with("s3://"))
    {
        plinth_storage::Location::parse(url)
            .map_err(|e| validation(format!("PrimaryContainer.ModelDataUrl {e}")))?;
    }
    if c.model_data_url.is_none() {
        return Err(validation(
            "PrimaryContainer.ModelDataUrl is required with Mode MultiModel: the prefix \
             (a directory or an s3:// prefix) that TargetModel paths are relative to",
        ));
    }
    Ok(())
}

/// The model's settings in range (each container's environment among them).
fn check_model(d: &ModelDefinition) -> Result<(), ApiError> {
    let limits = &d.plinth_limits;
    let pipeline = d.primary_container.is_none();
    for (i, c) in d.all_containers().into_iter().enumerate() {
        model_limits::check(&ModelSettings {
            memory_mib: limits.memory_size_in_mb,
            timeout_seconds: limits.invocation_timeout_in_seconds,
            max_response_mib: limits.max_response_size_in_mb,
            environment: &c.environment,
        })
        .map_err(|problem| {
            let field = match problem.field() {
                ModelField::Memory => "PlinthLimits.MemorySizeInMB".to_owned(),
                ModelField::Timeout => "PlinthLimits.InvocationTimeoutInSeconds".to_owned(),
                ModelField::MaxResponse => "PlinthLimits.MaxResponseSizeInMB".to_owned(),
                ModelField::Environment if pipeline => format!("Containers[{i}].Environment"),
                ModelField::Environment => "PrimaryContainer.Environment".to_owned(),
            };
            validation(format!("{field}: {problem}"))
        })?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModelNameInput {
    model_name: String,
}

pub(crate) fn describe_model(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    let input: ModelNameInput = parse(input)?;
    let catalog = stored.catalog();
    let record = catalog
        .models
        .get(&input.model_name)
        .ok_or_else(|| model_not_found(&input.model_name))?;
    described(record, "Model", "model")
}

pub(crate) fn delete_model(
    stored: &Stored,
    endpoints: &EndpointTable,
    runtime: &Runtime,
    input: Value,
) -> Result<Value, ApiError> {
    let input: ModelNameInput = parse(input)?;
    let name = input.model_name;
    let mut catalog = stored.catalog();
    if !catalog.models.contains_key(&name) {
        return Err(model_not_found(&name));
    }
    for endpoint in endpoints.all().values() {
        for config in endpoint_configs_of(endpoint) {
            let uses = catalog.configs.get(config).is_some_and(|c| {
                c.definition
                    .production_variants
                    .iter()
                    .chain(&c.definition.shadow_production_variants)
                    .any(|v| v.model_name == name)
            });
            if uses {
                return Err(in_use(format!(
                    "Cannot delete model \"{}\": endpoint {} uses it through endpoint \
                     configuration {config}, and Plinth needs it to restore the endpoint. \
                     Update or delete the endpoint first.",
                    arn("model", &name),
                    endpoint.name
                )));
            }
        }
    }
    let jobs = stored.store.transform_jobs(None).map_err(internal)?;
    if let Some(job) = jobs.iter().find(|j| {
        matches!(j.status.as_str(), "InProgress" | "Stopping")
            && crate::fleet::transform_jobs::models_of(&j.definition)
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&name))
    }) {
        return Err(in_use(format!(
            "Cannot delete model \"{}\": transform job {} ({}) runs it. Stop the job or \
             wait for its end first.",
            arn("model", &name),
            job.name,
            job.status
        )));
    }
    stored.store.delete(Kind::Model, &name).map_err(internal)?;
    catalog.models.remove(&name);
    tracing::info!(model = %name, "model deleted");
    // What no model keeps any more goes (under the changes lock, so that no CreateModel
    // commits meanwhile: one that kept the same bytes keeps them again under the lock).
    if let Some(keep) = catalog.kept_digests() {
        let removed = crate::state::artifacts::collect_garbage(&stored.artifacts, &keep)
            + runtime.collect_compiled(&keep);
        if removed > 0 {
            tracing::info!(
                removed,
                "artifacts and compiled components no model keeps removed"
            );
        }
    }
    Ok(json!({}))
}

pub(crate) fn list_models(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    let items = stored
        .catalog()
        .models
        .values()
        .map(|m| Listed {
            name: m.name.clone(),
            created: m.created,
            modified: m.created,
            status: "",
            summary: json!({
                "ModelName": m.name,
                "ModelArn": arn("model", &m.name),
                "CreationTime": m.created,
            }),
        })
        .collect();
    list(items, parse(input)?, &["Name", "CreationTime"], "Models")
}
