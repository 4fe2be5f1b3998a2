//! Publishes CloudWatch's invocation metrics to the metric store (`state::metric_store`).
//! Once a second, every second that has ended (with [`GRACE`] for requests finishing across
//! its boundary) of every live variant's recent-request window (both fleets of a deployment
//! and the shadow variants, merged by variant name) becomes one datapoint of namespace
//! `AWS/SageMaker` with dimensions `EndpointName` and `VariantName`
//! (`plinth_policy::metric_data::request_aggregates`); with them, the events gathered in
//! `metrics::Published` (serverless setup, multi-model loads and cache hits, asynchronous
//! jobs' times) and gauges sampled each second (the asynchronous backlog, loaded models). Every [`ROLL_UP_EVERY`] the coarser
//! resolutions are merged from the seconds; every [`EXPIRE_EVERY`] data past its retention
//! is deleted. The store's calls run on the blocking pool, off the request path.

use super::deployer::Fleet;
use super::recent::{current_second, unix_second};
use crate::state::metric_store::{MetricStore, Point};
use plinth_policy::metric_alarm::Stats;
use plinth_policy::metric_data::{request_aggregates, INVOCATION_NAMESPACE};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long after a second ends it is published: a request that finished in it may still be
/// being recorded.
const GRACE: u64 = 2;

/// How often the coarser resolutions are merged.
const ROLL_UP_EVERY: Duration = Duration::from_secs(10);

/// How often expired data is deleted.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// Publish until the process ends.
pub(crate) async fn run(fleet: Arc<Fleet>, store: Arc<MetricStore>) {
    // The first second not yet published: the windows hold nothing from before the clock's
    // epoch.
    let mut next = 0;
    fleet.metrics.published.start();
    let mut rolled = Instant::now();
    let mut expired = Instant::now()
        .checked_sub(EXPIRE_EVERY)
        .unwrap_or_else(Instant::now);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // Seconds up to `upto` have ended, with their grace.
        let Some(upto) = current_second().checked_sub(GRACE) else {
            continue;
        };
        // The seconds to publish now, if any.
        let range = (upto >= next).then_some((next, upto));
        next = next.max(upto + 1);
        let roll_up = rolled.elapsed() >= ROLL_UP_EVERY;
        let expire = expired.elapsed() >= EXPIRE_EVERY;
        if roll_up {
            rolled = Instant::now();
        }
        if expire {
            expired = Instant::now();
        }
        if range.is_none() && !roll_up && !expire {
            continue;
        }
        let (fleet, store) = (fleet.clone(), store.clone());
        let mark = unix_second(upto);
        // Reading the windows and the backlog, and the store's writes: off the async workers.
        let done = tokio::task::spawn_blocking(move || -> Result<(), String> {
            if let Some((first, last)) = range {
                let mut points = collect(&fleet, first, last);
                points.extend(fleet.metrics.published.take(mark));
                points.extend(gauges(&fleet, mark));
                store.record(&points)?;
            }
            if roll_up {
                store.roll_up(mark)?;
            }
            if expire {
                store.expire(crate::state::now() as i64)?;
            }
            Ok(())
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "metrics could not be stored"),
            Err(e) => tracing::error!(error = %e, "the metric publisher failed"),
        }
    }
}

/// Every live variant's requests in seconds `first..=last`: one point per endpoint, variant
/// name and second that saw a request.
pub(crate) fn collect(fleet: &Fleet, first: u64, last: u64) -> Vec<Point> {
    // Seconds further back than a window keeps are gone.
    let first = first.max(last.saturating_sub(plinth_policy::metric_alarm::RETAINED_SECONDS - 1));
    let table = fleet.endpoints.all();
    let mut seen = HashSet::new();
    let mut seconds: BTreeMap<(String, String, u64), (Stats, u64)> = BTreeMap::new();
    for (endpoint, snapshot) in table.iter() {
        let fleets = snapshot.serving().map(|v| &v.live);
        let shadows = snapshot
            .shadows
            .iter()
            .chain(snapshot.new_fleet.iter().flat_map(|n| n.shadows.iter()))
            .map(|s| &s.live);
        for live in fleets.chain(shadows) {
            // A variant kept by a config change is in both of its snapshots' lists once.
            if !seen.insert(Arc::as_ptr(live)) {
                continue;
            }
            let instances = live.serving.stats().instances as u64;
            let window = live.recent.lock();
            for second in first..=last {
                let stats = window.stats(second, second);
                if stats.count == 0 {
                    continue;
                }
                let entry = seconds
                    .entry((endpoint.clone(), live.name.clone(), second))
                    .or_default();
                entry.0.merge(&stats);
                entry.1 += instances;
            }
        }
    }
    seconds
        .into_iter()
        .map(|((endpoint, variant, second), (stats, instances))| Point {
            namespace: INVOCATION_NAMESPACE.to_owned(),
            dimensions: vec![
                ("EndpointName".to_owned(), endpoint),
                ("VariantName".to_owned(), variant),
            ],
            t: unix_second(second),
            datum: request_aggregates(&stats, instances),
        })
        .collect()
}

/// The gauges CloudWatch has, sampled now and stored at second `t`: each asynchronous
/// endpoint's backlog (`ApproximateBacklogSize`, `ApproximateBacklogSizePerInstance`,
/// `ApproximateAgeOfOldestRequest`, `HasBacklogWithoutCapacity`, dimension `EndpointName`)
/// and each multi-model variant's `LoadedModelCount`.
fn gauges(fleet: &Fleet, t: i64) -> Vec<Point> {
    use plinth_policy::async_inference::BacklogMetric;
    use plinth_policy::metric_data::Aggregate;
    let mut points = Vec::new();
    for endpoint in fleet.endpoints.all().values() {
        if super::async_jobs::config_of(fleet, &endpoint.config_name).is_some() {
            if let Some(backlog) = super::async_jobs::backlog(fleet, &endpoint.name) {
                points.push(Point {
                    namespace: INVOCATION_NAMESPACE.to_owned(),
                    dimensions: vec![("EndpointName".to_owned(), endpoint.name.clone())],
                    t,
                    datum: BacklogMetric::ALL
                        .into_iter()
                        .map(|m| {
                            (
                                m.as_str().to_owned(),
                                Aggregate::repeated(m.value(&backlog), 1),
                            )
                        })
                        .collect(),
                });
            }
        }
        let mut loaded: BTreeMap<&str, usize> = BTreeMap::new();
        for live in endpoint.serving().map(|v| &v.live) {
            if let super::variant::Serving::Multi(cache) = &live.serving {
                *loaded.entry(live.name.as_str()).or_default() += cache.usage().0;
            }
        }
        for (variant, count) in loaded {
            points.push(Point {
                namespace: INVOCATION_NAMESPACE.to_owned(),
                dimensions: vec![
                    ("EndpointName".to_owned(), endpoint.name.clone()),
                    ("VariantName".to_owned(), variant.to_owned()),
                ],
                t,
                datum: [(
                    "LoadedModelCount".to_owned(),
                    Aggregate::repeated(count as f64, 1),
                )]
                .into_iter()
                .collect(),
            });
        }
    }
    points
}
