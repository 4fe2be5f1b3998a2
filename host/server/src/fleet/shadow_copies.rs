//! Shadow variants (SageMaker's `ShadowProductionVariants`): a shadow receives a copy of a
//! sampled share of an endpoint's requests after production has answered them, compares
//! its response with production's, and never affects what the client gets.
//!
//! A request is offered to a shadow with a non-blocking send into a bounded queue; when the
//! queue is full the copy is dropped and counted. A worker task per shadow takes copies off
//! the queue and runs at most as many at once as the shadow has instances, so a slow or
//! failing shadow costs production nothing but the copy. Shadow invocations count in the
//! shadow variant's own metrics (invocations, errors, latencies) under its variant name;
//! agreement with production is counted here and exported as
//! `plinth_shadow_comparisons_total` and `plinth_shadow_agreements_total`.

use crate::fleet::variant::LiveVariant;
use plinth_policy::shadow::{compare, Tolerance};
use plinth_runtime::{Invocation, InvocationOutput};
use serde_json::{json, Value};
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

/// One copy waiting for the shadow: the request and what production answered.
struct Copy {
    request: Arc<Invocation>,
    production: Option<Answer>,
}

/// Production's successful answer, kept for the comparison.
struct Answer {
    body: Vec<u8>,
    content_type: String,
}

/// Counts since the shadow started.
#[derive(Default)]
pub(crate) struct ShadowStats {
    /// Requests sampled for the shadow.
    sampled: AtomicU64,
    /// Sampled copies dropped because the shadow's queue was full.
    dropped: AtomicU64,
    /// Copies the shadow answered successfully.
    succeeded: AtomicU64,
    /// Copies the shadow failed.
    failed: AtomicU64,
    /// Pairs where both answered (compared for exact equality).
    compared: AtomicU64,
    exact: AtomicU64,
    /// Pairs with numeric output on both sides, and those within tolerance.
    close_compared: AtomicU64,
    close: AtomicU64,
    /// Pairs with predicted classes on both sides, and those that agree in every row.
    argmax_compared: AtomicU64,
    argmax: AtomicU64,
}

/// A running shadow variant.
pub(crate) struct Shadow {
    pub(crate) live: Arc<LiveVariant>,
    /// The fraction of requests copied to it.
    pub(crate) sampling: f64,
    pub(crate) desired_instance_count: usize,
    pub(crate) weight: f64,
    queue: mpsc::Sender<Copy>,
    stats: Arc<ShadowStats>,
    dropped: prometheus::IntCounter,
}

impl Shadow {
    /// Start a shadow over `live`'s pool: a worker task takes copies off a queue of
    /// `live`'s queue length (at least 1) and runs up to `instances` at once. The task ends
    /// when the shadow is dropped.
    pub(crate) fn start(
        endpoint: &str,
        live: Arc<LiveVariant>,
        sampling: f64,
        weight: f64,
        instances: usize,
        metrics: &crate::metrics::Metrics,
    ) -> Arc<Shadow> {
        // Clamped as well as checked where configs are made: a queue length stored by an
        // earlier build must not panic the channel (its capacity has a ceiling).
        let capacity = live
            .serving
            .limits()
            .max_queue
            .clamp(1, plinth_policy::config::MAX_QUEUE_LENGTH);
        let (queue, mut copies) = mpsc::channel::<Copy>(capacity);
        let stats = Arc::new(ShadowStats::default());
        let worker = Worker {
            live: live.clone(),
            stats: stats.clone(),
            comparisons: kinds(&metrics.shadow_comparisons, endpoint, &live.name),
            agreements: kinds(&metrics.shadow_agreements, endpoint, &live.name),
        };
        let dropped = metrics
            .shadow_dropped
            .with_label_values(&[endpoint, live.name.as_str()]);
        let worker = Arc::new(worker);
        let running = Arc::new(Semaphore::new(instances.max(1)));
        tokio::spawn(async move {
            while let Some(copy) = copies.recv().await {
                let Ok(permit) = running.clone().acquire_owned().await else {
                    return;
                };
                let worker = worker.clone();
                tokio::spawn(async move {
                    worker.run(copy).await;
                    drop(permit);
                });
            }
        });
        Arc::new(Shadow {
            live,
            sampling,
            desired_instance_count: instances,
            weight,
            queue,
            stats,
            dropped,
        })
    }

    /// Offer the shadow a copy of a request production has answered (`production`: its
    /// answer when it succeeded). Never waits.
    pub(crate) fn offer(&self, request: &Arc<Invocation>, production: Option<&InvocationOutput>) {
        if self.sampling < 1.0 && rand::random::<f64>() >= self.sampling {
            return;
        }
        self.stats.sampled.fetch_add(1, Relaxed);
        let copy = Copy {
            request: request.clone(),
            production: production.map(|p| Answer {
                body: p.body.clone(),
                content_type: p.content_type.clone(),
            }),
        };
        if self.queue.try_send(copy).is_err() {
            self.stats.dropped.fetch_add(1, Relaxed);
            self.dropped.inc();
        }
    }

    /// The shadow's counts and agreement rates, for `DescribeShadowVariants`.
    pub(crate) fn report(&self) -> Value {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Relaxed);
        let rate = |num: u64, den: u64| {
            if den == 0 {
                Value::Null
            } else {
                json!(num as f64 / den as f64)
            }
        };
        // Successes first (Acquire): the comparisons of every success counted are then in
        // the loads that follow.
        let succeeded = s.succeeded.load(Acquire);
        let failed = get(&s.failed);
        json!({
            "SamplingPercentage": self.sampling * 100.0,
            "Sampled": get(&s.sampled),
            "Dropped": get(&s.dropped),
            "Invocations": succeeded + failed,
            "Errors": failed,
            "ErrorRate": rate(failed, succeeded + failed),
            "Compared": get(&s.compared),
            "ExactAgreement": rate(get(&s.exact), get(&s.compared)),
            "NumericComparisons": get(&s.close_compared),
            "NumericAgreement": rate(get(&s.close), get(&s.close_compared)),
            "ArgmaxComparisons": get(&s.argmax_compared),
            "ArgmaxAgreement": rate(get(&s.argmax), get(&s.argmax_compared)),
        })
    }
}

/// Labelled counters resolved once per shadow: exact, close, argmax.
type Kinds = [prometheus::IntCounter; 3];

fn kinds(counters: &prometheus::IntCounterVec, endpoint: &str, variant: &str) -> Kinds {
    ["exact", "close", "argmax"].map(|kind| counters.with_label_values(&[endpoint, variant, kind]))
}

/// What the worker task needs.
struct Worker {
    live: Arc<LiveVariant>,
    stats: Arc<ShadowStats>,
    comparisons: Kinds,
    agreements: Kinds,
}

impl Worker {
    async fn run(&self, copy: Copy) {
        let started = std::time::Instant::now();
        let result = self.live.serving.invoke(copy.request).await;
        crate::fleet::variant::record_invocation(&self.live, &result, started);
        let s = &self.stats;
        let output = match result {
            Ok(output) => output,
            Err(e) => {
                s.failed.fetch_add(1, Relaxed);
                tracing::debug!(variant = %self.live.name, error = %e, "shadow invocation failed");
                return;
            }
        };
        // A success is counted after its comparisons (Release, read with Acquire by the
        // report), so that a report never counts an invocation whose comparison it lacks.
        let Some(production) = copy.production else {
            s.succeeded.fetch_add(1, Release);
            return;
        };
        let c = compare(
            &production.body,
            &production.content_type,
            &output.body,
            &output.content_type,
            Tolerance::default(),
        );
        let count = |i: usize, agreed: Option<bool>, n: &AtomicU64, yes: &AtomicU64| {
            if let Some(agreed) = agreed {
                n.fetch_add(1, Relaxed);
                self.comparisons[i].inc();
                if agreed {
                    yes.fetch_add(1, Relaxed);
                    self.agreements[i].inc();
                }
            }
        };
        count(0, Some(c.exact), &s.compared, &s.exact);
        count(1, c.close, &s.close_compared, &s.close);
        count(2, c.argmax, &s.argmax_compared, &s.argmax);
        s.succeeded.fetch_add(1, Release);
    }
}
