//! Model Monitor's executions: each `Scheduled` monitoring schedule runs when it is due
//! (`plinth_policy::monitoring_schedule`). An execution reads the endpoint's captured
//! records in its window (the files under `<capture destination>/<endpoint>/<variant>/`,
//! through the storage layer), the ground truth under the job definition's prefix, joins
//! them by inference id (or event id), and writes SageMaker's `statistics.json` (and, with a
//! baseline, `constraint_violations.json`) for the endpoint and for each variant under
//! `<output>/<endpoint>/<schedule>/yyyy/mm/dd/hh/` (`variants/<variant>/` for each
//! variant). The execution is stored (`Pending`... `Completed`, `CompletedWithViolations`
//! or `Failed` with its reason) with each variant's metrics, which are also exported as
//! `plinth_model_quality` and read by quality alarms.

use super::Fleet;
use crate::ops::monitoring::{quality_job, schedule_of, QualityJob};
use crate::state::store::Kind;
use crate::state::{arn, now};
use plinth_policy::data_capture::utc;
use plinth_policy::model_quality::{self as quality, Joined, ProblemType};
use plinth_policy::monitoring_schedule as schedule;
use plinth_storage::Location;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The largest capture or ground truth file an execution reads.
const MAX_FILE_BYTES: u64 = 1 << 30;
const HOUR_MS: i64 = 3_600_000;

/// The schedules whose execution is running, and the metrics the executions found.
#[derive(Default)]
pub(crate) struct Running(Mutex<HashSet<String>>, Mutex<Vec<QualityPoint>>);

/// Points kept for quality alarms (the oldest dropped first).
const POINTS_KEPT: usize = 100_000;

/// One metric an execution found, for quality alarms: of the endpoint (no variant, no
/// config), of a variant (over every config), of a config's fleet, or of a variant of one.
#[derive(Debug, Clone)]
pub(crate) struct QualityPoint {
    pub(crate) endpoint: String,
    pub(crate) variant: Option<String>,
    pub(crate) config: Option<String>,
    pub(crate) metric: String,
    /// When the execution ended (`recent::current_second`).
    pub(crate) second: u64,
    pub(crate) value: f64,
}

impl Running {
    /// The `(second, value)` of `metric` for `endpoint`, of `variant` (all when `None`) and
    /// of `config`'s fleet (every config's when `None`).
    pub(crate) fn values(
        &self,
        endpoint: &str,
        variant: Option<&str>,
        config: Option<&str>,
        metric: &str,
    ) -> Vec<(u64, f64)> {
        self.1
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|p| {
                p.endpoint == endpoint
                    && p.variant.as_deref() == variant
                    && p.config.as_deref() == config
                    && p.metric == metric
            })
            .map(|p| (p.second, p.value))
            .collect()
    }

    fn record(&self, points: Vec<QualityPoint>) {
        let mut kept = self.1.lock().unwrap_or_else(|e| e.into_inner());
        kept.extend(points);
        if kept.len() > POINTS_KEPT {
            let excess = kept.len() - POINTS_KEPT;
            kept.drain(..excess);
        }
    }
}

fn now_ms() -> i64 {
    (now() * 1000.0) as i64
}

/// Run due executions, checked twice a second, for as long as the fleet lives.
pub(crate) async fn run(fleet: Arc<Fleet>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = start_due(&fleet) {
            tracing::warn!(error = %e, "reading the monitoring schedules failed");
        }
    }
}

/// Start the executions that are due.
fn start_due(fleet: &Arc<Fleet>) -> Result<(), crate::state::store::StoreError> {
    let store = &fleet.stored.store;
    let schedules = store.definitions(Kind::MonitoringSchedule)?;
    if schedules.is_empty() {
        return Ok(());
    }
    let executions = store.executions(None)?;
    let mut last: HashMap<String, i64> = HashMap::new();
    for x in &executions {
        if let (Some(name), Some(t)) = (
            x.execution["MonitoringScheduleName"].as_str(),
            x.execution["ScheduledTime"].as_f64(),
        ) {
            last.insert(name.to_lowercase(), (t * 1000.0).round() as i64);
        }
    }
    let now = now_ms();
    for s in schedules {
        if s.definition["MonitoringScheduleStatus"] != "Scheduled" {
            continue;
        }
        let config = &s.definition["MonitoringScheduleConfig"];
        let Ok((parsed, window)) = schedule_of(config) else {
            continue;
        };
        let created = (s.created * 1000.0).round() as i64;
        let previous = last.get(&s.name.to_lowercase()).copied();
        // The latest time due at or before now (after a stop, missed ones are not run).
        let mut due = None;
        let mut after = previous.unwrap_or(created - 1);
        while let Some(t) =
            schedule::next(parsed, created, after, previous.is_some() || due.is_some())
        {
            if t > now || Some(t) == due {
                break;
            }
            due = Some(t);
            after = t;
        }
        let Some(scheduled) = due else {
            continue;
        };
        if !fleet
            .monitoring
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(s.name.to_lowercase())
        {
            continue;
        }
        let definition = config["MonitoringJobDefinitionName"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let fleet = fleet.clone();
        tokio::spawn(async move {
            execute(&fleet, &s.name, &definition, scheduled, window).await;
            fleet
                .monitoring
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&s.name.to_lowercase());
        });
    }
    Ok(())
}

/// What an execution found.
struct Analysis {
    violations: bool,
    output: String,
    /// Per variant, then `None` for the whole endpoint: item count and scalar metrics with
    /// their standard deviations.
    results: Vec<(Option<String>, usize, Value)>,
    /// Per endpoint config, and per variant of each: item count and metrics.
    fleets: Vec<(String, Option<String>, usize, Value)>,
    counts: Value,
}

/// One execution of `schedule` scheduled at `scheduled` (ms), stored from start to end.
async fn execute(
    fleet: &Arc<Fleet>,
    schedule_name: &str,
    definition_name: &str,
    scheduled: i64,
    window: Option<(i64, i64)>,
) {
    let store = &fleet.stored.store;
    let definition = store
        .definition(Kind::ModelQualityJobDefinition, definition_name)
        .ok()
        .flatten();
    let job = definition
        .as_ref()
        .ok_or_else(|| format!("job definition {definition_name} no longer exists"))
        .and_then(|d| quality_job(&d.definition));
    let endpoint = job.as_ref().map(|j| j.endpoint.clone()).unwrap_or_default();
    let created = now();
    let mut record = json!({
        "MonitoringScheduleName": schedule_name,
        "ScheduledTime": scheduled as f64 / 1000.0,
        "CreationTime": created,
        "LastModifiedTime": created,
        "MonitoringExecutionStatus": "InProgress",
        "EndpointName": endpoint,
        "MonitoringJobDefinitionName": definition_name,
        "MonitoringType": "ModelQuality",
    });
    let seq = match store.put_execution(None, schedule_name, scheduled as f64 / 1000.0, &record) {
        Ok(seq) => seq,
        Err(e) => {
            tracing::error!(monitoring_schedule = %schedule_name, error = %e, "an execution could not be stored");
            return;
        }
    };
    record["ProcessingJobArn"] = json!(arn("processing-job", &format!("plinth-monitoring-{seq}")));
    let result = match job {
        Ok(job) => {
            let limit = job.max_runtime;
            match tokio::time::timeout(
                limit,
                analyse(fleet, schedule_name, &job, scheduled, window),
            )
            .await
            {
                Ok(r) => r.map(|a| (a, job.attributes.problem)),
                Err(_) => Err(format!(
                    "the execution ran past StoppingCondition.MaxRuntimeInSeconds ({} s)",
                    limit.as_secs()
                )),
            }
        }
        Err(e) => Err(e),
    };
    match result {
        Ok((analysis, problem)) => {
            record["MonitoringExecutionStatus"] = json!(if analysis.violations {
                "CompletedWithViolations"
            } else {
                "Completed"
            });
            record["PlinthOutputLocation"] = json!(analysis.output);
            record["PlinthCounts"] = analysis.counts;
            let mut variants = serde_json::Map::new();
            for (variant, items, metrics) in &analysis.results {
                let entry = json!({"ItemCount": items, "Metrics": metrics});
                export(fleet, &endpoint, variant.as_deref(), schedule_name, metrics);
                match variant {
                    Some(v) => {
                        variants.insert(v.clone(), entry);
                    }
                    None => record["PlinthEndpointMetrics"] = entry,
                }
            }
            record["PlinthVariants"] = Value::Object(variants);
            record["PlinthProblemType"] = json!(problem.as_str());
            let mut fleets = serde_json::Map::new();
            for (config, variant, items, metrics) in &analysis.fleets {
                let entry = fleets
                    .entry(config.clone())
                    .or_insert_with(|| json!({"Variants": {}}));
                let value = json!({"ItemCount": items, "Metrics": metrics});
                match variant {
                    Some(v) => entry["Variants"][v] = value,
                    None => {
                        entry["ItemCount"] = value["ItemCount"].clone();
                        entry["Metrics"] = value["Metrics"].clone();
                    }
                }
            }
            record["PlinthFleets"] = Value::Object(fleets);
            let second = super::recent::current_second();
            let mut points = Vec::new();
            let groups = analysis
                .results
                .iter()
                .map(|(v, _, m)| (v.clone(), None, m))
                .chain(
                    analysis
                        .fleets
                        .iter()
                        .map(|(c, v, _, m)| (v.clone(), Some(c.clone()), m)),
                );
            for (variant, config, metrics) in groups {
                for (name, m) in metrics.as_object().into_iter().flatten() {
                    if let Some(value) = m["Value"].as_f64() {
                        points.push(QualityPoint {
                            endpoint: endpoint.clone(),
                            variant: variant.clone(),
                            config: config.clone(),
                            metric: name.clone(),
                            second,
                            value,
                        });
                    }
                }
            }
            fleet.monitoring.record(points);
            tracing::info!(monitoring_schedule = %schedule_name, endpoint = %endpoint, status = %record["MonitoringExecutionStatus"], "model quality execution completed");
        }
        Err(reason) => {
            tracing::warn!(monitoring_schedule = %schedule_name, endpoint = %endpoint, %reason, "model quality execution failed");
            record["MonitoringExecutionStatus"] = json!("Failed");
            record["FailureReason"] = json!(truncate(&reason, 1024));
        }
    }
    record["LastModifiedTime"] = json!(now());
    if let Err(e) =
        store.put_execution(Some(seq), schedule_name, scheduled as f64 / 1000.0, &record)
    {
        tracing::error!(monitoring_schedule = %schedule_name, error = %e, "an execution's end could not be stored");
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Set `plinth_model_quality` for one variant (or the endpoint, `None`).
fn export(fleet: &Fleet, endpoint: &str, variant: Option<&str>, schedule: &str, metrics: &Value) {
    for (name, m) in metrics.as_object().into_iter().flatten() {
        if let Some(v) = m["Value"].as_f64() {
            fleet
                .metrics
                .model_quality
                .with_label_values(&[endpoint, variant.unwrap_or(""), schedule, name])
                .set(v);
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` as milliseconds since the epoch.
fn parse_time(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' || !text.ends_with('Z') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, s) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    let ms = match text.get(19..text.len() - 1) {
        Some("") => 0,
        Some(f) if f.starts_with('.') => format!("{:0<3}", &f[1..]).get(0..3)?.parse().ok()?,
        _ => return None,
    };
    // Days since the epoch (Howard Hinnant's days_from_civil).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

/// The hour (ms) a key's `yyyy/mm/dd/hh/` folders name, if it has them.
fn key_hour(parts: &[&str]) -> Option<i64> {
    let [y, m, d, h] = parts else { return None };
    parse_time(&format!("{y}-{m}-{d}T{h}:00:00Z"))
}

async fn read_lines(fleet: &Fleet, location: &Location) -> Result<String, String> {
    let bytes = fleet
        .stored
        .remote
        .storage()
        .get(location, MAX_FILE_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{location} is not UTF-8 text"))
}

fn join(dir: &str, key: &str) -> String {
    format!("{}/{key}", dir.trim_end_matches('/'))
}

/// Read, join, compute and write one execution's results.
async fn analyse(
    fleet: &Arc<Fleet>,
    schedule_name: &str,
    job: &QualityJob,
    scheduled: i64,
    window: Option<(i64, i64)>,
) -> Result<Analysis, String> {
    let endpoint = &job.endpoint;
    let (start, end) = match window {
        Some((s, e)) => (scheduled + s, scheduled + e),
        None => (scheduled + job.start_offset, scheduled + job.end_offset),
    };
    // Where the endpoint's configs capture to (both fleets' during a deployment).
    let snapshot = fleet
        .endpoints
        .get(endpoint)
        .ok_or_else(|| format!("endpoint {endpoint} does not exist"))?;
    let destinations: Vec<String> = {
        let catalog = fleet.catalog();
        let mut configs = vec![snapshot.config_name.clone()];
        configs.extend(snapshot.pending_config.clone());
        let mut out: Vec<String> = configs
            .iter()
            .filter_map(|c| catalog.configs.get(c))
            .filter_map(|c| c.definition.data_capture_config.as_ref())
            .filter_map(|c| c.destination_s3_uri.clone())
            .collect();
        out.dedup();
        out
    };
    if destinations.is_empty() {
        return Err(format!(
            "endpoint {endpoint} captures no data (its endpoint config has no \
             DataCaptureConfig): nothing to monitor"
        ));
    }
    // Captured predictions in the window: id, variant, the config that served it, prediction.
    let mut predictions: Vec<(String, String, Option<String>, quality::Prediction)> = Vec::new();
    let mut captured = 0usize;
    for destination in &destinations {
        let prefix = join(destination, endpoint);
        let at = Location::parse(&prefix).map_err(|e| format!("{prefix}: {e}"))?;
        let objects = match fleet.stored.remote.storage().list(&at).await {
            Ok(o) => o,
            Err(e) if e.kind == plinth_storage::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.to_string()),
        };
        for object in objects {
            let parts: Vec<&str> = object.key.split('/').collect();
            if parts.len() != 6 || !object.key.ends_with(".jsonl") {
                continue;
            }
            let Some(hour) = key_hour(&parts[1..5]) else {
                continue;
            };
            if hour + HOUR_MS <= start || hour >= end {
                continue;
            }
            let variant = parts[0].to_owned();
            let config = plinth_policy::data_capture::config_of_file(parts[5]).map(str::to_owned);
            let location = at.join(&object.key);
            let text = read_lines(fleet, &location).await?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let at_line = || format!("{location} line {}", i + 1);
                let record: Value = serde_json::from_str(line)
                    .map_err(|e| format!("{}: not a capture record: {e}", at_line()))?;
                let meta = &record["eventMetadata"];
                let time = meta["inferenceTime"]
                    .as_str()
                    .and_then(parse_time)
                    .ok_or_else(|| format!("{}: no eventMetadata.inferenceTime", at_line()))?;
                if time < start || time >= end {
                    continue;
                }
                captured += 1;
                let id = meta["inferenceId"]
                    .as_str()
                    .or(meta["eventId"].as_str())
                    .ok_or_else(|| format!("{}: no eventMetadata.eventId", at_line()))?
                    .to_owned();
                let output = &record["captureData"]["endpointOutput"];
                if output.is_null() {
                    return Err(format!(
                        "{}: the record has no endpointOutput; model quality needs the \
                         responses captured (CaptureOptions Output)",
                        at_line()
                    ));
                }
                let text = quality::body_text(
                    output["data"].as_str().unwrap_or(""),
                    output["encoding"].as_str().unwrap_or(""),
                )
                .map_err(|e| format!("{}: {e}", at_line()))?;
                let prediction = quality::prediction(&job.attributes, &text)
                    .map_err(|e| format!("{}: {e}", at_line()))?;
                predictions.push((id, variant.clone(), config.clone(), prediction));
            }
        }
    }
    // Ground truth, by the hour it was collected: from the window's first hour on.
    let truth_at = Location::parse(&job.ground_truth).map_err(|e| e.to_string())?;
    let objects = match fleet.stored.remote.storage().list(&truth_at).await {
        Ok(o) => o,
        Err(e) if e.kind == plinth_storage::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    let mut truth: HashMap<String, String> = HashMap::new();
    let first_hour = start.div_euclid(HOUR_MS) * HOUR_MS;
    for object in objects {
        let parts: Vec<&str> = object.key.split('/').collect();
        if parts.len() < 5 || !object.key.ends_with(".jsonl") {
            continue;
        }
        let n = parts.len();
        if key_hour(&parts[n - 5..n - 1]).is_some_and(|h| h < first_hour) {
            continue;
        }
        let location = truth_at.join(&object.key);
        let text = read_lines(fleet, &location).await?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (id, label) = quality::ground_truth(line)
                .map_err(|e| format!("ground truth {location} line {}: {e}", i + 1))?;
            truth.insert(id, label);
        }
    }
    let mut all = Joined::default();
    let mut by_variant: BTreeMap<String, Joined> = BTreeMap::new();
    let mut by_fleet: BTreeMap<(String, Option<String>), Joined> = BTreeMap::new();
    let mut matched = HashSet::new();
    for (id, variant, config, prediction) in predictions {
        if let Some(label) = truth.get(&id) {
            matched.insert(id);
            all.push(label.clone(), prediction.clone());
            if let Some(config) = config {
                for key in [(config.clone(), None), (config, Some(variant.clone()))] {
                    by_fleet
                        .entry(key)
                        .or_default()
                        .push(label.clone(), prediction.clone());
                }
            }
            by_variant
                .entry(variant)
                .or_default()
                .push(label.clone(), prediction);
        }
    }
    if all.is_empty() {
        return Err(format!(
            "no captured prediction in the window ({} to {}) has ground truth: {captured} \
             captured, {} ground truth records under {}",
            utc(start).iso(),
            utc(end).iso(),
            truth.len(),
            job.ground_truth
        ));
    }
    let problem = job.attributes.problem;
    let constraints = match &job.constraints {
        Some(c) => {
            let location = Location::parse(c).map_err(|e| e.to_string())?;
            let text = read_lines(fleet, &location).await?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| format!("the baseline constraints {c}: not JSON: {e}"))?;
            quality::check_constraints(problem, &value)
                .map_err(|e| format!("the baseline constraints {c}: {e}"))?;
            Some(value)
        }
        None => None,
    };
    let t = utc(scheduled);
    let folder = join(
        &job.output,
        &format!(
            "{endpoint}/{schedule_name}/{:04}/{:02}/{:02}/{:02}",
            t.year, t.month, t.day, t.hour
        ),
    );
    let mut results = Vec::new();
    let mut violations = false;
    let groups = by_variant
        .iter()
        .map(|(v, j)| (Some(v.clone()), j))
        .chain(std::iter::once((None, &all)));
    for (variant, joined) in groups {
        let statistics = quality::statistics(problem, joined)?;
        let dir = match &variant {
            Some(v) => join(&folder, &format!("variants/{v}")),
            None => folder.clone(),
        };
        write(fleet, &join(&dir, "statistics.json"), &statistics).await?;
        if let Some(constraints) = &constraints {
            let found = quality::violations(problem, &statistics, constraints);
            violations |= found["violations"]
                .as_array()
                .is_some_and(|v| !v.is_empty());
            write(fleet, &join(&dir, "constraint_violations.json"), &found).await?;
        }
        results.push((variant, joined.len(), metrics_of(problem, &statistics)));
    }
    let mut fleets = Vec::new();
    for ((config, variant), joined) in &by_fleet {
        let statistics = quality::statistics(problem, joined)?;
        fleets.push((
            config.clone(),
            variant.clone(),
            joined.len(),
            metrics_of(problem, &statistics),
        ));
    }
    Ok(Analysis {
        violations,
        output: folder,
        results,
        fleets,
        counts: json!({
            "Captured": captured,
            "GroundTruth": truth.len(),
            "Joined": all.len(),
            "GroundTruthUnmatched": truth.len() - matched.len(),
        }),
    })
}

/// The scalar metrics of `statistics` as `{"name": {"Value", "StandardDeviation"}}`.
fn metrics_of(problem: ProblemType, statistics: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (name, m) in statistics[problem.metrics_key()]
        .as_object()
        .into_iter()
        .flatten()
    {
        if let Some(v) = m["value"].as_f64() {
            out.insert(
                name.clone(),
                json!({"Value": v, "StandardDeviation": m["standard_deviation"].as_f64()}),
            );
        }
    }
    Value::Object(out)
}

async fn write(fleet: &Fleet, at: &str, value: &Value) -> Result<(), String> {
    let location = Location::parse(at).map_err(|e| format!("{at}: {e}"))?;
    let text = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    fleet
        .stored
        .remote
        .storage()
        .put(text.into(), &location)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_capture_records_write_them() {
        let t = parse_time("2026-12-07T18:44:14Z").unwrap();
        assert_eq!(utc(t).iso(), "2026-12-07T18:44:14Z");
        assert_eq!(parse_time("2026-12-07T18:44:14.250Z"), Some(t + 250));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert!(parse_time("2026-12-07 18:44:14").is_none());
        assert_eq!(
            key_hour(&["2026", "12", "07", "18"]),
            Some(t - (44 * 60 + 14) * 1000)
        );
    }
}
