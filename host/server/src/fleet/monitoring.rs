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
use crate::state::store::Kind;
use crate::state::{arn, now};
use plinth_policy::data_capture::utc;
use plinth_policy::model_quality::{self as quality, Attributes, Joined, ProblemType};
use plinth_policy::monitoring_schedule as schedule;
use plinth_storage::Location;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The schedule SageMaker picks when none is given: daily.
const DAILY: &str = "cron(0 0 ? * * *)";
/// The window an execution analyses when the definition gives no offsets: the hour before it.
const DEFAULT_START_OFFSET: &str = "-PT1H";
const DEFAULT_END_OFFSET: &str = "-PT0H";

/// The text at `path` in `input`, if it is text.
pub(crate) fn str_at<'a>(input: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(input, |v, k| v.get(k))?.as_str()
}

/// What a model quality job definition means, as the runner reads it.
pub(crate) struct QualityJob {
    pub(crate) endpoint: String,
    pub(crate) attributes: Attributes,
    pub(crate) ground_truth: String,
    pub(crate) output: String,
    pub(crate) constraints: Option<String>,
    /// The window's offsets from the scheduled time, milliseconds.
    pub(crate) start_offset: i64,
    pub(crate) end_offset: i64,
    /// `StoppingCondition.MaxRuntimeInSeconds` (default an hour).
    pub(crate) max_runtime: std::time::Duration,
}

/// Read a stored (checked) definition.
pub(crate) fn quality_job(definition: &Value) -> Result<QualityJob, String> {
    let input = &definition["ModelQualityJobInput"]["EndpointInput"];
    let problem = ProblemType::parse(
        str_at(definition, &["ModelQualityAppSpecification", "ProblemType"]).unwrap_or(""),
    )?;
    let attributes = Attributes {
        problem,
        inference: input["InferenceAttribute"].as_str().map(str::to_owned),
        probability: input["ProbabilityAttribute"].as_str().map(str::to_owned),
        threshold: input["ProbabilityThresholdAttribute"].as_f64(),
    };
    attributes.check()?;
    let at = "ModelQualityJobInput.EndpointInput";
    let start = input["StartTimeOffset"]
        .as_str()
        .unwrap_or(DEFAULT_START_OFFSET);
    let end = input["EndTimeOffset"]
        .as_str()
        .unwrap_or(DEFAULT_END_OFFSET);
    let start_offset = schedule::offset(&format!("{at}.StartTimeOffset"), start)?;
    let end_offset = schedule::offset(&format!("{at}.EndTimeOffset"), end)?;
    schedule::window(
        0,
        start_offset,
        end_offset,
        (
            &format!("{at}.StartTimeOffset"),
            &format!("{at}.EndTimeOffset"),
        ),
    )?;
    Ok(QualityJob {
        endpoint: input["EndpointName"].as_str().unwrap_or("").to_owned(),
        attributes,
        ground_truth: str_at(
            definition,
            &["ModelQualityJobInput", "GroundTruthS3Input", "S3Uri"],
        )
        .unwrap_or("")
        .to_owned(),
        output: definition["ModelQualityJobOutputConfig"]["MonitoringOutputs"][0]["S3Output"]
            ["S3Uri"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        constraints: str_at(
            definition,
            &["ModelQualityBaselineConfig", "ConstraintsResource", "S3Uri"],
        )
        .map(str::to_owned),
        start_offset,
        end_offset,
        max_runtime: std::time::Duration::from_secs(
            definition["StoppingCondition"]["MaxRuntimeInSeconds"]
                .as_u64()
                .unwrap_or(3600),
        ),
    })
}

/// The schedule's expression and window offsets as given; checked.
pub(crate) fn schedule_of(
    config: &Value,
) -> Result<(schedule::Schedule, Option<(i64, i64)>), String> {
    let expression = str_at(config, &["ScheduleConfig", "ScheduleExpression"]).unwrap_or(DAILY);
    let parsed = schedule::parse(expression)?;
    let times = (
        str_at(config, &["ScheduleConfig", "DataAnalysisStartTime"]),
        str_at(config, &["ScheduleConfig", "DataAnalysisEndTime"]),
    );
    let members = (
        "MonitoringScheduleConfig.ScheduleConfig.DataAnalysisStartTime",
        "MonitoringScheduleConfig.ScheduleConfig.DataAnalysisEndTime",
    );
    let window = match times {
        (Some(start), Some(end)) => {
            let (s, e) = (
                schedule::offset(members.0, start)?,
                schedule::offset(members.1, end)?,
            );
            schedule::window(0, s, e, members)?;
            Some((s, e))
        }
        (None, None) if parsed == schedule::Schedule::Now => {
            return Err(format!(
                "{} and {} are required when ScheduleExpression is NOW",
                members.0, members.1
            ))
        }
        (None, None) => None,
        _ => {
            return Err(format!(
                "give both {} and {}, or neither",
                members.0, members.1
            ))
        }
    };
    Ok((parsed, window))
}

/// The largest capture or ground truth file an execution reads.
const MAX_FILE_BYTES: u64 = 1 << 30;
const HOUR_MS: i64 = 3_600_000;

/// The schedules whose execution is running (with the slot each last started), and the
/// metrics the executions found, for quality alarms.
#[derive(Default)]
pub(crate) struct Running {
    started: Mutex<HashMap<String, (i64, bool)>>,
    points: Mutex<HashMap<PointKey, VecDeque<Point>>>,
}

/// Values kept per series for quality alarms (the oldest dropped first).
const POINTS_KEPT: usize = 256;

/// A series of a quality metric: of the endpoint (no variant, no config), of a variant
/// (over every config), of a config's fleet, or of a variant of one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PointKey {
    endpoint: String,
    variant: Option<String>,
    config: Option<String>,
    metric: String,
}

/// One execution's value of a series.
#[derive(Debug, Clone, Copy)]
struct Point {
    /// When the execution ended (`recent::current_second`).
    second: u64,
    /// The same, epoch seconds.
    epoch: f64,
    value: f64,
}

impl Running {
    /// The `(second, value)` of `metric` for `endpoint`, of `variant` (all when `None`), of
    /// `config`'s fleet (every config's when `None`), from executions that ended at or
    /// after `since` (epoch seconds).
    pub(crate) fn values(
        &self,
        endpoint: &str,
        variant: Option<&str>,
        config: Option<&str>,
        metric: &str,
        since: f64,
    ) -> Vec<(u64, f64)> {
        let key = PointKey {
            endpoint: endpoint.to_owned(),
            variant: variant.map(str::to_owned),
            config: config.map(str::to_owned),
            metric: metric.to_owned(),
        };
        self.points
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|p| p.epoch >= since)
            .map(|p| (p.second, p.value))
            .collect()
    }

    fn record(&self, key: PointKey, point: Point) {
        let mut points = self.points.lock().unwrap_or_else(|e| e.into_inner());
        let series = points.entry(key).or_default();
        if series.len() == POINTS_KEPT {
            series.pop_front();
        }
        series.push_back(point);
    }

    /// Mark `schedule`'s slot `scheduled` started, unless an execution of it is running.
    fn start(&self, schedule: &str, scheduled: i64) -> bool {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        let entry = started
            .entry(schedule.to_lowercase())
            .or_insert((i64::MIN, false));
        if entry.1 {
            return false;
        }
        *entry = (scheduled, true);
        true
    }

    /// The slot `schedule` last started in this process.
    fn last_started(&self, schedule: &str) -> Option<i64> {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&schedule.to_lowercase())
            .map(|e| e.0)
    }

    fn finished(&self, schedule: &str) {
        if let Some(entry) = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&schedule.to_lowercase())
        {
            entry.1 = false;
        }
    }
}

/// Marks a schedule's execution finished when dropped, however the execution ends.
struct Finished {
    fleet: Arc<Fleet>,
    schedule: String,
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.fleet.monitoring.finished(&self.schedule);
    }
}

fn now_ms() -> i64 {
    (now() * 1000.0) as i64
}

/// Run due executions, checked twice a second, for as long as the fleet lives. Executions
/// a stop or crash left `InProgress` are failed first.
pub(crate) async fn run(fleet: Arc<Fleet>) {
    let at = now();
    let store = fleet.clone();
    let failed = tokio::task::spawn_blocking(move || {
        store.stored.store.fail_interrupted_executions(
            "The execution was interrupted: the server stopped while it ran",
            at,
        )
    })
    .await;
    if let Ok(Ok(n)) = failed {
        if n > 0 {
            tracing::warn!(
                executions = n,
                "monitoring executions interrupted by a restart marked Failed"
            );
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let f = fleet.clone();
        let due = tokio::task::spawn_blocking(move || due(&f)).await;
        match due {
            Ok(Ok(due)) => {
                for d in due {
                    let fleet = fleet.clone();
                    tokio::spawn(async move {
                        let _finished = Finished {
                            fleet: fleet.clone(),
                            schedule: d.schedule.clone(),
                        };
                        execute(&fleet, &d.schedule, &d.definition, d.scheduled, d.window).await;
                    });
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "reading the monitoring schedules failed"),
            Err(e) => tracing::warn!(error = %e, "reading the monitoring schedules failed"),
        }
    }
}

/// An execution to start.
struct Due {
    schedule: String,
    definition: String,
    scheduled: i64,
    window: Option<(i64, i64)>,
}

/// The executions that are due now (each marked started).
fn due(fleet: &Arc<Fleet>) -> Result<Vec<Due>, crate::state::store::StoreError> {
    let store = &fleet.stored.store;
    let schedules = store.definitions(Kind::MonitoringSchedule)?;
    if schedules.is_empty() {
        return Ok(Vec::new());
    }
    let last: HashMap<String, i64> = store
        .last_scheduled()?
        .into_iter()
        .map(|(name, t)| (name.to_lowercase(), (t * 1000.0).round() as i64))
        .collect();
    let now = now_ms();
    let mut out = Vec::new();
    for s in schedules {
        if s.definition["MonitoringScheduleStatus"] != "Scheduled" {
            continue;
        }
        let config = &s.definition["MonitoringScheduleConfig"];
        let Ok((parsed, window)) = schedule_of(config) else {
            continue;
        };
        let created = (s.created * 1000.0).round() as i64;
        // The last slot run: stored, or started here (its record may not be written yet).
        let previous = last.get(&s.name.to_lowercase()).copied().max(
            fleet
                .monitoring
                .last_started(&s.name)
                .filter(|t| *t >= created),
        );
        // The latest slot due at or before now (after a stop, missed ones are not run).
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
        if !fleet.monitoring.start(&s.name, scheduled) {
            continue;
        }
        out.push(Due {
            schedule: s.name.clone(),
            definition: config["MonitoringJobDefinitionName"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            scheduled,
            window,
        });
    }
    Ok(out)
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
            let epoch = now();
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
                    let alarmable =
                        plinth_policy::metric_alarm::QUALITY_METRICS.contains(&name.as_str());
                    if let (true, Some(value)) = (alarmable, m["Value"].as_f64()) {
                        fleet.monitoring.record(
                            PointKey {
                                endpoint: endpoint.clone(),
                                variant: variant.clone(),
                                config: config.clone(),
                                metric: name.clone(),
                            },
                            Point {
                                second,
                                epoch,
                                value,
                            },
                        );
                    }
                }
            }
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

async fn read_bytes(fleet: &Fleet, location: &Location) -> Result<bytes::Bytes, String> {
    fleet
        .stored
        .remote
        .storage()
        .get(location, MAX_FILE_BYTES)
        .await
        .map_err(|e| e.to_string())
}

async fn read_lines(fleet: &Fleet, location: &Location) -> Result<String, String> {
    let bytes = read_bytes(fleet, location).await?;
    String::from_utf8(bytes.into()).map_err(|_| format!("{location} is not UTF-8 text"))
}

/// Run `work` on the blocking pool (parsing and metrics can take seconds).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("the analysis stopped: {e}"))?
}

/// A captured prediction: the id it joins by, its variant and config, and the prediction.
type Captured = (String, String, Option<String>, quality::Prediction);

/// The predictions of one capture file in the window `[start, end)`, and how many records
/// were in it.
fn parse_captures(
    bytes: &[u8],
    location: &Location,
    window: (i64, i64),
    attributes: &quality::Attributes,
    variant: &str,
    config: Option<&str>,
) -> Result<(Vec<Captured>, usize), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{location} is not UTF-8 text"))?;
    let (mut out, mut captured) = (Vec::new(), 0);
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
        if time < window.0 || time >= window.1 {
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
                "{}: the record has no endpointOutput; model quality needs the responses \
                 captured (CaptureOptions Output)",
                at_line()
            ));
        }
        let text = quality::body_text(
            output["data"].as_str().unwrap_or(""),
            output["encoding"].as_str().unwrap_or(""),
        )
        .map_err(|e| format!("{}: {e}", at_line()))?;
        let prediction =
            quality::prediction(attributes, &text).map_err(|e| format!("{}: {e}", at_line()))?;
        quality::check_label(attributes.problem, &prediction.label, "predicted")
            .map_err(|e| format!("{}: {e}", at_line()))?;
        out.push((
            id,
            variant.to_owned(),
            config.map(str::to_owned),
            prediction,
        ));
    }
    Ok((out, captured))
}

/// The labels of one ground truth file, by event id.
fn parse_truth(
    bytes: &[u8],
    location: &Location,
    problem: ProblemType,
) -> Result<Vec<(String, String)>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{location} is not UTF-8 text"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at_line = || format!("ground truth {location} line {}", i + 1);
        let (id, label) = quality::ground_truth(line).map_err(|e| format!("{}: {e}", at_line()))?;
        quality::check_label(problem, &label, "ground truth")
            .map_err(|e| format!("{}: {e}", at_line()))?;
        out.push((id, label));
    }
    Ok(out)
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
    // The open capture files first, so that the window's last records are in storage.
    fleet.captures.flush(Duration::from_secs(60)).await;
    // Captured predictions in the window: id, variant, the config that served it, prediction.
    let mut predictions: Vec<Captured> = Vec::new();
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
            let bytes = read_bytes(fleet, &location).await?;
            let attributes = job.attributes.clone();
            let (found, n) = blocking(move || {
                parse_captures(
                    &bytes,
                    &location,
                    (start, end),
                    &attributes,
                    &variant,
                    config.as_deref(),
                )
            })
            .await?;
            predictions.extend(found);
            captured += n;
        }
    }
    // Ground truth, by the hour it was collected: from the window's first hour on.
    let problem = job.attributes.problem;
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
        let bytes = read_bytes(fleet, &location).await?;
        truth.extend(blocking(move || parse_truth(&bytes, &location, problem)).await?);
    }
    // The joined rows once, and each group as the indices of its rows (a group's `Joined`
    // is made only while its metrics are computed).
    let mut all = Joined::default();
    let mut by_variant: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut by_fleet: BTreeMap<(String, Option<String>), Vec<u32>> = BTreeMap::new();
    let mut matched = 0usize;
    let mut seen = HashSet::new();
    for (id, variant, config, prediction) in predictions {
        if let Some(label) = truth.get(&id) {
            if seen.insert(id) {
                matched += 1;
            }
            let row = all.len() as u32;
            all.push(label.clone(), prediction);
            if let Some(config) = config {
                by_fleet
                    .entry((config.clone(), None))
                    .or_default()
                    .push(row);
                by_fleet
                    .entry((config, Some(variant.clone())))
                    .or_default()
                    .push(row);
            }
            by_variant.entry(variant).or_default().push(row);
        }
    }
    drop(seen);
    let truth_count = truth.len();
    drop(truth);
    if all.is_empty() {
        return Err(format!(
            "no captured prediction in the window ({} to {}) has ground truth: {captured} \
             captured, {} ground truth records under {}",
            utc(start).iso(),
            utc(end).iso(),
            truth_count,
            job.ground_truth
        ));
    }
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
    // The metrics of each group, on the blocking pool: each variant, the endpoint, and each
    // config's fleet (and its variants).
    let (counts_truth, joined_count) = (truth_count - matched, all.len());
    let (statistics, fleet_statistics) = blocking(move || {
        let subset = |rows: &[u32]| {
            let mut j = Joined::default();
            for &r in rows {
                let r = r as usize;
                j.push(
                    all.actual[r].clone(),
                    quality::Prediction {
                        label: all.predicted[r].clone(),
                        probability: all.probabilities[r],
                    },
                );
            }
            j
        };
        let mut groups: Vec<(Option<String>, usize, Value)> = Vec::new();
        for (variant, rows) in by_variant {
            let joined = subset(&rows);
            groups.push((
                Some(variant),
                joined.len(),
                quality::statistics(problem, &joined)?,
            ));
        }
        let mut fleets = Vec::new();
        for ((config, variant), rows) in by_fleet {
            let joined = subset(&rows);
            let statistics = quality::statistics(problem, &joined)?;
            fleets.push((
                config,
                variant,
                joined.len(),
                metrics_of(problem, &statistics),
            ));
        }
        groups.push((None, all.len(), quality::statistics(problem, &all)?));
        Ok((groups, fleets))
    })
    .await?;
    let mut results = Vec::new();
    let mut violations = false;
    for (variant, items, statistics) in statistics {
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
        results.push((variant, items, metrics_of(problem, &statistics)));
    }
    let fleets = fleet_statistics;
    Ok(Analysis {
        violations,
        output: folder,
        results,
        fleets,
        counts: json!({
            "Captured": captured,
            "GroundTruth": truth_count,
            "Joined": joined_count,
            "GroundTruthUnmatched": counts_truth,
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
