//! What one load generator run measured: a latency histogram (HDR, microseconds), counts of
//! successes, non-2xx answers, errors and (open loop) dropped requests, the first few error
//! messages, and the production variants that answered; merged across connections and written
//! as a human line or one JSON object.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// The largest latency recorded exactly (60 s); slower requests saturate at it.
const MAX_LATENCY_US: u64 = 60_000_000;

/// How many error messages a tally keeps (the first ones).
pub const MAX_MESSAGES: usize = 5;

/// Counters and the latency histogram of one connection, or of all of them once merged.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency of every completed request (2xx or not), in microseconds.
    pub latency_us: Histogram<u64>,
    /// Responses with a status outside 200..=299.
    pub non_2xx: u64,
    /// Requests that got no response (connection refused or reset, timeout, bad response).
    pub errors: u64,
    /// Responses per `x-Amzn-Invoked-Production-Variant` value.
    pub variants: BTreeMap<String, u64>,
    /// Open loop: requests whose scheduled start came while the in-flight cap was reached, so
    /// they were never sent.
    pub dropped: u64,
    /// The first [`MAX_MESSAGES`] error and non-2xx messages, in the order seen.
    pub messages: Vec<String>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            non_2xx: 0,
            errors: 0,
            variants: BTreeMap::new(),
            dropped: 0,
            messages: Vec::new(),
        }
    }
}

impl Tally {
    /// Record one completed request.
    pub fn record(&mut self, latency: Duration, status: u16, variant: Option<&str>) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(micros.max(1));
        if !(200..300).contains(&status) {
            self.non_2xx += 1;
        }
        if let Some(variant) = variant {
            *self.variants.entry(variant.to_string()).or_default() += 1;
        }
    }

    /// Count one request that got no response, keeping its message if there is room.
    pub fn record_error(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        self.note(message);
    }

    /// Keep a message if fewer than [`MAX_MESSAGES`] are kept (`message` is only called then).
    pub fn note(&mut self, message: impl FnOnce() -> String) {
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(message());
        }
    }

    /// Whether another message would be kept.
    pub fn wants_messages(&self) -> bool {
        self.messages.len() < MAX_MESSAGES
    }

    /// Add another tally into this one.
    pub fn merge(&mut self, other: &Tally) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms with the same bounds");
        self.non_2xx += other.non_2xx;
        self.errors += other.errors;
        self.dropped += other.dropped;
        for (variant, count) in &other.variants {
            *self.variants.entry(variant.clone()).or_default() += count;
        }
        for message in &other.messages {
            self.note(|| message.clone());
        }
    }

    /// The latency at `percentile` (0-100), in microseconds; 0 without requests.
    pub fn percentile_us(&self, percentile: f64) -> u64 {
        if self.latency_us.is_empty() {
            return 0;
        }
        self.latency_us
            .value_at_quantile((percentile / 100.0).clamp(0.0, 1.0))
    }

    /// Completed requests (with any status).
    pub fn requests(&self) -> u64 {
        self.latency_us.len()
    }
}

/// The result of a run: what was measured over the measurement window.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The URL that was loaded.
    pub url: String,
    /// Concurrent connections, each with one request in flight.
    pub connections: usize,
    /// The length of the measurement window (warm-up excluded).
    pub duration: Duration,
    /// Everything counted in the window.
    pub tally: Tally,
}

impl Summary {
    /// Completed requests per second over the window.
    pub fn requests_per_second(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.tally.requests() as f64 / secs
        } else {
            0.0
        }
    }

    /// One object: url, connections, duration_s, requests, rps, latency_us {p50, p90, p99,
    /// max, mean}, non_2xx, errors, variants {name: count}.
    pub fn to_json(&self) -> Value {
        let h = &self.tally.latency_us;
        json!({
            "url": self.url,
            "connections": self.connections,
            "duration_s": self.duration.as_secs_f64(),
            "requests": self.tally.requests(),
            "rps": round2(self.requests_per_second()),
            "latency_us": {
                "p50": h.value_at_quantile(0.50),
                "p90": h.value_at_quantile(0.90),
                "p99": h.value_at_quantile(0.99),
                "max": h.max(),
                "mean": round2(h.mean()),
            },
            "non_2xx": self.tally.non_2xx,
            "errors": self.tally.errors,
            "variants": self.tally.variants,
        })
    }

    /// One line for a person.
    pub fn human_line(&self) -> String {
        let h = &self.tally.latency_us;
        let mut line = format!(
            "{} conns={} {:.0} req/s ({} in {:.1}s) latency us p50={} p90={} p99={} max={} \
             non-2xx={} errors={}",
            self.url,
            self.connections,
            self.requests_per_second(),
            self.tally.requests(),
            self.duration.as_secs_f64(),
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.90),
            h.value_at_quantile(0.99),
            h.max(),
            self.tally.non_2xx,
            self.tally.errors,
        );
        if !self.tally.variants.is_empty() {
            let variants: Vec<String> = self
                .tally
                .variants
                .iter()
                .map(|(name, count)| format!("{name}={count}"))
                .collect();
            line.push_str(&format!(" variants: {}", variants.join(" ")));
        }
        line
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_reports() {
        let mut a = Tally::default();
        a.record(Duration::from_micros(100), 200, Some("A"));
        a.record(Duration::from_micros(300), 500, Some("B"));
        let mut b = Tally::default();
        b.record(Duration::from_micros(200), 200, Some("A"));
        b.record_error(|| "connection refused".into());
        a.merge(&b);
        assert_eq!(a.messages, ["connection refused"]);
        assert_eq!(a.percentile_us(50.0), 200);
        assert_eq!(a.percentile_us(100.0), 300);
        assert_eq!(Tally::default().percentile_us(99.0), 0);
        let summary = Summary {
            url: "http://x/".into(),
            connections: 2,
            duration: Duration::from_secs(2),
            tally: a,
        };
        let json = summary.to_json();
        assert_eq!(json["requests"], 3);
        assert_eq!(json["rps"], 1.5);
        assert_eq!(json["non_2xx"], 1);
        assert_eq!(json["errors"], 1);
        assert_eq!(json["variants"], json!({"A": 2, "B": 1}));
        assert_eq!(json["latency_us"]["p50"], 200);
        assert_eq!(json["latency_us"]["max"], 300);
        assert!(summary.human_line().contains("variants: A=2 B=1"));
    }

    #[test]
    fn keeps_only_the_first_messages() {
        let mut a = Tally::default();
        for i in 0..3 {
            a.record_error(|| format!("a{i}"));
        }
        let mut b = Tally::default();
        for i in 0..4 {
            b.record_error(|| format!("b{i}"));
        }
        b.dropped = 2;
        a.merge(&b);
        assert_eq!(a.errors, 7);
        assert_eq!(a.dropped, 2);
        assert_eq!(a.messages, ["a0", "a1", "a2", "b0", "b1"]);
        assert!(!a.wants_messages());
        a.note(|| unreachable!("no room: the message is not built"));
    }
}
