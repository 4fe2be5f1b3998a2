//! DescribeShadowVariants and PromoteShadowVariant (Plinth's): how each shadow compares
//! with production, and turning a shadow into the production variant.

use super::common::{
    config_not_found, endpoint_not_found, internal, named_endpoint, parse, validation,
};
use super::endpoint_configs::create_endpoint_config;
use super::endpoints::deployment_config;
use crate::error::ApiError;
use crate::fleet::deploy;
use crate::fleet::table::EndpointTable;
use crate::fleet::Fleet;
use crate::state::arn;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// DescribeShadowVariants: each shadow next to production: invocations, errors, latency
/// over the last ten minutes, and agreement since it started.
pub(crate) fn describe_shadow_variants(
    endpoints: &EndpointTable,
    input: Value,
) -> Result<Value, ApiError> {
    let endpoint = named_endpoint(endpoints, input)?;
    let recent = |live: &crate::fleet::variant::LiveVariant| {
        use crate::fleet::recent::current_second;
        use plinth_policy::metric_alarm::{Metric, Statistic, RETAINED_SECONDS};
        let now = current_second();
        let stats = live
            .recent
            .stats(now.saturating_sub(RETAINED_SECONDS - 1), now);
        let value = |m, s| stats.value(m, s).map_or(Value::Null, |v| json!(v));
        json!({
            "Invocations": stats.value(Metric::Invocations, Statistic::Sum).unwrap_or(0.0),
            "ErrorRate": value(Metric::Invocation5XXErrors, Statistic::Average),
            "ModelLatencyP50": value(Metric::ModelLatency, Statistic::Percentile(50.0)),
            "ModelLatencyP99": value(Metric::ModelLatency, Statistic::Percentile(99.0)),
        })
    };
    let production: Vec<Value> = endpoint
        .variants
        .iter()
        .map(|v| {
            let mut r = json!({ "VariantName": v.live.name, "ModelName": v.live.model_name });
            r["Recent"] = recent(&v.live);
            r
        })
        .collect();
    let shadows: Vec<Value> = endpoint
        .shadows
        .iter()
        .map(|s| {
            let mut r = s.report();
            r["VariantName"] = json!(s.live.name);
            r["ModelName"] = json!(s.live.model_name);
            r["Recent"] = recent(&s.live);
            r
        })
        .collect();
    Ok(json!({
        "EndpointName": endpoint.name,
        "EndpointConfigName": endpoint.config_name,
        "ProductionVariants": production,
        "ShadowProductionVariants": shadows,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PromoteInput {
    endpoint_name: String,
    shadow_variant_name: String,
    /// The name of the endpoint config the promotion creates.
    endpoint_config_name: Option<String>,
    deployment_config: Option<Value>,
}

/// PromoteShadowVariant: a new endpoint config in which the shadow is the only production
/// variant (the other shadows stay shadows), deployed with UpdateEndpoint (all at once,
/// keeping the shadow's warm instances, unless a `DeploymentConfig` is given).
pub(crate) fn promote_shadow_variant(state: &Arc<Fleet>, input: Value) -> Result<Value, ApiError> {
    let input: PromoteInput = parse(input)?;
    let endpoint = state
        .endpoints
        .get(&input.endpoint_name)
        .ok_or_else(|| endpoint_not_found(&input.endpoint_name))?;
    let deployment = deployment_config(input.deployment_config)?;
    let current = state
        .catalog()
        .configs
        .get(&endpoint.config_name)
        .cloned()
        .ok_or_else(|| config_not_found(&endpoint.config_name))?;
    let mut definition = current.definition;
    let Some(index) = definition
        .shadow_production_variants
        .iter()
        .position(|v| v.variant_name == input.shadow_variant_name)
    else {
        return Err(validation(format!(
            "Endpoint {} has no shadow variant {:?}; its shadow variants are {:?}",
            endpoint.name,
            input.shadow_variant_name,
            definition
                .shadow_production_variants
                .iter()
                .map(|v| v.variant_name.as_str())
                .collect::<Vec<_>>()
        )));
    };
    let mut promoted = definition.shadow_production_variants.remove(index);
    promoted.plinth_sampling_percentage = None;
    promoted.initial_variant_weight = 1.0;
    definition.production_variants = vec![promoted];
    definition.plinth_experiment = None;
    let config_name = match input.endpoint_config_name {
        Some(name) => name,
        None => {
            let catalog = state.catalog();
            let base: String = format!(
                "{}-promoted-{}",
                endpoint.config_name, input.shadow_variant_name
            )
            .chars()
            .take(55)
            .collect();
            let base = base.trim_end_matches('-').to_string();
            (1..)
                .map(|n| {
                    if n == 1 {
                        base.clone()
                    } else {
                        format!("{base}-{n}")
                    }
                })
                .find(|n| catalog.config_named(n).is_none())
                .expect("some suffix is free")
        }
    };
    let mut config_input = serde_json::to_value(&definition).map_err(internal)?;
    config_input["EndpointConfigName"] = json!(config_name);
    create_endpoint_config(&state.stored, config_input)?;
    deploy::update_endpoint(state, &endpoint.name, &config_name, deployment, false)?;
    Ok(json!({
        "EndpointArn": arn("endpoint", &endpoint.name),
        "EndpointConfigName": config_name,
    }))
}
