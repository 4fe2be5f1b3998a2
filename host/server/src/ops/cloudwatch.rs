//! CloudWatch's operations (boto3's `cloudwatch`): [`call`], their one entry point (the
//! member check, then the operation), and the metric operations, GetMetricStatistics,
//! GetMetricData and ListMetrics over the metric store (`state::metric_store`), with
//! CloudWatch's errors (`InvalidParameterValue`, `InvalidParameterCombination`,
//! `MissingParameter`, `InvalidNextToken`) and the input readers and page tokens the alarm
//! operations (`metric_alarms`) share. What a query may ask and how a period's datapoint is
//! computed is `plinth_policy::metric_data`.

use super::common::admit;
use crate::error::ApiError;
use crate::fleet::Fleet;
use crate::state::metric_store::{MetricStore, Series};
use axum::http::StatusCode;
use plinth_policy::metric_alarm::Statistic;
use plinth_policy::metric_data::{
    self, bucket, check_datapoints, check_period, round_start, stat_of, tier_for, unit_of,
    Aggregate, MAX_DATA_DATAPOINTS, MAX_DIMENSIONS, MAX_QUERIES,
};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The statistics `Statistics` takes, as CloudWatch lists them in its message.
const STATISTICS: &str = "[ Minimum, Maximum, Sum, SampleCount, Average ]";

pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "InvalidParameterValue", message)
}

fn combination(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "InvalidParameterCombination",
        message,
    )
}

pub(crate) fn missing(field: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "MissingParameter",
        format!("The parameter {field} is required."),
    )
}

fn internal(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServiceError",
        message,
    )
}

pub(crate) fn bad_token() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "InvalidNextToken",
        "The NextToken does not come from this request's previous page.",
    )
}

/// Run one CloudWatch operation: the member check, then the operation (the metric reads
/// on the blocking pool; the alarm operations are `metric_alarms`').
pub(crate) async fn call(
    state: &Arc<Fleet>,
    operation: &str,
    input: Value,
) -> Result<Value, ApiError> {
    admit(
        operation,
        &input,
        plinth_policy::members::cloudwatch_operations,
        invalid,
    )?;
    if super::metric_alarms::OPERATIONS.contains(&operation) {
        return super::metric_alarms::call(state, operation, input).await;
    }
    let store = state.stored.metrics.clone();
    let operation = operation.to_owned();
    let now = crate::state::now().floor() as i64;
    tokio::task::spawn_blocking(move || {
        let store = store.as_deref();
        match operation.as_str() {
            "GetMetricStatistics" => get_metric_statistics(store, &input, now),
            "GetMetricData" => get_metric_data(store, &input, now),
            "ListMetrics" => list_metrics(store, &input, now),
            other => unreachable!("{other} is not a metric operation"),
        }
    })
    .await
    .map_err(|e| internal(format!("the operation failed: {e}")))?
}

// ---------------------------------------------------------------------------------------
// Reading the input
// ---------------------------------------------------------------------------------------

pub(crate) fn text<'a>(input: &'a Value, field: &str, at: &str) -> Result<&'a str, ApiError> {
    match &input[field] {
        Value::Null => Err(missing(&format!("{at}{field}"))),
        Value::String(s) if !s.is_empty() => Ok(s),
        _ => Err(invalid(format!(
            "The parameter {at}{field} must be a non-empty string."
        ))),
    }
}

/// A timestamp: epoch seconds (awsJson's form), or an ISO 8601 string.
pub(crate) fn time(input: &Value, field: &str) -> Result<i64, ApiError> {
    match &input[field] {
        Value::Null => Err(missing(field)),
        Value::Number(n) => n
            .as_f64()
            .map(|t| t.floor() as i64)
            .ok_or_else(|| invalid(format!("The parameter {field} is not a time."))),
        Value::String(s) => metric_data::parse_iso8601(s)
            .or_else(|| s.parse::<f64>().ok().map(|t| t.floor() as i64))
            .ok_or_else(|| {
                invalid(format!(
                    "The parameter {field} must be a time in seconds since the epoch or ISO 8601; got {s:?}."
                ))
            }),
        _ => Err(invalid(format!("The parameter {field} is not a time."))),
    }
}

/// `Dimensions` as name and value pairs: at most 30, each named once.
pub(crate) fn dimensions(input: &Value, at: &str) -> Result<Vec<(String, String)>, ApiError> {
    let Some(list) = input["Dimensions"].as_array() else {
        return Ok(Vec::new());
    };
    if list.len() > MAX_DIMENSIONS {
        return Err(invalid(format!(
            "The collection {at}Dimensions must not have a size greater than {MAX_DIMENSIONS}."
        )));
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(list.len());
    for (i, d) in list.iter().enumerate() {
        let here = format!("{at}Dimensions.member.{}.", i + 1);
        let name = text(d, "Name", &here)?;
        let value = text(d, "Value", &here)?;
        if out.iter().any(|(n, _)| n == name) {
            return Err(invalid(format!(
                "The dimension {name} is given more than once in {at}Dimensions."
            )));
        }
        out.push((name.to_owned(), value.to_owned()));
    }
    Ok(out)
}

fn period(input: &Value, field: &str) -> Result<u64, ApiError> {
    let Some(p) = input[field.rsplit('.').next().unwrap_or(field)].as_i64() else {
        return Err(missing(field));
    };
    check_period(p).map_err(|e| invalid(e.replace("Period", field)))
}

// ---------------------------------------------------------------------------------------
// Datapoints
// ---------------------------------------------------------------------------------------

/// One metric of one series, asked for by a query.
struct Query<'a> {
    namespace: &'a str,
    metric: &'a str,
    dimensions: &'a [(String, String)],
    unit: Option<&'a str>,
}

/// The query's aggregated periods in `[start, end)` (`start` rounded as CloudWatch rounds
/// it), in time order; none where there is no data, no store, a unit that is not the
/// metric's, or a period finer than what the store keeps for that start.
fn periods(
    store: Option<&MetricStore>,
    q: &Query<'_>,
    start: i64,
    end: i64,
    period: u64,
    now: i64,
) -> Result<Vec<(i64, Aggregate)>, ApiError> {
    let Some(store) = store else {
        return Ok(Vec::new());
    };
    if q.unit
        .is_some_and(|u| unit_of(q.namespace, q.metric) != Some(u))
    {
        return Ok(Vec::new());
    }
    let Some(tier) = tier_for(store.tiers(), start, now) else {
        return Ok(Vec::new());
    };
    if !period.is_multiple_of(tier.resolution) {
        return Ok(Vec::new());
    }
    let Some(series) = store.find(q.namespace, q.dimensions).map_err(internal)? else {
        return Ok(Vec::new());
    };
    let points = store
        .points(series, tier.resolution, start, end, q.metric)
        .map_err(internal)?;
    Ok(bucket(points, start, end, period))
}

fn number(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

fn get_metric_statistics(
    store: Option<&MetricStore>,
    input: &Value,
    now: i64,
) -> Result<Value, ApiError> {
    let namespace = text(input, "Namespace", "")?;
    let metric = text(input, "MetricName", "")?;
    let dims = dimensions(input, "")?;
    let (start, end) = (time(input, "StartTime")?, time(input, "EndTime")?);
    let period = period(input, "Period")?;
    let names = |field: &str| -> Vec<String> {
        input[field]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (plain, extended) = (names("Statistics"), names("ExtendedStatistics"));
    if plain.is_empty() && extended.is_empty() {
        return Err(missing("Statistics or ExtendedStatistics"));
    }
    if !plain.is_empty() && !extended.is_empty() {
        return Err(combination(
            "Specify either Statistics or ExtendedStatistics, not both.",
        ));
    }
    if plain.len() > 5 || extended.len() > 10 {
        return Err(invalid(
            "At most 5 Statistics and 10 ExtendedStatistics may be asked for.",
        ));
    }
    let mut statistics: Vec<(String, Statistic)> = Vec::new();
    for (i, name) in plain.iter().enumerate() {
        let statistic = Statistic::from_name(name).ok_or_else(|| {
            invalid(format!(
                "The parameter Statistics.member.{} must be a value in the set {STATISTICS}.",
                i + 1
            ))
        })?;
        statistics.push((name.clone(), statistic));
    }
    for (i, name) in extended.iter().enumerate() {
        let statistic = Statistic::from_extended(name).ok_or_else(|| {
            invalid(format!(
                "The parameter ExtendedStatistics.member.{} ({name:?}) must be a percentile, p0.0 to p100 \
                 (trimmed means and other extended statistics are not supported).",
                i + 1
            ))
        })?;
        statistics.push((name.clone(), statistic));
    }
    if start >= end {
        return Err(invalid(
            "The parameter StartTime must be less than the parameter EndTime.",
        ));
    }
    let start = round_start(start, period, now);
    check_datapoints(start, end, period).map_err(combination)?;
    let query = Query {
        namespace,
        metric,
        dimensions: &dims,
        unit: input["Unit"].as_str(),
    };
    let unit = unit_of(namespace, metric).unwrap_or("None");
    let datapoints: Vec<Value> = periods(store, &query, start, end, period, now)?
        .into_iter()
        .map(|(t, aggregate)| {
            let mut point = Map::new();
            point.insert("Timestamp".into(), json!(t));
            let mut percentiles = Map::new();
            for (name, statistic) in &statistics {
                let value = aggregate.value(*statistic).map(number);
                match (statistic, value) {
                    (_, None) => {}
                    (Statistic::Percentile(_), Some(v)) => {
                        percentiles.insert(name.clone(), v);
                    }
                    (_, Some(v)) => {
                        point.insert(name.clone(), v);
                    }
                }
            }
            if !percentiles.is_empty() {
                point.insert("ExtendedStatistics".into(), Value::Object(percentiles));
            }
            point.insert("Unit".into(), json!(unit));
            Value::Object(point)
        })
        .collect();
    Ok(json!({ "Label": metric, "Datapoints": datapoints }))
}

/// A short fingerprint of a request, so that a page's NextToken is refused for another
/// request (FNV-1a over its canonical JSON, without the paging members).
fn fingerprint(input: &Value) -> String {
    let mut copy = input.clone();
    if let Some(o) = copy.as_object_mut() {
        o.remove("NextToken");
        o.remove("MaxDatapoints");
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in copy.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// A NextToken: where the next page starts, and whose request it belongs to.
pub(crate) fn token(position: &[usize], input: &Value) -> String {
    use base64::Engine;
    let text = json!({ "at": position, "of": fingerprint(input) }).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// The position a NextToken holds (of `len` numbers), if it is this request's.
pub(crate) fn position(input: &Value, len: usize) -> Result<Option<Vec<usize>>, ApiError> {
    use base64::Engine;
    let Some(given) = input["NextToken"].as_str() else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(given)
        .map_err(|_| bad_token())?;
    let value: Value = serde_json::from_slice(&decoded).map_err(|_| bad_token())?;
    if value["of"].as_str() != Some(fingerprint(input).as_str()) {
        return Err(bad_token());
    }
    let at: Vec<usize> = value["at"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as usize)
                .collect()
        })
        .unwrap_or_default();
    if at.len() != len {
        return Err(bad_token());
    }
    Ok(Some(at))
}

/// A GetMetricData query's result: its id, label, and `(time, value)`s in the order asked.
type Returned = (String, String, Vec<(i64, f64)>);

fn get_metric_data(
    store: Option<&MetricStore>,
    input: &Value,
    now: i64,
) -> Result<Value, ApiError> {
    let Some(queries) = input["MetricDataQueries"].as_array() else {
        return Err(missing("MetricDataQueries"));
    };
    if queries.is_empty() || queries.len() > MAX_QUERIES {
        return Err(invalid(format!(
            "The collection MetricDataQueries must have 1 to {MAX_QUERIES} members."
        )));
    }
    let (start, end) = (time(input, "StartTime")?, time(input, "EndTime")?);
    if start >= end {
        return Err(invalid(
            "The parameter StartTime must be less than the parameter EndTime.",
        ));
    }
    // A page after the first is read as of the first page's time (its token holds it), so
    // that its periods, resolution and positions are the first page's.
    let returned = queries
        .iter()
        .filter(|q| q["ReturnData"].as_bool() != Some(false))
        .count();
    let paged = position(input, returned + 1)?;
    let now = paged.as_ref().map_or(now, |p| p[returned] as i64);
    let max = input["MaxDatapoints"]
        .as_u64()
        .unwrap_or(MAX_DATA_DATAPOINTS) as usize;
    let descending = input["ScanBy"].as_str() != Some("TimestampAscending");
    let mut ids: Vec<&str> = Vec::new();
    // Each query returned: its id, label, and values in the order asked.
    let mut results: Vec<Returned> = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let at = format!("MetricDataQueries.member.{}.", i + 1);
        let id = text(q, "Id", &at)?;
        if !metric_data::valid_query_id(id) {
            return Err(invalid(format!(
                "The parameter {at}Id ({id:?}) must start with a lowercase letter and hold only letters, digits and underscores."
            )));
        }
        if ids.contains(&id) {
            return Err(invalid(format!(
                "The Id {id:?} is used by more than one query in MetricDataQueries."
            )));
        }
        ids.push(id);
        let stat_at = format!("{at}MetricStat.");
        let metric_stat = &q["MetricStat"];
        if metric_stat.is_null() {
            return Err(missing(&format!("{at}MetricStat")));
        }
        let metric = &metric_stat["Metric"];
        if metric.is_null() {
            return Err(missing(&format!("{stat_at}Metric")));
        }
        let metric_at = format!("{stat_at}Metric.");
        let namespace = text(metric, "Namespace", &metric_at)?;
        let metric_name = text(metric, "MetricName", &metric_at)?;
        let dims = dimensions(metric, &metric_at)?;
        let period = period(metric_stat, &format!("{stat_at}Period"))?;
        let stat_name = text(metric_stat, "Stat", &stat_at)?;
        let statistic = stat_of(stat_name).ok_or_else(|| {
            invalid(format!(
                "The parameter {stat_at}Stat ({stat_name:?}) must be one of {STATISTICS} or a percentile such as p99."
            ))
        })?;
        if q["ReturnData"].as_bool() == Some(false) {
            continue;
        }
        let query = Query {
            namespace,
            metric: metric_name,
            dimensions: &dims,
            unit: metric_stat["Unit"].as_str(),
        };
        let first = round_start(start, period, now);
        let mut values: Vec<(i64, f64)> = periods(store, &query, first, end, period, now)?
            .into_iter()
            .filter_map(|(t, a)| a.value(statistic).map(|v| (t, v)))
            .collect();
        if descending {
            values.reverse();
        }
        let label = q["Label"].as_str().unwrap_or(metric_name).to_owned();
        results.push((id.to_owned(), label, values));
    }
    // Paging: each result's values from where the last page stopped, up to `max` in all.
    let mut from = paged.map_or_else(|| vec![0; results.len()], |p| p[..returned].to_vec());
    let mut room = max;
    let mut page = Vec::new();
    for (i, (id, label, values)) in results.iter().enumerate() {
        let begin = from[i].min(values.len());
        let take = (values.len() - begin).min(room);
        room -= take;
        from[i] = begin + take;
        let complete = from[i] == values.len();
        let slice = &values[begin..from[i]];
        page.push(json!({
            "Id": id,
            "Label": label,
            "Timestamps": slice.iter().map(|(t, _)| json!(t)).collect::<Vec<_>>(),
            "Values": slice.iter().map(|(_, v)| number(*v)).collect::<Vec<_>>(),
            "StatusCode": if complete { "Complete" } else { "PartialData" },
        }));
    }
    let mut output = json!({ "MetricDataResults": page, "Messages": [] });
    if results
        .iter()
        .zip(&from)
        .any(|((_, _, values), &k)| k < values.len())
    {
        let mut at = from.clone();
        at.push(now.max(0) as usize);
        output["NextToken"] = json!(token(&at, input));
    }
    Ok(output)
}

/// Whether `series` passes ListMetrics' dimension filters (each a name, and a value if
/// given, that the series has).
fn matches(series: &Series, filters: &[(String, Option<String>)]) -> bool {
    filters.iter().all(|(name, value)| {
        series
            .dimensions
            .iter()
            .any(|(n, v)| n == name && value.as_ref().is_none_or(|value| value == v))
    })
}

fn list_metrics(store: Option<&MetricStore>, input: &Value, now: i64) -> Result<Value, ApiError> {
    let namespace = input["Namespace"].as_str();
    let metric = input["MetricName"].as_str();
    let mut filters: Vec<(String, Option<String>)> = Vec::new();
    for (i, d) in input["Dimensions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let name = text(d, "Name", &format!("Dimensions.member.{}.", i + 1))?;
        filters.push((name.to_owned(), d["Value"].as_str().map(str::to_owned)));
    }
    if filters.len() > 10 {
        return Err(invalid(
            "The collection Dimensions must not have a size greater than 10.",
        ));
    }
    let since = input["RecentlyActive"]
        .as_str()
        .and_then(metric_data::recently_active)
        .map(|s| now - s as i64);
    let all = match store {
        Some(store) => store.series().map_err(internal)?,
        None => Vec::new(),
    };
    let metrics: Vec<Value> = all
        .iter()
        .filter(|s| namespace.is_none_or(|n| n == s.namespace))
        .filter(|s| since.is_none_or(|t| s.last >= t))
        .filter(|s| matches(s, &filters))
        .flat_map(|s| {
            s.metrics
                .iter()
                .filter(|m| metric.is_none_or(|want| want == m.as_str()))
                .map(move |m| {
                    json!({
                        "Namespace": s.namespace,
                        "MetricName": m,
                        "Dimensions": s.dimensions.iter()
                            .map(|(n, v)| json!({ "Name": n, "Value": v }))
                            .collect::<Vec<_>>(),
                    })
                })
        })
        .collect();
    let start = position(input, 1)?.map_or(0, |at| at[0]).min(metrics.len());
    let stop = (start + metric_data::LIST_PAGE).min(metrics.len());
    let mut output = json!({ "Metrics": metrics[start..stop] });
    if stop < metrics.len() {
        output["NextToken"] = json!(token(&[stop], input));
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::metric_store::Point;
    use plinth_policy::metric_data::{parse_retention, Datum, DEFAULT_RETENTION};

    const DAY: i64 = 86_400;

    /// A store with one request a second for the last 100 days (so every resolution has
    /// data), merged and expired at `now` as the publisher leaves it. Older than 3 hours,
    /// where only minutes and coarser are kept, a minute's requests come as one point.
    fn store(now: i64) -> MetricStore {
        let store = MetricStore::in_memory(parse_retention(DEFAULT_RETENTION).unwrap()).unwrap();
        let point = |t: i64| {
            let n = if now - t > 3 * 3600 { 60 } else { 1 };
            let mut datum = Datum::new();
            datum.insert("Invocations".into(), Aggregate::repeated(1.0, n));
            Point {
                namespace: "AWS/SageMaker".into(),
                dimensions: vec![
                    ("EndpointName".into(), "e".into()),
                    ("VariantName".into(), "A".into()),
                ],
                t,
                datum,
            }
        };
        for day in (0..100).rev() {
            let from = now - (day + 1) * DAY;
            let points: Vec<Point> = (from..from + DAY)
                .filter(|t| now - t <= 3 * 3600 || t % 60 == 0)
                .map(point)
                .collect();
            store.record(&points).unwrap();
            store.roll_up(from + DAY - 1).unwrap();
            // The publisher expires as it goes: by now, each resolution holds only its
            // retention.
            store.expire(from + DAY).unwrap();
        }
        store
    }

    fn sums(store: &MetricStore, now: i64, start: i64, end: i64, period: u64) -> Vec<(i64, f64)> {
        let input = json!({
            "Namespace": "AWS/SageMaker", "MetricName": "Invocations",
            "Dimensions": [{"Name": "VariantName", "Value": "A"},
                           {"Name": "EndpointName", "Value": "e"}],
            "StartTime": start, "EndTime": end, "Period": period, "Statistics": ["Sum"],
        });
        get_metric_statistics(Some(store), &input, now).unwrap()["Datapoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["Timestamp"].as_i64().unwrap(), d["Sum"].as_f64().unwrap()))
            .collect()
    }

    /// A clock moved across each resolution's boundary: what CloudWatch returns at each age.
    #[test]
    fn each_age_is_served_at_its_resolution() {
        // A whole hour.
        let now: i64 = 1_800_000_000;
        assert_eq!(now % 3600, 0);
        let store = store(now);
        // Within 3 hours: 1-second datapoints.
        let recent = sums(&store, now, now - 60, now, 1);
        assert_eq!(recent.len(), 60);
        assert!(recent.iter().all(|&(_, s)| s == 1.0));
        assert_eq!(
            sums(&store, now, now - 600, now, 60),
            vec![
                (now - 600, 60.0),
                (now - 540, 60.0),
                (now - 480, 60.0),
                (now - 420, 60.0),
                (now - 360, 60.0),
                (now - 300, 60.0),
                (now - 240, 60.0),
                (now - 180, 60.0),
                (now - 120, 60.0),
                (now - 60, 60.0)
            ]
        );
        // Older than 3 hours: 1-minute data only; a 1-second period finds nothing there.
        let start = now - 5 * 3600;
        assert!(sums(&store, now, start, start + 60, 1).is_empty());
        assert_eq!(
            sums(&store, now, start, start + 120, 60),
            vec![(start, 60.0), (start + 60, 60.0)]
        );
        // Older than 15 days: 5-minute data; older than 63: 1-hour.
        let start = now - 20 * DAY;
        assert!(sums(&store, now, start, start + 300, 60).is_empty());
        assert_eq!(
            sums(&store, now, start, start + 600, 300),
            vec![(start, 300.0), (start + 300, 300.0)]
        );
        let start = now - 70 * DAY;
        assert!(sums(&store, now, start, start + 3600, 300).is_empty());
        assert_eq!(
            sums(&store, now, start, start + 2 * 3600, 3600),
            vec![(start, 3600.0), (start + 3600, 3600.0)]
        );
        // A day summed at each resolution counts every request once.
        for (age, period) in [
            (2 * 3600, 3600),
            (10 * DAY, 86_400),
            (30 * DAY, 86_400),
            (80 * DAY, 86_400),
        ] {
            let start = now - age;
            let total: f64 = sums(&store, now, start, start + 86_400.min(age), period as u64)
                .iter()
                .map(|(_, s)| s)
                .sum();
            assert_eq!(total, 86_400.min(age) as f64, "{age} s ago");
        }
    }
}
