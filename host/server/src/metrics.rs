//! Prometheus metrics with SageMaker's CloudWatch meanings, labelled by endpoint and
//! variant. The README's "Metrics" table documents each one; keep the two in step.
//!
//! Events that are CloudWatch metrics besides the request windows (a serverless instance's
//! setup, a multi-model load, a cache hit, an asynchronous job's time in the backlog) are
//! also gathered per second in [`Published`], exactly (each value one sample), for the
//! metric publisher to store; [`Timing`] and [`Tally`] record both at once.

use crate::state::metric_store::Point;
use plinth_policy::metric_data::{Aggregate, Datum};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{
    Counter, CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

const LABELS: &[&str] = &["endpoint", "variant"];

/// Latency buckets in seconds: 5 µs to 60 s (fine at the low end, where Plinth's own
/// overhead lives).
const BUCKETS: &[f64] = &[
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// CloudWatch events waiting for the metric publisher: per namespace and dimensions, per
/// second, each metric's samples. Nothing is kept until the publisher starts (no metric
/// store: nothing to keep them for).
#[derive(Default)]
pub(crate) struct Published {
    on: AtomicBool,
    pending: Mutex<HashMap<(&'static str, Dimensions), Seconds>>,
}

/// A series' samples by second.
type Seconds = BTreeMap<i64, Datum>;

/// A series' dimensions, shared by its handles.
pub(crate) type Dimensions = Arc<[(String, String)]>;

impl Published {
    /// From now on, keep what is recorded (the publisher takes it every second).
    pub(crate) fn start(&self) {
        self.on.store(true, Ordering::Relaxed);
    }

    /// One sample of `metric` (in its CloudWatch unit) for the series, in the current second.
    pub(crate) fn record(
        &self,
        namespace: &'static str,
        dimensions: &Dimensions,
        metric: &'static str,
        value: f64,
    ) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let second = crate::state::now().floor() as i64;
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let datum = pending
            .entry((namespace, dimensions.clone()))
            .or_default()
            .entry(second)
            .or_default();
        let sample = Aggregate::repeated(value, 1);
        match datum.get_mut(metric) {
            Some(a) => a.merge(&sample),
            None => {
                datum.insert(metric.to_owned(), sample);
            }
        }
    }

    /// The samples of seconds up to `upto`, as the metric store's points.
    pub(crate) fn take(&self, upto: i64) -> Vec<Point> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut points = Vec::new();
        pending.retain(|(namespace, dimensions), seconds| {
            let later = seconds.split_off(&(upto + 1));
            for (t, datum) in std::mem::replace(seconds, later) {
                points.push(Point {
                    namespace: (*namespace).to_owned(),
                    dimensions: dimensions.to_vec(),
                    t,
                    datum,
                });
            }
            !seconds.is_empty()
        });
        points
    }
}

/// A series' handle on [`Published`]: its namespace and dimensions.
#[derive(Clone)]
pub(crate) struct Publisher {
    sink: Arc<Published>,
    namespace: &'static str,
    dimensions: Dimensions,
}

impl Publisher {
    /// One sample of `metric` for this series now.
    pub(crate) fn record(&self, metric: &'static str, value: f64) {
        self.sink
            .record(self.namespace, &self.dimensions, metric, value);
    }
}

/// A duration recorded twice: in a Prometheus histogram (seconds) and as CloudWatch's
/// `metric` in microseconds.
pub(crate) struct Timing {
    histogram: Histogram,
    publisher: Publisher,
    metric: &'static str,
}

impl Timing {
    pub(crate) fn observe(&self, seconds: f64) {
        self.histogram.observe(seconds);
        self.publisher.record(self.metric, seconds * 1e6);
    }
}

/// A count recorded twice: a Prometheus counter, and one sample of `value` for CloudWatch's
/// `metric` (`ModelCacheHit`: 1 for a hit, 0 for a miss).
pub(crate) struct Tally {
    counter: IntCounter,
    publisher: Publisher,
    metric: &'static str,
    value: f64,
}

impl Tally {
    pub(crate) fn inc(&self) {
        self.counter.inc();
        self.publisher.record(self.metric, self.value);
    }
}

/// Every metric Plinth exports.
pub(crate) struct Metrics {
    registry: Registry,
    /// CloudWatch events for the metric publisher.
    pub(crate) published: Arc<Published>,
    pub(crate) invocations: IntCounterVec,
    pub(crate) errors_4xx: IntCounterVec,
    pub(crate) errors_5xx: IntCounterVec,
    pub(crate) model_errors: IntCounterVec,
    pub(crate) throttled: IntCounterVec,
    pub(crate) invocations_per_instance: CounterVec,
    pub(crate) model_latency: HistogramVec,
    pub(crate) overhead_latency: HistogramVec,
    pub(crate) instances: IntGaugeVec,
    pub(crate) instances_busy: IntGaugeVec,
    pub(crate) queue_depth: IntGaugeVec,
    pub(crate) instances_replaced: IntGaugeVec,
    pub(crate) batches: IntGaugeVec,
    pub(crate) batched_requests: IntGaugeVec,
    pub(crate) log_lines_dropped: IntGaugeVec,
    pub(crate) log_bytes_dropped: IntGaugeVec,
    pub(crate) outcomes: IntCounterVec,
    pub(crate) outcomes_rejected: IntCounterVec,
    pub(crate) shadow_dropped: IntCounterVec,
    pub(crate) data_capture_records: IntCounterVec,
    pub(crate) data_capture_dropped: IntCounterVec,
    pub(crate) model_quality: prometheus::GaugeVec,
    pub(crate) shadow_comparisons: IntCounterVec,
    pub(crate) shadow_agreements: IntCounterVec,
    pub(crate) deployments: IntCounterVec,
    pub(crate) new_fleet_share: prometheus::GaugeVec,
    pub(crate) model_setup: HistogramVec,
    pub(crate) serverless_concurrency: IntGaugeVec,
    pub(crate) model_loading_wait: HistogramVec,
    pub(crate) model_downloading: HistogramVec,
    pub(crate) model_loading: HistogramVec,
    pub(crate) model_unloading: HistogramVec,
    pub(crate) model_cache_hits: IntCounterVec,
    pub(crate) model_cache_misses: IntCounterVec,
    pub(crate) loaded_models: IntGaugeVec,
    pub(crate) model_cache_bytes: IntGaugeVec,
    pub(crate) model_invocations: IntGaugeVec,
    pub(crate) backlog: prometheus::GaugeVec,
    pub(crate) backlog_per_instance: prometheus::GaugeVec,
    pub(crate) oldest_request_age: prometheus::GaugeVec,
    pub(crate) backlog_without_capacity: prometheus::GaugeVec,
    pub(crate) time_in_backlog: HistogramVec,
    pub(crate) total_processing_time: HistogramVec,
    pub(crate) notifications: IntCounterVec,
    pub(crate) container_invocations: IntCounterVec,
    pub(crate) container_errors_4xx: IntCounterVec,
    pub(crate) container_errors_5xx: IntCounterVec,
    pub(crate) container_latency: HistogramVec,
}

/// One container's metrics in an inference pipeline (SageMaker's per-container metrics,
/// dimension `ContainerName`), resolved once.
pub(crate) struct ContainerMetrics {
    pub(crate) invocations: IntCounter,
    pub(crate) errors_4xx: IntCounter,
    pub(crate) errors_5xx: IntCounter,
    pub(crate) latency: Histogram,
}

const CONTAINER_LABELS: &[&str] = &["endpoint", "variant", "container"];

/// A multi-model variant's metrics (SageMaker's multi-model endpoint metrics), resolved
/// once.
pub(crate) struct MultiModelMetrics {
    pub(crate) loading_wait: Timing,
    pub(crate) downloading: Timing,
    pub(crate) loading: Timing,
    pub(crate) unloading: Timing,
    pub(crate) hits: Tally,
    pub(crate) misses: Tally,
}

/// How many of a multi-model variant's models get their own request count
/// (`plinth_model_invocations`): the most requested ones, so the label set stays bounded.
pub(crate) const HOTTEST_MODELS: usize = 10;

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounterVec {
    counter_with(registry, name, help, LABELS)
}

fn counter_with(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

/// Buckets for asynchronous jobs' times (seconds): 10 ms to 6 hours, a job's longest wait.
const ASYNC_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    21600.0,
];

/// A gauge per endpoint (SageMaker's endpoint-level metrics).
fn endpoint_gauge(registry: &Registry, name: &str, help: &str) -> prometheus::GaugeVec {
    let g = prometheus::GaugeVec::new(Opts::new(name, help), &["endpoint"]).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), LABELS).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn histogram(registry: &Registry, name: &str, help: &str) -> HistogramVec {
    histogram_with(registry, name, help, LABELS, BUCKETS)
}

fn histogram_with(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

/// One variant's request metrics, resolved once so that a request does not look its
/// labels up again.
pub(crate) struct VariantMetrics {
    pub(crate) invocations: IntCounter,
    pub(crate) invocations_per_instance: Counter,
    pub(crate) model_latency: Histogram,
    pub(crate) overhead_latency: Histogram,
    pub(crate) model_setup: Timing,
    pub(crate) errors_4xx: IntCounter,
    pub(crate) errors_5xx: IntCounter,
    pub(crate) model_errors: IntCounter,
    pub(crate) throttled: IntCounter,
}

impl Metrics {
    /// The multi-model metrics of `variant` of `endpoint`.
    pub(crate) fn multi_model(&self, endpoint: &str, variant: &str) -> MultiModelMetrics {
        let labels = [endpoint, variant];
        let publisher = self.publisher(endpoint, variant);
        let timing = |histogram: &HistogramVec, metric| Timing {
            histogram: histogram.with_label_values(&labels),
            publisher: publisher.clone(),
            metric,
        };
        let tally = |counter: &IntCounterVec, value| Tally {
            counter: counter.with_label_values(&labels),
            publisher: publisher.clone(),
            metric: "ModelCacheHit",
            value,
        };
        MultiModelMetrics {
            loading_wait: timing(&self.model_loading_wait, "ModelLoadingWaitTime"),
            downloading: timing(&self.model_downloading, "ModelDownloadingTime"),
            loading: timing(&self.model_loading, "ModelLoadingTime"),
            unloading: timing(&self.model_unloading, "ModelUnloadingTime"),
            hits: tally(&self.model_cache_hits, 1.0),
            misses: tally(&self.model_cache_misses, 0.0),
        }
    }

    /// The CloudWatch handle of `variant` of `endpoint` (`AWS/SageMaker`, `EndpointName`
    /// and `VariantName`).
    pub(crate) fn publisher(&self, endpoint: &str, variant: &str) -> Publisher {
        Publisher {
            sink: self.published.clone(),
            namespace: plinth_policy::metric_data::INVOCATION_NAMESPACE,
            dimensions: Arc::from(vec![
                ("EndpointName".to_owned(), endpoint.to_owned()),
                ("VariantName".to_owned(), variant.to_owned()),
            ]),
        }
    }

    /// The CloudWatch handle of `endpoint` alone (`AWS/SageMaker`, `EndpointName`: the
    /// asynchronous queue's metrics).
    pub(crate) fn endpoint_publisher(&self, endpoint: &str) -> Publisher {
        Publisher {
            sink: self.published.clone(),
            namespace: plinth_policy::metric_data::INVOCATION_NAMESPACE,
            dimensions: Arc::from(vec![("EndpointName".to_owned(), endpoint.to_owned())]),
        }
    }

    /// The request metrics of `variant` of `endpoint`.
    pub(crate) fn variant(&self, endpoint: &str, variant: &str) -> VariantMetrics {
        let labels = [endpoint, variant];
        VariantMetrics {
            invocations: self.invocations.with_label_values(&labels),
            invocations_per_instance: self.invocations_per_instance.with_label_values(&labels),
            model_latency: self.model_latency.with_label_values(&labels),
            overhead_latency: self.overhead_latency.with_label_values(&labels),
            model_setup: Timing {
                histogram: self.model_setup.with_label_values(&labels),
                publisher: self.publisher(endpoint, variant),
                metric: "ModelSetupTime",
            },
            errors_4xx: self.errors_4xx.with_label_values(&labels),
            errors_5xx: self.errors_5xx.with_label_values(&labels),
            model_errors: self.model_errors.with_label_values(&labels),
            throttled: self.throttled.with_label_values(&labels),
        }
    }

    pub(crate) fn new() -> Self {
        let r = Registry::new();
        let invocations_per_instance = CounterVec::new(
            Opts::new(
                "plinth_invocations_per_instance_total",
                "Invocations divided by the variant's instance count at the time (SageMaker InvocationsPerInstance).",
            ),
            LABELS,
        )
        .expect("valid metric");
        r.register(Box::new(invocations_per_instance.clone()))
            .expect("unique metric");
        Self {
            invocations: counter(&r, "plinth_invocations_total", "Requests routed to a variant (SageMaker Invocations)."),
            errors_4xx: counter(&r, "plinth_invocation_4xx_errors_total", "Requests answered with a client error, including model errors whose original status is 4xx (SageMaker Invocation4XXErrors)."),
            errors_5xx: counter(&r, "plinth_invocation_5xx_errors_total", "Requests answered with a server error, including model errors whose original status is 5xx or a timeout (SageMaker Invocation5XXErrors)."),
            model_errors: counter(&r, "plinth_invocation_model_errors_total", "Requests the model failed: handler errors, traps, timeouts (SageMaker InvocationModelErrors)."),
            throttled: counter(&r, "plinth_throttled_requests_total", "Requests refused because every instance was busy and the queue was full."),
            invocations_per_instance,
            model_latency: histogram(&r, "plinth_model_latency_seconds", "Time in the guest and the wasi-nn backend for successful requests (SageMaker ModelLatency)."),
            overhead_latency: histogram(&r, "plinth_overhead_latency_seconds", "Time Plinth added to successful requests: parsing, routing, queueing, scheduling (SageMaker OverheadLatency)."),
            instances: gauge(&r, "plinth_variant_instances", "Warm instances of the variant (SageMaker CurrentInstanceCount)."),
            instances_busy: gauge(&r, "plinth_variant_instances_busy", "Instances serving a request now."),
            queue_depth: gauge(&r, "plinth_variant_queue_depth", "Requests waiting for a busy instance."),
            instances_replaced: gauge(&r, "plinth_variant_instances_replaced", "Instances replaced after a trap or timeout since the variant was deployed."),
            batches: gauge(&r, "plinth_variant_batches", "Calls that served a batch of more than one queued request (max_batch_size > 1) since the variant was deployed."),
            batched_requests: gauge(&r, "plinth_variant_batched_requests", "Requests served in those batches since the variant was deployed."),
            log_lines_dropped: gauge(&r, "plinth_variant_guest_log_lines_dropped", "Lines of guest stdout and stderr not logged because an instance wrote more than its rate (1000 lines and 1 MiB per second), since the variant was deployed."),
            log_bytes_dropped: gauge(&r, "plinth_variant_guest_log_bytes_dropped", "Bytes of guest stdout and stderr not logged over the rate, since the variant was deployed."),
            outcomes: counter(&r, "plinth_experiment_outcomes_total", "Outcomes recorded for an experiment, by the variant that served the inference."),
            outcomes_rejected: counter_with(&r, "plinth_experiment_outcomes_rejected_total", "Outcomes not recorded, by reason (Unknown, Expired, Duplicate, Late, Invalid).", &["endpoint", "reason"]),
            shadow_dropped: counter(&r, "plinth_shadow_dropped_total", "Requests sampled for a shadow variant but dropped because its queue was full."),
            data_capture_records: counter(&r, "plinth_data_capture_records_total", "Captured invocations written to the data capture destination (DataCaptureConfig)."),
            model_quality: {
                let g = prometheus::GaugeVec::new(Opts::new("plinth_model_quality", "A model quality metric of a variant (variant empty: the whole endpoint) from the last execution of a monitoring schedule (label schedule), by SageMaker's name (label metric: accuracy, f1, auc, mae, ...)."), &["endpoint", "variant", "schedule", "metric"]).expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            data_capture_dropped: counter_with(&r, "plinth_data_capture_dropped_total", "Invocations sampled for data capture but not written, by reason: queue_full (the capture buffer was full; the request was served), write_failed (the destination refused the file).", &["endpoint", "variant", "reason"]),
            shadow_comparisons: counter_with(&r, "plinth_shadow_comparisons_total", "Shadow responses compared with production's, by kind: exact (every pair both answered), close (numeric output on both sides), argmax (predicted classes on both sides).", &["endpoint", "variant", "kind"]),
            shadow_agreements: counter_with(&r, "plinth_shadow_agreements_total", "Shadow responses that agreed with production's, by kind (see plinth_shadow_comparisons_total).", &["endpoint", "variant", "kind"]),
            deployments: counter_with(&r, "plinth_deployments_total", "Blue/green and rolling deployments that ended, by result: Completed, RolledBack, Failed.", &["endpoint", "result"]),
            new_fleet_share: {
                let g = prometheus::GaugeVec::new(Opts::new("plinth_deployment_new_fleet_traffic_share", "Fraction of requests a deployment in progress sends to the new fleet."), &["endpoint"]).expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            model_setup: histogram(&r, "plinth_model_setup_time_seconds", "Serverless: how long requests that found no idle instance waited for one to start, model_fn included (SageMaker ModelSetupTime)."),
            serverless_concurrency: gauge(&r, "plinth_serverless_concurrency", "Serverless: requests in flight now, against the variant's MaxConcurrency."),
            model_loading_wait: histogram(&r, "plinth_model_loading_wait_time_seconds", "Multi-model: how long requests waited for their model to be downloaded and loaded (SageMaker ModelLoadingWaitTime)."),
            model_downloading: histogram(&r, "plinth_model_downloading_time_seconds", "Multi-model: time to fetch a model from its prefix and unpack it (SageMaker ModelDownloadingTime)."),
            model_loading: histogram(&r, "plinth_model_loading_time_seconds", "Multi-model: time to load a model: its graphs and instances, model_fn included (SageMaker ModelLoadingTime)."),
            model_unloading: histogram(&r, "plinth_model_unloading_time_seconds", "Multi-model: time to unload a model (SageMaker ModelUnloadingTime)."),
            model_cache_hits: counter(&r, "plinth_model_cache_hit_total", "Multi-model: requests whose model was already loaded (SageMaker ModelCacheHit: its average is this over requests)."),
            model_cache_misses: counter(&r, "plinth_model_cache_miss_total", "Multi-model: requests that waited for their model to load."),
            loaded_models: gauge(&r, "plinth_loaded_model_count", "Multi-model: models loaded now (SageMaker LoadedModelCount)."),
            model_cache_bytes: gauge(&r, "plinth_model_cache_bytes", "Multi-model: bytes the loaded models (and loads in progress) take against the variant's PlinthModelCacheSizeInMB."),
            model_invocations: {
                let g = IntGaugeVec::new(Opts::new("plinth_model_invocations", "Multi-model: requests served by each of the variant's 10 most requested loaded models since it was loaded."), &["endpoint", "variant", "target_model"]).expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            backlog: endpoint_gauge(&r, "plinth_async_approximate_backlog_size", "Asynchronous: jobs queued or running (SageMaker ApproximateBacklogSize)."),
            backlog_per_instance: endpoint_gauge(&r, "plinth_async_approximate_backlog_size_per_instance", "Asynchronous: jobs queued or running over the endpoint's instances, the jobs themselves with none (SageMaker ApproximateBacklogSizePerInstance)."),
            oldest_request_age: endpoint_gauge(&r, "plinth_async_approximate_age_of_oldest_request_seconds", "Asynchronous: how long the oldest job queued or running has been in the queue (SageMaker ApproximateAgeOfOldestRequest)."),
            backlog_without_capacity: endpoint_gauge(&r, "plinth_async_has_backlog_without_capacity", "Asynchronous: 1 while jobs wait and the endpoint has no instance, else 0 (SageMaker HasBacklogWithoutCapacity)."),
            time_in_backlog: histogram_with(&r, "plinth_async_time_in_backlog_seconds", "Asynchronous: time from a job's acceptance to its first start (SageMaker TimeInBacklog).", &["endpoint"], ASYNC_BUCKETS),
            total_processing_time: histogram_with(&r, "plinth_async_total_processing_time_seconds", "Asynchronous: time from a job's acceptance to its output or failure object written (SageMaker TotalProcessingTime).", &["endpoint"], ASYNC_BUCKETS),
            notifications: counter_with(&r, "plinth_async_notifications_total", "Asynchronous: tries to deliver a notification, by result: Delivered, Retried (tried again later), Failed (given up).", &["endpoint", "result"]),
            container_invocations: counter_with(&r, "plinth_container_invocations_total", "Inference pipelines: requests sent to one container of a variant's model (SageMaker Invocations with ContainerName).", CONTAINER_LABELS),
            container_errors_4xx: counter_with(&r, "plinth_container_invocation_4xx_errors_total", "Inference pipelines: requests one container answered with a client error (SageMaker Invocation4XXErrors with ContainerName).", CONTAINER_LABELS),
            container_errors_5xx: counter_with(&r, "plinth_container_invocation_5xx_errors_total", "Inference pipelines: requests one container failed with a server error, a trap or a timeout (SageMaker Invocation5XXErrors with ContainerName).", CONTAINER_LABELS),
            container_latency: histogram_with(&r, "plinth_container_latency_seconds", "Inference pipelines: time one container took to answer, its wait for an instance included (SageMaker ContainerLatency).", CONTAINER_LABELS, BUCKETS),
            registry: r,
            published: Arc::default(),
        }
    }

    /// The metrics of container `container` of `variant` of `endpoint`.
    pub(crate) fn container(
        &self,
        endpoint: &str,
        variant: &str,
        container: &str,
    ) -> ContainerMetrics {
        let labels = [endpoint, variant, container];
        ContainerMetrics {
            invocations: self.container_invocations.with_label_values(&labels),
            errors_4xx: self.container_errors_4xx.with_label_values(&labels),
            errors_5xx: self.container_errors_5xx.with_label_values(&labels),
            latency: self.container_latency.with_label_values(&labels),
        }
    }

    /// Remove every per-variant gauge, before they are set again from the live table.
    pub(crate) fn reset_gauges(&self) {
        self.instances.reset();
        self.instances_busy.reset();
        self.queue_depth.reset();
        self.instances_replaced.reset();
        self.batches.reset();
        self.batched_requests.reset();
        self.log_lines_dropped.reset();
        self.log_bytes_dropped.reset();
        self.new_fleet_share.reset();
        self.loaded_models.reset();
        self.serverless_concurrency.reset();
        self.model_cache_bytes.reset();
        self.model_invocations.reset();
        self.backlog.reset();
        self.backlog_per_instance.reset();
        self.oldest_request_age.reset();
        self.backlog_without_capacity.reset();
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod published_tests {
    use super::*;
    use plinth_policy::metric_alarm::Statistic;

    #[test]
    fn events_wait_per_second_until_taken_and_only_once_started() {
        let metrics = Metrics::new();
        let timing = metrics.multi_model("e", "v");
        timing.loading.observe(0.5);
        assert!(
            metrics.published.take(i64::MAX).is_empty(),
            "kept before start"
        );
        metrics.published.start();
        timing.loading.observe(0.25);
        timing.loading.observe(0.75);
        timing.hits.inc();
        timing.misses.inc();
        timing.hits.inc();
        let now = crate::state::now().floor() as i64;
        assert!(metrics.published.take(now - 2).is_empty(), "none that old");
        let points = metrics.published.take(now + 1);
        // One point, or two if a second ended between the calls.
        assert!(!points.is_empty() && points.len() <= 2, "{points:?}");
        let mut datum = Datum::new();
        for p in &points {
            assert_eq!(p.namespace, "AWS/SageMaker");
            assert_eq!(
                p.dimensions,
                vec![
                    ("EndpointName".to_string(), "e".to_string()),
                    ("VariantName".to_string(), "v".to_string())
                ]
            );
            plinth_policy::metric_data::merge_datum(&mut datum, &p.datum);
        }
        let p = Point {
            namespace: String::new(),
            dimensions: Vec::new(),
            t: 0,
            datum,
        };
        let loading = &p.datum["ModelLoadingTime"];
        assert_eq!(loading.value(Statistic::SampleCount), Some(2.0));
        assert_eq!(loading.value(Statistic::Sum), Some(1_000_000.0));
        let hits = &p.datum["ModelCacheHit"];
        assert_eq!(hits.value(Statistic::Average), Some(2.0 / 3.0));
        assert!(metrics.published.take(i64::MAX).is_empty(), "taken once");
        // The Prometheus side saw every observation.
        assert_eq!(
            metrics
                .model_loading
                .with_label_values(&["e", "v"])
                .get_sample_count(),
            3
        );
    }
}
