//! What `plinth bench` reports over a sweep: each run (instance count, load, tally) as a table
//! row and a JSON object, and the recommendation against a latency target: the smallest
//! instance count, or else the highest load, whose latency at the chosen percentile meets the
//! target with no errors. Pure functions, tested here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use crate::load::Load;
use crate::summary::Tally;

/// One measured run of a sweep.
#[derive(Debug, Clone)]
pub struct Run {
    /// The variant's instance count during the run, when the sweep sets it.
    pub instances: Option<u32>,
    /// The load it ran at.
    pub load: Load,
    /// The measured duration (warm-up excluded).
    pub duration: Duration,
    /// What was measured.
    pub tally: Tally,
}

/// What a run must meet: latency at `percentile` (0-100) at most `target_ms`, no errors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criterion {
    /// The percentile compared with the target, e.g. 99.
    pub percentile: f64,
    /// The latency target in milliseconds.
    pub target_ms: f64,
}

impl Run {
    /// Answers per second over the measured duration.
    pub fn rps(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.tally.requests() as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency at `percentile` (0-100) in milliseconds; 0 without answers.
    pub fn latency_ms(&self, percentile: f64) -> f64 {
        self.tally.percentile_us(percentile) as f64 / 1000.0
    }

    /// Answers, and every one of them 2xx: no transport errors, non-2xx answers or drops.
    pub fn is_clean(&self) -> bool {
        let t = &self.tally;
        t.requests() > 0 && t.errors == 0 && t.non_2xx == 0 && t.dropped == 0
    }

    /// Whether the run meets `criterion`.
    pub fn meets(&self, criterion: &Criterion) -> bool {
        self.is_clean() && self.latency_ms(criterion.percentile) <= criterion.target_ms
    }

    /// One object: instances, concurrency, rate, duration_s, requests, rps, latency_ms {p50,
    /// p90, p99, max, mean}, percentile_latency_ms (at `percentile`), errors, non_2xx, dropped,
    /// variants, error_messages, meets_target (null without a criterion).
    pub fn to_json(&self, percentile: f64, criterion: Option<&Criterion>) -> Value {
        let (concurrency, rate) = match self.load {
            Load::Concurrency(n) => (Some(n), None),
            Load::Rate(r) => (None, Some(r)),
        };
        let h = &self.tally.latency_us;
        json!({
            "instances": self.instances,
            "concurrency": concurrency,
            "rate": rate,
            "duration_s": self.duration.as_secs_f64(),
            "requests": self.tally.requests(),
            "rps": round(self.rps(), 2),
            "latency_ms": {
                "p50": round(self.latency_ms(50.0), 3),
                "p90": round(self.latency_ms(90.0), 3),
                "p99": round(self.latency_ms(99.0), 3),
                "max": round(h.max() as f64 / 1000.0, 3),
                "mean": round(h.mean() / 1000.0, 3),
            },
            "percentile_latency_ms": round(self.latency_ms(percentile), 3),
            "errors": self.tally.errors,
            "non_2xx": self.tally.non_2xx,
            "dropped": self.tally.dropped,
            "variants": self.tally.variants,
            "error_messages": self.tally.messages,
            "meets_target": criterion.map(|c| self.meets(c)),
        })
    }
}

/// The answer to "which instance count (or load) meets the target?".
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// Whether any instance count (or load) met the criterion.
    pub met: bool,
    /// The recommended instance count (instance sweeps).
    pub instances: Option<u32>,
    /// The recommended load (sweeps without instance counts).
    pub load: Option<Load>,
    /// The latency at the percentile of the recommended choice (its worst run), in ms.
    pub latency_ms: Option<f64>,
    /// The criterion.
    pub criterion: Criterion,
    /// One line for a person.
    pub message: String,
}

impl Recommendation {
    /// One object: met, instances, concurrency, rate, percentile, target_ms, latency_ms,
    /// message.
    pub fn to_json(&self) -> Value {
        json!({
            "met": self.met,
            "instances": self.instances,
            "concurrency": match self.load { Some(Load::Concurrency(n)) => Some(n), _ => None },
            "rate": match self.load { Some(Load::Rate(r)) => Some(r), _ => None },
            "percentile": self.criterion.percentile,
            "target_ms": self.criterion.target_ms,
            "latency_ms": self.latency_ms.map(|l| round(l, 3)),
            "message": self.message,
        })
    }
}

/// `p99`, `p99.9`.
pub fn percentile_name(percentile: f64) -> String {
    format!("p{percentile}")
}

/// With instance counts (an instance sweep): the smallest count all of whose runs meet
/// `criterion`. Otherwise: the highest load whose run meets it. `variant` names the variant in
/// the message.
pub fn recommend(runs: &[Run], criterion: &Criterion, variant: Option<&str>) -> Recommendation {
    let p = percentile_name(criterion.percentile);
    let target = format!("{p} <= {} ms", criterion.target_ms);
    let none = |what: &str| Recommendation {
        met: false,
        instances: None,
        load: None,
        latency_ms: None,
        criterion: *criterion,
        message: format!("none: no {what} met {target} with no errors"),
    };
    let mut by_instances: BTreeMap<u32, Vec<&Run>> = BTreeMap::new();
    for run in runs {
        if let Some(count) = run.instances {
            by_instances.entry(count).or_default().push(run);
        }
    }
    if !by_instances.is_empty() {
        let chosen = by_instances
            .iter()
            .find(|(_, runs)| runs.iter().all(|r| r.meets(criterion)));
        let Some((&count, runs)) = chosen else {
            return none("instance count");
        };
        let worst = runs
            .iter()
            .map(|r| r.latency_ms(criterion.percentile))
            .fold(0.0, f64::max);
        let loads: Vec<String> = runs.iter().map(|r| r.load.to_string()).collect();
        let of = variant.map_or(String::new(), |v| format!(" of variant {v}"));
        return Recommendation {
            met: true,
            instances: Some(count),
            load: None,
            latency_ms: Some(worst),
            criterion: *criterion,
            message: format!(
                "{count} instance{}{of}: {p} {worst:.2} ms <= {} ms with no errors at {}",
                if count == 1 { "" } else { "s" },
                criterion.target_ms,
                loads.join(", ")
            ),
        };
    }
    let best = runs
        .iter()
        .filter(|r| r.meets(criterion))
        .max_by(|a, b| a.load.level().total_cmp(&b.load.level()));
    let Some(best) = best else {
        let what = match runs.first().map(|r| r.load) {
            Some(Load::Rate(_)) => "rate",
            _ => "concurrency",
        };
        return none(what);
    };
    let latency = best.latency_ms(criterion.percentile);
    Recommendation {
        met: true,
        instances: None,
        load: Some(best.load),
        latency_ms: Some(latency),
        criterion: *criterion,
        message: format!(
            "{}: {p} {latency:.2} ms <= {} ms with no errors, {:.0} req/s",
            best.load,
            criterion.target_ms,
            best.rps()
        ),
    }
}

/// The runs as a table: one row per run with instances (in an instance sweep), concurrency or
/// rate, req/s, p50, p90, p99, max (and the chosen percentile when it is another), errors,
/// non-2xx, dropped (open loop) and the variant split. Then the distinct error messages.
pub fn table(runs: &[Run], percentile: f64) -> String {
    let sweep = runs.iter().any(|r| r.instances.is_some());
    let open = runs.iter().any(|r| matches!(r.load, Load::Rate(_)));
    let extra = ![50.0, 90.0, 99.0].contains(&percentile);
    let mut out = String::new();
    let mut header = String::new();
    if sweep {
        let _ = write!(header, "{:>9}  ", "INSTANCES");
    }
    let _ = write!(
        header,
        "{:>11} {:>10} {:>10} {:>10} {:>10}",
        if open { "RATE" } else { "CONCURRENCY" },
        "REQ/S",
        "P50",
        "P90",
        "P99"
    );
    if extra {
        let _ = write!(
            header,
            " {:>10}",
            percentile_name(percentile).to_uppercase()
        );
    }
    let _ = write!(header, " {:>10} {:>7} {:>7}", "MAX", "ERRORS", "NON-2XX");
    if open {
        let _ = write!(header, " {:>7}", "DROPPED");
    }
    let _ = writeln!(out, "{header}  VARIANTS");
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    for run in runs {
        let t = &run.tally;
        if sweep {
            let _ = write!(
                out,
                "{:>9}  ",
                run.instances.map_or("-".into(), |n| n.to_string())
            );
        }
        let load = match run.load {
            Load::Concurrency(n) => n.to_string(),
            Load::Rate(r) => format!("{r}/s"),
        };
        let _ = write!(
            out,
            "{load:>11} {:>10.1} {:>10} {:>10} {:>10}",
            run.rps(),
            ms(t.percentile_us(50.0)),
            ms(t.percentile_us(90.0)),
            ms(t.percentile_us(99.0)),
        );
        if extra {
            let _ = write!(out, " {:>10}", ms(t.percentile_us(percentile)));
        }
        let _ = write!(
            out,
            " {:>10} {:>7} {:>7}",
            ms(t.latency_us.max()),
            t.errors,
            t.non_2xx
        );
        if open {
            let _ = write!(out, " {:>7}", t.dropped);
        }
        let split: Vec<String> = t
            .variants
            .iter()
            .map(|(name, count)| format!("{name}={count}"))
            .collect();
        let _ = writeln!(
            out,
            "  {}",
            if split.is_empty() {
                "-".to_string()
            } else {
                split.join(" ")
            }
        );
    }
    let mut messages: Vec<&String> = Vec::new();
    for message in runs.iter().flat_map(|r| &r.tally.messages) {
        if !messages.contains(&message) {
            messages.push(message);
        }
    }
    if !messages.is_empty() {
        let _ = writeln!(out, "first errors:");
        for message in messages {
            let _ = writeln!(out, "  {message}");
        }
    }
    out
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of `requests` answers all taking `latency_ms`, plus `errors` errors.
    fn run(instances: Option<u32>, load: Load, latency_ms: u64, errors: u64) -> Run {
        let mut tally = Tally::default();
        for _ in 0..100 {
            tally.record(Duration::from_millis(latency_ms), 200, Some("A"));
        }
        for _ in 0..errors {
            tally.record_error(|| "connection reset".into());
        }
        Run {
            instances,
            load,
            duration: Duration::from_secs(2),
            tally,
        }
    }

    const P99_10MS: Criterion = Criterion {
        percentile: 99.0,
        target_ms: 10.0,
    };

    #[test]
    fn recommends_the_smallest_instance_count_that_meets_the_target() {
        let runs = [
            run(Some(1), Load::Concurrency(4), 30, 0),
            run(Some(2), Load::Concurrency(4), 8, 0),
            run(Some(4), Load::Concurrency(4), 3, 0),
        ];
        let r = recommend(&runs, &P99_10MS, Some("A"));
        assert!(r.met);
        assert_eq!(r.instances, Some(2));
        assert_eq!(r.load, None);
        assert!((r.latency_ms.unwrap() - 8.0).abs() < 0.01);
        assert_eq!(
            r.message,
            "2 instances of variant A: p99 8.00 ms <= 10 ms with no errors at concurrency 4"
        );
        let json = r.to_json();
        assert_eq!(json["instances"], 2);
        assert_eq!(json["percentile"], 99.0);
        assert_eq!(json["met"], true);
    }

    #[test]
    fn every_load_at_an_instance_count_must_meet_it() {
        // 2 instances meet it at concurrency 1 but not 8; 4 meet it at both.
        let runs = [
            run(Some(2), Load::Concurrency(1), 2, 0),
            run(Some(2), Load::Concurrency(8), 20, 0),
            run(Some(4), Load::Concurrency(1), 2, 0),
            run(Some(4), Load::Concurrency(8), 9, 0),
        ];
        let r = recommend(&runs, &P99_10MS, None);
        assert_eq!(r.instances, Some(4));
        assert!((r.latency_ms.unwrap() - 9.0).abs() < 0.01);
        // (The histogram keeps 3 significant digits: 9 ms reads as 9.00 or 9.01.)
        assert!(
            r.message.starts_with("4 instances: p99 9.0"),
            "{}",
            r.message
        );
        assert!(
            r.message
                .ends_with("ms <= 10 ms with no errors at concurrency 1, concurrency 8"),
            "{}",
            r.message
        );
    }

    #[test]
    fn errors_disqualify_a_run() {
        let runs = [
            run(Some(1), Load::Concurrency(4), 1, 1),
            run(Some(2), Load::Concurrency(4), 1, 0),
        ];
        assert_eq!(recommend(&runs, &P99_10MS, None).instances, Some(2));
        let mut dropped = run(None, Load::Rate(100.0), 1, 0);
        dropped.tally.dropped = 1;
        assert!(!dropped.meets(&P99_10MS));
        let mut non_2xx = run(None, Load::Concurrency(1), 1, 0);
        non_2xx.tally.record(Duration::from_millis(1), 400, None);
        assert!(!non_2xx.meets(&P99_10MS));
        let empty = Run {
            instances: None,
            load: Load::Concurrency(1),
            duration: Duration::from_secs(1),
            tally: Tally::default(),
        };
        assert!(
            !empty.meets(&P99_10MS),
            "a run without answers meets nothing"
        );
    }

    #[test]
    fn without_instances_recommends_the_highest_load_that_meets_it() {
        let runs = [
            run(None, Load::Concurrency(1), 2, 0),
            run(None, Load::Concurrency(4), 6, 0),
            run(None, Load::Concurrency(16), 25, 0),
        ];
        let r = recommend(&runs, &P99_10MS, None);
        assert_eq!(r.load, Some(Load::Concurrency(4)));
        assert_eq!(r.instances, None);
        assert!(
            r.message.starts_with("concurrency 4: p99 6.00 ms <= 10 ms"),
            "{}",
            r.message
        );
        assert_eq!(r.to_json()["concurrency"], 4);

        let rates = [
            run(None, Load::Rate(50.0), 2, 0),
            run(None, Load::Rate(500.0), 5, 0),
        ];
        let r = recommend(&rates, &P99_10MS, None);
        assert_eq!(r.load, Some(Load::Rate(500.0)));
        assert_eq!(r.to_json()["rate"], 500.0);
    }

    #[test]
    fn says_when_nothing_meets_it() {
        let runs = [
            run(Some(1), Load::Concurrency(4), 30, 0),
            run(Some(2), Load::Concurrency(4), 20, 0),
        ];
        let r = recommend(&runs, &P99_10MS, Some("A"));
        assert!(!r.met);
        assert_eq!(r.instances, None);
        assert_eq!(
            r.message,
            "none: no instance count met p99 <= 10 ms with no errors"
        );
        assert_eq!(r.to_json()["latency_ms"], Value::Null);
        let rates = [run(None, Load::Rate(10.0), 30, 0)];
        assert_eq!(
            recommend(&rates, &P99_10MS, None).message,
            "none: no rate met p99 <= 10 ms with no errors"
        );
        let p50 = Criterion {
            percentile: 50.0,
            target_ms: 0.5,
        };
        assert_eq!(
            recommend(&rates, &p50, None).message,
            "none: no rate met p50 <= 0.5 ms with no errors"
        );
    }

    #[test]
    fn runs_as_json() {
        let mut r = run(Some(2), Load::Concurrency(4), 5, 1);
        r.tally.record(Duration::from_millis(50), 503, Some("B"));
        let json = r.to_json(99.0, Some(&P99_10MS));
        assert_eq!(json["instances"], 2);
        assert_eq!(json["concurrency"], 4);
        assert_eq!(json["rate"], Value::Null);
        assert_eq!(json["requests"], 101);
        assert_eq!(json["rps"], 50.5);
        assert_eq!(json["errors"], 1);
        assert_eq!(json["non_2xx"], 1);
        assert_eq!(json["dropped"], 0);
        assert_eq!(json["variants"], json!({"A": 100, "B": 1}));
        assert_eq!(json["error_messages"], json!(["connection reset"]));
        assert_eq!(json["meets_target"], false);
        assert!((json["latency_ms"]["p50"].as_f64().unwrap() - 5.0).abs() < 0.01);
        assert!((json["latency_ms"]["max"].as_f64().unwrap() - 50.0).abs() < 0.1);
        assert_eq!(
            run(None, Load::Rate(2.5), 1, 0).to_json(99.0, None)["meets_target"],
            Value::Null
        );
    }

    #[test]
    fn runs_as_a_table() {
        let runs = [
            run(Some(1), Load::Concurrency(4), 5, 1),
            run(Some(2), Load::Concurrency(4), 2, 0),
        ];
        let text = table(&runs, 99.0);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].trim_start().starts_with("INSTANCES  CONCURRENCY"));
        assert!(lines[0].ends_with("NON-2XX  VARIANTS"), "{}", lines[0]);
        assert!(!lines[0].contains("DROPPED"));
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(row[..4], ["1", "4", "50.0", "5.00"]);
        assert!(lines[1].ends_with("A=100"), "{}", lines[1]);
        assert_eq!(lines[3], "first errors:");
        assert_eq!(lines[4], "  connection reset");

        let open = table(&[run(None, Load::Rate(50.0), 1, 0)], 95.0);
        let header = open.lines().next().unwrap();
        assert!(header.trim_start().starts_with("RATE"), "{header}");
        assert!(header.contains("P95") && header.contains("DROPPED"));
        assert!(open
            .lines()
            .nth(1)
            .unwrap()
            .trim_start()
            .starts_with("50/s"));
    }
}
