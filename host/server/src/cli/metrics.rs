//! `plinth metrics`: an endpoint's CloudWatch metrics over a recent window, read through
//! ListMetrics and GetMetricData as any CloudWatch client would: a table per variant
//! (requests, errors, latency percentiles), or one metric per variant as a terminal
//! sparkline over the window.

use crate::apply::Control;
use serde_json::{json, Value};
use std::fmt::Write;

/// What `plinth metrics` is asked.
pub(crate) struct Query<'a> {
    pub(crate) endpoint: &'a str,
    pub(crate) variant: Option<&'a str>,
    /// One metric, shown as a sparkline per variant.
    pub(crate) metric: Option<&'a str>,
    /// The window, in seconds before `now`.
    pub(crate) since: u64,
    /// Unix seconds.
    pub(crate) now: i64,
}

/// The columns of the table: header, metric, statistic, and whether the value is a
/// latency (shown in milliseconds).
const COLUMNS: &[(&str, &str, &str, bool)] = &[
    ("REQUESTS", "Invocations", "Sum", false),
    ("4XX", "Invocation4XXErrors", "Sum", false),
    ("5XX", "Invocation5XXErrors", "Sum", false),
    ("MODEL ERRORS", "InvocationModelErrors", "Sum", false),
    ("MODEL P50", "ModelLatency", "p50", true),
    ("MODEL P99", "ModelLatency", "p99", true),
    ("OVERHEAD P99", "OverheadLatency", "p99", true),
];

/// The bars of a sparkline, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `values` (one per period; `None` where there is no datapoint) as a sparkline scaled from
/// zero (or the smallest value, if negative) to the largest.
pub(crate) fn sparkline(values: &[Option<f64>]) -> String {
    let present = values.iter().flatten().copied();
    let max = present.clone().fold(f64::NEG_INFINITY, f64::max);
    let min = present.fold(0.0, f64::min);
    values
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(v) if max <= min => BARS[0],
            Some(v) => {
                let at = ((v - min) / (max - min) * (BARS.len() - 1) as f64).round() as usize;
                BARS[at.min(BARS.len() - 1)]
            }
        })
        .collect()
}

/// A period for `since` seconds cut in about `parts`: CloudWatch's 1, 5, 10, 30 or a
/// multiple of 60 seconds, a multiple of 60 when the window starts more than 3 hours ago.
pub(crate) fn period_for(since: u64, parts: u64) -> u64 {
    let wanted = since.div_ceil(parts.max(1)).max(1);
    if since <= 3 * 3600 {
        if let Some(p) = [1, 5, 10, 30].into_iter().find(|&p| p >= wanted) {
            return p;
        }
    }
    wanted.div_ceil(60) * 60
}

/// The variants of `endpoint` with published metrics, in name order.
fn variants(client: &mut impl Control, q: &Query<'_>) -> anyhow::Result<Vec<String>> {
    let listed = client.call(
        "ListMetrics",
        json!({"Namespace": "AWS/SageMaker", "MetricName": "Invocations",
               "Dimensions": [{"Name": "EndpointName", "Value": q.endpoint}]}),
    )?;
    let mut names: Vec<String> = listed["Metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            m["Dimensions"]
                .as_array()?
                .iter()
                .find(|d| d["Name"] == "VariantName")?["Value"]
                .as_str()
                .map(str::to_owned)
        })
        .filter(|v| q.variant.is_none_or(|want| want == v))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

fn query(
    id: String,
    endpoint: &str,
    variant: &str,
    metric: &str,
    stat: &str,
    period: u64,
) -> Value {
    json!({"Id": id, "MetricStat": {"Metric": {"Namespace": "AWS/SageMaker", "MetricName": metric,
        "Dimensions": [{"Name": "EndpointName", "Value": endpoint},
                       {"Name": "VariantName", "Value": variant}]},
        "Period": period, "Stat": stat}})
}

/// Each query's `(timestamp, value)`s, by id, across pages.
fn data(
    client: &mut impl Control,
    queries: Vec<Value>,
    start: i64,
    end: i64,
) -> anyhow::Result<std::collections::HashMap<String, Vec<(i64, f64)>>> {
    let mut out: std::collections::HashMap<String, Vec<(i64, f64)>> = Default::default();
    let mut input = json!({"MetricDataQueries": queries, "StartTime": start, "EndTime": end,
                           "ScanBy": "TimestampAscending"});
    loop {
        let page = client.call("GetMetricData", input.clone())?;
        for r in page["MetricDataResults"].as_array().into_iter().flatten() {
            let id = r["Id"].as_str().unwrap_or_default().to_owned();
            let times = r["Timestamps"].as_array().cloned().unwrap_or_default();
            let values = r["Values"].as_array().cloned().unwrap_or_default();
            out.entry(id).or_default().extend(
                times
                    .iter()
                    .zip(&values)
                    .filter_map(|(t, v)| Some((t.as_f64()? as i64, v.as_f64()?))),
            );
        }
        match page["NextToken"].as_str() {
            Some(token) => input["NextToken"] = json!(token),
            None => return Ok(out),
        }
    }
}

/// The table or the sparklines `q` asks for.
pub(crate) fn show(client: &mut impl Control, q: &Query<'_>) -> anyhow::Result<String> {
    let names = variants(client, q)?;
    let end = q.now + 1;
    let start = q.now - q.since as i64;
    let mut out = String::new();
    if names.is_empty() {
        writeln!(
            out,
            "endpoint {} has no metrics{}",
            q.endpoint,
            q.variant
                .map(|v| format!(" for variant {v}"))
                .unwrap_or_default()
        )?;
        return Ok(out);
    }
    let width = names.iter().map(String::len).max().unwrap_or(7).max(7);
    match q.metric {
        None => {
            // One period over the whole window (and the minute its start is rounded to).
            let period = period_for(q.since + 60, 1);
            let mut queries = Vec::new();
            for (i, v) in names.iter().enumerate() {
                for (j, (_, metric, stat, _)) in COLUMNS.iter().enumerate() {
                    queries.push(query(
                        format!("v{i}_{j}"),
                        q.endpoint,
                        v,
                        metric,
                        stat,
                        period,
                    ));
                }
            }
            let values = data(client, queries, start, end)?;
            write!(out, "{:width$}", "VARIANT")?;
            for (header, ..) in COLUMNS {
                write!(out, "  {header:>12}")?;
            }
            writeln!(out)?;
            for (i, v) in names.iter().enumerate() {
                write!(out, "{v:width$}")?;
                for (j, (_, _, stat, latency)) in COLUMNS.iter().enumerate() {
                    let points = values
                        .get(&format!("v{i}_{j}"))
                        .cloned()
                        .unwrap_or_default();
                    let cell = match (points.is_empty(), *stat == "Sum", latency) {
                        (true, true, _) => "0".to_string(),
                        (true, false, _) => "-".to_string(),
                        (false, true, _) => format!("{}", points.iter().map(|p| p.1).sum::<f64>()),
                        (false, false, true) => format!("{:.2} ms", points[0].1 / 1000.0),
                        (false, false, false) => format!("{}", points[0].1),
                    };
                    write!(out, "  {cell:>12}")?;
                }
                writeln!(out)?;
            }
            writeln!(out, "over the last {} s", q.since)?;
        }
        Some(metric) => {
            let latency = matches!(
                metric,
                "ModelLatency" | "OverheadLatency" | "ModelSetupTime"
            );
            let stat = if latency { "p99" } else { "Sum" };
            let period = period_for(q.since, 60);
            let queries = names
                .iter()
                .enumerate()
                .map(|(i, v)| query(format!("v{i}"), q.endpoint, v, metric, stat, period))
                .collect();
            let values = data(client, queries, start, end)?;
            let first = plinth_policy::metric_data::round_start(start, period, q.now);
            let slots = ((end - first) as u64).div_ceil(period) as usize;
            for (i, v) in names.iter().enumerate() {
                let mut series = vec![None; slots];
                for (t, value) in values.get(&format!("v{i}")).into_iter().flatten() {
                    let k = ((t - first) / period as i64) as usize;
                    if k < slots {
                        series[k] = Some(*value);
                    }
                }
                let present: Vec<f64> = series.iter().flatten().copied().collect();
                let shown = |x: f64| {
                    if latency {
                        format!("{:.2} ms", x / 1000.0)
                    } else {
                        format!("{x}")
                    }
                };
                let summary = match (
                    present.iter().copied().reduce(f64::min),
                    present.iter().copied().reduce(f64::max),
                    present.last(),
                ) {
                    (Some(lo), Some(hi), Some(last)) => {
                        format!(
                            "min {}  max {}  last {}",
                            shown(lo),
                            shown(hi),
                            shown(*last)
                        )
                    }
                    _ => "no data".to_string(),
                };
                writeln!(out, "{v:width$}  {}  {summary}", sparkline(&series))?;
            }
            writeln!(
                out,
                "{metric} {stat} per {period} s over the last {} s",
                q.since
            )?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_from_zero_to_the_largest() {
        assert_eq!(sparkline(&[Some(0.0), Some(7.0), None, Some(3.5)]), "▁█ ▅");
        assert_eq!(sparkline(&[Some(2.0), Some(2.0)]), "██");
        assert_eq!(sparkline(&[None, None]), "  ");
        assert_eq!(sparkline(&[Some(0.0), Some(0.0)]), "▁▁");
    }

    #[test]
    fn periods_are_cloudwatchs() {
        assert_eq!(period_for(60, 60), 1);
        assert_eq!(period_for(300, 60), 5);
        assert_eq!(period_for(1800, 60), 30);
        assert_eq!(period_for(3600, 60), 60);
        assert_eq!(period_for(86_400, 60), 1440);
        assert_eq!(period_for(4 * 3600, 1000), 60);
        assert_eq!(period_for(3600 + 60, 1), 3660);
    }
}
