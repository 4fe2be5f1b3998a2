//! Publishes CloudWatch's invocation metrics to the metric store (`state::metric_store`).
//! Once a second, every second that has ended (with [`GRACE`] for requests finishing across
//! its boundary) of every live variant's recent-request window (both fleets of a deployment
//! and the shadow variants, merged by variant name) becomes one datapoint of namespace
//! `AWS/SageMaker` with dimensions `EndpointName` and `VariantName`
//! (`plinth_policy::metric_data::request_aggregates`). Every [`ROLL_UP_EVERY`] the coarser
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
        let points = if upto >= next {
            let points = collect(&fleet, next, upto);
            next = upto + 1;
            points
        } else {
            Vec::new()
        };
        let roll_up = rolled.elapsed() >= ROLL_UP_EVERY;
        let expire = expired.elapsed() >= EXPIRE_EVERY;
        if roll_up {
            rolled = Instant::now();
        }
        if expire {
            expired = Instant::now();
        }
        if points.is_empty() && !roll_up && !expire {
            continue;
        }
        let store = store.clone();
        let mark = unix_second(upto);
        let done = tokio::task::spawn_blocking(move || -> Result<(), String> {
            store.record(&points)?;
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
