//! ListLoadedModels (Plinth's): a multi-model endpoint's loaded models, per variant, with
//! each one's size, download and load time, requests and last use (`plinth models`).

use super::common::{named_endpoint, validation};
use crate::error::ApiError;
use crate::fleet::table::EndpointTable;
use crate::fleet::variant::Serving;
use serde_json::{json, Value};

/// ListLoadedModels: every variant serving requests (both fleets during a deployment), its
/// model cache's budget and use, and its loaded models, most recently used first.
pub(crate) fn list_loaded_models(
    endpoints: &EndpointTable,
    input: Value,
) -> Result<Value, ApiError> {
    let endpoint = named_endpoint(endpoints, input)?;
    let mut variants = Vec::new();
    for v in endpoint.serving() {
        let Serving::Multi(cache) = &v.live.serving else {
            continue;
        };
        let (count, used) = cache.usage();
        variants.push(json!({
            "VariantName": v.live.name,
            "ModelName": v.live.model_name,
            "ModelCacheSizeInBytes": cache.budget(),
            "UsedBytes": used,
            "LoadedModelCount": count,
            "Models": cache.summaries(),
        }));
    }
    if variants.is_empty() && !endpoint.variants.is_empty() {
        return Err(validation(format!(
            "Endpoint {} is not a multi-model endpoint: its models' Mode is SingleModel",
            endpoint.name
        )));
    }
    Ok(json!({ "EndpointName": endpoint.name, "Variants": variants }))
}
