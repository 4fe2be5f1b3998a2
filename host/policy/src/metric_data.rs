//! CloudWatch's metric data as Plinth keeps and serves it: the datapoints, how long each
//! resolution is kept, and the checks and arithmetic of GetMetricStatistics, GetMetricData
//! and ListMetrics. Plain data and plain functions; the store and the clock are the
//! caller's.
//!
//! # Datapoints
//!
//! A stored datapoint is an [`Aggregate`]: CloudWatch's statistic set (`SampleCount`,
//! `Sum`, `Minimum`, `Maximum`) plus a sparse log-linear histogram (bucket ratio 2^(1/8), the
//! alarm windows' buckets), so that percentiles come from the histogram of every sample and
//! not from a sample of them: within about 4.5 % of a recorded value for values of 1 and
//! more, exact for the smallest and largest sample and for metrics whose samples are 0 or 1.
//! Aggregates [merge](Aggregate::merge) exactly: a 1-hour datapoint is the merge of its
//! seconds. One row of the store holds one series' aggregates for one period (a [`Datum`]:
//! each metric by name), encoded compactly by [`encode`] (LEB128 integers).
//!
//! A request is one sample of each request metric (see [`request_aggregates`]): 1 for
//! `Invocations`; 0 or 1 for the error metrics (so `Sum` is the count, `Average` the rate);
//! its latencies in microseconds; `1 / instances` for `InvocationsPerInstance` (so `Sum` is
//! the invocations per instance).
//!
//! # Retention
//!
//! [`Tier`]s, finest first: each keeps datapoints of its resolution for its retention
//! (CloudWatch's: 1-second data for 3 hours, 1-minute for 15 days, 5-minute for 63 days,
//! 1-hour for 455 days; [`DEFAULT_RETENTION`]). The finest tier is written as requests
//! complete; every coarser one is the merge of the finest, so all tiers agree. A query is
//! served by the finest tier still holding its start ([`tier_for`]); a period that is not a
//! multiple of that tier's resolution gets no datapoints, as in CloudWatch.
//!
//! # Time
//!
//! Times are whole seconds since the Unix epoch. A query's start is rounded down as
//! CloudWatch rounds it ([`round_start`]); its periods are `[start + k·Period,
//! start + (k+1)·Period)` for each that begins before the end.

use std::collections::BTreeMap;

use crate::metric_alarm::{bucket_index, nearest_rank, LatencyStats, Statistic, Stats};

/// Namespace of SageMaker's invocation metrics.
pub const INVOCATION_NAMESPACE: &str = "AWS/SageMaker";

/// Namespace of SageMaker's instance metrics (`CPUUtilization`, `MemoryUtilization`).
pub const INSTANCE_NAMESPACE: &str = "/aws/sagemaker/Endpoints";

/// The metrics Plinth publishes: namespace, name, unit.
pub const METRICS: &[(&str, &str, &str)] = &[
    (INVOCATION_NAMESPACE, "Invocations", "None"),
    (INVOCATION_NAMESPACE, "Invocation4XXErrors", "None"),
    (INVOCATION_NAMESPACE, "Invocation5XXErrors", "None"),
    (INVOCATION_NAMESPACE, "InvocationModelErrors", "None"),
    (INVOCATION_NAMESPACE, "InvocationsPerInstance", "None"),
    (INVOCATION_NAMESPACE, "ModelLatency", "Microseconds"),
    (INVOCATION_NAMESPACE, "OverheadLatency", "Microseconds"),
    // Serverless variants.
    (INVOCATION_NAMESPACE, "ModelSetupTime", "Microseconds"),
    // Multi-model variants.
    (INVOCATION_NAMESPACE, "ModelLoadingWaitTime", "Microseconds"),
    (INVOCATION_NAMESPACE, "ModelDownloadingTime", "Microseconds"),
    (INVOCATION_NAMESPACE, "ModelLoadingTime", "Microseconds"),
    (INVOCATION_NAMESPACE, "ModelUnloadingTime", "Microseconds"),
    (INVOCATION_NAMESPACE, "ModelCacheHit", "None"),
    (INVOCATION_NAMESPACE, "LoadedModelCount", "None"),
    // Asynchronous endpoints (dimension EndpointName only).
    (INVOCATION_NAMESPACE, "ApproximateBacklogSize", "None"),
    (
        INVOCATION_NAMESPACE,
        "ApproximateBacklogSizePerInstance",
        "None",
    ),
    (
        INVOCATION_NAMESPACE,
        "ApproximateAgeOfOldestRequest",
        "Seconds",
    ),
    (INVOCATION_NAMESPACE, "HasBacklogWithoutCapacity", "None"),
    (INVOCATION_NAMESPACE, "TimeInBacklog", "Milliseconds"),
    (INVOCATION_NAMESPACE, "TotalProcessingTime", "Milliseconds"),
    // Instance metrics.
    (INSTANCE_NAMESPACE, "CPUUtilization", "Percent"),
    (INSTANCE_NAMESPACE, "MemoryUtilization", "Percent"),
];

/// The unit CloudWatch reports for `metric` in `namespace`; `None` for a metric Plinth does
/// not publish.
pub fn unit_of(namespace: &str, metric: &str) -> Option<&'static str> {
    METRICS
        .iter()
        .find(|(n, m, _)| *n == namespace && *m == metric)
        .map(|(_, _, unit)| *unit)
}

/// The units CloudWatch knows (`StandardUnit`).
pub const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// The most datapoints one GetMetricStatistics call may ask for.
pub const MAX_STATISTICS_DATAPOINTS: u64 = 1_440;

/// The most datapoints one GetMetricData call returns (and its `MaxDatapoints` default).
pub const MAX_DATA_DATAPOINTS: u64 = 100_800;

/// The most queries one GetMetricData call takes.
pub const MAX_QUERIES: usize = 500;

/// The most dimensions a metric has.
pub const MAX_DIMENSIONS: usize = 30;

/// The most metrics one ListMetrics page holds.
pub const LIST_PAGE: usize = 500;

// ---------------------------------------------------------------------------------------
// Aggregates
// ---------------------------------------------------------------------------------------

/// Samples aggregated: count, sum, minimum, maximum, and a sparse histogram
/// (`(bucket index, count)` sorted by index) for percentiles.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    histogram: Vec<(u16, u64)>,
}

/// The histogram bucket of a value (values under 1 share bucket 0).
fn index_of(value: f64) -> u16 {
    if value < 1.0 {
        0
    } else {
        bucket_index((value * 1000.0).min(u64::MAX as f64) as u64)
    }
}

impl Aggregate {
    /// `count` samples, each `value`.
    pub fn repeated(value: f64, count: u64) -> Self {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        Self {
            count,
            sum: value * count as f64,
            min: value,
            max: value,
            histogram: if count > 0 {
                vec![(index_of(value), count)]
            } else {
                Vec::new()
            },
        }
    }

    /// `n` samples of which `hits` are 1 and the rest 0.
    pub fn ones_of(hits: u64, n: u64) -> Self {
        let hits = hits.min(n);
        let mut histogram = Vec::new();
        if hits < n {
            histogram.push((index_of(0.0), n - hits));
        }
        if hits > 0 {
            histogram.push((index_of(1.0), hits));
        }
        Self {
            count: n,
            sum: hits as f64,
            min: if hits == n { 1.0 } else { 0.0 },
            max: if hits > 0 { 1.0 } else { 0.0 },
            histogram,
        }
    }

    /// A latency window's samples, in microseconds.
    fn of_latencies(latencies: &LatencyStats) -> Self {
        Self {
            count: latencies.count,
            sum: latencies.sum_nanos as f64 / 1000.0,
            min: latencies.min_nanos as f64 / 1000.0,
            max: latencies.max_nanos as f64 / 1000.0,
            histogram: latencies
                .histogram
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(i, &n)| (u16::try_from(i).unwrap_or(u16::MAX), n))
                .collect(),
        }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Add every sample of `other`.
    pub fn merge(&mut self, other: &Aggregate) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            self.min = other.min;
            self.max = other.max;
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        self.count += other.count;
        self.sum += other.sum;
        let mut merged = Vec::with_capacity(self.histogram.len() + other.histogram.len());
        let (mut a, mut b) = (
            self.histogram.iter().peekable(),
            other.histogram.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(i, n)), Some(&&(j, m))) if i == j => {
                    merged.push((i, n + m));
                    a.next();
                    b.next();
                }
                (Some(&&(i, n)), Some(&&(j, _))) if i < j => {
                    merged.push((i, n));
                    a.next();
                }
                (_, Some(&&(j, m))) => {
                    merged.push((j, m));
                    b.next();
                }
                (Some(&&(i, n)), None) => {
                    merged.push((i, n));
                    a.next();
                }
                (None, None) => break,
            }
        }
        self.histogram = merged;
    }

    /// The statistic of the samples; `None` with none.
    pub fn value(&self, statistic: Statistic) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        match statistic {
            Statistic::Average => Some(self.sum / self.count as f64),
            Statistic::Sum => Some(self.sum),
            Statistic::SampleCount => Some(self.count as f64),
            Statistic::Minimum => Some(self.min),
            Statistic::Maximum => Some(self.max),
            Statistic::Percentile(p) => {
                nearest_rank(self.histogram.iter().copied(), self.min, self.max, p)
            }
        }
    }
}

/// One series' aggregates for one period, by metric name.
pub type Datum = BTreeMap<String, Aggregate>;

/// Merge every metric of `other` into `into`.
pub fn merge_datum(into: &mut Datum, other: &Datum) {
    for (name, aggregate) in other {
        match into.get_mut(name) {
            Some(mine) => mine.merge(aggregate),
            None => {
                into.insert(name.clone(), aggregate.clone());
            }
        }
    }
}

/// A variant's requests of one period as its invocation metrics' aggregates; `instances`
/// is how many instances it had (`InvocationsPerInstance`). Metrics without a sample are
/// left out (no request reached the model: no `ModelLatency`).
pub fn request_aggregates(stats: &Stats, instances: u64) -> Datum {
    let n = stats.count;
    let mut datum = Datum::new();
    if n == 0 {
        return datum;
    }
    let mut put = |name: &str, aggregate: Aggregate| {
        if aggregate.count > 0 {
            datum.insert(name.to_owned(), aggregate);
        }
    };
    put("Invocations", Aggregate::repeated(1.0, n));
    put(
        "Invocation4XXErrors",
        Aggregate::ones_of(stats.errors_4xx, n),
    );
    put(
        "Invocation5XXErrors",
        Aggregate::ones_of(stats.errors_5xx, n),
    );
    put(
        "InvocationModelErrors",
        Aggregate::ones_of(stats.model_errors, n),
    );
    put(
        "InvocationsPerInstance",
        Aggregate::repeated(1.0 / instances.max(1) as f64, n),
    );
    put(
        "ModelLatency",
        Aggregate::of_latencies(&stats.model_latency),
    );
    put(
        "OverheadLatency",
        Aggregate::of_latencies(&stats.overhead_latency),
    );
    datum
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or("a datum ends early")?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a datum has an overlong number".into())
}

fn take_f64(bytes: &mut &[u8]) -> Result<f64, String> {
    if bytes.len() < 8 {
        return Err("a datum ends early".into());
    }
    let (head, rest) = bytes.split_at(8);
    *bytes = rest;
    Ok(f64::from_le_bytes(head.try_into().expect("8 bytes")))
}

/// Version byte of [`encode`]'s format.
const FORMAT: u8 = 1;

/// `datum` as bytes: a version byte, then per metric its name, count, sum, minimum,
/// maximum and histogram (indexes as deltas).
pub fn encode(datum: &Datum) -> Vec<u8> {
    let mut out = vec![FORMAT];
    put_varint(&mut out, datum.len() as u64);
    for (name, a) in datum {
        put_varint(&mut out, name.len() as u64);
        out.extend_from_slice(name.as_bytes());
        put_varint(&mut out, a.count);
        out.extend_from_slice(&a.sum.to_le_bytes());
        out.extend_from_slice(&a.min.to_le_bytes());
        out.extend_from_slice(&a.max.to_le_bytes());
        put_varint(&mut out, a.histogram.len() as u64);
        let mut last = 0u16;
        for &(index, count) in &a.histogram {
            put_varint(&mut out, u64::from(index - last));
            put_varint(&mut out, count);
            last = index;
        }
    }
    out
}

/// The datum [`encode`] wrote.
pub fn decode(mut bytes: &[u8]) -> Result<Datum, String> {
    let bytes = &mut bytes;
    match bytes.split_first() {
        Some((&FORMAT, rest)) => *bytes = rest,
        Some((v, _)) => return Err(format!("a datum has format {v}, not {FORMAT}")),
        None => return Err("a datum is empty".into()),
    }
    let metrics = take_varint(bytes)?;
    let mut datum = Datum::new();
    for _ in 0..metrics {
        let len = take_varint(bytes)? as usize;
        if bytes.len() < len {
            return Err("a datum ends early".into());
        }
        let (name, rest) = bytes.split_at(len);
        *bytes = rest;
        let name = std::str::from_utf8(name).map_err(|_| "a metric name is not UTF-8")?;
        let count = take_varint(bytes)?;
        let (sum, min, max) = (take_f64(bytes)?, take_f64(bytes)?, take_f64(bytes)?);
        let buckets = take_varint(bytes)?;
        let mut histogram = Vec::with_capacity(buckets.min(512) as usize);
        let mut index = 0u64;
        for _ in 0..buckets {
            index += take_varint(bytes)?;
            let index = u16::try_from(index).map_err(|_| "a bucket index is out of range")?;
            histogram.push((index, take_varint(bytes)?));
        }
        datum.insert(
            name.to_owned(),
            Aggregate {
                count,
                sum,
                min,
                max,
                histogram,
            },
        );
    }
    if !bytes.is_empty() {
        return Err("a datum has bytes after its end".into());
    }
    Ok(datum)
}

// ---------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------

/// One resolution and how long it is kept, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    pub resolution: u64,
    pub retention: u64,
}

/// CloudWatch's retention, in `--metric-retention`'s form.
pub const DEFAULT_RETENTION: &str = "1s:3h,1m:15d,5m:63d,1h:455d";

/// The shortest retention a tier may have: a minute, longer than the publisher takes to
/// merge the finest resolution into the coarser ones.
const MIN_RETENTION: u64 = 60;

/// The longest retention a tier may have: ten years.
const MAX_RETENTION: u64 = 10 * 366 * 86_400;

/// A duration such as `1s`, `5m`, `3h`, `15d`, in seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    number.checked_mul(scale).filter(|&n| n > 0)
}

/// Tiers in `--metric-retention`'s form: `RESOLUTION:RETENTION` pairs, finest first, comma
/// separated (`1s:3h,1m:15d,5m:63d,1h:455d`), or `off` for none (nothing is stored).
/// Each resolution is 1, 5, 10 or 30 seconds or a multiple of a minute, and a multiple of
/// the one before; each retention is longer than the one before and at least a period of
/// its tier.
pub fn parse_retention(text: &str) -> Result<Vec<Tier>, String> {
    let text = text.trim();
    if text == "off" {
        return Ok(Vec::new());
    }
    let mut tiers: Vec<Tier> = Vec::new();
    for part in text.split(',') {
        let (resolution, retention) = part.trim().split_once(':').ok_or_else(|| {
            format!("--metric-retention: {part:?} is not RESOLUTION:RETENTION (such as 1m:15d)")
        })?;
        let duration = |what: &str, text: &str| {
            parse_duration(text).ok_or_else(|| {
                format!("--metric-retention: the {what} {text:?} is not a number of s, m, h or d")
            })
        };
        let tier = Tier {
            resolution: duration("resolution", resolution)?,
            retention: duration("retention", retention)?,
        };
        check_period(tier.resolution as i64)
            .map_err(|_| format!("--metric-retention: the resolution {resolution} is not 1s, 5s, 10s, 30s or a multiple of 1m"))?;
        if tier.retention < tier.resolution.max(MIN_RETENTION) || tier.retention > MAX_RETENTION {
            return Err(format!(
                "--metric-retention: the retention {retention} must be at least the resolution {resolution}, at least a minute (the coarser resolutions are merged from the finest every few seconds) and at most ten years"
            ));
        }
        if let Some(last) = tiers.last() {
            if tier.resolution <= last.resolution
                || !tier.resolution.is_multiple_of(last.resolution)
            {
                return Err(format!(
                    "--metric-retention: the resolution {resolution} must be a multiple of the one before it, and larger"
                ));
            }
            if tier.retention <= last.retention {
                return Err(format!(
                    "--metric-retention: the retention {retention} must be longer than the one before it"
                ));
            }
        }
        tiers.push(tier);
    }
    if tiers.len() > 6 {
        return Err("--metric-retention: at most 6 resolutions".into());
    }
    Ok(tiers)
}

/// The tier that serves a query starting at `start` when it is `now`: the finest whose
/// retention still holds `start`, else the coarsest. `None` without tiers.
pub fn tier_for(tiers: &[Tier], start: i64, now: i64) -> Option<Tier> {
    let age = (now - start).max(0) as u64;
    tiers
        .iter()
        .find(|t| age <= t.retention)
        .or(tiers.last())
        .copied()
}

/// The `t` of the period of `resolution` that holds second `t`.
pub fn period_start(t: i64, resolution: u64) -> i64 {
    t - t.rem_euclid(resolution as i64)
}

// ---------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------

/// `Period` checked as CloudWatch checks it: 1, 5, 10, 30 or a multiple of 60 seconds.
pub fn check_period(period: i64) -> Result<u64, String> {
    if period < 1 {
        return Err("The parameter Period must be greater than 0.".into());
    }
    if matches!(period, 1 | 5 | 10 | 30) || period % 60 == 0 {
        Ok(period as u64)
    } else {
        Err(format!(
            "The parameter Period must be 1, 5, 10, 30 or a multiple of 60 (it is {period})."
        ))
    }
}

/// A query's start as CloudWatch rounds it down, by how long ago it is: under 15 days to
/// the minute (to the period for a period under a minute), 15 to 63 days to 5 minutes,
/// older to the hour.
pub fn round_start(start: i64, period: u64, now: i64) -> i64 {
    let age = now - start;
    let unit = if age > 63 * 86_400 {
        3_600
    } else if age > 15 * 86_400 {
        300
    } else if period < 60 {
        period
    } else {
        60
    };
    period_start(start, unit)
}

/// How many periods a query asks for.
pub fn datapoints(start: i64, end: i64, period: u64) -> u64 {
    if end <= start {
        return 0;
    }
    ((end - start) as u64).div_ceil(period)
}

/// GetMetricStatistics' limit on datapoints, with CloudWatch's message.
pub fn check_datapoints(start: i64, end: i64, period: u64) -> Result<(), String> {
    let n = datapoints(start, end, period);
    if n > MAX_STATISTICS_DATAPOINTS {
        return Err(format!(
            "You have requested up to {n} datapoints, which exceeds the limit of 1,440. You may \
             reduce the datapoints requested by increasing Period, or decreasing the time range."
        ));
    }
    Ok(())
}

/// A statistic by GetMetricData's `Stat` name: a plain statistic or a percentile (`p99`).
pub fn stat_of(name: &str) -> Option<Statistic> {
    Statistic::from_name(name).or_else(|| Statistic::from_extended(name))
}

/// `points` (`(t, aggregate)` at some resolution, any order) grouped into the periods of
/// a query: `[start + k·period, start + (k+1)·period)` for each period that begins before
/// `end`, only those with samples, in time order.
pub fn bucket(
    points: impl IntoIterator<Item = (i64, Aggregate)>,
    start: i64,
    end: i64,
    period: u64,
) -> Vec<(i64, Aggregate)> {
    let mut periods: BTreeMap<i64, Aggregate> = BTreeMap::new();
    for (t, aggregate) in points {
        if t < start || t >= end {
            continue;
        }
        let k = start + (t - start) / period as i64 * period as i64;
        match periods.get_mut(&k) {
            Some(mine) => mine.merge(&aggregate),
            None => {
                periods.insert(k, aggregate);
            }
        }
    }
    periods.into_iter().filter(|(_, a)| a.count > 0).collect()
}

/// Whether a GetMetricData query `Id` is valid: a lowercase letter, then letters, digits
/// and underscores, at most 255 characters.
pub fn valid_query_id(id: &str) -> bool {
    let mut chars = id.chars();
    id.len() <= 255
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An ISO 8601 time as AWS's SDKs write it (`2026-12-07T21:00:00Z`,
/// `2026-12-07T21:00:00.123+01:00`), in Unix seconds (the fraction dropped).
pub fn parse_iso8601(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = text.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &fraction[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest[1..].split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 3_600 + m.parse::<i64>().ok()? * 60)
        }
    };
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second - offset)
}

/// ListMetrics' `RecentlyActive`: only `PT3H`, the last three hours, in seconds.
pub fn recently_active(value: &str) -> Option<u64> {
    (value == "PT3H").then_some(3 * 3_600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric_alarm::{Outcome, Sample, Window};
    use std::time::Duration;

    fn of(values: &[f64]) -> Aggregate {
        let mut a = Aggregate::repeated(0.0, 0);
        for &v in values {
            a.merge(&Aggregate::repeated(v, 1));
        }
        a
    }

    #[test]
    fn an_aggregate_gives_each_statistic() {
        let a = of(&[10.0, 20.0, 30.0, 40.0]);
        assert_eq!(a.value(Statistic::SampleCount), Some(4.0));
        assert_eq!(a.value(Statistic::Sum), Some(100.0));
        assert_eq!(a.value(Statistic::Average), Some(25.0));
        assert_eq!(a.value(Statistic::Minimum), Some(10.0));
        assert_eq!(a.value(Statistic::Maximum), Some(40.0));
        // Rank 2 of 4 is 20, within the histogram's precision.
        let p50 = a.value(Statistic::Percentile(50.0)).unwrap();
        assert!((p50 - 20.0).abs() / 20.0 < 0.045, "{p50}");
        assert_eq!(a.value(Statistic::Percentile(100.0)), Some(40.0));
        assert_eq!(of(&[]).value(Statistic::Sum), None);
    }

    #[test]
    fn percentiles_of_zero_or_one_samples_are_exact() {
        let a = Aggregate::ones_of(3, 10);
        assert_eq!(a.value(Statistic::Sum), Some(3.0));
        assert_eq!(a.value(Statistic::Average), Some(0.3));
        assert_eq!(a.value(Statistic::Percentile(50.0)), Some(0.0));
        assert_eq!(a.value(Statistic::Percentile(80.0)), Some(1.0));
        assert_eq!(a.value(Statistic::Minimum), Some(0.0));
        assert_eq!(
            Aggregate::ones_of(0, 5).value(Statistic::Maximum),
            Some(0.0)
        );
    }

    #[test]
    fn merging_is_the_aggregate_of_all_samples() {
        let values: Vec<f64> = (1..=1000).map(|i| f64::from(i) * 1.7).collect();
        let whole = of(&values);
        let mut parts = of(&values[..300]);
        parts.merge(&of(&values[300..700]));
        parts.merge(&of(&values[700..]));
        assert_eq!(parts, whole);
        for p in [1.0, 50.0, 90.0, 99.0, 99.9] {
            let exact = values[(p / 100.0 * 1000.0_f64).ceil() as usize - 1];
            let got = whole.value(Statistic::Percentile(p)).unwrap();
            assert!(
                (got - exact).abs() / exact < 0.045,
                "p{p}: {got} against {exact}"
            );
        }
    }

    #[test]
    fn a_datum_survives_encoding() {
        let mut window = Window::new();
        for i in 0..500u64 {
            window.record_at(
                7,
                &Sample {
                    outcome: if i % 10 == 0 {
                        Outcome::ServerError
                    } else {
                        Outcome::Success
                    },
                    model_error: i % 20 == 0,
                    model_latency: Some(Duration::from_micros(100 + i * 13)),
                    overhead_latency: Duration::from_micros(20 + i % 7),
                },
            );
        }
        let datum = request_aggregates(&window.stats(7, 7), 4);
        let bytes = encode(&datum);
        assert_eq!(decode(&bytes).unwrap(), datum);
        assert!(bytes.len() < 800, "{} bytes", bytes.len());
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&[9]).is_err());
        let sum = |m: &str| datum[m].value(Statistic::Sum).unwrap();
        assert_eq!(sum("Invocations"), 500.0);
        assert_eq!(sum("Invocation5XXErrors"), 50.0);
        assert_eq!(sum("Invocation4XXErrors"), 0.0);
        assert_eq!(sum("InvocationModelErrors"), 25.0);
        assert_eq!(sum("InvocationsPerInstance"), 125.0);
        assert_eq!(datum["ModelLatency"].value(Statistic::Minimum), Some(100.0));
        assert_eq!(
            datum["ModelLatency"].value(Statistic::Maximum),
            Some(100.0 + 499.0 * 13.0)
        );
    }

    #[test]
    fn a_minute_merged_from_its_seconds_equals_the_minute_aggregated_at_once() {
        let mut window = Window::new();
        for s in 60..120u64 {
            for i in 0..(s % 7 + 1) {
                window.record_at(
                    s,
                    &Sample {
                        outcome: Outcome::Success,
                        model_error: false,
                        model_latency: Some(Duration::from_micros(s * 10 + i)),
                        overhead_latency: Duration::from_micros(5),
                    },
                );
            }
        }
        let mut merged = Datum::new();
        for s in 60..120 {
            merge_datum(&mut merged, &request_aggregates(&window.stats(s, s), 2));
        }
        let whole = request_aggregates(&window.stats(60, 119), 2);
        for (name, a) in &whole {
            assert_eq!(a.count, merged[name].count, "{name}");
            assert_eq!(a.histogram, merged[name].histogram, "{name}");
            assert_eq!(a.min, merged[name].min, "{name}");
            assert!((a.sum - merged[name].sum).abs() < 1e-6, "{name}");
        }
    }

    #[test]
    fn retention_parses_and_refuses_what_cannot_hold() {
        let tiers = parse_retention(DEFAULT_RETENTION).unwrap();
        assert_eq!(
            tiers,
            vec![
                Tier {
                    resolution: 1,
                    retention: 3 * 3600
                },
                Tier {
                    resolution: 60,
                    retention: 15 * 86_400
                },
                Tier {
                    resolution: 300,
                    retention: 63 * 86_400
                },
                Tier {
                    resolution: 3600,
                    retention: 455 * 86_400
                },
            ]
        );
        assert_eq!(parse_retention("off").unwrap(), vec![]);
        for bad in [
            "1s",
            "7s:1h",
            "1m:1h,1s:2h",
            "1m:1h,90s:2h",
            "1s:1h,1m:30m",
            "1s:0h",
            "1x:3h",
            "1m:30s",
            "1s:5s,1m:1h",
        ] {
            let e = parse_retention(bad).unwrap_err();
            assert!(e.starts_with("--metric-retention"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_query_is_served_by_the_finest_tier_holding_its_start() {
        let tiers = parse_retention(DEFAULT_RETENTION).unwrap();
        let now = 100 * 86_400;
        let at = |age: i64| tier_for(&tiers, now - age, now).unwrap().resolution;
        assert_eq!(at(0), 1);
        assert_eq!(at(3 * 3600), 1);
        assert_eq!(at(3 * 3600 + 1), 60);
        assert_eq!(at(15 * 86_400 + 1), 300);
        assert_eq!(at(63 * 86_400 + 1), 3600);
        assert_eq!(at(900 * 86_400), 3600);
        assert_eq!(tier_for(&[], now, now), None);
    }

    #[test]
    fn periods_and_starts_follow_cloudwatch() {
        assert!(check_period(0).is_err());
        assert!(check_period(7).unwrap_err().contains("Period"));
        assert!(check_period(90).is_err());
        for ok in [1, 5, 10, 30, 60, 300, 3600, 86_400] {
            assert_eq!(check_period(ok), Ok(ok as u64));
        }
        let now = 1_000_000_000;
        assert_eq!(round_start(now - 34, 60, now), now - 34 - (now - 34) % 60);
        assert_eq!(round_start(now - 34, 10, now), now - 34 - (now - 34) % 10);
        let old = now - 20 * 86_400 - 7;
        assert_eq!(round_start(old, 60, now) % 300, 0);
        let older = now - 70 * 86_400 - 7;
        assert_eq!(round_start(older, 3600, now) % 3600, 0);
        assert_eq!(datapoints(0, 1440 * 60, 60), 1440);
        assert!(check_datapoints(0, 1440 * 60, 60).is_ok());
        let e = check_datapoints(0, 1440 * 60 + 1, 60).unwrap_err();
        assert!(e.contains("1441 datapoints"), "{e}");
    }

    #[test]
    fn points_fall_into_their_periods() {
        let points = vec![
            (100, Aggregate::repeated(1.0, 2)),
            (159, Aggregate::repeated(1.0, 3)),
            (160, Aggregate::repeated(1.0, 4)),
            (99, Aggregate::repeated(1.0, 100)),
            (220, Aggregate::repeated(1.0, 100)),
        ];
        let periods = bucket(points, 100, 220, 60);
        let sums: Vec<(i64, f64)> = periods
            .iter()
            .map(|(t, a)| (*t, a.value(Statistic::Sum).unwrap()))
            .collect();
        assert_eq!(sums, vec![(100, 5.0), (160, 4.0)]);
    }

    #[test]
    fn iso_times_parse_as_the_sdks_write_them() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_iso8601("2026-12-07T21:00:00Z"), Some(1_796_677_200));
        assert_eq!(
            parse_iso8601("2026-12-07T21:00:00.123Z"),
            Some(1_796_677_200)
        );
        assert_eq!(
            parse_iso8601("2026-12-07T22:00:00+01:00"),
            Some(1_796_677_200)
        );
        assert_eq!(parse_iso8601("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        for bad in [
            "2026-12-07",
            "2026-13-07T00:00:00Z",
            "2026-12-07T21:00:00",
            "yesterday",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn query_ids_and_stats_are_checked() {
        assert!(valid_query_id("m1"));
        assert!(valid_query_id("latency_p99"));
        assert!(!valid_query_id("M1"));
        assert!(!valid_query_id("1m"));
        assert!(!valid_query_id("m-1"));
        assert_eq!(stat_of("p99"), Some(Statistic::Percentile(99.0)));
        assert_eq!(stat_of("Sum"), Some(Statistic::Sum));
        assert_eq!(stat_of("tm99"), None);
        assert_eq!(recently_active("PT3H"), Some(10_800));
        assert_eq!(recently_active("PT1H"), None);
        assert_eq!(
            unit_of(INVOCATION_NAMESPACE, "ModelLatency"),
            Some("Microseconds")
        );
        assert_eq!(unit_of(INVOCATION_NAMESPACE, "Nope"), None);
    }
}
