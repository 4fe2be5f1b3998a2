//! A live variant: its warm pool (the runtime's `VariantPool`), its metrics and its recent
//! request window, shared by every snapshot that routes to it; how its runtime spec is made
//! from a model and a variant; and how each invocation is counted.

use crate::error::ApiError;
use plinth_policy::config::{Model, Variant};
use plinth_runtime::{InvokeError, Limits, VariantPool, VariantSpec};
use std::sync::Arc;
use std::time::Duration;

/// A variant's warm pool, shared by every snapshot that routes to it.
pub(crate) struct LiveVariant {
    pub(crate) name: String,
    /// `name` as the value of a response's `x-Amzn-Invoked-Production-Variant`, made once.
    pub(crate) name_header: axum::http::HeaderValue,
    pub(crate) model_name: String,
    /// The model as deployed, to tell whether a new endpoint config changes it.
    pub(crate) model: Model,
    pub(crate) pool: Arc<VariantPool>,
    /// Its request metrics, resolved once.
    pub(crate) metrics: crate::metrics::VariantMetrics,
    /// Its recent requests, for alarms.
    pub(crate) recent: super::recent::RecentRequests,
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
            startup_deadline: Duration::from_secs(variant.startup_timeout_seconds),
            max_response_bytes: model.max_response_bytes,
            graphs_from_bytes: model.graphs_from_bytes,
            max_queue: variant.max_queue_length,
            max_batch: variant.max_batch_size,
        },
        backend: model.backend,
    }
}

/// Count one invocation of `variant` in its metrics and its alarm window (`started`: when
/// the request arrived); for a failure, the error to answer with.
pub(crate) fn record_invocation(
    variant: &LiveVariant,
    result: &Result<plinth_runtime::InvocationOutput, InvokeError>,
    started: std::time::Instant,
) -> Option<ApiError> {
    use super::recent::second_of;
    use plinth_policy::metric_alarm::{Outcome, Sample};
    let now = std::time::Instant::now();
    let (total, second) = (now.saturating_duration_since(started), second_of(now));
    let m = &variant.metrics;
    m.invocations.inc();
    let instances = variant.pool.instances().max(1);
    m.invocations_per_instance.inc_by(1.0 / instances as f64);
    match result {
        Ok(output) => {
            let overhead = total.saturating_sub(output.model_latency);
            m.model_latency.observe(output.model_latency.as_secs_f64());
            m.overhead_latency.observe(overhead.as_secs_f64());
            variant.recent.record_at(
                second,
                &Sample {
                    outcome: Outcome::Success,
                    model_error: false,
                    model_latency: Some(output.model_latency),
                    overhead_latency: overhead,
                },
            );
            None
        }
        Err(error) => {
            let api_error = ApiError::from_invoke(error, &variant.name);
            if matches!(error, InvokeError::Throttled { .. }) {
                m.throttled.inc();
            }
            let model_error = error.original_status().is_some();
            if model_error {
                m.model_errors.inc();
            }
            let server_side = api_error.status().is_server_error()
                || matches!(error.original_status(), Some(0) | Some(500..));
            if server_side {
                m.errors_5xx.inc();
            } else {
                m.errors_4xx.inc();
            }
            variant.recent.record_at(
                second,
                &Sample {
                    outcome: if server_side {
                        Outcome::ServerError
                    } else {
                        Outcome::ClientError
                    },
                    model_error,
                    model_latency: None,
                    overhead_latency: total,
                },
            );
            Some(api_error)
        }
    }
}
