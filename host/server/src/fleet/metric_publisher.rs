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
use super::recent::current_second;
use crate::state::metric_store::{MetricStore, Point};
use plinth_policy::metric_alarm::Stats;
use plinth_policy::metric_data::{request_aggregates, INVOCATION_NAMESPACE};
use std::collections::HashMap;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
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
    plinth_runtime::account_cpu(true);
    let seen: Arc<Mutex<CpuSeen>> = Arc::default();
    // Both due at the first tick, merging first: nothing is expired before it is merged.
    let mut rolled = Instant::now()
        .checked_sub(ROLL_UP_EVERY)
        .unwrap_or_else(Instant::now);
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
        let (fleet, store, seen) = (fleet.clone(), store.clone(), seen.clone());
        // Reading the windows and the backlog, and the store's writes: off the async workers.
        let done = tokio::task::spawn_blocking(move || -> Result<(), String> {
            // The windows' seconds on the wall clock as it reads now (the clock queries,
            // expiry and the events use), however either clock has moved since the start.
            let wall = Wall::now();
            let mark = wall.of(upto);
            if let Some((first, last)) = range {
                let mut points = collect(&fleet, first, last, &wall);
                points.extend(fleet.metrics.published.take(mark));
                points.extend(gauges(&fleet, mark));
                points.extend(instance_metrics(
                    &fleet,
                    &mut seen.lock().unwrap_or_else(|e| e.into_inner()),
                    mark,
                ));
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

/// The wall clock's second of a window second, as of one moment.
struct Wall {
    unix: i64,
    second: u64,
}

impl Wall {
    fn now() -> Self {
        Self {
            second: current_second(),
            unix: crate::state::now().floor() as i64,
        }
    }

    /// The Unix time of window second `second`.
    fn of(&self, second: u64) -> i64 {
        self.unix - (self.second as i64 - second as i64)
    }
}

/// Every live variant's requests in seconds `first..=last`: one point per endpoint, variant
/// name and second that saw a request.
fn collect(fleet: &Fleet, first: u64, last: u64, wall: &Wall) -> Vec<Point> {
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
            t: wall.of(second),
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

/// Each live variant's run time when last read, and when.
type CpuSeen = HashMap<usize, (u64, Instant)>;

/// CloudWatch's instance metrics, namespace `/aws/sagemaker/Endpoints`, per variant
/// (dimensions `EndpointName`, `VariantName`; both fleets of a deployment together, shadows
/// apart), at second `t`: `CPUUtilization`, the time its guest calls and backend jobs ran
/// since the last reading over the time passed (100 % is one core busy; SageMaker's is
/// summed over cores too), and `MemoryUtilization`, the bytes its instances hold against
/// their memory limits together (an inference pipeline's containers and a multi-model
/// variant's loaded models summed; a model unloaded takes its run time with it). A variant's
/// first reading gives no `CPUUtilization`.
fn instance_metrics(fleet: &Fleet, seen: &mut CpuSeen, t: i64) -> Vec<Point> {
    use plinth_policy::metric_data::{Aggregate, INSTANCE_NAMESPACE};
    let now = Instant::now();
    // Per endpoint and variant: CPU percent (if read before), bytes held, their limit.
    let mut per: BTreeMap<(String, String), (Option<f64>, usize, usize)> = BTreeMap::new();
    let mut present = HashSet::new();
    for (endpoint, snapshot) in fleet.endpoints.all().iter() {
        let shadows = snapshot
            .shadows
            .iter()
            .chain(snapshot.new_fleet.iter().flat_map(|n| n.shadows.iter()))
            .map(|s| &s.live);
        for live in snapshot.serving().map(|v| &v.live).chain(shadows) {
            let key = Arc::as_ptr(live) as usize;
            if !present.insert(key) {
                continue;
            }
            let stats = live.serving.stats();
            let cpu = seen
                .insert(key, (stats.cpu_nanos, now))
                .and_then(|(before, at)| {
                    let elapsed = now.duration_since(at).as_nanos() as f64;
                    (elapsed > 0.0)
                        .then(|| stats.cpu_nanos.saturating_sub(before) as f64 / elapsed * 100.0)
                });
            let entry = per
                .entry((endpoint.clone(), live.name.clone()))
                .or_insert((None, 0, 0));
            if let Some(cpu) = cpu {
                entry.0 = Some(entry.0.unwrap_or(0.0) + cpu);
            }
            entry.1 += stats.memory_bytes;
            entry.2 += stats.memory_limit_bytes;
        }
    }
    seen.retain(|key, _| present.contains(key));
    per.into_iter()
        .map(|((endpoint, variant), (cpu, used, limit))| {
            let mut datum = plinth_policy::metric_data::Datum::new();
            if let Some(cpu) = cpu {
                datum.insert("CPUUtilization".into(), Aggregate::repeated(cpu, 1));
            }
            if limit > 0 {
                let percent = used as f64 / limit as f64 * 100.0;
                datum.insert("MemoryUtilization".into(), Aggregate::repeated(percent, 1));
            }
            Point {
                namespace: INSTANCE_NAMESPACE.to_owned(),
                dimensions: vec![
                    ("EndpointName".to_owned(), endpoint),
                    ("VariantName".to_owned(), variant),
                ],
                t,
                datum,
            }
        })
        .filter(|p| !p.datum.is_empty())
        .collect()
}
