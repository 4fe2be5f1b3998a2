//! Alarms over a variant's recent request metrics, evaluated in-process many times a
//! second so that a bad deployment can be rolled back automatically: CloudWatch alarms
//! over SageMaker's endpoint metrics, but sub-second.
//!
//! This module owns two things, both plain data and plain functions:
//!
//! * [`Window`]: a variant's recent requests, one bucket per whole second (only seconds
//!   that saw a request have one), kept for [`RETAINED_SECONDS`]. Recording is `&self`,
//!   thread safe and cheap (one short mutex hold). Latencies are kept as exact
//!   count/sum/min/max plus a sparse log-linear histogram (buckets with ratio 2^(1/8),
//!   so a percentile is within about 4.5 % of a value that was recorded near that rank).
//!   [`Window::stats`] aggregates a range of seconds into [`Stats`], which
//!   [merge](Stats::merge) across variants and give a [`Metric`]'s [`Statistic`] through
//!   [`Stats::value`].
//! * [`AlarmDefinition`]: an alarm as the API takes it (SageMaker/CloudWatch field names),
//!   validated by [`AlarmDefinition::compile`] into an [`Alarm`], whose
//!   [`evaluate`](Alarm::evaluate) turns windows into an [`Evaluation`]: `OK`, `ALARM` or
//!   `INSUFFICIENT_DATA` with a CloudWatch-like reason.
//!
//! # Time
//!
//! Seconds are whole seconds on the caller's clock (the server counts them from a
//! process-wide monotonic epoch, so every window in the process is aligned); nothing here
//! reads a clock. Datapoint `k` of an alarm (`k = 0` is the
//! newest) covers seconds `[now − (k+1)·Period + 1, now − k·Period]`: the newest includes
//! the current, partial second, so a breach shows within well under a second of it
//! starting (at the price of the newest datapoint being built from fewer requests).
//!
//! # Metrics
//!
//! SageMaker's names and units. `Invocations`, `Invocation4XXErrors`,
//! `Invocation5XXErrors` and `InvocationModelErrors` give every request a 0 or a 1
//! (`Invocations` always 1): `Average` is the rate, `Sum` the count, `SampleCount` the
//! number of requests, `Minimum`/`Maximum` 0 or 1. `ModelLatency` and `OverheadLatency` are
//! in microseconds and only count requests that have the value; they alone take
//! percentiles (`ExtendedStatistic`). A period with no sample for the metric has no
//! datapoint ("missing"), including `Invocations` when there were no requests.
//!
//! # Evaluation
//!
//! Of the last `EvaluationPeriods` datapoints, those that cross the threshold *breach*.
//! Missing datapoints count per `TreatMissingData`: `missing` and `ignore` as neither
//! breaching nor not (an evaluation is stateless; with `ignore` and no datapoint at all,
//! [`transition`] keeps the alarm's previous state), `notBreaching` as not breaching,
//! `breaching` as breaching. The state is
//! `ALARM` when at least `DatapointsToAlarm` breach; otherwise `INSUFFICIENT_DATA` when
//! fewer than `DatapointsToAlarm` datapoints are actually present (except with
//! `notBreaching`, where a missing datapoint is a good one, as CloudWatch documents);
//! otherwise `OK`.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names;

/// Seconds of history a [`Window`] keeps: recording second `s` drops every bucket of
/// second `s − RETAINED_SECONDS` or older. Also the longest `Period × EvaluationPeriods`
/// evaluated over the windows; a longer alarm is evaluated over the metric store
/// ([`Alarm::from_store`]).
pub const RETAINED_SECONDS: u64 = 600;

/// The longest `Period × EvaluationPeriods`: a day, as CloudWatch's.
pub const MAX_LOOKBACK: u64 = 86_400;

/// The longest `Period`, in seconds.
pub const MAX_PERIOD: u64 = MAX_LOOKBACK;

/// The longest `AlarmDescription`, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;

/// The names of the metrics Plinth records, as `MetricName` takes them.
pub const METRICS: &[&str] = &[
    "Invocations",
    "Invocation4XXErrors",
    "Invocation5XXErrors",
    "InvocationModelErrors",
    "ModelLatency",
    "OverheadLatency",
];

/// The names of the plain statistics, as `Statistic` takes them.
pub const STATISTICS: &[&str] = &["Average", "Sum", "SampleCount", "Minimum", "Maximum"];

/// The names of the comparison operators, as `ComparisonOperator` takes them.
pub const COMPARISON_OPERATORS: &[&str] = &[
    "GreaterThanThreshold",
    "GreaterThanOrEqualToThreshold",
    "LessThanThreshold",
    "LessThanOrEqualToThreshold",
];

/// The values `TreatMissingData` takes.
pub const TREAT_MISSING_DATA: &[&str] = &["missing", "notBreaching", "breaching", "ignore"];

/// Histogram buckets per doubling: bucket ratio 2^(1/8).
const BUCKETS_PER_DOUBLING: f64 = 8.0;

// ---------------------------------------------------------------------------------------
// Samples and the window
// ---------------------------------------------------------------------------------------

/// How a request ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// 2xx.
    Success,
    /// 4xx: the client's fault.
    ClientError,
    /// 5xx: the server's (or the model's) fault.
    ServerError,
}

/// One request, as a [`Window`] records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// How the request ended.
    pub outcome: Outcome,
    /// Whether the model itself failed (SageMaker's `InvocationModelErrors`).
    pub model_error: bool,
    /// Time spent in the model, when the request reached it.
    pub model_latency: Option<Duration>,
    /// Time spent in Plinth around the model.
    pub overhead_latency: Duration,
}

/// Index of the histogram bucket of a latency: 0 for under 1 µs, else
/// `1 + floor(8·log2(µs))`, so bucket `i ≥ 1` covers `[2^((i−1)/8), 2^(i/8))` µs.
///
/// Every request records two latencies, so this avoids `log2`: the float's exponent is the
/// whole doublings, and its mantissa against the eighth-powers of two gives the eighths.
pub(crate) fn bucket_index(nanos: u64) -> u16 {
    /// 2^(j/8) for j = 1..=7.
    const EIGHTHS: [f64; 7] = [
        1.090_507_732_665_257_7,
        1.189_207_115_002_721,
        1.296_839_554_651_009_6,
        std::f64::consts::SQRT_2,
        1.542_210_825_407_940_7,
        1.681_792_830_507_429,
        1.834_008_086_409_342_4,
    ];
    let micros = nanos as f64 / 1000.0;
    if micros < 1.0 {
        return 0;
    }
    let bits = micros.to_bits();
    // A normal float ≥ 1: the exponent is floor(log2(µs)), at most 54 here.
    let doublings = (bits >> 52) as u16 - 1023;
    let mantissa = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    let eighths = EIGHTHS.iter().take_while(|&&t| t <= mantissa).count() as u16;
    // At most 1 + 8·54 = 433: fits.
    1 + doublings * BUCKETS_PER_DOUBLING as u16 + eighths
}

/// The value (µs) a histogram bucket stands for: its geometric midpoint (0.5 µs for
/// bucket 0). Within 2^(1/16) − 1 ≈ 4.4 % of every value in the bucket, bucket 0 aside.
pub(crate) fn bucket_value(index: u16) -> f64 {
    if index == 0 {
        0.5
    } else {
        ((f64::from(index) - 0.5) / BUCKETS_PER_DOUBLING).exp2()
    }
}

/// The `p`-th percentile (`0 < p ≤ 100`) of a histogram (`(bucket index, count)` in index
/// order) whose samples lie in `[min, max]`, by nearest rank: the sample of rank
/// `ceil(p/100 · n)`. Rank 1 and rank `n` are the exact minimum and maximum; other ranks
/// are their bucket's midpoint clamped to `[min, max]` (bucket 0, the values under 1,
/// stands for `min`). `None` with no samples or `p` out of range.
pub(crate) fn nearest_rank(
    histogram: impl Iterator<Item = (u16, u64)> + Clone,
    min: f64,
    max: f64,
    p: f64,
) -> Option<f64> {
    let total: u64 = histogram.clone().map(|(_, n)| n).sum();
    if total == 0 || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let rank = ((p / 100.0 * total as f64).ceil() as u64).clamp(1, total);
    if rank <= 1 {
        return Some(min);
    }
    if rank >= total {
        return Some(max);
    }
    let mut seen = 0;
    for (index, count) in histogram {
        seen += count;
        if seen >= rank {
            let value = if index == 0 { min } else { bucket_value(index) };
            return Some(value.clamp(min, max));
        }
    }
    Some(max)
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// One second's latencies: exact count/sum/min/max and a sparse histogram sorted by
/// bucket index.
#[derive(Debug, Clone, Default)]
struct LatencyBucket {
    count: u64,
    sum_nanos: u64,
    min_nanos: u64,
    max_nanos: u64,
    histogram: Vec<(u16, u32)>,
}

impl LatencyBucket {
    fn add(&mut self, nanos: u64) {
        if self.count == 0 {
            self.min_nanos = nanos;
            self.max_nanos = nanos;
        } else {
            self.min_nanos = self.min_nanos.min(nanos);
            self.max_nanos = self.max_nanos.max(nanos);
        }
        self.count += 1;
        self.sum_nanos = self.sum_nanos.saturating_add(nanos);
        let index = bucket_index(nanos);
        match self.histogram.binary_search_by_key(&index, |&(i, _)| i) {
            Ok(at) => self.histogram[at].1 = self.histogram[at].1.saturating_add(1),
            Err(at) => self.histogram.insert(at, (index, 1)),
        }
    }
}

/// One second's requests.
#[derive(Debug, Clone)]
struct Bucket {
    second: u64,
    count: u64,
    errors_4xx: u64,
    errors_5xx: u64,
    model_errors: u64,
    model_latency: LatencyBucket,
    overhead_latency: LatencyBucket,
}

impl Bucket {
    fn new(second: u64) -> Self {
        Self {
            second,
            count: 0,
            errors_4xx: 0,
            errors_5xx: 0,
            model_errors: 0,
            model_latency: LatencyBucket::default(),
            overhead_latency: LatencyBucket::default(),
        }
    }

    fn add(&mut self, sample: &Sample) {
        self.count += 1;
        match sample.outcome {
            Outcome::Success => {}
            Outcome::ClientError => self.errors_4xx += 1,
            Outcome::ServerError => self.errors_5xx += 1,
        }
        self.model_errors += u64::from(sample.model_error);
        if let Some(latency) = sample.model_latency {
            self.model_latency.add(duration_nanos(latency));
        }
        self.overhead_latency
            .add(duration_nanos(sample.overhead_latency));
    }
}

/// A variant's recent requests: one bucket per whole second that saw a request, for the
/// last [`RETAINED_SECONDS`] seconds (counted back from the newest second recorded).
/// Plain data: the caller decides what a second is (its clock) and how the window is
/// shared between the request path and the alarm evaluator (its lock).
#[derive(Debug, Default, Clone)]
pub struct Window {
    /// Sorted by second, ascending, at most one bucket a second.
    buckets: VecDeque<Bucket>,
}

impl Window {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record one request in `second`. Seconds may arrive slightly out of order (two
    /// threads racing over a second boundary); a second already older than the
    /// retention, counted back from the newest second recorded, is dropped.
    pub fn record_at(&mut self, second: u64, sample: &Sample) {
        let buckets = &mut self.buckets;
        match buckets.back_mut() {
            Some(last) if last.second == second => {
                last.add(sample);
                return;
            }
            Some(last) if last.second > second => {
                if second + RETAINED_SECONDS <= last.second {
                    return;
                }
                match buckets.binary_search_by_key(&second, |b| b.second) {
                    Ok(at) => buckets[at].add(sample),
                    Err(at) => {
                        let mut bucket = Bucket::new(second);
                        bucket.add(sample);
                        buckets.insert(at, bucket);
                    }
                }
                return;
            }
            _ => {}
        }
        let mut bucket = Bucket::new(second);
        bucket.add(sample);
        buckets.push_back(bucket);
        while buckets
            .front()
            .is_some_and(|b| b.second + RETAINED_SECONDS <= second)
        {
            buckets.pop_front();
        }
    }

    /// Everything recorded in seconds `first_second..=last_second`, aggregated.
    pub fn stats(&self, first_second: u64, last_second: u64) -> Stats {
        let mut stats = Stats::default();
        let buckets = &self.buckets;
        let start = buckets.partition_point(|b| b.second < first_second);
        for bucket in buckets.range(start..) {
            if bucket.second > last_second {
                break;
            }
            stats.add_bucket(bucket);
        }
        stats
    }

    /// How many per-second buckets the window holds now (at most [`RETAINED_SECONDS`]).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Add each second `s ≤ now` to `periods[(now − s) / period]`, for as many periods
    /// as `periods` holds.
    fn accumulate(&self, now: u64, period: u64, periods: &mut [Stats]) {
        for bucket in self.buckets.iter().rev() {
            if bucket.second > now {
                continue;
            }
            let k = (now - bucket.second) / period;
            if k >= periods.len() as u64 {
                break;
            }
            periods[k as usize].add_bucket(bucket);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Aggregated statistics
// ---------------------------------------------------------------------------------------

/// Latencies aggregated over some seconds (and windows): exact count, sum, minimum and
/// maximum, and a histogram for percentiles. Values are in microseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyStats {
    pub(crate) count: u64,
    pub(crate) sum_nanos: u128,
    pub(crate) min_nanos: u64,
    pub(crate) max_nanos: u64,
    /// Dense: `histogram[i]` is the count of bucket `i`.
    pub(crate) histogram: Vec<u64>,
}

impl LatencyStats {
    fn add_extremes(&mut self, count: u64, sum_nanos: u128, min_nanos: u64, max_nanos: u64) {
        if count == 0 {
            return;
        }
        if self.count == 0 {
            self.min_nanos = min_nanos;
            self.max_nanos = max_nanos;
        } else {
            self.min_nanos = self.min_nanos.min(min_nanos);
            self.max_nanos = self.max_nanos.max(max_nanos);
        }
        self.count += count;
        self.sum_nanos += sum_nanos;
    }

    fn bump(&mut self, index: u16, count: u64) {
        let index = usize::from(index);
        if self.histogram.len() <= index {
            self.histogram.resize(index + 1, 0);
        }
        self.histogram[index] += count;
    }

    fn add_bucket(&mut self, bucket: &LatencyBucket) {
        self.add_extremes(
            bucket.count,
            u128::from(bucket.sum_nanos),
            bucket.min_nanos,
            bucket.max_nanos,
        );
        for &(index, count) in &bucket.histogram {
            self.bump(index, u64::from(count));
        }
    }

    /// Add every sample of `other`.
    pub fn merge(&mut self, other: &LatencyStats) {
        self.add_extremes(
            other.count,
            other.sum_nanos,
            other.min_nanos,
            other.max_nanos,
        );
        if self.histogram.len() < other.histogram.len() {
            self.histogram.resize(other.histogram.len(), 0);
        }
        for (mine, theirs) in self.histogram.iter_mut().zip(&other.histogram) {
            *mine += theirs;
        }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the samples, µs; `None` with no samples.
    pub fn sum_micros(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_nanos as f64 / 1000.0)
    }

    /// Mean, µs (exact up to floating point); `None` with no samples.
    pub fn mean_micros(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_nanos as f64 / self.count as f64 / 1000.0)
    }

    /// Smallest sample, µs (exact); `None` with no samples.
    pub fn min_micros(&self) -> Option<f64> {
        (self.count > 0).then(|| self.min_nanos as f64 / 1000.0)
    }

    /// Largest sample, µs (exact); `None` with no samples.
    pub fn max_micros(&self) -> Option<f64> {
        (self.count > 0).then(|| self.max_nanos as f64 / 1000.0)
    }

    /// The `p`-th percentile (`0 < p ≤ 100`), µs, by nearest rank: the sample of rank
    /// `ceil(p/100 · n)`. Rank 1 and rank `n` are the exact minimum and maximum; other
    /// ranks are their histogram bucket's midpoint (within about 4.5 % of the sample),
    /// clamped to `[min, max]`. `None` with no samples or `p` out of range.
    pub fn percentile_micros(&self, p: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let buckets = self
            .histogram
            .iter()
            .enumerate()
            .map(|(i, &n)| (u16::try_from(i).unwrap_or(u16::MAX), n));
        nearest_rank(buckets, self.min_micros()?, self.max_micros()?, p)
    }

    fn value(&self, statistic: Statistic) -> Option<f64> {
        match statistic {
            Statistic::Average => self.mean_micros(),
            Statistic::Sum => self.sum_micros(),
            Statistic::SampleCount => (self.count > 0).then_some(self.count as f64),
            Statistic::Minimum => self.min_micros(),
            Statistic::Maximum => self.max_micros(),
            Statistic::Percentile(p) => self.percentile_micros(p),
        }
    }
}

/// Requests aggregated over some seconds (and, [merged](Stats::merge), over several
/// variants' windows).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Requests (`Invocations`).
    pub count: u64,
    /// Requests that ended 4xx (`Invocation4XXErrors`).
    pub errors_4xx: u64,
    /// Requests that ended 5xx (`Invocation5XXErrors`).
    pub errors_5xx: u64,
    /// Requests where the model failed (`InvocationModelErrors`).
    pub model_errors: u64,
    /// `ModelLatency`, from the requests that reached the model.
    pub model_latency: LatencyStats,
    /// `OverheadLatency`, from every request.
    pub overhead_latency: LatencyStats,
}

impl Stats {
    fn add_bucket(&mut self, bucket: &Bucket) {
        self.count += bucket.count;
        self.errors_4xx += bucket.errors_4xx;
        self.errors_5xx += bucket.errors_5xx;
        self.model_errors += bucket.model_errors;
        self.model_latency.add_bucket(&bucket.model_latency);
        self.overhead_latency.add_bucket(&bucket.overhead_latency);
    }

    /// Add every request of `other`.
    pub fn merge(&mut self, other: &Stats) {
        self.count += other.count;
        self.errors_4xx += other.errors_4xx;
        self.errors_5xx += other.errors_5xx;
        self.model_errors += other.model_errors;
        self.model_latency.merge(&other.model_latency);
        self.overhead_latency.merge(&other.overhead_latency);
    }

    /// `metric`'s `statistic` (see the module documentation for what each means);
    /// `None` when there is no sample of the metric, or for a percentile of a count
    /// metric.
    pub fn value(&self, metric: Metric, statistic: Statistic) -> Option<f64> {
        let hits = match metric {
            Metric::Invocations => self.count,
            Metric::Invocation4XXErrors => self.errors_4xx,
            Metric::Invocation5XXErrors => self.errors_5xx,
            Metric::InvocationModelErrors => self.model_errors,
            Metric::ModelLatency => return self.model_latency.value(statistic),
            Metric::OverheadLatency => return self.overhead_latency.value(statistic),
        };
        let n = self.count;
        if n == 0 {
            return None;
        }
        match statistic {
            Statistic::Average => Some(hits as f64 / n as f64),
            Statistic::Sum => Some(hits as f64),
            Statistic::SampleCount => Some(n as f64),
            Statistic::Minimum => Some(if hits == n { 1.0 } else { 0.0 }),
            Statistic::Maximum => Some(if hits > 0 { 1.0 } else { 0.0 }),
            Statistic::Percentile(_) => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Metrics, statistics, operators
// ---------------------------------------------------------------------------------------

/// A metric Plinth records, by SageMaker's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Requests; each counts 1.
    Invocations,
    /// Requests that ended 4xx; each request counts 0 or 1.
    Invocation4XXErrors,
    /// Requests that ended 5xx; each request counts 0 or 1.
    Invocation5XXErrors,
    /// Requests where the model failed; each request counts 0 or 1.
    InvocationModelErrors,
    /// Time in the model, µs, of the requests that reached it.
    ModelLatency,
    /// Time in Plinth around the model, µs.
    OverheadLatency,
}

impl Metric {
    /// Every metric, in the order of [`METRICS`].
    pub const ALL: [Metric; 6] = [
        Metric::Invocations,
        Metric::Invocation4XXErrors,
        Metric::Invocation5XXErrors,
        Metric::InvocationModelErrors,
        Metric::ModelLatency,
        Metric::OverheadLatency,
    ];

    /// SageMaker's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Invocations => "Invocations",
            Metric::Invocation4XXErrors => "Invocation4XXErrors",
            Metric::Invocation5XXErrors => "Invocation5XXErrors",
            Metric::InvocationModelErrors => "InvocationModelErrors",
            Metric::ModelLatency => "ModelLatency",
            Metric::OverheadLatency => "OverheadLatency",
        }
    }

    /// The metric of SageMaker name `name` (exact, case-sensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Whether this is a latency (percentiles allowed), not a per-request 0/1 count.
    pub fn is_latency(self) -> bool {
        matches!(self, Metric::ModelLatency | Metric::OverheadLatency)
    }

    /// CloudWatch's unit for the metric.
    pub fn unit(self) -> &'static str {
        if self.is_latency() {
            "Microseconds"
        } else {
            "None"
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a period's samples become one datapoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    /// Mean of the samples.
    Average,
    /// Sum of the samples.
    Sum,
    /// Number of samples.
    SampleCount,
    /// Smallest sample.
    Minimum,
    /// Largest sample.
    Maximum,
    /// The given percentile, `0 < p ≤ 100` (CloudWatch's `ExtendedStatistic` `pNN.NN`).
    Percentile(f64),
}

impl Statistic {
    /// A plain statistic by CloudWatch name (`Average`, `Sum`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "Average" => Statistic::Average,
            "Sum" => Statistic::Sum,
            "SampleCount" => Statistic::SampleCount,
            "Minimum" => Statistic::Minimum,
            "Maximum" => Statistic::Maximum,
            _ => return None,
        })
    }

    /// A percentile in CloudWatch's `ExtendedStatistic` form: `p` then a number
    /// greater than 0 and at most 100 with at most two decimals (`p50`, `p99.9`,
    /// `p99.99`).
    pub fn from_extended(text: &str) -> Option<Self> {
        let number = text.strip_prefix('p')?;
        let (whole, fraction) = match number.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (number, None),
        };
        let digits = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(whole, 3) || fraction.is_some_and(|f| !digits(f, 2)) {
            return None;
        }
        let p: f64 = number.parse().ok()?;
        (p > 0.0 && p <= 100.0).then_some(Statistic::Percentile(p))
    }
}

impl fmt::Display for Statistic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statistic::Average => f.write_str("Average"),
            Statistic::Sum => f.write_str("Sum"),
            Statistic::SampleCount => f.write_str("SampleCount"),
            Statistic::Minimum => f.write_str("Minimum"),
            Statistic::Maximum => f.write_str("Maximum"),
            Statistic::Percentile(p) => write!(f, "p{p}"),
        }
    }
}

/// How a datapoint is compared with the threshold; a datapoint *breaches* when the
/// comparison holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComparisonOperator {
    /// `datapoint > threshold`.
    GreaterThanThreshold,
    /// `datapoint >= threshold`.
    GreaterThanOrEqualToThreshold,
    /// `datapoint < threshold`.
    LessThanThreshold,
    /// `datapoint <= threshold`.
    LessThanOrEqualToThreshold,
}

impl ComparisonOperator {
    /// CloudWatch's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GreaterThanThreshold => "GreaterThanThreshold",
            Self::GreaterThanOrEqualToThreshold => "GreaterThanOrEqualToThreshold",
            Self::LessThanThreshold => "LessThanThreshold",
            Self::LessThanOrEqualToThreshold => "LessThanOrEqualToThreshold",
        }
    }

    /// The operator of CloudWatch name `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::GreaterThanThreshold,
            Self::GreaterThanOrEqualToThreshold,
            Self::LessThanThreshold,
            Self::LessThanOrEqualToThreshold,
        ]
        .into_iter()
        .find(|o| o.as_str() == name)
    }

    /// Whether `value` breaches `threshold`.
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::GreaterThanThreshold => value > threshold,
            Self::GreaterThanOrEqualToThreshold => value >= threshold,
            Self::LessThanThreshold => value < threshold,
            Self::LessThanOrEqualToThreshold => value <= threshold,
        }
    }

    /// The comparison in words, for reasons: "greater than", ...
    fn words(self) -> &'static str {
        match self {
            Self::GreaterThanThreshold => "greater than",
            Self::GreaterThanOrEqualToThreshold => "greater than or equal to",
            Self::LessThanThreshold => "less than",
            Self::LessThanOrEqualToThreshold => "less than or equal to",
        }
    }
}

/// How a missing datapoint (no sample in its period) counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TreatMissingData {
    /// Neither breaching nor not (the default).
    #[default]
    Missing,
    /// As not breaching.
    NotBreaching,
    /// As breaching.
    Breaching,
    /// As [`Missing`](TreatMissingData::Missing), except that with no datapoint at all
    /// the alarm keeps its state ([`transition`]).
    Ignore,
}

impl TreatMissingData {
    /// CloudWatch's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::NotBreaching => "notBreaching",
            Self::Breaching => "breaching",
            Self::Ignore => "ignore",
        }
    }

    /// The treatment of CloudWatch name `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Missing,
            Self::NotBreaching,
            Self::Breaching,
            Self::Ignore,
        ]
        .into_iter()
        .find(|t| t.as_str() == name)
    }
}

/// Which of an endpoint's requests an alarm watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Scope {
    /// Every fleet of the endpoint (the default).
    #[default]
    Endpoint,
    /// Only the fleet a deployment is moving to.
    NewFleet,
}

// ---------------------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------------------

/// An alarm as the API takes it (and echoes it back), with CloudWatch's field names;
/// [`compile`](AlarmDefinition::compile) validates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AlarmDefinition {
    /// The endpoint whose requests are watched.
    pub endpoint_name: String,
    /// Only requests served by variants of this name; all variants when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_name: Option<String>,
    /// Which fleets' requests: `Endpoint` (default) or `NewFleet`.
    #[serde(default)]
    pub scope: Scope,
    /// One of [`METRICS`].
    pub metric_name: String,
    /// One of [`STATISTICS`]; exactly one of this and `ExtendedStatistic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<String>,
    /// A percentile, `p99`, `p99.9`, ... (latency metrics only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_statistic: Option<String>,
    /// One of [`COMPARISON_OPERATORS`].
    pub comparison_operator: String,
    /// Finite; in the metric's unit (µs for latencies, a rate for `Average` of a count).
    pub threshold: f64,
    /// Seconds per datapoint, 1 to 86,400.
    pub period: u64,
    /// Datapoints evaluated, at least 1; `Period × EvaluationPeriods` at most 86,400 (600
    /// for a quality alarm or `Scope` `NewFleet`; past 600 a `Period` multiple of 60).
    pub evaluation_periods: u64,
    /// Breaching datapoints needed to alarm, 1 to `EvaluationPeriods` (default
    /// `EvaluationPeriods`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapoints_to_alarm: Option<u64>,
    /// One of [`TREAT_MISSING_DATA`] (default `missing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub treat_missing_data: Option<String>,
    /// Free text, at most 1024 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_description: Option<String>,
    /// `AWS/SageMaker` (the default: request metrics) or [`QUALITY_NAMESPACE`] (a model
    /// quality metric from the monitoring executions, SageMaker's name for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// CloudWatch's `Unit`: a unit that is not the metric's ([`Metric::unit`]) finds no
    /// datapoints, as in CloudWatch. Given by PutMetricAlarm only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// CloudWatch's `ActionsEnabled` (default true), switched by EnableAlarmActions and
    /// DisableAlarmActions. Given by PutMetricAlarm only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions_enabled: Option<bool>,
}

/// SageMaker's namespace of model quality metrics: an alarm in it watches the metric
/// `MetricName` (`accuracy`, `f1`, `auc`, `mae`...) of the last monitoring execution.
pub const QUALITY_NAMESPACE: &str = "aws/sagemaker/Endpoints/model-metrics";
/// The namespace of the request metrics.
pub const REQUEST_NAMESPACE: &str = "AWS/SageMaker";

/// The model quality metrics an alarm may watch (the scalar metrics of `statistics.json`).
pub const QUALITY_METRICS: &[&str] = &[
    "accuracy",
    "precision",
    "recall",
    "f0_5",
    "f1",
    "f2",
    "auc",
    "au_prc",
    "true_positive_rate",
    "true_negative_rate",
    "false_positive_rate",
    "false_negative_rate",
    "weighted_precision",
    "weighted_recall",
    "weighted_f0_5",
    "weighted_f1",
    "weighted_f2",
    "mae",
    "mse",
    "rmse",
    "r2",
];

fn join(items: &[&str]) -> String {
    items.join(", ")
}

impl AlarmDefinition {
    /// Validate into an [`Alarm`]; the error names the field and what it accepts.
    pub fn compile(&self) -> Result<Alarm, String> {
        if !names::is_valid(&self.endpoint_name) {
            return Err(format!(
                "EndpointName {:?} is not a valid endpoint name; {}",
                self.endpoint_name,
                names::RULE
            ));
        }
        if let Some(variant) = &self.variant_name {
            if !names::is_valid(variant) {
                return Err(format!(
                    "VariantName {variant:?} is not a valid variant name; {}",
                    names::RULE
                ));
            }
        }
        let quality = match self.namespace.as_deref() {
            None | Some(REQUEST_NAMESPACE) => None,
            Some(QUALITY_NAMESPACE) => {
                if !QUALITY_METRICS.contains(&self.metric_name.as_str()) {
                    return Err(format!(
                        "MetricName {:?} is not a model quality metric; in {QUALITY_NAMESPACE} \
                         use one of {}",
                        self.metric_name,
                        join(QUALITY_METRICS)
                    ));
                }
                if self.statistic.as_deref() != Some("Average") || self.extended_statistic.is_some()
                {
                    return Err(format!(
                        "a model quality alarm takes Statistic Average (each datapoint is the \
                         metric of the last monitoring execution), not {}",
                        self.statistic
                            .as_deref()
                            .or(self.extended_statistic.as_deref())
                            .unwrap_or("none")
                    ));
                }
                Some(self.metric_name.clone())
            }
            Some(other) => {
                return Err(format!(
                    "Namespace {other:?} is not one Plinth records; use {REQUEST_NAMESPACE} \
                     (request metrics) or {QUALITY_NAMESPACE} (model quality)"
                ))
            }
        };
        let metric = match &quality {
            // Unused: the datapoints come from the executions.
            Some(_) => Metric::Invocations,
            None => Metric::from_name(&self.metric_name).ok_or_else(|| {
                format!(
                    "MetricName {:?} is not a metric Plinth records; use one of {} (or \
                     Namespace {QUALITY_NAMESPACE} for a model quality metric)",
                    self.metric_name,
                    join(METRICS)
                )
            })?,
        };
        let statistic = match (&self.statistic, &self.extended_statistic) {
            (Some(_), Some(_)) => {
                return Err(
                    "give exactly one of Statistic and ExtendedStatistic, not both".to_string(),
                )
            }
            (None, None) => {
                return Err(format!(
                    "give one of Statistic ({}) or ExtendedStatistic (a percentile such as \
                     p99 or p99.9)",
                    join(STATISTICS)
                ))
            }
            (Some(name), None) => Statistic::from_name(name).ok_or_else(|| {
                format!(
                    "Statistic {name:?} is not a statistic; use one of {} (or \
                     ExtendedStatistic for a percentile such as p99)",
                    join(STATISTICS)
                )
            })?,
            (None, Some(text)) => {
                let statistic = Statistic::from_extended(text).ok_or_else(|| {
                    format!(
                        "ExtendedStatistic {text:?} is not a percentile; use p followed by a \
                         number greater than 0 and at most 100 with at most two decimals, \
                         such as p50, p99 or p99.9"
                    )
                })?;
                if !metric.is_latency() {
                    return Err(format!(
                        "ExtendedStatistic {text:?} applies only to ModelLatency and \
                         OverheadLatency; {metric} counts requests (0 or 1 each), so use \
                         Statistic with one of {}",
                        join(STATISTICS)
                    ));
                }
                statistic
            }
        };
        let operator =
            ComparisonOperator::from_name(&self.comparison_operator).ok_or_else(|| {
                format!(
                    "ComparisonOperator {:?} is not a comparison operator; use one of {}",
                    self.comparison_operator,
                    join(COMPARISON_OPERATORS)
                )
            })?;
        if !self.threshold.is_finite() {
            return Err(format!(
                "Threshold must be a finite number, got {}",
                self.threshold
            ));
        }
        if !(1..=MAX_PERIOD).contains(&self.period) {
            return Err(format!(
                "Period must be between 1 and {MAX_PERIOD} seconds, got {}",
                self.period
            ));
        }
        if self.evaluation_periods == 0 {
            return Err("EvaluationPeriods must be at least 1, got 0".to_string());
        }
        let lookback = match self.period.checked_mul(self.evaluation_periods) {
            Some(total) if total <= MAX_LOOKBACK => total,
            _ => {
                return Err(format!(
                    "Period × EvaluationPeriods must be at most {MAX_LOOKBACK} seconds (a day), \
                     got {} × {}",
                    self.period, self.evaluation_periods
                ))
            }
        };
        if lookback > RETAINED_SECONDS && quality.is_some() {
            return Err(format!(
                "Period × EvaluationPeriods must be at most {RETAINED_SECONDS} seconds for a \
                 model quality alarm, got {} × {}",
                self.period, self.evaluation_periods
            ));
        }
        if lookback > RETAINED_SECONDS && quality.is_none() {
            // Evaluated over the metric store's datapoints, as CloudWatch evaluates.
            if !self.period.is_multiple_of(60) {
                return Err(format!(
                    "Period must be a multiple of 60 for an alarm over more than \
                     {RETAINED_SECONDS} s (Period × EvaluationPeriods {} × {}: evaluated over \
                     the stored metrics, kept by the minute)",
                    self.period, self.evaluation_periods
                ));
            }
            if self.scope == Scope::NewFleet {
                return Err(format!(
                    "Scope NewFleet watches at most {RETAINED_SECONDS} s (Period × \
                     EvaluationPeriods {} × {}): the stored metrics do not tell a deployment's \
                     fleets apart",
                    self.period, self.evaluation_periods
                ));
            }
        }
        let datapoints_to_alarm = self.datapoints_to_alarm.unwrap_or(self.evaluation_periods);
        if !(1..=self.evaluation_periods).contains(&datapoints_to_alarm) {
            return Err(format!(
                "DatapointsToAlarm must be between 1 and EvaluationPeriods ({}), got {}",
                self.evaluation_periods, datapoints_to_alarm
            ));
        }
        let treat_missing_data = match &self.treat_missing_data {
            None => TreatMissingData::Missing,
            Some(name) => TreatMissingData::from_name(name).ok_or_else(|| {
                format!(
                    "TreatMissingData {name:?} is not a treatment of missing data; use one \
                     of {}",
                    join(TREAT_MISSING_DATA)
                )
            })?,
        };
        if let Some(description) = &self.alarm_description {
            let chars = description.chars().count();
            if chars > MAX_DESCRIPTION_CHARS {
                return Err(format!(
                    "AlarmDescription must be at most {MAX_DESCRIPTION_CHARS} characters, \
                     got {chars}"
                ));
            }
        }
        let other_unit =
            quality.is_none() && self.unit.as_deref().is_some_and(|u| u != metric.unit());
        Ok(Alarm {
            endpoint_name: self.endpoint_name.clone(),
            variant_name: self.variant_name.clone(),
            scope: self.scope,
            quality,
            metric,
            statistic,
            operator,
            threshold: self.threshold,
            period: self.period,
            evaluation_periods: self.evaluation_periods,
            datapoints_to_alarm,
            treat_missing_data,
            description: self.alarm_description.clone(),
            other_unit,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Alarms and evaluation
// ---------------------------------------------------------------------------------------

/// An alarm's state, as CloudWatch names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AlarmState {
    /// Enough datapoints, too few breaching.
    #[serde(rename = "OK")]
    Ok,
    /// At least `DatapointsToAlarm` datapoints breaching.
    #[serde(rename = "ALARM")]
    Alarm,
    /// Too few datapoints present to say.
    #[serde(rename = "INSUFFICIENT_DATA")]
    InsufficientData,
}

impl AlarmState {
    /// `"OK"`, `"ALARM"` or `"INSUFFICIENT_DATA"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

impl fmt::Display for AlarmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One evaluation of an alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The state.
    pub state: AlarmState,
    /// Why, in CloudWatch's style.
    pub reason: String,
    /// The last `EvaluationPeriods` datapoints, newest first; `None` = missing.
    pub datapoints: Vec<Option<f64>>,
}

/// A validated alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    endpoint_name: String,
    variant_name: Option<String>,
    scope: Scope,
    /// A model quality metric, when the alarm watches one.
    quality: Option<String>,
    metric: Metric,
    statistic: Statistic,
    operator: ComparisonOperator,
    threshold: f64,
    period: u64,
    evaluation_periods: u64,
    datapoints_to_alarm: u64,
    treat_missing_data: TreatMissingData,
    description: Option<String>,
    /// `Unit` names another unit than the metric's: no datapoint is ever present.
    other_unit: bool,
}

impl Alarm {
    /// The endpoint watched.
    pub fn endpoint_name(&self) -> &str {
        &self.endpoint_name
    }

    /// Only variants of this name are watched; all when `None`.
    pub fn variant_name(&self) -> Option<&str> {
        self.variant_name.as_deref()
    }

    /// Which fleets are watched.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The model quality metric watched, if the alarm watches one (its datapoints come
    /// from [`quality_datapoints`](Alarm::quality_datapoints)).
    pub fn quality_metric(&self) -> Option<&str> {
        self.quality.as_deref()
    }

    /// A quality alarm's datapoints at `now_second`, newest first: for each period, the
    /// value of the last execution at or before its end (`values`: each execution's
    /// second and value, in any order); missing before the first.
    pub fn quality_datapoints(&self, values: &[(u64, f64)], now_second: u64) -> Vec<Option<f64>> {
        (0..self.evaluation_periods)
            .map(|i| {
                let end = now_second.saturating_sub(i * self.period);
                values
                    .iter()
                    .filter(|(t, _)| *t <= end)
                    .max_by_key(|(t, _)| *t)
                    .map(|(_, v)| *v)
            })
            .collect()
    }

    /// The statistic.
    pub fn statistic(&self) -> Statistic {
        self.statistic
    }

    /// The comparison.
    pub fn comparison_operator(&self) -> ComparisonOperator {
        self.operator
    }

    /// The threshold.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Seconds per datapoint.
    pub fn period(&self) -> u64 {
        self.period
    }

    /// Datapoints evaluated.
    pub fn evaluation_periods(&self) -> u64 {
        self.evaluation_periods
    }

    /// Breaching datapoints needed to alarm.
    pub fn datapoints_to_alarm(&self) -> u64 {
        self.datapoints_to_alarm
    }

    /// How missing datapoints count.
    pub fn treat_missing_data(&self) -> TreatMissingData {
        self.treat_missing_data
    }

    /// The description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Seconds of history an evaluation reads: `Period × EvaluationPeriods`.
    pub fn lookback_seconds(&self) -> u64 {
        self.period * self.evaluation_periods
    }

    /// Whether the alarm reads more history than the windows keep: its datapoints then come
    /// from the metric store (each period's aggregate, [`Alarm::statistic`] of it), the
    /// newest period ending with the last whole period of the store's resolution.
    pub fn from_store(&self) -> bool {
        self.quality.is_none() && self.lookback_seconds() > RETAINED_SECONDS
    }

    /// Whether `Unit` names another unit than the metric's (no datapoint is ever present).
    pub fn other_unit(&self) -> bool {
        self.other_unit
    }

    /// Empty statistics for each of the `EvaluationPeriods` periods, newest first: add
    /// windows to them with [`add_window`](Alarm::add_window), one at a time (so a caller
    /// holding windows behind locks takes one lock at a time), then
    /// [`evaluate_periods`](Alarm::evaluate_periods).
    pub fn periods(&self) -> Vec<Stats> {
        vec![Stats::default(); self.evaluation_periods as usize]
    }

    /// Add `window`'s requests at `now_second` to `periods` (from [`periods`](Alarm::periods)).
    pub fn add_window(&self, window: &Window, now_second: u64, periods: &mut [Stats]) {
        window.accumulate(now_second, self.period, periods);
    }

    /// The datapoints of accumulated `periods`, newest first.
    pub fn datapoints_of(&self, periods: &[Stats]) -> Vec<Option<f64>> {
        periods
            .iter()
            .map(|stats| {
                (self.quality.is_none() && !self.other_unit)
                    .then(|| stats.value(self.metric, self.statistic))
                    .flatten()
            })
            .collect()
    }

    /// Evaluate accumulated `periods`.
    pub fn evaluate_periods(&self, periods: &[Stats]) -> Evaluation {
        self.evaluate_datapoints(self.datapoints_of(periods))
    }

    /// The last `EvaluationPeriods` datapoints at `now_second`, newest first, over the
    /// requests of all `windows` together.
    pub fn datapoints(&self, windows: &[&Window], now_second: u64) -> Vec<Option<f64>> {
        let mut periods = self.periods();
        for window in windows {
            self.add_window(window, now_second, &mut periods);
        }
        self.datapoints_of(&periods)
    }

    /// Evaluate at `now_second` over the requests of all `windows` together: the windows
    /// of the variants (and fleets) the alarm watches.
    pub fn evaluate(&self, windows: &[&Window], now_second: u64) -> Evaluation {
        self.evaluate_datapoints(self.datapoints(windows, now_second))
    }

    /// The state for given datapoints (newest first; `None` = missing), as
    /// [`evaluate`](Alarm::evaluate) decides it.
    pub fn evaluate_datapoints(&self, datapoints: Vec<Option<f64>>) -> Evaluation {
        let needed = self.datapoints_to_alarm;
        let present = datapoints.iter().flatten().count() as u64;
        let missing = datapoints.len() as u64 - present;
        let breaching_present = datapoints
            .iter()
            .flatten()
            .filter(|&&v| self.operator.breaches(v, self.threshold))
            .count() as u64;
        let breaching = match self.treat_missing_data {
            TreatMissingData::Breaching => breaching_present + missing,
            TreatMissingData::Missing
            | TreatMissingData::NotBreaching
            | TreatMissingData::Ignore => breaching_present,
        };
        let n = datapoints.len();
        let list = format_datapoints(&datapoints);
        let what = match &self.quality {
            Some(q) => format!(
                "{q} of the last monitoring execution, every {} s",
                self.period
            ),
            None => format!("{} {} over {} s", self.metric, self.statistic, self.period),
        };
        let (state, reason) = if breaching >= needed {
            let missing_note =
                if self.treat_missing_data == TreatMissingData::Breaching && missing > 0 {
                    format!(" ({missing} missing, treated as breaching)")
                } else {
                    String::new()
                };
            (
                AlarmState::Alarm,
                format!(
                    "Threshold Crossed: {breaching} out of the last {n} datapoints [{list}] \
                     {} {} the threshold ({}){missing_note} ({what}).",
                    were(breaching),
                    self.operator.words(),
                    self.threshold
                ),
            )
        } else if present < needed && self.treat_missing_data != TreatMissingData::NotBreaching {
            (
                AlarmState::InsufficientData,
                format!(
                    "Insufficient Data: {present} out of the last {n} datapoints [{list}] {} \
                     present; {needed} needed to evaluate ({what}).",
                    were(present)
                ),
            )
        } else {
            let missing_note =
                if self.treat_missing_data == TreatMissingData::NotBreaching && missing > 0 {
                    format!(" ({missing} missing, treated as not breaching)")
                } else {
                    String::new()
                };
            (
                AlarmState::Ok,
                format!(
                    "Threshold Not Crossed: {breaching} out of the last {n} datapoints \
                     [{list}] {} {} the threshold ({}){missing_note}; {needed} needed to \
                     alarm ({what}).",
                    were(breaching),
                    self.operator.words(),
                    self.threshold
                ),
            )
        };
        Evaluation {
            state,
            reason,
            datapoints,
        }
    }
}

/// An alarm's state as it lasts between evaluations (CloudWatch's `StateValue` and
/// `StateReason`).
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub state: AlarmState,
    pub reason: String,
}

/// The state an alarm moves to from `previous` on `evaluation`: the evaluation's, except
/// that with `TreatMissingData` `ignore` and no datapoint present at all the alarm keeps its
/// state, as CloudWatch documents ("the current alarm state is maintained"); a new alarm
/// (no previous state) starts from `INSUFFICIENT_DATA`.
pub fn transition(previous: Option<&Held>, alarm: &Alarm, evaluation: &Evaluation) -> Held {
    let nothing = evaluation.datapoints.iter().all(Option::is_none);
    match previous {
        Some(held) if nothing && alarm.treat_missing_data == TreatMissingData::Ignore => {
            held.clone()
        }
        None if nothing && alarm.treat_missing_data == TreatMissingData::Ignore => Held {
            state: AlarmState::InsufficientData,
            reason: "Unchecked: Initial alarm creation".to_string(),
        },
        _ => Held {
            state: evaluation.state,
            reason: evaluation.reason.clone(),
        },
    }
}

fn were(count: u64) -> &'static str {
    if count == 1 {
        "was"
    } else {
        "were"
    }
}

fn format_datapoints(datapoints: &[Option<f64>]) -> String {
    datapoints
        .iter()
        .map(|d| match d {
            Some(v) => v.to_string(),
            None => "missing".to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn bucket_index_is_one_plus_floor_of_eight_log2_micros() {
        let reference = |nanos: u64| -> u16 {
            let micros = nanos as f64 / 1000.0;
            if micros < 1.0 {
                0
            } else {
                (micros.log2() * 8.0).floor() as u16 + 1
            }
        };
        // Just below and just above each bucket edge 2^(d + e/8) µs.
        for doubling in 0..40u16 {
            for eighth in 0..8u16 {
                let edge = 1000.0 * 2f64.powf(f64::from(doubling) + f64::from(eighth) / 8.0);
                let index = 1 + 8 * doubling + eighth;
                assert_eq!(
                    bucket_index(edge.ceil() as u64 + 1),
                    index,
                    "above {edge} ns"
                );
                if index > 1 {
                    assert_eq!(
                        bucket_index(edge.floor() as u64 - 1),
                        index - 1,
                        "below {edge} ns"
                    );
                }
            }
        }
        for nanos in (0..2_000_000).step_by(7).chain([0, 999, 1000, u64::MAX]) {
            assert_eq!(bucket_index(nanos), reference(nanos), "{nanos} ns");
        }
    }

    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn sample(outcome: Outcome) -> Sample {
        Sample {
            outcome,
            model_error: false,
            model_latency: Some(Duration::from_millis(1)),
            overhead_latency: Duration::from_micros(50),
        }
    }

    fn ok() -> Sample {
        sample(Outcome::Success)
    }

    fn server_error() -> Sample {
        sample(Outcome::ServerError)
    }

    /// `errors` 5xx and `total − errors` successes in `second`.
    fn record_rate(window: &mut Window, second: u64, errors: u32, total: u32) {
        for i in 0..total {
            let s = if i < errors { server_error() } else { ok() };
            window.record_at(second, &s);
        }
    }

    fn definition() -> AlarmDefinition {
        AlarmDefinition {
            endpoint_name: "iris".to_string(),
            variant_name: None,
            scope: Scope::Endpoint,
            metric_name: "Invocation5XXErrors".to_string(),
            statistic: Some("Average".to_string()),
            extended_statistic: None,
            comparison_operator: "GreaterThanThreshold".to_string(),
            threshold: 0.1,
            period: 1,
            evaluation_periods: 1,
            datapoints_to_alarm: None,
            treat_missing_data: None,
            alarm_description: None,
            namespace: None,
            unit: None,
            actions_enabled: None,
        }
    }

    fn alarm(edit: impl FnOnce(&mut AlarmDefinition)) -> Alarm {
        let mut d = definition();
        edit(&mut d);
        d.compile().unwrap()
    }

    fn error(edit: impl FnOnce(&mut AlarmDefinition)) -> String {
        let mut d = definition();
        edit(&mut d);
        d.compile().unwrap_err()
    }

    fn relatively_close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            ((actual - expected) / expected).abs() <= tolerance,
            "{actual} is not within {tolerance} (relative) of {expected}"
        );
    }

    #[test]
    fn five_xx_rate_alarms_in_the_current_second() {
        let a = alarm(|_| {});
        let mut window = Window::new();
        // 5 % errors: OK.
        record_rate(&mut window, 100, 5, 100);
        let e = a.evaluate(&[&window], 100);
        assert_eq!(e.state, AlarmState::Ok, "{}", e.reason);
        assert_eq!(e.datapoints, vec![Some(0.05)]);
        // The next second starts badly: the alarm sees it within that second.
        record_rate(&mut window, 101, 3, 6);
        let e = a.evaluate(&[&window], 101);
        assert_eq!(e.state, AlarmState::Alarm, "{}", e.reason);
        assert_eq!(e.datapoints, vec![Some(0.5)]);
        assert_eq!(
            e.reason,
            "Threshold Crossed: 1 out of the last 1 datapoints [0.5] was greater than the \
             threshold (0.1) (Invocation5XXErrors Average over 1 s)."
        );
        // Exactly at the threshold does not breach GreaterThanThreshold.
        record_rate(&mut window, 102, 1, 10);
        assert_eq!(a.evaluate(&[&window], 102).state, AlarmState::Ok);
    }

    #[test]
    fn datapoints_cover_whole_periods_newest_first() {
        let a = alarm(|d| {
            d.period = 10;
            d.evaluation_periods = 3;
            d.statistic = Some("Sum".to_string());
            d.metric_name = "Invocations".to_string();
        });
        let mut window = Window::new();
        // now = 100: datapoint 0 is 91..=100, 1 is 81..=90, 2 is 71..=80.
        for (second, n) in [
            (70, 1000),
            (71, 1),
            (80, 2),
            (81, 3),
            (90, 4),
            (91, 5),
            (100, 6),
        ] {
            record_rate(&mut window, second, 0, n);
        }
        record_rate(&mut window, 101, 0, 1000); // after now: not counted
        assert_eq!(
            a.datapoints(&[&window], 100),
            vec![Some(11.0), Some(7.0), Some(3.0)]
        );
        // Periods before second 0 are missing.
        assert_eq!(a.datapoints(&[&window], 5), vec![None, None, None]);
    }

    #[test]
    fn m_out_of_n_datapoints() {
        let a = alarm(|d| {
            d.evaluation_periods = 3;
            d.datapoints_to_alarm = Some(2);
        });
        let mut window = Window::new();
        // Newest first: [0.5, 0.41, missing].
        record_rate(&mut window, 10, 41, 100);
        record_rate(&mut window, 11, 1, 2);
        let e = a.evaluate(&[&window], 11);
        assert_eq!(e.state, AlarmState::Alarm);
        assert_eq!(e.datapoints, vec![Some(0.5), Some(0.41), None]);
        assert_eq!(
            e.reason,
            "Threshold Crossed: 2 out of the last 3 datapoints [0.5, 0.41, missing] were \
             greater than the threshold (0.1) (Invocation5XXErrors Average over 1 s)."
        );
        // One breaching of two present: OK.
        record_rate(&mut window, 12, 0, 10);
        let e = a.evaluate(&[&window], 13);
        assert_eq!(e.datapoints, vec![None, Some(0.0), Some(0.5)]);
        assert_eq!(e.state, AlarmState::Ok, "{}", e.reason);
        record_rate(&mut window, 13, 0, 10);
        let e = a.evaluate(&[&window], 13);
        assert_eq!(e.datapoints, vec![Some(0.0), Some(0.0), Some(0.5)]);
        assert_eq!(e.state, AlarmState::Ok, "{}", e.reason);
        assert!(e
            .reason
            .starts_with("Threshold Not Crossed: 1 out of the last 3"));
        // Default DatapointsToAlarm = EvaluationPeriods: all three must breach.
        let all = alarm(|d| d.evaluation_periods = 3);
        assert_eq!(all.datapoints_to_alarm(), 3);
        assert_eq!(
            all.evaluate(&[&window], 11).state,
            AlarmState::InsufficientData
        );
        record_rate(&mut window, 9, 5, 10);
        assert_eq!(all.evaluate(&[&window], 11).state, AlarmState::Alarm);
    }

    #[test]
    fn treat_missing_data_modes() {
        let states = |mode: &str, datapoints: Vec<Option<f64>>| {
            let a = alarm(|d| {
                d.evaluation_periods = 3;
                d.datapoints_to_alarm = Some(2);
                d.treat_missing_data = Some(mode.to_string());
            });
            a.evaluate_datapoints(datapoints).state
        };
        use AlarmState::*;
        let one_breach = || vec![Some(0.5), None, None];
        let breach_and_ok = || vec![Some(0.5), Some(0.0), None];
        let none = || vec![None, None, None];
        for (mode, expected) in [
            ("missing", [InsufficientData, Ok, InsufficientData]),
            ("ignore", [InsufficientData, Ok, InsufficientData]),
            // Missing datapoints are good ones: never too few to say (CloudWatch's
            // "- - -" with notBreaching is OK).
            ("notBreaching", [Ok, Ok, Ok]),
            ("breaching", [Alarm, Alarm, Alarm]),
        ] {
            assert_eq!(
                [
                    states(mode, one_breach()),
                    states(mode, breach_and_ok()),
                    states(mode, none())
                ],
                expected,
                "{mode}"
            );
        }
        // notBreaching differs from missing once enough datapoints are present: a
        // missing one never makes up the count.
        assert_eq!(
            states("notBreaching", vec![Some(0.5), Some(0.5), None]),
            Alarm
        );
        assert_eq!(states("notBreaching", vec![Some(0.0), Some(0.0), None]), Ok);
        let a = alarm(|d| {
            d.evaluation_periods = 3;
            d.datapoints_to_alarm = Some(2);
            d.treat_missing_data = Some("breaching".to_string());
        });
        let e = a.evaluate_datapoints(vec![Some(0.5), None, Some(0.0)]);
        assert_eq!(e.state, Alarm);
        assert!(
            e.reason.contains("(1 missing, treated as breaching)"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn insufficient_data_without_requests() {
        let a = alarm(|_| {});
        let window = Window::new();
        let e = a.evaluate(&[&window], 50);
        assert_eq!(e.state, AlarmState::InsufficientData);
        assert_eq!(e.datapoints, vec![None]);
        assert_eq!(e.state.as_str(), "INSUFFICIENT_DATA");
        assert!(e
            .reason
            .starts_with("Insufficient Data: 0 out of the last 1"));
        // Invocations Sum with no requests is missing too, not 0.
        let invocations = alarm(|d| {
            d.metric_name = "Invocations".to_string();
            d.statistic = Some("Sum".to_string());
            d.comparison_operator = "LessThanThreshold".to_string();
            d.threshold = 1.0;
        });
        assert_eq!(invocations.evaluate(&[&window], 50).datapoints, vec![None]);
        assert_eq!(
            invocations.evaluate(&[], 50).state,
            AlarmState::InsufficientData
        );
    }

    #[test]
    fn count_metric_statistics() {
        let mut window = Window::new();
        for i in 0..10 {
            let mut s = ok();
            if i < 2 {
                s.outcome = Outcome::ClientError;
            }
            if i == 9 {
                s.outcome = Outcome::ServerError;
                s.model_error = true;
            }
            window.record_at(7, &s);
        }
        let stats = window.stats(7, 7);
        use Metric::*;
        use Statistic::*;
        assert_eq!(stats.value(Invocations, Sum), Some(10.0));
        assert_eq!(stats.value(Invocations, Average), Some(1.0));
        assert_eq!(stats.value(Invocation4XXErrors, Sum), Some(2.0));
        assert_eq!(stats.value(Invocation4XXErrors, Average), Some(0.2));
        assert_eq!(stats.value(Invocation4XXErrors, SampleCount), Some(10.0));
        assert_eq!(stats.value(Invocation4XXErrors, Minimum), Some(0.0));
        assert_eq!(stats.value(Invocation4XXErrors, Maximum), Some(1.0));
        assert_eq!(stats.value(Invocation5XXErrors, Sum), Some(1.0));
        assert_eq!(stats.value(InvocationModelErrors, Average), Some(0.1));
        assert_eq!(stats.value(Invocations, Minimum), Some(1.0));
        assert_eq!(stats.value(Invocation5XXErrors, Percentile(99.0)), None);
        // No requests: every statistic is missing.
        let empty = window.stats(8, 100);
        assert_eq!(empty.count, 0);
        for metric in Metric::ALL {
            assert_eq!(empty.value(metric, Sum), None, "{metric}");
        }
    }

    #[test]
    fn latency_statistics_in_microseconds() {
        let mut window = Window::new();
        let mut s = ok();
        s.model_latency = Some(Duration::from_micros(1500));
        s.overhead_latency = Duration::from_nanos(2500);
        window.record_at(3, &s);
        s.model_latency = None; // never reached the model
        s.overhead_latency = Duration::from_micros(10);
        window.record_at(3, &s);
        let stats = window.stats(0, 10);
        use Metric::*;
        use Statistic::*;
        assert_eq!(stats.value(ModelLatency, SampleCount), Some(1.0));
        assert_eq!(stats.value(ModelLatency, Average), Some(1500.0));
        assert_eq!(stats.value(ModelLatency, Percentile(99.0)), Some(1500.0));
        assert_eq!(stats.value(OverheadLatency, SampleCount), Some(2.0));
        assert_eq!(stats.value(OverheadLatency, Sum), Some(12.5));
        assert_eq!(stats.value(OverheadLatency, Average), Some(6.25));
        assert_eq!(stats.value(OverheadLatency, Minimum), Some(2.5));
        assert_eq!(stats.value(OverheadLatency, Maximum), Some(10.0));
    }

    #[test]
    fn percentiles_are_accurate_and_extremes_exact() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut window = Window::new();
        let mut micros: Vec<u64> = Vec::new();
        for i in 0..20_000u64 {
            // Log-uniform between 100 µs and 1 s, with a slow 1 % tail up to 5 s.
            let v = if rng.random_bool(0.01) {
                rng.random_range(1_000_000..5_000_000)
            } else {
                10f64.powf(rng.random_range(2.0..6.0)) as u64
            };
            micros.push(v);
            let mut s = ok();
            s.model_latency = Some(Duration::from_micros(v));
            window.record_at(i / 1000, &s);
        }
        let stats = window.stats(0, 19);
        micros.sort_unstable();
        let exact = |p: f64| micros[((p / 100.0 * micros.len() as f64).ceil() as usize) - 1];
        for p in [1.0, 10.0, 50.0, 90.0, 99.0, 99.9] {
            let estimate = stats
                .value(Metric::ModelLatency, Statistic::Percentile(p))
                .unwrap();
            relatively_close(estimate, exact(p) as f64, 0.1);
        }
        let sum: u64 = micros.iter().sum();
        let latency = |s| stats.value(Metric::ModelLatency, s).unwrap();
        relatively_close(
            latency(Statistic::Average),
            sum as f64 / micros.len() as f64,
            1e-12,
        );
        assert_eq!(latency(Statistic::Sum), sum as f64);
        assert_eq!(latency(Statistic::Minimum), micros[0] as f64);
        assert_eq!(latency(Statistic::Maximum), *micros.last().unwrap() as f64);
        assert_eq!(
            latency(Statistic::Percentile(100.0)),
            *micros.last().unwrap() as f64
        );

        // A known, even distribution: 1..=10000 µs once each.
        let mut even = Window::new();
        for v in 1..=10_000u64 {
            let mut s = ok();
            s.model_latency = Some(Duration::from_micros(v));
            even.record_at(0, &s);
        }
        let stats = even.stats(0, 0);
        let p = |p| {
            stats
                .value(Metric::ModelLatency, Statistic::Percentile(p))
                .unwrap()
        };
        relatively_close(p(50.0), 5000.0, 0.1);
        relatively_close(p(99.0), 9900.0, 0.1);
        assert_eq!(
            stats.value(Metric::ModelLatency, Statistic::Average),
            Some(5000.5)
        );
        // Sparse histogram: about 8 buckets per doubling, not one per value.
        let buckets = even.buckets[0].model_latency.histogram.len();
        assert!(buckets <= 8 * 14 + 1, "{buckets}");
    }

    #[test]
    fn latency_percentile_alarm() {
        let a = alarm(|d| {
            d.metric_name = "ModelLatency".to_string();
            d.statistic = None;
            d.extended_statistic = Some("p99".to_string());
            d.threshold = 100_000.0; // 100 ms
            d.period = 10;
        });
        let mut window = Window::new();
        for i in 0..1000 {
            let mut s = ok();
            s.model_latency = Some(Duration::from_millis(if i % 50 == 0 { 500 } else { 5 }));
            window.record_at(20 + i % 10, &s);
        }
        let e = a.evaluate(&[&window], 29);
        assert_eq!(e.state, AlarmState::Alarm, "{}", e.reason);
        assert!(
            e.reason.ends_with("(ModelLatency p99 over 10 s)."),
            "{}",
            e.reason
        );
        let p90 = alarm(|d| {
            d.metric_name = "ModelLatency".to_string();
            d.statistic = None;
            d.extended_statistic = Some("p90".to_string());
            d.threshold = 100_000.0;
            d.period = 10;
        });
        assert_eq!(p90.evaluate(&[&window], 29).state, AlarmState::Ok);
    }

    #[test]
    fn windows_of_two_variants_merge() {
        let a = alarm(|d| d.threshold = 0.08);
        let mut blue = Window::new();
        let mut green = Window::new();
        record_rate(&mut blue, 5, 0, 100);
        record_rate(&mut green, 5, 10, 100);
        assert_eq!(a.evaluate(&[&green], 5).state, AlarmState::Alarm);
        let e = a.evaluate(&[&blue, &green], 5);
        assert_eq!(e.datapoints, vec![Some(0.05)]);
        assert_eq!(e.state, AlarmState::Ok);

        let mut merged = blue.stats(0, 10);
        merged.merge(&green.stats(0, 10));
        let mut both = Window::new();
        record_rate(&mut both, 5, 0, 100);
        record_rate(&mut both, 5, 10, 100);
        assert_eq!(merged, both.stats(0, 10));
        assert_eq!(merged.count, 200);
        assert_eq!(merged.errors_5xx, 10);
        assert_eq!(merged.model_latency.count(), 200);
    }

    #[test]
    fn old_seconds_are_dropped() {
        let mut window = Window::new();
        for second in 0..1000 {
            window.record_at(second, &ok());
            assert!(window.bucket_count() <= RETAINED_SECONDS as usize);
        }
        assert_eq!(window.bucket_count(), RETAINED_SECONDS as usize);
        assert_eq!(window.stats(0, 399).count, 0);
        assert_eq!(window.stats(400, 999).count, 600);
        // Too old to keep: dropped. Slightly out of order: kept, in order.
        window.record_at(399, &ok());
        assert_eq!(window.stats(0, 399).count, 0);
        window.record_at(500, &server_error());
        assert_eq!(window.stats(500, 500).count, 2);
        assert_eq!(window.stats(500, 500).errors_5xx, 1);
        assert_eq!(window.bucket_count(), RETAINED_SECONDS as usize);
        // A gap: only seconds with requests have a bucket.
        window.record_at(5000, &ok());
        assert_eq!(window.bucket_count(), 1);
        // Out-of-order second within retention gets its own bucket, in order.
        window.record_at(4990, &ok());
        assert_eq!(window.bucket_count(), 2);
        assert_eq!(window.stats(4990, 4990).count, 1);
        assert_eq!(window.stats(4991, 5000).count, 1);
    }

    #[test]
    fn interleaved_seconds_are_counted_exactly() {
        // Requests of two streams, one a second ahead of the other, arriving interleaved:
        // what threads racing over second boundaries hand a shared window.
        let mut window = Window::new();
        let (streams, per_stream) = (8u64, 5_000u64);
        for i in 0..per_stream {
            for t in 0..streams {
                let s = if i % 10 == 0 { server_error() } else { ok() };
                window.record_at(i / 1000 + (t % 2), &s);
            }
        }
        let stats = window.stats(0, 100);
        assert_eq!(stats.count, streams * per_stream);
        assert_eq!(stats.errors_5xx, streams * per_stream / 10);
        assert_eq!(stats.overhead_latency.count(), streams * per_stream);
        assert_eq!(window.bucket_count(), 6);
    }

    #[test]
    fn validation_errors_name_the_field() {
        assert_eq!(
            error(|d| d.metric_name = "Foo".to_string()),
            "MetricName \"Foo\" is not a metric Plinth records; use one of Invocations, \
             Invocation4XXErrors, Invocation5XXErrors, InvocationModelErrors, ModelLatency, \
             OverheadLatency (or Namespace aws/sagemaker/Endpoints/model-metrics for a model \
             quality metric)"
        );
        assert!(error(|d| d.endpoint_name = "bad name".to_string()).starts_with("EndpointName"));
        assert!(error(|d| d.variant_name = Some(String::new())).starts_with("VariantName"));
        let both = error(|d| d.extended_statistic = Some("p99".to_string()));
        assert!(
            both.contains("exactly one of Statistic and ExtendedStatistic"),
            "{both}"
        );
        let neither = error(|d| d.statistic = None);
        assert!(neither.contains("Statistic (Average, Sum, SampleCount, Minimum, Maximum)"));
        let unknown = error(|d| d.statistic = Some("Median".to_string()));
        assert!(unknown.starts_with("Statistic \"Median\""), "{unknown}");
        assert!(unknown.contains("Average, Sum, SampleCount, Minimum, Maximum"));
        for bad in [
            "p0", "p100.1", "p", "99", "p-1", "p99.999", "pNaN", "P99", "p1e2", "p.5",
        ] {
            let e = error(|d| {
                d.metric_name = "ModelLatency".to_string();
                d.statistic = None;
                d.extended_statistic = Some(bad.to_string());
            });
            assert!(e.starts_with(&format!("ExtendedStatistic {bad:?} is not a percentile")));
        }
        for good in ["p100", "p99.9", "p0.1", "p50", "p99.99"] {
            alarm(|d| {
                d.metric_name = "OverheadLatency".to_string();
                d.statistic = None;
                d.extended_statistic = Some(good.to_string());
            });
        }
        let counted = error(|d| {
            d.statistic = None;
            d.extended_statistic = Some("p99".to_string());
        });
        assert!(
            counted.contains("applies only to ModelLatency and OverheadLatency"),
            "{counted}"
        );
        let operator = error(|d| d.comparison_operator = "GreaterThan".to_string());
        assert!(operator.starts_with("ComparisonOperator \"GreaterThan\""));
        assert!(operator.contains("LessThanOrEqualToThreshold"));
        for threshold in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(
                error(|d| d.threshold = threshold).starts_with("Threshold must be a finite number")
            );
        }
        assert_eq!(
            error(|d| d.period = 0),
            "Period must be between 1 and 86400 seconds, got 0"
        );
        assert!(error(|d| d.period = 86_401).starts_with("Period must be between"));
        assert!(error(|d| d.evaluation_periods = 0).starts_with("EvaluationPeriods"));
        let long = error(|d| {
            d.period = 3600;
            d.evaluation_periods = 25;
        });
        assert!(long.contains("got 3600 × 25"), "{long}");
        assert!(error(|d| {
            d.period = 600;
            d.evaluation_periods = u64::MAX;
        })
        .starts_with("Period × EvaluationPeriods"));
        // Past the windows' 600 s: from the metric store, by the minute, the whole endpoint.
        let stored = alarm(|d| {
            d.period = 60;
            d.evaluation_periods = 11;
        });
        assert!(stored.from_store());
        assert!(!alarm(|d| {
            d.period = 60;
            d.evaluation_periods = 10;
        })
        .from_store());
        let odd = error(|d| {
            d.period = 90;
            d.evaluation_periods = 10;
        });
        assert!(odd.starts_with("Period must be a multiple of 60"), "{odd}");
        let fleet = error(|d| {
            d.scope = Scope::NewFleet;
            d.period = 300;
            d.evaluation_periods = 3;
        });
        assert!(
            fleet.starts_with("Scope NewFleet watches at most 600 s"),
            "{fleet}"
        );
        alarm(|d| {
            d.period = 60;
            d.evaluation_periods = 10;
        });
        let dta = error(|d| {
            d.evaluation_periods = 3;
            d.datapoints_to_alarm = Some(4);
        });
        assert_eq!(
            dta,
            "DatapointsToAlarm must be between 1 and EvaluationPeriods (3), got 4"
        );
        assert!(error(|d| d.datapoints_to_alarm = Some(0)).starts_with("DatapointsToAlarm"));
        let missing = error(|d| d.treat_missing_data = Some("zero".to_string()));
        assert!(
            missing.contains("missing, notBreaching, breaching, ignore"),
            "{missing}"
        );
        assert!(
            error(|d| d.alarm_description = Some("é".repeat(1025))).starts_with("AlarmDescription")
        );
        alarm(|d| d.alarm_description = Some("é".repeat(1024)));
    }

    #[test]
    fn definitions_parse_strictly_and_echo_back() {
        let json = r#"{
            "EndpointName": "iris",
            "VariantName": "green",
            "Scope": "NewFleet",
            "MetricName": "ModelLatency",
            "ExtendedStatistic": "p99.9",
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "Threshold": 250000,
            "Period": 10,
            "EvaluationPeriods": 6,
            "DatapointsToAlarm": 3,
            "TreatMissingData": "notBreaching",
            "AlarmDescription": "p99.9 latency over 250 ms"
        }"#;
        let d: AlarmDefinition = serde_json::from_str(json).unwrap();
        let a = d.compile().unwrap();
        assert_eq!(a.endpoint_name(), "iris");
        assert_eq!(a.variant_name(), Some("green"));
        assert_eq!(a.scope(), Scope::NewFleet);
        assert_eq!(a.metric(), Metric::ModelLatency);
        assert_eq!(a.statistic(), Statistic::Percentile(99.9));
        assert_eq!(a.statistic().to_string(), "p99.9");
        assert_eq!(a.treat_missing_data(), TreatMissingData::NotBreaching);
        assert_eq!(a.lookback_seconds(), 60);
        let back: AlarmDefinition =
            serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(back, d);

        // Minimal: defaults, and None fields are not echoed (Scope always is).
        let minimal = r#"{"EndpointName": "iris", "MetricName": "Invocations",
            "Statistic": "Sum", "ComparisonOperator": "LessThanThreshold",
            "Threshold": 1, "Period": 60, "EvaluationPeriods": 1}"#;
        let d: AlarmDefinition = serde_json::from_str(minimal).unwrap();
        assert_eq!(d.scope, Scope::Endpoint);
        let echoed = serde_json::to_value(&d).unwrap();
        let keys: Vec<&String> = echoed.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 8, "{keys:?}");
        assert_eq!(echoed["Scope"], "Endpoint");
        assert!(!echoed.as_object().unwrap().contains_key("VariantName"));
        let a = d.compile().unwrap();
        assert_eq!(a.datapoints_to_alarm(), 1);
        assert_eq!(a.treat_missing_data(), TreatMissingData::Missing);

        let unknown = minimal.replace("\"Period\"", "\"Dimensions\": [], \"Period\"");
        let e = serde_json::from_str::<AlarmDefinition>(&unknown).unwrap_err();
        assert!(e.to_string().contains("unknown field `Dimensions`"), "{e}");
        let scope = minimal.replace("\"Period\"", "\"Scope\": \"Fleet\", \"Period\"");
        let e = serde_json::from_str::<AlarmDefinition>(&scope).unwrap_err();
        assert!(e.to_string().contains("NewFleet"), "{e}");
    }

    #[test]
    fn names_round_trip() {
        for (metric, name) in Metric::ALL.iter().zip(METRICS) {
            assert_eq!(metric.as_str(), *name);
            assert_eq!(Metric::from_name(name), Some(*metric));
        }
        for name in STATISTICS {
            assert_eq!(Statistic::from_name(name).unwrap().to_string(), *name);
        }
        for name in COMPARISON_OPERATORS {
            assert_eq!(ComparisonOperator::from_name(name).unwrap().as_str(), *name);
        }
        for name in TREAT_MISSING_DATA {
            assert_eq!(TreatMissingData::from_name(name).unwrap().as_str(), *name);
        }
        assert_eq!(
            serde_json::to_string(&AlarmState::InsufficientData).unwrap(),
            "\"INSUFFICIENT_DATA\""
        );
        assert_eq!(AlarmState::Ok.as_str(), "OK");
        assert_eq!(AlarmState::Alarm.to_string(), "ALARM");
    }

    #[test]
    fn ignore_keeps_the_state_only_without_any_datapoint() {
        let ignoring = alarm(|d| {
            d.treat_missing_data = Some("ignore".into());
            d.evaluation_periods = 3;
            d.datapoints_to_alarm = Some(1);
        });
        let firing = Held {
            state: AlarmState::Alarm,
            reason: "was".into(),
        };
        let nothing = ignoring.evaluate_datapoints(vec![None, None, None]);
        assert_eq!(nothing.state, AlarmState::InsufficientData);
        assert_eq!(transition(Some(&firing), &ignoring, &nothing), firing);
        assert_eq!(
            transition(None, &ignoring, &nothing).state,
            AlarmState::InsufficientData
        );
        // One datapoint is enough to evaluate again.
        let calm = ignoring.evaluate_datapoints(vec![None, Some(0.0), None]);
        assert_eq!(
            transition(Some(&firing), &ignoring, &calm).state,
            AlarmState::Ok
        );
        // `missing` does not keep it.
        let missing = alarm(|d| d.evaluation_periods = 3);
        let nothing = missing.evaluate_datapoints(vec![None, None, None]);
        assert_eq!(
            transition(Some(&firing), &missing, &nothing).state,
            AlarmState::InsufficientData
        );
    }

    #[test]
    fn a_unit_that_is_not_the_metrics_finds_no_datapoints() {
        let mut window = Window::new();
        window.record_at(10, &sample(Outcome::ServerError));
        let seconds = alarm(|d| d.unit = Some("Seconds".into()));
        assert_eq!(seconds.datapoints(&[&window], 10), vec![None]);
        let none = alarm(|d| d.unit = Some("None".into()));
        assert_eq!(none.datapoints(&[&window], 10), vec![Some(1.0)]);
        assert_eq!(Metric::ModelLatency.unit(), "Microseconds");
    }

    #[test]
    fn quality_alarms_watch_the_last_execution() {
        let definition = |namespace: Option<&str>, metric: &str, statistic: &str| AlarmDefinition {
            endpoint_name: "e".into(),
            variant_name: Some("canary".into()),
            scope: Scope::Endpoint,
            metric_name: metric.into(),
            statistic: Some(statistic.into()),
            extended_statistic: None,
            comparison_operator: "LessThanThreshold".into(),
            threshold: 0.8,
            period: 10,
            evaluation_periods: 3,
            datapoints_to_alarm: Some(2),
            treat_missing_data: None,
            alarm_description: None,
            namespace: namespace.map(Into::into),
            unit: None,
            actions_enabled: None,
        };
        let alarm = definition(Some(QUALITY_NAMESPACE), "accuracy", "Average")
            .compile()
            .unwrap();
        assert_eq!(alarm.quality_metric(), Some("accuracy"));
        // Executions at 95 (0.9) and 112 (0.6); now 125: periods end at 125, 115, 105.
        let values = [(112, 0.6), (95, 0.9)];
        assert_eq!(
            alarm.quality_datapoints(&values, 125),
            [Some(0.6), Some(0.6), Some(0.9)]
        );
        let e = alarm.evaluate_datapoints(alarm.quality_datapoints(&values, 125));
        assert_eq!(e.state, AlarmState::Alarm);
        assert!(
            e.reason
                .contains("accuracy of the last monitoring execution"),
            "{}",
            e.reason
        );
        // Before any execution: missing.
        let e = alarm.evaluate_datapoints(alarm.quality_datapoints(&values, 90));
        assert_eq!(e.state, AlarmState::InsufficientData);
        // Request windows give a quality alarm nothing.
        assert_eq!(alarm.datapoints_of(&alarm.periods()), [None, None, None]);
        for (namespace, metric, statistic, fragment) in [
            (
                Some(QUALITY_NAMESPACE),
                "ModelLatency",
                "Average",
                "not a model quality metric",
            ),
            (
                Some(QUALITY_NAMESPACE),
                "accuracy",
                "Maximum",
                "takes Statistic Average",
            ),
            (
                Some("AWS/EC2"),
                "accuracy",
                "Average",
                "Namespace \"AWS/EC2\"",
            ),
            (
                None,
                "accuracy",
                "Average",
                "Namespace aws/sagemaker/Endpoints/model-metrics",
            ),
        ] {
            let e = definition(namespace, metric, statistic)
                .compile()
                .unwrap_err();
            assert!(e.contains(fragment), "{e}");
        }
        assert!(definition(Some(REQUEST_NAMESPACE), "Invocations", "Sum")
            .compile()
            .unwrap()
            .quality_metric()
            .is_none());
    }
}
