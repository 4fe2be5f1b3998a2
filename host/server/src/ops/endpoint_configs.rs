//! CreateEndpointConfig, DescribeEndpointConfig, DeleteEndpointConfig, ListEndpointConfigs:
//! production and shadow variants over existing models, and Plinth's experiment settings.

use super::common::{
    check_name, config_not_found, described, in_use, internal, parse, store_error, validation,
};
use super::listing::{list, Listed};
use crate::error::ApiError;
use crate::fleet::table::EndpointSnapshot;
use crate::fleet::table::EndpointTable;
use crate::state::catalog::{ConfigDefinition, Record};
use crate::state::store::{Kind, StoreError};
use crate::state::Stored;
use crate::state::{arn, now};
use plinth_policy::config::check_variants;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEndpointConfigInput {
    endpoint_config_name: String,
    #[serde(flatten)]
    definition: ConfigDefinition,
}

pub(crate) fn create_endpoint_config(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    check_serverless(&input)?;
    let mut input: CreateEndpointConfigInput = parse(input)?;
    check_async(stored, &mut input.definition)?;
    check_capture(stored, &mut input.definition)?;
    let name = input.endpoint_config_name;
    check_name("endpointConfigName", &name)?;
    let mut catalog = stored.catalog();
    if catalog.config_named(&name).is_some() {
        return Err(store_error(
            StoreError::Exists(name.clone()),
            "endpoint-config",
            &name,
        ));
    }
    let definition = &input.definition;
    for v in definition
        .production_variants
        .iter()
        .chain(&definition.shadow_production_variants)
    {
        if !catalog.models.contains_key(&v.model_name) {
            return Err(validation(format!(
                "Could not find model \"{}\".",
                arn("model", &v.model_name)
            )));
        }
    }
    if let Some(experiment) = &input.definition.plinth_experiment {
        let names: Vec<&str> = input
            .definition
            .production_variants
            .iter()
            .map(|v| v.variant_name.as_str())
            .collect();
        experiment.check(&names).map_err(validation)?;
    }
    let record = Record {
        name: name.clone(),
        created: now(),
        definition: input.definition,
    };
    catalog.configs.insert(name.clone(), record.clone());
    let checked = catalog
        .unresolved(&name)
        .map(|u| u.variants_unchecked())
        .map_err(validation)
        .and_then(|variants| {
            check_variants(&name, &variants).map_err(|p| {
                let at = p
                    .index
                    .map(|j| format!("ProductionVariants[{j}]: "))
                    .unwrap_or_else(|| "ProductionVariants: ".into());
                validation(format!("{at}{}", p.message))
            })
        })
        .and_then(|()| check_shadows(&catalog, &name))
        .and_then(|()| check_multi_model(&catalog, &name))
        .and_then(|()| check_pipelines(&catalog, &name))
        .and_then(|()| {
            stored
                .store
                .insert(Kind::EndpointConfig, &record.stored())
                .map_err(|e| store_error(e, "endpoint-config", &name))
        });
    if let Err(e) = checked {
        catalog.configs.remove(&name);
        return Err(e);
    }
    tracing::info!(endpoint_config = %name, "endpoint config created");
    Ok(json!({ "EndpointConfigArn": arn("endpoint-config", &name) }))
}

/// `AsyncInferenceConfig`: an output path (`s3://`, or a directory under the artifact roots,
/// kept as its real path), an optional failure path alike; not with a serverless variant (as
/// SageMaker has it).
fn check_async(
    stored: &Stored,
    definition: &mut crate::state::catalog::ConfigDefinition,
) -> Result<(), ApiError> {
    let serverless = definition
        .production_variants
        .iter()
        .any(|v| v.serverless_config.is_some());
    let Some(config) = &mut definition.async_inference_config else {
        return Ok(());
    };
    if serverless {
        return Err(validation(
            "AsyncInferenceConfig cannot be given with a serverless variant: serverless \
             endpoints do not take asynchronous requests",
        ));
    }
    let at = "AsyncInferenceConfig.OutputConfig";
    let output = &mut config.output_config;
    if output.s3_output_path.is_none() {
        return Err(validation(format!("{at}.S3OutputPath is required")));
    }
    for (member, path) in [
        ("S3OutputPath", &mut output.s3_output_path),
        ("S3FailurePath", &mut output.s3_failure_path),
    ] {
        let Some(value) = path else {
            continue;
        };
        let member = format!("{at}.{member}");
        *value = output_directory(stored, &member, value)?;
    }
    if let Some(notify) = &output.notification_config {
        for (member, topic) in [
            ("SuccessTopic", &notify.success_topic),
            ("ErrorTopic", &notify.error_topic),
        ] {
            if let Some(url) = topic {
                plinth_policy::async_inference::webhook(
                    &format!("{at}.NotificationConfig.{member}"),
                    url,
                )
                .map_err(|e| validation(e.0))?;
            }
        }
        plinth_policy::async_inference::include_response_in(&notify.include_inference_response_in)
            .map_err(|e| validation(e.0))?;
    }
    // A multi-model variant's requests each name a model (TargetModel), which an
    // asynchronous request cannot give.
    let catalog = stored.catalog();
    for (j, v) in definition.production_variants.iter().enumerate() {
        refuse_multi_model(&catalog, "AsyncInferenceConfig", j, v)?;
        // Nor a container of a Direct pipeline (TargetContainerHostname).
        if catalog.model_named(&v.model_name).is_some_and(|m| {
            matches!(
                m.definition.pipeline(),
                Ok(Some((plinth_policy::pipeline::Mode::Direct, _)))
            )
        }) {
            return Err(validation(format!(
                "AsyncInferenceConfig cannot be given with a variant serving a multi-container \
                 model with direct invocation: ProductionVariants[{j}] ({}) serves model {}, \
                 whose requests must name a container",
                v.variant_name, v.model_name
            )));
        }
    }
    Ok(())
}

/// `DataCaptureConfig`, as SageMaker checks it (`plinth_policy::data_capture`), its
/// destination an `s3://` prefix or a directory under the artifact roots (kept as its real
/// path). Not with a serverless or multi-model variant (SageMaker captures neither), nor
/// with `AsyncInferenceConfig` (Plinth captures real-time invocations only).
fn check_capture(
    stored: &Stored,
    definition: &mut crate::state::catalog::ConfigDefinition,
) -> Result<(), ApiError> {
    let Some(config) = &mut definition.data_capture_config else {
        return Ok(());
    };
    config.settings().map_err(validation)?;
    if let Some(destination) = &mut config.destination_s3_uri {
        *destination = output_directory(stored, "DataCaptureConfig.DestinationS3Uri", destination)?;
    }
    if definition.async_inference_config.is_some() {
        return Err(validation(
            "DataCaptureConfig cannot be given with AsyncInferenceConfig: Plinth captures \
             real-time invocations only",
        ));
    }
    let catalog = stored.catalog();
    for (j, v) in definition.production_variants.iter().enumerate() {
        if v.serverless_config.is_some() {
            return Err(validation(format!(
                "DataCaptureConfig cannot be given with a serverless variant: \
                 ProductionVariants[{j}] ({}) has a ServerlessConfig",
                v.variant_name
            )));
        }
        refuse_multi_model(&catalog, "DataCaptureConfig", j, v)?;
    }
    Ok(())
}

/// `member` cannot be given beside a multi-model variant (`ProductionVariants[j]`).
fn refuse_multi_model(
    catalog: &crate::state::catalog::Catalog,
    member: &str,
    j: usize,
    v: &crate::state::catalog::ProductionVariant,
) -> Result<(), ApiError> {
    if catalog
        .model_named(&v.model_name)
        .is_some_and(|m| m.definition.is_multi_model())
    {
        return Err(validation(format!(
            "{member} cannot be given with a multi-model variant: ProductionVariants[{j}] ({}) \
             serves model {}, whose Mode is MultiModel",
            v.variant_name, v.model_name
        )));
    }
    Ok(())
}

/// Where asynchronous results may go: an `s3://` prefix, or an existing directory under the
/// artifact roots (its real path).
pub(crate) fn output_directory(
    stored: &Stored,
    member: &str,
    value: &str,
) -> Result<String, ApiError> {
    if value.starts_with("s3://") {
        let location = plinth_storage::Location::parse(value)
            .map_err(|e| validation(format!("{member} {value:?}: {e}")))?;
        return Ok(location.to_string());
    }
    let (dir, real) = stored
        .roots
        .open(member, value, false)
        .map_err(validation)?;
    if !dir.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(validation(format!("{member} {value:?} is not a directory")));
    }
    Ok(real)
}

/// Serverless variants (`ServerlessConfig`), as SageMaker takes them: no instance count or
/// type beside it, a memory size in whole GiB, provisioned concurrency within the maximum, the
/// endpoint's only production variant, and never a shadow variant.
fn check_serverless(input: &Value) -> Result<(), ApiError> {
    let variants = |key| input[key].as_array().map(Vec::as_slice).unwrap_or_default();
    let production = variants("ProductionVariants");
    let serverless = |v: &Value| v.get("ServerlessConfig").is_some_and(|c| !c.is_null());
    for (j, v) in production.iter().enumerate().filter(|(_, v)| serverless(v)) {
        for member in ["InitialInstanceCount", "InstanceType"] {
            if v.get(member).is_some_and(|m| !m.is_null()) {
                return Err(validation(format!(
                    "ProductionVariants[{j}]: {member} cannot be given with ServerlessConfig \
                     (a serverless variant starts instances as requests need them)"
                )));
            }
        }
        let config = &v["ServerlessConfig"];
        let memory = config["MemorySizeInMB"].as_u64().unwrap_or_default();
        if memory % 1024 != 0 {
            return Err(validation(format!(
                "ProductionVariants[{j}].ServerlessConfig.MemorySizeInMB {memory} must be one \
                 of 1024, 2048, 3072, 4096, 5120, 6144"
            )));
        }
        let max = config["MaxConcurrency"].as_u64();
        if let (Some(provisioned), Some(max)) = (config["ProvisionedConcurrency"].as_u64(), max) {
            if provisioned > max {
                return Err(validation(format!(
                    "ProductionVariants[{j}].ServerlessConfig.ProvisionedConcurrency \
                     {provisioned} must not be greater than MaxConcurrency {max}"
                )));
            }
        }
        if production.len() > 1 {
            return Err(validation(format!(
                "ProductionVariants[{j}]: a serverless variant must be the endpoint config's \
                 only production variant"
            )));
        }
    }
    if let Some(j) = variants("ShadowProductionVariants")
        .iter()
        .position(serverless)
    {
        return Err(validation(format!(
            "ShadowProductionVariants[{j}]: shadow variants cannot be serverless"
        )));
    }
    let any = production.iter().any(serverless);
    if any && !variants("ShadowProductionVariants").is_empty() {
        return Err(validation(
            "ShadowProductionVariants: a serverless endpoint config cannot have shadow variants",
        ));
    }
    for key in ["MaxConcurrency", "MemorySizeInMB"] {
        if let Some(j) = production
            .iter()
            .position(|v| serverless(v) && v["ServerlessConfig"].get(key).is_none())
        {
            return Err(validation(format!(
                "ProductionVariants[{j}].ServerlessConfig.{key} is required"
            )));
        }
    }
    Ok(())
}

/// Inference pipelines: a serverless variant serves a model with one container; a shadow
/// variant gets copies of requests that name no container, so it serves no Direct pipeline.
fn check_pipelines(catalog: &crate::state::catalog::Catalog, name: &str) -> Result<(), ApiError> {
    use plinth_policy::pipeline::Mode;
    let definition = &catalog.configs[name].definition;
    let mode = |model: &str| {
        catalog
            .models
            .get(model)
            .and_then(|m| m.definition.pipeline().ok().flatten())
            .map(|(mode, _)| mode)
    };
    for (j, v) in definition.production_variants.iter().enumerate() {
        if v.serverless_config.is_some() && mode(&v.model_name).is_some() {
            return Err(validation(format!(
                "ProductionVariants[{j}]: model {} is an inference pipeline (Containers); \
                 serverless variants serve models with one container",
                v.model_name
            )));
        }
    }
    for (j, v) in definition.shadow_production_variants.iter().enumerate() {
        if mode(&v.model_name) == Some(Mode::Direct) {
            return Err(validation(format!(
                "ShadowProductionVariants[{j}]: model {} is a multi-container model with \
                 direct invocation; a shadow variant gets copies of requests that name no \
                 container: give it a Serial pipeline or a single model",
                v.model_name
            )));
        }
    }
    Ok(())
}

/// Multi-model models: the production variants all serve one, or none does (a request names
/// its model or it does not); no shadow serves one (SageMaker's shadow tests do not take
/// multi-model endpoints); `PlinthModelCacheSizeInMB` only on a variant serving one.
fn check_multi_model(catalog: &crate::state::catalog::Catalog, name: &str) -> Result<(), ApiError> {
    let definition = &catalog.configs[name].definition;
    let multi = |model: &str| {
        catalog
            .models
            .get(model)
            .is_some_and(|m| m.definition.is_multi_model())
    };
    let production = &definition.production_variants;
    for (j, v) in production.iter().enumerate() {
        if v.serverless_config.is_some() && multi(&v.model_name) {
            return Err(validation(format!(
                "ProductionVariants[{j}]: model {} is a MultiModel model; serverless variants \
                 do not support multi-model models",
                v.model_name
            )));
        }
        if v.plinth_model_cache_size_in_mb.is_some() && !multi(&v.model_name) {
            return Err(validation(format!(
                "ProductionVariants[{j}]: PlinthModelCacheSizeInMB applies only to a variant \
                 whose model's Mode is MultiModel; model {} is SingleModel",
                v.model_name
            )));
        }
    }
    let multi_count = production.iter().filter(|v| multi(&v.model_name)).count();
    if multi_count > 0 && multi_count < production.len() {
        let j = production
            .iter()
            .position(|v| !multi(&v.model_name))
            .unwrap_or_default();
        return Err(validation(format!(
            "ProductionVariants[{j}]: model {} is SingleModel, but other variants serve \
             MultiModel models; an endpoint's variants are all multi-model or none is \
             (requests to one name their model with TargetModel)",
            production[j].model_name
        )));
    }
    if let Some(j) = definition
        .shadow_production_variants
        .iter()
        .position(|v| multi(&v.model_name))
    {
        return Err(validation(format!(
            "ShadowProductionVariants[{j}]: model {} is a MultiModel model; shadow variants \
             do not support multi-model models",
            definition.shadow_production_variants[j].model_name
        )));
    }
    if multi_count > 0 && !definition.shadow_production_variants.is_empty() {
        return Err(validation(
            "ShadowProductionVariants: shadow variants do not support multi-model endpoints",
        ));
    }
    Ok(())
}

/// `ShadowProductionVariants`: valid variants (1-10), names distinct from the production
/// variants', a sampling percentage in 0-100 only there.
fn check_shadows(catalog: &crate::state::catalog::Catalog, name: &str) -> Result<(), ApiError> {
    let definition = &catalog.configs[name].definition;
    if let Some(j) = definition
        .production_variants
        .iter()
        .position(|v| v.plinth_sampling_percentage.is_some())
    {
        return Err(validation(format!(
            "ProductionVariants[{j}]: PlinthSamplingPercentage applies only to \
             ShadowProductionVariants"
        )));
    }
    let shadows = &definition.shadow_production_variants;
    if shadows.is_empty() {
        return Ok(());
    }
    let unresolved = catalog.unresolved(name).map_err(validation)?;
    check_variants(name, &unresolved.shadows_unchecked()).map_err(|p| {
        let at = p
            .index
            .map(|j| format!("ShadowProductionVariants[{j}]: "))
            .unwrap_or_else(|| "ShadowProductionVariants: ".into());
        validation(format!("{at}{}", p.message))
    })?;
    for (j, v) in shadows.iter().enumerate() {
        if definition
            .production_variants
            .iter()
            .any(|p| p.variant_name.eq_ignore_ascii_case(&v.variant_name))
        {
            return Err(validation(format!(
                "ShadowProductionVariants[{j}]: variant {:?} is also a production variant; \
                 variant names must be unique within an endpoint config",
                v.variant_name
            )));
        }
        if let Some(p) = v.plinth_sampling_percentage {
            if !(0.0..=100.0).contains(&p) {
                return Err(validation(format!(
                    "ShadowProductionVariants[{j}]: PlinthSamplingPercentage {p} is out of \
                     range; use 0-100"
                )));
            }
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointConfigNameInput {
    endpoint_config_name: String,
}

pub(crate) fn describe_endpoint_config(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    let input: EndpointConfigNameInput = parse(input)?;
    let catalog = stored.catalog();
    let record = catalog
        .configs
        .get(&input.endpoint_config_name)
        .ok_or_else(|| config_not_found(&input.endpoint_config_name))?;
    described(record, "EndpointConfig", "endpoint-config")
}

/// The configs an endpoint needs: the one it serves and the one it is moving to.
pub(crate) fn endpoint_configs_of(endpoint: &EndpointSnapshot) -> impl Iterator<Item = &str> {
    std::iter::once(endpoint.config_name.as_str()).chain(endpoint.pending_config.as_deref())
}

pub(crate) fn delete_endpoint_config(
    stored: &Stored,
    endpoints: &EndpointTable,
    input: Value,
) -> Result<Value, ApiError> {
    let input: EndpointConfigNameInput = parse(input)?;
    let name = input.endpoint_config_name;
    let mut catalog = stored.catalog();
    if !catalog.configs.contains_key(&name) {
        return Err(config_not_found(&name));
    }
    if let Some(endpoint) = endpoints
        .all()
        .values()
        .find(|e| endpoint_configs_of(e).any(|c| c == name))
    {
        return Err(in_use(format!(
            "Cannot delete endpoint configuration \"{}\": endpoint {} uses it, and Plinth needs \
             it to restore the endpoint. Update or delete the endpoint first.",
            arn("endpoint-config", &name),
            endpoint.name
        )));
    }
    stored
        .store
        .delete(Kind::EndpointConfig, &name)
        .map_err(internal)?;
    catalog.configs.remove(&name);
    tracing::info!(endpoint_config = %name, "endpoint config deleted");
    Ok(json!({}))
}

pub(crate) fn list_endpoint_configs(stored: &Stored, input: Value) -> Result<Value, ApiError> {
    let items = stored
        .catalog()
        .configs
        .values()
        .map(|c| Listed {
            name: c.name.clone(),
            created: c.created,
            modified: c.created,
            status: "",
            summary: json!({
                "EndpointConfigName": c.name,
                "EndpointConfigArn": arn("endpoint-config", &c.name),
                "CreationTime": c.created,
            }),
        })
        .collect();
    list(
        items,
        parse(input)?,
        &["Name", "CreationTime"],
        "EndpointConfigs",
    )
}
